"""Every teacher-calling command against every emulated teacher family: rows ok / rejected / cost.

Run:  python benchmarks/family_matrix.py [--flavors deepseek anthropic ...] [--commands rationales tasks ...]
      (about 6 minutes on 2 cores; needs nothing but the repo and, for `tailor`, torch + transformers:
      --no-tailor skips it)

For each flavor the loopback emulator speaks (openai-reasoning, deepseek, vllm, think-inline,
anthropic, gemini), each command runs for real, as a ``python -m synthkd.cli`` subprocess, against a
``TestServer`` of that flavor (one per command, in this process) with the model name a user would give
for the family and ``--base-url``.  The server's responder is the scripted teacher the command's own
tests use (the simulated arithmetic teacher, the Banking77 and Self-Instruct responders, a scripted
judge); the server wraps its text in the flavor's reply shape, reasoning fields included.

Per cell: rows written / rows rejected (how many of those rejects are caused by the request's shape —
an HTTP 400, "unsupported", "invalid_request" — and, separately, by answers that ran out of tokens
inside the reasoning) / the emulator's bill in USD and the cost synthkd printed.  ``400s`` is the
server's count of requests it refused as malformed for the model (each one a request shape synthkd
got wrong, even when a re-shaped retry then succeeded).

``synthkd run`` cells run the ready pipelines in pipelines/ with the teacher pointed at the server and
their teacher-calling stages only (the training and eval stages need no teacher and take minutes on
CPU), on small input slices.  ``tailor`` runs round 0 + 1 tailored round with a random-init 2-layer
student (4 optimizer steps per round: the student is bad on purpose, so that it makes mistakes for the
teacher to correct).  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "tasks"))

from synthkd.testing.banking77_responder import Banking77Responder  # noqa: E402
from synthkd.testing.server import FaultConfig, TestServer, prompt_text_of  # noqa: E402
from synthkd.testing.simulated import SimulatedResponder, make_problems  # noqa: E402

#: flavor -> the model a user names for that family
FLAVORS = {"openai-reasoning": "o4-mini", "deepseek": "deepseek-reasoner", "vllm": "Qwen/Qwen3-8B",
           "think-inline": "Qwen/Qwen3-8B", "anthropic": "anthropic:claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
PRICES = {
    "o4-mini": {"input": 1.1, "output": 4.4, "cached_input": 0.275},
    "deepseek-reasoner": {"input": 0.28, "output": 0.42, "cached_input": 0.028},
    "Qwen/Qwen3-8B": {"input": 0.05, "output": 0.25},
    "gemini-2.5-flash": {"input": 0.3, "output": 2.5, "cached_input": 0.075},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75},
}
#: the answer budget of the "wide" variants of the commands whose default is a few tokens (relabel: 32), which
#: a reasoning model spends inside its reasoning; every other cell runs with the command's defaults
WIDE = "1024"

SHAPE_RE = re.compile(r"HTTP 400|\b400\b|unsupported|invalid_request|RequestRejected|not supported", re.I)
TRUNC_RE = re.compile(r"truncated_in_reasoning|ran out of tokens inside the reasoning|inside the reasoning", re.I)
COST_RE = re.compile(r"cost this run \$([0-9.]+)")


# ------------------------------------------------------------------------------------- responders

ARITH = make_problems(800, seed=0)


def _score_of(text: str) -> int:
    return 3 + int(hashlib.sha256(text.encode()).hexdigest(), 16) % 7  # 3..9, a pure function of the response


def judge_or(inner: Callable[[str, dict], str]) -> Callable[[str, dict], str]:
    """A judge for prompts/judge/score.j2 prompts ("Score: N"), ``inner`` for everything else."""
    def respond(endpoint: str, body: dict) -> str:
        prompt = prompt_text_of(body)
        m = re.search(r"Response:\n<<<\n(.*)\n>>>", prompt, re.S)
        if m and "Score: N" in prompt:
            return f"The response addresses the instruction.\nScore: {_score_of(m.group(1))}"
        return inner(endpoint, body)
    return respond


def api_default_temperature(inner: Callable[[str, dict], Any]) -> Callable[[str, dict], Any]:
    """A request without ``temperature`` samples at the API's default (1.0), as every provider does: the
    reasoning families leave ``temperature`` out, and the scripted responders would read that as greedy."""
    def respond(endpoint: str, body: dict) -> Any:
        if body.get("temperature") is None:
            body = {**body, "temperature": 1.0}
        return inner(endpoint, body)
    return respond


def generic(endpoint: str, body: dict) -> str:
    text = prompt_text_of(body)
    return f"Here is a short answer to: {text[-80:].strip()} -- variant {_score_of(text + json.dumps(body.get('seed')))}."


def svamp_recorded() -> Callable[[str, dict], str]:
    """The real PaLM completions of data/svamp/, for the question asked last in the prompt."""
    table = {}
    for line in (REPO / "data/svamp/svamp_train.recorded.jsonl").read_text().splitlines():
        r = json.loads(line)
        table[r["question"].strip()] = r["completion"]

    def respond(endpoint: str, body: dict) -> str:
        prompt = prompt_text_of(body)
        best = max(((prompt.rfind(q), q) for q in table if q in prompt), default=None)
        return table[best[1]] if best else "I am not sure what is being asked."
    return respond


_DRAWS: Counter = Counter()


def sampler(endpoint: str, body: dict) -> str:
    """An open-ended answer that differs per sample, for judge-mode preferences: by its seed, or where the API
    takes no seed (Anthropic: synthkd leaves it out) by the draw, as a real model sampling at T=1 would."""
    from synthkd.testing.sampling import sample_seed

    text = prompt_text_of(body)
    seed = sample_seed(body)
    if seed is None:
        _DRAWS[text] += 1
        seed = f"draw {_DRAWS[text]}"
    return f"Answer (sample {seed}): {text[-60:].strip()} -- " + "detail " * _score_of(text + str(seed))


def self_instruct() -> Callable[[str, dict], str]:
    from tasks_responders import SelfInstructResponder, load_user_oriented

    return SelfInstructResponder(load_user_oriented())


# ------------------------------------------------------------------------------------------ inputs

def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _head(src: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in src.read_text().splitlines()[:n]]


class Cell:
    """One command of the matrix: its argv (without connection options), responder and output files."""

    def __init__(self, name: str, responder: Callable[[], Any], argv: Callable[[Path, str], list[str]],
                 outputs: Callable[[Path], tuple[list[Path], list[Path]]] | None = None,
                 skip: Callable[[str], str | None] | None = None) -> None:
        self.name, self.responder, self.argv, self.skip = name, responder, argv, skip
        self.outputs = outputs or (lambda d: ([d / "out.jsonl"], [d / "out.rejects.jsonl"]))


def cells() -> list[Cell]:
    b77 = Banking77Responder.from_dir
    out = []

    def rationales(d: Path, model: str) -> list[str]:
        inp = _jsonl(d / "in.jsonl", _head(REPO / "data/arithmetic/train.jsonl", 12))
        return ["generate", "rationales", "-i", str(inp), "-o", str(d / "out.jsonl"), "--kind", "math", "--n-demos", "0",
                "--samples", "3", "--temperature", "0.7"]
    out.append(Cell("rationales", lambda: SimulatedResponder(ARITH), rationales))

    def tasks(d: Path, model: str) -> list[str]:
        return ["generate", "tasks", "--labels", str(REPO / "data/banking77/task_spec.yaml"), "-o", str(d / "out.jsonl"),
                "-n", "10", "--batch-size", "5"]
    out.append(Cell("tasks", b77, tasks))

    def si(d: Path, model: str) -> list[str]:
        return ["generate", "self-instruct", "--seeds", str(REPO / "tests/fixtures/tasks/seed_tasks.jsonl"),
                "-o", str(d / "out.jsonl"), "-n", "12", "--requests-per-round", "3"]
    out.append(Cell("self-instruct", self_instruct, si))

    def pm(d: Path, model: str) -> list[str]:
        return ["generate", "promptmix", "--labels", str(REPO / "data/banking77/labels.yaml"), "-o", str(d / "out.jsonl"),
                "--per-label", "2", "--group-size", "4", "--examples-per-call", "3"]
    out.append(Cell("promptmix", b77, pm))
    out.append(Cell(f"promptmix --relabel-max-tokens {WIDE}", b77,
                    lambda d, m: pm(d, m) + ["--relabel-max-tokens", WIDE]))

    def relabel(d: Path, model: str) -> list[str]:
        inp = _jsonl(d / "in.jsonl", _head(REPO / "data/banking77/test.jsonl", 12))
        return ["generate", "relabel", "--input", str(inp), "--labels", str(REPO / "data/banking77/labels.yaml"),
                "-o", str(d / "out.jsonl"), "--candidates", "4"]
    out.append(Cell("relabel", b77, relabel))
    out.append(Cell(f"relabel --max-tokens {WIDE}", b77, lambda d, m: relabel(d, m) + ["--max-tokens", WIDE]))

    def prefs(d: Path, model: str) -> list[str]:
        inp = _jsonl(d / "in.jsonl", [{"id": p.id, "prompt": p.question} for p in ARITH[:6]])
        return ["generate", "preferences", "-i", str(inp), "-o", str(d / "out.jsonl"), "--mode", "judge",
                "--judge", model, "--samples", "2", "--temperature", "0.9", "--min-margin", "1"]
    out.append(Cell("preferences (judge)", lambda: judge_or(sampler), prefs))

    def clean_judge(d: Path, model: str) -> list[str]:
        rows = _head(REPO / "tests/fixtures/filters/alpaca_eval_outputs_slice.jsonl", 12)
        inp = _jsonl(d / "in.jsonl", [{"id": r["id"], "input": r["instruction"], "completion": r["completion"]}
                                      for r in rows])
        (d / "ops.yaml").write_text("- op: judge\n  threshold: 6\n")
        return ["clean", "run", "--input", str(inp), "--config", str(d / "ops.yaml"), "--output", str(d / "out.jsonl")]
    out.append(Cell("clean: judge", lambda: judge_or(generic), clean_judge))

    def clean_relabel(budget: str | None) -> Callable[[Path, str], list[str]]:
        def argv(d: Path, model: str) -> list[str]:
            inp = _jsonl(d / "in.jsonl", _head(REPO / "data/banking77/test.jsonl", 12))
            (d / "ops.yaml").write_text(f"- op: relabel\n  labels: {REPO / 'data/banking77/labels.yaml'}\n"
                                        "  policy: drop\n" + (f"  max_tokens: {budget}\n" if budget else ""))
            return ["clean", "run", "--input", str(inp), "--config", str(d / "ops.yaml"), "--output",
                    str(d / "out.jsonl")]
        return argv
    out.append(Cell("clean: relabel", b77, clean_relabel(None)))
    out.append(Cell(f"clean: relabel, max_tokens {WIDE}", b77, clean_relabel(WIDE)))

    def tailor(d: Path, model: str) -> list[str]:
        pool = _jsonl(d / "pool.jsonl", _head(REPO / "data/arithmetic/train.jsonl", 16))
        held = _jsonl(d / "held.jsonl", _head(REPO / "data/arithmetic/test.jsonl", 8))
        initial = _jsonl(d / "initial.jsonl", [
            {"id": p.id, "kind": "math", "input": p.question, "rationale": p.rationale()[0], "answer": p.answer}
            for p in ARITH[:16]])
        return ["tailor", "--pool", str(pool), "--initial", str(initial), "--student", str(tiny_student(d.parent.parent)),
                "--heldout", str(held), "-o", str(d / "tailor"),
                "--rounds", "1", "--mode", "rationale", "--max-mistakes", "6", "--similar", "1", "--dpo", "off",
                "--max-steps", "4", "--batch-size", "8", "--max-length", "128", "--max-new-tokens", "32",
                ]
    out.append(Cell("tailor", lambda: SimulatedResponder(ARITH), tailor,
                    outputs=lambda d: (sorted(d.glob("tailor/round_*/new_rows.jsonl"))
                                       + sorted(d.glob("tailor/round_*/similar_rows.jsonl")),
                                       sorted(d.glob("tailor/round_*/*.rejects.jsonl"))),
                    skip=lambda _: TAILOR_SKIP))
    for pipe, resp, slices in PIPELINES:
        wide = slices.get("promptmix", {}).get("relabel_max_tokens") if isinstance(slices.get("promptmix"), dict) else None
        out.append(Cell(f"run {pipe}" + (f" (promptmix relabel_max_tokens {wide})" if wide else ""), resp, _pipeline_argv(pipe, slices),
                        outputs=lambda d: (sorted(p for p in (d / "runs").glob("*/*.jsonl")
                                                  if not p.name.endswith((".rejects.jsonl", ".ledger.jsonl"))),
                                           sorted((d / "runs").glob("*/*.rejects.jsonl")))))
    return out


TAILOR_SKIP: str | None = None


def tiny_student(root: Path) -> Path:
    """A random-init 2-layer Llama with a tokenizer of the arithmetic texts, built once per run (as the
    pipelines' ``student: tiny`` does)."""
    out = root / ".tiny-student"
    if not (out / "config.json").exists():
        from synthkd.train.tiny import build_tiny_student

        texts = [p.question for p in ARITH] + [p.rationale()[0] for p in ARITH[:200]] + ["So the answer is 0123456789"]
        build_tiny_student(texts, out, vocab_size=600, hidden_size=64, layers=2, heads=4)
    return out

#: ready pipeline -> its teacher-calling stages (training/eval dropped) and their small slices
PIPELINES = [
    ("svamp_step_by_step", svamp_recorded, {"rationales": ("data/svamp/svamp_train.input.jsonl", 12), "clean": None}),
    ("intent_from_prompts", Banking77Responder.from_dir,
     {"tasks": {"per_label": 2, "batch_size": 2}, "relabel_tasks": None, "promptmix": {"per_label": 2}, "merge": None,
      "clean": None}),
    ("intent_from_prompts", Banking77Responder.from_dir,
     {"tasks": {"per_label": 2, "batch_size": 2}, "relabel_tasks": None,
      "promptmix": {"per_label": 2, "relabel_max_tokens": int(WIDE)},
      "merge": None, "clean": None}),
    ("tailored_rounds", lambda: SimulatedResponder(ARITH), {"rationales": ("data/arithmetic/train_first200.jsonl", 12),
                                                            "clean": None}),
    ("preference_distillation", lambda: SimulatedResponder(ARITH), {"rationales": ("data/arithmetic/train.jsonl", 12),
                                                                    "clean": None}),
]


def _pipeline_argv(pipe: str, slices: dict) -> Callable[[Path, str], list[str]]:
    def argv(d: Path, model: str) -> list[str]:
        cfg = yaml.safe_load((REPO / "pipelines" / f"{pipe}.yaml").read_text())
        stages = []
        for st in cfg["stages"]:
            if st["name"] not in slices:
                continue
            s = slices[st["name"]]
            if isinstance(s, tuple):
                st["input"] = str(_jsonl(d / f"{st['name']}.in.jsonl", _head(REPO / s[0], s[1])))
            elif isinstance(s, dict):
                st["options"].update(s)
            stages.append(st)
        cfg["stages"] = stages
        (d / "p.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        return ["run", str(d / "p.yaml"), "--yes", "--set", f"run_dir={d / 'runs'}"]
    return argv


# -------------------------------------------------------------------------------------------- running

def env(home: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("OPENAI_", "ANTHROPIC_", "SYNTHKD_"))}
    e.update(PYTHONPATH=str(REPO), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), HF_HUB_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MPLCONFIGDIR=str(home / ".mpl"), OPENAI_API_KEY="sk-bench",
             ANTHROPIC_API_KEY="sk-ant-bench", SYNTHKD_CACHE=str(home / "cache.sqlite"))
    return e


