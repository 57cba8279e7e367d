"""The durable record of batch jobs, beside the request cache: nothing submitted is ever forgotten.

Why on disk before anything else: a batch is paid for once the provider accepts it, and its results
come back hours later, maybe to another process.  So every step is written (atomically, fsynced) before
the next network call, and a rerun after a SIGKILL at any point knows exactly what may exist on the
provider's side.

Layout, in ``<cache file>.batches/`` next to the cache database::

    <local id>.json          the record (:class:`BatchRecord`): state, provider ids, counts, cost estimate
    <local id>.jsonl         its request file, one line per request, ``custom_id`` = the request's cache key
    <local id>.failed.jsonl  the items that came back failed: {"key", "error", "retry"}
    .lock                    flock'ed while one process submits, polls or collects

States (each saved before the step it announces, so a crash leaves the last safe one)::

    planned --> uploading --> uploaded(file id) --> submitting --> submitted(batch id) --> collected
        \\--> abandoned (never submitted: nothing was planned past the budget, or a cancel before submission)

* ``planned``: the request file is complete and fsynced; nothing was sent.
* ``uploading``: the upload may have reached the provider (a stray file costs nothing: upload again).
* ``submitting``: the create call may have reached the provider: a rerun **looks the batch up**
  (OpenAI: by its ``metadata.synthkd_batch``; Anthropic: by creation time and request count) before it
  ever creates it again.
* ``submitted``: the provider holds it; a rerun polls it, and collects it once it has ended.
* ``collected``: every answer is in the cache and every failure in ``<id>.failed.jsonl``; the request
  file is no longer needed and is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson

#: states in which the provider may hold (or is about to hold) the batch's requests
LIVE_STATES = ("planned", "uploading", "uploaded", "submitting", "submitted")
STATES = (*LIVE_STATES, "collected", "abandoned")


@dataclass
class BatchRecord:
    """One batch as the journal knows it (saved as ``<id>.json``)."""

    id: str
    provider: str  # "openai" | "anthropic"
    model: str
    base_url: str  # no credential: the teacher refuses a base URL carrying one
    endpoint: str  # "/v1/chat/completions", "/v1/completions" or "/v1/messages"
    requests: int
    bytes: int
    est_cost_usd: float | None = None  # upper estimate at batch prices (max_tokens for every answer)
    state: str = "planned"
    created: float = field(default_factory=time.time)
    file_id: str | None = None
    batch_id: str | None = None
    submitting_at: float | None = None
    submitted_at: float | None = None
    status: str | None = None  # the provider's last status word
    counts: dict[str, int] = field(default_factory=dict)  # the provider's last request counts
    collected_at: float | None = None
    succeeded: int = 0
    failed: int = 0
    cost_usd: float = 0.0  # billed (batch prices) for the answers collected
    label: str = ""  # what made it (the command's output or stage), for `synthkd batch status`

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BatchRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def journal_dir(cache_path: Path) -> Path:
    """Where the journal of the cache at ``cache_path`` lives."""
    return cache_path.with_name(cache_path.name + ".batches")


def new_batch_id() -> str:
    """A local batch id: sortable by creation, unique across processes (also the OpenAI metadata tag)."""
    return f"b{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:10]}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class BatchJournal:
    """The records of one cache's batches (see the module docstring)."""

    def __init__(self, cache_path: Path) -> None:
        self.dir = journal_dir(Path(cache_path))
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ files
    def record_path(self, bid: str) -> Path:
        return self.dir / f"{bid}.json"

    def requests_path(self, bid: str) -> Path:
        return self.dir / f"{bid}.jsonl"

    def failed_path(self, bid: str) -> Path:
        return self.dir / f"{bid}.failed.jsonl"

    def save(self, rec: BatchRecord) -> None:
        """Make ``rec`` durable (atomic, fsynced) before the step its state announces."""
        write_atomic(self.record_path(rec.id), orjson.dumps(rec.as_dict(), option=orjson.OPT_INDENT_2))

    def load(self, bid: str) -> BatchRecord:
        return BatchRecord.from_dict(orjson.loads(self.record_path(bid).read_bytes()))

    def records(self) -> list[BatchRecord]:
        """Every batch, oldest first (records that cannot be read are skipped, never deleted)."""
        out = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                out.append(BatchRecord.from_dict(orjson.loads(p.read_bytes())))
            except (OSError, orjson.JSONDecodeError, TypeError):
                continue
        return out

    def find(self, ident: str) -> BatchRecord | None:
        """A batch by its local id or the provider's batch id."""
        for rec in self.records():
            if ident in (rec.id, rec.batch_id):
                return rec
        return None

    # ------------------------------------------------------------------ what the records say
    def keys(self, rec: BatchRecord) -> Iterator[str]:
        """The cache keys (``custom_id``) in a batch's request file, streamed."""
        path = self.requests_path(rec.id)
        if not path.exists():
            return
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    yield request_key(line)

    def live_keys(self, provider: str, base_url: str) -> set[int]:
        """The keys (as :func:`key_id`) in batches of this provider that may still be answered (never to
        be sent again)."""
        out: set[int] = set()
        for rec in self.records():
            if rec.live and rec.provider == provider and rec.base_url == base_url:
                out.update(key_id(k) for k in self.keys(rec))
        return out

    def failures(self) -> dict[str, tuple[int, str, bool]]:
        """key -> (times failed, last error, retryable) over every collected batch."""
        out: dict[str, tuple[int, str, bool]] = {}
        for rec in self.records():
            if rec.state != "collected" or not rec.failed:
                continue
            path = self.failed_path(rec.id)
            if not path.exists():
                continue
            for line in path.read_bytes().splitlines():
                try:
                    item = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                n, _, _ = out.get(item["key"], (0, "", True))
                out[item["key"]] = (n + 1, str(item.get("error")), bool(item.get("retry")))
        return out

    def tidy(self, *, orphan_age_s: float = 3600.0) -> int:
        """Remove what a killed process left half-written (call under the lock): batch files being
        written by a process that is gone (``*.jsonl.part<pid>``), and request files without a record
        (killed between the file's rename and its record's save) once they are an hour old.  Never
        anything a record names: those requests may be at the provider.  Returns the files removed."""
        removed = 0
        for p in self.dir.glob("*.jsonl.part*"):
            pid = p.name.rsplit(".part", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                p.unlink(missing_ok=True)
                removed += 1
        for p in self.dir.glob("*.jsonl"):
            if p.name.endswith(".failed.jsonl") or (self.dir / (p.name[:-len(".jsonl")] + ".json")).exists():
                continue
            try:
                if time.time() - p.stat().st_mtime > orphan_age_s:
                    p.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One process at a time submits, polls or collects this cache's batches."""
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def key_id(key: str) -> int:
    """A request key as a 64-bit int, for the sets a pass keeps (a third of the memory of the 64-character
    key; a collision among a few million keys has odds around 10^-7 and would only defer a request to
    the next pass)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def request_key(line: bytes) -> str:
    """The ``custom_id`` of a request line (both providers put it first; parsed in full if not)."""
    head = b'{"custom_id":"'
    if line.startswith(head):
        end = line.index(b'"', len(head))
        return line[len(head):end].decode()
    return str(orjson.loads(line)["custom_id"])
