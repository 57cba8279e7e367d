"""``synthkd demo --tailored``: tailored multi-round distillation vs one-shot distillation, offline.

Why a separate demo: its question is not "which training format" but "where should the next teacher
calls go".  Both arms start from the same round 0 (rationales for the first ``n_initial`` problems of a
pool, filtered for consistency with the gold answer, one tiny student).  Then

* **tailored** (the ``tailor`` stage): each round the student answers the pool, up to ``max_mistakes``
  of its mistakes go to the teacher for a corrected rationale (the teacher sees the student's wrong
  solution and the gold answer), and a student is retrained from the base student on every row so far
  (``from_base``, as LLM2LLM does); after the last round, DPO on the self-reflection pairs (the
  student's wrong answers vs the teacher's corrections).  ``similar`` > 0 adds LLM2LLM's new exercises
  per mistake (variations of the missed problem, solved again and filtered);
* **one-shot at equal teacher calls and optimiser steps**: the same number of teacher calls the
  initial rationales and the tailored rounds used, spent up front on rationales for more pool
  problems, one training run of a tiny student of the same shape and seed, from scratch, of as many
  optimiser steps as the best tailored round's run (:func:`tailored_steps`), so the comparison is about
  the data, not the training length.

The pool (6,000 problems) is about three times the teacher-call budget: with a pool the budget nearly
covers, both arms end up asking about the same problems and "which problems" is no question at all
(the first version of this demo had a 1,500-problem pool and spent 1,443 calls).

Defaults (round 0 on 1,000 problems, then 3 rounds of up to 300 corrections, no new exercises): 1,900
teacher calls.  Round 0 is large on purpose: a student's mistakes only say something about it once it
gets a good share of the pool right.  Below about 40% (a round 0 of 300 problems) nearly every pool
problem is a mistake, a sample of mistakes is a sample of the pool, and the tailored arm's "choice" is
the one-shot arm's random draw; the tiny students are then also on the steep part of their learning
curve, where two equivalent runs land 10-25 points apart.  Each call buys one row that reaches the
gold answer (the teacher sees it), where a new exercise costs two calls (asked, then solved) and its
row is a near-copy of a missed problem.

Everything runs through the pipeline runner (``runs/demo_tailored/pipeline.yaml`` holds the final
pipeline), against the simulated arithmetic teacher behind a loopback OpenAI-compatible server with
API-like latency and 5% server errors.  The equal-budget arm is added once the tailored arm's calls are
known: the runner skips every finished stage, so the second run only does the new ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from synthkd.demo import (
    accuracy_of,
    cpu_seconds,
    fixed_torch_threads,
    run_seeds,
    run_spec,
    stage_accuracy,
    teacher_model_name,
)
from synthkd.testing.simulated import SimulatedResponder, make_problems
from synthkd.train.export import write_jsonl


def _train_options(epochs: float, lr: float, batch_size: int, seed: int) -> dict[str, Any]:
    return {"epochs": epochs, "learning_rate": lr, "batch_size": batch_size, "max_length": 192, "seed": seed,
            "logging_steps": 10}


TINY = {"hidden_size": 128, "layers": 2, "heads": 4, "vocab_size": 600}
EVAL = {"kind": "number", "gold_field": "gold", "input_field": "question", "batch_size": 64, "max_new_tokens": 64}


def tailored_stages(data: Path, *, rounds: int, max_mistakes: int, similar: int, samples: int, from_base: bool,
                    epochs: float, lr: float, batch_size: int, seed: int, tiny: dict[str, int]) -> list[dict[str, Any]]:
    """Round 0 + the tailored rounds + the DPO self-reflection step."""
    train = _train_options(epochs, lr, batch_size, seed)
    return [
        {"name": "rationales", "kind": "generate.rationales", "input": str(data / "initial.jsonl"),
         "options": {"kind": "math", "n_demos": 0, "max_tokens": 128}},
        {"name": "clean", "kind": "clean", "input": "rationales",
         "options": {"ops": [{"op": "consistency", "mode": "gold", "kind": "number"}]}},
        {"name": "tailor", "kind": "tailor", "input": str(data / "pool.jsonl"),
         "options": {"initial": "clean", "heldout": str(data / "dev.jsonl"), "student": "tiny", "tiny": tiny,
                     "rounds": rounds, "patience": rounds, "mode": "rationale", "accumulate": True, "from_base": from_base,
                     "max_mistakes": max_mistakes, "similar": similar, "samples": samples, "dpo": "final",
                     "dpo_beta": 0.5, "dpo_loss_type": ["sigmoid", "sft"], "max_tokens": 128,
                     "max_new_tokens": 64, "eval_batch_size": 64, **train}},
        # the tailored arm on the test set: each round's student, and the DPO student
        *[{"name": f"eval_round_{r}", "kind": "eval", "input": str(data / "test.jsonl"),
           "options": {**EVAL, "student": f"tailor/round_{r}/model"}} for r in range(rounds + 1)],
        {"name": "eval_dpo", "kind": "eval", "input": str(data / "test.jsonl"),
         "options": {**EVAL, "student": "tailor/reflection/model"}},
    ]


def equal_budget_stages(data: Path, *, max_steps: int, lr: float, batch_size: int, seed: int,
                        tiny: dict[str, int]) -> list[dict[str, Any]]:
    """The one-shot arm: rationales for as many pool problems as the tailored arm made teacher calls,
    filtered alike, one student trained for as many optimiser steps as the tailored arm's rounds took."""
    train = {**_train_options(1.0, lr, batch_size, seed), "max_steps": max_steps}
    return [
        {"name": "rationales_equal", "kind": "generate.rationales", "input": str(data / "equal.jsonl"),
         "options": {"kind": "math", "n_demos": 0, "max_tokens": 128}},
        {"name": "clean_equal", "kind": "clean", "input": "rationales_equal",
         "options": {"ops": [{"op": "consistency", "mode": "gold", "kind": "number"}]}},
        {"name": "sft_equal", "kind": "train.sft", "input": "clean_equal",
         "options": {"student": "tiny", "tiny": tiny, "mode": "rationale", **train}},
        {"name": "eval_equal", "kind": "eval", "input": str(data / "test.jsonl"),
         "options": {**EVAL, "student": "sft_equal"}},
    ]


