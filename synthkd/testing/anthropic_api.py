"""The Anthropic Messages API shapes for the test server's ``anthropic`` flavor (reference §3, §6.2, §6.5).

Why a separate module: Anthropic differs from OpenAI in every layer -- auth header
(``x-api-key``), a required ``anthropic-version``, request fields (``max_tokens`` required,
``system`` outside the messages, ``thinking`` budgets), response (content blocks, ``stop_reason``,
``input_tokens`` / ``output_tokens``, explicit cache accounting), error envelope and rate-limit
headers (RFC 3339 resets).  The server's core (faults, rate buckets, latency, stats) is shared;
these pure functions hold the shapes, checked against the recorded exchanges of Bespoke Curator.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "MESSAGES_ENDPOINT",
    "ANTHROPIC_MODELS_ENDPOINT",
    "error_body",
    "validate",
    "prompt_blocks",
    "openai_view",
    "thinking_budget",
    "signature_of",
    "message_body",
    "usage_body",
    "rate_headers",
    "models_body",
    "rate_limit_message",
    "MAX_TOKENS_MESSAGE",
    "BUDGET_MIN_MESSAGE",
    "TEMPERATURE_MESSAGE",
]

MESSAGES_ENDPOINT = "/v1/messages"
ANTHROPIC_MODELS_ENDPOINT = "/v1/models"

# §3.3, verbatim from observed bodies.
TEMPERATURE_MESSAGE = (
    "`temperature` may only be set to 1 when thinking is enabled. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#important-considerations-when-using-extended-thinking"
)
MAX_TOKENS_MESSAGE = (
    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
)
BUDGET_MIN_MESSAGE = "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"


def error_body(type_: str, message: str, request_id: str | None) -> dict:
    """``{"type": "error", "error": {type, message}, "request_id": ...}`` (§6.5)."""
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _blocks_ok(content: Any) -> bool:
    return isinstance(content, str) or (
        isinstance(content, list) and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in content)
    )


def validate(body: Any) -> str | None:
    """The ``invalid_request_error`` message for a bad Messages request, or None (§3.1, §3.3).

    The thinking and temperature texts are verbatim; the field-shape texts imitate Anthropic's
    pydantic-style wording (an assumption).
    """
    if not isinstance(body, dict):
        return "Request body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    max_tokens = body["max_tokens"]
    if not _is_int(max_tokens) or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required" if messages is None else "messages: at least one message is required"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not _blocks_ok(m.get("content")):
            return f"messages.{i}: Input should be a valid message with role 'user' or 'assistant' and content"
    system = body.get("system")
    if system is not None and not (
        isinstance(system, str)
        or (isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system))
    ):
        return "system: Input should be a valid string or a list of text blocks"
    if body.get("stream"):
        return "stream: streaming is not supported by the synthkd test server."
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
            return "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
        if thinking["type"] == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or isinstance(budget, bool):
                return "thinking.enabled.budget_tokens: Field required"
            if budget < 1024:
                return BUDGET_MIN_MESSAGE
            if budget >= max_tokens:
                return MAX_TOKENS_MESSAGE
    if thinking_budget(body) is not None:
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return TEMPERATURE_MESSAGE
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(
                isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("input_schema"), dict)
                for t in tools):
            return "tools: each tool needs a 'name' and an 'input_schema' object"
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
        if choice["type"] == "tool" and choice.get("name") not in {t.get("name") for t in tools or ()}:
            return f"tool_choice.name: no tool named {choice.get('name')!r} in tools"
        if choice["type"] in ("tool", "any") and thinking_budget(body) is not None:
            return FORCED_TOOL_MESSAGE
    return None


#: §3.3: thinking is incompatible with forced tool use (the wording is an assumption)
FORCED_TOOL_MESSAGE = "Thinking may not be enabled when tool_choice forces tool use."


def forced_tool(body: dict) -> dict | None:
    """The tool a request forces (``tool_choice: {type: tool, name}``), or None."""
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    for t in body.get("tools") or ():
        if t.get("name") == choice.get("name"):
            return t
    return None


def thinking_budget(body: dict) -> int | None:
    """The thinking budget, or None when thinking is off (adaptive: up to ``max_tokens - 1``)."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return None
    if thinking.get("type") == "enabled":
        return int(thinking["budget_tokens"])
    if thinking.get("type") == "adaptive":
        return max(0, int(body["max_tokens"]) - 1)
    return None


