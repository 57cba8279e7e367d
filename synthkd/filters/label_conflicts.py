"""Label conflicts: the same text under different labels (two generators, or two labels of one task
spec, wrote it) is resolved by a stated policy instead of "the first copy wins".

Why its own operator, before ``exact_dedup``: dedup keeps the first copy of a text, and the first
copy's label is an accident of file order — on the intent benchmark of issue 18 the copy kept was
the wrong one in 13 of 13 cross-source conflicts.  This operator sees every copy first (two passes;
rows are parked on disk by :mod:`synthkd.filters.spill`), then, for each text that carries more than
one label:

* ``relabel``: the teacher classifies the text once (the shared k-shot classifier of
  :func:`synthkd.labels.classify`, the label file given by ``labels``) and its label wins; a teacher
  answer that names no class (or a teacher error) drops every copy;
* ``majority``: the label carried by most copies wins; a tie drops every copy;
* ``drop``: every copy is dropped (an ambiguous text teaches nothing).

One copy of a resolved text stays — the first whose label is the winner, else the first copy with its
label overwritten — and gets ``label_conflict: {labels: {label: copies}, policy, label}``; the others
are rejected with reason ``label conflict`` (counted in the funnel).  Texts are compared after
:func:`synthkd.filters.text.normalize` (``basic``: NFKC, case, spaces — as ``exact_dedup``).  Rows
whose text carries one label, however many copies, pass untouched (``exact_dedup`` is for those).
Output order is input order, so the result is a function of the input file alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal

from pydantic import Field, model_validator

from synthkd.filters.base import OpConfig, Operator, Outcome, Reject
from synthkd.filters.spill import Spill
from synthkd.filters.text import FieldProblem, Normalization, normalize

if TYPE_CHECKING:
    from synthkd.labels import LabelSpace


class LabelConflictsConfig(OpConfig):
    op: str = "label_conflicts"
    text_field: str = Field("text", description="The text compared.")
    label_field: str = Field("label", description="The label field.")
    policy: Literal["relabel", "majority", "drop"] = Field(
        "majority", description="relabel (the teacher decides), majority (most copies; a tie drops), or drop every copy.")
    labels: Path | None = Field(None, description="Label file (labels, descriptions, examples) for policy relabel.")
    normalize: Normalization = Field("basic", description="none | basic (NFKC, case, spaces) | words (also drop punctuation).")
    k_shot: int = Field(2, ge=0, description="relabel: examples shown per class.")
    template: str = Field("relabel/classify", description="relabel: classifier prompt template.")
    max_tokens: int = Field(32, ge=1, description="relabel: answer length.")

    @model_validator(mode="after")
    def _labels_for_relabel(self) -> "LabelConflictsConfig":
        if self.policy == "relabel" and self.labels is None:
            raise ValueError("policy relabel needs 'labels' (the label file the teacher classifies into)")
        return self


def _label_key(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


class LabelConflicts(Operator):
    op = "label_conflicts"
    Config = LabelConflictsConfig
    summary = "Resolve texts that carry different labels (relabel by the teacher, majority, or drop)."

    def __init__(self, config: LabelConflictsConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.space: LabelSpace | None = None
        self.groups = 0
        self.rows_in_conflict = 0
        self.outcomes: Counter = Counter()
        self.cost = 0.0
        self.cost_known = True
        self.examples: list[dict[str, Any]] = []

    @property
    def uses_teacher(self) -> bool:  # type: ignore[override]
        return self.cfg.policy == "relabel"

    def needs(self) -> list[tuple[str, ...]]:
        return [(self.cfg.text_field,), (self.cfg.label_field,)]

    async def setup(self) -> None:
        if self.cfg.policy == "relabel":
            from synthkd.labels import LabelSpace
            from synthkd.templates import load_template

            self.space = LabelSpace.from_file(self.cfg.labels)  # type: ignore[arg-type]
            load_template(self.cfg.template).check({"classes", "text", "numbered", "task"},
                                                   where=f"operator {self.label!r}")

    def _key(self, row: dict[str, Any]) -> tuple[int, str]:
        text = normalize(self.text(row, self.cfg.text_field), self.cfg.normalize)
        f = self.cfg.label_field
        if row.get(f) is None:
            raise FieldProblem(f, "missing" if f not in row else "is null")
        h = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
        return h, _label_key(row[f])

    async def _relabel(self, texts: dict[int, str]) -> dict[int, tuple[str | None, str]]:
        from synthkd.labels import classify

        assert self.space is not None
        rows = [{"id": f"conflict{h}", "text": t, "_h": h} for h, t in texts.items()]
        out: dict[int, tuple[str | None, str]] = {}
        async for row, rl in classify(rows, self.ctx.teacher, self.space, text_field="text", k_shot=self.cfg.k_shot,
                                      template=self.cfg.template, max_tokens=self.cfg.max_tokens, intended_field=None):
            if rl.cost_usd is None:
                self.cost_known = False
            else:
                self.cost += rl.cost_usd
            out[row["_h"]] = (rl.label, rl.reason or "")
        return out

    async def run(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        spill = Spill(self.ctx.workdir, "label_conflicts")
        try:
            keys: list[tuple[int, str] | None] = []
            bad: dict[int, Reject] = {}
            labels_of: dict[int, Counter] = {}
            first_text: dict[int, str] = {}
            async for row in rows:
                pos = spill.write(row)
                try:
                    h, lab = self._key(row)
                except FieldProblem as exc:
                    bad[pos] = self.field_problem(row, exc)
                    keys.append(None)
                    continue
                keys.append((h, lab))
                labels_of.setdefault(h, Counter())[lab] += 1
                first_text.setdefault(h, self.text(row, self.cfg.text_field))
            conflicts = {h: c for h, c in labels_of.items() if len(c) > 1}
            del labels_of
            self.groups = len(conflicts)
            winner: dict[int, str | None] = {}
            why: dict[int, str] = {}
            if self.cfg.policy == "relabel" and conflicts:
                answers = await self._relabel({h: first_text[h] for h in conflicts})
                for h, (answer, reason) in answers.items():
                    winner[h] = answer
                    if answer is None:
                        why[h] = f"teacher gave no class ({reason})"
            for h, c in conflicts.items():
                if self.cfg.policy == "drop":
                    winner[h], why[h] = None, "policy drop"
                elif self.cfg.policy == "majority":
                    (top, n), *rest = c.most_common()
                    tie = any(m == n for _, m in rest)
                    winner[h] = None if tie else top
                    if tie:
                        why[h] = "tie"
            del first_text
            kept_one: set[int] = set()
            has_winner_copy = {h for h, c in conflicts.items() if winner.get(h) in c}
            for pos, row in enumerate(spill.read()):
                if pos in bad:
                    yield row, bad[pos]
                    continue
                k = keys[pos]
                assert k is not None
                h, lab = k
                group = conflicts.get(h)
                if group is None:
                    yield row, None
                    continue
                self.rows_in_conflict += 1
                copies = ", ".join(f"{x}×{n}" for x, n in sorted(group.items()))
                w = winner.get(h)
                if w is None:
                    self.outcomes[f"dropped ({why.get(h, 'unresolved')})"] += 1
                    yield row, Reject("label conflict", f"{copies}: dropped ({why.get(h, 'unresolved')})")
                    continue
                if h in kept_one or (h in has_winner_copy and lab != w):
                    self.outcomes["other copy dropped"] += 1
                    yield row, Reject("label conflict", f"{copies}: resolved to {w!r} by {self.cfg.policy}; "
                                                        "another copy kept")
                    continue
                kept_one.add(h)
                row = dict(row)
                row["label_conflict"] = {"labels": dict(sorted(group.items())), "policy": self.cfg.policy, "label": w,
                                         "was": row[self.cfg.label_field]}
                row[self.cfg.label_field] = w
                self.outcomes[f"resolved by {self.cfg.policy}"] += 1
                if len(self.examples) < 5:
                    self.examples.append({"text": self.text(row, self.cfg.text_field), "labels": dict(group), "label": w})
                yield row, None
        finally:
            spill.close()

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.cfg.policy, "conflicting_texts": self.groups,
                               "rows_in_conflict": self.rows_in_conflict, "outcomes": dict(self.outcomes),
                               "examples": self.examples}
        if self.cfg.policy == "relabel":
            out["cost_usd"] = round(self.cost, 6) if self.cost_known else None
        return out

    def report_markdown(self) -> str:
        if not self.groups:
            return "No text carries two labels."
        return (f"{self.groups:,} texts carried two or more labels ({self.rows_in_conflict:,} rows); policy "
                f"`{self.cfg.policy}`: " + ", ".join(f"{k} {v:,}" for k, v in self.outcomes.most_common()))
