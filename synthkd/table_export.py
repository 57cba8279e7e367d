"""``synthkd export``: a stage's rows (append-only jsonl) as a Parquet file or a ``datasets`` directory.

Why: synthkd writes jsonl, one whole line per row, because only that survives a crash mid-run and
resumes; the tools a user trains or analyses with read Parquet (pandas, polars, DuckDB, Spark) or a
``datasets`` ``save_to_disk`` directory (``load_from_disk``).  Export is the one-way step between them:

* every field of every row becomes a column (a row without it gets null), in order of first appearance;
* a field whose values Arrow cannot hold in one type (a number in some rows, a string in others; lists
  of mixed things) is written as JSON text and named in the summary, rather than failing or guessing;
* the file or directory is written beside its final name and renamed into place, so a failure leaves no
  half-written export; an existing one is replaced only with ``--force``.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import orjson

from synthkd.errors import InputError
from synthkd.options import opt, register_feature

log = logging.getLogger(__name__)

FORMATS = ("parquet", "hf")


@dataclass
class TableExportConfig:
    """The options of ``synthkd export`` (declared once; the command is generated from them)."""

    input: Path = opt(help="Rows to export: a stage's output (runs/<name>/<stage>.jsonl), or any input synthkd "
                           "reads.", flags=("-i",))
    format: str = opt("parquet", help="parquet: one .parquet file; hf: a datasets save_to_disk directory "
                                      "(datasets.load_from_disk).", flags=("-f",), choices=FORMATS)
    output: Optional[Path] = opt(None, help="Where to write (default: the input's name with .parquet, or "
                                            "<name>.hf/ for hf).", flags=("-o",))
    force: bool = opt(False, help="Replace an existing output.")


register_feature("export", TableExportConfig, command=("export",), stage=None)


def default_output(cfg: TableExportConfig) -> Path:
    if cfg.output is not None:
        return Path(cfg.output)
    stem = Path(str(cfg.input).replace(":", "_")).name
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return Path(str(cfg.input)).parent / (stem + (".parquet" if cfg.format == "parquet" else ".hf"))


def rows_table(path: Path) -> tuple[Any, list[str], int]:
    """(pyarrow Table, fields written as JSON text, rows) of every row of ``path``."""
    import pyarrow as pa

    from synthkd.jsonl_io import iter_jsonl

    columns: dict[str, list[Any]] = {}
    n = 0
    for loc, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise InputError([f"{path}:{loc}: expected a JSON object, got {type(row).__name__}"])
        for k in row:
            if k not in columns:
                columns[k] = [None] * n
        for k, values in columns.items():
            values.append(row.get(k))
        n += 1
    if n == 0:
        raise InputError([f"{path}: no rows (the file is empty)"])
    arrays, as_json = {}, []
    for k, values in columns.items():
        try:
            arrays[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            as_json.append(k)
            arrays[k] = pa.array([None if v is None else orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode()
                                  for v in values], type=pa.string())
    return pa.table(arrays), as_json, n


def export_table(cfg: TableExportConfig) -> tuple[Path, int, list[str]]:
    """Write the export; returns (where, rows, fields written as JSON text)."""
    from synthkd.jsonl_io import check_paths

    out = default_output(cfg)
    check_paths({"--input": cfg.input})
    if out.exists() and not cfg.force:
        raise InputError([f"--output {out}: exists already; give --force to replace it"])
    table, as_json, n = rows_table(cfg.input)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.export.tmp")
    _remove(tmp)
    try:
        if cfg.format == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            try:
                import datasets
            except ImportError:
                raise InputError(["--format hf needs the datasets package (pip install datasets)"]) from None
            datasets.logging.disable_progress_bar()
            datasets.Dataset(table).save_to_disk(str(tmp))
        if out.exists():
            _remove(out)
        os.replace(tmp, out)
    finally:
        _remove(tmp)
    return out, n, as_json


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
