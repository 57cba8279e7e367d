"""Helper of scripts/mutation.sh: prepare one group's mutmut copy, and report its results.

    mutation_report.py groups                      names of [tool.mutmut.synthkd_groups]
    mutation_report.py group-of MODULE|GROUP       the group that holds a module path (or name)
    mutation_report.py prepare GROUP WORK [MOD..]  write WORK/pyproject.toml for GROUP; print the
                                                   mutant-name globs to pass to `mutmut run`
    mutation_report.py sample GROUP WORK N SEED [MOD..]  generate GROUP's mutants in WORK (as `mutmut
                                                   run` does) and print a seeded random sample of N
                                                   mutant names per module (after the group's globs)
    mutation_report.py report GROUP WORK OUT SECS [MOD..]  print the table rows of GROUP; write its
                                                   surviving mutants (file, line, diff) to OUT

Survivors named in docs/mutation_equivalents/*.md (`- NAME: reason`) are equivalent mutants: shown
in their own column and left out of the score's denominator (the usual definition of the score).

Run from the repository root with the venv's python (mutmut is imported for `report` only).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from pathlib import Path

STATUS = {  # mutmut 3 exit code -> our column
    1: "killed", 3: "killed", 37: "killed",
    0: "survived",
    33: "no tests", 5: "no tests",
    36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
}


def _mutmut_cfg(root: Path = Path(".")) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mutmut"]


def _groups() -> dict[str, dict]:
    return _mutmut_cfg()["synthkd_groups"]


def _group_of(arg: str) -> str:
    groups = _groups()
    if arg in groups:
        return arg
    mod = arg if arg.endswith(".py") else "synthkd/" + arg.replace(".", "/") + ".py"
    for name, g in groups.items():
        if mod in g["modules"]:
            return name
    sys.exit(f"mutation: {arg!r} is neither a group ({', '.join(groups)}) nor one of their modules")


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"


def _selected(group: str, only: list[str]) -> dict:
    """GROUP's config, its modules narrowed to those named in ONLY (paths or dotted names)."""
    g = dict(_groups()[group])
    wanted = {m if m.endswith(".py") else "synthkd/" + m.replace(".", "/") + ".py" for m in only}
    if wanted & set(g["modules"]):
        g["modules"] = [m for m in g["modules"] if m in wanted]
    return g


def prepare(group: str, work: Path, only: list[str]) -> None:
    """Rewrite the copy's [tool.mutmut] so mutmut mutates only GROUP's modules with GROUP's tests."""
    g = _selected(group, only)
    cfg = _mutmut_cfg(work)
    text = (work / "pyproject.toml").read_text()
    text = re.split(r"(?m)^\[tool\.mutmut", text)[0]  # our sections are last in the file
    also_copy = [p for p in ("benchmarks/", "data/", "pipelines/", "configs/", "prompts/") if (work / p).exists()]
    section = {
        "source_paths": cfg["source_paths"],
        "only_mutate": g["modules"],
        "do_not_mutate_patterns": cfg.get("do_not_mutate_patterns", []),
        "pytest_add_cli_args": cfg.get("pytest_add_cli_args", []) + ["-p", "mutmut_subprocess_stats"]
        + [a for t in g.get("deselect", []) for a in ("--deselect", t)],
        "pytest_add_cli_args_test_selection": g["tests"],
        "also_copy": also_copy,
    }
    text += "\n[tool.mutmut]\n" + "".join(f"{k} = {_toml_list(v)}\n" for k, v in section.items())
    (work / "pyproject.toml").write_text(text)
    mods = [m[:-3].replace("/", ".") + "." for m in g["modules"]]
    print("\n".join(p for p in g.get("mutants", []) if p.startswith(tuple(mods))))


def sample(group: str, work: Path, n: int, seed: int, only: list[str]) -> None:
    """Print N mutant names per module of GROUP, drawn with SEED from all its (glob-selected) mutants.

    Why: on 2 cores a full run of the groups whose tests start servers and CLIs takes tens of hours;
    a random sample gives an unbiased estimate of the score (a fresh SEED after adding tests keeps it
    unbiased: tests written against one sample's survivors do not inflate another sample).
    """
    import os
    import random
    from fnmatch import fnmatch

    g = _selected(group, only)
    patterns = g.get("mutants", [])
    os.chdir(work)
    from mutmut.__main__ import create_mutants, store_lines_covered_by_tests
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    set_mutant_under_test("mutant_generation")

    os.makedirs("mutants", exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    store_lines_covered_by_tests()
    create_mutants(2)
    rng = random.Random(seed)
    for mod in g["modules"]:
        keys = sorted(json.loads((Path("mutants") / (mod + ".meta")).read_text())["exit_code_by_key"])
        if patterns:
            keys = [k for k in keys if any(fnmatch(k, p) for p in patterns)]
        print("\n".join(sorted(rng.sample(keys, min(n, len(keys))))))


def _equivalents(root: Path) -> dict[str, str]:
    """Mutant name -> reason, from docs/mutation_equivalents/*.md lines `- NAME: reason`."""
    found: dict[str, str] = {}
    for f in sorted((root / "docs" / "mutation_equivalents").glob("*.md")):
        for line in f.read_text().splitlines():
            m = re.match(r"-\s+`?([\w.ǁ]+__mutmut_\d+)`?\s*:\s*(.+)", line)
            if m:
                found[m.group(1)] = m.group(2).strip()
    return found


def _function_starts(path: Path) -> dict[str, int]:
    """mutmut's mangled function key (x_f / xǁClassǁf) -> line of its `def` in the original file."""
    starts: dict[str, int] = {}
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            starts[f"x_{node.name}"] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    starts[f"xǁ{node.name}ǁ{sub.name}"] = sub.lineno
    return starts


def _line_of(diff: str, def_line: int) -> int:
    """Line in the original file of the first line the mutant changes (mutmut's diff is per function)."""
    lines = diff.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"@@ -(\d+)", line)
        if m:
            n = int(m.group(1))
            for rest in lines[i + 1:]:
                if rest[:1] in "-+":
                    break
                n += 1
            return def_line + n - 1
    return def_line


