"""Rows from the user's own data: jsonl, and every other table a user already has — a JSON list, CSV/TSV,
Parquet, a ``datasets`` ``save_to_disk`` directory or cache directory, or a Hub dataset
``hf:org/name[:config]:split`` — with its columns renamed to the fields a command reads.

Why this shape:
* every reader of rows in synthkd goes through :func:`synthkd.jsonl_io.iter_lines`; it hands any source
  that is not a plain jsonl file to :func:`iter_encoded` here, which yields each row as one JSON line
  with its *location*.  So every command, stage, validator and estimate reads every format the same
  way, and every error keeps the form ``file:location: field 'x': ...`` before any request is sent;
* a location is the row's line for text files (jsonl, and CSV: the line the row starts on, the header
  being line 1) and ``row N`` (0-based, as ``dataset[N]``) for sources without lines (Parquet, a JSON
  list, Arrow, a Hub dataset): :class:`RowIndex` prints itself that way in those messages;
* a plain jsonl file (no column map, no limit) never comes here: it stays on the streaming fast path;
  Parquet is read in record batches and Arrow is memory-mapped, so memory stays flat too;
* a table row without an ``id`` column gets its 0-based row position as its id, the same for the same
  data in any format (a CSV and the Parquet file made from it share ids, and so cache hits and resumes);
* ``datasets`` (a core dependency) is imported only for Arrow, dataset directories and ``hf:``; it is
  given no ``trust_remote_code`` and honours ``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` and its cache
  (``HF_DATASETS_CACHE``, ``HF_HOME``), so an offline machine reads a Hub dataset it has downloaded before.

A column map and a row limit travel with the input path itself (:func:`bind`): a :class:`SourcePath` is
a :class:`pathlib.Path` that also carries them, so the readers need no new argument on the way.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import orjson

from synthkd.errors import InputError
from synthkd.options import opt, register_feature

__all__ = ["InputOptions", "RowIndex", "as_path", "SourcePath", "bind", "source_kind", "iter_encoded", "iter_rows", "is_plain_jsonl",
           "is_source_spec", "source_problem", "parse_columns", "HF_PREFIX", "source_fingerprint", "PROBLEM_MARK"]

HF_PREFIX = "hf:"
TEXT_KINDS = ("jsonl", "csv", "tsv")
_SUFFIX_KIND = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow"}
_BATCH = 2048


class RowIndex(int):
    """A row's 0-based position in a source without lines; printed ``row N`` in ``file:row N:`` messages."""

    def __str__(self) -> str:
        return f"row {int(self)}"

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else int(self).__format__(spec)


_PathBase: Any = type(Path())


class SourcePath(_PathBase):  # type: ignore[misc]
    """A path (or ``hf:`` spec) that carries how to read it: ``columns`` (field -> the source column it is
    read from) and ``limit`` (read only the first N rows: a dry run).  Paths derived from it (its parent,
    ``with_name``...) are plain paths again as far as the map and limit are concerned."""

    columns: dict[str, str] | None = None
    limit: int | None = None


def bind(path: str | Path | None, columns: Mapping[str, str] | None = None, limit: int | None = None) -> Any:
    """``path`` with a column map and a row limit attached (``path`` unchanged when there are neither)."""
    if path is None:
        return None
    if not columns and limit is None:
        return path if isinstance(path, Path) else Path(path)
    sp = SourcePath(str(path))
    sp.columns = dict(columns or {}) or None
    sp.limit = limit
    return sp


def as_path(path: str | Path) -> Path:
    """``path`` as a Path, a :class:`SourcePath` kept as it is (``Path(p)`` would drop its column map)."""
    return path if isinstance(path, Path) else Path(path)


