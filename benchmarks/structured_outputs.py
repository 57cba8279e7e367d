#!/usr/bin/env python
"""Structured outputs against the test server: per method, rows, answers asked as JSON, invalid replies
injected, re-asks, rows lost, parse rejects, the share recovered and what the re-asks cost.

Every method (task examples, Self-Instruct, PromptMix, similar exercises, judge, relabel, the judge of
``generate preferences --mode judge``) runs with
the scripted teachers of ``tests/test_structured_outputs.py`` (a JSON-schema teacher) at
``--invalid-json-rate`` (default 0.1), over ``--seeds`` server seeds, priced at $1/$2 per 1M tokens.

Usage::

    python benchmarks/structured_outputs.py [--rate 0.1] [--seeds 10] [--reask 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "fixtures" / "tasks")]

import test_structured_outputs as T  # noqa: E402
from synthkd.testing.server import FaultConfig, TestServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--reask", type=int, default=2)
    args = ap.parse_args()
    real = T._teacher
    T._teacher = lambda srv, model="gpt-4o", **kw: real(srv, model, **{"reask": args.reask, **kw})  # type: ignore[assignment]
    total_answers = total_lost = 0
    for method in T.METHODS:
        run, responder = T._responders()[method]
        agg = dict(rows=0, answers=0, invalid=0, reasks=0, lost=0, rejects=0, reask_cost=0.0, cost=0.0)
        for seed in range(args.seeds):
            with TestServer(FaultConfig(invalid_json_rate=args.rate, seed=seed),
                            responder=T.json_teacher(responder())) as srv:
                rows, teachers = run(srv, "gpt-4o", Path(tempfile.mkdtemp()))
                agg["invalid"] += srv.stats()["by_outcome"]["invalid_json"]
            st = teachers[0].stats
            agg["rows"] += len(rows)
            agg["answers"] += st.structured - st.reasks
            agg["reasks"] += st.reasks
            agg["lost"] += st.structured_invalid
            agg["rejects"] += len(T.parse_rejects(rows))
            agg["reask_cost"] += st.reask_cost_usd
            agg["cost"] += st.cost_usd
        total_answers += agg["answers"]
        total_lost += agg["lost"]
        print(f"{method:18s} rows {agg['rows']:5d}  answers {agg['answers']:5d}  invalid replies {agg['invalid']:4d}  "
              f"re-asks {agg['reasks']:4d}  lost {agg['lost']}  parse rejects {agg['rejects']}  "
              f"recovered {1 - agg['lost'] / agg['answers']:.4f}  re-ask cost ${agg['reask_cost']:.5f} of "
              f"${agg['cost']:.5f} ({100 * agg['reask_cost'] / agg['cost']:.1f}%)")
    print(f"all methods: {total_answers} answers, {total_lost} lost, recovered {1 - total_lost / total_answers:.4f}")


if __name__ == "__main__":
    main()
