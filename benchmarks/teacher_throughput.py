"""Teacher engine benchmark: `synthkd complete` against the loopback test server, each figure vs its ideal.

Run:  python benchmarks/teacher_throughput.py            (all scenarios, ~4 min on 2 cores)
      python benchmarks/teacher_throughput.py --only cpu memory

The server runs in its own process (``python -m synthkd.testing.server``) and the client is the real
``synthkd complete`` command in another, so CPU and memory figures are the client's alone (taken from
``wait4`` rusage of the child).  Figures are printed, never asserted: this is not a timed test.
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

REPO = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    """The environment of the server and client processes: no OPENAI_* of the user, the bench key."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OPENAI_API_KEY"] = "sk-bench"
    e.update(extra)
    return e


class Server:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synthkd.testing.server", "--port", "0", "--api-key", "sk-bench", *args],
            stdout=subprocess.PIPE, env=env(), text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"test server did not start: {line!r}")
        self.base_url = line.split()[1]

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.base_url.rsplit("/v1", 1)[0] + "/_stats") as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_prompts(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "prompt": f"Problem {i}: a farmer has {i} cows and buys {i % 13} more. How many cows?"}) + "\n")


def run_complete(tmp: Path, n: int, base_url: str, *extra: str) -> dict:
    inp, out = tmp / f"in{n}.jsonl", tmp / f"out-{time.monotonic_ns()}.jsonl"
    if not inp.exists():
        write_prompts(inp, n)
    summary = tmp / "summary.json"
    cmd = [sys.executable, "-m", "synthkd.cli", "complete", "-i", str(inp), "-o", str(out), "-m", "test-model",
           "--base-url", base_url, "--no-cache", "--no-progress", "--summary-json", str(summary), *extra]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    stderr = proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(stderr, file=sys.stderr)
    s = json.loads(summary.read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    s.update(
        wall_s=wall, cpu_s=ru.ru_utime + ru.ru_stime, maxrss_mb=ru.ru_maxrss / 1024, exit_code=code,
        unique_ids=len({r["id"] for r in rows}), lines=len(rows),
    )
    return s


def row(name: str, figure: str, ideal: str, verdict: bool) -> None:
    print(f"| {name} | {figure} | {ideal} | {'yes' if verdict else 'NO'} |", flush=True)


def scenario_latency(tmp: Path) -> None:
    n, c, lat = 2000, 64, 0.2
    srv = Server("--latency-ms", "200", "--jitter-ms", "50")
    try:
        run_complete(tmp, 256, srv.base_url, "-c", str(c))  # warm the server process, as a real one would be
        s = run_complete(tmp, n, srv.base_url, "-c", str(c))
    finally:
        srv.stop()
    ideal = n * lat / c
    bound = perfect_dispatch_makespan(n, c, 0.15, 0.25)
    span = s["first_request_to_last_result_s"]
    ok = s["exit_code"] == 0 and s["unique_ids"] == n and span <= ideal * 1.03
    row("2000 prompts, 200±50 ms, concurrency 64", f"{span:.2f} s first request→last result "
        f"({span / ideal:.3f}× ideal; a zero-overhead dispatcher needs {bound:.2f} s = {bound / ideal:.3f}× "
        f"for the same latencies; {s['unique_ids']}/{n} rows)", f"{ideal:.2f} s (N·latency/concurrency), ≤ +3%", ok)


def perfect_dispatch_makespan(n: int, c: int, lo: float, hi: float, trials: int = 20) -> float:
    """Mean makespan of an instant dispatcher over c lanes with uniform latencies: the floor for any client."""
    import heapq
    import random

    rng = random.Random(0)
    total = 0.0
    for _ in range(trials):
        lanes = [0.0] * c
        for _ in range(n):
            t = heapq.heappop(lanes)
            heapq.heappush(lanes, t + rng.uniform(lo, hi))
        total += max(lanes)
    return total / trials


def scenario_rpm(tmp: Path) -> None:
    n, rpm = 600, 1200
    srv = Server("--latency-ms", "200", "--jitter-ms", "50", "--rpm", str(rpm))
    try:
        s = run_complete(tmp, n, srv.base_url, "-c", "64", "--rpm", str(rpm))
        st = srv.stats()
    finally:
        srv.stop()
    ideal = n / rpm * 60
    span = s["first_request_to_last_result_s"]
    total = st["requests_total"]
    share429 = st["by_outcome"]["rate_limited"] / max(1, total)
    ok = s["exit_code"] == 0 and s["unique_ids"] == n and abs(span / ideal - 1) <= 0.03 and share429 < 0.01
    row("600 prompts, server limit 1200 RPM, --rpm 1200", f"{span:.2f} s ({span / ideal:.3f}× ideal); "
        f"429s {st['by_outcome']['rate_limited']}/{total} = {share429:.2%}; {s['unique_ids']}/{n} rows",
        f"{ideal:.1f} s (N/RPM) ±3%, <1% 429s, no row lost", ok)


def scenario_faults(tmp: Path) -> None:
    n = 1000
    srv = Server("--latency-ms", "200", "--jitter-ms", "50", "--rpm", "6000", "--error-rate", "0.10",
                 "--hang-rate", "0.02", "--hang-seconds", "60", "--malformed-rate", "0.02", "--seed", "11")
    try:
        s = run_complete(tmp, n, srv.base_url, "-c", "64", "--rpm", "6000")
        st = srv.stats()
    finally:
        srv.stop()
    o = st["by_outcome"]
    span = s["first_request_to_last_result_s"]
    ok = s["exit_code"] == 0 and s["unique_ids"] == n == s["lines"] and span < 30
    row("1000 prompts, 10% 500s, 2% 60 s hangs, 2% malformed, 6000 RPM limit",
        f"{s['unique_ids']}/{n} rows, {s['rows_rejected']} rejected; {span:.1f} s "
        f"(faults served: {o['error_500']} 500s, {o['hang']} hangs, {o['malformed']} malformed, {o['rate_limited']} 429s)",
        "no row lost, total well under one 60 s hang", ok)


def scenario_cpu(tmp: Path) -> None:
    n, c = 10000, 64
    srv = Server()
    try:
        run_complete(tmp, 2000, srv.base_url, "-c", str(c))  # warm the server
        s = run_complete(tmp, n, srv.base_url, "-c", str(c))
        sdk = openai_sdk_cpu_per_request(srv.base_url, 3000, c)
    finally:
        srv.stop()
    per = s["cpu_s"] / s["requests_sent"] * 1000
    row("client CPU per request, zero latency, concurrency 64",
        f"{per:.3f} ms (whole `synthkd complete` process, {n} requests incl. start-up); plain openai SDK loop: {sdk:.3f} ms",
        "≤ 1 ms and ≤ half the SDK loop", per <= 1.0 and per <= sdk / 2)


def openai_sdk_cpu_per_request(base_url: str, n: int, c: int) -> float:
    """The baseline: an asyncio loop over openai.AsyncOpenAI with a semaphore, in a child process."""
    code = f"""
import asyncio, resource, openai
async def main():
    client = openai.AsyncOpenAI(base_url={base_url!r}, api_key="sk-bench", max_retries=5)
    sem = asyncio.Semaphore({c})
    async def one(i):
        async with sem:
            r = await client.chat.completions.create(model="test-model", messages=[{{"role": "user", "content": f"Problem {{i}}: a farmer"}}])
            return r.choices[0].message.content
    await asyncio.gather(*(one(i) for i in range({n})))
asyncio.run(main())
"""
    proc = subprocess.Popen([sys.executable, "-c", code], env=env())
    _, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return float("nan")
    return (ru.ru_utime + ru.ru_stime) / n * 1000


def scenario_memory(tmp: Path) -> None:
    srv = Server()
    try:
        small = run_complete(tmp, 10_000, srv.base_url, "-c", "64")
        large = run_complete(tmp, 100_000, srv.base_url, "-c", "64")
    finally:
        srv.stop()
    ratio = large["maxrss_mb"] / small["maxrss_mb"]
    ok = ratio <= 1.10 and large["maxrss_mb"] < 300 and large["unique_ids"] == 100_000
    row("peak RSS, 100k vs 10k prompts, zero latency",
        f"{large['maxrss_mb']:.1f} MB vs {small['maxrss_mb']:.1f} MB ({ratio:.3f}×; {large['requests_sent'] / large['elapsed_s']:.0f} req/s)",
        "within 10%, under 300 MB", ok)


SCENARIOS = {"latency": scenario_latency, "rpm": scenario_rpm, "faults": scenario_faults, "cpu": scenario_cpu,
             "memory": scenario_memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print("| scenario | measured | ideal / target | met |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.only or list(SCENARIOS):
            SCENARIOS[name](Path(d))


if __name__ == "__main__":
    main()
