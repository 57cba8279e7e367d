"""Persistent per-request cache: every paid answer is stored before anyone else sees it.

Why SQLite: one file, atomic commits, and WAL mode lets several processes read and write the same cache
at once (two pipelines sharing a teacher cache, or a rerun while an old process is still exiting).

The key is a content hash of what determines the answer — endpoint, model, messages or prompt, sampling
parameters and the sample index — and never of the API key or the base URL, so a rotated key or a
different proxy still hits the cache, and no credential can ever be written to it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

# Parameters that change how a request is sent but not what the model answers.
_NON_SEMANTIC_PARAMS = frozenset({"timeout", "stream", "user", "extra_headers"})


def request_cache_key(
    model: str,
    *,
    messages: list[dict[str, Any]] | None = None,
    prompt: str | None = None,
    params: dict[str, Any] | None = None,
    sample_index: int = 0,
) -> str:
    """A stable sha256 of everything that determines the teacher's answer (and nothing secret)."""
    semantic = {k: v for k, v in (params or {}).items() if k not in _NON_SEMANTIC_PARAMS and v is not None}
    payload = {
        "v": 1,
        "model": model,
        "messages": messages,
        "prompt": prompt,
        "params": semantic,
        "sample": sample_index,
    }
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class RequestCache:
    """A SQLite table ``key -> response`` that is safe to share between processes."""

    def __init__(self, path: str | Path, *, timeout_s: float = 60.0) -> None:
        """Open (or create) the cache; an unusable path is one clear :class:`PathError` (exit 2), not a
        sqlite traceback: a directory, a read-only place, or a file that is not a SQLite database."""
        from synthkd.jsonl_io import PathError

        self.path = Path(path)
        self._lock = threading.Lock()
        #: The first error a write raised (disk full, read-only...), else None: from then on an answer
        #: may be missing from the cache, and a caller must not claim "answers kept" (F1).
        self.write_error: BaseException | None = None
        conn = None
        try:
            if self.path.is_dir():
                raise PathError([f"{self.path}: is a directory, not a request cache file"])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn = sqlite3.connect(
                str(self.path), timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._setup(timeout_s)
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            why = getattr(exc, "strerror", None) or str(exc)
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in why:
                why = "not a SQLite database (not a synthkd request cache)"
            raise PathError([f"{self.path}: cannot use it as the request cache ({why})"]) from None

    def _setup(self, timeout_s: float) -> None:
        """WAL mode and the table, retried while another process is doing the same.

        Why the loop: switching a new database to WAL takes an exclusive lock for which SQLite does not
        call its busy handler, so two processes opening one fresh cache at the same instant fail with
        "database is locked" about one time in four (measured) instead of waiting.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only an OS crash can lose
                # the last few commits.  FULL would fsync per answer and cost ~ms per request.
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS responses ("
                    " key TEXT PRIMARY KEY, model TEXT, created REAL NOT NULL, response BLOB NOT NULL)"
                )
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def put(self, key: str, model: str, response: dict[str, Any]) -> None:
        blob = orjson.dumps(response)
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO responses (key, model, created, response) VALUES (?, ?, ?, ?)",
                    (key, model, time.time(), blob),
                )
            except (sqlite3.Error, OSError) as exc:
                if self.write_error is None:
                    self.write_error = exc
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
