"""Request lines written straight into batch files, split at the provider's limits.

Why on disk as they come: a job of a million requests must not be held in memory, and the file the
provider gets is the file the journal keeps (a rerun after a crash uploads exactly what was planned).
A new file starts whenever the next line would pass a limit (requests or bytes per batch) or needs
another endpoint (an OpenAI batch file holds requests to one endpoint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable

from synthkd.teachers.batch.journal import BatchJournal, BatchRecord, new_batch_id


@dataclass(frozen=True)
class Limits:
    """What one batch may hold: requests, and bytes (of the uploaded file, or of the POST body)."""

    max_requests: int
    max_bytes: int

    def fits(self, requests: int, nbytes: int, line: int) -> bool:
        """Whether a batch of ``requests`` lines and ``nbytes`` bytes takes one more line of ``line``
        bytes (an empty batch takes any line: a line larger than the limit goes alone, and the
        provider says why it refuses it)."""
        return requests == 0 or (requests + 1 <= self.max_requests and nbytes + line <= self.max_bytes)


def split_counts(sizes: Iterable[int], limits: Limits) -> list[int]:
    """How many consecutive lines of these sizes go into each batch (what :class:`BatchSpool` does)."""
    out: list[int] = []
    n = nbytes = 0
    for size in sizes:
        if not limits.fits(n, nbytes, size):
            out.append(n)
            n = nbytes = 0
        n += 1
        nbytes += size
    if n:
        out.append(n)
    return out


@dataclass
class _Part:
    rec: BatchRecord
    path: Path
    fh: IO[bytes]
    est: float | None = 0.0
    keys: int = 0
    extra: list[str] = field(default_factory=list)


class BatchSpool:
    """Batch files being written for one teacher; :meth:`close` makes them durable ``planned`` records."""

    def __init__(self, journal: BatchJournal, *, provider: str, model: str, base_url: str, limits: Limits,
                 label: str = "", overhead: int = 0) -> None:
        self.journal = journal
        self.provider = provider
        self.model = model
        self.base_url = base_url
        self.limits = limits
        self.label = label
        self.overhead = overhead  # bytes a line costs besides itself (Anthropic: the comma in the body)
        self._open: dict[str, _Part] = {}  # endpoint -> the file being written
        self._done: list[_Part] = []
        self.requests = 0
        self.est_cost_usd: float | None = 0.0

    def add(self, endpoint: str, line: bytes, est_cost: float | None) -> None:
        part = self._open.get(endpoint)
        size = len(line) + self.overhead
        if part is not None and not self.limits.fits(part.rec.requests, part.rec.bytes, size):
            self._finish(part)
            part = None
        if part is None:
            bid = new_batch_id()
            path = self.journal.requests_path(bid).with_name(f"{bid}.jsonl.part{os.getpid()}")
            rec = BatchRecord(id=bid, provider=self.provider, model=self.model, base_url=self.base_url,
                              endpoint=endpoint, requests=0, bytes=0, label=self.label)
            part = self._open[endpoint] = _Part(rec, path, open(path, "wb"))
        part.fh.write(line)
        part.rec.requests += 1
        part.rec.bytes += size
        part.est = None if part.est is None or est_cost is None else part.est + est_cost
        self.requests += 1
        self.est_cost_usd = None if self.est_cost_usd is None or est_cost is None else self.est_cost_usd + est_cost

    def _finish(self, part: _Part) -> None:
        self._open.pop(part.rec.endpoint, None)
        part.fh.flush()
        os.fsync(part.fh.fileno())
        part.fh.close()
        part.rec.est_cost_usd = part.est
        self._done.append(part)

    def close(self) -> list[BatchRecord]:
        """Every batch file complete and fsynced, then its record saved ``planned`` (in that order: a
        record never names a request file that is not whole)."""
        for part in list(self._open.values()):
            self._finish(part)
        out = []
        for part in self._done:
            final = self.journal.requests_path(part.rec.id)
            os.replace(part.path, final)
            self.journal.save(part.rec)
            out.append(part.rec)
        self._done = []
        return out

    def discard(self) -> None:
        """Forget what was written (a pass that stops before its end submits nothing)."""
        for part in [*self._open.values(), *self._done]:
            if not part.fh.closed:
                part.fh.close()
            part.path.unlink(missing_ok=True)
        self._open = {}
        self._done = []
