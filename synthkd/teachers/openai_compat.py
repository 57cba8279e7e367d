"""The Teacher for any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, llama.cpp server, TGI.

Why aiohttp and not the ``openai`` SDK or ``httpx`` on the hot path: at concurrency 64 against a
zero-latency loopback server, the SDK costs ~1.5 ms and raw httpx ~2.3 ms of client CPU per request on
this project's 2-core machines, while aiohttp costs ~0.1 ms (measured; see README).  A distillation run
sends millions of requests, so that CPU is the difference between saturating a vLLM server and not.

What this class guarantees, in order of importance:
1. nothing paid for is lost: each answer is written to the cache before it is yielded;
2. a rerun of the same requests sends nothing (cache hit by content hash);
3. rate limits are respected up front (pacing), and 429s/5xx/hangs/malformed bodies are retried with
   exponential backoff and jitter (tenacity); a hung attempt costs an adaptive deadline, not the full
   timeout;
4. 401/403 (and an exhausted quota) stop the whole run at once with one message; so does any
   unexpected error in a request (it names the real error), and a request cache that can no longer be
   written (disk full): then no further request is sent, and every answer already received is still
   yielded so the caller can write it;
5. the budget (``max_cost``) stops new requests, lets in-flight ones finish, and leaves the run
   resumable;
6. with a ``journal`` (the pipeline's per-stage ledger), every HTTP attempt is reported as it happens:
   ``sent(key)`` before the POST, then ``failed(key)`` (not billed: 5xx, 429, timeout, connection
   error, 4xx, a malformed body) or ``answered(key, usage, cost)`` (billed; before the cache write).
   A send with neither outcome was in flight when the process died: a provider bills it if it would
   have answered.  Each event is one cheap append (see :class:`Journal`), so a SIGKILL loses none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
import time
import urllib.parse
from typing import Any, AsyncGenerator, AsyncIterable, Protocol

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential, wait_random

from synthkd.teachers.base import (
    Teacher,
    TeacherCapabilities,
    TeacherConfigError,
    TeacherFatalError,
    TeacherRequest,
    TeacherResult,
    TeacherStorageError,
    Usage,
)
from synthkd.teachers.cache import RequestCache, request_cache_key
from synthkd.teachers.errors import (
    AttemptTimeout,
    ConnectionFailed,
    MalformedResponse,
    RateLimitedError,
    RequestRejected,
    Reshape,
    RetryableError,
    ServerError,
    Stopping,
    scrub,
    scrub_cut,
)
from synthkd.teachers.families import DEFAULT_REASONING_BUDGET, FamilyTable, RequestShaper
from synthkd.teachers.latency import LatencyTracker
from synthkd.teachers.pricing import PriceTable
from synthkd.teachers.ratelimit import RateLimiter, retry_after_seconds
from synthkd.teachers.replies import Reply, parse_openai, share_usage
from synthkd.teachers.stats import TeacherStats
from synthkd.teachers.structured import STRUCTURED_MODES, json_schema_format

__all__ = ["DEFAULT_BASE_URL", "Journal", "OpenAICompatibleTeacher", "TeacherStats"]  # TeacherStats: its old home

log = logging.getLogger("synthkd.teacher")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_DONE = object()


class Journal(Protocol):
    """Where a teacher reports each HTTP attempt (the pipeline's ``Ledger``).  ``key`` is the request's
    cache key (a content hash: no secret).  Each call must be cheap and durable against SIGKILL
    (one append to an O_APPEND file descriptor); an OSError stops the run like a cache failure."""

    def sent(self, key: str) -> None: ...

    def failed(self, key: str) -> None: ...

    def answered(self, key: str, usage: Usage, cost_usd: float | None) -> None: ...



def cache_entry(choice: Any, usage: Usage, cost: float | None, model: str | None, *, structured: bool,
                batch: bool = False) -> dict[str, Any]:
    """What the request cache keeps of one answer (online, or collected from a provider batch): the
    text, why it ended, usage, cost, the model that answered, the reasoning trace and any error."""
    entry: dict[str, Any] = {"text": choice.text if choice else None,
                             "finish_reason": choice.finish_reason if choice else None,
                             "usage": usage.as_dict(), "cost_usd": cost, "model": model}
    if batch:
        entry["batch"] = True
    if choice is not None and choice.reasoning is not None:
        entry["reasoning"] = choice.reasoning
    if choice is None:
        entry["error"] = "MalformedResponse: the reply has no choices"
    elif choice.error is not None:
        entry["error"] = choice.error
    if structured:
        entry["structured"] = True
    return entry

class OpenAICompatibleTeacher(Teacher):
    """Streams requests to ``{base_url}/chat/completions`` (or ``/completions`` for plain prompts).

    Requests are shaped for the model's family (:mod:`synthkd.teachers.families`); a request with
    ``samples=k`` is sent as one request with ``n=k`` where the endpoint takes it (the prompt is billed
    once), else as k requests; reasoning traces are returned apart from the answer
    (:mod:`synthkd.teachers.replies`).  A request with a ``schema`` is sent with a strict
    ``response_format: json_schema`` (``structured``: ``auto`` where the model's family is known to take
    it, ``on`` always, ``off`` never); a 400 naming ``response_format`` turns it off for this model,
    once (:mod:`synthkd.teachers.structured`).  With ``batch`` set (``--batch``) the same requests go
through the provider's Batch API (:mod:`synthkd.teachers.batch`).
    """

    capabilities = TeacherCapabilities(n_samples=True, json_schema=True, batch=True, reasoning_trace=True)
    #: where the key and the endpoint come from when not given (the Anthropic teacher has its own)
    KEY_ENV = "OPENAI_API_KEY"
    URL_ENV = "OPENAI_BASE_URL"
    DEFAULT_URL = DEFAULT_BASE_URL

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 32,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 6,
        cache: RequestCache | None = None,
        prices: PriceTable | None = None,
        max_cost: float | None = None,
        default_params: dict[str, Any] | None = None,
        adaptive_timeout: bool = True,
        timeout_floor_s: float = 3.0,
        preflight: bool = True,
        families: FamilyTable | None = None,
        extra_body: dict[str, Any] | None = None,
        reasoning_effort: str | None = None,
        reasoning_budget: int | None = None,
        structured: str = "auto",
        reask: int = 2,
    ) -> None:
        if structured not in STRUCTURED_MODES:
            raise TeacherConfigError(f"--structured {structured!r}: expected one of {', '.join(STRUCTURED_MODES)}")
        if reask < 0:
            raise TeacherConfigError("--reask must be >= 0")
        self.structured = structured
        self.reask_limit = reask
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        prices = prices or PriceTable.default()
        super().__init__(model, price=prices.lookup(model))
        self.base_url = self._normalise_base_url(base_url or os.environ.get(self.URL_ENV) or self.DEFAULT_URL)
        self._api_key = api_key if api_key is not None else os.environ.get(self.KEY_ENV)
        self._secrets = (self._api_key, urllib.parse.urlsplit(self.base_url).password)
        _check_credentials(self._api_key, self.base_url, self.KEY_ENV)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.cache = cache
        self.journal = None  # set by the pipeline: see point 6 of the module docstring
        self.prices = prices
        self.max_cost = max_cost
        if max_cost is not None and self.price is None:
            raise TeacherConfigError(
                f"--max-cost needs a price for model {model!r}, and none is known: add it with --prices FILE "
                '(JSON: {"' + model + '": {"input": USD_per_1M, "output": USD_per_1M}})'
            )
        self.default_params = dict(default_params or {})
        if reasoning_effort is not None:
            self.default_params["reasoning_effort"] = reasoning_effort
        self.extra_body = dict(extra_body or {})
        check_passthrough(self.extra_body, self.default_params)
        self.family = (families or FamilyTable.default()).lookup(model)
        if reasoning_budget is None:
            reasoning_budget = DEFAULT_REASONING_BUDGET if self.family.reasoning else 0
        self.shaper = RequestShaper(self.family, protected=self._protected(), allowance=reasoning_budget)
        self.limiter = RateLimiter(rpm=rpm, tpm=tpm)
        self.latency = LatencyTracker(
            timeout_s, floor_s=timeout_floor_s, factor=8.0 if adaptive_timeout else float("inf")
        )
        if not adaptive_timeout:
            self.latency.min_samples = 1 << 62
        self._preflight_wanted = preflight
        self._preflight_lock: asyncio.Lock | None = None
        self._preflight_done = False
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json", **self._auth_headers(self._api_key)}
        self._fatal: BaseException | None = None
        self._cache_error: BaseException | None = None
        self._attempts_in_flight: dict[int, tuple[asyncio.Timeout, float, int]] = {}

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _normalise_base_url(url: str) -> str:
        return url.rstrip("/")

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.concurrency + 4, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # deadlines are ours (adaptive)
            )  # bodies are sent as bytes we serialised (orjson): no json_serialize needed
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "OpenAICompatibleTeacher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def stopping(self) -> bool:
        return self._fatal is not None or self.budget_exhausted

    def _protected(self) -> frozenset[str]:
        """Body fields the shaper never drops: the user's ``--param`` and, with ``--structured on``,
        ``response_format`` (then a 400 for it fails the request instead of falling back to text)."""
        return frozenset(self.extra_body) | ({"response_format"} if self.structured == "on" else set())

    def wants_structured(self, req: TeacherRequest) -> bool:
        """``req`` is asked for as JSON: it has a schema, is a chat request, and ``--structured`` is ``on``
        (or ``auto`` and the model's family takes JSON schemas).  The cache key includes the schema then,
        whether or not a 400 later turned it off for this model (the answer cached says which)."""
        if req.schema is None or req.messages is None or self.structured == "off" or "response_format" in self.extra_body:
            return False
        return self.structured == "on" or self.family.json_schema

    def _structured_params(self, req: TeacherRequest) -> dict[str, Any]:
        if req.schema is None or not self.wants_structured(req):
            return {}
        return {"response_format": json_schema_format(req.schema)}

    def cache_key(self, req: TeacherRequest) -> str:
        params = {**self.default_params, **req.params, **self._structured_params(req), **self.extra_body}
        if self.shaper.allowance:  # a bigger reasoning budget can turn a truncated answer into one
            params["\x00reasoning_budget"] = self.shaper.allowance
        return request_cache_key(
            self.model, messages=req.messages, prompt=req.prompt, params=params, sample_index=req.sample_index
        )

    def _budget_reached(self) -> bool:
        if self.max_cost is None:
            return False
        done_fresh = self.stats.done - self.stats.cached - self.stats.failed
        avg = self.stats.cost_usd / done_fresh if done_fresh > 0 else 0.0
        return self.stats.cost_usd + self.stats.in_flight * avg >= self.max_cost

    # ------------------------------------------------------------------ the stream
    async def stream(self, requests: AsyncIterable[TeacherRequest]) -> AsyncGenerator[TeacherResult, None]:
        """Yield one result per request as it completes; raises TeacherFatalError on bad key etc.

        On a fatal error no further request is sent; the ones already in flight finish their current
        attempt and their answers are still yielded, then the error is raised.

        Requests that are not sent because the budget was reached yield nothing: the caller sees them
        missing and ``budget_exhausted`` set, and a rerun (with a larger budget) completes them.

        In batch mode (``self.batch``) the requests go through the provider's Batch API instead
        (:class:`synthkd.teachers.batch.engine.BatchExecutor`).
        """
        if self.batch is not None:
            async for res in self.batch.stream(requests):
                yield res
            return
        out: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(64, 2 * self.concurrency))
        sem = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        self._preflight_lock = asyncio.Lock()

        def stop(exc: BaseException) -> None:
            # No new request from now on.  The producer lets the requests already sent finish (their
            # answers may be paid for: they are still yielded; failures are dropped, not retried) and then
            # ends the stream with this error.  A bad key or quota ends those in-flight ones at once anyway.
            if self._fatal is None:
                self._fatal = exc

        async def run_one(reqs: list[TeacherRequest], keys: list[str]) -> None:
            try:
                results = await self._complete_uncached(reqs, keys)
            except TeacherFatalError as exc:
                stop(exc)
                return
            except OSError as exc:  # the journal cannot be written (disk full): like a cache failure
                stop(self._cache_failure(exc))
                return
            except Exception as exc:  # noqa: BLE001 - never lost: it stops the run, named (F13)
                stop(self._unexpected(exc))
                return
            finally:
                self.stats.in_flight -= len(reqs)
                sem.release()
            if self._cache_error is not None:  # before the await below: not one more request is sent
                stop(self._cache_failure(self._cache_error))
            for result in results:
                if self._fatal is not None and not result.ok and not result.usage.total_tokens:
                    continue  # cut short because the run is stopping: not a reject, a rerun sends it again
                await out.put(result)  # a paid answer reaches the caller even when the cache failed (F1)

        async def produce() -> None:
            try:
                async for req in requests:
                    if self._fatal is not None:
                        break
                    missing: list[TeacherRequest] = []
                    keys: list[str] = []
                    for one in (req.sample(i) for i in range(req.samples)) if req.samples > 1 else (req,):
                        key = self.cache_key(one)
                        hit = self.cache.get(key) if self.cache is not None else None
                        if hit is not None:
                            self.stats.done += 1
                            self.stats.cached += 1
                            if hit.get("error"):
                                self.stats.failed += 1
                            await out.put(self._result_from_cache(one, hit))
                        else:
                            missing.append(one)
                            keys.append(key)
                    # one request for all missing samples where the endpoint takes n, else one each
                    if self.shaper.n_samples:
                        groups = [(missing, keys)]
                    elif req.samples > 1:
                        groups = [([one_by_one(m, m.sample_index - req.sample_index)], [k]) for m, k in zip(missing, keys)]
                    else:
                        groups = [([m], [k]) for m, k in zip(missing, keys)]
                    for group, group_keys in groups:
                        if not group:
                            continue
                        if self._budget_reached():
                            self.budget_exhausted = True
                            break
                        await sem.acquire()
                        if self._fatal is not None or self._budget_reached():
                            sem.release()
                            self.budget_exhausted = self._fatal is None
                            break
                        self.stats.in_flight += len(group)
                        task = asyncio.create_task(run_one(group, group_keys))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    if self.budget_exhausted or self._fatal is not None:
                        break
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # an error in the caller's request iterator
                stop(exc)
            if tasks:  # requests already sent finish (and are yielded) before the stream ends
                await asyncio.gather(*list(tasks), return_exceptions=True)
            await out.put(_DONE)

        producer = asyncio.create_task(produce())
        watchdog = asyncio.create_task(self._watchdog())
        try:
            while True:
                item = await out.get()
                if item is _DONE:
                    if self._fatal is not None:
                        raise self._fatal
                    break
                yield item
        finally:
            watchdog.cancel()
            if not producer.done():
                producer.cancel()
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(producer, watchdog, *list(tasks), return_exceptions=True)

    def _unexpected(self, exc: BaseException) -> TeacherFatalError:
        """An error no branch expected (a bug, a broken dependency): one named, scrubbed fatal message
        instead of a task that dies silently and leaves rows "neither written nor rejected" (F13)."""
        err = TeacherFatalError(
            self._scrub(f"unexpected error in a request to {self.base_url}: {type(exc).__name__}: {exc}")
        )
        err.__cause__ = exc
        return err

    def _cache_failure(self, exc: BaseException) -> TeacherFatalError:
        """The cache (or the ledger journal) cannot be written (disk full, read-only, size limit): stop
        paying for answers that could not be kept if the process died.  A :class:`TeacherStorageError`:
        every command exits 2 (an output that cannot be written), never 1 (rows rejected); the rows
        already written are complete and a rerun, once there is room, resumes without paying twice."""
        if isinstance(exc, OSError) and exc.filename:  # the journal (ledger) names its file
            what = f"{exc.filename}: {exc.strerror or exc}"
        else:
            what = f"the request cache {self.cache.path if self.cache is not None else ''}: {type(exc).__name__}: {exc}"
        err = TeacherStorageError(
            f"cannot write {what}; stopped sending requests "
            "(every answer received was still passed on, so the rows written are complete)"
        )
        err.__cause__ = exc
        return err

    async def _watchdog(self) -> None:
        """Tighten deadlines of running attempts as the latency estimate settles."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.25)
            if self.latency.p95 is None:
                continue
            for cm, started, attempt in list(self._attempts_in_flight.values()):
                deadline = started + self.latency.deadline(attempt)
                when = cm.when()
                if when is None or deadline < when:
                    cm.reschedule(max(deadline, loop.time()))

    # ------------------------------------------------------------------ one request
    def _result_from_cache(self, req: TeacherRequest, hit: dict[str, Any]) -> TeacherResult:
        return TeacherResult(
            request=req,
            text=hit.get("text"),
            finish_reason=hit.get("finish_reason"),
            usage=Usage.from_dict(hit.get("usage")),
            cost_usd=hit.get("cost_usd"),
            cached=True,
            model=hit.get("model"),
            error=hit.get("error"),
            reasoning=hit.get("reasoning"),
            structured=bool(hit.get("structured")),
        )

    def _estimate_tokens(self, req: TeacherRequest, params: dict[str, Any]) -> int:
        if req.messages is not None:
            chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 200 for m in req.messages)
        else:
            chars = len(req.prompt or "")
        return chars // 4 + 4 + int(params.get("max_tokens") or params.get("max_completion_tokens") or 256)

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if self._fatal is not None:
            return True  # the run is stopping: no retry
        # 429s are the server asking us to wait, not a sign the request is bad: allow more of them.
        limit = self.max_retries + 1 + (20 if isinstance(exc, RateLimitedError) else 0)
        return state.attempt_number >= limit

    _backoff = wait_exponential(multiplier=0.5, max=20.0) + wait_random(0, 0.5)

    def _wait(self, state: RetryCallState) -> float:
        # No counting here: tenacity computes the wait before it asks ``_stop``, so this also runs after
        # the last attempt of a request that then fails for good (``_count_retry`` counts real retries).
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return exc.retry_after * (1.0 + 0.1 * (hash(state) % 10) / 10)
        if isinstance(exc, AttemptTimeout):
            return 0.05  # the attempt already waited its deadline
        return self._backoff(state)  # exponential backoff + jitter

    def _count_retry(self, state: RetryCallState) -> None:
        """tenacity's ``before_sleep``: called only when another attempt of the request will follow."""
        self.stats.retries += 1

    def _request_body(self, req: TeacherRequest, params: dict[str, Any], n: int) -> tuple[str, dict[str, Any]]:
        """URL and JSON body of one request for ``n`` samples, shaped for the model's family."""
        shaped = self.shaper.shape(params)
        if req.messages is not None or self.family.chat_only:  # a chat-only model: the prompt as one message
            url = f"{self.base_url}/chat/completions"
            messages = req.messages if req.messages is not None else [{"role": "user", "content": req.prompt}]
            body = {"model": self.model, "messages": messages, **shaped}
        else:
            url = f"{self.base_url}/completions"
            body = {"model": self.model, "prompt": req.prompt, **shaped}
        if n > 1:
            body["n"] = n
        body.update(self.extra_body)
        return url, body

    def _parse_reply(self, data: Any, chat: bool, body: dict[str, Any]) -> Reply:
        """The reply in a decoded 200 body (the Anthropic teacher reads its own shape)."""
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        return parse_openai(data, chat, limit)

    def _cost(self, usage: Usage) -> float | None:
        return self.price.cost_of(usage) if self.price else None

    def _bill(self, key: str, usage: Usage) -> float | None:
        """Count one billed answer (or the billed part of a failed attempt): journal, then stats."""
        cost = self._cost(usage)
        if self.journal is not None:  # before the cache: a kill in between cannot hide a billed answer
            try:
                self.journal.answered(key, usage, cost)
            except OSError as exc:  # disk full: the answer is still kept and yielded; the run stops
                if self._cache_error is None:
                    self._cache_error = exc
        self.stats.add_billed(usage, cost)
        return cost

    async def _complete_uncached(self, reqs: list[TeacherRequest], keys: list[str]) -> list[TeacherResult]:
        """Send one request for ``reqs`` (the samples of one prompt: ``n=len(reqs)``), retrying what is
        transient and re-shaping once per parameter the server says the model does not take."""
        req, key, n = reqs[0], keys[0], len(reqs)
        if n > 1 and not self.shaper.n_samples:  # learned (from another request) while this one waited
            return await self._one_by_one(reqs, keys)
        params = {**self.default_params, **req.params, **self._structured_params(req)}
        clash = sorted(set(self.extra_body) & set(req.params))
        if clash:
            raise TeacherConfigError(
                f"--param {clash[0]}={self.extra_body[clash[0]]!r} collides with the {clash[0]}={req.params[clash[0]]!r} "
                "that this job sends itself: drop the --param (or the extra_body key), or set it with the job's own option")
        chat = req.messages is not None or self.family.chat_only
        est = self._estimate_tokens(req, params)  # the limiter's guess; corrected by the reply's usage
        if n > 1:  # n samples: the prompt once, the output n times
            est += (n - 1) * int(params.get("max_tokens") or params.get("max_completion_tokens") or 256)
        await self._preflight()
        attempts = 0
        started = time.monotonic()
        reshaped: set[str] = set()
        while True:
            url, body = self._request_body(req, params, n)
            payload = orjson.dumps(body)
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(RetryableError),
                    stop=self._stop,
                    wait=self._wait,
                    before_sleep=self._count_retry,
                    reraise=True,
                ):
                    with attempt:
                        attempts += 1
                        number = attempt.retry_state.attempt_number
                        try:
                            reply = await self._attempt(url, payload, est, number, key, chat=chat, body=body)
                        except MalformedResponse as exc:
                            if exc.billed is not None:  # billed although unreadable: costed, then retried
                                self._bill(key, exc.billed)  # type: ignore[arg-type]
                            elif self.journal is not None:
                                self.journal.failed(key)
                            raise
                        except (RetryableError, RequestRejected, TeacherFatalError) as exc:
                            # sent (all but Stopping, raised before sending) and not billed
                            if self.journal is not None and not isinstance(exc, Stopping):
                                self.journal.failed(key)
                            raise
                break
            except Reshape as exc:
                what = str(exc)
                if what in reshaped:  # the same refusal after re-shaping: the model really refuses it
                    return self._failed(reqs, attempts, started, f"RequestRejected: {exc}")
                reshaped.add(what)
                self.stats.reshaped += 1
                if n > 1 and not self.shaper.n_samples:  # the server refused n: one request per sample
                    return await self._one_by_one(reqs, keys)
                continue
            except (RetryableError, RequestRejected) as exc:
                return self._failed(reqs, attempts, started, f"{type(exc).__name__}: {exc}")
        return self._answered(reqs, keys, reply, attempts, started, structured=self._sent_structured(body))

    @staticmethod
    def _sent_structured(body: dict[str, Any]) -> bool:
        """Whether the body that was answered asked for JSON (the Anthropic teacher: a forced tool)."""
        return "response_format" in body

    async def _one_by_one(self, reqs: list[TeacherRequest], keys: list[str]) -> list[TeacherResult]:
        """The samples of one prompt sent as separate requests (in this task's concurrency slot)."""
        results: list[TeacherResult] = []
        for one, one_key in zip(reqs, keys):
            results += await self._complete_uncached([one_by_one(one, one.sample_index - reqs[0].sample_index)],
                                                     [one_key])
        return results

    def _failed(self, reqs: list[TeacherRequest], attempts: int, started: float, error: str) -> list[TeacherResult]:
        st = self.stats
        st.done += len(reqs)
        st.failed += len(reqs)
        st.last_result_at = time.monotonic()
        return [TeacherResult(request=r, text=None, attempts=attempts, latency_s=st.last_result_at - started,
                              error=self._scrub(error)) for r in reqs]

    def _answered(self, reqs: list[TeacherRequest], keys: list[str], reply: Reply, attempts: int,
                  started: float, structured: bool = False) -> list[TeacherResult]:
        """Bill, cache and count a reply's samples; samples the server did not return fail (retryable
        by a rerun: nothing is cached for them)."""
        n = len(reqs)
        choices = reply.choices[:n]
        if len(choices) < n and n > 1:  # the server ignored n: what came is kept, the rest is not paid for
            self.shaper.n_samples = False
        usages = share_usage(reply.usage, len(choices))
        cost_total = self._bill(keys[0], reply.usage)
        st = self.stats
        results: list[TeacherResult] = []
        for r, k, choice, usage in zip(reqs, keys, choices, usages):
            cost = self._cost(usage) if cost_total is not None else None
            if self.cache is not None:
                # Stored before anyone sees it: if the process dies now, a rerun gets it for free.
                entry = cache_entry(choice, usage, cost, reply.model, structured=structured)
                try:
                    self.cache.put(k, self.model, entry)
                except (sqlite3.Error, OSError) as exc:
                    # Disk full, read-only file...: the answer is paid for, so it is still returned (the
                    # caller writes it); stream() then stops the run instead of paying for more (F1).
                    if self._cache_error is None:
                        self._cache_error = exc
            st.done += 1
            if choice.error is not None:
                st.failed += 1
            results.append(TeacherResult(
                request=r, text=choice.text, finish_reason=choice.finish_reason, usage=usage, cost_usd=cost,
                cached=False, model=reply.model, attempts=attempts, latency_s=time.monotonic() - started,
                error=choice.error, reasoning=choice.reasoning, structured=structured))
        st.last_result_at = time.monotonic()
        if len(choices) < n:
            results += self._failed(reqs[len(choices):], attempts, started,
                                    f"MalformedResponse: asked for {n} samples (n), the server returned {len(choices)}")
        return results

    async def _attempt(
        self, url: str, payload: bytes, est_tokens: int, attempt: int, key: str, *, chat: bool,
        body: dict[str, Any],
    ) -> Reply:
        await self.limiter.acquire(est_tokens)
        if self._fatal is not None:
            raise Stopping("the run is stopping")  # sends nothing more once the run must stop
        session = await self._get_session()
        loop = asyncio.get_running_loop()
        st = self.stats
        if self.journal is not None:
            self.journal.sent(key)  # an OSError here (disk full) stops the run before this request is sent
        st.attempts += 1
        if st.first_request_at is None:
            st.first_request_at = time.monotonic()
        started = loop.time()
        token = id(asyncio.current_task())
        try:
            async with asyncio.timeout(self.latency.deadline(attempt)) as cm:
                self._attempts_in_flight[token] = (cm, started, attempt)
                async with session.post(url, data=payload, headers=self._headers) as resp:
                    raw = await resp.read()
                    status = resp.status
                    headers = resp.headers
        except TimeoutError:
            st.timeouts += 1
            raise AttemptTimeout(f"no answer within {loop.time() - started:.1f}s") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            self._attempts_in_flight.pop(token, None)
        if status == 200:
            reply = self._parse(raw, chat, body)
            self.latency.observe(loop.time() - started)
            actual = reply.usage.total_tokens
            self.limiter.correct_tokens(est_tokens, actual if actual else est_tokens)
            self.limiter.on_success(headers)
            return reply
        message = self._error_message(raw)
        self._classify_error(status, raw, headers, message, body)
        raise RequestRejected(f"HTTP {status}: {message}")

    def _classify_error(self, status: int, raw: bytes, headers: Any, message: str, body: dict[str, Any]) -> None:
        """Raise what a non-200 means: retry (429, 5xx), stop the run (key, quota), re-shape (an
        unsupported parameter); returns for a plain rejection of this request."""
        st = self.stats
        if headers.get("x-should-retry", "").lower() == "false" and status != 401 and status != 403:
            raise RequestRejected(f"HTTP {status} (the server says not to retry): {message}")
        if status == 429:
            if "insufficient_quota" in message:
                raise TeacherFatalError(
                    self._scrub(f"{self.base_url}: quota exhausted (429 insufficient_quota): {message}")
                )
            st.rate_limited += 1
            wait = retry_after_seconds(headers)
            self.limiter.on_rate_limited(wait)
            raise RateLimitedError(f"429 rate limited: {message}", wait)
        if status in (401, 403) or (status == 400 and "API key not valid" in message):  # Gemini: a 400
            raise TeacherFatalError(
                self._scrub(f"{self.base_url} refused the API key (HTTP {status}): {message}. "
                            f"Check {self.KEY_ENV} (and {self.URL_ENV}).")
            )
        if status in (408, 409) or status >= 500:
            raise ServerError(f"HTTP {status}: {message}")
        if status == 400:
            param = _error_param(raw)
            if self.shaper.learn(param, message, body, self.model):
                raise Reshape(f"HTTP 400: {message}")

    def _error_message(self, raw: bytes) -> str:
        try:
            data = orjson.loads(raw)
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict):
                msg = str(err.get("message") or err)
                code = err.get("code") or err.get("type")
                return self._scrub(f"{msg} ({code})" if code else msg)
            if isinstance(err, str):
                return self._scrub(err)
        except (orjson.JSONDecodeError, TypeError):
            pass
        # Scrubbed whole, then cut: cutting first can leave part of a key behind (F7).
        return scrub_cut(raw.decode("utf-8", "replace").strip(), self._secrets, 200) or "(empty body)"

    def _parse(self, raw: bytes, chat: bool, body: dict[str, Any]) -> Reply:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            head = scrub_cut(raw.decode("utf-8", "replace"), self._secrets, 80)  # scrub, then cut (F7)
            raise MalformedResponse(f"body is not JSON ({len(raw)} bytes): {head!r}") from None
        return self._parse_reply(data, chat, body)

    async def _preflight(self) -> None:
        """Before the first paid request: is the server there, and does it accept the key?

        One GET /models turns "every row failed with 401" or "every row timed out" into a single clear
        error.  Servers without /models (404 etc.) are fine.  Skipped entirely when everything is cached.
        """
        if self._preflight_done or not self._preflight_wanted:
            return
        assert self._preflight_lock is not None
        async with self._preflight_lock:
            if self._preflight_done:
                return
            session = await self._get_session()
            url = f"{self.base_url}/models"
            try:
                async with asyncio.timeout(min(30.0, self.latency.hard_timeout_s)):
                    async with session.get(url, headers=self._headers) as resp:
                        status = resp.status
                        raw = await resp.read()
            except (aiohttp.ClientConnectorError, aiohttp.InvalidURL, OSError) as exc:
                raise TeacherFatalError(self._scrub(f"cannot reach the teacher at {self.base_url}: {exc}")) from None
            except (TimeoutError, aiohttp.ClientError):
                self._preflight_done = True  # reachable but slow or odd: let the real requests decide
                return
            if status in (401, 403):
                raise TeacherFatalError(
                    f"{self.base_url} refused the API key (HTTP {status}): {self._error_message(raw)}. "
                    f"Check {self.KEY_ENV} (and {self.URL_ENV})."
                )
            self._preflight_done = True


