"""Rows parked on disk between the two passes of an operator that must see every row before deciding
(balance by equalising, judge by top fraction), so memory holds only small per-row numbers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import orjson


class Spill:
    def __init__(self, workdir: Path | None, name: str) -> None:
        fd, path = tempfile.mkstemp(prefix=f"{name}.", suffix=".jsonl", dir=workdir)
        self.path = Path(path)
        self._f = os.fdopen(fd, "wb", buffering=1 << 20)
        self.count = 0

    def write(self, row: dict[str, Any]) -> int:
        """Park a row; return its position."""
        self._f.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY))
        self.count += 1
        return self.count - 1

    def read(self) -> Iterator[dict[str, Any]]:
        """The rows in the order written, then the file is removed."""
        self._f.close()
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    yield orjson.loads(line)
        finally:
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        self.path.unlink(missing_ok=True)
