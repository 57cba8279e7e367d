"""The OpenAI-compatible client, piece by piece: request building, response parsing, how each HTTP status
is handled, retries, the budget stop, the cache and the exact stats.

Requests go to the repo's real test server on 127.0.0.1.  ``ScriptedServer`` is that server with a queue
of canned responses in front (status, body, headers) for what its fault options cannot produce (a 404,
a 503, a 200 without usage...); when the queue is empty it answers as usual.  It also records each
generation request's headers and body.  The client itself is never patched.  Pure helpers of the client
(``_parse``, ``_error_message``, ``_estimate_tokens``, ``_budget_reached``) are also called directly.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time

import orjson
import pytest
from aiohttp import web

from synthkd.teachers import TeacherFatalError, TeacherRequest
from synthkd.teachers.base import TeacherConfigError, TeacherStorageError, Usage
from synthkd.teachers.cache import RequestCache, request_cache_key
from synthkd.teachers.errors import MalformedResponse
from synthkd.teachers.openai_compat import DEFAULT_BASE_URL, OpenAICompatibleTeacher
from synthkd.teachers.pricing import Price, PriceTable
from synthkd.testing.server import FaultConfig, TestServer, count_tokens, expected_text

KEY = "sk-Qz7Wm2Xp9Lk4Rt6Yv1Nb8Hc3Jd5Fg0Sa"
MODEL = "test-model"


class ScriptedServer(TestServer):
    __test__ = False

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.script: list[tuple[int, bytes, dict[str, str]]] = []
        self.seen: list[tuple[str, dict[str, str], dict]] = []

    def push(self, status: int, body: object, headers: dict[str, str] | None = None) -> ScriptedServer:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        self.script.append((status, raw, {"Content-Type": "application/json", **(headers or {})}))
        return self

    async def _generate(self, request, endpoint, arrived):
        raw = await request.read()
        self.seen.append((endpoint, dict(request.headers), orjson.loads(raw)))
        if self.script:
            status, body, headers = self.script.pop(0)
            return web.Response(body=body, status=status, headers=headers)
        return await super()._generate(request, endpoint, arrived)


@pytest.fixture
def server():
    started: list[TestServer] = []

    def make(config: FaultConfig | None = None) -> ScriptedServer:
        srv = ScriptedServer(config or FaultConfig()).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def _prices(inp: float = 1.0, out: float = 2.0) -> PriceTable:
    return PriceTable({MODEL: Price(inp, out)})


def _teacher(srv, **kw) -> OpenAICompatibleTeacher:
    kw.setdefault("api_key", KEY)
    kw.setdefault("prices", _prices())
    return OpenAICompatibleTeacher(MODEL, base_url=srv.base_url if srv else "http://127.0.0.1:9/v1", **kw)


def _run(teacher, reqs):
    """Stream reqs through teacher: (results by key, the exception that ended the stream or None)."""
    got = {}

    async def go():
        async def gen():
            for r in reqs:
                yield r

        try:
            async for r in teacher.stream(gen()):
                got[r.key] = r
        finally:
            await teacher.aclose()

    try:
        asyncio.run(asyncio.wait_for(go(), 60))
    except Exception as exc:  # noqa: BLE001 - returned to the test
        return got, exc
    return got, None


def _chat(key: str, text: str, **kw) -> TeacherRequest:
    return TeacherRequest(key=key, messages=[{"role": "user", "content": text}], **kw)


def _ok_body(text: object = "fine", *, usage: object = None, finish: object = "stop", chat: bool = True) -> dict:
    choice = {"index": 0, "finish_reason": finish}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    body = {"id": "x", "model": "served-model", "choices": [choice]}
    if usage is not None:
        body["usage"] = usage
    return body


def _error(message: str, code: str | None = None, type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "code": code, "param": None}}


def _completion_requests(srv) -> int:
    st = srv.stats()
    return st["by_endpoint"]["/v1/chat/completions"] + st["by_endpoint"]["/v1/completions"]


# ================================================================================ construction


def test_bad_concurrency_or_retries_are_refused():
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        _teacher(None, concurrency=0)
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        _teacher(None, max_retries=-1)
    assert _teacher(None, concurrency=1, max_retries=0).max_retries == 0


def test_base_url_and_key_from_arguments_or_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    t = OpenAICompatibleTeacher(MODEL, prices=_prices())
    assert t.base_url == DEFAULT_BASE_URL == "https://api.openai.com/v1"
    assert "Authorization" not in t._headers
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.local/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    t = OpenAICompatibleTeacher(MODEL, prices=_prices())
    assert t.base_url == "http://proxy.local/v1"  # trailing slash removed
    assert t._headers == {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    t = OpenAICompatibleTeacher(MODEL, base_url="http://other:8000/v1//", api_key="", prices=_prices())
    assert t.base_url == "http://other:8000/v1"
    assert "Authorization" not in t._headers  # an explicit empty key is no key, not the environment's


def test_price_and_stats_are_set_up_from_the_table():
    t = _teacher(None, prices=_prices(3.0, 15.0))
    assert t.price == Price(3.0, 15.0) and t.price_known and t.stats.price_known and t.stats.model == MODEL
    t = OpenAICompatibleTeacher("no-such-model", api_key=KEY, prices=_prices())
    assert t.price is None and not t.price_known and not t.stats.price_known


def test_limits_and_deadlines_are_set_up_from_the_options():
    assert not _teacher(None).limiter.active
    assert _teacher(None, rpm=60).limiter.active and _teacher(None, tpm=1000).limiter.active
    t = _teacher(None, timeout_s=42.0, timeout_floor_s=1.5)
    assert (t.latency.hard_timeout_s, t.latency.floor_s, t.latency.factor) == (42.0, 1.5, 8.0)
    t = _teacher(None, timeout_s=42.0, adaptive_timeout=False)
    for _ in range(100):
        t.latency.observe(0.01)
    assert t.latency.deadline(1) == 42.0  # never adaptive: always the full timeout


def test_max_cost_needs_a_price():
    with pytest.raises(TeacherConfigError) as ei:
        OpenAICompatibleTeacher("mystery", api_key=KEY, prices=_prices(), max_cost=1.0)
    assert str(ei.value) == (
        "--max-cost needs a price for model 'mystery', and none is known: add it with --prices FILE "
        '(JSON: {"mystery": {"input": USD_per_1M, "output": USD_per_1M}})'
    )
    assert _teacher(None, max_cost=1.0).max_cost == 1.0


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "\x1f", "\x7f"])
def test_key_with_a_control_character_is_refused(bad):
    with pytest.raises(TeacherConfigError, match="OPENAI_API_KEY contains a control character"):
        _teacher(None, api_key=KEY + bad)


def test_key_with_ordinary_characters_is_accepted():
    assert _teacher(None, api_key="sk- ~!key with spaces~")._api_key == "sk- ~!key with spaces~"


def test_base_url_with_credentials_and_a_key_is_refused_without_echoing_the_password():
    with pytest.raises(TeacherConfigError) as ei:
        OpenAICompatibleTeacher(MODEL, base_url="https://user:hunter2@proxy.example:8443/v1", api_key=KEY,
                                prices=_prices())
    assert str(ei.value) == (
        "base_url must not carry credentials (user:password@) when OPENAI_API_KEY is set: "
        "https://***@proxy.example:8443/v1"
    )
    with pytest.raises(TeacherConfigError) as ei:
        OpenAICompatibleTeacher(MODEL, base_url="http://user@proxy.example/v1", api_key=KEY, prices=_prices())
    assert str(ei.value).endswith(": http://***@proxy.example/v1")


def test_base_url_with_credentials_and_no_key_is_allowed_and_its_password_is_scrubbed():
    t = OpenAICompatibleTeacher(MODEL, base_url="http://user:hunter2-secret@127.0.0.1:9/v1", api_key="",
                                prices=_prices())
    assert t._scrub("auth failed for hunter2-secret") == "auth failed for ***"


# ================================================================================ pure helpers


def test_cache_key_merges_default_params_under_the_requests_own():
    t = _teacher(None, default_params={"temperature": 0.2, "max_tokens": 50})
    req = _chat("a", "hi", params={"temperature": 0.9}, sample_index=3)
    assert t.cache_key(req) == request_cache_key(
        MODEL, messages=req.messages, params={"temperature": 0.9, "max_tokens": 50}, sample_index=3)
    preq = TeacherRequest(key="p", prompt="hi")
    assert t.cache_key(preq) == request_cache_key(MODEL, prompt="hi", params={"temperature": 0.2, "max_tokens": 50})
    assert t.cache_key(preq) != t.cache_key(_chat("c", "hi"))


def test_token_estimate_counts_characters_and_the_answer_budget():
    t = _teacher(None)
    msgs = TeacherRequest(key="m", messages=[{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 9},
                                             {"role": "user", "content": None},
                                             {"role": "user", "content": [{"type": "text", "text": "z"}]}])
    # 40 + 9 + 200 + 200 (a content that is not a string, None or parts, counts as 200 characters) = 449
    # -> 112 tokens, + 4, + the answer budget (max_tokens, else max_completion_tokens, else 256)
    assert t._estimate_tokens(msgs, {}) == 449 // 4 + 4 + 256
    assert t._estimate_tokens(msgs, {"max_tokens": 10}) == 449 // 4 + 4 + 10
    assert t._estimate_tokens(msgs, {"max_completion_tokens": 20}) == 449 // 4 + 4 + 20
    assert t._estimate_tokens(msgs, {"max_tokens": None, "max_completion_tokens": 30}) == 449 // 4 + 4 + 30
    prompt = TeacherRequest(key="p", prompt="w" * 17)
    assert t._estimate_tokens(prompt, {"max_tokens": 1}) == 17 // 4 + 4 + 1
    assert t._estimate_tokens(TeacherRequest(key="e", prompt=""), {}) == 4 + 256


def _budget(max_cost, *, done=0, cached=0, failed=0, cost=0.0, in_flight=0) -> bool:
    t = _teacher(None, max_cost=max_cost)
    st = t.stats
    st.done, st.cached, st.failed, st.cost_usd, st.in_flight = done, cached, failed, cost, in_flight
    return t._budget_reached()


def test_budget_is_reached_exactly_at_the_cap():
    assert not _budget(None, done=5, cost=1e9)  # no budget: never
    assert not _budget(1.0)
    assert not _budget(1.0, done=4, cost=0.999999)
    assert _budget(1.0, done=4, cost=1.0)  # exactly at the cap: stop
    assert _budget(1.0, done=4, cost=1.5)


def test_budget_counts_what_requests_in_flight_will_probably_cost():
    # 4 fresh answers cost 0.8 (0.2 each): one more in flight makes 1.0, the cap.
    assert _budget(1.0, done=4, cost=0.8, in_flight=1)
    assert not _budget(1.0, done=4, cost=0.7, in_flight=1)
    # Cache hits and failures are not fresh answers: they do not lower the average.
    assert _budget(1.0, done=10, cached=3, failed=3, cost=0.8, in_flight=1)
    assert not _budget(1.0, done=10, cached=2, failed=3, cost=0.8, in_flight=1)  # 5 fresh: 0.16 each
    # Nothing answered yet: nothing to project from.
    assert not _budget(1.0, done=3, cached=2, failed=1, cost=0.0, in_flight=30)


def _parse(raw: object, chat: bool = True):
    """(text, finish_reason, usage, model) of the first sample of a reply."""
    t = _teacher(None)
    reply = t._parse(raw if isinstance(raw, bytes) else orjson.dumps(raw), chat, {})
    return reply.choices[0].text, reply.choices[0].finish_reason, reply.usage, reply.model


def test_parse_reads_text_finish_reason_usage_and_model():
    body = _ok_body("4", usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}, finish="length")
    assert _parse(body) == ("4", "length", Usage(12, 3), "served-model")
    body = _ok_body("four", usage={"prompt_tokens": 2, "completion_tokens": 1}, chat=False)
    assert _parse(body, chat=False) == ("four", "stop", Usage(2, 1), "served-model")
    # a chat body read as a completion has no text
    with pytest.raises(MalformedResponse, match="choice has no text"):
        _parse(_ok_body("x"), chat=False)


def test_parse_without_usage_counts_zero_tokens():
    assert _parse(_ok_body("a"))[2] == Usage(0, 0)
    assert _parse(_ok_body("a", usage={}))[2] == Usage(0, 0)
    assert _parse({**_ok_body("a"), "usage": None})[2] == Usage(0, 0)
    assert _parse(_ok_body("a", usage={"prompt_tokens": None, "completion_tokens": 5}))[2] == Usage(0, 5)
    assert _parse(_ok_body("a", usage={"prompt_tokens": "7", "completion_tokens": 2.0}))[2] == Usage(7, 2)
    body = _ok_body("a")
    del body["model"]
    assert _parse(body)[3] is None


def test_parse_reads_every_choice_in_index_order():
    body = _ok_body("first")
    body["choices"].insert(0, {"index": 1, "message": {"content": "second"}, "finish_reason": "length"})
    assert _parse(body)[:2] == ("first", "stop")
    reply = _teacher(None)._parse(orjson.dumps(body), True, {})
    assert [(c.text, c.finish_reason) for c in reply.choices] == [("first", "stop"), ("second", "length")]


def test_parse_content_filter_without_text_is_an_empty_answer():
    assert _parse(_ok_body(None, finish="content_filter"))[:2] == ("", "content_filter")
    body = _ok_body("x", finish="content_filter")
    del body["choices"][0]["message"]
    assert _parse(body)[:2] == ("", "content_filter")


@pytest.mark.parametrize(
    "body, why",
    [
        ([1, 2], "body is not a JSON object"),
        ("text", "body is not a JSON object"),
        ({"model": "m"}, "body has no 'choices'"),
        ({"choices": []}, "body has no 'choices'"),
        ({"choices": {"0": {}}}, "body has no 'choices'"),
        ({"choices": ["text"]}, "body has no 'choices'"),
        (_ok_body(None), "choice has no text"),
        ({"choices": [{"message": "not an object", "finish_reason": "stop"}]}, "choice has no text"),
        (_ok_body(42), "choice text is not a string"),
        (_ok_body(["a"]), "choice text is not a string"),
        (_ok_body("a", usage=[1, 2]), "usage is not an object"),
        (_ok_body("a", usage="12"), "usage is not an object"),
        (_ok_body("a", usage={"prompt_tokens": "twelve"}), "usage is not numeric"),
        (_ok_body("a", usage={"completion_tokens": [3]}), "usage is not numeric"),
    ],
)
def test_parse_rejects_malformed_bodies_as_retryable(body, why):
    with pytest.raises(MalformedResponse) as ei:
        _parse(body)
    assert str(ei.value) == why


def test_parse_non_json_body_quotes_its_scrubbed_start():
    raw = b"<html>502 Bad Gateway</html>"
    with pytest.raises(MalformedResponse) as ei:
        _parse(raw)
    assert str(ei.value) == f"body is not JSON ({len(raw)} bytes): '<html>502 Bad Gateway</html>'"
    raw = b"y" * 70 + f"Bearer {KEY}".encode() + b"z" * 100
    with pytest.raises(MalformedResponse) as ei:
        _parse(raw)
    # scrubbed first, then cut to 80 characters: no piece of the key survives
    assert str(ei.value) == f"body is not JSON ({len(raw)} bytes): '{'y' * 70}Bearer ***...'"
    with pytest.raises(MalformedResponse, match=r"body is not JSON \(0 bytes\): ''"):
        _parse(b"")


def _message(raw: object) -> str:
    t = _teacher(None)
    return t._error_message(raw if isinstance(raw, bytes) else orjson.dumps(raw))


def test_error_message_from_openai_style_bodies():
    assert _message(_error("Invalid model", "model_not_found")) == "Invalid model (model_not_found)"
    assert _message({"error": {"message": "Too long", "type": "invalid_request_error"}}) == (
        "Too long (invalid_request_error)")  # no code: the type
    assert _message({"error": {"message": "Plain"}}) == "Plain"
    assert _message({"error": {"code": "x1"}}) == "{'code': 'x1'} (x1)"  # no message: the whole object
    assert _message({"error": "a string error"}) == "a string error"
    assert _message({"error": f"bad key {KEY}"}) == "bad key ***"
    assert _message(_error(f"Incorrect API key provided: {KEY}", "invalid_api_key")) == (
        "Incorrect API key provided: *** (invalid_api_key)")


def test_error_message_from_other_bodies_is_the_scrubbed_start_of_the_text():
    assert _message(b"  upstream timed out \n") == "upstream timed out"
    assert _message({"detail": "not found"}) == '{"detail":"not found"}'  # JSON, but not OpenAI's shape
    assert _message([1]) == "[1]"
    assert _message(b"") == "(empty body)"
    assert _message(b"   ") == "(empty body)"
    long = b"e" * 250
    assert _message(long) == "e" * 200 + "..."
    assert _message(b"e" * 200) == "e" * 200
    assert _message(b"x" * 190 + KEY.encode()) == "x" * 190 + "***"
    assert _message(b"\xff\xfebad bytes") == "\ufffd\ufffdbad bytes"


def test_cache_failure_message_names_what_could_not_be_written(tmp_path):
    with RequestCache(tmp_path / "c.sqlite") as cache:
        t = _teacher(None, cache=cache)
        exc = sqlite3.OperationalError("database or disk is full")
        err = t._cache_failure(exc)
        assert isinstance(err, TeacherStorageError) and err.__cause__ is exc
        assert str(err) == (
            f"cannot write the request cache {tmp_path / 'c.sqlite'}: OperationalError: database or disk is full; "
            "stopped sending requests (every answer received was still passed on, so the rows written are complete)"
        )
    t = _teacher(None)
    err = t._cache_failure(OSError(28, "No space left on device", "/runs/x/ledger.jsonl"))
    assert str(err).startswith("cannot write /runs/x/ledger.jsonl: No space left on device; stopped sending requests")
    err = t._cache_failure(OSError("no file name"))
    assert str(err).startswith("cannot write the request cache : OSError: no file name; ")


def test_unexpected_error_is_named_and_scrubbed():
    t = _teacher(None)
    exc = KeyError(f"oops {KEY}")
    err = t._unexpected(exc)
    assert isinstance(err, TeacherFatalError) and err.__cause__ is exc
    assert str(err) == "unexpected error in a request to http://127.0.0.1:9/v1: KeyError: 'oops ***'"


# ================================================================================ against the server


def test_chat_request_body_headers_and_result(server):
    srv = server()
    t = _teacher(srv, default_params={"temperature": 0, "max_tokens": 50, "seed": 1})
    req = _chat("a", "What is two plus two?", params={"max_tokens": 40})
    res, exc = _run(t, [req])
    assert exc is None
    endpoint, headers, body = srv.seen[0]
    assert endpoint == "/v1/chat/completions"
    assert headers["Authorization"] == f"Bearer {KEY}" and headers["Content-Type"] == "application/json"
    assert body == {"model": MODEL, "messages": req.messages, "temperature": 0, "max_tokens": 40, "seed": 1}
    r = res["a"]
    text = expected_text("What is two plus two?")
    usage = Usage(count_tokens("What is two plus two?"), count_tokens(text))
    assert (r.text, r.finish_reason, r.usage, r.model, r.cached, r.attempts, r.error) == (
        text, "stop", usage, MODEL, False, 1, None)
    assert r.cost_usd == Price(1.0, 2.0).cost(usage.prompt_tokens, usage.completion_tokens) and r.cost_usd > 0
    assert 0 < r.latency_s < 30


def test_prompt_request_goes_to_completions_without_a_key_header(server):
    srv = server()
    t = _teacher(srv, api_key="")
    res, exc = _run(t, [TeacherRequest(key="p", prompt="Say hello there", params={"max_tokens": 3})])
    assert exc is None
    endpoint, headers, body = srv.seen[0]
    assert endpoint == "/v1/completions" and "Authorization" not in headers
    assert body == {"model": MODEL, "prompt": "Say hello there", "max_tokens": 3}
    r = res["p"]
    assert r.finish_reason == "length" and r.text == " ".join(expected_text("Say hello there").split()[:3])
    assert r.usage == Usage(3, 3)


def test_stats_count_exactly(server, tmp_path):
    srv = server()
    prompts = [f"question number {i}" for i in range(6)]
    reqs = [TeacherRequest(key=str(i), prompt=p) for i, p in enumerate(prompts)]
    reqs.append(TeacherRequest(key="bad", prompt="x", params={"stream": True}))  # answered 400
    with RequestCache(tmp_path / "c.sqlite") as cache:
        t = _teacher(srv, cache=cache, concurrency=3)
        res, exc = _run(t, reqs)
        assert exc is None and len(res) == 7
        st = t.stats
        pt = sum(count_tokens(p) for p in prompts)
        ct = sum(count_tokens(expected_text(p)) for p in prompts)
        assert (st.attempts, st.done, st.cached, st.failed, st.retries, st.rate_limited, st.timeouts) == (
            7, 7, 0, 1, 0, 0, 0)
        assert (st.prompt_tokens, st.completion_tokens) == (pt, ct)
        assert st.cost_usd == pytest.approx((pt * 1.0 + ct * 2.0) / 1e6, rel=1e-12)
        assert st.in_flight == 0 and st.first_request_at is not None and st.last_result_at >= st.first_request_at
        assert res["bad"].error.startswith("RequestRejected: HTTP 400: ") and res["bad"].attempts == 1
        assert res["bad"].cost_usd == 0.0 and res["bad"].usage == Usage(0, 0)
        assert len(cache) == 6  # every answer, and not the rejected request
        first = {k: r for k, r in res.items()}

        # The same requests again: answers from the cache, free; the rejected one is sent again.
        t2 = _teacher(srv, cache=cache, concurrency=3)
        res2, exc = _run(t2, reqs)
        assert exc is None and len(res2) == 7
        st = t2.stats
        assert (st.attempts, st.done, st.cached, st.failed) == (1, 7, 6, 1)
        assert (st.prompt_tokens, st.completion_tokens, st.cost_usd) == (0, 0, 0.0)
        for k in map(str, range(6)):
            a, b = first[k], res2[k]
            assert b.cached and not a.cached
            assert (b.text, b.finish_reason, b.usage, b.model, b.cost_usd) == (
                a.text, a.finish_reason, a.usage, a.model, a.cost_usd)
    assert _completion_requests(srv) == 7 + 1


def test_nothing_is_sent_and_no_preflight_when_everything_is_cached(server, tmp_path):
    srv = server()
    reqs = [_chat(str(i), f"q{i}") for i in range(3)]
    with RequestCache(tmp_path / "c.sqlite") as cache:
        _run(_teacher(srv, cache=cache), reqs)
        assert srv.stats()["by_endpoint"]["/v1/models"] == 1  # one preflight for three requests
        srv.reset_stats()
        res, exc = _run(_teacher(srv, cache=cache), reqs)
    assert exc is None and all(r.cached for r in res.values())
    assert srv.stats()["requests_total"] == 0


def test_no_preflight_when_disabled(server):
    srv = server()
    res, exc = _run(_teacher(srv, preflight=False), [_chat("a", "q")])
    assert exc is None and res["a"].ok
    assert srv.stats()["by_endpoint"]["/v1/models"] == 0


def test_preflight_with_a_refused_key_stops_before_any_paid_request(server):
    srv = server(FaultConfig(api_key="sk-right-key-000000000"))
    res, exc = _run(_teacher(srv, api_key=KEY), [_chat(str(i), "q") for i in range(5)])
    assert isinstance(exc, TeacherFatalError) and res == {}
    assert str(exc).startswith(f"{srv.base_url} refused the API key (HTTP 401): Incorrect API key provided")
    assert KEY[:8] not in str(exc)
    assert _completion_requests(srv) == 0


def test_unreachable_server(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    t = OpenAICompatibleTeacher(MODEL, base_url=url, api_key=KEY, prices=_prices())
    res, exc = _run(t, [_chat("a", "q")])
    assert isinstance(exc, TeacherFatalError) and str(exc).startswith(f"cannot reach the teacher at {url}: ")
    # without the preflight: a connection failure is retried, then fails the row
    t = OpenAICompatibleTeacher(MODEL, base_url=url, api_key=KEY, prices=_prices(), preflight=False, max_retries=0)
    res, exc = _run(t, [_chat("a", "q")])
    assert exc is None and res["a"].error.startswith("ConnectionFailed: ") and res["a"].attempts == 1
    assert (t.stats.attempts, t.stats.failed, t.stats.done) == (1, 1, 1)


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_4xx_fail_the_row_without_retry(server, status):
    srv = server()
    srv.push(status, _error("The model `x` does not exist", "model_not_found"))
    t = _teacher(srv, max_retries=3)
    res, exc = _run(t, [_chat("a", "q"), _chat("b", "q2")])
    assert exc is None
    assert res["a"].error == f"RequestRejected: HTTP {status}: The model `x` does not exist (model_not_found)"
    assert res["a"].text is None and res["a"].attempts == 1 and not res["a"].ok
    assert res["b"].ok  # the run goes on
    assert (t.stats.attempts, t.stats.failed, t.stats.retries) == (2, 1, 0)


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 529])
def test_408_409_and_5xx_are_server_errors(server, status):
    srv = server()
    srv.push(status, _error(f"overloaded {KEY}", type_="server_error"))
    t = _teacher(srv, max_retries=0)  # no retry left: the row fails at once, naming the error
    res, exc = _run(t, [_chat("a", "q")])
    assert exc is None
    assert res["a"].error == f"ServerError: HTTP {status}: overloaded *** (server_error)"
    assert res["a"].attempts == 1 and t.stats.failed == 1
    assert t.stats.retries == 0  # regression: the wait tenacity computes after the last attempt was counted


def test_a_server_error_is_retried_and_the_answer_kept(server):
    srv = server()
    srv.push(503, b"busy")
    t = _teacher(srv, max_retries=1)
    res, exc = _run(t, [_chat("a", "q")])
    assert exc is None and res["a"].ok and res["a"].attempts == 2 and res["a"].text == expected_text("q")
    assert res["a"].latency_s >= 0.5  # backed off (0.5 s + up to 0.5 s of jitter) before the retry
    assert (t.stats.attempts, t.stats.retries, t.stats.failed, t.stats.done) == (2, 1, 0, 1)


def test_malformed_answers_are_retried_then_fail_the_row(server):
    srv = server()
    srv.push(200, b"<html>oops</html>").push(200, _ok_body(None))
    t = _teacher(srv, max_retries=1)
    res, exc = _run(t, [_chat("a", "q")])
    assert exc is None and res["a"].attempts == 2
    assert res["a"].error == "MalformedResponse: choice has no text"
    assert (t.stats.attempts, t.stats.retries, t.stats.failed, t.stats.cost_usd) == (2, 1, 1, 0.0)


def test_429_waits_what_the_server_says_and_retries_beyond_max_retries(server):
    srv = server()
    for _ in range(3):
        srv.push(429, _error("Rate limit reached", "rate_limit_exceeded", "requests"), {"retry-after-ms": "1"})
    t = _teacher(srv, max_retries=0)  # 429s are not the request's fault: they get retries of their own
    res, exc = _run(t, [_chat("a", "q")])
    assert exc is None and res["a"].ok and res["a"].attempts == 4
    assert (t.stats.attempts, t.stats.rate_limited, t.stats.retries, t.stats.failed) == (4, 3, 3, 0)
    assert t.limiter.rate_limited == 3


def test_429_insufficient_quota_stops_the_run(server):
    srv = server()
    srv.push(429, _error(f"You exceeded your current quota ({KEY})", "insufficient_quota", "insufficient_quota"))
    t = _teacher(srv, concurrency=1)
    res, exc = _run(t, [_chat(str(i), f"q{i}") for i in range(5)])
    assert isinstance(exc, TeacherFatalError) and res == {}
    assert str(exc) == (f"{srv.base_url}: quota exhausted (429 insufficient_quota): "
                        "You exceeded your current quota (***) (insufficient_quota)")
    assert _completion_requests(srv) == 1 and t.stats.rate_limited == 0


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_mid_run_stop_the_run(server, status):
    srv = server()
    srv.push(status, _error(f"Incorrect API key provided: {KEY}", "invalid_api_key"))
    t = _teacher(srv, concurrency=1, max_retries=5)
    res, exc = _run(t, [_chat(str(i), f"q{i}") for i in range(5)])
    assert isinstance(exc, TeacherFatalError) and res == {}
    assert str(exc) == (f"{srv.base_url} refused the API key (HTTP {status}): Incorrect API key provided: *** "
                        "(invalid_api_key). Check OPENAI_API_KEY (and OPENAI_BASE_URL).")
    assert _completion_requests(srv) == 1  # not retried, nothing else sent


def test_content_filter_answer_is_kept_as_empty_text(server):
    srv = server()
    srv.push(200, _ok_body(None, finish="content_filter", usage={"prompt_tokens": 5, "completion_tokens": 0}))
    res, exc = _run(_teacher(srv), [_chat("a", "q")])
    assert exc is None and res["a"].ok and res["a"].text == "" and res["a"].finish_reason == "content_filter"
    assert res["a"].usage == Usage(5, 0) and res["a"].model == "served-model"
    assert res["a"].cost_usd == 5e-6


def test_answer_without_usage_costs_zero_and_is_kept(server, tmp_path):
    srv = server()
    srv.push(200, _ok_body("no usage here"))
    with RequestCache(tmp_path / "c.sqlite") as cache:
        t = _teacher(srv, cache=cache)
        res, exc = _run(t, [_chat("a", "q")])
        assert exc is None and res["a"].text == "no usage here" and res["a"].usage == Usage(0, 0)
        assert res["a"].cost_usd == 0.0 and t.stats.cost_usd == 0.0 and t.stats.done == 1
        assert cache.get(t.cache_key(_chat("a", "q"))) == {
            "text": "no usage here", "finish_reason": "stop",
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "cost_usd": 0.0, "model": "served-model"}


def test_unknown_price_gives_no_cost_but_counts_tokens(server):
    srv = server()
    t = OpenAICompatibleTeacher(MODEL, base_url=srv.base_url, api_key=KEY, prices=PriceTable())
    res, exc = _run(t, [_chat("a", "one two three")])
    assert exc is None and res["a"].cost_usd is None and t.stats.cost_usd == 0.0
    assert t.stats.prompt_tokens == 3 and t.stats.completion_tokens == count_tokens(expected_text("one two three"))


def test_hung_attempts_time_out_and_are_retried(server):
    srv = server(FaultConfig(hang_rate=1.0))
    t = _teacher(srv, timeout_s=0.3, max_retries=1)
    res, exc = _run(t, [_chat("a", "q")])
    assert exc is None and res["a"].attempts == 2
    assert res["a"].error.startswith("AttemptTimeout: no answer within 0.")
    assert res["a"].latency_s < 1.5  # two 0.3 s deadlines and a short pause, not a backoff
    assert (t.stats.attempts, t.stats.timeouts, t.stats.retries, t.stats.failed) == (2, 2, 1, 1)


def test_zero_remaining_in_the_headers_pauses_every_sender(server):
    srv = server()
    srv.push(200, _ok_body("ok", usage={"prompt_tokens": 1, "completion_tokens": 1}),
             {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "45s"})
    t = _teacher(srv)
    res, exc = _run(t, [_chat("a", "q")])
    assert exc is None and res["a"].ok
    assert 40 < t.limiter._paused_until - time.monotonic() <= 45


class _Journal:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def sent(self, key):
        self.events.append(("sent", key))

    def failed(self, key):
        self.events.append(("failed", key))

    def answered(self, key, usage, cost):
        self.events.append(("answered", key, usage, cost))


def test_journal_hears_every_attempt_in_order(server):
    srv = server()
    srv.push(429, _error("slow down", "rate_limit_exceeded"), {"retry-after-ms": "1"})
    srv.push(200, _ok_body("done", usage={"prompt_tokens": 10, "completion_tokens": 20}))
    srv.push(400, _error("bad"))
    t = _teacher(srv, concurrency=1)
    t.journal = j = _Journal()
    a, b = _chat("a", "q1"), _chat("b", "q2")
    res, exc = _run(t, [a, b])
    assert exc is None and res["a"].ok and not res["b"].ok
    ka, kb = t.cache_key(a), t.cache_key(b)
    assert j.events == [("sent", ka), ("failed", ka), ("sent", ka), ("answered", ka, Usage(10, 20), 50e-6),
                        ("sent", kb), ("failed", kb)]


@pytest.mark.parametrize("max_cost, answered", [(6.0, 2), (8.5, 3), (9.0, 3), (9.5, 4)])
def test_budget_stops_new_requests_exactly_when_spend_reaches_max_cost(server, max_cost, answered):
    srv = server()
    # $1 per prompt token, output free: each "a b c" request costs exactly $3.
    t = _teacher(srv, prices=PriceTable({MODEL: Price(1_000_000, 0)}), max_cost=max_cost, concurrency=1)
    res, exc = _run(t, [TeacherRequest(key=str(i), prompt="a b c") for i in range(10)])
    assert exc is None and len(res) == answered
    assert t.budget_exhausted and t.stats.attempts == answered and t.stats.cost_usd == 3.0 * answered
    assert _completion_requests(srv) == answered


def test_budget_not_reached_leaves_the_flag_down(server):
    srv = server()
    t = _teacher(srv, prices=PriceTable({MODEL: Price(1_000_000, 0)}), max_cost=100.0, concurrency=2)
    res, exc = _run(t, [TeacherRequest(key=str(i), prompt="a b c") for i in range(4)])
    assert exc is None and len(res) == 4 and not t.budget_exhausted and t.stats.cost_usd == 12.0


def test_cache_hits_are_free_and_do_not_use_the_budget(server, tmp_path):
    srv = server()
    prices = PriceTable({MODEL: Price(1_000_000, 0)})
    reqs = [TeacherRequest(key=str(i), prompt="a b c", sample_index=i) for i in range(6)]
    with RequestCache(tmp_path / "c.sqlite") as cache:
        _run(_teacher(srv, prices=prices, cache=cache), reqs[:3])
        t = _teacher(srv, prices=prices, cache=cache, max_cost=3.0, concurrency=1)
        res, exc = _run(t, reqs)
    assert exc is None and t.budget_exhausted
    assert sorted(res) == ["0", "1", "2", "3"]  # 3 from the cache, then one fresh answer spends the $3
    assert [res[k].cached for k in "0123"] == [True, True, True, False]
    assert res["0"].cost_usd == 3.0  # what it cost when it was bought
    assert (t.stats.cached, t.stats.attempts, t.stats.cost_usd) == (3, 1, 3.0)


def test_every_attempt_hung_before_the_latency_settled_is_cut_once_it_settles(make_server):
    """Attempts sent before the teacher knew the server's latency got the hard timeout; once the p95 is
    known the watchdog must tighten the deadline of *each* of them (not only the last one registered,
    and without dying), so four hung requests cost about the adaptive deadline, not the hard timeout."""
    import asyncio as aio

    async def responder(endpoint, body):
        text = body["messages"][0]["content"]
        if text.startswith("hang"):
            await aio.sleep(60)
        return f"ok {text}"

    srv = make_server(responder=responder)
    t = OpenAICompatibleTeacher(MODEL, base_url=srv.base_url, api_key=KEY, prices=_prices(), timeout_s=20.0,
                                timeout_floor_s=0.3, max_retries=0, concurrency=8)
    reqs = [_chat(f"h{i}", f"hang {i}") for i in range(4)] + [_chat(f"f{i}", f"fast {i}") for i in range(40)]
    started = time.monotonic()
    res, exc = _run(t, reqs)
    took = time.monotonic() - started
    assert exc is None and all(res[f"f{i}"].ok for i in range(40))
    hung = [res[f"h{i}"] for i in range(4)]
    assert all(r.error and r.error.startswith("AttemptTimeout") for r in hung), [r.error for r in hung]
    assert took < 8.0, f"the hung attempts waited {took:.1f}s: their deadlines were not tightened"
    assert t.stats.timeouts == 4
