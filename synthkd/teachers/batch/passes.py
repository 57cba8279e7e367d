"""The command-level loop of batch mode: a pass, then wait and collect (or exit 5), then the next pass.

Why passes instead of waiting inside the teacher's stream: a method keeps every job whose answer is
outstanding in memory, so a million-request job waiting for its batch would hold a million jobs.  In a
pass the teacher answers what the cache holds and drops the rest (deferred into batches); the next
pass, after the batches are collected, recomputes the method from the start and gets those answers
from the cache, exactly like a rerun after a crash (the project's resume model).  Multi-step methods
advance one step per pass: step 2's requests exist only once step 1's answers are in the cache.
"""

from __future__ import annotations

import logging
from typing import Iterable

from synthkd.errors import BatchSubmitted
from synthkd.teachers.base import Teacher

log = logging.getLogger("synthkd.batch")


def batch_waiting(teachers: Iterable[Teacher | None]) -> list[Teacher]:
    """The teachers whose last pass deferred requests to batches.  Also when the budget stopped the
    pass: what was submitted within it is still waited for and written (the next pass stops at the
    budget again, and the run ends with exit 3)."""
    return [t for t in teachers if t is not None and t.batch is not None and t.batch.deferred]


async def wait_or_stop(teachers: Iterable[Teacher | None], what: str = "") -> None:
    """Between two passes: wait for every batch and collect it (``--wait``), or stop with exit 5
    (``--no-wait``: the batches stay at the provider; a rerun collects them)."""
    waiting = batch_waiting(teachers)
    for t in waiting:
        assert t.batch is not None
        if not t.batch.wait:
            raise BatchSubmitted(f"{what + ': ' if what else ''}submitted; {t.batch.submitted_message()}")
    for t in waiting:
        assert t.batch is not None
        await t.batch.wait_all()
        t.batch.deferred = 0
    log.info(f"{what + ': ' if what else ''}batches collected; next pass (answers from the cache)")
