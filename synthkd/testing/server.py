"""A real OpenAI-compatible HTTP server for tests, benchmarks and the command line.

Why a real server and not mocks: the code under test (teacher clients) is mostly about HTTP
behaviour -- connection pooling, concurrency, 429 handling with ``retry-after`` headers, timeouts
on hung requests, recovering from garbage bodies.  Mocking the HTTP layer would test our mocks, so
this module runs an actual ``aiohttp.web`` server on 127.0.0.1 that speaks the OpenAI wire format
and can misbehave on purpose (see :class:`FaultConfig`).

Pieces:

* :class:`FaultConfig` -- latency, rate limits, error / hang / malformed-body rates, API key.
* :class:`TestServer` -- runs the app in a background thread with its own event loop, so both
  synchronous pytest tests and asyncio client code in the main thread can talk to it.
* :func:`default_responder` / :func:`expected_text` / :func:`count_tokens` -- answers are a
  deterministic function of the prompt, so tests can check that every result landed on the right
  request (no mix-ups under concurrency, correct cache keys, reproducible sampling by seed).
* :func:`main` -- ``python -m synthkd.testing.server ...`` runs it in the foreground (its own
  process, so benchmarks measure the client's CPU and not the server's) and prints
  ``READY <base_url>``.

Control endpoints (not counted in the stats): ``GET /_stats``, ``POST /_reset``,
``POST /_config`` (JSON object of :class:`FaultConfig` fields).

Flavors (``TestServer(flavor=...)``, ``--flavor``): which teacher family the server emulates, per
the offline API reference (section in brackets); the shaping lives in :mod:`.flavors` and
:mod:`.anthropic_api`.

* ``openai`` (default): today's OpenAI chat/completions, plus ``prompt_tokens_details.cached_tokens``
  when a long prompt prefix repeats [§1.3].
* ``openai-reasoning``: an o-series / GPT-5 model -- ``max_tokens``, ``temperature`` != 1, ``top_p``,
  penalties, logprobs, ``logit_bias`` and unknown ``reasoning_effort`` values get the verbatim 400s;
  hidden reasoning tokens in ``completion_tokens_details``; a budget spent in reasoning answers
  ``content ""`` (or null) with ``finish_reason "length"`` [§1.3-§1.7].
* ``deepseek``: ``reasoning_content``, ``prompt_cache_hit/miss_tokens``; logprobs and ``n > 1``
  rejected (the latter an assumption) [§4.1].
* ``vllm`` / ``vllm-old``: ``reasoning`` / ``reasoning_content``, no usage details, ``content null``
  when cut off in reasoning, the new / old vLLM error envelope [§4.2].
* ``openrouter``: ``reasoning`` plus ``reasoning_details`` [§4.3].
* ``think-inline``: the trace inside ``content`` between ``<think>`` tags, or with only the closing
  tag for a share of prompts [§4.4].
* ``anthropic``: the Messages API at ``/v1/messages`` (``x-api-key``, ``anthropic-version``,
  thinking blocks, ``cache_control`` caching, ``anthropic-ratelimit-*`` headers, 529) [§3, §6.2, §6.5].
* ``gemini``: the OpenAI-compatible endpoint under ``/v1beta/openai``; a bad key is a Google-style
  400 [§5].

Every flavor keeps a provider's bill of what it answered (``stats()["billed"]``, ``billed_usd``),
priced from ``prices=`` / ``--prices`` (default synthkd/data/prices.json): see :mod:`.billing`.

Batch APIs (reference §2, §3.4; shapes, timeline and faults in :mod:`.batch_api`):

* ``openai`` / ``openai-reasoning``: ``POST /v1/files`` (multipart ``purpose``, ``file``),
  ``GET /v1/files`` (``purpose``, ``after``, ``limit``, ``order``), ``GET`` / ``DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
  ``GET /v1/batches`` (``after``, ``limit``), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.
* ``anthropic``: ``POST`` / ``GET /v1/messages/batches`` (``after_id``, ``before_id``, ``limit``),
  ``GET`` / ``DELETE /v1/messages/batches/{id}``, ``GET .../{id}/results``, ``POST .../{id}/cancel``.

Items are answered by the online logic (:meth:`TestServer._batch_openai_item`,
:meth:`TestServer._batch_anthropic_item`: same body, same message and usage; no faults or rate limits,
batch work being a separate pool) and billed at 50% (``billed_batch``, ``billed_batch_usd``).  The
``batch_*`` fields of :class:`FaultConfig` (``--batch-seconds``, ``--batch-failed-rate``,
``--batch-expire-after-share``, ``--batch-max-requests``, ``--batch-max-bytes``,
``--batch-error-rate``, ``--batch-lost-reply-rate``) set the accelerated clock, the failed share,
expiry with partial results, the limits and 500s on the batch endpoints (before or after the effect).  ``stats()["batch"]`` counts
files, batches, requests submitted, cancels and submissions per ``custom_id``
(``submitted_by_custom_id``, ``resubmitted_ids``).  Batch endpoints count in ``requests_total`` and
``by_endpoint`` under their route template (``/v1/batches/{batch_id}``), with outcome ``ok``,
``unauthorized`` or ``bad_request``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import math
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Awaitable, Callable, Union

import orjson
from aiohttp import web

from synthkd.testing import anthropic_api, flavors, structured
from synthkd.testing.batch_api import BatchEmulator
from synthkd.testing.billing import Ledger, PriceTable
from synthkd.testing.prompt_cache import AutoPrefixCache, BlockCache
from synthkd.testing.sampling import sample_seed

__all__ = [
    "FaultConfig",
    "TestServer",
    "default_responder",
    "expected_text",
    "count_tokens",
    "prompt_text_of",
    "prompt_hash",
    "main",
    "CHAT_ENDPOINT",
    "COMPLETIONS_ENDPOINT",
    "MODELS_ENDPOINT",
]

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"
MODELS_ENDPOINT = "/v1/models"
GEMINI_PREFIX = "/v1beta/openai"
DEFAULT_MODEL = "test-model"

#: Outcomes counted in ``stats()["by_outcome"]``.  Every ``/v1/*`` request gets exactly one, decided
#: when the request is admitted (a request that later dies on a client timeout keeps its outcome).
OUTCOMES = (
    "ok",
    "rate_limited",
    "error_500",
    "hang",
    "malformed",
    "unauthorized",
    "bad_request",
    "responder_error",
    "invalid_json",
    "quota_exhausted",
    "truncated",
    "overloaded",
)

#: The malformed-body variants, served in this order (cycling) whenever a malformed fault fires.
MALFORMED_VARIANTS = ("truncated_json", "empty_body", "missing_choices", "html_page")

# Distinct prompt hashes tracked in the stats; beyond this a long-running server stops adding new
# ones (and says so) instead of growing without bound.
_MAX_TRACKED_PROMPTS = 200_000

Responder = Callable[[str, dict], Union[str, dict, Awaitable[Union[str, dict]]]]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class FaultConfig:
    """What the server does wrong, and how slowly.

    Per request the server decides, in this order: auth (401 when ``api_key`` is set and the
    ``Authorization: Bearer`` header differs) -> rate limit (429, RPM then TPM) -> hang -> 500 ->
    malformed body -> normal answer.  Hang / 500 / malformed use one draw from
    ``random.Random(seed)`` against cumulative thresholds, so each rate is the exact fraction of
    *admitted* requests (as long as the three rates sum to <= 1), and the sequence of decisions is
    reproducible for a given seed regardless of request interleaving.

    * ``latency_ms`` +- uniform ``latency_jitter_ms``: slept before normal and 500 responses.
    * ``rpm_limit`` / ``tpm_limit``: token buckets, refilled continuously at limit/60 per second
      with a burst capacity of one second's worth (at least 1).
    * ``hang_seconds``: how long a hung request sleeps before answering normally; it ends early
      when the client disconnects (handler cancellation) or when the server stops.
    * ``echo_key``: error bodies repeat the key the client presented, as OpenAI's 401 does ("Incorrect
      API key provided: sk-..."), and so do the 400 and 500 bodies; a malformed 200 becomes a non-JSON
      body with the ``Authorization`` header inside.  For testing that a client scrubs keys everywhere.
    * ``quota_after``: once this many requests were answered ``ok``, every generation request gets
      OpenAI's ``429 insufficient_quota`` (checked after auth, before the rate limits).
    * ``truncate_rate``: answers cut as if the length limit was hit (``finish_reason "length"``;
      reasoning flavors spend it all on reasoning and return no answer).  Billed like any 200.
    * ``overloaded_rate``: Anthropic's ``529 overloaded_error`` with ``x-should-retry: true``; an
      OpenAI-shaped flavor answers ``503`` "That model is currently overloaded ...".
    * ``reasoning_tokens``: the medium-effort base of the hidden reasoning of reasoning flavors
      (scaled by ``reasoning_effort``, plus 0..7 by prompt hash; see ``flavors.reasoning_tokens``).
    * ``prompt_cache_min_tokens``: the shortest prompt that prefix caching reports (OpenAI: 1024).
    * ``length_content``: ``"empty"`` or ``"null"`` -- the ``content`` of an ``openai-reasoning``
      answer whose budget ran out inside the reasoning.
    * ``think_closing_only_share``: for ``think-inline``, the share of prompts (by hash) answered
      with only the closing ``</think>`` tag.
    * ``json_schema_supported``: whether a request with ``response_format: json_schema`` (or an
      Anthropic forced tool call) is answered; False: a 400 naming ``response_format`` (a server
      without structured outputs; flavors whose provider lacks them answer that 400 anyway).
    * ``invalid_json_rate``: the share of structured replies corrupted (cut JSON, or JSON of another
      shape), from a draw of its own (see :mod:`synthkd.testing.structured`).

    * ``batch_seconds``: how long a batch of the Batch APIs takes from creation to its end (the
      accelerated clock; see :mod:`synthkd.testing.batch_api` for the timeline).
    * ``batch_failed_rate``: the share of each batch's items that fail (OpenAI: a 500 line in the error
      file; Anthropic: ``errored``), picked deterministically from the seed and custom_id.
    * ``batch_expire_after_share``: the batch expires once this share of its items is done, keeping
      their results (None: batches never expire).
    * ``batch_max_requests`` / ``batch_max_bytes``: lower the providers' limits per batch (None: 50,000
      requests / 200 MB per OpenAI input file, 100,000 / 256 MB per Anthropic batch).
    * ``batch_error_rate`` / ``batch_lost_reply_rate``: the share of Batch API HTTP requests answered
      500 before they take effect (nothing uploaded, created or cancelled) / after (the upload, batch
      or cancel happened, the reply is lost) -- one draw per request from its own seeded RNG.

    The fault draw's order is hang -> 500 -> malformed -> truncate -> overloaded.
    """

    latency_ms: float = 0
    latency_jitter_ms: float = 0
    rpm_limit: float | None = None
    tpm_limit: float | None = None
    error_rate: float = 0
    hang_rate: float = 0
    hang_seconds: float = 3600
    malformed_rate: float = 0
    seed: int = 0
    api_key: str | None = None
    echo_key: bool = False
    quota_after: int | None = None
    truncate_rate: float = 0
    overloaded_rate: float = 0
    reasoning_tokens: int = 64
    prompt_cache_min_tokens: int = 1024
    length_content: str = "empty"
    think_closing_only_share: float = 0.5
    json_schema_supported: bool = True
    invalid_json_rate: float = 0
    batch_seconds: float = 0.5
    batch_failed_rate: float = 0
    batch_expire_after_share: float | None = None
    batch_max_requests: int | None = None
    batch_max_bytes: int | None = None
    batch_error_rate: float = 0
    batch_lost_reply_rate: float = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for values that make no sense (negative latency, rate > 1...)."""
        for name in ("latency_ms", "latency_jitter_ms", "hang_seconds", "batch_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("error_rate", "hang_rate", "malformed_rate", "truncate_rate", "overloaded_rate",
                     "think_closing_only_share", "invalid_json_rate", "batch_failed_rate",
                     "batch_error_rate", "batch_lost_reply_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        for name in ("rpm_limit", "tpm_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        share = self.batch_expire_after_share
        if share is not None and not 0 <= share <= 1:
            raise ValueError(f"batch_expire_after_share must be in [0, 1] or None, got {share!r}")
        for name in ("batch_max_requests", "batch_max_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value!r}")
        if self.quota_after is not None and self.quota_after < 0:
            raise ValueError(f"quota_after must be >= 0 or None, got {self.quota_after!r}")
        for name in ("reasoning_tokens", "prompt_cache_min_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.length_content not in ("empty", "null"):
            raise ValueError(f"length_content must be 'empty' or 'null', got {self.length_content!r}")


_FLOAT_FIELDS = {
    "latency_ms", "latency_jitter_ms", "error_rate", "hang_rate", "hang_seconds", "malformed_rate",
    "truncate_rate", "overloaded_rate", "think_closing_only_share", "invalid_json_rate", "batch_seconds",
    "batch_failed_rate", "batch_error_rate", "batch_lost_reply_rate",
}
_INT_FIELDS = {"seed", "reasoning_tokens", "prompt_cache_min_tokens"}
_OPTIONAL_FLOAT_FIELDS = {"rpm_limit", "tpm_limit", "batch_expire_after_share"}
_OPTIONAL_INT_FIELDS = {"quota_after", "batch_max_requests", "batch_max_bytes"}
_CONFIG_FIELDS = {f.name for f in fields(FaultConfig)}


def _coerce_config_value(name: str, value: Any) -> Any:
    """Type-check one FaultConfig field coming from JSON or ``configure(**fields)``."""
    if name not in _CONFIG_FIELDS:
        raise ValueError(f"unknown FaultConfig field {name!r}; known: {sorted(_CONFIG_FIELDS)}")
    if name in _OPTIONAL_FLOAT_FIELDS and value is None:
        return None
    if name in _FLOAT_FIELDS or name in _OPTIONAL_FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return value
    if name == "length_content":
        if value not in ("empty", "null"):
            raise ValueError(f"length_content must be 'empty' or 'null', got {value!r}")
        return value
    if name in ("echo_key", "json_schema_supported"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if name in _OPTIONAL_INT_FIELDS:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer or null, got {value!r}")
        return value
    if name == "api_key":
        if value is not None and not isinstance(value, str):
            raise ValueError(f"api_key must be a string or null, got {value!r}")
        return value
    raise AssertionError(name)  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Deterministic answers
# --------------------------------------------------------------------------------------------


def count_tokens(text: Any) -> int:
    """The server's tokenizer: the number of whitespace-separated words.

    Crude on purpose -- it is trivially reproducible in tests.  Accepts OpenAI content-part lists
    (``[{"type": "text", "text": ...}]``) and ``None`` too.
    """
    if text is None:
        return 0
    if not isinstance(text, str):
        text = _content_text(text)
    return len(text.split())


def _content_text(content: Any) -> str:
    """The text of a chat message ``content`` (a string, a list of content parts, or None)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return str(content)


def prompt_text_of(body: dict) -> str:
    """The prompt text the server answers: message contents joined with ``"\\n"``, or ``prompt``.

    Roles are ignored.  A list ``prompt`` (batch completion) is joined with ``"\\n"`` here; the
    server itself answers each element of a list prompt separately.
    """
    messages = body.get("messages")
    if messages is not None:
        return "\n".join(_content_text(m.get("content")) if isinstance(m, dict) else str(m) for m in messages)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return "\n".join(p if isinstance(p, str) else str(p) for p in prompt)
    return prompt if isinstance(prompt, str) else str(prompt)


def prompt_hash(prompt_text: str) -> str:
    """16 hex chars of sha256 of the prompt text; the key of ``stats()["prompt_counts"]``.

    It is also the hash inside a greedy (temperature 0) :func:`expected_text`.
    """
    return hashlib.sha256(prompt_text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def expected_text(
    prompt_text: str, temperature: float = 0, seed: int | None = None, *, choice_index: int = 0
) -> str:
    """What :func:`default_responder` answers for this prompt (before any ``max_tokens`` cut).

    ``"answer <16 hex> <last 8 words of the prompt>"``.  The hash covers the prompt text and, only
    when ``temperature > 0``, the ``seed`` (``None`` included as such) and, for the 2nd.. choice of
    an ``n > 1`` request, ``choice_index`` -- so k samples with seeds 0..k-1 differ from each other
    and are reproducible, while greedy decoding ignores the seed as a real model would.
    """
    if temperature is not None and temperature > 0:
        key = f"{prompt_text}\x1fseed={seed}"
        if choice_index:
            key += f"\x1fchoice={choice_index}"
        digest = prompt_hash(key)
    else:
        digest = prompt_hash(prompt_text)
    return " ".join(["answer", digest, *prompt_text.split()[-8:]])


def default_responder(endpoint: str, body: dict) -> str:
    """The default answer: :func:`expected_text` of the request's prompt.

    ``temperature`` missing or ``null`` counts as 0 (unlike OpenAI, where it defaults to 1):
    answers are deterministic unless a test asks for sampling.
    """
    temperature = body.get("temperature") or 0
    if not isinstance(temperature, (int, float)):
        temperature = 0
    return expected_text(
        prompt_text_of(body),
        temperature=temperature,
        seed=sample_seed(body),
    )


# --------------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------------


class _TokenBucket:
    """Continuous token bucket: ``per_minute / 60`` per second, capacity one second's worth (>= 1).

    A request needs ``level >= 1``.  The request bucket takes 1 on admission; the token bucket only
    checks on admission and is charged the response's actual tokens afterwards (it may go
    negative, which then blocks until it has refilled past 1 -- simple, and close enough to how
    providers behave).
    """

    __slots__ = ("limit", "rate", "capacity", "level", "stamp")

    def __init__(self, per_minute: float, now: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            level = self.level + (now - self.stamp) * self.rate
            self.level = level if level < self.capacity else self.capacity
            self.stamp = now

    def wait_s(self) -> float:
        """Seconds until ``level >= 1``."""
        return 0.0 if self.level >= 1 else (1.0 - self.level) / self.rate

    def reset_s(self) -> float:
        """Seconds until the bucket is full again (OpenAI's ``x-ratelimit-reset-*`` meaning)."""
        return max(0.0, (self.capacity - self.level) / self.rate)


def _fmt_duration(seconds: float) -> str:
    """OpenAI-style durations: ``"50ms"``, ``"1.2s"``, ``"6m0s"``."""
    ms = math.ceil(seconds * 1000)
    if ms < 1000:
        return f"{max(0, ms)}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def _responder_text(out: Any) -> tuple[str, str]:
    """A responder's answer as ``(text, finish_reason)`` (it may return a str or a dict)."""
    finish_reason = "stop"
    if isinstance(out, dict) and "json" in out:  # a structured answer (see testing/structured.py)
        return orjson.dumps(out["json"]).decode(), out.get("finish_reason") or "stop"
    if isinstance(out, dict):
        text = out.get("text", "")
        finish_reason = out.get("finish_reason") or "stop"
    else:
        text = out
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return text, finish_reason


def _error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass
class _Prepared:
    """A validated OpenAI-shaped request: what :meth:`TestServer._answer` needs."""

    body: dict
    is_chat: bool
    model: str
    n: int
    prompts: list[str]


class TestServer:
    """An OpenAI-compatible server on ``host:port`` (port 0 = pick a free one).

    Use as a context manager (``with TestServer(FaultConfig(rpm_limit=600)) as srv: ...``) or call
    :meth:`start` / :meth:`stop`.  The aiohttp app runs in a daemon thread with its own event loop,
    so it serves while the main thread blocks in sync code or runs its own asyncio loop.
    ``base_url`` is what an OpenAI client takes (``http://127.0.0.1:<port>/v1``).

    ``responder(endpoint, body) -> str | dict`` (plain or ``async``) produces the answer text;
    ``endpoint`` is the path (``"/v1/chat/completions"`` or ``"/v1/completions"``).  A dict may
    give ``{"text": ..., "finish_reason": ...}``.  ``max_tokens`` (or ``max_completion_tokens``)
    is applied by the server afterwards: longer answers are cut to that many words with
    ``finish_reason="length"``.  For ``n > 1`` the responder is called once per choice; the 2nd..
    calls get a shallow copy of the body with an extra ``"choice_index"`` key.  An exception in
    the responder becomes a 500 (outcome ``responder_error``).

    ``flavor`` picks the emulated teacher family (see the module docstring; fixed for the server's
    life because it decides the routes) and ``prices`` the price table of the billed ledger (a
    mapping, a JSON file path or a :class:`~synthkd.testing.billing.PriceTable`; default
    synthkd/data/prices.json).

    ``stats()``, ``reset_stats()`` and ``configure(**fields)`` are safe to call from any thread.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        config: FaultConfig | None = None,
        responder: Responder | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        flavor: str = "openai",
        prices: "PriceTable | dict | str | None" = None,
    ) -> None:
        self.flavor = flavors.check_flavor(flavor)
        self.ledger = Ledger(PriceTable.load(prices))
        self._auto_cache = AutoPrefixCache()
        self._block_cache = BlockCache()
        self.config = config if config is not None else FaultConfig()
        self.config.validate()
        self.responder: Responder = responder if responder is not None else default_responder
        self.host = host
        self.port = port

        self._rng = random.Random(self.config.seed)
        self._json_rng = random.Random(f"json:{self.config.seed}")
        self._req_bucket: _TokenBucket | None = None
        self._tok_bucket: _TokenBucket | None = None
        self._apply_limits(force=True)
        self._expected_auth = self._auth_header()

        self._id_counter = 0
        self._malformed_index = 0
        self._in_flight = 0
        self._timer_lateness = 0.0  # seconds; see _latency
        self._batch = BatchEmulator(self)
        self._reset_counters()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stop_event: asyncio.Event | None = None
        self._started = False
        self._started_at: float | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """What a client of this flavor takes as ``base_url``.

        ``http://<host>:<port>/v1`` (OpenAI shapes), the root for ``anthropic`` (the client appends
        ``/v1/messages``), ``.../v1beta/openai`` for ``gemini``.
        """
        if self.flavor == "anthropic":
            return self.url
        if self.flavor == "gemini":
            return f"{self.url}{GEMINI_PREFIX}"
        return f"{self.url}/v1"

    def _routes(self) -> dict[str, tuple[str, Any]]:
        """path -> (method, handler) for this flavor's API."""
        if self.flavor == "anthropic":
            return {
                anthropic_api.MESSAGES_ENDPOINT: ("POST", self._handle_messages),
                anthropic_api.ANTHROPIC_MODELS_ENDPOINT: ("GET", self._handle_models),
            }
        if self.flavor == "gemini":
            return {
                GEMINI_PREFIX + "/chat/completions": ("POST", self._handle_chat),
                GEMINI_PREFIX + "/models": ("GET", self._handle_models),
            }
        return {
            CHAT_ENDPOINT: ("POST", self._handle_chat),
            COMPLETIONS_ENDPOINT: ("POST", self._handle_completions),
            MODELS_ENDPOINT: ("GET", self._handle_models),
        }

    @property
    def url(self) -> str:
        """``http://<host>:<port>`` -- the root, for the ``/_stats`` style control endpoints."""
        if not self.port:
            raise RuntimeError("TestServer is not started (port 0 is only resolved by start())")
        return f"http://{self.host}:{self.port}"

    def start(self) -> "TestServer":
        """Start serving in a background thread; returns once the socket is listening."""
        if self._started or self._thread is not None:
            raise RuntimeError("TestServer already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                try:
                    loop.run_until_complete(self._start_async(loop))
                except BaseException as exc:  # noqa: BLE001 - reported to start()
                    failure.append(exc)
                    return
                finally:
                    ready.set()
                loop.run_forever()
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()

        self._thread = threading.Thread(target=run, name=f"synthkd-test-server:{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving.  Hung requests are ended at once; others get <= 0.5 s to finish."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self._stop_async(), loop)
            fut.result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> "TestServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def _start_async(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind and start serving on ``loop`` (the current one).  Used by both modes."""
        self._loop = loop
        self._loop_thread_id = threading.get_ident()
        self._stop_event = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path, (method, handler) in self._routes().items():
            app.router.add_route(method, path, handler)
        for method, path, handler in self._batch.routes(self.flavor):
            app.router.add_route(method, path, handler)
        app.router.add_get("/_stats", self._handle_stats)
        app.router.add_post("/_reset", self._handle_reset)
        app.router.add_post("/_config", self._handle_config)
        # handler_cancellation: a client that disconnects (e.g. times out on a hung request)
        # cancels its handler, as real servers do.  No access log: per-request logging would
        # dominate the cost of a request in the benchmarks.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=2048)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self._started_at = time.time()
        self._started = True

    async def _stop_async(self) -> None:
        await self._batch.close()
        if self._stop_event is not None:
            self._stop_event.set()  # wakes hung handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._started = False

    # ---------------------------------------------------------------- control (thread-safe)

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the server's loop thread (state is only touched there), wait for it."""
        loop = self._loop
        if (
            loop is None
            or not self._started
            or loop.is_closed()
            or threading.get_ident() == self._loop_thread_id
        ):
            return fn(*args, **kwargs)

        async def call() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def stats(self) -> dict:
        """Counters since start or the last reset (a JSON-able snapshot, same as ``GET /_stats``).

        ``requests_total`` counts every ``/v1/*`` request (control endpoints are not counted);
        ``by_endpoint`` splits it by path and ``by_outcome`` by fate (see :data:`OUTCOMES`; each
        request gets exactly one, decided on admission, so the outcomes sum to the total once
        nothing is in flight).  ``prompt_counts`` maps :func:`prompt_hash` to the number of
        well-formed requests for that prompt, whatever their outcome -- retries and cache misses
        show up as counts > 1.  ``usage`` sums the tokens of the answers actually produced.
        ``in_flight`` / ``max_in_flight`` count generation requests being handled concurrently.
        ``billed`` / ``billed_usd`` are the provider's bill (see :mod:`synthkd.testing.billing`):
        ``{"requests", "input_tokens" (uncached), "cached_input_tokens", "cache_write_tokens",
        "output_tokens" (reasoning included), "reasoning_tokens"}``, priced with the server's table;
        ``billed_unpriced_models`` lists models that had no price; ``billed_batch`` /
        ``billed_batch_usd`` are the part billed for batch items (at 50%).  ``batch`` holds the Batch
        APIs' counters (:meth:`synthkd.testing.batch_api.BatchEmulator.stats`: ``files_uploaded``,
        ``batches_created``, ``requests_submitted``, ``cancels``, ``submitted_by_custom_id``,
        ``resubmitted_ids``, ``items`` by fate, ``live_batches``, ``batches_by_status``).  A reset also
        empties the prompt caches and zeroes the batch counters (files and batches stay, and running
        batches go on).
        """
        return self._call_in_loop(self._stats_now)

    def reset_stats(self) -> None:
        """Zero the counters, refill the rate-limit buckets, reseed the fault RNG.

        I.e. back to the freshly-started state except for the configuration, so a benchmark phase
        or a test step after a reset is reproducible on its own.
        """
        self._call_in_loop(self._reset_now)

    def configure(self, **changes: Any) -> FaultConfig:
        """Change FaultConfig fields at runtime (e.g. ``configure(error_rate=0)``); returns the config.

        Changing ``rpm_limit`` / ``tpm_limit`` gives fresh (full) buckets; changing ``seed``
        reseeds the fault RNG.  Raises ``ValueError`` on unknown fields or bad values.
        """
        return self._call_in_loop(self._configure_now, changes)

    def _configure_now(self, changes: dict) -> FaultConfig:
        coerced = {name: _coerce_config_value(name, value) for name, value in changes.items()}
        candidate = FaultConfig(**{**asdict(self.config), **coerced})  # validates
        old = self.config
        self.config = candidate
        if candidate.seed != old.seed:
            self._rng = random.Random(candidate.seed)
            self._json_rng = random.Random(f"json:{candidate.seed}")
            self._batch.reseed()
        self._apply_limits(
            force=False,
            rpm_changed=candidate.rpm_limit != old.rpm_limit,
            tpm_changed=candidate.tpm_limit != old.tpm_limit,
        )
        self._expected_auth = self._auth_header()
        return candidate

    def _auth_header(self) -> str | None:
        key = self.config.api_key
        return None if key is None else f"Bearer {key}"

    def _apply_limits(self, force: bool, rpm_changed: bool = False, tpm_changed: bool = False) -> None:
        now = time.monotonic()
        cfg = self.config
        if force or rpm_changed:
            self._req_bucket = _TokenBucket(cfg.rpm_limit, now) if cfg.rpm_limit else None
        if force or tpm_changed:
            self._tok_bucket = _TokenBucket(cfg.tpm_limit, now) if cfg.tpm_limit else None

    def _reset_counters(self) -> None:
        self._requests_total = 0
        self._by_endpoint = dict.fromkeys(self._routes(), 0)
        self._by_outcome = dict.fromkeys(OUTCOMES, 0)
        self._rate_limited_by = {"requests": 0, "tokens": 0}
        self._malformed_by_variant = dict.fromkeys(MALFORMED_VARIANTS, 0)
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._max_in_flight = self._in_flight
        self._prompt_counts: dict[str, int] = {}
        self._prompt_counts_truncated = False
        self._models_seen: dict[str, None] = {}
        self.ledger.reset()
        self._batch.reset_counters()
        self._auto_cache.clear()
        self._block_cache.clear()

    def _reset_now(self) -> None:
        self._reset_counters()
        self._rng = random.Random(self.config.seed)
        self._json_rng = random.Random(f"json:{self.config.seed}")
        self._malformed_index = 0
        self._apply_limits(force=True)

    def _stats_now(self) -> dict:
        counts = self._prompt_counts
        return {
            "requests_total": self._requests_total,
            "by_endpoint": dict(self._by_endpoint),
            "by_outcome": dict(self._by_outcome),
            "rate_limited_by": dict(self._rate_limited_by),
            "malformed_by_variant": dict(self._malformed_by_variant),
            "in_flight": self._in_flight,
            "max_in_flight": self._max_in_flight,
            "usage": {
                "prompt_tokens": self._prompt_tokens,
                "completion_tokens": self._completion_tokens,
                "total_tokens": self._prompt_tokens + self._completion_tokens,
            },
            "prompt_counts": dict(counts),
            "distinct_prompts": len(counts),
            "repeated_prompts": sum(1 for c in counts.values() if c > 1),
            "prompt_counts_truncated": self._prompt_counts_truncated,
            "models_seen": list(self._models_seen),
            "flavor": self.flavor,
            **self.ledger.snapshot(),
            "batch": self._batch.stats(),
            "uptime_s": round(time.time() - self._started_at, 3) if self._started_at else 0.0,
            "config": self._public_config(),
        }

    def _public_config(self) -> dict:
        """The config as JSON, with the API key redacted: ``/_stats`` needs no auth (F16)."""
        cfg = asdict(self.config)
        if cfg.get("api_key") is not None:
            cfg["api_key"] = "***"
        return cfg

    # ---------------------------------------------------------------- control endpoints

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return self._json(self._stats_now())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self._reset_now()
        return self._json({"ok": True})

    async def _handle_config(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of FaultConfig fields")
            self._configure_now(changes)
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return self._json(_error_body(str(exc), "invalid_request_error"), status=400)
        return self._json({"config": self._public_config()})

    # ---------------------------------------------------------------- API endpoints

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        hdrs = {"Content-Type": "application/json"}
        if headers:
            hdrs.update(headers)
        return web.Response(body=orjson.dumps(obj), status=status, headers=hdrs)

    def _count(self, path: str) -> None:
        self._requests_total += 1
        self._by_endpoint[path] = self._by_endpoint.get(path, 0) + 1

    def _err(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """An error response in this flavor's envelope (see ``flavors.error_body``)."""
        body = flavors.error_body(self.flavor, status, message, type_, code, param)
        return self._json(body, status=status, headers=headers)

    def _unauthorized(self, request: web.Request) -> web.Response:
        self._by_outcome["unauthorized"] += 1
        if self.flavor == "gemini":
            # §5: third-party reports (unverified) say Gemini's compat endpoint answers a bad key
            # with HTTP 400 and a Google-style body, not OpenAI's 401.
            body = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                              "status": "INVALID_ARGUMENT"}}
            return self._json(body, status=400)
        given = request.headers.get("Authorization")
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            if not given
            else f"Incorrect API key provided{self._echo(request, ': {key}')}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return self._err(401, message, "invalid_request_error", "invalid_api_key")

    def _echo(self, request: web.Request, fmt: str = " (sent with key: {key})") -> str:
        """``fmt`` filled with the presented key, for error bodies, when ``echo_key`` is on (else "")."""
        given = request.headers.get("Authorization") or ""
        if not self.config.echo_key or not given:
            return ""
        return fmt.format(key=given[7:] if given.startswith("Bearer ") else given)

    def _bad_request(
        self,
        request: web.Request,
        message: str,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
    ) -> web.Response:
        self._by_outcome["bad_request"] += 1
        message += self._echo(request)
        return self._err(status, message, "invalid_request_error", code, param)

    def _quota_exhausted(self) -> web.Response:
        self._by_outcome["quota_exhausted"] += 1
        message = (
            "You exceeded your current quota, please check your plan and billing details. For more information "
            "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
        )
        return self._err(429, message, "insufficient_quota", "insufficient_quota")

    async def _handle_models(self, request: web.Request) -> web.Response:
        self._count(request.path)
        if self.flavor == "anthropic":
            request_id = self._next_request_id()
            denied = self._anthropic_denied(request, request_id)
            if denied is not None:
                return denied
            self._by_outcome["ok"] += 1
            names = list(dict.fromkeys([*self._models_seen, DEFAULT_MODEL]))
            return self._json(anthropic_api.models_body(names), headers={"request-id": request_id})
        if self._expected_auth is not None and request.headers.get("Authorization") != self._expected_auth:
            return self._unauthorized(request)
        self._by_outcome["ok"] += 1
        names = list(dict.fromkeys([*self._models_seen, DEFAULT_MODEL]))
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "synthkd"} for name in names]
        return self._json({"object": "list", "data": data})

    async def _handle_chat(self, request: web.Request) -> web.Response:
        return await self._handle_generation(request, CHAT_ENDPOINT)

    async def _handle_completions(self, request: web.Request) -> web.Response:
        return await self._handle_generation(request, COMPLETIONS_ENDPOINT)

    async def _handle_messages(self, request: web.Request) -> web.Response:
        return await self._handle_generation(request, anthropic_api.MESSAGES_ENDPOINT)

    async def _handle_generation(self, request: web.Request, endpoint: str) -> web.Response:
        """Count, track concurrency, dispatch.  ``endpoint`` is the canonical one the responder sees."""
        arrived = asyncio.get_running_loop().time()
        self._count(request.path)
        self._in_flight += 1
        if self._in_flight > self._max_in_flight:
            self._max_in_flight = self._in_flight
        try:
            if endpoint == anthropic_api.MESSAGES_ENDPOINT:
                return await self._generate_anthropic(request, arrived)
            return await self._generate(request, endpoint, arrived)
        finally:
            self._in_flight -= 1

    def _draw_fault(self, cfg: FaultConfig) -> tuple[str | None, float]:
        """One draw against cumulative thresholds (hang, 500, malformed, truncate, overloaded), and
        one for latency jitter: the fault's outcome name (or None) and the jitter draw."""
        rng = self._rng
        draw = rng.random()
        jitter_draw = rng.random()
        threshold = 0.0
        for name, rate in (
            ("hang", cfg.hang_rate),
            ("error_500", cfg.error_rate),
            ("malformed", cfg.malformed_rate),
            ("truncated", cfg.truncate_rate),
            ("overloaded", cfg.overloaded_rate),
        ):
            threshold += rate
            if draw < threshold:
                return name, jitter_draw
        return None, jitter_draw

    def _bill(self, model: str, charge: dict | None) -> None:
        if charge is not None:
            self.ledger.charge(model, **charge)

    def _check_openai_body(self, body: Any, endpoint: str) -> tuple | _Prepared:
        """Validate a parsed OpenAI-shaped request body as the endpoint does.

        Returns the rejection ``(message, param, code, status)`` or the :class:`_Prepared` request.
        Shared by the online endpoints and the Batch API's items, so a line of a batch file is
        answered exactly as the same body sent online.
        """
        cfg = self.config
        if not isinstance(body, dict):
            return ("The request body must be a JSON object.", None, None, 400)
        is_chat = endpoint == CHAT_ENDPOINT
        if is_chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return ("'messages' is a required property (a non-empty array).", "messages", None, 400)
        elif not isinstance(body.get("prompt"), (str, list)):
            return ("'prompt' is a required property.", "prompt", None, 400)
        if body.get("stream"):
            return ("stream=true is not supported by the synthkd test server.", "stream", None, 400)
        n = body.get("n", 1)
        if n is None:
            n = 1
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
            return (f"{n!r} is not a valid value for 'n' (1..128).", "n", None, 400)
        model = body.get("model") or DEFAULT_MODEL
        if not isinstance(model, str):
            return ("'model' must be a string.", "model", None, 400)
        if is_chat:
            rejection = flavors.validate_chat(self.flavor, body, n)
            if rejection is not None:
                return (rejection.message, rejection.param, rejection.code, rejection.status)
            asked = structured.requested_schema(body)
            if asked is not None:
                if self.flavor not in structured.JSON_SCHEMA_FLAVORS or not cfg.json_schema_supported:
                    return (structured.UNSUPPORTED_MESSAGE, "response_format", "unsupported_parameter", 400)
                strict = bool((body["response_format"].get("json_schema") or {}).get("strict"))
                problem = structured.schema_problem(asked[0], asked[1], strict=strict)
                if problem is not None:
                    return (problem, "response_format", "invalid_json_schema", 400)
        self._models_seen[model] = None
        # Every well-formed request counts towards its prompt, whatever its fate (so retries and
        # cache misses are visible); list prompts count each element.
        if is_chat:
            prompts = [prompt_text_of(body)]
        else:
            prompt = body["prompt"]
            prompts = [p if isinstance(p, str) else str(p) for p in prompt] if isinstance(prompt, list) else [prompt]
            if not prompts:
                return ("'prompt' must not be an empty array.", "prompt", None, 400)
        for p in prompts:
            self._track_prompt(p)
        return _Prepared(body, is_chat, model, n, prompts)

    async def _generate(self, request: web.Request, endpoint: str, arrived: float) -> web.Response:
        cfg = self.config
        # 1. auth
        if self._expected_auth is not None and request.headers.get("Authorization") != self._expected_auth:
            return self._unauthorized(request)

        # request validation (not a fault: a client bug, so it is answered like OpenAI would)
        try:
            raw = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._bad_request(request, "We could not parse the JSON body of your request.")
        checked = self._check_openai_body(raw, endpoint)
        if isinstance(checked, tuple):
            message, param, code, status = checked
            return self._bad_request(request, message, param, code, status)
        body, is_chat, model, n, prompts = checked.body, checked.is_chat, checked.model, checked.n, checked.prompts

        if cfg.quota_after is not None and self._by_outcome["ok"] >= cfg.quota_after:
            return self._quota_exhausted()

        # 2. rate limits
        rb, tb = self._req_bucket, self._tok_bucket
        if rb is not None or tb is not None:
            limited = self._check_rate_limits(rb, tb, model)
            if limited is not None:
                return limited

        # 3..7. faults: one draw against cumulative thresholds, one draw for latency jitter
        fault, jitter_draw = self._draw_fault(cfg)
        if fault == "hang":
            self._by_outcome["hang"] += 1
            await self._hang(cfg.hang_seconds)
            response, charge = await self._answer(body, endpoint, is_chat, model, n, prompts)
            self._bill(model, charge)
            return response
        if fault == "error_500":
            self._by_outcome["error_500"] += 1
            await self._latency(cfg, jitter_draw, arrived)
            return self._err(
                500,
                "The server had an error while processing your request. Sorry about that!" + self._echo(request),
                "server_error",
                headers=self._rate_headers(),
            )
        if fault == "malformed":
            self._by_outcome["malformed"] += 1
            return self._malformed(body, is_chat, model, self._echo(request, "Bearer {key}"))
        if fault == "overloaded":
            self._by_outcome["overloaded"] += 1
            await self._latency(cfg, jitter_draw, arrived)
            return self._err(
                503,
                "That model is currently overloaded with other requests. You can retry your request, or contact "
                "us through our help center at help.openai.com if the error persists.",
                "server_error",
                headers=self._rate_headers(),
            )

        # 8. normal (or truncated) answer
        truncate = fault == "truncated"
        self._by_outcome["truncated" if truncate else "ok"] += 1
        response, charge = await self._answer(body, endpoint, is_chat, model, n, prompts, truncate=truncate)
        await self._latency(cfg, jitter_draw, arrived)
        self._bill(model, charge)  # after the latency: a client that gave up earlier got nothing
        return response

    async def _latency(self, cfg: FaultConfig, jitter_draw: float, arrived: float) -> None:
        """Answer ``latency`` after the request *arrived*, on average exactly.

        The server's own work counts as part of the latency, and event-loop timers fire late by about a
        millisecond under load; the measured lateness (a running mean) is subtracted from later sleeps,
        so benchmarks compare a client against the latency they asked for, not against timer slop.
        """
        delay_ms = cfg.latency_ms
        if cfg.latency_jitter_ms:
            delay_ms += (2.0 * jitter_draw - 1.0) * cfg.latency_jitter_ms
        if delay_ms > 0:
            loop = asyncio.get_running_loop()
            target = arrived + delay_ms / 1000.0
            remaining = target - loop.time() - self._timer_lateness
            if remaining > 0:
                await asyncio.sleep(remaining)
            late = loop.time() - target
            self._timer_lateness = min(0.005, max(0.0, self._timer_lateness + 0.05 * late))

    async def _hang(self, seconds: float) -> None:
        """Sleep ``seconds``; ends early (503 to the client) when the server stops.

        A client disconnect cancels the handler (``handler_cancellation=True``), which ends it too.
        """
        stop_event = self._stop_event
        if stop_event is None:  # pragma: no cover - always set while serving
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(stop_event.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return
        raise web.HTTPServiceUnavailable(
            text=orjson.dumps(_error_body("The test server is shutting down.", "server_error")).decode(),
            content_type="application/json",
        )

    def _rate_block(
        self, rb: _TokenBucket | None, tb: _TokenBucket | None
    ) -> tuple[str, float, _TokenBucket] | None:
        """Admit (take one request) or say which bucket blocks and for how long (and count it)."""
        now = time.monotonic()
        blocked = None
        wait = 0.0
        if rb is not None:
            rb.refill(now)
            if rb.level < 1:
                blocked = "requests"
                wait = rb.wait_s()
        if tb is not None:
            tb.refill(now)
            if tb.level < 1:
                blocked = blocked or "tokens"
                wait = max(wait, tb.wait_s())
        if blocked is None:
            if rb is not None:
                rb.level -= 1
            return None
        self._by_outcome["rate_limited"] += 1
        self._rate_limited_by[blocked] += 1
        bucket = rb if blocked == "requests" else tb
        assert bucket is not None
        return blocked, wait, bucket

    def _check_rate_limits(
        self, rb: _TokenBucket | None, tb: _TokenBucket | None, model: str
    ) -> web.Response | None:
        block = self._rate_block(rb, tb)
        if block is None:
            return None
        blocked, wait, bucket = block
        headers = self._rate_headers()
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        limit = _fmt_number(bucket.limit)
        unit = "RPM" if blocked == "requests" else "TPM"
        message = (
            f"Rate limit reached for {model} on {blocked} per min ({unit}): Limit {limit}. "
            f"Please try again in {_fmt_duration(wait)}."
        )
        return self._err(429, message, blocked, "rate_limit_exceeded", headers=headers)

    def _rate_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        rb, tb = self._req_bucket, self._tok_bucket
        if rb is not None:
            headers["x-ratelimit-limit-requests"] = _fmt_number(rb.limit)
            headers["x-ratelimit-remaining-requests"] = str(max(0, int(rb.level)))
            headers["x-ratelimit-reset-requests"] = _fmt_duration(rb.reset_s())
        if tb is not None:
            headers["x-ratelimit-limit-tokens"] = _fmt_number(tb.limit)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, int(tb.level)))
            headers["x-ratelimit-reset-tokens"] = _fmt_duration(tb.reset_s())
        return headers

    def _next_id(self, is_chat: bool) -> str:
        self._id_counter += 1
        return f"{'chatcmpl' if is_chat else 'cmpl'}-synthkd{self._id_counter:016d}"

    def _track_prompt(self, text: str) -> None:
        h = prompt_hash(text)
        counts = self._prompt_counts
        if h in counts:
            counts[h] += 1
        elif len(counts) < _MAX_TRACKED_PROMPTS:
            counts[h] = 1
        else:
            self._prompt_counts_truncated = True

    async def _respond_once(self, endpoint: str, body: dict, max_tokens: Any) -> tuple[str, str]:
        out = self.responder(endpoint, body)
        if inspect.isawaitable(out):
            out = await out
        text, finish_reason = _responder_text(out)
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0:
            words = text.split()
            if len(words) > max_tokens:
                text = " ".join(words[:max_tokens])
                finish_reason = "length"
        return text, finish_reason

    def _structured(self, text: str, schema: dict) -> str:
        """The content of a structured reply (``invalid_json_rate`` of them corrupted)."""
        content = structured.structured_text(text, schema)
        if self.config.invalid_json_rate and self._json_rng.random() < self.config.invalid_json_rate:
            self._by_outcome["invalid_json"] += 1
            content = structured.corrupt(content, self._json_rng)
        return content

    async def _answer(
        self,
        body: dict,
        endpoint: str,
        is_chat: bool,
        model: str,
        n: int,
        prompts: list[str],
        truncate: bool = False,
        batch: bool = False,
    ) -> tuple[web.Response, dict | None]:
        """Build the success response (and charge its tokens to the TPM bucket).

        ``prompts`` is ``[prompt text]`` for chat, the prompt(s) for completions.  Returns the
        response and the ledger charge for it (None when nothing is billable).  ``batch``: an item
        of a Batch API job, whose tokens come from a separate pool (the TPM bucket is not charged).
        """
        max_tokens = body.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = body.get("max_tokens")
        budget = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0 else None
        flavor = self.flavor
        cfg = self.config
        choices: list[dict] = []
        completion_tokens = 0
        reasoning_total = 0
        cached = 0
        try:
            if is_chat:
                prompt = prompts[0]
                prompt_tokens = count_tokens(prompt)
                # A sample of n > 1 with no temperature uses the provider default (1) so the choices
                # differ; the default flavor keeps its historical greedy behaviour.
                base = body
                if flavor != "openai" and n > 1 and body.get("temperature") is None:
                    base = {**body, "temperature": 1}
                reasoning = flavor in flavors.REASONING_FLAVORS
                effort = body.get("reasoning_effort")
                closing_only = flavor == "think-inline" and flavors.closing_tag_only(prompt, cfg.think_closing_only_share)
                asked = structured.requested_schema(body)
                for i in range(n):
                    text, finish = await self._respond_once(
                        endpoint, base if i == 0 else {**base, "choice_index": i}, None
                    )
                    own = None
                    if reasoning:  # a responder's own <think> trace is what a reasoning model returns
                        own, text = flavors.own_trace(text)
                    if asked is not None:
                        text = self._structured(text, asked[1])
                    spent = (len(own.split()) if own is not None
                             else flavors.reasoning_tokens(prompt, i, effort, cfg.reasoning_tokens) if reasoning else 0)
                    plan = flavors.plan_choice(text, finish, spent, budget, truncate)
                    trace = flavors.trace_for(own, prompt, i, plan.reasoning_tokens)
                    completion_tokens += plan.completion_tokens
                    reasoning_total += plan.reasoning_tokens
                    message = flavors.message_of(
                        flavor, plan, trace, null_content=cfg.length_content == "null", closing_only=closing_only
                    )
                    choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": plan.finish_reason})
                if flavor in flavors.CACHING_FLAVORS:
                    cached = self._auto_cache.lookup_and_store(model, prompt.split(), cfg.prompt_cache_min_tokens)
            else:
                prompt_tokens = 0
                for p in prompts:
                    prompt_tokens += count_tokens(p)
                    sub = body if len(prompts) == 1 else {**body, "prompt": p}
                    for i in range(n):
                        text, finish = await self._respond_once(
                            endpoint, sub if i == 0 else {**sub, "choice_index": i}, None
                        )
                        plan = flavors.plan_choice(text, finish, 0, budget, truncate)
                        completion_tokens += plan.completion_tokens
                        choices.append(
                            {"text": plan.answer, "index": len(choices), "logprobs": None,
                             "finish_reason": plan.finish_reason}
                        )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken responder is reported, not fatal
            self._by_outcome["responder_error"] += 1
            return self._err(500, f"responder failed: {type(exc).__name__}: {exc}", "server_error"), None

        total = prompt_tokens + completion_tokens
        self._prompt_tokens += prompt_tokens
        self._completion_tokens += completion_tokens
        if self._tok_bucket is not None and not batch:
            self._tok_bucket.refill(time.monotonic())
            self._tok_bucket.level -= total
        if is_chat:
            usage = flavors.usage_of(flavor, prompt_tokens, completion_tokens, reasoning_total, cached)
        else:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}
        result: dict[str, Any] = {
            "id": self._next_id(is_chat),
            "object": "chat.completion" if is_chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_synthkd_test",
            "choices": choices,
            "usage": usage,
        }
        if flavor == "openai-reasoning":
            result["service_tier"] = "default"
        headers = self._rate_headers() if (self._req_bucket is not None or self._tok_bucket is not None) else None
        charge = {
            "input_tokens": prompt_tokens - cached,
            "cached_input_tokens": cached,
            "output_tokens": completion_tokens,
            "reasoning_tokens": reasoning_total,
        }
        return self._json(result, headers=headers), charge

    # ---------------------------------------------------------------- batch items (see batch_api)

    async def _batch_openai_item(self, body: Any, endpoint: str) -> tuple[int, dict, str, dict | None]:
        """One line of an OpenAI batch, answered by the online logic: ``(status, body, model, charge)``.

        A body the endpoint rejects gives its 400 (in the flavor's envelope); no faults, no rate limits
        (batch work is a separate pool).
        """
        checked = self._check_openai_body(body, endpoint)
        if isinstance(checked, tuple):
            message, param, code, status = checked
            return status, flavors.error_body(self.flavor, status, message, "invalid_request_error", code, param), "", None
        response, charge = await self._answer(checked.body, endpoint, checked.is_chat, checked.model, checked.n,
                                              checked.prompts, batch=True)
        assert isinstance(response.body, bytes)
        return response.status, orjson.loads(response.body), checked.model, charge

    async def _batch_anthropic_item(self, params: Any) -> tuple[str, dict, str, dict | None]:
        """One request of a Message Batch: ``("succeeded", message, model, charge)`` or ``("errored",
        ErrorResponse, "", None)`` -- the online Messages logic, without faults or rate limits."""
        problem = anthropic_api.validate(params)
        if problem is None and anthropic_api.forced_tool(params) is not None and not self.config.json_schema_supported:
            problem = "tools: tool use is not supported by this model (tool_choice)"
        if problem is not None:
            return "errored", anthropic_api.error_body("invalid_request_error", problem, None), "", None
        model = params["model"]
        self._models_seen[model] = None
        view = anthropic_api.openai_view(params)
        prompt = prompt_text_of(view)
        self._track_prompt(prompt)
        response, charge = await self._anthropic_answer(params, view, prompt, model, self._next_request_id(), False,
                                                        batch=True)
        assert isinstance(response.body, bytes)
        body = orjson.loads(response.body)
        if response.status != 200:
            return "errored", {**body, "request_id": None}, "", None
        return "succeeded", body, model, charge

    # ---------------------------------------------------------------- Anthropic Messages API

    def _next_request_id(self) -> str:
        self._id_counter += 1
        return f"req_synthkd{self._id_counter:016d}"

    def _anthropic_error(
        self, status: int, type_: str, message: str, request_id: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return self._json(
            anthropic_api.error_body(type_, message, request_id),
            status=status,
            headers={"request-id": request_id, **(headers or {})},
        )

    def _anthropic_denied(self, request: web.Request, request_id: str) -> web.Response | None:
        """401 for a wrong/missing ``x-api-key`` (when a key is set), 400 without ``anthropic-version``."""
        key = self.config.api_key
        if key is not None and request.headers.get("x-api-key") != key:
            self._by_outcome["unauthorized"] += 1
            return self._anthropic_error(401, "authentication_error", "invalid x-api-key", request_id)
        if not request.headers.get("anthropic-version"):
            self._by_outcome["bad_request"] += 1
            return self._anthropic_error(400, "invalid_request_error", "anthropic-version: header is required",
                                         request_id)
        return None

    def _anthropic_rate_headers(self) -> dict[str, str]:
        rb, tb = self._req_bucket, self._tok_bucket
        return anthropic_api.rate_headers(
            None if rb is None else (rb.limit, rb.level, rb.reset_s()),
            None if tb is None else (tb.limit, tb.level, tb.reset_s()),
        )

    async def _generate_anthropic(self, request: web.Request, arrived: float) -> web.Response:
        """``POST /v1/messages``: the same fault pipeline as :meth:`_generate`, in Anthropic's shapes."""
        cfg = self.config
        request_id = self._next_request_id()
        denied = self._anthropic_denied(request, request_id)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        problem = anthropic_api.validate(body)
        if problem is not None:
            self._by_outcome["bad_request"] += 1
            return self._anthropic_error(400, "invalid_request_error", problem, request_id)
        assert isinstance(body, dict)
        if anthropic_api.forced_tool(body) is not None and not cfg.json_schema_supported:
            self._by_outcome["bad_request"] += 1
            return self._anthropic_error(400, "invalid_request_error", "tools: tool use is not supported by this "
                                         "model (tool_choice)", request_id)
        model = body["model"]
        self._models_seen[model] = None
        view = anthropic_api.openai_view(body)
        prompt = prompt_text_of(view)
        self._track_prompt(prompt)

        if cfg.quota_after is not None and self._by_outcome["ok"] >= cfg.quota_after:
            self._by_outcome["quota_exhausted"] += 1
            return self._anthropic_error(
                400, "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to "
                "upgrade or purchase credits.", request_id)

        rb, tb = self._req_bucket, self._tok_bucket
        if rb is not None or tb is not None:
            block = self._rate_block(rb, tb)
            if block is not None:
                blocked, wait, bucket = block
                headers = self._anthropic_rate_headers()
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                return self._anthropic_error(429, "rate_limit_error",
                                             anthropic_api.rate_limit_message(blocked, bucket.limit), request_id,
                                             headers)

        fault, jitter_draw = self._draw_fault(cfg)
        if fault == "hang":
            self._by_outcome["hang"] += 1
            await self._hang(cfg.hang_seconds)
            response, charge = await self._anthropic_answer(body, view, prompt, model, request_id, False)
            self._bill(model, charge)
            return response
        if fault == "error_500":
            self._by_outcome["error_500"] += 1
            await self._latency(cfg, jitter_draw, arrived)
            return self._anthropic_error(500, "api_error", "Internal server error", request_id)
        if fault == "overloaded":
            self._by_outcome["overloaded"] += 1
            await self._latency(cfg, jitter_draw, arrived)
            # §6.5: the 529 body as documented (no request_id), and §6.3's x-should-retry.
            return self._json(
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                status=529,
                headers={"request-id": request_id, "x-should-retry": "true"},
            )
        if fault == "malformed":
            self._by_outcome["malformed"] += 1
            return self._anthropic_malformed(model, request_id)
        truncate = fault == "truncated"
        self._by_outcome["truncated" if truncate else "ok"] += 1
        response, charge = await self._anthropic_answer(body, view, prompt, model, request_id, truncate)
        await self._latency(cfg, jitter_draw, arrived)
        self._bill(model, charge)
        return response

    async def _anthropic_answer(
        self, body: dict, view: dict, prompt: str, model: str, request_id: str, truncate: bool, batch: bool = False
    ) -> tuple[web.Response, dict | None]:
        """A Messages response: thinking (when enabled) then text, within ``max_tokens`` (§3.2).

        ``batch``: an item of a Message Batch (no rate-limit bucket charge, ``service_tier "batch"``).
        """
        cfg = self.config
        try:
            out = self.responder(anthropic_api.MESSAGES_ENDPOINT, view)
            if inspect.isawaitable(out):
                out = await out
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken responder is reported, not fatal
            self._by_outcome["responder_error"] += 1
            return self._anthropic_error(500, "api_error", f"responder failed: {type(exc).__name__}: {exc}",
                                         request_id), None
        text, finish = _responder_text(out)
        tool = anthropic_api.forced_tool(body)
        budget = anthropic_api.thinking_budget(body)
        spent = 0
        own = None
        if budget is not None:
            own, text = flavors.own_trace(text)
            made_up = flavors.reasoning_tokens(prompt, 0, "medium", cfg.reasoning_tokens)
            spent = min(budget, len(own.split()) if own is not None else made_up)
        plan = flavors.plan_choice(text, finish, spent, int(body["max_tokens"]), truncate)
        thinking = flavors.trace_for(own, prompt, 0, plan.reasoning_tokens) if budget is not None else None
        answer = None if plan.cut_in_reasoning else plan.answer
        stop_reason = "max_tokens" if plan.finish_reason == "length" else "end_turn"
        tool_use = None
        if tool is not None and answer is not None and stop_reason != "max_tokens":
            value = structured.parse_object(self._structured(answer, tool["input_schema"]))
            tool_use = (tool["name"], value if isinstance(value, dict) else {"unexpected": value})
            stop_reason = "tool_use"

        blocks = anthropic_api.prompt_blocks(body)
        prompt_tokens = sum(count_tokens(t) for t, _ in blocks)
        cache_write = cache_read = 0
        marks = [i for i, (_, marked) in enumerate(blocks) if marked]
        if marks:
            prefix = [t for t, _ in blocks[: marks[-1] + 1]]
            prefix_tokens = sum(count_tokens(t) for t in prefix)
            if prefix_tokens >= cfg.prompt_cache_min_tokens:
                cache_write, cache_read = self._block_cache.lookup_and_store(model, prefix, prefix_tokens)
        input_tokens = prompt_tokens - cache_write - cache_read
        output_tokens = plan.completion_tokens
        self._prompt_tokens += prompt_tokens
        self._completion_tokens += output_tokens
        if self._tok_bucket is not None and not batch:
            self._tok_bucket.refill(time.monotonic())
            self._tok_bucket.level -= prompt_tokens + output_tokens
        usage = anthropic_api.usage_body(input_tokens, output_tokens, plan.reasoning_tokens, cache_write, cache_read)
        if batch:
            usage["service_tier"] = "batch"
        self._id_counter += 1
        message = anthropic_api.message_body(
            f"msg_synthkd{self._id_counter:016d}", model, thinking, answer, stop_reason, usage, tool_use
        )
        headers = {"request-id": request_id, **self._anthropic_rate_headers()}
        charge = {
            "input_tokens": input_tokens,
            "cached_input_tokens": cache_read,
            "cache_write_tokens": cache_write,
            "output_tokens": output_tokens,
            "reasoning_tokens": plan.reasoning_tokens,
        }
        return self._json(message, headers=headers), charge

    def _anthropic_malformed(self, model: str, request_id: str) -> web.Response:
        """The malformed-body variants of :meth:`_malformed`, in Anthropic's shapes."""
        variant = MALFORMED_VARIANTS[self._malformed_index % len(MALFORMED_VARIANTS)]
        self._malformed_index += 1
        self._malformed_by_variant[variant] += 1
        headers = {"request-id": request_id, "Content-Type": "application/json"}
        if variant == "html_page":
            headers["Content-Type"] = "text/html"
            return web.Response(body=b"<html><body><h1>502 Bad Gateway</h1></body></html>\n", headers=headers)
        if variant == "empty_body":
            return web.Response(body=b"", headers=headers)
        usage = anthropic_api.usage_body(0, 0, 0, 0, 0)
        message = anthropic_api.message_body(f"msg_synthkd{self._id_counter:016d}", model, None,
                                             "answer truncated", "end_turn", usage)
        if variant == "missing_choices":
            del message["content"]
            return web.Response(body=orjson.dumps(message), headers=headers)
        raw = orjson.dumps(message)
        return web.Response(body=raw[: len(raw) // 2], headers=headers)

    def _malformed(self, body: dict, is_chat: bool, model: str, echo: str = "") -> web.Response:
        """Broken 200 responses, cycling through :data:`MALFORMED_VARIANTS`.

        With ``echo`` (the ``echo_key`` option) every variant is a non-JSON body holding the key, as a
        misbehaving proxy that reflects request headers would send.
        """
        variant = MALFORMED_VARIANTS[self._malformed_index % len(MALFORMED_VARIANTS)]
        self._malformed_index += 1
        self._malformed_by_variant[variant] += 1
        headers = self._rate_headers()
        if echo:
            headers["Content-Type"] = "text/plain"
            return web.Response(body=(b"x" * 60 + echo.encode() + b"<garbage>" * 4), status=200, headers=headers)
        if variant == "html_page":
            html = (
                b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
                b"</h1></center><hr><center>nginx</center></body></html>\n"
            )
            headers["Content-Type"] = "text/html"
            return web.Response(body=html, status=200, headers=headers)
        headers["Content-Type"] = "application/json"
        if variant == "empty_body":
            return web.Response(body=b"", status=200, headers=headers)
        partial: dict[str, Any] = {
            "id": self._next_id(is_chat),
            "object": "chat.completion" if is_chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
        if variant == "missing_choices":
            return web.Response(body=orjson.dumps(partial), status=200, headers=headers)
        # truncated_json: a real-looking body cut in the middle
        text = "answer truncated"
        partial["choices"] = [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if is_chat
            else {"index": 0, "text": text, "finish_reason": "stop"}
        ]
        raw = orjson.dumps(partial)
        return web.Response(body=raw[: len(raw) // 2], status=200, headers=headers)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help with a capitalised "Usage:", like the rest of the synthkd CLI."""

    def add_usage(self, usage, actions, groups, prefix=None):  # type: ignore[no-untyped-def]
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)


def _build_parser(prog: str = "python -m synthkd.testing.server") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        formatter_class=_HelpFormatter,
        description="Run the synthkd OpenAI-compatible test server in the foreground. Prints "
        "'READY <base_url>' on stdout once listening; stops on SIGTERM/SIGINT.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +- jitter on the latency")
    p.add_argument("--rpm", type=float, default=None, help="requests per minute limit")
    p.add_argument("--tpm", type=float, default=None, help="tokens per minute limit")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction of HTTP 500s")
    p.add_argument("--hang-rate", type=float, default=0.0, help="fraction of requests that hang")
    p.add_argument("--hang-seconds", type=float, default=3600.0)
    p.add_argument("--malformed-rate", type=float, default=0.0, help="fraction of malformed 200 bodies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--echo-key", action="store_true",
                   help="repeat the presented key in 401/400/500 bodies and in malformed 200 bodies "
                   "(to test that a client scrubs it)")
    p.add_argument("--quota-after", type=int, default=None,
                   help="after this many answers, reply 429 insufficient_quota to every request")
    p.add_argument("--flavor", choices=flavors.FLAVORS, default="openai",
                   help="which teacher family to emulate (openai, openai-reasoning, deepseek, vllm, vllm-old, "
                   "openrouter, think-inline, anthropic, gemini; default openai)")
    p.add_argument("--prices", default=None, metavar="FILE",
                   help="price table (JSON: model -> {input, output, cached_input?, cache_write?} in USD per 1M "
                   "tokens) for the server's own bill in /_stats; default synthkd/data/prices.json")
    p.add_argument("--truncate-rate", type=float, default=0.0,
                   help="fraction of answers cut as if the length limit was hit (finish_reason length)")
    p.add_argument("--overloaded-rate", type=float, default=0.0,
                   help="fraction of 529 overloaded_error (anthropic) / 503 overloaded (OpenAI shapes)")
    p.add_argument("--reasoning-tokens", type=int, default=64,
                   help="medium-effort base of the hidden reasoning tokens of reasoning flavors")
    p.add_argument("--prompt-cache-min-tokens", type=int, default=1024,
                   help="shortest prompt that prefix caching reports as cached")
    p.add_argument("--length-content", choices=("empty", "null"), default="empty",
                   help="openai-reasoning: content of an answer cut off inside its reasoning")
    p.add_argument("--think-closing-only-share", type=float, default=0.5,
                   help="think-inline: share of prompts answered with only the closing </think> tag")
    p.add_argument("--invalid-json-rate", type=float, default=0.0,
                   help="fraction of structured (json_schema / forced tool) replies corrupted: cut JSON or the "
                        "wrong shape")
    p.add_argument("--no-json-schema", action="store_true",
                   help="answer response_format json_schema (and Anthropic forced tools) with a 400, as a server "
                        "without structured outputs does")
    p.add_argument("--batch-seconds", type=float, default=0.5,
                   help="Batch APIs: seconds from a batch's creation to its end (accelerated clock; default 0.5)")
    p.add_argument("--batch-failed-rate", type=float, default=0.0,
                   help="Batch APIs: share of each batch's items that fail")
    p.add_argument("--batch-expire-after-share", type=float, default=None,
                   help="Batch APIs: a batch expires once this share of its items is done (default: never)")
    p.add_argument("--batch-max-requests", type=int, default=None,
                   help="Batch APIs: requests per batch (default the provider's: 50,000 OpenAI, 100,000 Anthropic)")
    p.add_argument("--batch-max-bytes", type=int, default=None,
                   help="Batch APIs: bytes per batch (default the provider's: 200 MB OpenAI, 256 MB Anthropic)")
    p.add_argument("--batch-error-rate", type=float, default=0.0,
                   help="Batch APIs: share of their HTTP requests answered 500 before taking effect")
    p.add_argument("--batch-lost-reply-rate", type=float, default=0.0,
                   help="Batch APIs: share of their HTTP requests answered 500 after taking effect (e.g. a batch "
                        "created whose reply is lost)")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    p.add_argument("--responder", choices=sorted(_NAMED_RESPONDERS), default=None,
                   help="a built-in scripted responder instead of the default echo-like one "
                   "(banking77: real Banking77 texts for the tasks/PromptMix/relabel prompts; arithmetic: the "
                   "simulated arithmetic teacher; arithmetic-r1: the same, its working as an R1-style trace)")
    return p


def _banking77_responder() -> "Responder":
    from synthkd.testing.banking77_responder import banking77_responder

    return banking77_responder()


# name -> factory (imported lazily: the default server needs none of their data)
def _arithmetic_responder(think: bool) -> Callable[[], "Responder"]:
    def make() -> "Responder":
        from synthkd.testing.simulated import SimulatedResponder

        return SimulatedResponder([], think=think)
    return make


_NAMED_RESPONDERS = {"banking77": _banking77_responder, "arithmetic": _arithmetic_responder(False),
                     "arithmetic-r1": _arithmetic_responder(True)}


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found]

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point (also ``synthkd serve-test``, which passes its own ``prog``)."""
    args = (_build_parser(prog) if prog else _build_parser()).parse_args(argv)
    try:
        config = FaultConfig(
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.jitter_ms,
            rpm_limit=args.rpm,
            tpm_limit=args.tpm,
            error_rate=args.error_rate,
            hang_rate=args.hang_rate,
            hang_seconds=args.hang_seconds,
            malformed_rate=args.malformed_rate,
            seed=args.seed,
            api_key=args.api_key,
            echo_key=args.echo_key,
            quota_after=args.quota_after,
            truncate_rate=args.truncate_rate,
            overloaded_rate=args.overloaded_rate,
            reasoning_tokens=args.reasoning_tokens,
            prompt_cache_min_tokens=args.prompt_cache_min_tokens,
            length_content=args.length_content,
            think_closing_only_share=args.think_closing_only_share,
            invalid_json_rate=args.invalid_json_rate,
            json_schema_supported=not args.no_json_schema,
            batch_seconds=args.batch_seconds,
            batch_failed_rate=args.batch_failed_rate,
            batch_expire_after_share=args.batch_expire_after_share,
            batch_max_requests=args.batch_max_requests,
            batch_max_bytes=args.batch_max_bytes,
            batch_error_rate=args.batch_error_rate,
            batch_lost_reply_rate=args.batch_lost_reply_rate,
        )
        prices = PriceTable.load(args.prices)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    responder = _NAMED_RESPONDERS[args.responder]() if args.responder else None
    server = TestServer(
        config, host=args.host, port=args.port, responder=responder, flavor=args.flavor, prices=prices
    )

    async def serve(loop: asyncio.AbstractEventLoop) -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                pass
        await server._start_async(loop)
        sys.stdout.write(f"READY {server.base_url}\n")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await server._stop_async()

    loop = _new_loop(not args.no_uvloop)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(loop))
    except KeyboardInterrupt:  # pragma: no cover - only without signal handlers
        loop.run_until_complete(server._stop_async())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
