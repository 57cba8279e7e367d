"""The Teacher interface: the one contract every model backend and every method shares.

A Teacher takes a stream of :class:`TeacherRequest` and yields :class:`TeacherResult` as each one
completes (not in input order).  Everything that costs money or time — concurrency, rate limits,
retries, timeouts, the request cache, cost accounting and the budget — lives behind this interface,
so generation methods and filters never sleep, retry or cache themselves.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterable, ClassVar

from synthkd.teachers.stats import TeacherStats

if TYPE_CHECKING:
    from pydantic import BaseModel

    from synthkd.teachers.batch.engine import BatchExecutor
    from synthkd.teachers.cache import RequestCache
    from synthkd.teachers.openai_compat import Journal
    from synthkd.teachers.pricing import Price


@dataclass(frozen=True)
class TeacherRequest:
    """One model call.

    ``key`` is the caller's stable id for the request (e.g. ``"<row id>#<sample>"``); results carry it
    back.  ``messages`` are OpenAI chat messages; ``prompt`` (plain text completion) may be used
    instead.  ``params`` are sampling parameters (temperature, max_tokens, top_p, stop, seed...).
    ``sample_index`` makes the k-th sample of the same prompt a distinct, reproducible cache entry.
    ``samples`` asks for that many samples of the prompt at once: the teacher yields one result per
    sample, the i-th carrying this request with ``sample_index + i`` and ``samples=1`` (so each sample
    has the same cache entry as when it is asked for alone).  An API teacher that supports the API's
    ``n`` sends one request for all of them, so the prompt is billed once, not ``samples`` times.
    ``schema`` (a pydantic model) is the answer's structure: a teacher that supports structured outputs
    sends it as a strict JSON schema (see :mod:`synthkd.teachers.structured`); others ignore it.
    """

    key: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sample_index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    samples: int = 1
    schema: type[BaseModel] | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(f"request {self.key!r}: give exactly one of 'messages' or 'prompt'")
        if self.samples < 1:
            raise ValueError(f"request {self.key!r}: samples must be at least 1")

    def sample(self, i: int) -> "TeacherRequest":
        """The ``i``-th of this request's samples, as a one-sample request (its own cache entry)."""
        return dataclasses.replace(self, sample_index=self.sample_index + i, samples=1)

    @classmethod
    def user(cls, key: str, prompt: str, *, chat: bool = True, **kw: Any) -> "TeacherRequest":
        """A rendered prompt as one user message (``chat``, /v1/chat/completions) or as plain text."""
        if chat:
            return cls(key=key, messages=[{"role": "user", "content": prompt}], **kw)
        return cls(key=key, prompt=prompt, **kw)


