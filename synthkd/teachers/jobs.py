"""Feeding jobs to a teacher: fan a stream of items out to several teacher requests each, gather the
answers back per item, let a consumer add jobs while the stream runs, and count what a run did.

Almost every job asks the teacher more than once per row (k samples, a label from each of several
prompts...).  This does the bookkeeping once: items are pulled lazily (so memory is bounded by what is
in flight), every request goes through one ``Teacher.stream`` (so concurrency, rate limits, cache and
budget apply across all of them), and an item is yielded as soon as its last answer arrives.

* :class:`Job`, :func:`stream_jobs` — one item and its requests; the stream that answers them;
* :class:`JobFeed` — jobs a multi-round method adds while results come back (one stream for all rounds);
* :class:`MethodStats`, :func:`request_provenance` — requests, tokens, cost and drops of a run; the
  usage and cache key a row came from;
* :func:`stable_rng` — a Random seeded the same in every process (prompts must not change on a rerun).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, AsyncIterable, AsyncIterator, Generic, Iterable, TypeVar

from synthkd.teachers.base import Teacher, TeacherRequest, TeacherResult

T = TypeVar("T")


class Job(Generic[T]):
    """One item and the requests it needs; ``results`` is filled in request order."""

    __slots__ = ("item", "requests", "results", "left", "deferred")

    def __init__(self, item: T, requests: list[TeacherRequest]) -> None:
        if not requests:
            raise ValueError("a job needs at least one request")
        self.item = item
        self.requests = requests
        self.results: list[TeacherResult | None] = [None] * len(requests)
        self.left = len(requests)
        #: batch mode: a request of this job went into a provider batch; the job is dropped (never yielded)
        self.deferred = False

    def done_results(self) -> list[TeacherResult]:
        """``results`` once every request has one, as :func:`stream_jobs` yields the job."""
        done = [r for r in self.results if r is not None]
        if len(done) != len(self.results):
            raise RuntimeError(f"job still waits for {len(self.results) - len(done)} result(s)")
        return done


async def aiter_any(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if hasattr(items, "__aiter__"):
        async for x in items:  # type: ignore[union-attr]
            yield x
    else:
        for x in items:  # type: ignore[union-attr]
            yield x


#: how often a request stream waiting for answers looks whether its teacher stopped (seconds)
_POLL_S = 0.25


def _same_prompt(a: TeacherRequest, b: TeacherRequest) -> bool:
    return a.messages == b.messages and a.prompt == b.prompt and a.params == b.params


async def stream_jobs(teacher: Teacher,
                      jobs: Iterable[Job[T]] | AsyncIterable[Job[T]]) -> AsyncGenerator[Job[T], None]:
    """Yield each job once all its requests have a result (failed ones carry ``error``).

    A job's consecutive requests that differ only in ``sample_index`` (k samples of one prompt) go to
    the teacher as one request with ``samples=k``: an API teacher sends them as one call with ``n=k``,
    so the prompt is billed once (each sample keeps its own cache entry, so reruns stay free).  Only
    for teachers whose ``capabilities.n_samples`` say they take such requests.

    Structured answers (a request with a ``schema`` that the teacher asked as JSON) are validated here:
    a valid one gets ``result.parsed``; an invalid one is re-asked (:func:`synthkd.teachers.structured.
    reask_request`) up to ``teacher.reask_limit`` times in the same stream, and the job waits for it.
    The answers re-asked ride along on the final result (``result.reasks``), and the teacher's stats
    count them; one still invalid after the last re-ask carries ``structured_error`` and its raw text.

    Batch mode (``teacher.batch``): a request the cache cannot answer comes back ``deferred`` (it went
    into a provider batch); its job is dropped at once, so memory stays flat however many requests are
    batched, and the caller's next pass (:mod:`synthkd.teachers.batch.passes`) gets it from
    the cache.  The request stream ends once every job given so far is answered or dropped and the job
    source has nothing more for a moment (a :class:`JobFeed` whose consumer waits on dropped jobs
    would otherwise never end).
    """
    from synthkd.teachers import structured as so

    coalesce = teacher.capabilities.n_samples
    # internal key -> (job, the job's request index of each sample, the per-sample internal requests)
    pending: dict[str, tuple[Job[T], list[int], list[TeacherRequest]]] = {}
    left: dict[str, int] = {}
    # internal key of a re-ask -> (re-asks so far, the invalid answers before it)
    reasked: dict[str, tuple[int, list[TeacherResult]]] = {}
    reasks: list[TeacherRequest] = []
    wake = asyncio.Event()
    counter = 0
    batching = teacher.batch is not None
    consumer_busy = False  # a job was yielded and the caller has not asked for the next one yet

    def internal_request(key: str, req: TeacherRequest) -> TeacherRequest:
        # The internal key routes the answer back; the caller's key is kept in meta.
        return TeacherRequest(key=key, messages=req.messages, prompt=req.prompt, params=req.params,
                              sample_index=req.sample_index, meta={**req.meta, "key": req.key}, schema=req.schema)

    def job_requests(job: Job[T]) -> Iterable[TeacherRequest]:
        nonlocal counter
        reqs = job.requests
        i = 0
        while i < len(reqs):
            j = i + 1
            while (coalesce and j < len(reqs) and reqs[j].samples == 1 and reqs[i].samples == 1
                   and reqs[j].sample_index == reqs[j - 1].sample_index + 1 and _same_prompt(reqs[j], reqs[i])):
                j += 1
            internal = f"{counter}"
            counter += 1
            pending[internal] = (job, list(range(i, j)), [internal_request(internal, r) for r in reqs[i:j]])
            left[internal] = j - i
            first = internal_request(internal, reqs[i])
            yield first if j - i == 1 else dataclasses.replace(first, samples=j - i)
            i = j

    async def plain_requests() -> AsyncIterator[TeacherRequest]:
        async for job in aiter_any(jobs):
            for r in job_requests(job):
                yield r

    async def requests_with_reasks() -> AsyncIterator[TeacherRequest]:
        # Jobs are pulled one at a time (memory bounded by what is in flight) while re-asks, which only
        # answers can create, are sent as soon as they are made; the stream of requests ends once the
        # jobs are exhausted and no answer that could need a re-ask is outstanding.
        # A teacher that stops (budget, fatal error) answers nothing more, so the waits look at it every
        # quarter second: otherwise the requests would never end, nor would the teacher's stream.
        it = aiter_any(jobs).__aiter__()
        next_job: asyncio.Future[Any] | None = None
        jobs_done = False
        try:
            while True:
                while reasks:
                    yield reasks.pop()
                if jobs_done:
                    if not pending or teacher.stopping:
                        return
                    try:
                        await asyncio.wait_for(wake.wait(), _POLL_S)
                    except TimeoutError:
                        pass
                    wake.clear()
                    continue
                if next_job is None:
                    next_job = asyncio.ensure_future(it.__anext__())
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait({next_job, waiter}, timeout=_POLL_S, return_when=asyncio.FIRST_COMPLETED)
                woken = waiter.done()
                if not woken:
                    waiter.cancel()
                wake.clear()
                if not next_job.done() and not reasks and teacher.stopping:
                    return
                if (batching and not woken and not next_job.done() and not reasks and not pending
                        and not consumer_busy):
                    return  # batch mode, quiescent: every job is answered or deferred, none is coming
                if next_job.done():
                    fut, next_job = next_job, None
                    try:
                        job = fut.result()
                    except StopAsyncIteration:
                        jobs_done = True
                        continue
                    for r in job_requests(job):
                        yield r
        finally:
            if next_job is not None and not next_job.done():
                next_job.cancel()

    def check(res: TeacherResult, original: TeacherRequest, slot: int) -> bool:
        """Validate a structured answer; True when it is settled (False: a re-ask was sent for it)."""
        if original.schema is None or not res.ok or not res.structured:
            return True
        st = teacher.stats
        st.structured += 1
        parsed, error = so.validate(original.schema, res.text)
        done, before = reasked.pop(res.key, (0, []))
        if parsed is not None:
            res.parsed = parsed
        elif done < teacher.reask_limit and original.messages is not None:
            st.reasks += 1
            if res.cost_usd is not None and not res.cached:
                st.reask_cost_usd += res.cost_usd
            job = pending[res.key][0]
            nonlocal counter
            internal = f"{counter}"
            counter += 1
            again = so.reask_request(dataclasses.replace(original, key=internal, samples=1), res.text,
                                     error or "invalid", done + 1)
            pending[internal] = (job, [slot], [again])
            left[internal] = 1
            reasked[internal] = (done + 1, [*before, res])
            reasks.append(again)
            wake.set()
            return False
        else:
            res.structured_error = error
            st.structured_invalid += 1
        res.reasks = before
        return True

    may_reask = teacher.reask_limit > 0
    source = requests_with_reasks() if may_reask or batching else plain_requests()
    # aclosing: when our caller stops early (e.g. its output write failed), the teacher's stream is closed
    # here, cancelling its requests in flight, before the caller closes the teacher's HTTP session.
    async with aclosing(teacher.stream(source)) as results:
        async for res in results:
            job, idx, originals = pending[res.key]
            if res.deferred or job.deferred:  # batch mode: dropped now, answered by a later pass
                job.deferred = True
                reasked.pop(res.key, None)
                left[res.key] -= 1
                if left[res.key] == 0:
                    del pending[res.key], left[res.key]
                wake.set()
                continue
            pos = res.request.sample_index - originals[0].sample_index
            if not 0 <= pos < len(idx):
                raise RuntimeError(f"teacher answered sample {res.request.sample_index} of request {res.key!r}, "
                                   f"which asked for samples {originals[0].sample_index}..{originals[-1].sample_index}")
            original = originals[pos]
            settled = check(res, original, idx[pos])
            left[res.key] -= 1
            if left[res.key] == 0:
                del pending[res.key], left[res.key]
            if may_reask:
                wake.set()
            if not settled:
                continue
            res.request = original  # a re-asked answer carries the re-ask (its messages end with the error)
            job.results[idx[pos]] = res
            job.left -= 1
            if job.left == 0:
                consumer_busy = True
                yield job
                consumer_busy = False


# ==================================================================================================
# A job source that grows while the stream runs, and run statistics
# ==================================================================================================


class JobFeed(Generic[T]):
    """Jobs for :func:`stream_jobs` that the consumer keeps adding while results come back.

    Why: the next requests of a multi-round method depend on earlier answers, yet one teacher stream
    should carry all of them (so concurrency, rate limits and the budget apply across rounds, and
    instance requests of round t overlap with round t+1).  The consumer calls :meth:`finished` for
    every job it gets back, :meth:`put` for follow-ups, and the feed ends itself when nothing is
    outstanding — which is what ends the stream.
    """

    def __init__(self) -> None:
        self._q: asyncio.Queue[Job[T] | None] = asyncio.Queue()
        self.outstanding = 0
        self.closed = False

    def put(self, job: Job[T]) -> None:
        if self.closed:
            raise RuntimeError("JobFeed is closed")
        self.outstanding += 1
        self._q.put_nowait(job)

    def finished(self) -> None:
        """One job came back; end the feed when it was the last one and nothing new was put."""
        self.outstanding -= 1

    def close_if_idle(self) -> None:
        if self.outstanding == 0 and not self.closed:
            self.closed = True
            self._q.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Job[T]]:
        while True:
            job = await self._q.get()
            if job is None:
                return
            yield job


@dataclass
class MethodStats:
    """What a run did, for the CLI summary: requests, tokens, cost, and every drop by reason."""

    requests: int = 0  # results received (answers + failures), cached ones included
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0  # sent in this run (cache hits excluded)
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # paid in this run; None once a price is unknown
    dataset_cost_usd: float | None = 0.0  # what every answer used cost, cached ones included
    kept: int = 0
    drops: Counter = field(default_factory=Counter)  # reason -> candidates dropped
    notes: Counter = field(default_factory=Counter)  # things worth knowing that are not drops
    per_label: dict[str, int] = field(default_factory=dict)
    short: dict[str, str] = field(default_factory=dict)  # target not reached: what -> why
    budget_stopped: bool = False
    structured: int = 0  # answers asked for as JSON for a schema (re-asks included)
    reasks: int = 0  # invalid structured answers asked again (each one a paid request, counted above too)
    reask_cost_usd: float = 0.0  # what those invalid answers cost (part of cost_usd)
    structured_invalid: int = 0  # structured answers still invalid after the last re-ask (rejected)

    def record(self, res: TeacherResult) -> None:
        """Count one result, and the invalid answers re-asked before it (``res.reasks``)."""
        for bad in res.reasks:
            self._record_one(bad)
            self.reasks += 1
            if bad.cost_usd is not None and not bad.cached:
                self.reask_cost_usd += bad.cost_usd
        if res.structured_error is not None:
            self.structured_invalid += 1
        self._record_one(res)

    def _record_one(self, res: TeacherResult) -> None:
        if res.structured:
            self.structured += 1
        self.requests += 1
        if not res.ok:
            self.failed += 1
            return
        if res.cost_usd is None:
            self.dataset_cost_usd = None
        elif self.dataset_cost_usd is not None:
            self.dataset_cost_usd += res.cost_usd
        if res.cached:
            self.cached += 1
            return
        self.prompt_tokens += res.usage.prompt_tokens
        self.completion_tokens += res.usage.completion_tokens
        if res.cost_usd is None:
            self.cost_usd = None
        elif self.cost_usd is not None:
            self.cost_usd += res.cost_usd

    @property
    def sent(self) -> int:
        return self.requests - self.cached

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept": self.kept, "drops": dict(sorted(self.drops.items())), "notes": dict(sorted(self.notes.items())),
            "per_label": dict(self.per_label), "short": dict(self.short), "requests": self.requests,
            "requests_sent": self.sent, "requests_cached": self.cached, "requests_failed": self.failed,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 8),
            "dataset_cost_usd": None if self.dataset_cost_usd is None else round(self.dataset_cost_usd, 8),
            "budget_stopped": self.budget_stopped,
            **({"structured_answers": self.structured, "reasks": self.reasks,
                "reask_cost_usd": round(self.reask_cost_usd, 8), "structured_invalid": self.structured_invalid}
               if self.structured else {}),
        }


def request_provenance(teacher: Teacher, req: TeacherRequest, res: TeacherResult) -> dict[str, Any]:
    """Usage, cost and cache key of the request a row came from (shared by all rows of that request)."""
    out: dict[str, Any] = {
        "request_usage": res.usage.as_dict(),
        "request_cost_usd": None if res.cost_usd is None else round(res.cost_usd, 10),
        "cached": res.cached,
    }
    key = teacher.cache_key(req)
    if key is not None:
        out["request_cache_key"] = key
    return out


def stable_rng(*parts: Any) -> random.Random:
    """A Random seeded from its parts (str seeding is sha512-based: the same in every process)."""
    return random.Random("\x1f".join(str(p) for p in parts))