def connection(cell: Cell, srv: TestServer, model: str, d: Path, prices: Path) -> list[str]:
    base = srv.url if srv.flavor == "anthropic" else srv.base_url
    # what a user sets for a reasoning model: Claude's thinking budget; room to reason for a Qwen3 thinking
    # model the family table cannot know by name (o-series and deepseek-reasoner get it by default)
    extra = {"anthropic": ("thinking_budget", "1024")}.get(srv.flavor) or (
        ("reasoning_budget", "4096") if srv.flavor in QWEN_THINKING else None)
    if cell.name.startswith("run "):
        flags = ["--set", f"teacher.model={model}", "--set", f"teacher.base_url={base}",
                 "--set", f"teacher.prices={prices}", "--set", f"teacher.cache={d / 'cache.sqlite'}"]
        return flags + (["--set", f"teacher.{extra[0]}={extra[1]}"] if extra else [])
    flags = ["-m", model, "--base-url", base, "--prices", str(prices), "--cache", str(d / "cache.sqlite")]
    if extra:
        flags += ["--" + extra[0].replace("_", "-"), extra[1]]
    return flags


#: flavors standing in for a Qwen3 thinking model served by vLLM (trace in a field, or inline)
QWEN_THINKING = ("vllm", "think-inline")


def count(paths: list[Path]) -> tuple[int, list[dict]]:
    rows: list[dict] = []
    for p in paths:
        if p.exists():
            rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return len(rows), rows


