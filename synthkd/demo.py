"""``synthkd demo``: the whole loop offline, in minutes, through the real HTTP path.

It starts two simulated teachers on 127.0.0.1 (:mod:`synthkd.testing.simulated`: arithmetic word
problems with known answers; the teacher writes step-by-step rationales, slips on some, and adds
formatting noise) — one careful, one noisy — then runs an ordinary pipeline (written to
``runs/demo/pipeline.yaml`` so it can be read and rerun) that generates rationales, filters the noisy
ones for consistency, trains tiny students from scratch on CPU and evaluates them on held-out problems.
It prints two comparisons: at equal data, label-only distillation vs rationale vs multitask
step-by-step; and with the noisy teacher, no filter vs the consistency filter.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from synthkd.testing.simulated import SimulatedResponder, make_problems
from synthkd.train.export import write_jsonl


def run_spec(spec: dict[str, Any], run_dir: Path, base: Path) -> dict[str, Any]:
    """Write the pipeline a demo built to ``run_dir/pipeline.yaml`` (readable, rerunnable) and run it;
    returns the manifest."""
    from synthkd.config import PipelineConfig
    from synthkd.pipeline import run_pipeline

    run_dir.mkdir(parents=True, exist_ok=True)
    # paths in a pipeline file are relative to the file (runs/<name>/), so the run directory's parent is
    # written out: `synthkd run runs/<name>/pipeline.yaml` reruns into this same run directory
    spec = {**spec, "run_dir": str((Path(base) / spec.get("run_dir", "runs")).resolve())}
    (run_dir / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    cfg = PipelineConfig.model_validate(spec)
    cfg._source = run_dir / "pipeline.yaml"
    return asyncio.run(run_pipeline(cfg, base_dir=base)).manifest


def stage_accuracy(stages: dict[str, Any], name: str) -> str:
    """An eval stage's accuracy as a table cell ("-" when it did not run)."""
    m = (stages.get(name, {}).get("counts") or {}).get("metrics") or {}
    a = m.get("accuracy")
    return "-" if a is None else f"{100 * a:.1f}%"


def build_pipeline(data: Path, careful_url: str, noisy_url: str, *, epochs: float, lr: float,
                   batch_size: int, seed: int) -> dict[str, Any]:
    train = {"student": "tiny", "epochs": epochs, "learning_rate": lr, "batch_size": batch_size,
             "max_length": 192, "seed": seed, "logging_steps": 5, "tiny": {"hidden_size": 128, "layers": 2,
                                                                            "heads": 4, "vocab_size": 600}}
    ev = {"kind": "number", "gold_field": "gold", "input_field": "question", "batch_size": 64, "max_new_tokens": 64}
    # distinct model names: the request cache is keyed by model, not by URL
    teacher = lambda url, name: {"model": name, "base_url": url, "concurrency": 16}  # noqa: E731
    stages: list[dict[str, Any]] = [
        {"name": "rationales", "kind": "generate.rationales", "input": str(data / "train.jsonl"),
         "teacher": teacher(careful_url, "simulated-careful"), "options": {"kind": "math", "n_demos": 0, "max_tokens": 128}},
        {"name": "noisy_rationales", "kind": "generate.rationales", "input": str(data / "train.jsonl"),
         "teacher": teacher(noisy_url, "simulated-noisy"), "options": {"kind": "math", "n_demos": 0, "max_tokens": 128}},
        {"name": "noisy_filtered", "kind": "clean", "input": "noisy_rationales",
         "options": {"ops": [{"op": "consistency", "mode": "gold", "kind": "number"}]}},
        # the careful teacher's rows also go through the filter: every mode then trains on the same rows
        {"name": "filtered", "kind": "clean", "input": "rationales",
         "options": {"ops": [{"op": "consistency", "mode": "gold", "kind": "number"}]}},
    ]
    for mode in ("label", "rationale", "multitask"):
        stages.append({"name": f"sft_{mode}", "kind": "train.sft", "input": "filtered", "options": {**train, "mode": mode}})
    # no filter: every row the noisy teacher answered (rows with no parsable answer cannot be trained on)
    stages.append({"name": "sft_noisy_unfiltered", "kind": "train.sft", "input": "noisy_rationales",
                   "options": {**train, "mode": "multitask", "skip_invalid": True}})
    stages.append({"name": "sft_noisy_filtered", "kind": "train.sft", "input": "noisy_filtered",
                   "options": {**train, "mode": "multitask"}})
    for name in ("sft_label", "sft_rationale", "sft_multitask", "sft_noisy_unfiltered", "sft_noisy_filtered"):
        stages.append({"name": f"eval_{name[4:]}", "kind": "eval", "input": str(data / "test.jsonl"),
                       "options": {**ev, "student": name}})
    return {"name": "demo", "description": "synthkd offline demo", "run_dir": "runs", "seed": seed, "stages": stages}


