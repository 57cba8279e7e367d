"""Reading what today's teachers answer, and shaping what they are sent (unit level; the loopback
server tests are in tests/test_teacher_families.py).

The bodies below follow the shapes in the API reference (OpenAI reasoning models §1.3/1.9, DeepSeek
§4.1, vLLM §4.2, OpenRouter §4.3, inline <think> §4.4, Anthropic §3.2): each test changes one thing
a provider does differently and checks the answer, the trace, the billed tokens and the final-failure
reason that come out.
"""

from __future__ import annotations

import pytest

from synthkd.errors import TeacherConfigError
from synthkd.teachers.anthropic import AnthropicTeacher, anthropic_usage
from synthkd.teachers.base import TeacherRequest, Usage
from synthkd.teachers.errors import MalformedResponse
from synthkd.teachers.factory import parse_params
from synthkd.teachers.families import FAMILIES, FamilyTable, RequestShaper
from synthkd.teachers.openai_compat import check_passthrough, one_by_one
from synthkd.teachers.pricing import Price
from synthkd.teachers.replies import TRUNCATED_IN_REASONING, parse_openai, share_usage, split_think


def _chat(message: dict, finish: str = "stop", usage: dict | None = None) -> dict:
    return {"id": "c", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage if usage is not None else {"prompt_tokens": 10, "completion_tokens": 5}}


# ---------------------------------------------------------------------------------------- traces

@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_trace_beside_the_answer_is_kept_apart(field):
    reply = parse_openai(_chat({field: "9.11 vs 9.8: compare 0.11 and 0.80", "content": "9.8 is greater."}), True)
    c = reply.choices[0]
    assert (c.text, c.reasoning, c.error) == ("9.8 is greater.", "9.11 vs 9.8: compare 0.11 and 0.80", None)


def test_reasoning_wins_over_reasoning_content_when_a_server_sends_both():
    # vLLM between the two PRs sent both (reasoning_content as a deprecated alias)
    c = parse_openai(_chat({"reasoning": "new", "reasoning_content": "old", "content": "a"}), True).choices[0]
    assert c.reasoning == "new"


@pytest.mark.parametrize("content, trace, answer", [
    ("<think>\nThe user asks ...\n</think>\n\n9.8 is greater.", "The user asks ...", "9.8 is greater."),
    ("The user asks ...\n</think>\n\n9.8 is greater.", "The user asks ...", "9.8 is greater."),  # tag in the prompt
    ("  <think>a</think>b</think>c", "a", "b</think>c"),  # the first closing tag ends the trace
    ("no trace at all", None, "no trace at all"),
])
def test_inline_think_is_split_off_the_answer(content, trace, answer):
    t, a, cut = split_think(content)
    assert (t, a, cut) == (trace, answer, False)
    c = parse_openai(_chat({"content": content}), True).choices[0]
    assert (c.reasoning, c.text) == (trace, answer)


def test_an_open_think_with_no_close_is_truncated_in_reasoning_not_an_answer():
    c = parse_openai(_chat({"content": "<think>\nstill going"}, finish="length",
                           usage={"prompt_tokens": 5, "completion_tokens": 64}), True, 64).choices[0]
    assert c.text is None and c.reasoning == "still going"
    assert c.error.startswith(TRUNCATED_IN_REASONING) and "(64 tokens)" in c.error


# ------------------------------------------------------------------ final non-answers (billed, not retried)

@pytest.mark.parametrize("content", [None, ""])
def test_length_with_no_content_is_final_with_its_reason_and_usage(content):
    usage = {"prompt_tokens": 1200, "completion_tokens": 900,
             "completion_tokens_details": {"reasoning_tokens": 900}}
    reply = parse_openai(_chat({"content": content}, finish="length", usage=usage), True, 900)
    c = reply.choices[0]
    assert c.text is None and c.error.startswith(TRUNCATED_IN_REASONING)
    assert "900 output tokens billed, 900 of them reasoning" in c.error
    assert reply.usage == Usage(1200, 900, reasoning_tokens=900)


def test_refusal_is_final_and_named():
    c = parse_openai(_chat({"content": None, "refusal": "I'm sorry, I cannot assist with that request."}), True).choices[0]
    assert c.text is None and c.error == "refusal: the model refused: I'm sorry, I cannot assist with that request."


