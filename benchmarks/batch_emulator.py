#!/usr/bin/env python
"""How fast the test server's Batch API emulation runs a big job, and what it bills for it.

For each provider (OpenAI Batch, Anthropic Message Batches) it submits one batch of N chat requests
over raw HTTP (httpx, no synthkd client), polls it to the end, downloads the results and prints:
the input size, the time from upload / create to the end against ``--batch-seconds``, the download
size and time, the peak RSS of the process (client and server together), and the server's bill for
the batch next to the bill of the same N requests sent online (the batch must cost half).  This is the emulator's own cost, so a
client benchmark against it (issue 15's 10,000-request job) can tell the emulator's share apart.

Usage::

    python benchmarks/batch_emulator.py [--requests 10000] [--batch-seconds 1.0]

Needs no data.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import httpx

from synthkd.testing.server import FaultConfig, TestServer


def _openai(n: int, seconds: float) -> None:
    lines = [{"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i} " * 20}]}}
             for i in range(n)]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    with TestServer(FaultConfig(batch_seconds=seconds)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        t0 = time.perf_counter()
        up = c.post("/v1/files", data={"purpose": "batch"}, files={"file": ("upload", data)}).json()
        t1 = time.perf_counter()
        batch = c.post("/v1/batches", json={"input_file_id": up["id"], "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"}).json()
        polls = 0
        while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.05)
            batch = c.get(f"/v1/batches/{batch['id']}").json()
            polls += 1
        t2 = time.perf_counter()
        out = c.get(f"/v1/files/{batch['output_file_id']}/content").content
        t3 = time.perf_counter()
        batch_bill = srv.stats()
        for line in lines:
            c.post("/v1/chat/completions", json=line["body"])
        bill = srv.stats()
    online_usd = bill["billed_usd"] - batch_bill["billed_usd"]
    print(f"openai     N={n} input {len(data) / 1e6:.1f} MB: upload {t1 - t0:.2f} s, create->{batch['status']} "
          f"{t2 - t1:.2f} s ({polls} polls, batch_seconds {seconds}), output {len(out) / 1e6:.1f} MB in "
          f"{t3 - t2:.2f} s; counts {batch['request_counts']}")
    print(f"           billed: batch ${batch_bill['billed_batch_usd']:.6f} vs the same online ${online_usd:.6f} "
          f"(ratio {batch_bill['billed_batch_usd'] / online_usd:.3f})")


def _anthropic(n: int, seconds: float) -> None:
    requests = [{"custom_id": f"k{i}", "params": {"model": "claude-sonnet-4-5", "max_tokens": 256,
                                                   "messages": [{"role": "user", "content": f"question {i} " * 20}]}}
                for i in range(n)]
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    with TestServer(FaultConfig(batch_seconds=seconds), flavor="anthropic") as srv, \
            httpx.Client(base_url=srv.url, headers=headers, timeout=120) as c:
        t0 = time.perf_counter()
        batch = c.post("/v1/messages/batches", json={"requests": requests}).json()
        polls = 0
        while batch["processing_status"] != "ended":
            time.sleep(0.05)
            batch = c.get(f"/v1/messages/batches/{batch['id']}").json()
            polls += 1
        t1 = time.perf_counter()
        out = c.get(batch["results_url"]).content
        t2 = time.perf_counter()
        batch_bill = srv.stats()
        for req in requests:
            c.post("/v1/messages", json=req["params"])
        bill = srv.stats()
    online_usd = bill["billed_usd"] - batch_bill["billed_usd"]
    print(f"anthropic  N={n}: create->ended {t1 - t0:.2f} s ({polls} polls, batch_seconds {seconds}), results "
          f"{len(out) / 1e6:.1f} MB in {t2 - t1:.2f} s; counts {batch['request_counts']}")
    print(f"           billed: batch ${batch_bill['billed_batch_usd']:.6f} vs the same online ${online_usd:.6f} "
          f"(ratio {batch_bill['billed_batch_usd'] / online_usd:.3f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--batch-seconds", type=float, default=1.0)
    args = p.parse_args()
    _openai(args.requests, args.batch_seconds)
    _anthropic(args.requests, args.batch_seconds)
    print(f"peak RSS of this process (client + server): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
