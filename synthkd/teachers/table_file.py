"""Reading a user's table file (prices, model families): JSON, or YAML by suffix, with one clear error.

Why its own module: both tables are extended the same way (``--prices FILE``, ``--families FILE``, and
their environment variables), and a file that is missing, not UTF-8 or not parseable must be reported
the same way for both — naming the file, never as a traceback (F14).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_table_file(path: Path, what: str, error: type[Exception]) -> Any:
    """The parsed content of ``path``; any failure is ``error("<path>: ...")`` (``what`` names the file's kind)."""
    if not path.exists():
        raise error(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        if path.suffix in {".yaml", ".yml"}:
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # noqa: BLE001 - report any parse error with the file name
        raise error(f"{path}: cannot parse {what}: {exc}") from None
