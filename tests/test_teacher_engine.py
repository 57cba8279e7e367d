"""The teacher engine's parts: cache keys, prices, rate-limit headers, and the Python stream API."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli_env, read_jsonl, run_cli, synthkd_cmd, write_prompts
from synthkd.teachers import TeacherFatalError, TeacherRequest
from synthkd.teachers.cache import RequestCache, request_cache_key
from synthkd.teachers.latency import LatencyTracker
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.teachers.pricing import PriceTable, PriceTableError
from synthkd.teachers.ratelimit import RateLimiter, parse_duration, retry_after_seconds
from synthkd.testing.server import FaultConfig, expected_text


def test_cache_key_depends_on_content_only():
    msgs = [{"role": "user", "content": "hi"}]
    k = request_cache_key("m", messages=msgs, params={"temperature": 0.5, "timeout": 3})
    assert k == request_cache_key("m", messages=msgs, params={"timeout": 99, "temperature": 0.5})
    assert k != request_cache_key("m", messages=msgs, params={"temperature": 0.6})
    assert k != request_cache_key("m2", messages=msgs, params={"temperature": 0.5})
    assert k != request_cache_key("m", messages=msgs, params={"temperature": 0.5}, sample_index=1)
    assert k != request_cache_key("m", prompt="hi", params={"temperature": 0.5})


# audit mutants 4 and 5
def test_cache_key_covers_every_part_of_the_request():
    """Each part of a request that changes the answer changes the key; an identical request keeps it."""
    user = {"role": "user", "content": "What is 2+2?"}

    def key(messages=(user,), prompt=None, model="m", sample=0, **params):
        return request_cache_key(model, messages=None if prompt else [dict(m) for m in messages], prompt=prompt,
                                 params={"temperature": 0.5, **params}, sample_index=sample)

    base = key()
    assert base == key() == key(messages=[{"content": "What is 2+2?", "role": "user"}])  # same request, same key
    variants = {
        "content": key(messages=[{"role": "user", "content": "What is 2+3?"}]),
        "a system message": key(messages=[{"role": "system", "content": "Answer tersely."}, user]),
        "another system message": key(messages=[{"role": "system", "content": "Explain at length."}, user]),
        "earlier turns": key(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                       user]),
        "other earlier turns, same last user turn": key(
            messages=[{"role": "user", "content": "Hey"}, {"role": "assistant", "content": "Hello!"}, user]),
        "role": key(messages=[{"role": "system", "content": "What is 2+2?"}]),
        "model": key(model="m2"),
        "temperature": key(temperature=0.7),
        "top_p": key(top_p=0.9),
        "max_tokens": key(max_tokens=10),
        "seed": key(seed=1),
        "n": key(n=2),
        "sample index": key(sample=1),
        "a prompt instead of messages": key(prompt="What is 2+2?"),
    }
    keys = [base, *variants.values()]
    assert len(set(keys)) == len(keys), [name for name, k in variants.items() if keys.count(k) > 1]


def test_cache_shared_between_connections(tmp_path):
    a, b = RequestCache(tmp_path / "c.sqlite"), RequestCache(tmp_path / "c.sqlite")
    a.put("k1", "m", {"text": "x"})
    assert b.get("k1") == {"text": "x"} and b.get("nope") is None and len(b) == 1


def test_price_table_prefix_and_user_file(tmp_path):
    t = PriceTable.default()
    assert t.lookup("gpt-4o-mini-2024-07-18") == t.lookup("gpt-4o-mini")  # dated snapshot -> family
    assert t.lookup("gpt-4o-2024-08-06").input_per_mtok == 2.5
    assert t.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert t.lookup("llama-3-8b") is None
    f = tmp_path / "p.yaml"
    f.write_text("llama-3-8b: {input: 0, output: 0}\n")
    assert PriceTable.default(f).cost("llama-3-8b", 10, 10) == 0
    f.write_text("llama: {input: 1}\n")
    with pytest.raises(PriceTableError, match="p.yaml: model 'llama': needs fields"):
        PriceTable.default(f)


def test_rate_limit_header_parsing():
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("6m0s") == pytest.approx(360)
    assert parse_duration("1.5s") == pytest.approx(1.5)
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "1"}) == pytest.approx(0.25)
    assert retry_after_seconds({"retry-after": "2"}) == 2
    assert retry_after_seconds({"x-ratelimit-reset-requests": "120ms"}) == pytest.approx(0.12)
    assert retry_after_seconds({}) is None


def test_rpm_pacing_spaces_requests_from_full_capacity():
    async def go():
        lim = RateLimiter(rpm=600)  # 10/s: one every 100 ms, burst of 5
        t0 = time.monotonic()
        stamps = []
        for _ in range(15):
            await lim.acquire(10)
            stamps.append(time.monotonic() - t0)
        return stamps

    stamps = asyncio.run(go())
    assert stamps[4] < 0.05  # starts at full capacity: the burst goes at once
    assert 0.95 <= stamps[-1] <= 1.15  # then 100 ms apart (audit mutant 1: a pacer 20% slow ends at 1.2 s)


# audit mutant 1
def test_rpm_pacing_is_exact_on_a_made_up_clock():
    """The pacer's arithmetic, with no clock and no sleeping: 600 RPM = a burst of 5, then one per 100 ms."""
    lim = RateLimiter(rpm=600)
    now, stamps = 1000.0, []
    for _ in range(15):
        now += lim.reserve(10, now)  # the sender waits exactly as long as it is told
        stamps.append(now - 1000.0)
    assert stamps == pytest.approx([0.0] * 5 + [0.1 * i for i in range(1, 11)], abs=1e-9)
    # A sender that comes back late gets no catch-up burst beyond the 5 allowed.
    now += 10.0
    later = []
    for _ in range(8):
        now += lim.reserve(10, now)
        later.append(now)
    assert later[4] - later[0] == pytest.approx(0.0, abs=1e-9)
    assert later[5] - later[4] == pytest.approx(0.1, abs=1e-9)
    tpm = RateLimiter(tpm=6000)  # 100 tokens/s, a tolerance of 49 tokens (0.49 s)
    assert [tpm.reserve(n, 0.0) for n in (50, 100, 100)] == pytest.approx([0.0, 0.01, 1.01], abs=1e-9)