def run_cell(cell: Cell, flavor: str, model: str, root: Path, prices: Path) -> dict:
    d = root / flavor / re.sub(r"\W+", "_", cell.name)
    d.mkdir(parents=True)
    reason = cell.skip(flavor) if cell.skip else None
    if reason:
        return {"skip": reason}
    srv = TestServer(FaultConfig(seed=1), responder=api_default_temperature(cell.responder()), flavor=flavor,
                     prices=PRICES).start()
    try:
        argv = cell.argv(d, model) + connection(cell, srv, model, d, prices)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "synthkd.cli", *argv], cwd=REPO, env=env(root / ".home"),
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        wall = time.monotonic() - t0
        (d / "stderr.txt").write_text(proc.stderr)
        st = srv.stats()
    finally:
        srv.stop()
    outs, rejs = cell.outputs(d)
    n_ok, _ = count(outs)
    n_rej, rej_rows = count(rejs)
    blob = [json.dumps(r) for r in rej_rows]
    res = {
        "rc": proc.returncode, "ok": n_ok, "rejected": n_rej, "shape": sum(bool(SHAPE_RE.search(b)) for b in blob),
        "trunc": sum(bool(TRUNC_RE.search(b)) for b in blob), "bill": st["billed_usd"],
        "cost": synthkd_cost(d, proc.stderr), "requests": st["requests_total"],
        "400s": st["by_outcome"].get("bad_request", 0), "wall": wall,
        "stderr": proc.stderr[-1500:] if proc.returncode else "",
        "reasons": Counter(reason_kind(r) for r in rej_rows),
    }
    return res


