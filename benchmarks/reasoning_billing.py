"""Reasoning teachers and the bill: what n=k saves, and whether synthkd's cost equals the provider's.

Run:  python benchmarks/reasoning_billing.py [--prompts 500] [--k 5] [--fault-requests 150]
      (about a minute on 2 cores; needs nothing but the repo: the provider is the loopback emulator)

(a) Self-consistency: k samples of each of N few-shot prompts (8 worked SVAMP examples from
    data/svamp/svamp_train.demos.jsonl + one question from data/svamp/svamp_test.input.jsonl, a few
    hundred tokens each) sent to the ``openai-reasoning`` emulator as o4-mini, once as ONE request per
    prompt with ``n=k`` (``TeacherRequest(samples=k)``, what methods get from ``stream_jobs``) and once
    as k separate requests (k one-sample ``TeacherRequest``s with ``sample_index`` 0..k-1 given to
    ``teacher.stream`` directly: the public way to ask for separate calls; they are the very cache
    entries the n=k request fills).  Input tokens are the emulator's bill, not synthkd's count.
(b) Every family under faults (10% 5xx, truncations, 429s from a low server RPM limit, and 5% 529/503
    overloads): the cost synthkd reports (``teacher.stats.cost_usd``) next to the emulator's
    ``billed_usd``, priced from the same table on both sides.

Figures are printed, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthkd.teachers.anthropic import AnthropicTeacher  # noqa: E402
from synthkd.teachers.base import TeacherRequest, TeacherResult  # noqa: E402
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher  # noqa: E402
from synthkd.teachers.pricing import Price, PriceTable  # noqa: E402
from synthkd.testing.server import FaultConfig, TestServer  # noqa: E402

#: USD per 1M tokens; the emulator bills with this dict and synthkd prices with the same numbers
PRICES = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
    "o4-mini": {"input": 1.1, "output": 4.4, "cached_input": 0.275},
    "deepseek-reasoner": {"input": 0.28, "output": 0.42, "cached_input": 0.028},
    "Qwen/Qwen3-8B": {"input": 0.05, "output": 0.25},
    "qwen/qwen3-235b-a22b": {"input": 0.13, "output": 0.6},
    "gemini-2.5-flash": {"input": 0.3, "output": 2.5, "cached_input": 0.075},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75},
}
#: flavor -> the model a user would name for it
FAMILIES = {"openai": "gpt-4o-mini", "openai-reasoning": "o4-mini", "deepseek": "deepseek-reasoner",
            "vllm": "Qwen/Qwen3-8B", "think-inline": "Qwen/Qwen3-8B", "openrouter": "qwen/qwen3-235b-a22b",
            "gemini": "gemini-2.5-flash", "anthropic": "claude-sonnet-4-5"}


def price_table() -> PriceTable:
    return PriceTable({m: Price(p["input"], p["output"], p.get("cached_input"), p.get("cache_write"))
                       for m, p in PRICES.items()})


def teacher_for(srv: TestServer, **kw) -> OpenAICompatibleTeacher:
    cls = AnthropicTeacher if srv.flavor == "anthropic" else OpenAICompatibleTeacher
    if srv.flavor == "anthropic":
        kw["thinking_budget"] = 1024
    return cls(FAMILIES[srv.flavor], base_url=srv.base_url, api_key=None, prices=price_table(), **kw)


def run(teacher: OpenAICompatibleTeacher, reqs: list[TeacherRequest]) -> list[TeacherResult]:
    async def go() -> list[TeacherResult]:
        async def gen():
            for r in reqs:
                yield r
        try:
            return [r async for r in teacher.stream(gen())]
        finally:
            await teacher.aclose()
    return asyncio.run(go())


def few_shot_prompts(n: int, shots: int = 8) -> list[str]:
    demos = [json.loads(line) for line in (REPO / "data/svamp/svamp_train.demos.jsonl").read_text().splitlines()]
    questions = [json.loads(line) for line in (REPO / "data/svamp/svamp_test.input.jsonl").read_text().splitlines()]
    prompts = []
    for i in range(n):
        # a rotating window of demos, so prompts differ in their prefix as well as in the question
        ex = [demos[(i + j) % len(demos)] for j in range(shots)]
        q = questions[i % len(questions)]
        body = "\n\n".join(f"Q: {d['question']}\nA: {d['rationale']} The answer is {d['answer']}." for d in ex)
        prompts.append("Solve the problem step by step, then give the answer as 'The answer is N.'\n\n"
                       f"{body}\n\nQ: {q['question']}\nA:")
    return prompts


def part_a(n_prompts: int, k: int) -> None:
    prompts = few_shot_prompts(n_prompts)
    words = [len(p.split()) for p in prompts]
    print(f"\n## (a) self-consistency k={k} over {n_prompts} few-shot prompts "
          f"(8 SVAMP demos + question; {min(words)}-{max(words)} tokens, mean {sum(words) / len(words):.0f}; "
          "openai-reasoning emulator, o4-mini)\n")
    params = {"max_tokens": 2000, "temperature": 0.7}
    rows = []
    for label in (f"n={k}: one request per prompt", f"{k} separate requests per prompt"):
        with TestServer(FaultConfig(seed=1), flavor="openai-reasoning", prices=PRICES) as srv:
            t = teacher_for(srv, concurrency=32)
            if label.startswith("n="):
                reqs = [TeacherRequest.user(f"p{i}", p, samples=k, params=params) for i, p in enumerate(prompts)]
            else:
                reqs = [TeacherRequest.user(f"p{i}", p, sample_index=s, params=params)
                        for i, p in enumerate(prompts) for s in range(k)]
            t0 = time.monotonic()
            results = run(t, reqs)
            wall = time.monotonic() - t0
            st = srv.stats()
        b = st["billed"]
        ok = sum(r.ok for r in results)
        rows.append((label, b, st["billed_usd"], t.stats.cost_usd, ok, len(results), wall))
    print("| how | samples ok | requests billed | input tokens billed (uncached + cached) | output tokens billed "
          "| emulator bill USD | synthkd cost USD | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, b, usd, cost, ok, total, wall in rows:
        print(f"| {label} | {ok}/{total} | {b['requests']} | {b['input_tokens'] + b['cached_input_tokens']} "
              f"({b['input_tokens']} + {b['cached_input_tokens']}) | {b['output_tokens']} | {usd:.6f} | {cost:.6f} "
              f"| {wall:.1f} |")
    (_, bn, usd_n, *_), (_, bs, usd_s, *_) = rows
    in_n = bn["input_tokens"] + bn["cached_input_tokens"]
    in_s = bs["input_tokens"] + bs["cached_input_tokens"]
    in_usd = [b["input_tokens"] * PRICES["o4-mini"]["input"] / 1e6
              + b["cached_input_tokens"] * PRICES["o4-mini"]["cached_input"] / 1e6 for b in (bn, bs)]
    print(f"\ninput tokens billed, n={k} / separate: {in_n} / {in_s} = {in_n / in_s:.4f} (1/{k} = {1 / k:.4f}); "
          f"input USD {in_usd[0]:.6f} / {in_usd[1]:.6f} = {in_usd[0] / in_usd[1]:.4f}; "
          f"whole bill {usd_n:.6f} / {usd_s:.6f} = {usd_n / usd_s:.4f} (output is billed per sample either way)")


def part_b(n_requests: int) -> None:
    faults = dict(error_rate=0.1, truncate_rate=0.08, overloaded_rate=0.05, rpm_limit=2400, seed=7)
    print(f"\n## (b) synthkd's cost vs the emulator's bill, {n_requests} requests per family, concurrency 16, "
          f"server faults {faults} (overloaded: 529 for anthropic, 503 elsewhere)\n")
    print("| family | model | requests (sent / billed) | 429s | 5xx/529 | truncated | rows failed | synthkd cost USD "
          "| emulator bill USD | equal to the cent | exact difference USD | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for flavor, model in FAMILIES.items():
        with TestServer(FaultConfig(**faults), flavor=flavor, prices=PRICES) as srv:
            t = teacher_for(srv, concurrency=16, max_retries=8)
            reqs = [TeacherRequest.user(f"r{i}", f"Question {i}: what is {i} plus {i * 7 % 13}? Think step by step.",
                                        params={"max_tokens": 2000, "temperature": 0.7}) for i in range(n_requests)]
            t0 = time.monotonic()
            results = run(t, reqs)
            wall = time.monotonic() - t0
            st = srv.stats()
        o = st["by_outcome"]
        cost, bill = t.stats.cost_usd, st["billed_usd"]
        failed = sum(not r.ok for r in results)
        print(f"| {flavor} | {model} | {st['requests_total']} / {st['billed']['requests']} | {o['rate_limited']} "
              f"| {o['error_500'] + o['overloaded']} | {o['truncated']} | {failed} | {cost:.6f} | {bill:.6f} "
              f"| {'yes' if round(cost, 2) == round(bill, 2) else 'NO'} | {cost - bill:+.3e} | {wall:.1f} |", flush=True)
    print("\n(rows failed: a truncated answer of a reasoning flavor spent its whole budget inside the reasoning: a "
          "final, billed reject; a truncated chat answer (openai, gemini) keeps its partial text with finish_reason "
          "length; every other fault is retried)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--fault-requests", type=int, default=150, help="requests per family in (b)")
    ap.add_argument("--only", choices=("a", "b"))
    args = ap.parse_args()
    print(f"command: python {' '.join([os.path.relpath(__file__, REPO), *sys.argv[1:]])}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, python {sys.version.split()[0]}, "
          f"{platform.system()} {platform.release()}")
    t0 = time.monotonic()
    if args.only in (None, "a"):
        part_a(args.prompts, args.k)
    if args.only in (None, "b"):
        part_b(args.fault_requests)
    print(f"\ntotal {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
