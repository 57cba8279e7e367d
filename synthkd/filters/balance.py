"""Balance: cap the rows per label (``max_per_label``) or equalise them (every label cut to the rarest
label's count, optionally also capped).

Which rows stay: ``selection: first`` keeps the earliest rows of each label (a cap alone then streams
with no second pass); ``selection: random`` keeps a seeded pseudo-random subset — each row's rank is a
hash of (seed, id), so the choice does not depend on file order and a rerun keeps the same rows.
Equalising, or random selection, needs every label's count first: rows are parked on disk
(:mod:`synthkd.filters.spill`) and only a label number and a rank per row stay in memory.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator, Literal

import orjson
from pydantic import Field, model_validator

from synthkd.filters.base import OpConfig, Operator, Outcome, Reject
from synthkd.filters.spill import Spill
from synthkd.filters.text import FieldProblem


class BalanceConfig(OpConfig):
    op: str = "balance"
    label_field: str = Field("label", description="The field holding the label.")
    max_per_label: int | None = Field(None, ge=1, description="Keep at most this many rows per label.")
    equalize: bool = Field(False, description="Cut every label to the rarest label's count.")
    selection: Literal["first", "random"] = Field("first", description="Which rows of a label stay: the first ones, or a seeded random subset.")
    seed: int = Field(0, description="Seed of the random selection.")
    labels: Path | None = Field(None, description="Label file (as generate tasks / promptmix / eval read it): rows "
                                "whose label is not in it are dropped, and its labels with no row are reported.")

    @model_validator(mode="after")
    def _something(self) -> "BalanceConfig":
        if self.max_per_label is None and not self.equalize:
            raise ValueError("give max_per_label, or equalize: true (or both)")
        return self


def _label_key(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


class Balance(Operator):
    op = "balance"
    Config = BalanceConfig
    summary = "Cap or equalise the number of rows per label."

    def __init__(self, config: BalanceConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.before: Counter = Counter()
        self.after: Counter = Counter()
        self.caps: dict[str, int] = {}
        self.known: list[str] | None = None  # the label file's labels
        self.unknown: Counter = Counter()

    async def setup(self) -> None:
        if self.cfg.labels is not None:
            from synthkd.labels import LabelSpace

            self.known = LabelSpace.from_file(self.cfg.labels).labels  # InputError naming file, line, field

    def _outside(self, lab: str) -> Reject | None:
        if self.known is None or lab in self.known:
            return None
        self.unknown[lab] += 1
        return Reject("label not in label file", f"label {lab!r} is not one of {self.cfg.labels}'s labels")

    def needs(self) -> list[tuple[str, ...]]:
        return [(self.cfg.label_field,)]

    def _label(self, row: dict[str, Any]) -> str:
        f = self.cfg.label_field
        if f not in row or row[f] is None:
            raise FieldProblem(f, "missing" if f not in row else "is null")
        return _label_key(row[f])

    def _rank(self, row: dict[str, Any]) -> int:
        key = orjson.dumps([self.cfg.seed, self.row_id(row)])
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")

    async def run(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        c = self.cfg
        if not c.equalize and c.selection == "first":
            async for row in rows:
                try:
                    lab = self._label(row)
                except FieldProblem as exc:
                    yield row, self.field_problem(row, exc)
                    continue
                outside = self._outside(lab)
                if outside is not None:
                    yield row, outside
                    continue
                self.before[lab] += 1
                self.caps[lab] = c.max_per_label  # type: ignore[assignment]
                if self.after[lab] >= c.max_per_label:  # type: ignore[operator]
                    yield row, Reject("over label cap", f"label {lab!r}: cap {c.max_per_label}")
                else:
                    self.after[lab] += 1
                    yield row, None
            return
        # two passes: park rows, remember (label number, rank) per row
        spill = Spill(self.ctx.workdir, "balance")
        try:
            names: dict[str, int] = {}
            label_of = array("l")
            ranks = array("Q")
            bad: dict[int, Reject] = {}
            async for row in rows:
                pos = spill.write(row)
                try:
                    lab = self._label(row)
                except FieldProblem as exc:
                    bad[pos] = self.field_problem(row, exc)
                    label_of.append(-1)
                    ranks.append(0)
                    continue
                outside = self._outside(lab)
                if outside is not None:
                    bad[pos] = outside
                    label_of.append(-1)
                    ranks.append(0)
                    continue
                self.before[lab] += 1
                label_of.append(names.setdefault(lab, len(names)))
                ranks.append(self._rank(row) if c.selection == "random" else pos)
            cap = min(self.before.values()) if (c.equalize and self.before) else None
            if c.max_per_label is not None:
                cap = c.max_per_label if cap is None else min(cap, c.max_per_label)
            # the rank cut-off of each label: its cap-th smallest rank
            per_label: dict[int, list[int]] = {}
            for lab_i, r in zip(label_of, ranks):
                if lab_i >= 0:
                    per_label.setdefault(lab_i, []).append(r)
            cutoff: dict[int, int] = {}
            for lab_i, rs in per_label.items():
                rs.sort()
                cutoff[lab_i] = rs[min(len(rs), cap) - 1] if cap else -1  # type: ignore[arg-type]
            del per_label
            inv = {v: k for k, v in names.items()}
            for lab in names:
                self.caps[lab] = cap  # type: ignore[assignment]
            for pos, row in enumerate(spill.read()):
                if pos in bad:
                    yield row, bad[pos]
                    continue
                lab_i = label_of[pos]
                lab = inv[lab_i]
                if ranks[pos] <= cutoff[lab_i] and self.after[lab] < cap:  # type: ignore[operator]
                    self.after[lab] += 1
                    yield row, None
                else:
                    why = "equalised" if c.equalize else "cap"
                    yield row, Reject("over label cap", f"label {lab!r}: {why} to {cap}")
        finally:
            spill.close()

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"per_label": {lab: {"in": n, "out": self.after[lab], "cap": self.caps.get(lab)}
                                             for lab, n in sorted(self.before.items(), key=lambda kv: (-kv[1], kv[0]))}}
        if self.known is not None:
            out["labels_without_rows"] = [lab for lab in self.known if not self.after[lab]]
            out["labels_not_in_file"] = dict(self.unknown)
        return out

    def report_markdown(self) -> str:
        if not self.before:
            return ""
        lines = ["| label | rows in | rows out |", "|---|---:|---:|"]
        for lab, n in sorted(self.before.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"| {lab} | {n:,} | {self.after[lab]:,} |")
        empty = [lab for lab in (self.known or []) if not self.after[lab]]
        if empty:
            lines.append(f"\nLabels of the label file with no row: {', '.join(empty)}")
        return "\n".join(lines)
