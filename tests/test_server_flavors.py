"""The test server's teacher-family flavors, checked over real HTTP with a plain httpx client.

Each flavor must emit the shapes of the offline API reference (sections cited per test): the 400
bodies verbatim, where the reasoning goes, which usage fields exist, how a budget that runs out
inside the reasoning looks, and what the server bills.  synthkd's own client is not used here: these
tests pin the emulator, the client tests then rely on it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from synthkd.testing import anthropic_api, flavors
from synthkd.testing.billing import PriceTable
from synthkd.testing.server import FaultConfig, TestServer, count_tokens, expected_text

RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PRICES = {
    "o4-mini": {"input": 1.0, "output": 4.0, "cached_input": 0.25},
    "claude-x": {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75},
    "deepseek": {"input": 0.5, "output": 2.0},
}


def serve(flavor: str, prices: dict | None = None, **config) -> TestServer:
    return TestServer(FaultConfig(**config), flavor=flavor, prices=PRICES if prices is None else prices)


def chat(srv: TestServer, content: str = "what is two plus two", *, model: str = "o4-mini", headers=None, **params):
    body = {"model": model, "messages": [{"role": "user", "content": content}], **params}
    r = httpx.post(srv.base_url + "/chat/completions", json=body, headers=headers, timeout=10)
    return r.status_code, r.json()


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


# --------------------------------------------------------------------------- openai-reasoning (§1)


@pytest.fixture(scope="module")
def reasoning_srv():
    with serve("openai-reasoning") as srv:
        yield srv


def test_reasoning_model_rejects_max_tokens_with_the_exact_400(reasoning_srv):
    status, body = chat(reasoning_srv, max_tokens=100)
    assert status == 400
    assert body == {"error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                   "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}


def test_reasoning_model_rejects_a_temperature_other_than_1(reasoning_srv):
    status, body = chat(reasoning_srv, temperature=0.2)
    assert status == 400
    assert body == {"error": {
        "message": "Unsupported value: 'temperature' does not support 0.2 with this model. "
                   "Only the default (1) value is supported.",
        "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}}
    assert chat(reasoning_srv, temperature=1)[0] == 200


@pytest.mark.parametrize(
    "param, value",
    [("top_p", 0.9), ("presence_penalty", 0.5), ("frequency_penalty", 0.5), ("logprobs", True),
     ("top_logprobs", 2), ("logit_bias", {"50256": -100})],
)
def test_reasoning_model_rejects_sampling_parameters(reasoning_srv, param, value):
    status, body = chat(reasoning_srv, **{param: value})
    assert status == 400
    assert body["error"] == {"message": f"Unsupported parameter: '{param}' is not supported with this model.",
                             "type": "invalid_request_error", "param": param, "code": "unsupported_parameter"}


def test_reasoning_effort_values(reasoning_srv):
    status, body = chat(reasoning_srv, reasoning_effort="none")
    assert status == 400
    assert body["error"] == {
        "message": "Unsupported value: 'reasoning_effort' does not support 'none' with this model. "
                   "Supported values are: 'minimal', 'low', 'medium', and 'high'.",
        "type": "invalid_request_error", "param": "reasoning_effort", "code": "unsupported_value"}
    spent = {}
    for effort in ("minimal", "low", "medium", "high"):
        status, body = chat(reasoning_srv, reasoning_effort=effort)
        assert status == 200
        spent[effort] = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert spent["minimal"] < spent["low"] < spent["medium"] < spent["high"]


def test_reasoning_answer_hides_the_trace_and_counts_it_as_output(reasoning_srv):
    prompt = "what is two plus two"
    status, body = chat(reasoning_srv, prompt, max_completion_tokens=1000)
    assert status == 200
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected_text(prompt), "refusal": None,
                                 "annotations": []}
    assert choice["finish_reason"] == "stop"
    reasoning = flavors.reasoning_tokens(prompt, 0, None, 64)
    assert 64 <= reasoning < 72
    usage = body["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning
    assert usage["completion_tokens"] == reasoning + count_tokens(expected_text(prompt))
    assert usage["prompt_tokens"] == 5 and usage["total_tokens"] == 5 + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert "reasoning" not in choice["message"] and "think" not in choice["message"]["content"]


@pytest.mark.parametrize("length_content, expected", [("empty", ""), ("null", None)])
def test_reasoning_budget_spent_inside_the_reasoning(length_content, expected):
    with serve("openai-reasoning", length_content=length_content) as srv:
        status, body = chat(srv, max_completion_tokens=10)
    assert status == 200
    choice = body["choices"][0]
    assert choice["message"]["content"] == expected
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 10
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 10


def test_reasoning_budget_cuts_the_answer_after_the_reasoning(reasoning_srv):
    prompt = "one two three four five six seven eight nine"
    reasoning = flavors.reasoning_tokens(prompt, 0, None, 64)
    status, body = chat(reasoning_srv, prompt, max_completion_tokens=reasoning + 3)
    assert status == 200
    assert body["choices"][0]["message"]["content"] == " ".join(expected_text(prompt).split()[:3])
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == reasoning + 3


def test_n_choices_differ_and_usage_counts_the_prompt_once(reasoning_srv):
    prompt = "name a colour"
    status, body = chat(reasoning_srv, prompt, n=3)
    assert status == 200
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) == 3
    assert all(c["finish_reason"] == "stop" for c in choices)
    reasoning = sum(flavors.reasoning_tokens(prompt, i, None, 64) for i in range(3))
    answers = sum(count_tokens(c["message"]["content"]) for c in choices)
    assert body["usage"]["prompt_tokens"] == 3
    assert body["usage"]["completion_tokens"] == reasoning + answers
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == reasoning
    # deterministic per (prompt, choice index)
    assert chat(reasoning_srv, prompt, n=3)[1]["choices"] == choices


# --------------------------------------------------------------------------- prompt caching (§1.3, §4.1)


@pytest.mark.parametrize("flavor", ["openai", "openai-reasoning"])
def test_repeated_long_prompt_reports_cached_tokens_in_steps_of_128(flavor):
    long_prompt = words(300)
    with serve(flavor, prompt_cache_min_tokens=128) as srv:
        first = chat(srv, long_prompt)[1]["usage"]
        second = chat(srv, long_prompt)[1]["usage"]
        longer = chat(srv, long_prompt + " " + words(100, "x"))[1]["usage"]
        short = [chat(srv, "a short prompt")[1]["usage"] for _ in range(2)]
        other_model = chat(srv, long_prompt, model="gpt-4o")[1]["usage"]
    assert first["prompt_tokens"] == 300
    assert first.get("prompt_tokens_details", {"cached_tokens": 0})["cached_tokens"] == 0
    assert second["prompt_tokens_details"]["cached_tokens"] == 256
    assert longer["prompt_tokens"] == 400 and longer["prompt_tokens_details"]["cached_tokens"] == 256
    assert short[1].get("prompt_tokens_details", {"cached_tokens": 0})["cached_tokens"] == 0
    assert other_model.get("prompt_tokens_details", {"cached_tokens": 0})["cached_tokens"] == 0


def test_default_minimum_caches_nothing_below_1024_tokens():
    with serve("openai") as srv:
        usages = [chat(srv, words(1000))[1]["usage"] for _ in range(2)]
        big = [chat(srv, words(1100))[1]["usage"] for _ in range(2)]
    assert "prompt_tokens_details" not in usages[1]
    assert big[1]["prompt_tokens_details"]["cached_tokens"] == 1024


# --------------------------------------------------------------------------- deepseek (§4.1)


def test_deepseek_shapes():
    prompt = words(200)
    with serve("deepseek", prompt_cache_min_tokens=128) as srv:
        status, body = chat(srv, prompt, model="deepseek-reasoner", temperature=0.3, top_p=0.5,
                            presence_penalty=1, frequency_penalty=1)
        second = chat(srv, prompt, model="deepseek-reasoner")[1]
        logprobs = chat(srv, model="deepseek-reasoner", logprobs=True)
        n2 = chat(srv, model="deepseek-reasoner", n=2)
    assert status == 200
    message = body["choices"][0]["message"]
    reasoning = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert message["content"] == expected_text(prompt, temperature=0.3)
    assert len(message["reasoning_content"].split()) == reasoning > 0
    assert body["usage"]["prompt_cache_hit_tokens"] == 0 and body["usage"]["prompt_cache_miss_tokens"] == 200
    u = second["usage"]
    assert (u["prompt_cache_hit_tokens"], u["prompt_cache_miss_tokens"]) == (128, 72)
    assert u["prompt_cache_hit_tokens"] + u["prompt_cache_miss_tokens"] == u["prompt_tokens"]
    assert logprobs[0] == 400 and logprobs[1]["error"]["param"] == "logprobs"
    assert n2[0] == 400 and n2[1]["error"]["param"] == "n"


# --------------------------------------------------------------------------- vLLM (§4.2)


def test_vllm_reasoning_field_and_cut_off_in_reasoning():
    with serve("vllm") as srv:
        status, body = chat(srv, model="Qwen/Qwen3-8B")
        _, cut = chat(srv, model="Qwen/Qwen3-8B", max_tokens=4)
        n3 = chat(srv, model="Qwen/Qwen3-8B", n=3)[1]
        bad = chat(srv, n=0)
    assert status == 200
    msg = body["choices"][0]["message"]
    assert msg["reasoning"].startswith("think ") and "reasoning_content" not in msg
    assert msg["content"] == expected_text("what is two plus two")
    assert "completion_tokens_details" not in body["usage"]
    assert body["usage"]["completion_tokens"] == len(msg["reasoning"].split()) + count_tokens(msg["content"])
    assert cut["choices"][0]["message"]["content"] is None
    assert cut["choices"][0]["finish_reason"] == "length"
    assert len(cut["choices"][0]["message"]["reasoning"].split()) == 4 == cut["usage"]["completion_tokens"]
    assert len(n3["choices"]) == 3
    assert bad[0] == 400
    assert set(bad[1]) == {"error"}
    assert bad[1]["error"]["type"] == "BadRequestError" and bad[1]["error"]["code"] == 400
    assert bad[1]["error"]["param"] is None


def test_vllm_old_uses_reasoning_content_and_the_flat_error():
    with serve("vllm-old") as srv:
        body = chat(srv)[1]
        bad = chat(srv, n=0)
    assert "reasoning_content" in body["choices"][0]["message"]
    assert "reasoning" not in body["choices"][0]["message"]
    assert bad[0] == 400
    assert set(bad[1]) == {"object", "message", "type", "param", "code"}
    assert bad[1]["object"] == "error" and bad[1]["type"] == "BadRequestError" and bad[1]["code"] == 400


# --------------------------------------------------------------------------- OpenRouter (§4.3)


def test_openrouter_reasoning_and_details():
    with serve("openrouter") as srv:
        body = chat(srv, model="deepseek/deepseek-r1")[1]
    msg = body["choices"][0]["message"]
    assert msg["reasoning_details"][0]["type"] == "reasoning.text"
    assert msg["reasoning_details"][0]["text"] == msg["reasoning"]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == len(msg["reasoning"].split())


# --------------------------------------------------------------------------- raw <think> (§4.4)


def test_think_inline_tags():
    prompts = [f"question number {i}" for i in range(12)]
    with serve("think-inline") as srv:
        contents = {p: chat(srv, p)[1]["choices"][0]["message"]["content"] for p in prompts}
        cut = chat(srv, prompts[0], max_tokens=3)[1]["choices"][0]
    full = [c for c in contents.values() if c.startswith("<think>\n")]
    closing_only = [c for c in contents.values() if not c.startswith("<think>")]
    assert full and closing_only  # both forms occur, picked by prompt hash
    for p, content in contents.items():
        trace, answer = content.split("\n</think>\n\n")
        assert answer == expected_text(p)
        assert trace.removeprefix("<think>\n").startswith("think ")
        assert flavors.closing_tag_only(p, 0.5) == (not content.startswith("<think>"))
    assert cut["finish_reason"] == "length"
    assert cut["message"]["content"].startswith("<think>\n") and "</think>" not in cut["message"]["content"]
    with serve("think-inline", think_closing_only_share=0.0) as srv:
        assert all(chat(srv, p)[1]["choices"][0]["message"]["content"].startswith("<think>\n") for p in prompts)


# --------------------------------------------------------------------------- truncate fault


def test_truncate_rate_cuts_plain_and_reasoning_answers():
    prompt = "one two three four five six seven eight nine ten"
    with serve("openai", truncate_rate=1.0) as srv:
        body = chat(srv, prompt)[1]
        outcomes = srv.stats()["by_outcome"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == " ".join(expected_text(prompt).split()[:5])
    assert outcomes["truncated"] == 1 and outcomes["ok"] == 0
    with serve("openai-reasoning", truncate_rate=1.0) as srv:
        body = chat(srv, prompt)[1]
    assert body["choices"][0]["message"]["content"] == ""
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == body["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


# --------------------------------------------------------------------------- Anthropic (§3, §6.2, §6.5)

ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


def messages(srv: TestServer, headers=ANTHROPIC_HEADERS, **body):
    payload = {"model": "claude-x", "max_tokens": 4096, "messages": [{"role": "user", "content": "Hello, Claude"}],
               **body}
    r = httpx.post(srv.base_url + "/v1/messages", json=payload, headers=headers, timeout=10)
    return r.status_code, r.headers, r.json()


@pytest.fixture(scope="module")
def claude():
    with serve("anthropic", api_key="sk-ant-test", prompt_cache_min_tokens=0) as srv:
        yield srv


def test_anthropic_auth_and_version_headers(claude):
    status, headers, body = messages(claude, headers={"anthropic-version": "2023-06-01", "x-api-key": "wrong"})
    assert status == 401
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["request_id"].startswith("req_") and headers["request-id"] == body["request_id"]
    status, _, body = messages(claude, headers={"x-api-key": "sk-ant-test"})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in body["error"]["message"]
    r = httpx.get(claude.base_url + "/v1/models", headers=ANTHROPIC_HEADERS)
    assert r.status_code == 200 and r.json()["data"][0]["type"] == "model" and r.json()["has_more"] is False


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1000}}, anthropic_api.BUDGET_MIN_MESSAGE),
        ({"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000}}, anthropic_api.MAX_TOKENS_MESSAGE),
        ({"temperature": 0.5, "thinking": {"type": "enabled", "budget_tokens": 2000}}, anthropic_api.TEMPERATURE_MESSAGE),
        ({"max_tokens": None}, "max_tokens: Input should be greater than or equal to 1"),
    ],
)
def test_anthropic_thinking_constraints(claude, extra, message):
    status, _, body = messages(claude, **extra)
    assert status == 400
    assert body["error"] == {"type": "invalid_request_error", "message": message}
    assert body["type"] == "error" and body["request_id"].startswith("req_")


def test_anthropic_verbatim_thinking_messages():
    assert anthropic_api.MAX_TOKENS_MESSAGE.startswith("`max_tokens` must be greater than `thinking.budget_tokens`.")
    assert anthropic_api.TEMPERATURE_MESSAGE.startswith("`temperature` may only be set to 1 when thinking is enabled.")


def test_anthropic_message_with_thinking(claude):
    status, headers, body = messages(claude, system="You are terse.",
                                     thinking={"type": "enabled", "budget_tokens": 2048})
    assert status == 200
    assert headers["request-id"].startswith("req_")
    assert body["type"] == "message" and body["role"] == "assistant" and body["stop_reason"] == "end_turn"
    thinking, text = body["content"]
    assert thinking["type"] == "thinking" and thinking["signature"].startswith("Eq")
    prompt = "You are terse.\nHello, Claude"
    assert text == {"type": "text", "text": expected_text(prompt)}
    usage = body["usage"]
    spent = len(thinking["thinking"].split())
    assert usage["output_tokens_details"] == {"thinking_tokens": spent}
    assert usage["output_tokens"] == spent + count_tokens(text["text"])
    assert usage["input_tokens"] == 5
    assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
    # without thinking: only a text block
    body = messages(claude)[2]
    assert [b["type"] for b in body["content"]] == ["text"]
    assert body["usage"]["output_tokens_details"]["thinking_tokens"] == 0


def test_anthropic_max_tokens_stops(claude):
    body = messages(claude, max_tokens=2)[2]
    assert body["stop_reason"] == "max_tokens"
    assert body["content"] == [{"type": "text", "text": "answer " + expected_text("Hello, Claude").split()[1]}]
    assert body["usage"]["output_tokens"] == 2
    with serve("anthropic", truncate_rate=1.0) as srv:
        body = messages(srv, thinking={"type": "enabled", "budget_tokens": 2048})[2]
    assert body["stop_reason"] == "max_tokens"
    assert [b["type"] for b in body["content"]] == ["thinking"]
    assert body["usage"]["output_tokens"] == body["usage"]["output_tokens_details"]["thinking_tokens"] > 0


def test_anthropic_prompt_caching_with_cache_control(claude):
    system = [{"type": "text", "text": words(50), "cache_control": {"type": "ephemeral"}}]
    user = [{"role": "user", "content": [{"type": "text", "text": "question one"}]}]
    first = messages(claude, system=system, messages=user)[2]["usage"]
    second = messages(claude, system=system, messages=[{"role": "user", "content": "question two two"}])[2]["usage"]
    assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"], first["input_tokens"]) == (50, 0, 2)
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 0}
    assert (second["cache_creation_input_tokens"], second["cache_read_input_tokens"], second["input_tokens"]) == (
        0, 50, 3)


def test_anthropic_rate_limit_headers_and_429():
    with serve("anthropic", rpm_limit=60) as srv:
        ok_status, ok_headers, _ = messages(srv)
        status, headers, body = messages(srv)
    assert ok_status == 200
    assert ok_headers["anthropic-ratelimit-requests-limit"] == "60"
    assert ok_headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert RFC3339_RE.match(ok_headers["anthropic-ratelimit-requests-reset"])
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert int(headers["retry-after"]) >= 1
    with serve("anthropic", tpm_limit=100000) as srv:
        headers = messages(srv)[1]
    for family in ("tokens", "input-tokens", "output-tokens"):
        assert headers[f"anthropic-ratelimit-{family}-limit"] == "100000"
        assert RFC3339_RE.match(headers[f"anthropic-ratelimit-{family}-reset"])


def test_anthropic_529_and_500():
    with serve("anthropic", overloaded_rate=1.0) as srv:
        status, headers, body = messages(srv)
    assert status == 529
    assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert headers["x-should-retry"] == "true"
    with serve("anthropic", error_rate=1.0) as srv:
        status, _, body = messages(srv)
        billed = srv.stats()["billed"]["requests"]
    assert status == 500 and body["error"]["type"] == "api_error"
    assert billed == 0


def test_anthropic_malformed_bodies_do_not_parse_or_lack_content():
    with serve("anthropic", malformed_rate=1.0) as srv:
        raws = [httpx.post(srv.base_url + "/v1/messages", headers=ANTHROPIC_HEADERS, timeout=10,
                           json={"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]})
                for _ in range(4)]
        stats = srv.stats()
    assert all(r.status_code == 200 for r in raws)
    assert sorted(stats["malformed_by_variant"].values()) == [1, 1, 1, 1]
    assert raws[1].content == b"" and b"<html>" in raws[3].content
    assert "content" not in raws[2].json()
    assert stats["billed"]["requests"] == 0


# --------------------------------------------------------------------------- Gemini (§5)


def test_gemini_bad_key_is_a_google_style_400_and_chat_works():
    with serve("gemini", api_key="good") as srv:
        assert srv.base_url.endswith("/v1beta/openai")
        status, body = chat(srv, headers={"Authorization": "Bearer bad"}, model="gemini-2.5-flash")
        ok_status, ok = chat(srv, headers={"Authorization": "Bearer good"}, model="gemini-2.5-flash",
                             reasoning_effort="low")
        models = httpx.get(srv.base_url + "/models", headers={"Authorization": "Bearer good"})
    assert status == 400
    assert body == {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                              "status": "INVALID_ARGUMENT"}}
    assert ok_status == 200 and ok["choices"][0]["message"]["content"] == expected_text("what is two plus two")
    assert models.status_code == 200 and models.json()["object"] == "list"


# --------------------------------------------------------------------------- the billed ledger


def test_billed_ledger_matches_a_hand_computation():
    prompt = words(300)
    with serve("openai-reasoning", prompt_cache_min_tokens=128) as srv:
        u1 = chat(srv, prompt)[1]["usage"]
        u2 = chat(srv, prompt, n=2)[1]["usage"]
        u3 = chat(srv, max_completion_tokens=5)[1]["usage"]  # cut inside reasoning: still billed
        assert chat(srv, max_tokens=5)[0] == 400  # not billed
        stats = srv.stats()
        served = httpx.get(srv.url + "/_stats").json()
        srv.reset_stats()
        after_reset = srv.stats()
    usages = [u1, u2, u3]
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    assert cached == 256
    inp = sum(u["prompt_tokens"] for u in usages) - cached
    out = sum(u["completion_tokens"] for u in usages)
    reasoning = sum(u["completion_tokens_details"]["reasoning_tokens"] for u in usages)
    assert stats["billed"] == {"requests": 3, "input_tokens": inp, "cached_input_tokens": 256,
                               "cache_write_tokens": 0, "output_tokens": out, "reasoning_tokens": reasoning}
    assert stats["billed_usd"] == pytest.approx((inp * 1.0 + 256 * 0.25 + out * 4.0) / 1e6)
    assert served["billed"] == stats["billed"] and served["billed_usd"] == stats["billed_usd"]
    assert after_reset["billed"]["requests"] == 0 and after_reset["billed_usd"] == 0


def test_billed_ledger_for_anthropic_cache_writes_and_reads():
    system = [{"type": "text", "text": words(40), "cache_control": {"type": "ephemeral"}}]
    with serve("anthropic", prompt_cache_min_tokens=0) as srv:
        usages = [messages(srv, headers={"anthropic-version": "2023-06-01"}, system=system)[2]["usage"]
                  for _ in range(2)]
        stats = srv.stats()
    assert [u["cache_creation_input_tokens"] for u in usages] == [40, 0]
    assert [u["cache_read_input_tokens"] for u in usages] == [0, 40]
    out = sum(u["output_tokens"] for u in usages)
    assert stats["billed"] == {"requests": 2, "input_tokens": 4, "cached_input_tokens": 40,
                               "cache_write_tokens": 40, "output_tokens": out, "reasoning_tokens": 0}
    assert stats["billed_usd"] == pytest.approx((4 * 3.0 + 40 * 0.3 + 40 * 3.75 + out * 15.0) / 1e6)


def test_default_price_table_matches_by_longest_prefix():
    table = PriceTable.load()
    assert table.lookup("o4-mini-2025-04-16") == table.lookup("o4-mini")
    assert table.lookup("gpt-4o-mini-2024-07-18").input == 0.15  # not gpt-4o's price
    assert table.lookup("no-such-model") is None
    with TestServer(flavor="openai") as srv:  # shipped prices.json
        chat(srv, "hello there", model="gpt-4o-mini-2024-07-18")
        chat(srv, "hello there", model="unknown-model")
        stats = srv.stats()
    usage_out = stats["billed"]["output_tokens"]
    assert stats["billed"]["requests"] == 2
    assert stats["billed_unpriced_models"] == ["unknown-model"]
    assert stats["billed_usd"] == pytest.approx((2 * 0.15 + (usage_out / 2) * 0.60) / 1e6)


def test_unknown_flavor_and_cli_help():
    with pytest.raises(ValueError, match="unknown flavor"):
        TestServer(flavor="bard")
    out = run_cli("serve-test", "--help").stdout
    assert "--flavor" in out and "--prices" in out and "anthropic" in out


# --------------------------------------------------------------------------- recorded shapes

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "api_shapes" / "recorded_shapes.json").read_text())


def test_anthropic_replies_carry_every_recorded_field():
    recorded = RECORDED["anthropic_message"]
    with serve("anthropic", rpm_limit=4000, tpm_limit=480000) as srv:
        _, headers, plain = messages(srv, **recorded["request"])
        thinking = messages(srv, max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048})[2]
    assert set(recorded["response"]) <= set(plain)
    assert set(recorded["response"]["usage"]) <= set(plain["usage"])
    assert plain["content"][0].keys() == recorded["response"]["content"][0].keys()
    assert {k.lower() for k in recorded["rate_limit_headers"]} <= {k.lower() for k in headers}
    rec_blocks = RECORDED["anthropic_thinking_message"]["response"]["content"]
    assert [b.keys() for b in thinking["content"]] == [b.keys() for b in rec_blocks]


def test_openai_reply_carries_every_recorded_field():
    recorded = RECORDED["openai_chat_completion"]["response"]
    with serve("openai-reasoning") as srv:
        body = chat(srv)[1]
    assert set(recorded) - {"service_tier"} <= set(body)
    assert set(recorded["choices"][0]) == set(body["choices"][0])
    assert set(recorded["choices"][0]["message"]) <= set(body["choices"][0]["message"])
    assert set(recorded["usage"]) <= set(body["usage"])
    for key in ("prompt_tokens_details", "completion_tokens_details"):
        assert set(recorded["usage"][key]) <= set(body["usage"][key])
