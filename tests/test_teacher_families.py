"""synthkd's client against each teacher family the test server emulates (real HTTP on 127.0.0.1).

What a user of a reasoning model needs: no row rejected because of the request's shape, the trace
kept beside the answer, an answer that ran out of tokens inside the reasoning recorded as what it is
(billed, cached, not retried), k samples billed for one prompt, and a reported cost equal to what the
provider billed — the emulator's own ledger — under faults, truncations and 429s.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import run_cli
from synthkd.teachers.anthropic import AnthropicTeacher
from synthkd.teachers.base import TeacherRequest, TeacherResult
from synthkd.teachers.cache import RequestCache
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.teachers.pricing import Price, PriceTable
from synthkd.teachers.replies import TRUNCATED_IN_REASONING
from synthkd.testing.server import FaultConfig, TestServer

PRICES = {
    "o4-mini": {"input": 1.1, "output": 4.4, "cached_input": 0.275},
    "my-o-proxy": {"input": 1.1, "output": 4.4, "cached_input": 0.275},
    "deepseek-reasoner": {"input": 0.28, "output": 0.42, "cached_input": 0.028},
    "qwen3": {"input": 0.2, "output": 0.6},
    "gemini-2.5-flash": {"input": 0.3, "output": 2.5, "cached_input": 0.075},
    "gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75},
}
#: flavor -> the model a user would name for it
MODEL = {"openai": "gpt-4o-mini", "openai-reasoning": "o4-mini", "deepseek": "deepseek-reasoner", "vllm": "qwen3",
         "vllm-old": "qwen3", "openrouter": "qwen3", "think-inline": "qwen3", "gemini": "gemini-2.5-flash",
         "anthropic": "claude-sonnet-4-5"}


def _prices() -> PriceTable:
    return PriceTable({m: Price(p["input"], p["output"], p.get("cached_input"), p.get("cache_write"))
                       for m, p in PRICES.items()})


def _serve(make_server, flavor: str, **faults) -> TestServer:
    return make_server(FaultConfig(**faults), flavor=flavor, prices=PRICES)


def _teacher(srv: TestServer, model: str | None = None, **kw) -> OpenAICompatibleTeacher:
    model = model or MODEL[srv.flavor]
    cls = AnthropicTeacher if srv.flavor == "anthropic" else OpenAICompatibleTeacher
    kw.setdefault("prices", _prices())
    kw.setdefault("max_retries", 8)
    return cls(model, base_url=srv.base_url, api_key=None, **kw)


def _run(teacher: OpenAICompatibleTeacher, reqs: list[TeacherRequest]) -> list[TeacherResult]:
    async def go() -> list[TeacherResult]:
        async def gen():
            for r in reqs:
                yield r
        try:
            return [r async for r in teacher.stream(gen())]
        finally:
            await teacher.aclose()
    return asyncio.run(go())


def _reqs(n: int, *, prefix: str = "Question", **params) -> list[TeacherRequest]:
    return [TeacherRequest.user(f"r{i}", f"{prefix} {i}: what is {i} plus {i}?", params=dict(params)) for i in range(n)]


# ------------------------------------------------------------------------------- request shape

def test_reasoning_model_gets_the_shape_it_accepts_so_no_row_is_rejected(make_server):
    srv = _serve(make_server, "openai-reasoning")
    t = _teacher(srv)
    results = _run(t, _reqs(8, max_tokens=400, temperature=0.0, top_p=0.5))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert t.stats.reshaped == 0 and srv.stats()["by_outcome"].get("bad_request", 0) == 0


def test_an_unknown_name_for_a_reasoning_model_learns_from_its_400s_once(make_server):
    srv = _serve(make_server, "openai-reasoning")
    t = _teacher(srv, "my-o-proxy", concurrency=1)  # not in the family table: sent as given at first
    results = _run(t, _reqs(6, max_tokens=400, temperature=0.0))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    # max_tokens, then temperature: one rejected request each, then remembered for every later one
    assert t.stats.reshaped == 2 and srv.stats()["by_outcome"]["bad_request"] == 2
    assert t.stats.failed == 0 and t.stats.attempts == 6 + 2


def test_a_param_the_model_really_refuses_fails_the_row_with_the_providers_words(make_server):
    srv = _serve(make_server, "openai-reasoning")
    t = _teacher(srv, extra_body={"reasoning_effort": "extreme"})  # passed through: the provider decides
    [r] = _run(t, _reqs(1, max_tokens=400))
    assert not r.ok and "'reasoning_effort' does not support 'extreme'" in r.error and t.stats.reshaped == 0


# ------------------------------------------------------------------------------------- traces

@pytest.mark.parametrize("flavor", ["deepseek", "vllm", "vllm-old", "openrouter", "think-inline", "anthropic"])
def test_the_trace_comes_back_beside_the_answer(make_server, flavor):
    srv = _serve(make_server, flavor)
    extra = {"thinking_budget": 1024} if flavor == "anthropic" else {}
    results = _run(_teacher(srv, **extra), _reqs(6, max_tokens=2000))
    assert len(results) == 6
    for r in results:
        assert r.ok, r.error
        assert r.reasoning and r.text and r.text.strip()
        assert "<think>" not in r.text and "</think>" not in r.text and "<think>" not in r.reasoning
        assert r.reasoning not in r.text


def test_reasoning_tokens_are_counted_where_the_provider_reports_them(make_server):
    srv = _serve(make_server, "openai-reasoning")
    t = _teacher(srv)
    results = _run(t, _reqs(3, max_tokens=2000))
    assert all(r.usage.reasoning_tokens > 0 and r.usage.reasoning_tokens < r.usage.completion_tokens for r in results)
    assert t.stats.reasoning_tokens == sum(r.usage.reasoning_tokens for r in results)
    assert f"({t.stats.reasoning_tokens} reasoning)" in t.stats.summary()


# ------------------------------------------------ budget spent inside the reasoning: final, billed, cached

@pytest.mark.parametrize("flavor, length_content", [("openai-reasoning", "empty"), ("openai-reasoning", "null"),
                                                    ("vllm", "empty"), ("think-inline", "empty")])
def test_a_budget_spent_in_reasoning_is_a_billed_final_reject_not_retried(make_server, tmp_path, flavor,
                                                                          length_content):
    srv = _serve(make_server, flavor, length_content=length_content, reasoning_tokens=5000)
    cache = RequestCache(tmp_path / "c.sqlite")
    t = _teacher(srv, cache=cache)
    results = _run(t, _reqs(4, max_tokens=20))
    srv_stats = srv.stats()
    bad = [r for r in results if not r.ok]
    assert bad and all(r.error.startswith(TRUNCATED_IN_REASONING) for r in bad)
    assert t.stats.attempts == 4 and t.stats.retries == 0  # one request each: not retried as malformed
    assert t.stats.cost_usd > 0 and t.stats.cost_usd == pytest.approx(srv_stats["billed_usd"], abs=1e-12)
    # the rerun pays nothing and gives the same reasons
    t2 = _teacher(srv, cache=cache)
    again = _run(t2, _reqs(4, max_tokens=20))
    assert t2.stats.attempts == 0 and t2.stats.cost_usd == 0
    assert sorted((r.key, r.error) for r in again) == sorted((r.key, r.error) for r in results)
    cache.close()


# --------------------------------------------------------------------------------- n samples

def test_k_samples_are_one_request_and_the_prompt_is_billed_once(make_server, tmp_path):
    srv = _serve(make_server, "openai-reasoning")
    cache = RequestCache(tmp_path / "c.sqlite")
    t = _teacher(srv, cache=cache)
    prompts = [f"Few-shot prompt {i} " + "example " * 200 for i in range(3)]
    reqs = [TeacherRequest.user(f"r{i}", p, samples=5, params={"max_tokens": 2000}) for i, p in enumerate(prompts)]
    results = _run(t, reqs)
    assert len(results) == 15 and all(r.ok for r in results)
    assert sorted((r.key, r.request.sample_index) for r in results) == [(f"r{i}", s) for i in range(3) for s in range(5)]
    billed = srv.stats()["billed"]
    assert billed["requests"] == 3
    prompt_tokens = sum(r.usage.prompt_tokens for r in results)
    assert billed["input_tokens"] + billed["cached_input_tokens"] == prompt_tokens  # each prompt once
    assert t.stats.cost_usd == pytest.approx(srv.stats()["billed_usd"], abs=1e-12)
    # each sample is its own cache entry: a rerun asking for 6 samples pays for the 6th only
    t2 = _teacher(srv, cache=cache)
    more = _run(t2, [TeacherRequest.user(f"r{i}", p, samples=6, params={"max_tokens": 2000})
                     for i, p in enumerate(prompts)])
    assert len(more) == 18 and sum(not r.cached for r in more) == 3 and t2.stats.attempts == 3
    cache.close()


def test_a_server_without_n_gets_k_requests_and_is_remembered(make_server):
    srv = _serve(make_server, "deepseek")
    t = _teacher(srv, concurrency=1)
    reqs = [TeacherRequest.user(f"r{i}", f"prompt {i}", samples=3, params={"temperature": 0.7, "max_tokens": 2000})
            for i in range(3)]
    results = _run(t, reqs)
    assert len(results) == 9 and all(r.ok for r in results)
    assert len({(r.key, r.text) for r in results}) == 9  # distinct samples (seed + offset)
    # deepseek-reasoner is known not to take n: no 400 at all, 9 plain requests
    assert srv.stats()["by_outcome"].get("bad_request", 0) == 0 and t.stats.attempts == 9
    srv2 = _serve(make_server, "deepseek")
    t2 = _teacher(srv2, "some-proxy-name", concurrency=1, prices=PriceTable())  # unknown name: n tried once
    results = _run(t2, reqs)
    assert len(results) == 9 and all(r.ok for r in results)
    assert srv2.stats()["by_outcome"]["bad_request"] == 1 and t2.stats.reshaped == 1 and t2.stats.attempts == 1 + 9


# ----------------------------------------------------------- the bill equals the provider's, under faults

@pytest.mark.parametrize("flavor", ["openai", "openai-reasoning", "deepseek", "vllm", "think-inline", "gemini",
                                    "anthropic"])
def test_reported_cost_equals_the_emulators_bill_under_faults(make_server, flavor):
    srv = _serve(make_server, flavor, error_rate=0.1, truncate_rate=0.1, overloaded_rate=0.05, rpm_limit=3000,
                 seed=7)
    extra = {"thinking_budget": 1024} if flavor == "anthropic" else {}
    t = _teacher(srv, concurrency=16, **extra)
    results = _run(t, _reqs(60, max_tokens=2000, temperature=0.7))
    stats = srv.stats()
    assert len(results) == 60
    assert stats["by_outcome"].get("truncated", 0) > 0 and stats["by_outcome"].get("server_error", 0) + \
        stats["by_outcome"].get("overloaded", 0) > 0, stats["by_outcome"]
    assert t.stats.cost_usd > 0
    assert round(t.stats.cost_usd, 2) == round(stats["billed_usd"], 2)  # to the cent
    assert t.stats.cost_usd == pytest.approx(stats["billed_usd"], rel=1e-9)  # and in fact exactly
    assert t.stats.prompt_tokens == stats["billed"]["input_tokens"] + stats["billed"]["cached_input_tokens"] + \
        stats["billed"]["cache_write_tokens"]
    assert t.stats.completion_tokens == stats["billed"]["output_tokens"]


# ---------------------------------------------------------------------------------- anthropic

def test_anthropic_key_errors_stop_the_run_naming_its_variable(make_server):
    srv = _serve(make_server, "anthropic", api_key="sk-ant-right-key-0123456789")
    t = AnthropicTeacher("claude-sonnet-4-5", base_url=srv.base_url, api_key="sk-ant-wrong-key-0123456789",
                         prices=_prices())
    from synthkd.errors import TeacherFatalError
    with pytest.raises(TeacherFatalError) as ei:
        _run(t, _reqs(2))
    assert "ANTHROPIC_API_KEY" in str(ei.value) and "wrong-key" not in str(ei.value)


def test_anthropic_529s_are_retried_and_counted(make_server):
    srv = _serve(make_server, "anthropic", overloaded_rate=0.3, seed=3)
    t = _teacher(srv)
    results = _run(t, _reqs(20, max_tokens=200))
    assert all(r.ok for r in results) and srv.stats()["by_outcome"]["overloaded"] > 0
    assert t.stats.retries >= srv.stats()["by_outcome"]["overloaded"]


# ---------------------------------------------------------------------------------------- CLI

def test_cli_param_colliding_with_an_option_is_refused_before_any_request(make_server, tmp_path):
    srv = _serve(make_server, "openai")
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "hi"}\n')
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.jsonl"), "-m", "gpt-4o-mini",
                  "--base-url", srv.base_url, "--no-cache", "--max-tokens", "10", "--param", "max_tokens=5")
    assert res.returncode == 2, res.stderr
    assert "--param max_tokens=5 collides with max_tokens=10" in res.stderr
    assert srv.stats()["requests_total"] == 0


def test_cli_anthropic_teacher_with_thinking_answers(make_server, tmp_path):
    srv = _serve(make_server, "anthropic")
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "Is 1071 divisible by 7?"}\n')
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.jsonl"),
                  "-m", "anthropic:claude-sonnet-4-5", "--base-url", srv.url, "--no-cache", "--thinking-budget", "1024",
                  "--max-tokens", "300")
    assert res.returncode == 0, res.stderr
    st = srv.stats()
    assert st["by_endpoint"].get("/v1/messages") == 1 and st["billed"]["requests"] == 1, st["by_endpoint"]
    [row] = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert row["completion"].strip() and row["reasoning"].strip() and row["finish_reason"] == "stop"
    assert row["usage"]["completion_tokens"] > 0 and row["cost_usd"] > 0


def test_a_pipeline_teacher_block_takes_the_reasoning_options(make_server, tmp_path):
    """`extra_body`, `reasoning_effort` and `provider` are keys of a pipeline's `teacher:` block (generated
    from the one TeacherSpec): an effort the model takes answers, one it does not is the provider's 400."""
    import subprocess

    from conftest import cli_env, synthkd_cmd, write_prompts
    srv = _serve(make_server, "openai-reasoning")
    write_prompts(tmp_path / "in.jsonl", 3)
    (tmp_path / "p.yaml").write_text(f"""name: r
teacher: {{model: o4-mini, base_url: "{srv.base_url}", reasoning_effort: low, provider: openai, max_tokens: 300}}
stages:
  - {{name: a, kind: complete, input: in.jsonl}}
  - name: b
    kind: complete
    input: in.jsonl
    teacher: {{model: o4-mini, base_url: "{srv.base_url}", extra_body: {{reasoning_effort: extreme}}}}
""")
    res = subprocess.run(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                         timeout=120)
    assert (tmp_path / "runs/r/a.jsonl").exists(), res.stderr
    a = [json.loads(x) for x in (tmp_path / "runs/r/a.jsonl").read_text().splitlines()]
    assert len(a) == 3 and all(r["completion"] for r in a)
    assert res.returncode != 0  # stage b: every row refused by the provider
    rejects = (tmp_path / "runs/r/b.rejects.jsonl").read_text()
    assert "'reasoning_effort' does not support 'extreme'" in rejects


