"""`synthkd validate`'s teacher-call estimate vs the calls a run really needed, on the ready pipelines.

For each pipelines/*.yaml, the teacher stages before the first training stage (the estimate of a stage
whose input an earlier stage makes is only known once that stage ran) are estimated as ``synthkd
validate`` does, run into a scratch run directory with a fresh request cache (so every call is a real
one), and estimated again afterwards (a generate.tasks stage then uses the keep rate measured on that
run instead of its prior).  Teachers: the scripted Banking77 teacher on the loopback test server for
the intent pipeline (it plants near-copies and seed copies, so dedup drops candidates), the replayed
and simulated teachers the other pipelines ship with.

    python benchmarks/pipeline_estimates.py            # all ready pipelines
    python benchmarks/pipeline_estimates.py intent_from_prompts

Prints one table row per teacher stage: calls estimated before the run, calls the run made, calls
estimated after it, and the estimate's note.  Reads only the repository (no ../shared data needed).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAIN_KINDS = {"train.sft", "train.dpo", "tailor", "eval"}


def _teacher_stages(cfg) -> list[str]:
    out = []
    for st in cfg.stages:
        if st.kind in TRAIN_KINDS:
            break
        out.append(st.name)
    return out


def _estimates(cfg) -> dict[str, tuple[int | None, str]]:
    from synthkd.pipeline import estimate_all, plan

    planned = plan(cfg)
    estimate_all(planned)
    return {p.cfg.name: ((p.estimate.calls, p.estimate.note) if p.estimate else (None, "")) for p in planned}


def _actual(rec: dict) -> str:
    t = rec.get("teacher")
    if t:
        return str(t["requests"] + t.get("cached_answers", 0))
    c = rec.get("counts") or {}
    if c.get("rows_in") is not None and rec.get("kind", "").startswith("generate."):
        return f"{c['rows_in']} (replayed)"
    return "-"


def main(names: list[str]) -> None:
    from synthkd.config import load_pipeline
    from synthkd.pipeline import run_pipeline
    from synthkd.testing.banking77_responder import Banking77Responder
    from synthkd.testing.server import FaultConfig, TestServer

    paths = sorted((REPO / "pipelines").glob("*.yaml"))
    if names:
        paths = [p for p in paths if p.stem in names]
    print("| pipeline | stage | kind | estimated before | actual calls | estimated after | note (after) |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["SYNTHKD_CACHE"] = str(Path(tmp) / "cache.sqlite")  # fresh: every call is a real one
            srv = None
            if path.stem == "intent_from_prompts":
                srv = TestServer(FaultConfig(), responder=Banking77Responder.from_dir()).start()
                os.environ["OPENAI_BASE_URL"] = srv.base_url
            try:
                full = load_pipeline(path, [f"run_dir={tmp}/runs"])
                keep = _teacher_stages(full)
                overrides = [f"run_dir={tmp}/runs"]
                cfg = load_pipeline(path, overrides)
                cfg.stages = [s for s in cfg.stages if s.name in keep]
                before = _estimates(cfg)
                res = asyncio.run(run_pipeline(cfg, log=lambda _m: None))
                after = _estimates(cfg)
            finally:
                if srv is not None:
                    srv.stop()
                    os.environ.pop("OPENAI_BASE_URL", None)
            for name in keep:
                rec = res.manifest["stages"][name]
                b, a = before[name][0], after[name][0]
                if b is None and a is None:
                    continue
                print(f"| {path.stem} | {name} | {rec.get('kind')} | {b if b is not None else '-'} | {_actual(rec)} | "
                      f"{a if a is not None else '-'} | {after[name][1] or '-'} |")
                if before[name][1]:
                    print(f"|  |  | (before: {before[name][1]}) |  |  |  |  |")
            m = res.manifest["stages"].get("tasks", {}).get("counts", {}).get("method_metrics")
            if m:
                print(f"\n{path.stem} tasks: {json.dumps({k: m[k] for k in ('candidates', 'kept', 'dedup_dropped', 'keep_rate', 'items_per_request', 'requests')})}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
