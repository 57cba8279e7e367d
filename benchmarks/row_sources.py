"""Reading speed of every input format through synthkd's one row reader (``synthkd.jsonl_io``).

    python benchmarks/row_sources.py [--rows 200000]

Builds the same synthetic prompt rows ({prompt, topic}; ids from row positions) as jsonl, CSV, Parquet and
a ``datasets`` ``save_to_disk`` directory in a temporary folder, then times a full validation pass
(``scan_prompt_file``: what ``synthkd complete`` does before any request) over each, and the jsonl file
through a column map (which leaves the fast path).  Prints rows/s and the peak RSS growth of each pass.
No shared data needed.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    import datasets

    from synthkd.jsonl_io import scan_prompt_file
    from synthkd.row_source import bind

    datasets.logging.disable_progress_bar()
    n = args.rows
    rows = [{"id": i, "prompt": f"Question {i}: what is {i} times {i % 7 + 2}? Think step by step.",
             "topic": "math"} for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "mapped.jsonl").write_text("".join(json.dumps({"id": r["id"], "q": r["prompt"]}) + "\n" for r in rows))
        with open(d / "rows.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "prompt", "topic"])
            w.writeheader()
            w.writerows(rows)
        ds = datasets.Dataset.from_list(rows)
        ds.to_parquet(str(d / "rows.parquet"))
        ds.save_to_disk(str(d / "saved"))
        cases = [("jsonl (fast path)", d / "rows.jsonl"), ("jsonl + column map", bind(d / "mapped.jsonl", {"prompt": "q"})),
                 ("csv", d / "rows.csv"), ("parquet", d / "rows.parquet"), ("save_to_disk dir", d / "saved")]
        print(f"| input ({n:,} rows) | validation pass (s) | rows/s | peak RSS (MB, process) |")
        print("|---|---|---|---|")
        for name, path in cases:
            t0 = time.perf_counter()
            res = scan_prompt_file(path)
            dt = time.perf_counter() - t0
            assert res.rows == n, (name, res.rows)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {name} | {dt:.2f} | {n / dt:,.0f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
