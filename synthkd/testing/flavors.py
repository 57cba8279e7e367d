"""Per-family shaping for the test server: how each teacher family's API differs from OpenAI's.

Why: a distillation client must cope with every family it may be pointed at -- reasoning models
that reject ``max_tokens`` and ``temperature``, traces in ``reasoning_content`` / ``reasoning`` /
``<think>`` tags, cached-token usage fields, different error envelopes.  The server stays one
OpenAI-compatible core; this module holds the differences, each tied to a section of the offline
API reference (``api_reference.md``: §1 OpenAI reasoning, §4.1 DeepSeek, §4.2 vLLM, §4.3
OpenRouter, §4.4 raw ``<think>``, §5 Gemini).  Anthropic's own API lives in ``anthropic_api.py``.

Everything here is a pure function of the request, so answers stay deterministic: the hidden
reasoning of a choice has :func:`reasoning_tokens` words, derived from the prompt hash, the choice
index and the requested effort.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "FLAVORS",
    "REASONING_FLAVORS",
    "CACHING_FLAVORS",
    "EFFORT_SCALE",
    "OPENAI_REASONING_EFFORTS",
    "Rejection",
    "ChoicePlan",
    "check_flavor",
    "error_body",
    "validate_chat",
    "reasoning_tokens",
    "reasoning_text",
    "plan_choice",
    "message_of",
    "usage_of",
    "closing_tag_only",
]

FLAVORS = (
    "openai",
    "openai-reasoning",
    "deepseek",
    "vllm",
    "vllm-old",
    "openrouter",
    "think-inline",
    "anthropic",
    "gemini",
)
#: Flavors whose every answer costs (hidden or returned) reasoning tokens.
REASONING_FLAVORS = frozenset({"openai-reasoning", "deepseek", "vllm", "vllm-old", "openrouter", "think-inline"})
#: Flavors with automatic prompt-prefix caching reported in usage (§1.3, §4.1).
CACHING_FLAVORS = frozenset({"openai", "openai-reasoning", "deepseek"})

#: reasoning_effort -> multiplier on the configured ``reasoning_tokens`` base (medium = 1).
EFFORT_SCALE = {"none": 0.0, "minimal": 0.25, "low": 0.5, "medium": 1.0, "high": 2.0, "xhigh": 3.0, "max": 4.0}
#: What an o-series / GPT-5 model accepts (§1.6); anything else is the unsupported_value 400.
OPENAI_REASONING_EFFORTS = ("minimal", "low", "medium", "high")

# Sampling parameters an OpenAI reasoning model rejects outright (§1.5, §1.7).
_OPENAI_REASONING_UNSUPPORTED = ("top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "logit_bias")

# vLLM's error ``type`` by HTTP status (its exception class names, §4.2 / PR #22099).
_VLLM_TYPES = {400: "BadRequestError", 401: "Unauthorized", 404: "NotFoundError", 429: "TooManyRequests",
               500: "InternalServerError", 503: "ServiceUnavailableError"}


def check_flavor(name: str) -> str:
    if name not in FLAVORS:
        raise ValueError(f"unknown flavor {name!r}; known: {', '.join(FLAVORS)}")
    return name


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A request the emulated model refuses: status, and the fields of an OpenAI error."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


def error_body(flavor: str, status: int, message: str, type_: str, code: str | None = None,
               param: str | None = None) -> dict:
    """The error envelope of ``flavor`` for an HTTP ``status``.

    OpenAI / DeepSeek / OpenRouter / Gemini (beyond its bad-key 400): ``{"error": {message, type,
    param, code}}`` (§6.4).  vLLM since v0.10.1: the same envelope with vLLM's exception name as
    ``type`` and the HTTP status as ``code``; ``vllm-old``: the flat ``{"object": "error", ...}``
    (§4.2).
    """
    if flavor in ("vllm", "vllm-old"):
        inner = {"message": message, "type": _VLLM_TYPES.get(status, "BadRequestError"), "param": None,
                 "code": status}
        return {"error": inner} if flavor == "vllm" else {"object": "error", **inner}
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json_value(value: Any) -> str:
    """A request value as the error text shows it (``0.2``, ``0``, ``'none'``)."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # pragma: no cover - bodies come from JSON
        return repr(value)