def synthkd_cost(d: Path, stderr: str) -> float:
    """What synthkd reported paying: the commands' "cost this run $X" lines, else the clean funnel's and
    the pipeline manifest's per-stage teacher costs."""
    printed = [float(c) for c in COST_RE.findall(stderr)]
    if printed:
        return sum(printed)
    total = 0.0
    for f in d.glob("tailor/rounds.json"):
        total += json.loads(f.read_text()).get("cost_usd") or 0
    for f in d.glob("*.funnel.json"):
        total += sum(s.get("details", {}).get("cost_usd") or 0 for s in json.loads(f.read_text())["stages"])
    for m in d.glob("runs/*/manifest.json"):
        total += sum((s.get("teacher") or {}).get("cost_usd") or 0 for s in json.loads(m.read_text())["stages"].values())
    return total


def reason_kind(row: dict) -> str:
    """A reject row's reason without its particulars (ids, scores, quoted texts)."""
    why = str(row.get("reject_reason") or row.get("relabel_reason") or row.get("reason") or row.get("error") or "?")
    if SHAPE_RE.search(json.dumps(row)):
        why = "REQUEST SHAPE: " + why
    why = re.split(r"[:(\[]| with | rouge", why, maxsplit=1)[0] if not why.startswith(("teacher error", "REQUEST"))  \
        else ":".join(why.split(":")[:2])
    return re.sub(r"\d+", "N", why.strip())[:80]