def run_demo(*, n_train: int = 600, n_test: int = 200, error_rate: float = 0.1, noisy_error_rate: float = 0.4,
             noise_rate: float = 0.1, epochs: float = 4.0, lr: float = 2e-3, batch_size: int = 16,
             seed: int = 0, base_dir: Path | None = None) -> dict[str, Any]:
    from synthkd.testing.server import FaultConfig, TestServer

    base = base_dir or Path.cwd()
    run_dir = base / "runs" / "demo"
    data = run_dir / "data"
    from synthkd.pipeline import claim_run_dir

    claim_run_dir(run_dir, "demo")  # marked as synthkd's before the demo writes its inputs into it
    problems = make_problems(n_train + n_test, seed=seed)
    train, test = problems[:n_train], problems[n_train:]
    write_jsonl([{"id": p.id, "question": p.question, "answer": p.answer} for p in train], data / "train.jsonl")
    write_jsonl([{"id": p.id, "question": p.question, "gold": p.answer} for p in test], data / "test.jsonl")
    careful = SimulatedResponder(problems, error_rate=error_rate, noise_rate=noise_rate, salt="careful")
    noisy = SimulatedResponder(problems, error_rate=noisy_error_rate, noise_rate=noise_rate, salt="noisy")
    t0 = time.monotonic()
    # latency as a real API would have it; the 5% 500s exercise retries on the way
    with TestServer(FaultConfig(latency_ms=150, latency_jitter_ms=100, error_rate=0.05, seed=seed),
                    responder=careful) as s1, \
            TestServer(FaultConfig(latency_ms=150, latency_jitter_ms=100, error_rate=0.05, seed=seed + 1),
                       responder=noisy) as s2:
        spec = build_pipeline(data, s1.base_url, s2.base_url, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        stages = run_spec(spec, run_dir, base)["stages"]
    wall = time.monotonic() - t0
    table = demo_table(stages, error_rate, noisy_error_rate)
    (run_dir / "demo_table.md").write_text(table + f"\n\nwall time {wall:.0f} s\n")
    return {"table": table, "wall_s": wall, "run_dir": str(run_dir)}


def demo_table(stages: dict[str, Any], error_rate: float, noisy_error_rate: float) -> str:
    def acc(name: str) -> str:
        return stage_accuracy(stages, f"eval_{name}")

    def rows(stage: str) -> Any:
        return (stages.get(stage, {}).get("counts") or {}).get("rows_in", "-")

    teacher_acc = ((stages.get("rationales", {}).get("counts") or {}).get("teacher_scores") or {}).get("accuracy")
    noisy_acc = ((stages.get("noisy_rationales", {}).get("counts") or {}).get("teacher_scores") or {}).get("accuracy")
    lines = [
        "| comparison | training data | rows | student accuracy (held-out) |",
        "|---|---|---|---|",
        f"| label-only distillation | careful teacher ({error_rate:.0%} slips), filtered | {rows('sft_label')} | {acc('label')} |",
        f"| rationale (input → rationale + answer) | same rows | {rows('sft_rationale')} | {acc('rationale')} |",
        f"| multitask step-by-step (predict:/explain:) | same rows | {rows('sft_multitask')} | {acc('multitask')} |",
        f"| multitask, noisy teacher, no filter | noisy teacher ({noisy_error_rate:.0%} slips) | {rows('sft_noisy_unfiltered')} | {acc('noisy_unfiltered')} |",
        f"| multitask, noisy teacher, consistency filter | same, wrong answers dropped | {rows('sft_noisy_filtered')} | {acc('noisy_filtered')} |",
    ]
    if teacher_acc is not None and noisy_acc is not None:
        lines.append(f"\nteacher accuracy on the training problems: careful {100 * teacher_acc:.1f}%, "
                     f"noisy {100 * noisy_acc:.1f}%")
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - the CLI wraps run_demo
    out = run_demo()
    print(out["table"])
    print(f"wall time {out['wall_s']:.0f} s; run directory {out['run_dir']}", file=sys.stderr)