def validate_chat(flavor: str, body: dict, n: int) -> Rejection | None:
    """The flavor-specific 400 for a chat request, or None when the model accepts it."""
    if flavor == "openai-reasoning":
        if body.get("max_tokens") is not None:
            return Rejection(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                             "Use 'max_completion_tokens' instead.", param="max_tokens", code="unsupported_parameter")
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return Rejection(400, f"Unsupported value: 'temperature' does not support {_json_value(temperature)} "
                             "with this model. Only the default (1) value is supported.",
                             param="temperature", code="unsupported_value")
        for name in _OPENAI_REASONING_UNSUPPORTED:
            if body.get(name) not in (None, False):
                return Rejection(400, f"Unsupported parameter: '{name}' is not supported with this model.",
                                 param=name, code="unsupported_parameter")
        effort = body.get("reasoning_effort")
        if effort is not None and effort not in OPENAI_REASONING_EFFORTS:
            return Rejection(400, f"Unsupported value: 'reasoning_effort' does not support '{_json_value(effort)}' "
                             "with this model. Supported values are: 'minimal', 'low', 'medium', and 'high'.",
                             param="reasoning_effort", code="unsupported_value")
    elif flavor == "deepseek":
        # §4.1: logprobs/top_logprobs error on deepseek-reasoner; the wording is an assumption.
        for name in ("logprobs", "top_logprobs"):
            if body.get(name) not in (None, False):
                return Rejection(400, f"Param `{name}` is not supported by this model.", param=name,
                                 code="invalid_request_error")
        # ASSUMPTION: DeepSeek's docs never mention ``n``; we answer n > 1 with a 400 on "n" so that
        # the client's fallback to n separate requests is exercised (§1.7's client rule).
        if n > 1:
            return Rejection(400, "Param `n` > 1 is not supported by this model.", param="n",
                             code="invalid_request_error")
    # The other flavors accept every parameter (an unknown reasoning_effort counts as medium).
    return None


# --------------------------------------------------------------------------------------------
# Reasoning
# --------------------------------------------------------------------------------------------


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def reasoning_tokens(prompt: str, choice_index: int, effort: str | None, base: int) -> int:
    """How many reasoning tokens this choice spends: ``base`` scaled by effort, plus 0..7 by hash."""
    scale = EFFORT_SCALE.get(effort or "medium", 1.0)
    if scale == 0 or base <= 0:
        return 0
    spread = _digest(f"{prompt}\x1freasoning\x1f{choice_index}")[0] % 8
    return max(1, round(base * scale)) + spread


def reasoning_text(prompt: str, choice_index: int, count: int) -> str:
    """A deterministic trace of exactly ``count`` words (tokens): ``think <hash> step2 step3 ...``."""
    if count <= 0:
        return ""
    words = ["think", _digest(f"{prompt}\x1ftrace\x1f{choice_index}").hex()[:12]]
    words += [f"step{k}" for k in range(2, count)]
    return " ".join(words[:count])


def own_trace(text: str) -> tuple[str | None, str]:
    """``(trace, answer)`` when a responder wrote its own R1-style ``<think>...</think>`` trace (the
    reasoning flavors then return that trace, not a made-up one), else ``(None, text)``."""
    close = text.find("</think>")
    if close < 0:
        return None, text
    trace = text[:close].strip()
    if trace.startswith("<think>"):
        trace = trace[len("<think>"):].strip()
    return trace, text[close + len("</think>"):].strip()


def trace_for(own: str | None, prompt: str, choice_index: int, spent: int) -> str:
    """The trace a choice returns: the responder's own (cut to ``spent`` words if the budget ran
    out), else the made-up one of :func:`reasoning_text`."""
    if own is None:
        return reasoning_text(prompt, choice_index, spent)
    words = own.split()
    return own if spent >= len(words) else " ".join(words[:spent])