def test_no_content_and_a_normal_finish_is_malformed_but_billed():
    with pytest.raises(MalformedResponse) as ei:
        parse_openai(_chat({"content": None}), True)
    assert ei.value.billed == Usage(10, 5)
    with pytest.raises(MalformedResponse) as ei:  # no usage: nothing to bill
        parse_openai(_chat({"content": None}, usage={}), True)
    assert ei.value.billed is None


# ------------------------------------------------------------------------------------------ usage

def test_openai_cached_and_reasoning_tokens_are_read():
    usage = {"prompt_tokens": 1200, "completion_tokens": 900, "total_tokens": 2100,
             "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 832}}
    assert parse_openai(_chat({"content": "x"}, usage=usage), True).usage == Usage(1200, 900, 1024, 0, 832)


def test_deepseek_cache_hit_tokens_are_the_cached_tokens():
    usage = {"prompt_tokens": 18, "completion_tokens": 420, "prompt_cache_hit_tokens": 12,
             "prompt_cache_miss_tokens": 6, "completion_tokens_details": {"reasoning_tokens": 380}}
    assert parse_openai(_chat({"content": "x"}, usage=usage), True).usage == Usage(18, 420, 12, 0, 380)


def test_details_may_be_null_or_absent():
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": None,
             "completion_tokens_details": None}
    assert parse_openai(_chat({"content": "x"}, usage=usage), True).usage == Usage(3, 2)


def test_anthropic_usage_counts_all_input_and_prices_cache_reads_and_writes():
    u = anthropic_usage({"input_tokens": 42, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 2000,
                         "output_tokens": 1843, "output_tokens_details": {"thinking_tokens": 1790}})
    assert u == Usage(3042, 1843, cached_tokens=2000, cache_write_tokens=1000, reasoning_tokens=1790)
    price = Price(3.0, 15.0, cached_input_per_mtok=0.30, cache_write_per_mtok=3.75)
    assert price.cost_of(u) == pytest.approx((42 * 3.0 + 2000 * 0.30 + 1000 * 3.75 + 1843 * 15.0) / 1e6, rel=1e-12)


def test_n_samples_share_one_usage_exactly():
    total = Usage(1000, 301, cached_tokens=512, reasoning_tokens=100)
    parts = share_usage(total, 4)
    assert sum(p.prompt_tokens for p in parts) == 1000 and parts[0].prompt_tokens == 1000  # billed once
    assert sum(p.completion_tokens for p in parts) == 301 and [p.completion_tokens for p in parts] == [76, 75, 75, 75]
    assert sum(p.reasoning_tokens for p in parts) == 100 and sum(p.cached_tokens for p in parts) == 512
    price = Price(1.1, 4.4, 0.55)
    assert sum(price.cost_of(p) for p in parts) == pytest.approx(price.cost_of(total), rel=1e-12)