def one_by_one(sample: TeacherRequest, offset: int) -> TeacherRequest:
    """A sample of a k-sample request sent on its own (a server without ``n``): the ``offset``-th one
    gets ``seed + offset`` (``seed`` = offset when there is none), so servers that honour seeds still
    return k different samples.  Its cache key is computed before, from the request as asked."""
    return dataclasses.replace(sample, params={**sample.params, "seed": int(sample.params.get("seed") or 0) + offset})


#: body fields synthkd always sets itself: a --param may not replace them
RESERVED_BODY_FIELDS = ("model", "messages", "prompt", "n", "stream", "stream_options")


def check_passthrough(extra_body: dict[str, Any], params: dict[str, Any]) -> None:
    """Refuse, before any request, a passthrough field (``--param``/``extra_body``) that collides with
    one synthkd sets, naming both."""
    for k in extra_body:
        if k in RESERVED_BODY_FIELDS:
            raise TeacherConfigError(f"--param {k}: synthkd sets {k!r} itself; it cannot be passed through")
        if k in params:
            raise TeacherConfigError(
                f"--param {k}={extra_body[k]!r} collides with {k}={params[k]!r} that synthkd already sends "
                f"(from the teacher's sampling options, e.g. --{k.replace('_', '-')}): give it once")


def _error_param(raw: bytes) -> str | None:
    """``error.param`` of an OpenAI-style error body, if any."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    param = err.get("param") if isinstance(err, dict) else None
    return param if isinstance(param, str) else None


def _check_credentials(api_key: str | None, base_url: str, key_env: str = "OPENAI_API_KEY") -> None:
    """Refuse, before any request, credentials that aiohttp would reject in every request task (F13).

    Both mistakes are common (a key copied with its CRLF line end; a proxy URL with ``user:pass@``) and
    both used to fail every row with no reason given.  The password is never echoed.
    """
    if api_key and any(ord(c) < 32 or ord(c) == 127 for c in api_key):
        raise TeacherConfigError(
            f"{key_env} contains a control character (often a trailing \\r or \\n copied from a file "
            "with Windows line endings): remove it"
        )
    parts = urllib.parse.urlsplit(base_url)
    if api_key and (parts.username or parts.password):
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        shown = urllib.parse.urlunsplit((parts.scheme, "***@" + host, parts.path, "", ""))
        raise TeacherConfigError(
            f"base_url must not carry credentials (user:password@) when {key_env} is set: {shown}"
        )