def closing_tag_only(prompt: str, share: float) -> bool:
    """For ``think-inline``: does this prompt's answer lack the opening ``<think>`` (§4.4)?

    A ``share`` of prompts, picked by hash, as with R1-style templates that put ``<think>\\n`` into
    the prompt.
    """
    return int.from_bytes(_digest(f"{prompt}\x1fopen-tag")[:4], "big") / 2**32 < share


@dataclass(frozen=True)
class ChoicePlan:
    """One choice after the generation budget: visible answer, reasoning spent, why it stopped."""

    answer: str
    finish_reason: str
    reasoning_tokens: int
    cut_in_reasoning: bool

    @property
    def completion_tokens(self) -> int:
        return self.reasoning_tokens + len(self.answer.split())


def plan_choice(answer: str, finish: str, reasoning: int, budget: int | None, truncate: bool) -> ChoicePlan:
    """Spend the budget (reasoning first, as real models do) on ``reasoning`` tokens then the answer.

    ``budget`` (``max_completion_tokens`` / ``max_tokens``) covers reasoning plus answer (§1.2,
    §4.2).  A budget that runs out inside the reasoning gives no answer, ``finish_reason
    "length"`` and reasoning == the budget.  ``truncate`` (the ``truncate_rate`` fault) cuts the
    answer as if the limit had been hit: a reasoning choice loses its whole answer, a plain one
    keeps the first half of its words.
    """
    if truncate:
        if reasoning > 0:
            used = reasoning if budget is None else min(reasoning, budget)
            return ChoicePlan("", "length", used, True)
        words = answer.split()
        return ChoicePlan(" ".join(words[: len(words) // 2]), "length", 0, False)
    if budget is not None and reasoning > 0 and reasoning >= budget:
        return ChoicePlan("", "length", max(0, budget), True)
    room = None if budget is None else budget - reasoning
    words = answer.split()
    if room is not None and len(words) > room:
        return ChoicePlan(" ".join(words[:room]), "length", reasoning, False)
    return ChoicePlan(answer, finish, reasoning, False)


# --------------------------------------------------------------------------------------------
# Response shapes
# --------------------------------------------------------------------------------------------


def message_of(flavor: str, plan: ChoicePlan, trace: str, *, null_content: bool, closing_only: bool) -> dict:
    """The ``choices[i].message`` of ``flavor`` (§1.3, §4.1-§4.4)."""
    answer = plan.answer
    cut = plan.cut_in_reasoning
    if flavor == "openai-reasoning":
        content: str | None = (None if null_content else "") if cut else answer
        return {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if flavor == "deepseek":
        return {"role": "assistant", "content": answer, "reasoning_content": trace}
    if flavor in ("vllm", "vllm-old"):
        field = "reasoning" if flavor == "vllm" else "reasoning_content"
        return {"role": "assistant", field: trace, "content": None if cut else answer, "tool_calls": []}
    if flavor == "openrouter":
        details = [{"type": "reasoning.text", "text": trace, "signature": None, "format": "unknown", "index": 0}]
        return {"role": "assistant", "content": "" if cut else answer, "refusal": None, "reasoning": trace,
                "reasoning_details": details}
    if flavor == "think-inline":
        if cut:
            text = f"<think>\n{trace}"
        elif closing_only:
            text = f"{trace}\n</think>\n\n{answer}"
        else:
            text = f"<think>\n{trace}\n</think>\n\n{answer}"
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": answer}


def usage_of(flavor: str, prompt_tokens: int, completion_tokens: int, reasoning: int, cached: int) -> dict:
    """The ``usage`` object of ``flavor``; ``cached`` is a subset of ``prompt_tokens``."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if flavor == "openai":
        if cached:  # only then, so the default flavor's usage stays exactly as before
            usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
    elif flavor == "openai-reasoning":
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    elif flavor == "deepseek":
        usage["prompt_cache_hit_tokens"] = cached
        usage["prompt_cache_miss_tokens"] = prompt_tokens - cached
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    elif flavor == "openrouter":
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage
