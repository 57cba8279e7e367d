"""Streaming jsonl input and crash-safe, append-only jsonl output.

Why this shape:
* input is validated in one streaming pass *before any request is sent*, so a typo on line 90,000
  costs nothing; every problem names the file, the line and the field;
* ids are remembered as 8-byte hashes in numpy arrays, not as Python strings, so memory stays flat
  whether the file has 10 thousand or 10 million rows;
* output is appended one whole line per ``write`` and never rewritten; on restart a torn last line
  (a crash mid-write) is cut off and the ids already present are skipped, so nothing is written twice;
* every path a command will read or write is checked in one place (:func:`check_paths`) before anything
  is read, written or paid for: missing or directory inputs, unwritable or directory outputs, and two
  options naming the same file (through symlinks and hard links too) are refused with exit 2;
* a write that fails mid-run (disk full, file size limit, read-only) raises :class:`OutputWriteError`,
  one clear line naming the file; the rows before it are whole, and a rerun resumes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

import numpy as np
import orjson

from synthkd.errors import MAX_REPORTED_ERRORS, InputError, OutputWriteError, PathError  # noqa: F401 (re-exported: their home was here)
from synthkd.row_source import PROBLEM_MARK, is_plain_jsonl, is_source_spec, iter_encoded, source_kind, source_problem


def check_id(row_id: Any) -> str | None:
    """Why ``row_id`` cannot be an id (strings and 64-bit integers can), or None.

    A JSON integer beyond 64 bits reaches us as a float (the parser's limit), so two such ids could not
    be told apart: it is refused with its own message rather than accepted and silently merged.
    """
    if isinstance(row_id, str) and row_id:
        return None
    if isinstance(row_id, int) and not isinstance(row_id, bool):
        return None
    if isinstance(row_id, float) and row_id.is_integer() and not -(2 ** 63) <= row_id < 2 ** 64:
        return ("field 'id': integer id out of range (must fit in 64 bits, -2^63 .. 2^64-1); "
                "write a larger id as a string")
    return "field 'id': must be a non-empty string or an integer"


def id_hash(row_id: Any) -> int:
    """64-bit hash of an id; ``1`` and ``"1"`` are different ids."""
    return int.from_bytes(hashlib.blake2b(orjson.dumps(row_id), digest_size=8).digest(), "little", signed=True)


UTF8_BOM = b"\xef\xbb\xbf"


def open_input(path: str | Path) -> BinaryIO:
    """Open a file to read, or raise InputError saying why not (missing, a directory, unreadable)."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise InputError([f"{path}: is a directory, not a file"]) from None
    except OSError as exc:
        raise InputError([f"{path}: cannot read it ({exc.strerror or exc})"]) from None


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) for every line; a UTF-8 byte order mark before line 1 is dropped.

    Why accept the BOM: Windows tools (Notepad, PowerShell ``Out-File``, Excel's "UTF-8" export) write one,
    and it carries no data; every jsonl reader here goes through this one function.

    Every other source (CSV, Parquet, a JSON list, a dataset directory, ``hf:``; or a jsonl file read with
    a column map or a row limit: :func:`synthkd.row_source.bind`) is read by :mod:`synthkd.row_source`,
    which gives each row as one JSON line at its location (a line number, or ``row N``), so every reader
    below reads every format, with the same ``file:location: field`` errors.
    """
    if not is_plain_jsonl(path):
        yield from iter_encoded(path)
        return
    yield from raw_lines(path)


def raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """:func:`iter_lines` of a jsonl file itself (the fast path)."""
    with open_input(path) as f:
        for lineno, line in enumerate(f, 1):
            if lineno == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM):]
            yield lineno, line


def scan_jsonl(path: str | Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line that is valid JSON, for validators that report
    every problem at once: a bad line is added to ``problems`` as ``file:line: not valid JSON`` and
    skipped, and the scan stops once ``problems`` (the caller's too) holds MAX_REPORTED_ERRORS."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"{path}:{lineno}: {_unreadable(line, exc)}")
        else:
            yield lineno, row
        if len(problems) >= MAX_REPORTED_ERRORS:
            return


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; raises InputError on the first bad line."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            yield lineno, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError([f"{path}:{lineno}: {_unreadable(line, exc)}"]) from None


def _unreadable(line: bytes, exc: Exception) -> str:
    """Why a line is not a row: not JSON, or what the source said (:data:`synthkd.row_source.PROBLEM_MARK`)."""
    if line.startswith(PROBLEM_MARK):
        return line[len(PROBLEM_MARK):].decode("utf-8", "replace")
    return f"not valid JSON ({exc})"


def count_rows(path: Path) -> int:
    """Rows (non-blank lines) in a jsonl file (0 when there is no file): what a stage's manifest counts."""
    if not is_plain_jsonl(path):
        if not is_source_spec(path) and not Path(path).exists():
            return 0
        return sum(1 for _ in iter_encoded(path))
    if not path.is_file():
        return 0
    n = 0
    with open(path, "rb") as f:
        for line in f:
            n += bool(line.strip())
    return n


def load_rows(path: Path) -> tuple[list[Any], list[int]]:
    """All rows of a jsonl file with their line numbers (for file:line errors); an empty file is an error."""
    path = path if isinstance(path, Path) else Path(path)  # a SourcePath keeps its column map
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
    why = check_id(row["id"])
    if why:
        return why
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
    path = path if isinstance(path, Path) else Path(path)  # a SourcePath keeps its column map
    problems: list[str] = []
    hashes = array("q")
    rows = 0
    for lineno, row in scan_jsonl(path, problems):
        rows += 1
        why = _check_prompt_row(row)
        if why:
            problems.append(f"{path}:{lineno}: {why}")
        else:
            hashes.append(id_hash(row["id"]))
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
    """One ``os.write`` per row on an O_APPEND descriptor: a row is on disk whole, or (torn) repaired.

    Never opened with ``O_TRUNC``: a writer only ever adds rows, so no option mix-up can empty a file of
    finished rows.  A failed write (disk full...) takes back the part of the row it wrote, so the file
    still ends with a whole line, and raises :class:`OutputWriteError`; were the process killed before
    that, the next run's :func:`repair_tail` would cut the torn line instead.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise OutputWriteError(self.path, exc) from None
        self.count = 0

    def write(self, row: dict[str, Any]) -> None:
        data = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            written = len(data) - len(view)
            if written:  # we hold the output's lock: the last `written` bytes are this row's
                try:
                    os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                except OSError:
                    pass  # repair_tail cuts it on the next run
            raise OutputWriteError(self.path, exc) from None
        self.count += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "AppendWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RejectsWriter(AppendWriter):
    """The rejects file of a resumable job: appended to, never truncated, tidied at the end.

    The rule (why: a rerun must not lose what an earlier attempt learnt, and the file must not grow
    stale or duplicate entries):

    * an entry of an earlier attempt stays until its row is redone: this run writes that id to the
      output, or rejects it again (the new entry replaces the old), or the id is already in the output
      (a later attempt succeeded);
    * so an attempt that is interrupted before it reaches an old rejected row keeps that row's entry,
      and a completed rerun leaves exactly one entry per row that is still rejected;
    * lines that are not JSON objects with an ``id`` are never removed (we do not delete what we
      cannot read).

    The tidy-up rewrites the file through a temporary file and ``os.replace`` (atomic), only when an
    old entry is superseded; if that fails (disk full) the file keeps the superseded entries too, and
    the next run tidies it.  Memory: only the ids of the old entries are kept.
    """

    def __init__(self, path: str | Path, done: "SortedIdSet | None" = None) -> None:
        path = Path(path)
        self._old_ids: set[int] = set()
        self._redone: set[int] = set()
        self._done = done
        self._old_size = 0
        if path.is_file():
            repair_tail(path)  # a torn entry would glue itself to the first new one
            self._old_size = path.stat().st_size
            for _, line in iter_lines(path):
                rid = _entry_id(line)
                if rid is not None:
                    self._old_ids.add(id_hash(rid))
        super().__init__(path)

    def write(self, row: dict[str, Any]) -> None:
        super().write(row)
        self.redone(row.get("id"))

    def redone(self, row_id: Any) -> None:
        """Row ``row_id`` was handled by this run (written or rejected): its old entry is superseded."""
        if self._old_ids and row_id is not None:
            h = id_hash(row_id)
            if h in self._old_ids:
                self._redone.add(h)

    def _superseded(self, rid: Any) -> bool:
        return rid is not None and (id_hash(rid) in self._redone or (self._done is not None and rid in self._done))

    def close(self) -> None:
        super().close()
        if not self._old_ids or not (self._redone or self._done):
            return
        try:
            with open_input(self.path) as f:
                old = f.read(self._old_size)
                new = f.read()
            keep = [ln for ln in old.splitlines(keepends=True) if not self._superseded(_entry_id(ln))]
            if sum(map(len, keep)) == len(old):
                return
            atomic_write_bytes(self.path, b"".join(keep) + new)
        except (OSError, InputError):
            pass  # the superseded entries stay until the next run tidies them; nothing is lost
        finally:
            self._old_ids = set()


def _entry_id(line: bytes) -> Any:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return row.get("id") if isinstance(row, dict) else None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` (through a symlink: its target) by ``data`` all at once, or leave it as it was.

    Raises :class:`OutputWriteError` naming ``path`` when the write fails (disk full, read-only...).
    """
    target = Path(os.path.realpath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise OutputWriteError(path, exc) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write a ``--summary-json`` file whole (atomically); a failure is an :class:`OutputWriteError`."""
    atomic_write_bytes(path, (orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
                              + b"\n"))


SQLITE_MAGIC = b"SQLite format 3\x00"


def _denied(path: Path) -> str:
    """Why we may not write at ``path``: a read-only file system, or permissions."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


def _output_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file (created if missing, with its directories), or None.

    The output's directory must be writable too, even when the file exists: the lock file, the rejects
    tidy-up and atomic summaries create files beside it.
    """
    if path.is_dir():
        return "is a directory, not a file"
    if path.exists() and not path.is_file():
        return "is not a regular file"
    target = Path(os.path.realpath(path))
    if target.exists() and not os.access(target, os.W_OK):
        return f"cannot write it ({_denied(target)})"
    return _creatable(target.parent)


def _creatable(parent: Path) -> str | None:
    """Why nothing can be created in ``parent`` (made with its missing parents), or None."""
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create it: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write in {parent} ({_denied(parent)})"
    return None


def _output_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an output directory (created if missing, with its parents), or None."""
    if path.exists() and not path.is_dir():
        return "is a file, not a directory"
    target = Path(os.path.realpath(path))
    if target.is_dir():
        return None if os.access(target, os.W_OK | os.X_OK) else f"cannot write in it ({_denied(target)})"
    return _creatable(target.parent)


def _cache_problem(path: Path) -> str | None:
    why = _output_problem(path)
    if why is None and path.is_file() and path.stat().st_size:
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            return f"cannot read it ({exc.strerror or exc})"
        if head != SQLITE_MAGIC:
            return "is not a SQLite database (not a synthkd request cache); give another --cache path"
    return why


def _identity(path: Path) -> tuple[Any, ...]:
    """What makes two paths the same file: device and inode when it exists (symlinks and hard links
    included), else the fully resolved path."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def check_paths(
    inputs: Mapping[str, Path | None] | None = None,
    outputs: Mapping[str, Path | None] | None = None,
    cache: Path | None = None,
    out_dirs: Mapping[str, Path | None] | None = None,
) -> None:
    """Refuse, before anything is read, written or paid for, every path a command cannot use.

    ``inputs`` / ``outputs``: option name (as the user typed it, e.g. ``"--rejects"``) -> path, None
    for an option not given.  ``cache``: the ``--cache`` file, if given.  Checked: inputs exist, are
    files and readable; outputs (and the cache) are not directories and can be created or written,
    the cache is a SQLite file; ``out_dirs`` (a trainer's ``--output``) are directories, or can be made,
    and can be written in; and no two of them name the same file, through symlinks or hard links
    (``--rejects`` naming the input would empty it; ``--summary-json`` naming the output would replace
    the finished rows).  Raises :class:`PathError` listing every problem (exit 2).

    Why one function: every command had its own "--output must differ from --input" check and none
    covered the other paths; one place keeps the rule identical everywhere.
    """
    problems: list[str] = []
    named: list[tuple[str, Path]] = []
    for flag, path in (inputs or {}).items():
        if path is None:
            continue
        path = path if isinstance(path, Path) else Path(path)
        if source_kind(path) in ("hf", "dir"):  # an hf: spec, a dataset directory (DIR or DIR:SPLIT)
            why = source_problem(path)
            if why:
                problems.append(f"{flag} {path}: {why}")
            if not is_source_spec(path):
                named.append((flag, path))
            continue
        named.append((flag, path))
        if not path.exists():
            problems.append(f"{flag} {path}: file not found")
        elif path.is_dir():
            problems.append(f"{flag} {path}: is a directory, not a file")
        elif not os.access(path, os.R_OK):
            problems.append(f"{flag} {path}: cannot read it (permission denied)")
    for flag, path, check in [(f, p, _output_problem) for f, p in (outputs or {}).items()] + [
            ("--cache", cache, _cache_problem)]:
        if path is None:
            continue
        path = Path(path)
        named.append((flag, path))
        why = check(path)
        if why:
            problems.append(f"{flag} {path}: {why}")
    for flag, path in (out_dirs or {}).items():
        if path is None:
            continue
        path = Path(path)
        clash = any(_identity(path) == _identity(p) for _, p in named)  # said once, below
        named.append((flag, path))
        why = None if clash else _output_dir_problem(path)
        if why:
            problems.append(f"{flag} {path}: {why}")
    seen: dict[tuple[Any, ...], str] = {}
    for flag, path in named:
        key = _identity(path)
        if key in seen:
            problems.append(f"{flag} {path}: names the same file as {seen[key]}; give each its own file")
        else:
            seen[key] = f"{flag} {path}"
    if problems:
        raise PathError(problems)


class OutputLock:
    """An exclusive lock next to the output, so two processes never append to the same file.

    The lock is ``flock`` on ``<output>.lock`` beside the output's real path (symlinks resolved, so two
    names of one file share the lock).  The holder writes its pid into it, so a second writer is told
    who holds it.

    Why the inode check: the lock file is removed at the end, and removing it *after* unlocking let a
    third process open the old inode while a fourth created a new one, so both could "hold" the lock.
    Now the holder unlinks it while still holding the lock, and whoever acquires a lock checks that
    the path still names the inode it locked; if not (it locked a file that was just removed), it
    retries on the new file.  So at any moment at most one process holds the lock on the inode that
    the path names.
    """

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        real = Path(os.path.realpath(self.output))
        self.path = real.with_name(real.name + ".lock")
        self._fd = -1

    def __enter__(self) -> "OutputLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    os.close(fd)
                    pid = f" (pid {holder})" if holder.isdigit() else ""
                    raise PathError([f"{self.output}: another synthkd process is writing it{pid}; "
                                     "wait for it to finish, or write to another file"]) from None
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # we locked a lock file that its holder removed as it finished: retry
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            raise PathError([f"{self.output}: cannot create its lock file {self.path} ({exc.strerror or exc})"]) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.path.unlink()  # while still holding the lock (see the class docstring)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1
