"""Relabel: ask the teacher, as a k-shot classifier with label descriptions, for each row's label;
then keep, overwrite or drop per ``policy``, record both labels, and report the confusion between
intended and relabeled labels.

The classifier is the project's shared one (:func:`synthkd.labels.classify` with a
:class:`~synthkd.labels.LabelSpace` read from ``labels`` (the label file)), so PromptMix and cleaning ask
the same question the same way.  Each row gets ``relabel: {intended, teacher, agree, action, votes,
raw, template, template_sha}``.

Policies when the teacher disagrees with the row's label: ``drop`` the row; ``overwrite`` the label
with the teacher's (the old one stays in ``relabel.intended``); ``keep`` it unchanged (the teacher's
label is only recorded — useful to measure label noise before deciding).  A teacher answer that maps
to no class is dropped or kept per ``on_unmapped``; a teacher error drops the row (rerun to retry).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal

from pydantic import AliasChoices, Field

from synthkd.filters.base import OpConfig, Operator, Outcome, Reject
from synthkd.filters.teacher_ops import InOrder
from synthkd.filters.text import FieldProblem

if TYPE_CHECKING:
    from synthkd.labels import LabelSpace


class RelabelConfig(OpConfig):
    op: str = "relabel"
    labels: Path = Field(..., validation_alias=AliasChoices("labels", "label_space"),
                         description="Label file (YAML/JSON): labels with descriptions and examples (old key: label_space).")
    text_field: str = Field("text", description="The text classified.")
    label_field: str = Field("label", description="The row's intended label (may be absent or null: nothing to disagree with).")
    policy: Literal["keep", "overwrite", "drop"] = Field("drop", description="When the teacher disagrees: keep the row, overwrite its label, or drop it.")
    on_unmapped: Literal["keep", "drop"] = Field("drop", description="When the teacher's answer names no class.")
    k_shot: int = Field(2, ge=0, description="Examples shown per class.")
    candidates: int | None = Field(None, ge=1, description="Offer only the N lexically closest classes (+ the intended one).")
    template: str = Field("relabel/classify", description="Classifier prompt template.")
    samples: int = Field(1, ge=1, le=16, description="Votes per row (needs temperature > 0 when above 1).")
    temperature: float | None = Field(None, ge=0, description="Sampling temperature.")
    seed: int = Field(0, description="Seed of the first sample.")
    max_tokens: int = Field(32, ge=1, description="Answer length.")


class Relabel(Operator):
    op = "relabel"
    Config = RelabelConfig
    uses_teacher = True
    summary = "The teacher (k-shot classifier with label descriptions) relabels each row; keep, overwrite or drop on disagreement."

    def __init__(self, config: RelabelConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.space: LabelSpace | None = None  # loaded in setup()
        self.pairs: Counter = Counter()
        self.actions: Counter = Counter()
        self.cost = 0.0
        self.cost_known = True
        self.cached = 0

    def needs(self) -> list[tuple[str, ...]]:
        return [(self.cfg.text_field,)]

    async def setup(self) -> None:
        from synthkd.labels import LabelSpace
        from synthkd.templates import load_template

        self.space = LabelSpace.from_file(self.cfg.labels)
        load_template(self.cfg.template).check({"classes", "text", "numbered", "task"}, where=f"operator {self.label!r}")
        if self.cfg.samples > 1 and not (self.cfg.temperature and self.cfg.temperature > 0):
            from synthkd.errors import ConfigError

            raise ConfigError(f"operator {self.label!r}: samples > 1 needs temperature > 0")

    def _decide(self, row: dict[str, Any], rl: Any) -> Reject | None:
        c = self.cfg
        intended = row.get(c.label_field)
        intended_s = intended if isinstance(intended, str) or intended is None else str(intended)
        if rl.cost_usd is None:
            self.cost_known = False
        else:
            self.cost += rl.cost_usd
        self.cached += bool(rl.cached)
        info: dict[str, Any] = {"intended": intended, "teacher": rl.label, "agree": rl.label is not None and rl.label == intended_s,
                                "votes": rl.votes, "raw": rl.raw, **(rl.template or {})}
        if getattr(rl, "reasoning", None) is not None:
            info["reasoning"] = rl.reasoning
        row["relabel"] = info
        if rl.label is None:
            self.pairs[(intended_s, None)] += 1
            if rl.teacher_error:
                info["action"] = "dropped"
                self.actions["teacher error"] += 1
                return Reject("teacher error", rl.reason)
            if c.on_unmapped == "drop":
                info["action"] = "dropped"
                self.actions["unmapped: dropped"] += 1
                return Reject("teacher label unmapped", rl.reason)
            info["action"] = "kept"
            self.actions["unmapped: kept"] += 1
            return None
        self.pairs[(intended_s, rl.label)] += 1
        if info["agree"] or intended is None and c.policy != "overwrite":
            info["action"] = "kept"
            self.actions["agree" if info["agree"] else "no intended label: kept"] += 1
            return None
        if c.policy == "drop":
            info["action"] = "dropped"
            self.actions["disagree: dropped"] += 1
            return Reject("label disagrees", f"intended {intended!r}, teacher {rl.label!r}")
        if c.policy == "overwrite":
            row[c.label_field] = rl.label
            info["action"] = "overwritten"
            self.actions["disagree: overwritten" if intended is not None else "no intended label: set"] += 1
            return None
        info["action"] = "kept"
        self.actions["disagree: kept"] += 1
        return None

    async def run(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        from synthkd.labels import classify

        c = self.cfg
        order = InOrder()
        pos_of: dict[int, int] = {}

        async def feed():
            async for row in rows:
                pos = order.take()
                try:
                    text = self.text(row, c.text_field)
                except FieldProblem as exc:
                    order.put(pos, row, self.field_problem(row, exc))
                    continue
                if not text.strip():
                    order.put(pos, row, Reject("empty text", None))
                    continue
                if not isinstance(row[c.text_field], str):
                    row = {**row, c.text_field: text}  # the classifier reads a string
                pos_of[id(row)] = pos
                yield row

        assert self.space is not None  # setup() runs before run()
        async for row, rl in classify(feed(), self.ctx.teacher, self.space, text_field=c.text_field,
                                      k_shot=c.k_shot, candidates=c.candidates, template=c.template,
                                      samples=c.samples, temperature=c.temperature, seed=c.seed,
                                      intended_field=c.label_field, max_tokens=c.max_tokens):
            pos = pos_of.pop(id(row))
            order.put(pos, row, self._decide(row, rl))
            for x in order.ready():
                yield x
        for x in order.ready():
            yield x
        # every row came back, except in a batch-mode pass: rows waiting for a batch come in the next pass
        t = self.ctx.teacher
        assert order.finished() or (t is not None and t.batch is not None and t.batch.deferred)

    def _summary(self) -> dict[str, Any]:
        from synthkd.labels import confusion_summary

        def pairs():
            for (a, b), n in self.pairs.items():
                for _ in range(n):
                    yield a, b

        return confusion_summary(pairs())

    def report(self) -> dict[str, Any]:
        if not self.pairs:
            return {}
        return {"policy": self.cfg.policy, "actions": dict(self.actions), "confusion": self._summary(),
                "matrix": [[a, b, n] for (a, b), n in sorted(self.pairs.items(), key=lambda kv: (-kv[1], str(kv[0])))],
                "cached_rows": self.cached, "cost_usd": round(self.cost, 6) if self.cost_known else None}

    def report_markdown(self) -> str:
        if not self.pairs:
            return ""
        from synthkd.labels import format_confusion

        lines = [format_confusion(self._summary()), "",
                 "Actions: " + ", ".join(f"{k} {v:,}" for k, v in self.actions.most_common()), ""]
        intended = sorted({a for a, _ in self.pairs}, key=lambda x: (x is None, str(x)))
        teacher = sorted({b for _, b in self.pairs}, key=lambda x: (x is None, str(x)))
        if len(intended) <= 12 and len(teacher) <= 12:
            lines.append("| intended \\ teacher | " + " | ".join(str(b) if b is not None else "(unmapped)" for b in teacher) + " |")
            lines.append("|---|" + "---:|" * len(teacher))
            for a in intended:
                lines.append(f"| {a if a is not None else '(none)'} | "
                             + " | ".join(f"{self.pairs.get((a, b), 0):,}" for b in teacher) + " |")
        return "\n".join(lines)