def run_tailored_demo(*, n_pool: int = 6000, n_initial: int = 1000, n_dev: int = 100, n_test: int = 200,
                      rounds: int = 3, max_mistakes: int = 300, similar: int = 0, samples: int = 1,
                      error_rate: float = 0.1, noise_rate: float = 0.1, epochs: float = 10.0, lr: float = 2e-3,
                      batch_size: int = 16, seed: int = 0, latency_ms: int = 150, tiny: dict[str, int] | None = None,
                      similar_kind: str = "variation", from_base: bool = True,
                      concurrency: int = 16, server_error_rate: float = 0.05, run_name: str = "demo_tailored",
                      base_dir: Path | None = None) -> dict[str, Any]:
    from synthkd.testing.server import FaultConfig, TestServer

    base = base_dir or Path.cwd()
    tiny = {**(tiny or TINY), "seed": seed}
    run_dir = base / "runs" / run_name
    data = run_dir / "data"
    from synthkd.pipeline import claim_run_dir

    claim_run_dir(run_dir, run_name)  # marked as synthkd's before the demo writes its inputs into it
    problems = make_problems(n_pool + n_dev + n_test, seed=seed)
    pool, dev, test = problems[:n_pool], problems[n_pool:n_pool + n_dev], problems[n_pool + n_dev:]
    write_jsonl([{"id": p.id, "question": p.question, "answer": p.answer} for p in pool], data / "pool.jsonl")
    write_jsonl([{"id": p.id, "question": p.question, "answer": p.answer} for p in pool[:n_initial]], data / "initial.jsonl")
    write_jsonl([{"id": p.id, "question": p.question, "gold": p.answer} for p in dev], data / "dev.jsonl")
    write_jsonl([{"id": p.id, "question": p.question, "gold": p.answer} for p in test], data / "test.jsonl")
    # the seed is in the salt: another seed is another teacher's slips, not only other problems
    teacher = SimulatedResponder([], error_rate=error_rate, noise_rate=noise_rate, salt=f"careful{seed}",
                                 similar_kind=similar_kind)
    t0, c0 = time.monotonic(), cpu_seconds()
    with TestServer(FaultConfig(latency_ms=latency_ms, latency_jitter_ms=latency_ms * 2 // 3,
                                error_rate=server_error_rate, seed=seed), responder=teacher) as srv, \
            fixed_torch_threads():
        spec: dict[str, Any] = {
            "name": "demo_tailored", "description": "synthkd offline demo: tailored rounds vs one-shot", "run_dir": "runs",
            "seed": seed, "teacher": {"model": teacher_model_name("careful", teacher), "base_url": srv.base_url, "concurrency": concurrency},
            "stages": tailored_stages(data, rounds=rounds, max_mistakes=max_mistakes, similar=similar, samples=samples,
                                      from_base=from_base,
                                      epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, tiny=tiny)}
        manifest = run_spec(spec, run_dir, base)
        st = manifest["stages"]
        initial_calls = n_initial  # one rationale call per problem
        tailored_calls = sum(_round_calls(h) for h in (st["tailor"].get("counts") or {}).get("rounds", []))
        n_equal = min(n_pool, initial_calls + tailored_calls)
        write_jsonl([{"id": p.id, "question": p.question, "answer": p.answer} for p in pool[:n_equal]], data / "equal.jsonl")
        steps = tailored_steps(run_dir / "tailor", st["tailor"], from_base=from_base)
        spec["stages"] += equal_budget_stages(data, max_steps=steps, lr=lr, batch_size=batch_size, seed=seed, tiny=tiny)
        manifest = run_spec(spec, run_dir, base)
    wall, cpu = time.monotonic() - t0, cpu_seconds() - c0
    st = manifest["stages"]
    table = tailored_table(st, rounds=rounds, initial_calls=initial_calls, n_pool=n_pool, equal_rows=n_equal,
                           tailored_steps=steps)
    (run_dir / "demo_table.md").write_text(table + f"\n\nwall time {wall:.0f} s, CPU time {cpu:.0f} s\n")
    hist = {h["round"]: h for h in (st["tailor"].get("counts") or {}).get("rounds", [])}
    acc: dict[str, float | None] = {f"round_{r}": accuracy_of(st, f"eval_round_{r}") for r in hist}
    best = (st["tailor"].get("counts") or {}).get("best_round")
    acc.update({"best": None if best is None else acc.get(f"round_{best}"), "dpo": accuracy_of(st, "eval_dpo"),
                "equal": accuracy_of(st, "eval_equal")})
    return {"table": table, "wall_s": wall, "cpu_s": cpu, "run_dir": str(run_dir), "seed": seed, "accuracy": acc,
            "best_round": best, "plot": str(run_dir / "tailor" / "accuracy.png")}