def test_choices_come_back_in_index_order_with_their_own_finish():
    body = {"choices": [{"index": 1, "message": {"content": "b"}, "finish_reason": "length"},
                        {"index": 0, "message": {"content": "a"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    assert [(c.text, c.finish_reason) for c in parse_openai(body, True).choices] == [("a", "stop"), ("b", "length")]


# ------------------------------------------------------------------------------------ families

@pytest.mark.parametrize("model, family", [
    ("o3-mini-2025-01-31", "openai-reasoning"), ("gpt-5-mini", "openai-reasoning"), ("o1", "openai-reasoning"),
    ("gpt-5-chat-latest", "openai"), ("gpt-4o-mini", "openai"), ("deepseek-reasoner", "deepseek-reasoner"),
    ("deepseek-chat", "deepseek"), ("gemini-2.5-flash", "gemini"), ("claude-sonnet-4-5", "anthropic"),
    ("openai/o3-mini", "openai-reasoning"),  # a router's provider/model name
    ("Qwen/Qwen3-8B", "openai-compatible"), ("llama3", "openai-compatible"),
])
def test_model_family_by_longest_prefix(model, family):
    assert FamilyTable.default().lookup(model).name == family


def test_users_extend_the_family_table_and_bad_files_are_named(tmp_path, monkeypatch):
    f = tmp_path / "fam.yaml"
    f.write_text("my-r1-: deepseek-reasoner\n")
    assert FamilyTable.default(f).lookup("my-r1-32b").name == "deepseek-reasoner"
    f.write_text("my-r1-: quantum\n")
    with pytest.raises(TeacherConfigError, match=r"fam.yaml: model 'my-r1-': unknown family 'quantum'"):
        FamilyTable.default(f)
    monkeypatch.setenv("SYNTHKD_FAMILIES", str(tmp_path / "missing.json"))
    with pytest.raises(TeacherConfigError, match="missing.json: model-family file not found"):
        FamilyTable.default()


def test_reasoning_family_shape_renames_max_tokens_and_drops_what_it_rejects():
    sh = RequestShaper(FAMILIES["openai-reasoning"])
    assert sh.shape({"max_tokens": 512, "temperature": 0.0, "top_p": 0.9, "seed": 3, "reasoning_effort": "low"}) == {
        "max_completion_tokens": 512, "seed": 3, "reasoning_effort": "low"}
    plain = RequestShaper(FAMILIES["openai-compatible"])
    params = {"max_tokens": 512, "temperature": 0.0}
    assert plain.shape(params) == params


def test_the_shaper_learns_from_the_real_400_texts_once_each():
    sh = RequestShaper(FAMILIES["openai-compatible"])
    sent = {"max_tokens": 100, "temperature": 0.2}
    msg = ("Unsupported parameter: 'max_tokens' is not supported with this model. "
           "Use 'max_completion_tokens' instead. (unsupported_parameter)")
    assert sh.learn("max_tokens", msg, sent, "x") is True
    assert sh.learn("max_tokens", msg, sent, "x") is False  # already renamed: a second 400 is real
    msg = ("Unsupported value: 'temperature' does not support 0.2 with this model. Only the default (1) value is "
           "supported. (unsupported_value)")
    assert sh.learn("temperature", msg, sent, "x") is True
    assert sh.shape(sent) == {"max_completion_tokens": 100}
    # Anthropic names the parameter only in the text, in backquotes
    sh2 = RequestShaper(FAMILIES["anthropic"])
    assert sh2.learn(None, "`temperature` may only be set to 1 when thinking is enabled.", {"temperature": 0.0}, "c")
    assert "temperature" in sh2.drops
    # not a parameter synthkd may drop, or one the user passed through: the 400 stands
    sh_user = RequestShaper(FAMILIES["anthropic"], protected=frozenset({"response_format"}))
    assert not sh_user.learn("response_format", "Unsupported parameter: 'response_format'", {"response_format": {}}, "c")
    # synthkd's own response_format (structured outputs): dropped, the answers are then parsed as text
    assert sh2.learn("response_format", "Unsupported parameter: 'response_format'", {"response_format": {}}, "c")
    sh3 = RequestShaper(FAMILIES["openai-compatible"], protected=frozenset({"top_p"}))
    assert not sh3.learn("top_p", "Unsupported parameter: 'top_p'", {"top_p": 0.5}, "c")
    assert not sh3.learn("top_p", "x", {}, "c")  # a parameter that was not sent cannot be the problem


def test_n_refused_once_means_one_request_per_sample_from_then_on():
    sh = RequestShaper(FAMILIES["openai-compatible"])
    assert sh.n_samples and sh.learn("n", "n>1 is not supported", {"n": 3}, "x") and not sh.n_samples
    assert not RequestShaper(FAMILIES["deepseek-reasoner"]).n_samples


def test_samples_sent_one_by_one_get_distinct_seeds_but_keep_their_keys():
    req = TeacherRequest.user("k", "p", params={"temperature": 0.7}, samples=3)
    parts = [req.sample(i) for i in range(3)]
    assert [p.sample_index for p in parts] == [0, 1, 2] and all(p.samples == 1 for p in parts)
    sent = [one_by_one(p, i) for i, p in enumerate(parts)]
    assert [s.params.get("seed") for s in sent] == [0, 1, 2]  # as choice i of one n=3 request would sample
    seeded = TeacherRequest.user("k", "p", params={"seed": 10}, samples=2)
    assert [one_by_one(seeded.sample(i), i).params["seed"] for i in range(2)] == [10, 11]
    with pytest.raises(ValueError, match="samples must be at least 1"):
        TeacherRequest.user("k", "p", samples=0)


# ---------------------------------------------------------------------------- passthrough (--param)

def test_param_values_are_json_when_they_parse():
    assert parse_params(["reasoning_effort=high", "top_k=40", 'thinking={"type": "enabled"}', "flag=true",
                         "note=a=b"]) == {"reasoning_effort": "high", "top_k": 40, "thinking": {"type": "enabled"},
                                          "flag": True, "note": "a=b"}
    with pytest.raises(TeacherConfigError, match="expected KEY=VALUE"):
        parse_params(["oops"])
    with pytest.raises(TeacherConfigError, match="--param top_k is given twice"):
        parse_params(["top_k=1", "top_k=2"])


def test_a_param_that_collides_with_one_synthkd_sets_is_refused_naming_both():
    with pytest.raises(TeacherConfigError, match=r"--param max_tokens=5 collides with max_tokens=100 .*--max-tokens"):
        check_passthrough({"max_tokens": 5}, {"max_tokens": 100})
    with pytest.raises(TeacherConfigError, match="--param n: synthkd sets 'n' itself"):
        check_passthrough({"n": 2}, {})
    check_passthrough({"top_k": 5}, {"max_tokens": 100})  # no collision: fine


# ------------------------------------------------------------------------------------ anthropic

def _anthropic(**kw) -> AnthropicTeacher:
    return AnthropicTeacher("claude-sonnet-4-5", base_url="http://127.0.0.1:9", api_key="k", preflight=False, **kw)


def test_anthropic_body_moves_system_maps_stop_and_requires_max_tokens():
    t = _anthropic()
    req = TeacherRequest(key="k", messages=[{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Hi"}])
    url, body = t._request_body(req, {"temperature": 0.0, "stop": "\n\n", "seed": 1}, 1)
    assert url == "http://127.0.0.1:9/v1/messages"
    assert body == {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}],
                    "system": "Be brief.", "max_tokens": 4096, "temperature": 0.0, "stop_sequences": ["\n\n"]}


def test_anthropic_thinking_budget_adds_to_max_tokens_and_drops_temperature():
    t = _anthropic(thinking_budget=2048)
    _, body = t._request_body(TeacherRequest.user("k", "Q"), {**t.default_params, "max_tokens": 300,
                                                            "temperature": 0.0}, 1)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and body["max_tokens"] == 2348
    assert "temperature" not in body and "thinking_budget" not in body
    with pytest.raises(TeacherConfigError, match="at least 1024"):
        _anthropic(thinking_budget=512)
    with pytest.raises(TeacherConfigError, match="--thinking-budget"):
        _anthropic(reasoning_effort="high")


def test_anthropic_reply_keeps_thinking_as_the_trace_and_reads_stop_reasons():
    t = _anthropic()
    data = {"content": [{"type": "thinking", "thinking": "1071 = 7 x 153", "signature": "s"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "text", "text": "Yes. 1071 = 7 x 153."}],
            "stop_reason": "end_turn", "model": "claude-sonnet-4-5-20250929",
            "usage": {"input_tokens": 42, "output_tokens": 1843}}
    reply = t._parse_reply(data, True, {"max_tokens": 4096})
    c = reply.choices[0]
    assert (c.text, c.reasoning, c.finish_reason, c.error) == ("Yes. 1071 = 7 x 153.", "1071 = 7 x 153", "stop", None)
    cut = t._parse_reply({"content": [{"type": "thinking", "thinking": "long..."}], "stop_reason": "max_tokens",
                          "usage": {"input_tokens": 5, "output_tokens": 2048}}, True, {"max_tokens": 2048}).choices[0]
    assert cut.text is None and cut.error.startswith(TRUNCATED_IN_REASONING) and cut.finish_reason == "length"
    refused = t._parse_reply({"content": [], "stop_reason": "refusal", "usage": {"input_tokens": 5, "output_tokens": 0}},
                             True, {}).choices[0]
    assert refused.error.startswith("refusal:")
