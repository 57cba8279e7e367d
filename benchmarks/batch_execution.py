"""Batch mode benchmark: a 10,000-request `synthkd complete --batch` job against the Batch API emulator.

Run:  python benchmarks/batch_execution.py                 (1,000 then 10,000 requests, ~2 min on 2 cores)
      python benchmarks/batch_execution.py --sizes 1000 10000 50000 --batch-max-requests 2000

Prints, per job size: requests submitted (the emulator's count), batches created, requests submitted
more than once (must be 0), rows written, the cost at batch prices (what the rows say was billed) and
at online prices (the same usage priced by the online table), and the client's peak RSS (``wait4``
rusage of the ``synthkd complete`` child: the client alone, the emulator runs in its own process).
Memory should be flat in job size, as it is online: requests are written to the batch file as they
come, deferred jobs are dropped, and results are read from the provider line by line.  Figures are
printed, never asserted: this is not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from teacher_throughput import Server, env, write_prompts  # the same server process and prompts (benchmarks/)

REPO = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"


def run(tmp: Path, n: int, batch_seconds: float, max_requests: int | None, online: bool = False) -> dict:
    from synthkd.teachers.base import Usage
    from synthkd.teachers.pricing import PriceTable

    srv = Server("--batch-seconds", str(batch_seconds))
    try:
        tag = f"{n}{'-online' if online else ''}"
        inp, out = tmp / f"in{tag}.jsonl", tmp / f"out{tag}.jsonl"
        write_prompts(inp, n)
        mode = ([] if online else ["--batch", "--wait", "--batch-poll", "0.25",
                                   *(["--batch-max-requests", str(max_requests)] if max_requests else [])])
        cmd = [sys.executable, "-m", "synthkd.cli", "complete", "-m", MODEL, "--base-url", srv.base_url,
               "-i", str(inp), "-o", str(out), "--max-tokens", "64", *mode]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env(SYNTHKD_CACHE=str(tmp / f"cache{tag}.sqlite")),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        err = proc.stderr.read() if proc.stderr else ""
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"synthkd complete --batch exited {code}:\n{err[-2000:]}")
        b = srv.stats()["batch"]
    finally:
        srv.stop()
    price = PriceTable.default().lookup(MODEL)
    assert price is not None
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    batch_cost = sum(r["cost_usd"] for r in rows)
    online_cost = sum(price.cost_of(Usage.from_dict(r["usage"])) for r in rows)
    return {"requests": n, "rows": len({r["id"] for r in rows}), "submitted": b["requests_submitted"],
            "batches": b["batches_created"], "resubmitted": len(b["resubmitted_ids"]),
            "batch_cost_usd": batch_cost, "online_cost_usd": online_cost, "maxrss_mb": ru.ru_maxrss / 1024,
            "cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--batch-seconds", type=float, default=2.0, help="the emulator's time per batch")
    ap.add_argument("--batch-max-requests", type=int, default=None, help="requests per batch (default the provider's)")
    ap.add_argument("--online-baseline", action="store_true", help="also run each size online (same client, no --batch)")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="synthkd-batch-bench-") as d:
        for n in a.sizes:
            r = run(Path(d), n, a.batch_seconds, a.batch_max_requests)
            results.append(r)
            print(f"{n:>7,} requests: submitted {r['submitted']:,} in {r['batches']} batch(es), resubmitted "
                  f"{r['resubmitted']}, rows {r['rows']:,}; cost ${r['batch_cost_usd']:.6f} at batch prices vs "
                  f"${r['online_cost_usd']:.6f} online ({r['batch_cost_usd'] / r['online_cost_usd']:.3f}x); "
                  f"client peak RSS {r['maxrss_mb']:.1f} MB, CPU {r['cpu_s']:.1f} s, wall {r['wall_s']:.1f} s",
                  flush=True)
        if a.online_baseline:
            base = []
            for n in a.sizes:
                r = run(Path(d), n, a.batch_seconds, None, online=True)
                base.append(r)
                print(f"{n:>7,} requests online (baseline): rows {r['rows']:,}, cost ${r['batch_cost_usd']:.6f}; "
                      f"client peak RSS {r['maxrss_mb']:.1f} MB, CPU {r['cpu_s']:.1f} s, wall {r['wall_s']:.1f} s",
                      flush=True)
    if len(results) > 1:
        small, large = results[0], results[-1]
        print(f"batch: peak RSS {large['requests']:,} vs {small['requests']:,} requests: {large['maxrss_mb']:.1f} MB "
              f"vs {small['maxrss_mb']:.1f} MB ({large['maxrss_mb'] / small['maxrss_mb']:.3f}x)")
        if a.online_baseline:
            small, large = base[0], base[-1]
            print(f"online: peak RSS {large['requests']:,} vs {small['requests']:,} requests: "
                  f"{large['maxrss_mb']:.1f} MB vs {small['maxrss_mb']:.1f} MB "
                  f"({large['maxrss_mb'] / small['maxrss_mb']:.3f}x)")


if __name__ == "__main__":
    main()
