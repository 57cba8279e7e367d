"""Tests for synthkd.testing.server: real HTTP through a plain aiohttp client, no mocks."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time

import aiohttp
import pytest

from conftest import cli_env, run_cli
from synthkd.testing.server import (
    FaultConfig,
    TestServer,
    count_tokens,
    default_responder,
    expected_text,
    prompt_hash,
)

DURATION_RE = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+s)$")


def run(coro):
    return asyncio.run(coro)


def chat_body(content: str, **params) -> dict:
    return {"model": "teacher-x", "messages": [{"role": "user", "content": content}], **params}


async def post(session: aiohttp.ClientSession, url: str, body=None, headers=None, data=None):
    """POST and return (status, headers, raw body bytes)."""
    async with session.post(url, json=body if data is None else None, data=data, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def chat(session, srv: TestServer, content: str, **params) -> dict:
    status, _, raw = await post(session, srv.base_url + "/chat/completions", chat_body(content, **params))
    assert status == 200, raw
    return json.loads(raw)


@pytest.fixture
def server():
    with TestServer() as srv:
        yield srv


# --------------------------------------------------------------------------- answers


def test_chat_answer_is_deterministic_and_usage_counts_words(server):
    messages = [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": "What is two plus two?"},
    ]

    async def go():
        async with aiohttp.ClientSession() as s:
            body = {"model": "teacher-x", "messages": messages}
            replies = []
            for _ in range(2):
                status, _, raw = await post(s, server.base_url + "/chat/completions", body)
                assert status == 200
                replies.append(json.loads(raw))
            other = await chat(s, server, "Something else entirely")
            return replies, other

    (a, b), other = run(go())
    prompt_text = "You are a careful math tutor.\nWhat is two plus two?"
    text = a["choices"][0]["message"]["content"]
    assert text == expected_text(prompt_text)
    assert text == default_responder("/v1/chat/completions", {"messages": messages})
    assert text.startswith("answer " + prompt_hash(prompt_text))
    assert text.endswith("two plus two?")
    assert b["choices"][0]["message"]["content"] == text
    assert other["choices"][0]["message"]["content"] != text
    assert a["id"] != b["id"]

    assert set(a) >= {"id", "object", "created", "model", "choices", "usage"}
    assert a["object"] == "chat.completion" and a["model"] == "teacher-x"
    assert a["choices"][0]["index"] == 0
    assert a["choices"][0]["message"]["role"] == "assistant"
    assert a["choices"][0]["finish_reason"] == "stop"
    assert a["usage"] == {
        "prompt_tokens": 6 + 5,
        "completion_tokens": count_tokens(text),
        "total_tokens": 11 + count_tokens(text),
    }
    stats = server.stats()
    assert stats["prompt_counts"][prompt_hash(prompt_text)] == 2
    assert stats["usage"]["prompt_tokens"] == 2 * 11 + count_tokens("Something else entirely")


def test_seed_matters_only_when_sampling(server):
    prompt = "Write a haiku about rain"

    async def go():
        async with aiohttp.ClientSession() as s:
            greedy = [await chat(s, server, prompt, temperature=0, seed=k) for k in range(3)]
            sampled = [await chat(s, server, prompt, temperature=0.8, seed=k) for k in range(4)]
            again = await chat(s, server, prompt, temperature=0.8, seed=2)
            return greedy, sampled, again

    greedy, sampled, again = run(go())
    greedy_texts = {r["choices"][0]["message"]["content"] for r in greedy}
    assert greedy_texts == {expected_text(prompt)}
    sampled_texts = [r["choices"][0]["message"]["content"] for r in sampled]
    assert len(set(sampled_texts)) == 4
    assert sampled_texts == [expected_text(prompt, 0.8, k) for k in range(4)]
    assert expected_text(prompt) not in sampled_texts
    assert again["choices"][0]["message"]["content"] == sampled_texts[2]


def test_max_tokens_cuts_with_finish_reason_length(server):
    prompt = "one two three four five six"
    full = expected_text(prompt)

    async def go():
        async with aiohttp.ClientSession() as s:
            cut = await chat(s, server, prompt, max_tokens=3)
            new_style = await chat(s, server, prompt, max_completion_tokens=2)
            roomy = await chat(s, server, prompt, max_tokens=100)
            return cut, new_style, roomy

    cut, new_style, roomy = run(go())
    assert cut["choices"][0]["message"]["content"] == " ".join(full.split()[:3])
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3
    assert new_style["choices"][0]["message"]["content"] == " ".join(full.split()[:2])
    assert new_style["choices"][0]["finish_reason"] == "length"
    assert roomy["choices"][0]["message"]["content"] == full
    assert roomy["choices"][0]["finish_reason"] == "stop"


def test_n_choices(server):
    prompt = "Name a colour"

    async def go():
        async with aiohttp.ClientSession() as s:
            return await chat(s, server, prompt, n=3, temperature=1.0, seed=7)

    r = run(go())
    texts = [c["message"]["content"] for c in r["choices"]]
    assert [c["index"] for c in r["choices"]] == [0, 1, 2]
    assert len(set(texts)) == 3
    assert texts[0] == expected_text(prompt, 1.0, 7)
    # choice i samples with seed + i, as the i-th of k one-by-one requests does (synthkd.testing.sampling)
    assert texts[2] == expected_text(prompt, 1.0, 9)
    assert r["usage"]["completion_tokens"] == sum(count_tokens(t) for t in texts)
    assert r["usage"]["prompt_tokens"] == 3


def test_completions_and_models_endpoints(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            status, _, raw = await post(
                s, server.base_url + "/completions", {"model": "base-7b", "prompt": "Once upon a time", "max_tokens": 50}
            )
            assert status == 200
            single = json.loads(raw)
            status, _, raw = await post(s, server.base_url + "/completions", {"prompt": ["alpha beta", "gamma"]})
            assert status == 200
            batch = json.loads(raw)
            async with s.get(server.base_url + "/models") as r:
                assert r.status == 200
                models = await r.json()
            return single, batch, models

    single, batch, models = run(go())
    assert single["object"] == "text_completion"
    assert single["model"] == "base-7b"
    assert single["choices"][0]["text"] == expected_text("Once upon a time")
    assert single["choices"][0]["finish_reason"] == "stop"
    assert single["usage"]["prompt_tokens"] == 4
    assert [c["text"] for c in batch["choices"]] == [expected_text("alpha beta"), expected_text("gamma")]
    assert [c["index"] for c in batch["choices"]] == [0, 1]
    assert batch["usage"]["prompt_tokens"] == 3
    assert models["object"] == "list"
    ids = [m["id"] for m in models["data"]]
    assert "test-model" in ids and "base-7b" in ids
    assert all(m["object"] == "model" for m in models["data"])
    assert server.stats()["by_endpoint"] == {"/v1/chat/completions": 0, "/v1/completions": 2, "/v1/models": 1}


def test_bad_json_is_400(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            bad = await post(s, server.base_url + "/chat/completions", data=b"{nope", headers={"Content-Type": "application/json"})
            no_messages = await post(s, server.base_url + "/chat/completions", {"model": "m"})
            return bad, no_messages

    (st1, _, raw1), (st2, _, raw2) = run(go())
    assert st1 == 400 and json.loads(raw1)["error"]["type"] == "invalid_request_error"
    assert st2 == 400 and json.loads(raw2)["error"]["param"] == "messages"
    assert server.stats()["by_outcome"]["bad_request"] == 2


def test_async_dict_responder_and_failing_responder():
    calls = []

    async def responder(endpoint, body):
        calls.append(endpoint)
        await asyncio.sleep(0)
        if "boom" in body["messages"][0]["content"]:
            raise RuntimeError("kaput")
        return {"text": "one two three four", "finish_reason": "content_filter"}

    with TestServer(responder=responder) as srv:

        async def go():
            async with aiohttp.ClientSession() as s:
                a = await chat(s, srv, "hi")
                b = await chat(s, srv, "hi", max_tokens=2)
                c = await post(s, srv.base_url + "/chat/completions", chat_body("boom"))
                return a, b, c

        a, b, (status, _, raw) = run(go())
        assert a["choices"][0]["message"]["content"] == "one two three four"
        assert a["choices"][0]["finish_reason"] == "content_filter"
        assert b["choices"][0]["message"]["content"] == "one two"
        assert b["choices"][0]["finish_reason"] == "length"
        assert status == 500 and "kaput" in json.loads(raw)["error"]["message"]
        assert srv.stats()["by_outcome"]["responder_error"] == 1
    assert calls == ["/v1/chat/completions"] * 3


# --------------------------------------------------------------------------- auth and rate limits


def test_api_key_required():
    with TestServer(FaultConfig(api_key="sekrit")) as srv:
        url = srv.base_url + "/chat/completions"

        async def go():
            async with aiohttp.ClientSession() as s:
                wrong = await post(s, url, chat_body("x"), headers={"Authorization": "Bearer nope"})
                missing = await post(s, url, chat_body("x"))
                right = await post(s, url, chat_body("x"), headers={"Authorization": "Bearer sekrit"})
                async with s.get(srv.base_url + "/models") as r:
                    models_status = r.status
                return wrong, missing, right, models_status

        wrong, missing, right, models_status = run(go())
        assert wrong[0] == 401
        err = json.loads(wrong[2])["error"]
        assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
        assert "message" in err
        assert missing[0] == 401
        assert right[0] == 200
        assert models_status == 401
        assert srv.stats()["by_outcome"]["unauthorized"] == 3


def test_rpm_limit_429_when_bursting_and_none_when_paced():
    rpm = 6000  # 100 requests/s, burst capacity 100
    with TestServer(FaultConfig(rpm_limit=rpm)) as srv:
        url = srv.base_url + "/chat/completions"

        async def go():
            async with aiohttp.ClientSession() as s:
                burst = await asyncio.gather(*(post(s, url, chat_body(f"q{i}")) for i in range(180)))
                limited = [r for r in burst if r[0] == 429]
                ok = [r for r in burst if r[0] == 200]
                wait_ms = max(int(r[1]["retry-after-ms"]) for r in limited)
                await asyncio.sleep(wait_ms / 1000 + 0.01)
                paced = []
                for i in range(40):  # 1 request / 15 ms < 100 / s
                    paced.append((await post(s, url, chat_body(f"p{i}")))[0])
                    await asyncio.sleep(0.015)
                return ok, limited, paced

        ok, limited, paced = run(go())
        assert 90 <= len(ok) < 180 and len(limited) >= 30
        h = limited[0][1]
        assert int(h["retry-after"]) >= 1
        assert 0 < int(h["retry-after-ms"]) <= 1000
        assert h["x-ratelimit-limit-requests"] == str(rpm)
        assert h["x-ratelimit-remaining-requests"] == "0"
        assert DURATION_RE.match(h["x-ratelimit-reset-requests"])
        err = json.loads(limited[0][2])["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        okh = ok[0][1]
        assert okh["x-ratelimit-limit-requests"] == str(rpm)
        assert int(okh["x-ratelimit-remaining-requests"]) >= 0
        assert DURATION_RE.match(okh["x-ratelimit-reset-requests"])
        assert paced == [200] * 40
        stats = srv.stats()
        assert stats["by_outcome"]["rate_limited"] == len(limited)
        assert stats["rate_limited_by"]["requests"] == len(limited)


def test_tpm_limit():
    with TestServer(FaultConfig(tpm_limit=600)) as srv:  # 10 tokens/s, burst 10
        url = srv.base_url + "/chat/completions"

        async def go():
            async with aiohttp.ClientSession() as s:
                first = await post(s, url, chat_body("five words in this prompt"))
                second = await post(s, url, chat_body("five words in this prompt"))
                return first, second

        first, second = run(go())
        assert first[0] == 200
        assert first[1]["x-ratelimit-limit-tokens"] == "600"
        assert second[0] == 429  # 5 prompt + 7 completion tokens > the 10-token burst
        assert json.loads(second[2])["error"]["type"] == "tokens"
        assert int(second[1]["retry-after-ms"]) > 100
        assert "x-ratelimit-reset-tokens" in second[1]
        assert srv.stats()["rate_limited_by"]["tokens"] == 1


# --------------------------------------------------------------------------- faults


def classify(status: int, headers, raw: bytes) -> str:
    if status == 500:
        return "error_500"
    assert status == 200
    if headers.get("Content-Type", "").startswith("text/html"):
        return "html_page"
    if not raw:
        return "empty_body"
    try:
        obj = json.loads(raw)
    except ValueError:
        return "truncated_json"
    return "ok" if "choices" in obj else "missing_choices"


def test_error_and_malformed_rates_and_reset_reproduces():
    cfg = FaultConfig(error_rate=0.2, malformed_rate=0.2, seed=3)
    n = 300
    with TestServer(cfg) as srv:
        url = srv.base_url + "/chat/completions"

        async def burst():
            sem = asyncio.Semaphore(32)
            async with aiohttp.ClientSession() as s:

                async def one(i):
                    async with sem:
                        return classify(*(await post(s, url, chat_body(f"question {i}"))))

                return await asyncio.gather(*(one(i) for i in range(n)))

        kinds = run(burst())
        stats = srv.stats()
        by = stats["by_outcome"]
        assert stats["requests_total"] == n
        assert by["error_500"] == kinds.count("error_500")
        assert 30 <= by["error_500"] <= 90
        malformed = [k for k in kinds if k not in ("ok", "error_500")]
        assert by["malformed"] == len(malformed)
        assert 30 <= by["malformed"] <= 90
        assert set(malformed) == {"truncated_json", "empty_body", "missing_choices", "html_page"}
        assert by["ok"] == kinds.count("ok") == n - by["error_500"] - by["malformed"]
        assert max(stats["malformed_by_variant"].values()) - min(stats["malformed_by_variant"].values()) <= 1

        srv.reset_stats()
        assert srv.stats()["requests_total"] == 0
        run(burst())
        assert srv.stats()["by_outcome"] == by  # the reset reseeded the fault RNG


def test_latency_is_concurrent_not_serialised():
    with TestServer(FaultConfig(latency_ms=200, latency_jitter_ms=50)) as srv:
        url = srv.base_url + "/chat/completions"

        async def go():
            async with aiohttp.ClientSession() as s:
                t0 = time.perf_counter()
                one = await post(s, url, chat_body("warm up"))
                single = time.perf_counter() - t0
                t0 = time.perf_counter()
                results = await asyncio.gather(*(post(s, url, chat_body(f"c{i}")) for i in range(64)))
                return one, single, results, time.perf_counter() - t0

        one, single, results, elapsed = run(go())
        assert one[0] == 200 and 0.14 <= single < 1.0
        assert all(r[0] == 200 for r in results)
        assert elapsed < 1.5  # 64 x 200 ms serialised would be 12.8 s
        assert srv.stats()["max_in_flight"] >= 32


def test_hang_ends_on_client_timeout_and_stop_is_quick():
    srv = TestServer(FaultConfig(hang_rate=1.0, hang_seconds=60)).start()
    try:
        url = srv.base_url + "/chat/completions"

        async def go():
            async with aiohttp.ClientSession() as s:
                t0 = time.perf_counter()
                with pytest.raises(asyncio.TimeoutError):
                    await post_with_timeout(s, url, 0.3)
                assert time.perf_counter() - t0 < 2
                # the client hung up, so the server cancels the handler
                for _ in range(100):
                    if srv.stats()["in_flight"] == 0:
                        break
                    await asyncio.sleep(0.02)
                assert srv.stats()["in_flight"] == 0
                assert srv.stats()["by_outcome"]["hang"] == 1

                # now leave one hung request in flight and stop the server under it
                pending = asyncio.ensure_future(post(s, url, chat_body("stuck")))
                for _ in range(100):
                    if srv.stats()["in_flight"] == 1:
                        break
                    await asyncio.sleep(0.02)
                assert srv.stats()["in_flight"] == 1
                t0 = time.perf_counter()
                await asyncio.get_running_loop().run_in_executor(None, srv.stop)
                stop_s = time.perf_counter() - t0
                try:
                    status = (await asyncio.wait_for(pending, 5))[0]
                except aiohttp.ClientError:
                    status = None
                return stop_s, status

        stop_s, status = run(go())
        assert stop_s < 1.0
        assert status == 503  # woken by stop() and answered "shutting down", not left hanging
    finally:
        srv.stop()


async def post_with_timeout(session, url, timeout):
    timeout_cfg = aiohttp.ClientTimeout(total=timeout)
    async with session.post(url, json=chat_body("hang please"), timeout=timeout_cfg) as r:
        return r.status


# --------------------------------------------------------------------------- control


def test_config_and_reset_endpoints(server):
    root = server.url

    async def go():
        async with aiohttp.ClientSession() as s:
            url = server.base_url + "/chat/completions"
            st, _, raw = await post(s, root + "/_config", {"error_rate": 1.0})
            assert st == 200 and json.loads(raw)["config"]["error_rate"] == 1.0
            failing = (await post(s, url, chat_body("a")))[0]
            st, _, _ = await post(s, root + "/_config", {"error_rate": 0})
            assert st == 200
            healthy = (await post(s, url, chat_body("a")))[0]
            bad_field = (await post(s, root + "/_config", {"no_such_field": 1}))[0]
            bad_value = (await post(s, root + "/_config", {"error_rate": 2}))[0]
            async with s.get(root + "/_stats") as r:
                stats = await r.json()
            reset = (await post(s, root + "/_reset"))[0]
            async with s.get(root + "/_stats") as r:
                after = await r.json()
            return failing, healthy, bad_field, bad_value, stats, reset, after

    failing, healthy, bad_field, bad_value, stats, reset, after = run(go())
    assert (failing, healthy) == (500, 200)
    assert bad_field == 400 and bad_value == 400
    assert stats["requests_total"] == 2
    assert stats["by_outcome"]["error_500"] == 1 and stats["by_outcome"]["ok"] == 1
    assert stats["config"]["error_rate"] == 0
    assert reset == 200
    assert after["requests_total"] == 0 and after["by_outcome"]["error_500"] == 0
    assert after["prompt_counts"] == {}


def test_python_configure_changes_latency(server):
    with pytest.raises(ValueError):
        server.configure(bogus=1)
    with pytest.raises(ValueError):
        server.configure(hang_rate=-0.1)
    cfg = server.configure(latency_ms=150)
    assert cfg.latency_ms == 150 and server.stats()["config"]["latency_ms"] == 150

    async def go():
        async with aiohttp.ClientSession() as s:
            t0 = time.perf_counter()
            await chat(s, server, "slow now")
            return time.perf_counter() - t0

    assert run(go()) >= 0.14


# --------------------------------------------------------------------------- command line


def test_cli_prints_ready_and_serves():
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthkd.testing.server", "--port", "0", "--api-key", "KEY", "--seed", "1", "--rpm", "6000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),  # import this checkout's synthkd, wherever pytest was started
    )
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(15)
        assert line, "no READY line within 15 s"
        m = re.fullmatch(r"READY (http://127\.0\.0\.1:(\d+)/v1)\n", line[0])
        assert m, line[0]
        base = m.group(1)

        async def go():
            async with aiohttp.ClientSession() as s:
                ok = await post(
                    s, base + "/chat/completions", chat_body("cli hello"), headers={"Authorization": "Bearer KEY"}
                )
                denied = await post(s, base + "/chat/completions", chat_body("cli hello"))
                return ok, denied

        ok, denied = run(go())
        assert ok[0] == 200
        assert json.loads(ok[2])["choices"][0]["message"]["content"] == expected_text("cli hello")
        assert ok[1]["x-ratelimit-limit-requests"] == "6000"
        assert denied[0] == 401
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == ""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- key hygiene, quota, CLI help


def test_stats_and_config_never_return_the_api_key():  # F16 regression
    with TestServer(FaultConfig(api_key="sk-stats-secret-123")) as srv:
        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.get(srv.url + "/_stats") as r:
                    stats = await r.read()
                status, _, cfg = await post(s, srv.url + "/_config", {"latency_ms": 1})
                return stats, status, cfg

        stats, status, cfg = run(go())
        assert status == 200
        for raw in (stats, cfg):
            assert b"sk-stats-secret" not in raw
            assert json.loads(raw)["config"]["api_key"] == "***"
        assert b"sk-stats-secret" not in json.dumps(srv.stats()).encode()


def test_echo_key_repeats_the_presented_key_in_error_bodies():
    """The option the client's key-scrubbing tests rely on (audit mutant 21): like OpenAI's own 401."""
    key = "sk-echo-Qz7Wm2Xp9Lk4Rt6Yv1Nb8"
    with TestServer(FaultConfig(api_key=key, echo_key=True, error_rate=0.5, malformed_rate=0.5, seed=1)) as srv:
        async def go():
            async with aiohttp.ClientSession() as s:
                auth = {"Authorization": f"Bearer {key}"}
                wrong = await post(s, srv.base_url + "/chat/completions", chat_body("x"),
                                   headers={"Authorization": "Bearer sk-wrong-Ab12Cd34Ef56"})
                bad = await post(s, srv.base_url + "/chat/completions", {"model": "m"}, headers=auth)
                rest = [await post(s, srv.base_url + "/chat/completions", chat_body(f"q{i}"), headers=auth)
                        for i in range(10)]
                return wrong, bad, rest

        wrong, bad, rest = run(go())
        assert wrong[0] == 401 and "Incorrect API key provided: sk-wrong-Ab12Cd34Ef56" in json.loads(wrong[2])["error"]["message"]
        assert bad[0] == 400 and key in json.loads(bad[2])["error"]["message"]
        by = srv.stats()["by_outcome"]
        assert by["error_500"] > 0 and by["malformed"] > 0
        for status, _, raw in rest:
            assert status in (200, 500) and key.encode() in raw
            if status == 200:
                with pytest.raises(json.JSONDecodeError):
                    json.loads(raw)  # the malformed body is not JSON, with the key inside


def test_quota_after_answers_429_insufficient_quota():  # audit mutant 22 (the server side)
    with TestServer(FaultConfig(quota_after=2)) as srv:
        async def go():
            async with aiohttp.ClientSession() as s:
                return [await post(s, srv.base_url + "/chat/completions", chat_body(f"q{i}")) for i in range(4)]

        res = run(go())
        assert [r[0] for r in res] == [200, 200, 429, 429]
        err = json.loads(res[3][2])["error"]
        assert err["type"] == err["code"] == "insufficient_quota" and "exceeded your current quota" in err["message"]
        assert srv.stats()["by_outcome"]["quota_exhausted"] == 2


def test_serve_test_help_lists_the_server_options():  # F16 regression
    res = run_cli("serve-test", "--help")
    assert res.returncode == 0, res.stderr
    for opt in ("--latency-ms", "--error-rate", "--api-key", "--echo-key", "--quota-after", "--responder"):
        assert opt in res.stdout, opt
    assert res.stdout.startswith("Usage: synthkd serve-test")
