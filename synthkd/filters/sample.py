"""Sample: keep ``n`` rows, a seeded pseudo-random subset that does not depend on file order.

Why: to compare two datasets at equal size (a filtered set against the unfiltered rows it came from,
two teachers, two prompts), or to cap a training set at a budget.  Generated rows are written in the
order the teacher's answers arrived, so "the first n rows" would be another subset on every run;
here each row's rank is a hash of (seed, id), and the ``n`` rows of smallest rank stay.  Two datasets
sampled with the same seed therefore keep the same ids wherever they share them: the filtered set's
sample is the unfiltered sample less its rejects, topped up with the next-ranked rows.

Two passes: rows are parked on disk (:mod:`synthkd.filters.spill`), and memory holds one 64-bit
rank per row.  Fewer than ``n`` rows in: every row stays, and the report says how many were missing.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Any, AsyncIterator

import orjson
from pydantic import Field

from synthkd.filters.base import OpConfig, Operator, Outcome, Reject
from synthkd.filters.spill import Spill


class SampleConfig(OpConfig):
    op: str = "sample"
    n: int = Field(..., ge=1, description="Rows to keep.")
    seed: int = Field(0, description="Seed of the selection (a row's rank is a hash of seed and id).")


class Sample(Operator):
    op = "sample"
    Config = SampleConfig
    summary = "Keep n rows, a seeded random subset by id (independent of file order)."

    def __init__(self, config: SampleConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.rows_in = 0
        self.kept = 0

    def _rank(self, row: dict[str, Any]) -> int:
        key = orjson.dumps([self.cfg.seed, self.row_id(row)])
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")

    async def run(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        spill = Spill(self.ctx.workdir, "sample")
        try:
            ranks = array("Q")
            async for row in rows:
                spill.write(row)
                ranks.append(self._rank(row))
            self.rows_in = len(ranks)
            # ties (a repeated id) are broken by position, so exactly min(n, rows) rows stay
            order = sorted(range(len(ranks)), key=lambda i: (ranks[i], i))
            keep = bytearray(len(ranks))
            for i in order[:self.cfg.n]:
                keep[i] = 1
            del order
            for pos, row in enumerate(spill.read()):
                if keep[pos]:
                    self.kept += 1
                    yield row, None
                else:
                    yield row, Reject("over sample size", f"sample of {self.cfg.n} (seed {self.cfg.seed})")
        finally:
            spill.close()

    def report(self) -> dict[str, Any]:
        return {"n": self.cfg.n, "seed": self.cfg.seed, "rows_in": self.rows_in, "kept": self.kept,
                "short_by": max(0, self.cfg.n - self.rows_in)}

    def report_markdown(self) -> str:
        if self.rows_in >= self.cfg.n:
            return ""
        return (f"Sample of {self.cfg.n} asked for, {self.rows_in} rows came in: all kept, "
                f"{self.cfg.n - self.rows_in} short.")