def tailored_steps(tailor_dir: Path, stage: dict[str, Any], *, from_base: bool) -> int:
    """Optimiser steps behind the best tailored round's model, read from the training record each round's
    model carries: that round's own SFT run when every round trains from the base student
    (``from_base``), else every SFT run up to it (round 0 included; a round that trained nothing adds
    none).  The DPO self-reflection step is not counted: it is reported on its own row."""
    import json

    counts = stage.get("counts") or {}
    best = counts.get("best_round")
    steps: dict[int, int] = {}
    for h in counts.get("rounds", []):
        if h.get("status") == "trained":
            record = tailor_dir / f"round_{h['round']}" / "model" / "synthkd_train.json"
            steps[h["round"]] = int(json.loads(record.read_text())["metrics"]["global_steps"])
    if best is None:
        best = max(steps, default=0)
    if from_base:
        return steps.get(best, 0)
    return sum(n for r, n in steps.items() if r <= best)


TAILORED_COLUMNS = (("round 0", "round_0"), ("best tailored round (by dev)", "best"), ("+ DPO", "dpo"),
                    ("one-shot, equal calls and steps", "equal"))
TAILORED_EFFECTS = (("best tailored − one-shot", "best", "equal"),)


def run_tailored_demo_seeds(seeds: list[int], base_dir: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """The tailored demo once per seed (``runs/demo_tailored`` for one seed, ``runs/demo_tailored_seed<s>``
    for several), then the per-seed table with mean ± standard error."""
    return run_seeds(run_tailored_demo, "demo_tailored", seeds, TAILORED_COLUMNS, TAILORED_EFFECTS, base_dir,
                     **kwargs)


def _round_calls(h: dict[str, Any]) -> int:
    """Teacher calls a round made (cache hits included: a call is a call, the cache only avoids paying twice)."""
    return int(h.get("teacher_requests", 0))


def tailored_table(stages: dict[str, Any], *, rounds: int, initial_calls: int, n_pool: int, equal_rows: int,
                   tailored_steps: int | None = None) -> str:
    def acc(name: str) -> str:
        return stage_accuracy(stages, name)

    tc = stages.get("tailor", {}).get("counts") or {}
    hist = {h["round"]: h for h in tc.get("rounds", [])}
    lines = ["| student | teacher calls (cumulative) | training rows | dev accuracy | test accuracy |",
             "|---|---|---|---|---|"]
    calls = initial_calls
    for r in range(rounds + 1):
        h = hist.get(r)
        if h is None:
            continue
        calls += _round_calls(h)
        what = ("round 0: one-shot distillation" if r == 0 else
                f"tailored round {r} ({h.get('mistakes')} mistakes → {h.get('corrections')} corrections"
                + (f" + {h['similar_rows']} new exercises)" if h.get("similar_rows") else ")"))
        dev = "-" if h.get("accuracy") is None else f"{100 * h['accuracy']:.1f}%"
        lines.append(f"| {what} | {calls} | {h.get('train_rows')} | {dev} | {acc(f'eval_round_{r}')} |")
    ref = tc.get("reflection") or {}
    if ref:
        dev = "-" if ref.get("accuracy") is None else f"{100 * ref['accuracy']:.1f}%"
        lines.append(f"| + DPO self-reflection (from round {ref.get('from_round')}, {ref.get('pairs')} pairs) | {calls} "
                     f"| {ref.get('pairs')} pairs | {dev} | {acc('eval_dpo')} |")
    eq_rows = (stages.get("sft_equal", {}).get("counts") or {}).get("rows_in", "-")
    steps = "" if tailored_steps is None else f", {tailored_steps} optimiser steps like the best tailored round"
    lines.append(f"| one-shot at equal teacher calls (rationales for {equal_rows} of {n_pool} pool problems{steps}) "
                 f"| {equal_rows} | {eq_rows} | - | {acc('eval_equal')} |")
    return "\n".join(lines)
