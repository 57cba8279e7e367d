"""Helper of scripts/mutation.sh: prepare one group's mutmut copy, and report its results.

    mutation_report.py groups                      names of [tool.mutmut.synthkd_groups]
    mutation_report.py group-of MODULE|GROUP       the group that holds a module path (or name)
    mutation_report.py prepare GROUP WORK [MOD..]  write WORK/pyproject.toml for GROUP; print the
                                                   mutant-name globs to pass to `mutmut run`
    mutation_report.py report GROUP WORK OUT SECS [MOD..]  print the table rows of GROUP; write its
                                                   surviving mutants (file, line, diff) to OUT

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

    rows, survivors = [], []
    for mod in g["modules"]:
        meta = Path("mutants") / (mod + ".meta")
        if not meta.exists():
            rows.append((mod, None, 0))
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if patterns:
            codes = {k: v for k, v in codes.items() if any(fnmatch(k, p) for p in patterns)}
        counts = {c: 0 for c in ("killed", "survived", "no tests", "timeout", "suspicious", "not checked")}
        strings = {"string-only": 0}
        starts = _function_starts(Path(mod))
        for key, code in sorted(codes.items(), key=lambda kv: (kv[0].rsplit("__mutmut_", 1)[0],
                                                               int(kv[0].rsplit("_", 1)[1]))):
            status = "not checked" if code is None else STATUS.get(code, "suspicious")
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
        rows.append((mod, counts, strings["string-only"]))
    os.chdir(os.environ.get("SYNTHKD_MUTATION_ROOT", "."))

    with open(out, "w") as f:
        f.write(f"# surviving mutants of group {group!r} (mutmut {_mutmut_version()}); "
                "'no tests' = no test in the group's test files reaches the function; 'string-only' = the "
                "mutant changes only string literals (a message or reason text): check whether a test "
                "should pin that text, else an equivalent mutant for users\n\n")
        for mod, line, key, status, diff in survivors:
            f.write(f"## {mod}:{line}  {key}  [{status}]\n{diff}\n\n")
    for mod, c, string_only in rows:
        if c is None:
            print(f"| {mod} | - | - | - | - | - | - | not run | {seconds} |")
            continue
        total = sum(c.values())
        checked = total - c["not checked"]
        # score = killed (timeouts count as killed, as mutmut does not) / all checked mutants,
        # "no tests" mutants count against the score: nothing would catch them.
        score = 100.0 * (c["killed"] + c["timeout"]) / checked if checked else 0.0
        extra = f" ({c['not checked']} not checked)" if c["not checked"] else ""
        print(f"| {mod} | {checked}{extra} | {c['killed']} | {c['survived']} | {string_only} | {c['no tests']} | "
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
    elif cmd == "report":
        report(args[0], Path(args[1]), Path(args[2]).resolve(), args[3], args[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