def test_adaptive_deadline():
    lt = LatencyTracker(600, floor_s=1.0, factor=8.0, min_samples=20)
    assert lt.deadline(1) == 600  # nothing known yet: the hard timeout
    for _ in range(40):
        lt.observe(0.5)
    assert lt.deadline(1) == pytest.approx(4.0) and lt.deadline(2) == pytest.approx(8.0)
    assert lt.deadline(20) == 600


def _collect(teacher, reqs):
    async def go():
        async def gen():
            for r in reqs:
                yield r

        out = [r async for r in teacher.stream(gen())]
        await teacher.aclose()
        return out

    return asyncio.run(go())


def test_stream_api_results_and_400_not_retried(make_server, tmp_path):
    srv = make_server()
    t = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, api_key="k", concurrency=4,
                                cache=RequestCache(tmp_path / "c.sqlite"))
    reqs = [TeacherRequest(key=str(i), messages=[{"role": "user", "content": f"q {i}"}]) for i in range(10)]
    reqs.append(TeacherRequest(key="bad", prompt="x", params={"stream": True}))  # the server answers 400
    res = {r.key: r for r in _collect(t, reqs)}
    assert len(res) == 11
    assert res["3"].text == expected_text("q 3") and res["3"].ok and not res["3"].cached
    assert not res["bad"].ok and res["bad"].attempts == 1 and "HTTP 400" in res["bad"].error
    assert srv.stats()["by_outcome"]["bad_request"] == 1


def test_stream_api_fatal_on_bad_key_mid_run(make_server):
    srv = make_server(FaultConfig(api_key="right-key"))
    t = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, api_key="wrong-key", preflight=False)
    with pytest.raises(TeacherFatalError, match="refused the API key") as ei:
        _collect(t, [TeacherRequest(key=str(i), prompt=f"p{i}") for i in range(20)])
    assert "wrong-key" not in str(ei.value)


