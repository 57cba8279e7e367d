"""Exact dedup: keep the first row of each distinct (normalised) value of one or more fields.

Why a 64-bit hash and not the text: a million rows of text would sit in memory; a 64-bit blake2b
digest per distinct value does not (collision odds for 10^7 rows ≈ 3·10⁻⁶).  Hashes live in sorted
numpy runs (8 bytes each, :class:`~synthkd.filters.compact.HashRuns`) and the first row's id in a
packed :class:`~synthkd.filters.compact.IdStore`, so each reject names *which* row it duplicates for
~25 bytes a distinct value.  Rows are looked up a batch at a time (vectorised ``searchsorted``);
duplicates inside a batch are found with a small dict, so the result is the same as row by row.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field, field_validator

from synthkd.filters.base import BatchOperator, OpConfig, Reject
from synthkd.filters.text import FieldProblem, Normalization, normalize


class ExactDedupConfig(OpConfig):
    op: str = "exact_dedup"
    fields: list[str] = Field(["text"], description="Fields whose values together must be identical.")
    normalize: Normalization = Field("basic", description="none | basic (NFKC, case, spaces) | words (also drop punctuation).")
    batch_size: int = Field(4096, ge=1, le=1 << 16, description="Rows looked up together.")

    @field_validator("fields")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one field")
        return v


class ExactDedup(BatchOperator):
    op = "exact_dedup"
    Config = ExactDedupConfig
    summary = "Drop rows whose normalised field value(s) equal an earlier row's."

    def __init__(self, config: ExactDedupConfig, ctx) -> None:
        import numpy as np

        from synthkd.filters.compact import HashRuns, IdStore

        super().__init__(config, ctx)
        self.cfg = config
        self.batch_size = config.batch_size
        self.seen = HashRuns()
        self.ids = IdStore()
        self._np = np

    def needs(self) -> list[tuple[str, ...]]:
        return [(f,) for f in self.cfg.fields]

    def _hash(self, row: dict[str, Any]) -> int:
        how = self.cfg.normalize
        key = "\x1f".join(normalize(self.text(row, f), how) for f in self.cfg.fields)
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")

    def check_batch(self, rows: list[dict[str, Any]]) -> list[Reject | None]:
        np = self._np
        out: list[Reject | None] = [None] * len(rows)
        hs: list[int] = []
        pos: list[int] = []
        for i, row in enumerate(rows):
            try:
                hs.append(self._hash(row))
            except FieldProblem as exc:
                out[i] = self.field_problem(row, exc)
                continue
            pos.append(i)
        if not hs:
            return out
        harr = np.array(hs, dtype=np.uint64)
        found = self.seen.lookup(harr).tolist()
        first_in_batch: dict[int, Any] = {}
        new_h: list[int] = []
        new_v: list[int] = []
        what = "/".join(self.cfg.fields)
        for j, (i, h) in enumerate(zip(pos, hs)):
            if found[j] >= 0:
                out[i] = Reject("exact duplicate", f"same {what} as id {self.ids[found[j]]!r}")
            elif h in first_in_batch:
                out[i] = Reject("exact duplicate", f"same {what} as id {first_in_batch[h]!r}")
            else:
                rid = self.row_id(rows[i])
                first_in_batch[h] = rid
                new_h.append(h)
                new_v.append(self.ids.append(rid))
        self.seen.add(np.array(new_h, dtype=np.uint64), np.array(new_v, dtype=np.uint32))
        return out

    def report(self) -> dict[str, Any]:
        return {"distinct_values": self.seen.size, "memory_mb": round((self.seen.nbytes + self.ids.nbytes) / 1e6, 1)}