def prompt_blocks(body: dict) -> list[tuple[str, bool]]:
    """The prompt as ``(text, has cache_control)`` blocks in cache order: system, then messages."""
    out: list[tuple[str, bool]] = []

    def add(content: Any) -> None:
        if isinstance(content, str):
            out.append((content, False))
            return
        for block in content or ():
            if isinstance(block, dict):
                text = block.get("text")
                out.append((text if isinstance(text, str) else "", isinstance(block.get("cache_control"), dict)))

    system = body.get("system")
    if system is not None:
        add(system)
    for m in body.get("messages") or ():
        add(m.get("content"))
    return out


def openai_view(body: dict) -> dict:
    """The request as the server's responders know it: an OpenAI chat body (system as a message)."""
    messages: list[dict] = []
    system = body.get("system")
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.get("role"), "content": m.get("content")} for m in body["messages"])
    view = {"model": body.get("model"), "messages": messages, "max_tokens": body.get("max_tokens")}
    for key in ("temperature", "top_p", "top_k", "stop_sequences", "metadata"):
        if key in body:
            view[key] = body[key]
    tool = forced_tool(body)
    if tool is not None:  # responders see one shape of structured request, whatever the API
        view["response_format"] = {"type": "json_schema", "json_schema": {
            "name": tool["name"], "strict": True, "schema": tool["input_schema"]}}
    return view


def signature_of(thinking: str) -> str:
    """An opaque, deterministic stand-in for the thinking block's ``signature``."""
    return "Eq" + base64.b64encode(hashlib.sha256(thinking.encode("utf-8", "surrogatepass")).digest()).decode()


def usage_body(input_tokens: int, output_tokens: int, thinking_tokens: int, cache_write: int, cache_read: int) -> dict:
    """Usage per §3.2 (``output_tokens`` includes thinking; ``input_tokens`` excludes cached input)."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"thinking_tokens": thinking_tokens},
        "service_tier": "standard",
    }


def message_body(message_id: str, model: str, thinking: str | None, text: str | None, stop_reason: str,
                 usage: dict, tool_use: tuple[str, dict] | None = None) -> dict:
    """A Messages response: ``[thinking?, text?]`` content blocks (§3.2), or a ``tool_use`` block
    (``tool_use = (name, input)``) for a forced tool call."""
    content: list[dict] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": signature_of(thinking)})
    if tool_use is not None:
        content.append({"type": "tool_use", "id": "toolu_" + message_id[-16:], "name": tool_use[0],
                        "input": tool_use[1]})
    elif text is not None:
        content.append({"type": "text", "text": text})
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _rfc3339(seconds_from_now: float) -> str:
    moment = datetime.now(timezone.utc) + timedelta(seconds=max(0.0, seconds_from_now))
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_headers(requests: tuple[float, float, float] | None, tokens: tuple[float, float, float] | None) -> dict:
    """``anthropic-ratelimit-*`` headers from ``(limit, remaining, seconds to full)`` per bucket (§6.2).

    The one token bucket stands for the tokens, input-tokens and output-tokens families alike.
    """
    headers: dict[str, str] = {}
    if requests is not None:
        limit, remaining, reset = requests
        headers["anthropic-ratelimit-requests-limit"] = str(int(limit))
        headers["anthropic-ratelimit-requests-remaining"] = str(max(0, int(remaining)))
        headers["anthropic-ratelimit-requests-reset"] = _rfc3339(reset)
    if tokens is not None:
        limit, remaining, reset = tokens
        for family in ("tokens", "input-tokens", "output-tokens"):
            headers[f"anthropic-ratelimit-{family}-limit"] = str(int(limit))
            headers[f"anthropic-ratelimit-{family}-remaining"] = str(max(0, int(remaining)))
            headers[f"anthropic-ratelimit-{family}-reset"] = _rfc3339(reset)
    return headers


def rate_limit_message(blocked: str, limit: float) -> str:
    """A 429 ``rate_limit_error`` message in the shape of §6.5's observed one."""
    what = "requests" if blocked == "requests" else "input tokens"
    return (
        f"This request would exceed the rate limit for your organization of {int(limit):,} {what} per minute. "
        "For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers "
        "for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later."
    )


def models_body(names: list[str]) -> dict:
    """``GET /v1/models`` in Anthropic's shape (RFC 3339 ``created_at``, ``has_more`` paging)."""
    created = datetime.fromtimestamp(0, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = [{"type": "model", "id": n, "display_name": n, "created_at": created} for n in names]
    return {"data": data, "has_more": False, "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None}

