#!/usr/bin/env python
"""Is the tailored demo's edge the *choice* of problems or only the *number* of rows?

``synthkd demo --tailored`` compares the best tailored round with one-shot distillation at equal
teacher calls and equal optimiser steps.  A tailored correction is asked with the gold answer, so each
of its calls buys a row; the one-shot arm's consistency filter drops ~10% of its rationales, so at
equal calls the tailored student has ~100 rows more.  This benchmark adds a third arm to finished demo
runs: one-shot at **equal rows** -- rationales for 1.2x as many pool problems as the best tailored round
has rows (the first ones of the same shuffled pool), the same consistency filter, then a seeded sample
down to exactly that row count, trained for the same optimiser steps, evaluated on the same test set.

It reads only the demo's own run directories (no shared data), runs the new arm next to each one
(``<run_dir>_equal_rows``, rerunnable: finished stages are skipped) against the same simulated teacher
(rebuilt from the run's ``pipeline.yaml`` and checked against its model name) on a fault-free loopback
server (the demo's answers do not depend on latency or faults), and prints the per-seed table with
mean +- standard error.  About 1.5 CPU-minutes a run directory (a rerun trains again: the new server's
address is part of the stages' fingerprint; the teacher's answers come from the request cache).

Usage (after ``synthkd demo --tailored --seed S`` for each seed, or ``--seeds 0,1,2``)::

    python benchmarks/tailored_equal_rows.py runs/demo_tailored_seed0 runs/demo_tailored_seed1 ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from synthkd.demo import accuracy_of, fixed_torch_threads, run_spec, seeds_table, teacher_model_name
from synthkd.pipeline import claim_run_dir
from synthkd.testing.server import FaultConfig, TestServer
from synthkd.testing.simulated import SimulatedResponder
from synthkd.train.export import write_jsonl


def equal_rows_arm(run_dir: Path, *, error_rate: float, noise_rate: float, oversample: float) -> dict[str, Any]:
    """The equal-rows arm next to one finished demo run.  Every option is the run's own one-shot arm's
    (its stages in ``pipeline.yaml``: the same teacher options, filter, student, ``max_steps`` and
    evaluation); only the problems asked and the final sample differ."""
    spec_in = yaml.safe_load((run_dir / "pipeline.yaml").read_text())
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    one_shot = {st["name"]: st for st in spec_in["stages"]}
    if "eval_equal" not in stages or "sft_equal" not in one_shot:
        sys.exit(f"{run_dir}: no one-shot arm (eval_equal) in manifest.json: not a finished `synthkd demo --tailored` run")
    seed = int(spec_in["seed"])
    teacher = SimulatedResponder([], error_rate=error_rate, noise_rate=noise_rate, salt=f"careful{seed}",
                                 similar_kind="variation")
    model = teacher_model_name("careful", teacher)
    if model != spec_in["teacher"]["model"]:
        sys.exit(f"{run_dir}/pipeline.yaml: teacher.model is {spec_in['teacher']['model']!r}, not {model!r}: "
                 "pass the demo's --error-rate / --noise-rate")
    best = stages["tailor"]["counts"]["best_round"]
    rows = int(json.loads((run_dir / "tailor" / f"round_{best}" / "metrics.json").read_text())["train_rows"])
    pool = [json.loads(line) for line in (run_dir / "data" / "pool.jsonl").read_text().splitlines()]
    n_problems = min(len(pool), round(rows * oversample))

    out = run_dir.parent / f"{run_dir.name}_equal_rows"
    claim_run_dir(out, out.name)
    write_jsonl(pool[:n_problems], out / "data" / "problems.jsonl")
    clean_ops = one_shot["clean_equal"]["options"]["ops"] + [{"op": "sample", "n": rows, "seed": seed}]
    with TestServer(FaultConfig(), responder=teacher) as srv, fixed_torch_threads():
        spec = {"name": out.name, "run_dir": str(out.parent), "seed": seed,
                "teacher": {**spec_in["teacher"], "base_url": srv.base_url},
                "stages": [
                    {"name": "rationales", "kind": "generate.rationales", "input": str(out / "data" / "problems.jsonl"),
                     "options": one_shot["rationales_equal"]["options"]},
                    {"name": "clean", "kind": "clean", "input": "rationales", "options": {"ops": clean_ops}},
                    {"name": "sft", "kind": "train.sft", "input": "clean", "options": one_shot["sft_equal"]["options"]},
                    {"name": "eval", "kind": "eval", "input": one_shot["eval_equal"]["input"],
                     "options": {**one_shot["eval_equal"]["options"], "student": "sft"}}]}
        manifest = run_spec(spec, out, out.parent)
    trained = (manifest["stages"]["sft"].get("counts") or {}).get("rows_in")
    print(f"{run_dir}: best round {best} ({rows} rows, {one_shot['sft_equal']['options'].get('max_steps')} steps); "
          f"equal-rows arm: {n_problems} problems asked, {trained} rows trained, "
          f"test {100 * (accuracy_of(manifest['stages'], 'eval') or 0):.1f}%", file=sys.stderr)
    return {"seed": seed, "accuracy": {"best": accuracy_of(stages, f"eval_round_{best}"),
                                       "equal": accuracy_of(stages, "eval_equal"),
                                       "rows": accuracy_of(manifest["stages"], "eval")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+", type=Path, help="finished `synthkd demo --tailored` run directories")
    ap.add_argument("--error-rate", type=float, default=0.1, help="the demo's --error-rate")
    ap.add_argument("--noise-rate", type=float, default=0.1, help="the demo's --noise-rate")
    ap.add_argument("--oversample", type=float, default=1.2,
                    help="problems asked per row wanted (the filter keeps ~90%%)")
    args = ap.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer logs to stdout: stdout gets the table only
        results = [equal_rows_arm(d, error_rate=args.error_rate, noise_rate=args.noise_rate,
                                  oversample=args.oversample) for d in args.run_dirs]
    print(seeds_table(results,
                      (("best tailored round", "best"), ("one-shot, equal calls", "equal"),
                       ("one-shot, equal rows", "rows")),
                      (("tailored − equal calls", "best", "equal"), ("tailored − equal rows", "best", "rows"),
                       ("equal rows − equal calls", "rows", "equal"))))


if __name__ == "__main__":
    main()
