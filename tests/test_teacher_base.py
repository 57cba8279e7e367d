"""The Teacher base class: every teacher carries model, stats, capabilities, budget_exhausted and
cache_key, and ``stats.summary()`` reports what a small run really did (exact counts)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import warnings

import pytest

from conftest import run_cli, write_prompts
from synthkd.teachers.base import Teacher, TeacherCapabilities, TeacherRequest
from synthkd.teachers.cache import RequestCache, request_cache_key
from synthkd.teachers.factory import TeacherSpec, make_teacher
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.teachers.pricing import PriceTable
from synthkd.teachers.replay import ReplayTeacher
from synthkd.teachers.simulated_teacher import ServedTeacher
from synthkd.teachers.stats import TeacherStats
from synthkd.testing.server import FaultConfig


def _run(teacher: Teacher, reqs: list[TeacherRequest]) -> dict:
    async def go():
        async def gen():
            for r in reqs:
                yield r

        return {r.key: r async for r in teacher.stream(gen())}

    return asyncio.run(go())


def _close(teacher: Teacher) -> None:
    asyncio.run(teacher.aclose())


def _summary(attempts, cached, failed, prompt_tokens, completion_tokens, cost) -> str:
    return (f"requests sent {attempts} ({cached} from cache, {failed} failed, 0 retries, 0 rate-limited, 0 timed out); "
            f"tokens {prompt_tokens} in / {completion_tokens} out; {cost}")


def _assert_teacher_shape(t: Teacher, model: str) -> None:
    assert isinstance(t, Teacher)
    assert t.model == model and t.stats.model == model
    assert isinstance(t.stats, TeacherStats) and t.stats.attempts == 0
    assert isinstance(t.capabilities, TeacherCapabilities)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.capabilities.n_samples = True  # type: ignore[misc]
    assert t.budget_exhausted is False
    assert t.cost_usd == 0.0 and t.price_known == t.stats.price_known


# ---------------------------------------------------------------------------------------- the class


def test_teacher_is_abstract_stream_and_aclose_must_be_implemented():
    with pytest.raises(TypeError):
        Teacher("m", price=None)  # type: ignore[abstract]

    class NoStream(Teacher):
        async def aclose(self) -> None:
            return None

    with pytest.raises(TypeError, match="stream"):
        NoStream("m", price=None)  # type: ignore[abstract]


def test_capabilities_say_what_each_teacher_supports_today():
    # API teachers: n samples in one request, reasoning traces, structured outputs and batch mode (--batch)
    api = TeacherCapabilities(n_samples=True, json_schema=True, batch=True, reasoning_trace=True)
    assert OpenAICompatibleTeacher.capabilities == api
    assert ServedTeacher.capabilities == api
    assert ReplayTeacher.capabilities == TeacherCapabilities(reasoning_trace=True)  # recorded traces
    from synthkd.teachers.anthropic import AnthropicTeacher
    # no n (k requests); structured outputs as a forced tool call
    assert AnthropicTeacher.capabilities == TeacherCapabilities(json_schema=True, batch=True, reasoning_trace=True)


# ---------------------------------------------------------------------------------------- each teacher


def test_openai_compatible_teacher_counts_sent_cached_failed_tokens_and_cost(make_server, tmp_path):
    srv = make_server()
    prices = PriceTable.default()
    prices.set("priced-model", 2.0, 4.0)  # USD per 1M tokens
    cache = RequestCache(tmp_path / "c.sqlite")
    t = OpenAICompatibleTeacher("priced-model", base_url=srv.base_url, api_key="", cache=cache, prices=prices,
                                concurrency=2)
    _assert_teacher_shape(t, "priced-model")
    assert t.price_known and t.cache is cache
    good = [TeacherRequest(key=str(i), messages=[{"role": "user", "content": f"what is {i} plus {i}?"}])
            for i in range(4)]
    bad = TeacherRequest(key="bad", prompt="x", params={"stream": True})  # the server answers 400
    assert t.cache_key(good[0]) == request_cache_key("priced-model", messages=good[0].messages, params={})

    res = _run(t, [*good, bad])
    assert len(res) == 5 and not res["bad"].ok and all(res[str(i)].ok for i in range(4))
    usage = srv.stats()["usage"]
    p, c = usage["prompt_tokens"], usage["completion_tokens"]
    assert p > 0 and c > 0 and p == sum(r.usage.prompt_tokens for r in res.values())
    cost = (p * 2.0 + c * 4.0) / 1e6
    st = t.stats
    assert (st.attempts, st.done, st.cached, st.failed) == (5, 5, 0, 1)
    assert (st.prompt_tokens, st.completion_tokens) == (p, c) and st.cost_usd == pytest.approx(cost)
    assert t.cost_usd == st.cost_usd
    assert st.summary() == _summary(5, 0, 1, p, c, f"cost this run ${cost:.6f}")

    again = _run(t, good)  # every answer from the cache: nothing sent, nothing paid
    assert all(r.cached for r in again.values())
    assert (st.attempts, st.done, st.cached, st.failed) == (5, 9, 4, 1)
    assert st.summary() == _summary(5, 4, 1, p, c, f"cost this run ${cost:.6f}")
    assert t.budget_exhausted is False
    _close(t)
    cache.close()


def test_a_model_without_a_price_says_so(make_server):
    srv = make_server()
    t = OpenAICompatibleTeacher("unpriced-model", base_url=srv.base_url, api_key="")
    assert not t.price_known and t.cache is None
    _run(t, [TeacherRequest(key="a", prompt="one two three")])
    st = t.stats
    assert (st.attempts, st.cached, st.failed) == (1, 0, 0)
    assert st.summary().endswith("; cost unknown (no price for 'unpriced-model'; see --prices)")
    _close(t)


def test_budget_exhausted_is_set_when_the_budget_stops_requests(make_server):
    srv = make_server()
    prices = PriceTable.default()
    prices.set("priced-model", 1000.0, 1000.0)
    t = OpenAICompatibleTeacher("priced-model", base_url=srv.base_url, api_key="", prices=prices, concurrency=1,
                                max_cost=1e-9)
    res = _run(t, [TeacherRequest(key=str(i), prompt=f"p {i}") for i in range(5)])
    assert len(res) == 1 and t.budget_exhausted is True and t.stats.attempts == 1
    _close(t)


def test_replay_teacher_fills_stats(tmp_path):
    path = tmp_path / "rec.jsonl"
    path.write_text(json.dumps({"question": "How many apples are left?", "completions": ["3 apples", "three"]}) + "\n")
    t = ReplayTeacher.from_jsonl(path, strict=False)
    _assert_teacher_shape(t, f"replay:{path.name}")
    assert t.price_known and t.cache is None and t.calls_model is False
    req = TeacherRequest.user("a", "Q: How many apples are left?\nA:")
    assert t.cache_key(req) is None  # no request cache
    res = _run(t, [req, TeacherRequest.user("b", "Q: How many apples are left?\nA:", sample_index=1),
                   TeacherRequest.user("c", "Q: something else entirely\nA:"),
                   TeacherRequest.user("d", "Q: How many apples are left?\nA:", sample_index=2)])
    assert [k for k, r in sorted(res.items()) if r.ok] == ["a", "b"]
    st = t.stats
    # tokens are words: 7 per prompt (both answered), 2 + 1 answer words
    assert (st.attempts, st.done, st.cached, st.failed) == (4, 4, 0, 2)
    assert (st.prompt_tokens, st.completion_tokens) == (14, 3)
    assert st.summary() == _summary(4, 0, 2, 14, 3, "cost this run $0.000000")
    _close(t)


def test_simulated_teacher_fills_stats():
    t = make_teacher(TeacherSpec(teacher="simulated:arithmetic", no_cache=True))
    try:
        assert isinstance(t, ServedTeacher)
        _assert_teacher_shape(t, "simulated-arithmetic")
        assert t.price_known  # the simulated model costs 0
        reqs = [TeacherRequest.user(str(i), f"Q: Mia has {i + 2} pens. She buys 3 more. How many pens does she have now?\nA:")
                for i in range(3)]
        assert isinstance(t.cache_key(reqs[0]), str)
        res = _run(t, reqs)
        assert len(res) == 3 and all(r.ok for r in res.values())
        served = t.server.stats()
        st = t.stats
        assert st.attempts == 3 == served["by_endpoint"]["/v1/chat/completions"]
        assert (st.done, st.cached, st.failed) == (3, 0, 0)
        u = served["usage"]
        assert st.summary() == _summary(3, 0, 0, u["prompt_tokens"], u["completion_tokens"], "cost this run $0.000000")
    finally:
        _close(t)


def test_local_teacher_fills_stats(varied_student):
    pytest.importorskip("torch")
    from synthkd.teachers.local import LocalTeacher

    t = make_teacher(TeacherSpec(teacher=f"local:{varied_student}", default_params={"max_tokens": 10}))
    assert isinstance(t, LocalTeacher)
    _assert_teacher_shape(t, f"local:{varied_student}")
    assert t.price_known and t.cache is None and t.capabilities == TeacherCapabilities(reasoning_trace=True)
    reqs = [TeacherRequest.user(str(i), f"What is {i} plus {i}?") for i in range(3)]
    assert t.cache_key(reqs[0]) is None
    res = _run(t, reqs)
    assert len(res) == 3 and all(r.ok and r.usage.completion_tokens == 10 for r in res.values())
    p = sum(r.usage.prompt_tokens for r in res.values())
    st = t.stats
    assert (st.attempts, st.done, st.cached, st.failed) == (3, 3, 0, 0)
    assert st.summary() == _summary(3, 0, 0, p, 30, "cost this run $0.000000")
    _close(t)


# ---------------------------------------------------------------------------------------- commands


def test_complete_prints_the_teacher_summary(tmp_path, make_server):
    srv = make_server(FaultConfig())
    write_prompts(tmp_path / "in.jsonl", 5)
    args = ["complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
            "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite")]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    u = srv.stats()["usage"]
    unpriced = "cost unknown (no price for 'test-model'; see --prices)"
    assert _summary(5, 0, 0, u["prompt_tokens"], u["completion_tokens"], unpriced) in res.stderr, res.stderr
    args[4] = str(tmp_path / "out2.jsonl")  # a fresh output: every answer from the cache
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert _summary(0, 5, 0, 0, 0, unpriced) in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------- responders


def test_test_server_responders_are_not_teachers():
    from synthkd.testing.banking77_responder import Banking77Responder
    from synthkd.testing.simulated import SimulatedResponder

    assert not issubclass(SimulatedResponder, Teacher) and not issubclass(Banking77Responder, Teacher)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from synthkd.testing.simulated import SimulatedTeacher  # the deprecated old name
    assert SimulatedTeacher is SimulatedResponder
    assert any(issubclass(w.category, DeprecationWarning) and "SimulatedResponder" in str(w.message) for w in caught)


def test_job_done_results_only_once_every_request_has_a_result():
    from synthkd.teachers.base import TeacherResult
    from synthkd.teachers.jobs import Job

    reqs = [TeacherRequest.user(f"k{i}", "hi") for i in range(2)]
    job = Job("item", reqs)
    first = TeacherResult(request=reqs[0], text="a")
    job.results[0] = first
    with pytest.raises(RuntimeError, match="1 result"):
        job.done_results()
    second = TeacherResult(request=reqs[1], text="b")
    job.results[1] = second
    assert job.done_results() == [first, second]