@dataclass
class Usage:
    """Billed tokens of one answer, the same for every provider.

    ``prompt_tokens`` is all input (Anthropic's ``input_tokens + cache_creation_input_tokens +
    cache_read_input_tokens``); ``cached_tokens`` (read from the provider's prompt cache, billed at a
    discount) and ``cache_write_tokens`` (written to it; Anthropic bills them at a premium) are parts of
    it.  ``completion_tokens`` is all output, billed as output; ``reasoning_tokens`` (the hidden or
    returned reasoning trace) is part of it.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        d = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        for name in ("cached_tokens", "cache_write_tokens", "reasoning_tokens"):
            if getattr(self, name):
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Usage":
        """The inverse of :meth:`as_dict` (a cache entry); missing fields are 0."""
        d = d or {}
        return cls(*(int(d.get(n) or 0) for n in
                     ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")))


@dataclass
class TeacherResult:
    """The outcome of one request.  ``error`` is set (and ``text`` is None) when it failed for good.

    ``reasoning`` is the model's reasoning trace when the teacher returned one (DeepSeek/vLLM
    ``reasoning_content``, OpenRouter/vLLM ``reasoning``, Anthropic ``thinking`` blocks, or an inline
    ``<think>...</think>`` split off the answer); ``text`` is then the answer alone.
    """

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
    reasoning: str | None = None
    #: the answer was asked for as JSON for ``request.schema`` (False: sent as text, parse the text)
    structured: bool = False
    #: the validated answer (a ``request.schema`` instance), set by :func:`synthkd.teachers.jobs.stream_jobs`
    parsed: Any = None
    #: why the structured answer is still invalid after the last re-ask (``text`` is the raw reply)
    structured_error: str | None = None
    #: the invalid answers re-asked before this one (paid for; counted by MethodStats)
    reasks: list["TeacherResult"] = field(default_factory=list)
    #: batch mode: the request went into a provider batch (or already is in a live one); no answer yet.
    #: :func:`synthkd.teachers.jobs.stream_jobs` drops the job (a later pass answers it from the cache)
    deferred: bool = False

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class TeacherCapabilities:
    """What a teacher can do beyond one completion per request, so a method can choose how to ask.

    * ``n_samples``: several samples of one prompt in one request (the API's ``n``);
    * ``json_schema``: output constrained to a JSON schema (structured outputs);
    * ``batch``: an offline batch job (e.g. the OpenAI Batch API) instead of live requests;
    * ``reasoning_trace``: the model's reasoning returned apart from its answer.
    """

    n_samples: bool = False
    json_schema: bool = False
    batch: bool = False
    reasoning_trace: bool = False


class Teacher(ABC):
    """Anything that turns a stream of requests into a stream of results.

    Besides :meth:`stream` and :meth:`aclose`, every teacher carries what callers read about it:
    ``model`` (its name), ``stats`` (:class:`TeacherStats`: requests, cache hits, failures, tokens,
    cost), ``budget_exhausted`` (the budget stopped new requests), ``price``/``price_known`` (cost
    accounting), ``cache`` and :meth:`cache_key` (None for a teacher without a request cache) and
    ``capabilities``.  Subclasses call ``super().__init__(model, price=...)`` first.
    """

    #: what this kind of teacher supports (see :class:`TeacherCapabilities`)
    capabilities: ClassVar[TeacherCapabilities] = TeacherCapabilities()
    #: whether a request is a real model call, worth a run ledger and a progress bar (False for a
    #: teacher that replays recorded answers: nothing is computed, nothing is billed)
    calls_model: ClassVar[bool] = True

    model: str
    stats: TeacherStats
    price: Price | None
    budget_exhausted: bool
    #: the request cache, if this teacher has one (closed by whoever built the teacher)
    cache: RequestCache | None = None
    #: where the teacher reports each request sent/failed/answered (the pipeline's ledger); teachers
    #: that send no HTTP requests ignore it
    journal: Journal | None = None
    #: how many times an invalid structured answer is re-asked (``--reask``; see :mod:`.structured`)
    reask_limit: int = 0
    #: batch mode (``--batch``): the executor that sends this teacher's requests through the provider's
    #: Batch API instead of one by one (:mod:`synthkd.teachers.batch`); None online
    batch: BatchExecutor | None = None

    def __init__(self, model: str, *, price: Price | None) -> None:
        self.model = model
        self.price = price
        self.stats = TeacherStats(model=model, price_known=price is not None)
        self.budget_exhausted = False

    @property
    def price_known(self) -> bool:
        """Whether this run's cost is known (a price for the model); else ``stats.cost_usd`` is 0."""
        return self.price is not None

    @property
    def cost_usd(self) -> float:
        """What this run paid so far (``stats.cost_usd``; cache hits cost nothing)."""
        return self.stats.cost_usd

    def cache_key(self, req: TeacherRequest) -> str | None:
        """The request's key in this teacher's request cache; None for a teacher without one."""
        return None

    @property
    def stopping(self) -> bool:
        """No further request will be answered (the budget is reached, or a fatal error stops the run)."""
        return self.budget_exhausted

    def wants_structured(self, req: TeacherRequest) -> bool:
        """Whether ``req`` is asked for as JSON for its ``schema`` (``--structured``); False for a
        teacher without structured outputs."""
        return False

    @abstractmethod
    def stream(self, requests: AsyncIterable[TeacherRequest]) -> AsyncGenerator[TeacherResult, None]:
        ...

    @abstractmethod
    async def aclose(self) -> None:
        ...


from synthkd.errors import (  # noqa: E402,F401 (their home was here)
    BudgetExceeded,
    TeacherConfigError,
    TeacherFatalError,
    TeacherStorageError,
)
