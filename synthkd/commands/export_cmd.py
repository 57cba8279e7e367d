"""``synthkd export``: a stage's jsonl rows as Parquet or a ``datasets`` directory (see :mod:`synthkd.table_export`)."""

from __future__ import annotations

import logging

from synthkd.commands.common import exit_on_error
from synthkd.options import config_command
from synthkd.table_export import TableExportConfig, export_table

log = logging.getLogger(__name__)


@config_command(TableExportConfig)
def export_command(cfg: TableExportConfig) -> None:
    """Export rows (a stage's output) to Parquet or a datasets save_to_disk directory; jsonl stays the source.

    Exit codes: 0 written; 2 bad input (a missing file, a bad row, an existing output without --force).
    """
    with exit_on_error():
        out, n, as_json = export_table(cfg)
    note = f"; fields written as JSON text (mixed types): {', '.join(as_json)}" if as_json else ""
    print(f"export: {n} rows -> {out} ({cfg.format}){note}")
