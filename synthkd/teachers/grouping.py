"""Fan a stream of items out to several teacher requests each, and gather the answers back per item.

Almost every job asks the teacher more than once per row (k samples, a label from each of several
prompts...).  This does the bookkeeping once: items are pulled lazily (so memory is bounded by what is
in flight), every request goes through one ``Teacher.stream`` (so concurrency, rate limits, cache and
budget apply across all of them), and an item is yielded as soon as its last answer arrives.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterable, AsyncIterator, Generic, Iterable, TypeVar

from synthkd.teachers.base import Teacher, TeacherRequest, TeacherResult

T = TypeVar("T")


class Job(Generic[T]):
    """One item and the requests it needs; ``results`` is filled in request order."""

    __slots__ = ("item", "requests", "results", "left")

    def __init__(self, item: T, requests: list[TeacherRequest]) -> None:
        if not requests:
            raise ValueError("a job needs at least one request")
        self.item = item
        self.requests = requests
        self.results: list[TeacherResult | None] = [None] * len(requests)
        self.left = len(requests)


async def aiter_any(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if hasattr(items, "__aiter__"):
        async for x in items:  # type: ignore[union-attr]
            yield x
    else:
        for x in items:  # type: ignore[union-attr]
            yield x


async def stream_jobs(teacher: Teacher, jobs: Iterable[Job[T]] | AsyncIterable[Job[T]]) -> AsyncIterator[Job[T]]:
    """Yield each job once all its requests have a result (failed ones carry ``error``)."""
    pending: dict[str, tuple[Job[T], int]] = {}
    counter = 0

    async def requests() -> AsyncIterator[TeacherRequest]:
        nonlocal counter
        async for job in aiter_any(jobs):
            for i, req in enumerate(job.requests):
                internal = f"{counter}"
                counter += 1
                pending[internal] = (job, i)
                # The internal key routes the answer back; the caller's key is kept in meta.
                yield TeacherRequest(
                    key=internal,
                    messages=req.messages,
                    prompt=req.prompt,
                    params=req.params,
                    sample_index=req.sample_index,
                    meta={**req.meta, "key": req.key},
                )

    # aclosing: when our caller stops early (e.g. its output write failed), the teacher's stream is closed
    # here, cancelling its requests in flight, before the caller closes the teacher's HTTP session.
    async with aclosing(teacher.stream(requests())) as results:
        async for res in results:
            job, i = pending.pop(res.key)
            job.results[i] = res
            job.left -= 1
            if job.left == 0:
                yield job