def fmt(r: dict) -> str:
    if "skip" in r:
        return f"skipped: {r['skip']}"
    exit_note = ""
    if r["rc"] != 0:
        last = [ln for ln in r["stderr"].splitlines() if ln.strip()]
        if not r["ok"] and not r["rejected"]:
            return f"**exit {r['rc']}**: {last[-1][:120] if last else ''}"
        exit_note = f"**exit {r['rc']}**, "
    # synthkd prints its cost to 6 decimals per teacher: equal within that rounding, or both shown
    cost = f"${r['bill']:.4f}" + ("" if abs(r["cost"] - r["bill"]) < 1e-5 else f" (synthkd ${r['cost']:.4f})")
    extra = f", {r['trunc']} out of tokens in reasoning" if r["trunc"] else ""
    return (exit_note + f"{r['ok']} ok / {r['rejected']} rej ({r['shape']} shape{extra}) / {cost}"
            + (f" / **{r['400s']} HTTP 400s**" if r["400s"] else ""))


def main() -> None:
    global TAILOR_SKIP
    all_cells = cells()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flavors", nargs="*", choices=list(FLAVORS), default=list(FLAVORS))
    ap.add_argument("--commands", nargs="*", choices=[c.name for c in all_cells], default=[c.name for c in all_cells])
    ap.add_argument("--no-tailor", action="store_true", help="skip `synthkd tailor` (it trains a tiny student on "
                    "CPU twice per family: ~25 s each on 2 cores)")
    ap.add_argument("--keep", type=Path, help="keep the run directories here (default: a temporary dir)")
    args = ap.parse_args()
    if args.no_tailor:
        TAILOR_SKIP = "--no-tailor"
    print(f"command: python {' '.join([os.path.relpath(__file__, REPO), *sys.argv[1:]])}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, python {sys.version.split()[0]}, "
          f"{platform.system()} {platform.release()}")
    print(f"each command runs with its defaults (the WIDE variants: an answer budget of {WIDE}); anthropic runs with "
          "--thinking-budget 1024, the Qwen3 flavors with --reasoning-budget 4096; cell: rows ok / rejected (of which caused by request shape) / emulator bill "
          "(synthkd's own figure beside it when it differs by more than the 6 decimals synthkd prints) / server 400s "
          "when any\n", flush=True)
    chosen = [c for c in all_cells if c.name in args.commands]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        prices = root / "prices.json"
        prices.write_text(json.dumps(PRICES))
        results: dict[tuple[str, str], dict] = {}
        for flavor in args.flavors:
            for cell in chosen:
                r = run_cell(cell, flavor, FLAVORS[flavor], root, prices)
                results[(cell.name, flavor)] = r
                print(f"  {flavor:17} {cell.name:30} {fmt(r)}  ({r.get('wall', 0):.1f} s)", flush=True)
        print("\n| command | " + " | ".join(f"{f} ({FLAVORS[f]})" for f in args.flavors) + " |")
        print("|---|" + "---|" * len(args.flavors))
        for cell in chosen:
            print(f"| {cell.name} | " + " | ".join(fmt(results[(cell.name, f)]) for f in args.flavors) + " |")
        reasons: dict[tuple[str, str], dict[str, int]] = {}
        for (name, flavor), r in results.items():
            for why, n in r.get("reasons", Counter()).items():
                reasons.setdefault((name, why), {})[flavor] = n
        if reasons:
            print("\nreject reasons (rows per flavor):")
            for (name, why), fl in sorted(reasons.items()):
                print(f"- {name}: {why!r}: " + ", ".join(f"{f} {n}" for f, n in fl.items()))
        failures = [(k, r) for k, r in results.items() if r.get("rc")]
        for (name, flavor), r in failures:
            print(f"\n--- {name} / {flavor}: exit {r['rc']}, stderr tail:\n{r['stderr']}")
    print(f"\ntotal {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
