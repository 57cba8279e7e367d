"""Reading an OpenAI-shaped chat/completions reply: answers, reasoning traces, and what was billed.

Why its own module: the servers that speak this API disagree on where the reasoning trace goes
(DeepSeek and older vLLM ``reasoning_content``, OpenRouter and newer vLLM ``reasoning``, inline
``<think>...</think>`` when no reasoning parser runs), on how cached prompt tokens are reported
(OpenAI ``prompt_tokens_details.cached_tokens``, DeepSeek ``prompt_cache_hit_tokens``), and on what a
reasoning model that ran out of tokens returns (``content`` null or ``""`` with ``finish_reason:
length``).  One reader, liberal in what it accepts (``../shared/api_reference.md`` §1, §4), turns all of
them into :class:`Reply`.

Two outcomes are final although no answer came (billed, cached, rejected with the reason, never
retried): the output limit spent inside the reasoning (``truncated_in_reasoning``) and a refusal.
A body with no readable answer but a readable ``usage`` is still billed: :class:`MalformedResponse`
carries that usage so the attempt is costed before it is retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synthkd.teachers.base import Usage
from synthkd.teachers.errors import MalformedResponse

TRUNCATED_IN_REASONING = "truncated_in_reasoning"
REFUSAL = "refusal"


@dataclass
class Choice:
    """One sample of a reply.  ``error`` is set for a final non-answer (then ``text`` is None)."""

    text: str | None
    reasoning: str | None = None
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class Reply:
    choices: list[Choice]
    usage: Usage
    model: str | None = None


def _int(v: Any) -> int:
    return int(v or 0)


def openai_usage(u: Any) -> Usage:
    """``usage`` of an OpenAI-compatible reply; every detail optional (vLLM sends none)."""
    if u is None:
        u = {}
    if not isinstance(u, dict):
        raise MalformedResponse("usage is not an object")
    try:
        pd = u.get("prompt_tokens_details") or {}
        cd = u.get("completion_tokens_details") or {}
        cached = _int(pd.get("cached_tokens") if isinstance(pd, dict) else 0) or _int(u.get("prompt_cache_hit_tokens"))
        return Usage(
            prompt_tokens=_int(u.get("prompt_tokens")),
            completion_tokens=_int(u.get("completion_tokens")),
            cached_tokens=cached,
            cache_write_tokens=_int(pd.get("cache_write_tokens") if isinstance(pd, dict) else 0),
            reasoning_tokens=_int(cd.get("reasoning_tokens") if isinstance(cd, dict) else 0),
        )
    except (TypeError, ValueError, AttributeError):
        raise MalformedResponse("usage is not numeric") from None


def split_think(content: str) -> tuple[str | None, str, bool]:
    """``(trace, answer, truncated)`` of a content that may carry an inline ``<think>`` trace.

    R1-style templates put ``<think>`` in the prompt, so the output often has only the closing tag.
    ``truncated``: an opening tag and no closing one (the limit was reached inside the reasoning).
    """
    close = content.find("</think>")
    if close >= 0:
        trace = content[:close]
        stripped = trace.lstrip()
        if stripped.startswith("<think>"):
            trace = stripped[len("<think>"):]
        return trace.strip(), content[close + len("</think>"):].strip(), False
    stripped = content.lstrip()
    if stripped.startswith("<think>"):
        return stripped[len("<think>"):].strip(), "", True
    return None, content, False


def truncated_message(limit: Any, usage: Usage) -> str:
    shown = f" ({limit} tokens)" if limit else ""
    spent = f", {usage.reasoning_tokens} of them reasoning" if usage.reasoning_tokens else ""
    return (f"{TRUNCATED_IN_REASONING}: the output limit{shown} was reached before any answer "
            f"({usage.completion_tokens} output tokens billed{spent}); raise --reasoning-budget (or --max-tokens), "
            f"or lower the reasoning effort")


def _choice(c: Any, chat: bool, usage: Usage, limit: Any) -> Choice:
    if not isinstance(c, dict):
        raise MalformedResponse("body has no 'choices'")
    finish = c.get("finish_reason")
    reasoning: str | None = None
    refusal = None
    if chat:
        msg = c.get("message")
        if not isinstance(msg, dict):
            msg = {}
        text = msg.get("content")
        for name in ("reasoning", "reasoning_content"):  # OpenRouter / new vLLM, then DeepSeek / old vLLM
            r = msg.get(name)
            if isinstance(r, str) and r:
                reasoning = r
                break
        refusal = msg.get("refusal")
    else:
        text = c.get("text")
    if text is not None and not isinstance(text, str):
        raise MalformedResponse("choice text is not a string")
    if isinstance(text, str) and reasoning is None and ("</think>" in text or text.lstrip().startswith("<think>")):
        trace, answer, cut = split_think(text)
        reasoning = trace
        if cut:
            return Choice(None, reasoning, finish or "length", truncated_message(limit, usage))
        text = answer
    if isinstance(refusal, str) and refusal and not text:
        return Choice(None, reasoning, finish, f"{REFUSAL}: the model refused: {refusal[:300]}")
    if not text:
        if finish == "length":  # the whole budget went to reasoning: billed, and a rerun would do the same
            return Choice(None, reasoning, finish, truncated_message(limit, usage))
        if finish == "content_filter":
            return Choice("", reasoning, finish)
        if text is None:
            raise MalformedResponse("choice has no text", billed=usage)
    return Choice(text, reasoning, finish)


def parse_openai(data: Any, chat: bool, limit: Any = None) -> Reply:
    """The :class:`Reply` in a decoded chat/completions body; raises :class:`MalformedResponse`."""
    if not isinstance(data, dict):
        raise MalformedResponse("body is not a JSON object")
    usage = openai_usage(data.get("usage"))
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("body has no 'choices'", billed=usage if usage.total_tokens else None)
    try:
        ordered = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
    except TypeError:
        ordered = choices
    try:
        parsed = [_choice(c, chat, usage, limit) for c in ordered]
    except MalformedResponse as exc:
        raise MalformedResponse(str(exc), billed=usage if usage.total_tokens else None) from None
    return Reply(parsed, usage, data.get("model"))


def share_usage(usage: Usage, n: int) -> list[Usage]:
    """Split one request's usage over its ``n`` samples so the parts add up to the whole exactly: the
    prompt (billed once) goes to the first sample, output tokens are shared evenly (the remainder to
    the first)."""
    if n == 1:
        return [usage]
    out = []
    for i in range(n):
        first = i == 0
        out.append(Usage(
            prompt_tokens=usage.prompt_tokens if first else 0,
            completion_tokens=usage.completion_tokens // n + (usage.completion_tokens % n if first else 0),
            cached_tokens=usage.cached_tokens if first else 0,
            cache_write_tokens=usage.cache_write_tokens if first else 0,
            reasoning_tokens=usage.reasoning_tokens // n + (usage.reasoning_tokens % n if first else 0),
        ))
    return out
