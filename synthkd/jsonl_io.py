"""Streaming jsonl input and crash-safe, append-only jsonl output.

Why this shape:
* input is validated in one streaming pass *before any request is sent*, so a typo on line 90,000
  costs nothing; every problem names the file, the line and the field;
* ids are remembered as 8-byte hashes in numpy arrays, not as Python strings, so memory stays flat
  whether the file has 10 thousand or 10 million rows;
* output is appended one whole line per ``write`` and never rewritten; on restart a torn last line
  (a crash mid-write) is cut off and the ids already present are skipped, so nothing is written twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson

MAX_REPORTED_ERRORS = 20


class InputError(ValueError):
    """Bad input, with every problem found (each naming file, line and field)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = "" if len(problems) < MAX_REPORTED_ERRORS else f"\n  (stopped after {MAX_REPORTED_ERRORS} problems)"
        super().__init__("invalid input:\n  " + "\n  ".join(problems) + more)


def id_hash(row_id: Any) -> int:
    """64-bit hash of an id; ``1`` and ``"1"`` are different ids."""
    return int.from_bytes(hashlib.blake2b(orjson.dumps(row_id), digest_size=8).digest(), "little", signed=True)


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; raises InputError on the first bad line."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError([f"{path}:{lineno}: not valid JSON ({exc})"]) from None


def load_rows(path: Path) -> tuple[list[Any], list[int]]:
    """All rows of a jsonl file with their line numbers (for file:line errors); an empty file is an error."""
    path = Path(path)
    if not path.exists():
        raise InputError([f"{path}: file not found"])
    rows, lines = [], []
    for lineno, row in iter_jsonl(path):
        rows.append(row)
        lines.append(lineno)
    if not rows:
        raise InputError([f"{path}: no rows (the file is empty)"])
    return rows, lines


def _check_prompt_row(row: Any) -> str | None:
    """Why this row cannot be sent, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    if "id" not in row:
        return "field 'id': missing"
    rid = row["id"]
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
        return "field 'id': must be a non-empty string or an integer"
    has_prompt, has_messages = "prompt" in row, "messages" in row
    if not has_prompt and not has_messages:
        return "field 'prompt' or 'messages': missing (one is required)"
    if has_prompt and has_messages:
        return "fields 'prompt' and 'messages': give only one"
    if has_prompt:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            return "field 'prompt': must be a non-empty string"
        return None
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        return "field 'messages': must be a non-empty list of {role, content} objects"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"field 'messages[{i}]': must be an object"
        if m.get("role") not in {"system", "user", "assistant", "developer", "tool"}:
            return f"field 'messages[{i}].role': must be one of system/user/assistant/developer/tool"
        if not isinstance(m.get("content"), (str, list)):
            return f"field 'messages[{i}].content': missing or not a string"
    return None


@dataclass
class ScanResult:
    rows: int
    id_hashes: np.ndarray  # sorted int64


def scan_prompt_file(path: str | Path) -> ScanResult:
    """Validate a prompt file end to end without keeping its rows; raise InputError listing problems."""
    path = Path(path)
    if not path.exists():
        raise InputError([f"{path}: file not found"])
    problems: list[str] = []
    hashes = array("q")
    rows = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rows += 1
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                problems.append(f"{path}:{lineno}: not valid JSON ({exc})")
            else:
                why = _check_prompt_row(row)
                if why:
                    problems.append(f"{path}:{lineno}: {why}")
                else:
                    hashes.append(id_hash(row["id"]))
            if len(problems) >= MAX_REPORTED_ERRORS:
                break
    if not problems and rows == 0:
        problems.append(f"{path}: no rows (the file is empty)")
    arr = np.frombuffer(hashes, dtype=np.int64).copy()
    del hashes
    arr.sort()
    if not problems and arr.size > 1:
        dup = np.flatnonzero(arr[1:] == arr[:-1])
        if dup.size:
            problems.extend(_describe_duplicates(path, set(arr[dup].tolist())))
    if problems:
        raise InputError(problems)
    return ScanResult(rows=rows, id_hashes=arr)


def _describe_duplicates(path: Path, dup_hashes: set[int]) -> list[str]:
    """Second pass, only over rows whose id hash repeats: name each duplicate id and its lines."""
    seen: dict[Any, int] = {}
    problems: list[str] = []
    for lineno, row in iter_jsonl(path):
        rid = row["id"]
        if id_hash(rid) not in dup_hashes:
            continue
        key = orjson.dumps(rid)
        if key in seen:
            problems.append(f"{path}:{lineno}: field 'id': duplicate id {rid!r} (first on line {seen[key]})")
            if len(problems) >= MAX_REPORTED_ERRORS:
                break
        else:
            seen[key] = lineno
    return problems


class SortedIdSet:
    """Membership test over a sorted int64 array of id hashes (8 bytes an id)."""

    def __init__(self, hashes: np.ndarray) -> None:
        self._h = hashes

    def __len__(self) -> int:
        return int(self._h.size)

    def __contains__(self, row_id: Any) -> bool:
        if self._h.size == 0:
            return False
        h = id_hash(row_id)
        i = int(np.searchsorted(self._h, h))
        return i < self._h.size and int(self._h[i]) == h


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no newline, or not valid JSON) left by a crash; return bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        # Find the start of the last line by scanning back in blocks.
        block = 1 << 16
        pos = size
        tail = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            # the last full line ends at the final b"\n" before EOF (or EOF itself if it ends with \n)
            body = tail[:-1] if tail.endswith(b"\n") else tail
            nl = body.rfind(b"\n")
            if nl >= 0:
                last_start = pos + nl + 1
                break
        else:
            last_start = 0
        f.seek(last_start)
        last = f.read()
        keep = size
        if not last.endswith(b"\n"):
            keep = last_start
        else:
            try:
                orjson.loads(last)
            except orjson.JSONDecodeError:
                keep = last_start
        if keep != size:
            f.truncate(keep)
        return size - keep


def index_output(path: Path, id_field: str = "id") -> SortedIdSet:
    """Ids already written to an output file (after repairing its tail)."""
    if not path.exists():
        return SortedIdSet(np.empty(0, dtype=np.int64))
    repair_tail(path)
    hashes = array("q")
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict) or id_field not in row:
            raise InputError([f"{path}:{lineno}: field '{id_field}': missing in an existing output row"])
        hashes.append(id_hash(row[id_field]))
    arr = np.frombuffer(hashes, dtype=np.int64).copy()
    arr.sort()
    return SortedIdSet(arr)


class AppendWriter:
    """One ``os.write`` per row on an O_APPEND descriptor: a row is on disk whole, or (torn) repaired."""

    def __init__(self, path: str | Path, *, truncate: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(self.path, flags, 0o644)
        self.count = 0

    def write(self, row: dict[str, Any]) -> None:
        data = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.count += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "AppendWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OutputLock:
    """An exclusive lock next to the output, so two processes never append to the same file."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".lock")

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise InputError([f"{self.path.parent / self.path.name[:-5]}: another synthkd process is writing it"]) from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
