"""The Teacher interface: the one contract every model backend and every method shares.

A Teacher takes a stream of :class:`TeacherRequest` and yields :class:`TeacherResult` as each one
completes (not in input order).  Everything that costs money or time — concurrency, rate limits,
retries, timeouts, the request cache, cost accounting and the budget — lives behind this interface,
so generation methods and filters never sleep, retry or cache themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterable, AsyncIterator, Protocol, runtime_checkable


@dataclass(frozen=True)
class TeacherRequest:
    """One model call.

    ``key`` is the caller's stable id for the request (e.g. ``"<row id>#<sample>"``); results carry it
    back.  ``messages`` are OpenAI chat messages; ``prompt`` (plain text completion) may be used
    instead.  ``params`` are sampling parameters (temperature, max_tokens, top_p, stop, seed...).
    ``sample_index`` makes the k-th sample of the same prompt a distinct, reproducible cache entry.
    """

    key: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sample_index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(f"request {self.key!r}: give exactly one of 'messages' or 'prompt'")

    @classmethod
    def user(cls, key: str, prompt: str, *, chat: bool = True, **kw: Any) -> "TeacherRequest":
        """A rendered prompt as one user message (``chat``, /v1/chat/completions) or as plain text."""
        if chat:
            return cls(key=key, messages=[{"role": "user", "content": prompt}], **kw)
        return cls(key=key, prompt=prompt, **kw)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class TeacherResult:
    """The outcome of one request.  ``error`` is set (and ``text`` is None) when it failed for good."""

    request: TeacherRequest
    text: str | None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = 0.0  # None: no price known for the model
    cached: bool = False
    model: str | None = None
    attempts: int = 0
    latency_s: float = 0.0
    error: str | None = None

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Teacher(Protocol):
    """Anything that turns a stream of requests into a stream of results."""

    model: str

    def stream(self, requests: AsyncIterable[TeacherRequest]) -> AsyncIterator[TeacherResult]:
        ...

    async def aclose(self) -> None:
        ...


from synthkd.errors import (  # noqa: E402,F401 (their home was here)
    BudgetExceeded, TeacherConfigError, TeacherFatalError, TeacherStorageError,
)