def parse_columns(items: list[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``--column FIELD=COLUMN`` (repeated) as a dict (a mapping, from YAML, is checked the same way)."""
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        pairs = []
        for item in items or []:
            field, sep, column = str(item).partition("=")
            if not sep:
                raise InputError([f"--column {item!r}: expected FIELD=COLUMN (e.g. --column prompt=question)"])
            pairs.append((field, column))
    out: dict[str, str] = {}
    problems: list[str] = []
    for field, column in pairs:
        field = field.strip()
        if not field or not isinstance(column, str) or not column.strip():
            problems.append(f"column map {field!r}: {column!r}: give a field name and a column name")
        elif field in out:
            problems.append(f"column map: field {field!r} is mapped twice")
        else:
            out[field] = column.strip()
    sources = [c for c in out.values()]
    dup = sorted({c for c in sources if sources.count(c) > 1})
    if dup:
        problems.append(f"column map: column {dup[0]!r} is read as two fields")
    if problems:
        raise InputError(problems)
    return out


@dataclass(kw_only=True)
class InputOptions:
    """How a command reads its rows, declared once for every command and stage that reads rows: the
    column map (``--column FIELD=COLUMN``; a stage's ``columns: {FIELD: COLUMN}``) and the dry run's row
    limit (``--limit N``: CLI only; ``synthkd run --limit`` applies it to a pipeline's own inputs)."""

    columns: dict[str, str] = opt(default_factory=dict, help="Read a column of the input under the field name the "
                                  "command expects, FIELD=COLUMN (repeat for several; e.g. --column prompt=question "
                                  "--column label=intent).  YAML: a stage's columns: {FIELD: COLUMN}.",
                                  flags=("--column",), cli_type=Optional[list[str]], cli_parse=lambda v: parse_columns(v),
                                  metavar="FIELD=COLUMN")
    limit: Optional[int] = opt(None, help="Dry run: only the first N input rows (or results), their prompts and "
                               "answers printed side by side, with the cost estimate for the whole input.",
                               ge=1, stage=False)


register_feature("input", InputOptions, command=("complete",), stage=None)


def is_source_spec(path: str | Path) -> bool:
    """An ``hf:`` Hub dataset spec (not a file path)."""
    return str(path).startswith(HF_PREFIX)


def _split_suffix(path: Path) -> tuple[Path, str | None]:
    """``DIR:SPLIT`` for a dataset directory that holds several splits (the directory exists, the name
    with ``:SPLIT`` does not)."""
    s = str(path)
    if not path.exists() and ":" in path.name:
        head, _, split = s.rpartition(":")
        if split and Path(head).is_dir():
            return Path(head), split
    return path, None


def source_kind(path: str | Path) -> str:
    """jsonl | json | csv | tsv | parquet | arrow | dir | hf: how a source is read.

    A ``.json`` file whose first character is ``[`` is a JSON list of rows; any other ``.json`` is JSON
    lines (the convention of many published data sets).  Unknown suffixes are jsonl, as before."""
    if is_source_spec(path):
        return "hf"
    p, split = _split_suffix(Path(path))
    if split is not None or p.is_dir():
        return "dir"
    kind = _SUFFIX_KIND.get(p.suffix.lower())
    if kind:
        return kind
    if p.suffix.lower() == ".json":
        try:
            with open(p, "rb") as f:
                head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        except OSError:
            return "jsonl"  # the jsonl reader names the problem
        return "json" if head.startswith(b"[") else "jsonl"
    return "jsonl"


def is_plain_jsonl(path: str | Path) -> bool:
    """A jsonl file with neither a column map nor a limit: read on the fast path, untouched."""
    if getattr(path, "columns", None) or getattr(path, "limit", None) is not None:
        return False
    return source_kind(path) == "jsonl"


def source_problem(path: Path) -> str | None:
    """Why an input that is not a plain file cannot be read (checked with the other paths, before
    anything is read): a malformed ``hf:`` spec, a directory that holds no dataset.  None when fine."""
    if is_source_spec(path):
        try:
            _parse_hf(str(path))
        except InputError as exc:
            return _why(exc, path)
        return None
    p, split = _split_suffix(path)
    if p.is_dir():
        try:
            _dir_shards(p, split)
        except InputError as exc:
            return _why(exc, p)
        return None
    return None


def _why(exc: InputError, path: str | Path) -> str:
    msg = exc.problems[0] if exc.problems else str(exc)
    return msg.removeprefix(f"{path}: ")


# ------------------------------------------------------------------------------------------- readers
def iter_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(location, row) for every row of any source, the column map applied, ids added to table rows
    without one, stopping after ``limit`` rows."""
    columns = getattr(path, "columns", None) or {}
    limit = getattr(path, "limit", None)
    kind = source_kind(path)
    if kind == "jsonl":
        rows = _jsonl_rows(Path(path))
    else:
        rows = _table_rows(path, kind, columns)
    n = 0
    for loc, row in rows:
        if limit is not None and n >= limit:
            return
        n += 1
        if columns and isinstance(row, dict):
            row = _rename(row, columns)
        yield loc, row


def iter_encoded(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """:func:`iter_rows` as (location, one JSON line): what :func:`synthkd.jsonl_io.iter_lines` yields."""
    for loc, row in iter_rows(path):
        if isinstance(row, _Raw):
            yield loc, bytes(row)
        elif isinstance(row, _Problem):
            yield loc, PROBLEM_MARK + str(row).encode()
        else:
            try:
                yield loc, orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
            except TypeError as exc:
                raise InputError([f"{path}:{loc}: a value cannot be written as JSON ({exc})"]) from None


#: starts a "line" that is a row the source could not give (the rest says why): the jsonl readers report
#: it as ``file:location: <why>``, as they report a line that is not JSON
PROBLEM_MARK = b"\x00"


def _rename(row: dict[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    out = dict(row)
    taken = {col: out.pop(col) for col in columns.values() if col in out}
    for field, col in columns.items():
        if col in taken:
            out[field] = taken[col]
    return out


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """A jsonl file with a column map or limit: parsed here (bad lines are left as they are, for the
    caller's validator to name)."""
    from synthkd.jsonl_io import raw_lines

    for lineno, line in raw_lines(path):
        if not line.strip():
            continue
        try:
            yield lineno, orjson.loads(line)
        except orjson.JSONDecodeError:
            yield lineno, _Raw(line)


class _Raw(bytes):
    """A line that is not JSON: passed through as it is, so the validator reports it as before."""


def _table_rows(path: str | Path, kind: str, columns: Mapping[str, str]) -> Iterator[tuple[int, Any]]:
    if kind in ("csv", "tsv"):
        return _csv_rows(Path(path), "\t" if kind == "tsv" else ",", columns)
    if kind == "json":
        return _json_list_rows(Path(path), columns)
    if kind == "parquet":
        return _parquet_rows(Path(path), columns)
    return _dataset_rows(path, kind, columns)


def _check_mapped(where: str, names: list[str], columns: Mapping[str, str]) -> None:
    """Every column the map reads must be in the source (said once, naming the columns there are)."""
    missing = [(f, c) for f, c in columns.items() if c not in names]
    if missing:
        have = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        raise InputError([f"{where}: column {c!r} (read as field {f!r}) not found; its columns: {have}"
                          for f, c in missing])


def _with_id(names: list[str], columns: Mapping[str, str]) -> bool:
    """Whether rows need an id made from their position: no ``id`` column, and none mapped to ``id``."""
    return "id" not in columns and "id" not in names


def _csv_rows(path: Path, delimiter: str, columns: Mapping[str, str]) -> Iterator[tuple[int, Any]]:
    from synthkd.jsonl_io import open_input

    with open_input(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError([f"{path}:1: not a readable CSV header ({exc})"]) from None
        if header is None:
            raise InputError([f"{path}: no rows (the file is empty)"])
        header = [h.strip() for h in header]
        blank = [i + 1 for i, h in enumerate(header) if not h]
        dup = sorted({h for h in header if h and header.count(h) > 1})
        if blank or dup:
            raise InputError([f"{path}:1: the header needs a distinct name for every column"
                              + (f" (column {blank[0]} has none)" if blank else f" ({dup[0]!r} repeats)")])
        _check_mapped(str(path), header, columns)
        add_id = _with_id(header, columns)
        index = 0
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError([f"{path}:{start}: not valid CSV ({exc})"]) from None
            except UnicodeDecodeError as exc:
                raise InputError([f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start} of a block "
                                  f"after line {start - 1})"]) from None
            line, start = start, reader.line_num + 1
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # a blank line
            if len(values) != len(header):
                yield line, _Problem(f"{len(values)} values, the header has {len(header)} columns")
                index += 1
                continue
            row: dict[str, Any] = dict(zip(header, values))
            if add_id:
                row = {"id": index, **row}
            index += 1
            yield line, row


class _Problem(str):
    """A row that could not be read as a row (a CSV line with the wrong number of values): the readers
    report it at its location with the others (see :data:`PROBLEM_MARK`)."""


def _json_list_rows(path: Path, columns: Mapping[str, str]) -> Iterator[tuple[int, Any]]:
    from synthkd.jsonl_io import UTF8_BOM, open_input

    with open_input(path) as f:
        data = f.read()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    try:
        rows = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        line = data[: getattr(exc, "pos", 0)].count(b"\n") + 1
        raise InputError([f"{path}:{line}: not valid JSON ({exc})"]) from None
    if not isinstance(rows, list):
        raise InputError([f"{path}: a .json input is a list of row objects, or one JSON object per line"])
    names = sorted({k for r in rows[:1000] if isinstance(r, dict) for k in r})
    _check_mapped(str(path), names, columns)
    add_id = _with_id(names, columns)
    for i, row in enumerate(rows):
        if add_id and isinstance(row, dict) and "id" not in row:
            row = {"id": i, **row}
        yield RowIndex(i), row


def _parquet_rows(path: Path, columns: Mapping[str, str]) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError([f"{path}: reading Parquet needs pyarrow (pip install datasets)"]) from None
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise InputError([f"{path}: file not found"]) from None
    except Exception as exc:  # noqa: BLE001  (pyarrow raises ArrowInvalid, OSError...: all "not parquet")
        raise InputError([f"{path}: not a readable Parquet file ({exc})"]) from None
    names = list(pf.schema_arrow.names)
    _check_mapped(str(path), names, columns)
    add_id = _with_id(names, columns)
    labels = _parquet_class_labels(pf)
    i = 0
    for batch in pf.iter_batches(batch_size=_BATCH):
        for row in batch.to_pylist():
            _decode_labels(row, labels)
            if add_id:
                row = {"id": i, **row}
            yield RowIndex(i), row
            i += 1


def _parquet_class_labels(pf: Any) -> dict[str, list[str]]:
    """Class-label columns of a Parquet file written by ``datasets`` (its features in the schema metadata):
    column -> names, so label ids are read as the names a teacher and a student need."""
    meta = pf.schema_arrow.metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return {}
    try:
        feats = orjson.loads(raw).get("info", {}).get("features", {})
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return {k: list(v["names"]) for k, v in feats.items()
            if isinstance(v, dict) and v.get("_type") == "ClassLabel" and isinstance(v.get("names"), list)}


def _decode_labels(row: dict[str, Any], labels: Mapping[str, list[str]]) -> None:
    for col, names in labels.items():
        v = row.get(col)
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names):
            row[col] = names[v]


# ---------------------------------------------------------------------- datasets: arrow, dirs, the Hub
_HF_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _parse_hf(spec: str) -> tuple[str, str | None, str]:
    """``hf:org/name[:config]:split`` -> (name, config, split)."""
    parts = spec[len(HF_PREFIX):].split(":")
    if len(parts) not in (2, 3) or not all(parts) or not _HF_RE.match(parts[0]):
        raise InputError([f"{spec}: a Hub dataset is written hf:org/name:split or hf:org/name:config:split "
                          "(e.g. hf:PolyAI/banking77:train)"])
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


_SHARD_RE = re.compile(r"^(?P<builder>.+?)-(?P<split>[\w.]+?)(?:-(?P<shard>\d{5})-of-(?P<of>\d{5}))?\.arrow$")


def _dir_shards(path: Path, split: str | None) -> tuple[str, Any]:
    """What a directory holds: ("saved", dir) for a ``save_to_disk`` dataset (``state.json``), or
    ("cache", [arrow files in order]) for a ``datasets`` cache directory (``<builder>-<split>[-NNNNN-of-NNNNN].arrow``
    under ``<name>/<config>/<version>/<hash>/``).  Several splits need ``DIR:SPLIT``; several cached
    data sets or versions with that split are refused, naming them."""
    if (path / "state.json").is_file():
        return "saved", path
    if (path / "dataset_dict.json").is_file():
        try:
            splits = orjson.loads((path / "dataset_dict.json").read_bytes()).get("splits", [])
        except (OSError, orjson.JSONDecodeError, AttributeError):
            splits = []
        if split is None and len(splits) == 1:
            split = splits[0]
        if split is None or split not in splits:
            raise InputError([f"{path}: a saved DatasetDict with splits {', '.join(map(str, splits))}: "
                              f"give one as {path}/<split> or {path}:<split>"])
        return "saved", path / split
    found: dict[tuple[Path, str], list[tuple[int, Path]]] = {}
    for f in sorted(path.rglob("*.arrow")):
        m = _SHARD_RE.match(f.name)
        if not m or m.group("builder").startswith("cache-"):  # cache-<fingerprint>.arrow: a map() result
            continue
        found.setdefault((f.parent, m.group("split")), []).append((int(m.group("shard") or 0), f))
    if not found:
        raise InputError([f"{path}: is a directory, not a file or a dataset (no state.json from save_to_disk, "
                          "dataset_dict.json, or <name>-<split>.arrow files of a datasets cache directory)"])
    splits = sorted({s for _, s in found})
    if split is None:
        if len(splits) > 1:
            raise InputError([f"{path}: a datasets cache with splits {', '.join(splits)}: give one as {path}:<split>"])
        split = splits[0]
    dirs = sorted(d for d, s in found if s == split)
    if not dirs:
        raise InputError([f"{path}: no split {split!r} in this datasets cache (splits: {', '.join(splits)})"])
    if len(dirs) > 1:
        raise InputError([f"{path}: split {split!r} is cached for several data sets or versions: "
                          + "; ".join(str(d) for d in dirs[:5]) + " — give the one to read"])
    return "cache", [f for _, f in sorted(found[(dirs[0], split)])]


def _load_dataset(path: str | Path, kind: str) -> Any:
    """The ``datasets.Dataset`` an Arrow file, a dataset directory or an ``hf:`` spec names."""
    try:
        import datasets
    except ImportError:
        raise InputError([f"{path}: reading it needs the datasets package (pip install datasets)"]) from None
    datasets.logging.disable_progress_bar()
    try:
        if kind == "arrow":
            return datasets.Dataset.from_file(str(path))
        if kind == "dir":
            p, split = _split_suffix(Path(path))
            what, where = _dir_shards(p, split)
            if what == "saved":
                return datasets.load_from_disk(str(where))
            parts = [datasets.Dataset.from_file(str(f)) for f in where]
            return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        name, config, split = _parse_hf(str(path))
        return datasets.load_dataset(name, config, split=split)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (datasets raises many kinds: each is "cannot load it")
        hint = ""
        if kind == "hf":
            offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                          for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
            hint = ("; offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE): only a data set already in the "
                    "datasets cache can be read" if offline else
                    "; check the name, config and split, and the network (or the cache, offline)")
        raise InputError([f"{path}: cannot load it ({type(exc).__name__}: {str(exc)[:300]}){hint}"]) from None


def _dataset_rows(path: str | Path, kind: str, columns: Mapping[str, str]) -> Iterator[tuple[int, Any]]:
    ds = _load_dataset(path, kind)
    names = list(ds.column_names)
    _check_mapped(str(path), names, columns)
    add_id = _with_id(names, columns)
    labels = {k: list(f.names) for k, f in ds.features.items() if type(f).__name__ == "ClassLabel"}
    i = 0
    for batch in ds.with_format(None).iter(batch_size=_BATCH):
        cols = list(batch)
        for values in zip(*(batch[c] for c in cols)):
            row = dict(zip(cols, values))
            _decode_labels(row, labels)
            if add_id:
                row = {"id": i, **row}
            yield RowIndex(i), row
            i += 1


def source_fingerprint(path: str | Path, file_hash: Any = None) -> str | None:
    """What identifies the rows of a source that is not one file (a pipeline's fingerprint of its inputs):
    an ``hf:`` data set's own fingerprint; for ``DIR:SPLIT``, ``file_hash(DIR)`` and the split.  None for a
    file or a plain directory (hashed by its bytes)."""
    if is_source_spec(path):
        return str(_load_dataset(path, "hf")._fingerprint)
    p, split = _split_suffix(Path(path))
    if split is not None and file_hash is not None:
        return f"{file_hash(p)}:{split}"
    return None
