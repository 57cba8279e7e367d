"""A teacher's reasoning trace in output rows, the same way in every method.

A reasoning teacher (DeepSeek-R1, o-series, Claude with thinking, Qwen3 served by vLLM) returns its
trace beside the answer: ``TeacherResult.reasoning`` (``text`` is then the answer alone).  Every row
that records a teacher's text keeps the trace in a ``reasoning`` field next to it -- present only when
the teacher returned a trace, so rows of teachers without traces are unchanged (no ``reasoning: null``).
"""

from __future__ import annotations

from typing import Any


def trace_of(result: Any) -> str | None:
    """The result's reasoning trace, or None when it has none (missing, not text, or blank)."""
    trace = getattr(result, "reasoning", None)
    return trace if isinstance(trace, str) and trace.strip() else None


def reasoning_field(result: Any, name: str = "reasoning") -> dict[str, str]:
    """``{"reasoning": trace}`` when ``result`` carries a trace, else ``{}`` (splat it into a row)."""
    trace = trace_of(result)
    return {name: trace} if trace is not None else {}


def reasoning_tokens(results: Any) -> int:
    """The reasoning tokens of some results (part of their completion tokens)."""
    total = 0
    for r in results:
        usage = getattr(r, "usage", None)
        total += int(getattr(usage, "reasoning_tokens", 0) or 0)
    return total
