"""Structured outputs (issue 14 point 1): the test server's ``response_format: json_schema`` and
Anthropic forced tool calls, the engine that sends them (and falls back once to text on a 400), the
shared validate-and-re-ask helper, and every method that parses teacher text, end to end against a
real loopback server."""

from __future__ import annotations

import json

import httpx
import pytest

from synthkd.testing.server import FaultConfig, TestServer

SCHEMA = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}},
          "required": ["items"], "additionalProperties": False}
RF = {"type": "json_schema", "json_schema": {"name": "items_list", "strict": True, "schema": SCHEMA}}


ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def chat(srv: TestServer, body: dict) -> tuple[int, dict]:
    r = httpx.post(srv.base_url + "/chat/completions", json=body, timeout=10)
    return r.status_code, r.json()


def list_responder(endpoint: str, body: dict) -> str:
    return "1. first item here\n2. second item here"


# --------------------------------------------------------------------------- the server


def test_server_answers_a_json_schema_request_with_json_for_the_schema():
    with TestServer(responder=list_responder) as srv:
        status, data = chat(srv, {"model": "m", "messages": [{"role": "user", "content": "list"}],
                                  "response_format": RF})
    assert status == 200
    assert json.loads(data["choices"][0]["message"]["content"]) == {"items": ["first item here", "second item here"]}


def test_server_passes_a_responder_json_answer_through():
    with TestServer(responder=lambda e, b: {"json": {"items": ["a b c"]}}) as srv:
        _, data = chat(srv, {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": RF})
        _, plain = chat(srv, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert json.loads(data["choices"][0]["message"]["content"]) == {"items": ["a b c"]}
    assert json.loads(plain["choices"][0]["message"]["content"]) == {"items": ["a b c"]}


def test_server_corrupts_the_configured_share_of_structured_replies():
    with TestServer(FaultConfig(invalid_json_rate=0.3, seed=3), responder=list_responder) as srv:
        bad = 0
        for _ in range(200):
            _, data = chat(srv, {"model": "m", "messages": [{"role": "user", "content": "l"}], "response_format": RF})
            try:
                ok = json.loads(data["choices"][0]["message"]["content"]) == {
                    "items": ["first item here", "second item here"]}
            except ValueError:
                ok = False
            bad += not ok
        assert srv.stats()["by_outcome"]["invalid_json"] == bad
    assert 40 <= bad <= 80


@pytest.mark.parametrize("flavor,config", [("openai", {"json_schema_supported": False}), ("deepseek", {}),
                                           ("vllm-old", {})])
def test_server_without_json_schema_answers_400_naming_response_format(flavor, config):
    with TestServer(FaultConfig(**config), flavor=flavor, responder=list_responder) as srv:
        status, data = chat(srv, {"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
                                  "response_format": RF})
    assert status == 400
    assert "response_format" in json.dumps(data)


def test_server_refuses_a_schema_that_is_not_strict():
    loose = {**SCHEMA, "additionalProperties": True}
    with TestServer(responder=list_responder) as srv:
        status, data = chat(srv, {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {
            "type": "json_schema", "json_schema": {"name": "bad name!", "strict": True, "schema": SCHEMA}}})
        assert status == 400 and "name" in data["error"]["message"]
        status, data = chat(srv, {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {
            "type": "json_schema", "json_schema": {"name": "ok", "strict": True, "schema": loose}}})
        assert status == 400 and "additionalProperties" in data["error"]["message"]


def test_anthropic_flavor_answers_a_forced_tool_call_with_a_tool_use_block():
    body = {"model": "claude-x", "max_tokens": 200, "messages": [{"role": "user", "content": "list"}],
            "tools": [{"name": "items_list", "description": "the answer", "input_schema": SCHEMA}],
            "tool_choice": {"type": "tool", "name": "items_list"}}
    with TestServer(flavor="anthropic", responder=list_responder) as srv:
        r = httpx.post(srv.url + "/v1/messages", json=body, headers=ANTHROPIC_HEADERS, timeout=10)
        thinking = httpx.post(srv.url + "/v1/messages", headers=ANTHROPIC_HEADERS, timeout=10, json={
            **body, "max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    data = r.json()
    assert r.status_code == 200 and data["stop_reason"] == "tool_use"
    block = data["content"][-1]
    assert block["type"] == "tool_use" and block["name"] == "items_list"
    assert block["input"] == {"items": ["first item here", "second item here"]}
    assert thinking.status_code == 400 and "tool" in thinking.json()["error"]["message"]