_STRING = re.compile(r"""[rbfRBF]*("[^"\\]*(?:\\.[^"\\]*)*"|'[^'\\]*(?:\\.[^'\\]*)*')|\bNone\b""")


def _string_only(diff: str) -> bool:
    """True if the mutant only changes string literals (a message, a reason) and nothing else."""
    minus = [line[1:] for line in diff.split("\n") if line.startswith("-") and not line.startswith("---")]
    plus = [line[1:] for line in diff.split("\n") if line.startswith("+") and not line.startswith("+++")]
    norm = lambda lines: [_STRING.sub("S", x).replace(", )", ")") for x in lines]  # noqa: E731
    return bool(minus) and norm(minus) == norm(plus)


def report(group: str, work: Path, out: Path, seconds: str, only: list[str]) -> None:
    import os

    g = _selected(group, only)
    patterns = g.get("mutants", [])
    os.chdir(work)
    from fnmatch import fnmatch

    from mutmut.mutation.diff_apply import get_diff_for_mutant

    equivalent = _equivalents(Path(os.environ.get("SYNTHKD_MUTATION_ROOT", ".")).resolve())
    rows, survivors = [], []
    for mod in g["modules"]:
        meta = Path("mutants") / (mod + ".meta")
        if not meta.exists():
            rows.append((mod, None, 0))
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if patterns:
            codes = {k: v for k, v in codes.items() if any(fnmatch(k, p) for p in patterns)}
        counts = {c: 0 for c in ("killed", "survived", "equivalent", "no tests", "timeout", "suspicious",
                                 "not checked")}
        strings = {"string-only": 0}
        starts = _function_starts(Path(mod))
        for key, code in sorted(codes.items(), key=lambda kv: (kv[0].rsplit("__mutmut_", 1)[0],
                                                               int(kv[0].rsplit("_", 1)[1]))):
            status = "not checked" if code is None else STATUS.get(code, "suspicious")
            if status == "survived" and key in equivalent:
                status = "equivalent"
            counts[status] += 1
            if status in ("survived", "no tests", "timeout", "suspicious"):
                func = key.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
                try:
                    diff = get_diff_for_mutant(key, path=mod)
                except Exception as exc:  # a report line is better than no report
                    diff = f"(diff unavailable: {exc})"
                if status == "survived" and _string_only(diff):
                    strings["string-only"] += 1
                    status += ", string-only"
                survivors.append((mod, _line_of(diff, starts.get(func, 0)), key, status, diff))
            elif status == "equivalent":
                survivors.append((mod, 0, key, f"equivalent: {equivalent[key]}", ""))
        rows.append((mod, counts, strings["string-only"]))
    os.chdir(os.environ.get("SYNTHKD_MUTATION_ROOT", "."))

    with open(out, "w") as f:
        f.write(f"# surviving mutants of group {group!r} (mutmut {_mutmut_version()}); "
                "'no tests' = no test in the group's test files reaches the function; 'string-only' = the "
                "mutant changes only string literals (a message or reason text): check whether a test "
                "should pin that text, else an equivalent mutant for users\n\n")
        for mod, line, key, status, diff in sorted(survivors, key=lambda s: s[3].startswith("equivalent")):
            f.write(f"## {mod}:{line}  {key}  [{status}]\n{diff}\n\n")
    for mod, c, string_only in rows:
        if c is None:
            print(f"| {mod} | - | - | - | - | - | - | - | not run | {seconds} |")
            continue
        total = sum(c.values())
        checked = total - c["not checked"]
        # score = killed (timeouts count as killed, as mutmut does not) / checked mutants that are not
        # listed as equivalent; "no tests" mutants count against the score: nothing would catch them.
        judged = checked - c["equivalent"]
        score = 100.0 * (c["killed"] + c["timeout"]) / judged if judged else 0.0
        extra = f" ({c['not checked']} not checked)" if c["not checked"] else ""
        print(f"| {mod} | {checked}{extra} | {c['killed']} | {c['survived']} | {string_only} | {c['equivalent']} | {c['no tests']} | "
              f"{c['timeout']}/{c['suspicious']} | {score:.1f} | {seconds} |")


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main(argv: list[str]) -> None:
    cmd, *args = argv
    if cmd == "groups":
        print(" ".join(_groups()))
    elif cmd == "group-of":
        print(_group_of(args[0]))
    elif cmd == "prepare":
        prepare(args[0], Path(args[1]), args[2:])
    elif cmd == "sample":
        sample(args[0], Path(args[1]), int(args[2]), int(args[3]), args[4:])
    elif cmd == "report":
        report(args[0], Path(args[1]), Path(args[2]).resolve(), args[3], args[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