def test_a_reasoning_model_gets_room_to_reason_beyond_a_small_answer_budget(make_server, tmp_path):
    """Methods size max_tokens for the answer (32 for a label); a reasoning model counts its reasoning in
    it. The reasoning families get --reasoning-budget (4096 by default) on top, so a label still comes
    back; with --reasoning-budget 0 the same request is spent inside the reasoning, and the two are
    different cache entries (raising the budget must not serve the cached truncation)."""
    srv = _serve(make_server, "openai-reasoning", reasoning_tokens=200)
    cache = RequestCache(tmp_path / "c.sqlite")
    roomy = _run(_teacher(srv, cache=cache), _reqs(3, max_tokens=32))
    assert all(r.ok and r.text for r in roomy), [r.error for r in roomy]
    tight = _teacher(srv, cache=cache, reasoning_budget=0)
    cut = _run(tight, _reqs(3, max_tokens=32))
    assert all(r.error and r.error.startswith(TRUNCATED_IN_REASONING) for r in cut)
    assert "--reasoning-budget" in cut[0].error and tight.stats.attempts == 3  # not served from the cache
    qwen = _serve(make_server, "vllm", reasoning_tokens=200)  # a reasoning model the table does not know
    assert not any(r.ok for r in _run(_teacher(qwen), _reqs(2, max_tokens=32)))
    assert all(r.ok for r in _run(_teacher(qwen, reasoning_budget=1024), _reqs(2, max_tokens=32)))
    cache.close()