def test_tpm_limit_respected(make_server, tmp_path):
    srv = make_server(FaultConfig(tpm_limit=6000))  # 100 tokens/s
    write_prompts(tmp_path / "in.jsonl", 30)
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m",
                  "test-model", "--base-url", srv.base_url, "--no-cache", "--tpm", "6000", "--max-tokens", "20",
                  "-c", "16")
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 30
    st = srv.stats()
    assert st["by_outcome"]["rate_limited"] <= 2, st["by_outcome"]


def test_two_processes_share_one_cache(make_server, tmp_path):
    srv = make_server(FaultConfig(latency_ms=5))
    write_prompts(tmp_path / "in.jsonl", 150)
    procs = [
        subprocess.Popen(synthkd_cmd("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / f"o{i}.jsonl"),
                                     "-m", "test-model", "--base-url", srv.base_url, "--cache",
                                     str(tmp_path / "c.sqlite"), "-c", "8"), env=cli_env(),
                         stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read()
    a, b = read_jsonl(tmp_path / "o0.jsonl"), read_jsonl(tmp_path / "o1.jsonl")
    assert len(a) == len(b) == 150
    assert {r["id"]: r["completion"] for r in a} == {r["id"]: r["completion"] for r in b}
    assert len(RequestCache(tmp_path / "c.sqlite")) == 150


def _with_default_sigint(cmd: list[str]) -> list[str]:
    """``cmd`` run with SIGINT at its default, so Ctrl-C works in it even when pytest runs in the
    background (``... &``), where a child inherits SIGINT as ignored.  Done by re-exec rather than
    ``preexec_fn``, which is unsafe with the test server's thread running."""
    reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", reset, *cmd]


def test_same_output_locked_against_a_second_writer(make_server, tmp_path):
    srv = make_server(FaultConfig(latency_ms=300))
    write_prompts(tmp_path / "in.jsonl", 100)
    args = ["complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
            "--base-url", srv.base_url, "--no-cache", "-c", "2"]
    first = subprocess.Popen(_with_default_sigint(synthkd_cmd(*args)), env=cli_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    # The output is locked before the first request is sent: wait for that request, not for a fixed time.
    while srv.stats()["by_endpoint"]["/v1/completions"] == 0 and first.poll() is None:
        assert time.monotonic() < deadline, "the first process sent nothing within 60 s"
        time.sleep(0.01)
    assert first.poll() is None
    res = run_cli(*args)
    assert res.returncode == 2 and "another synthkd process is writing it" in res.stderr
    assert first.poll() is None, "the first process must still be running when interrupted"
    first.send_signal(signal.SIGINT)
    assert first.wait(30) == 130
    assert b"rerun the same command to resume" in first.stderr.read()


def test_quiet_when_not_a_terminal_and_help_everywhere(make_server, tmp_path):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 5)
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m",
                  "test-model", "--base-url", srv.base_url, "--no-cache")
    assert res.returncode == 0
    assert "req/s" not in res.stderr and res.stderr.strip().startswith("done: 5 rows written")
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o2.jsonl"), "-m",
                  "test-model", "--base-url", srv.base_url, "--no-cache", "--progress")
    assert "teacher: 100%" in res.stderr and "req/s" in res.stderr and "retries=0" in res.stderr  # the bar
    for sub in ([], ["complete"], ["serve-test"]):
        r = run_cli(*sub, "--help")
        assert r.returncode == 0 and "Usage" in (r.stdout + r.stderr), sub


def _open_cache(path: str, barrier) -> None:
    barrier.wait()
    RequestCache(path).put("k", "m", {"text": "x"})


def test_processes_opening_one_fresh_cache_at_once_all_succeed(tmp_path):
    """Switching a new SQLite file to WAL does not wait for a lock: the cache must retry, not crash."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for i in range(10):
        path = str(tmp_path / f"c{i}.sqlite")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_cache, args=(path, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0], f"attempt {i}"
        assert len(RequestCache(path)) == 1
