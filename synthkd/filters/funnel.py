"""The funnel report: where the rows went, per operator and reason, with a few examples of each.

Written as JSON (for scripts and dashboards) and Markdown (for a person, at a glance).  Counts are
gathered while rows stream by; only the first few examples of each (operator, reason) are kept.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkd.filters.text import clip

EXAMPLES_PER_REASON = 3


@dataclass
class Stage:
    name: str
    op: str
    summary: str = ""
    rows_in: int = 0
    kept: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_md: str = ""

    @property
    def dropped(self) -> int:
        return sum(self.reasons.values())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "rows_in": self.rows_in, "rows_out": self.kept,
                "dropped": self.dropped, "reasons": dict(self.reasons.most_common()),
                "examples": self.examples, **({"details": self.extra} if self.extra else {})}


class Funnel:
    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.wall_s: float | None = None
        self.meta: dict[str, Any] = {}

    def drop(self, i: int, row: dict[str, Any], reason: str, detail: str | None, preview_field: str | None,
             id_field: str = "id") -> None:
        st = self.stages[i]
        st.reasons[reason] += 1
        ex = st.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES_PER_REASON:
            ex.append({"id": row.get(id_field), "detail": detail, "text": _preview(row, preview_field)})

    def finish(self) -> None:
        self.wall_s = time.perf_counter() - self.t0

    @property
    def rows_in(self) -> int:
        return self.stages[0].rows_in if self.stages else 0

    @property
    def rows_out(self) -> int:
        return self.stages[-1].kept if self.stages else 0

    @property
    def rejected(self) -> int:
        return sum(s.dropped for s in self.stages)

    def check_accounting(self) -> list[str]:
        """Every stage: in = kept + dropped; each stage's input is the previous stage's kept rows."""
        problems = []
        for k, s in enumerate(self.stages):
            if s.rows_in != s.kept + s.dropped:
                problems.append(f"operator {s.name!r}: {s.rows_in} rows in but {s.kept} kept + {s.dropped} dropped")
            if k and s.rows_in != self.stages[k - 1].kept:
                problems.append(f"operator {s.name!r}: got {s.rows_in} rows, previous kept {self.stages[k - 1].kept}")
        if self.rows_in != self.rows_out + self.rejected:
            problems.append(f"rows in {self.rows_in} != rows out {self.rows_out} + rejected {self.rejected}")
        return problems

    def as_dict(self) -> dict[str, Any]:
        return {**self.meta, "rows_in": self.rows_in, "rows_out": self.rows_out, "rows_rejected": self.rejected,
                "accounted": not self.check_accounting(), "wall_s": round(self.wall_s or 0.0, 3),
                "stages": [s.as_dict() for s in self.stages]}

    def markdown(self) -> str:
        n = max(1, self.rows_in)
        lines = ["# Cleaning funnel", ""]
        for k in ("input", "config", "output", "rejects"):
            if k in self.meta:
                lines.append(f"* {k}: `{self.meta[k]}`")
        lines += [
            f"* **{self.rows_in:,} rows in → {self.rows_out:,} rows out** ({self.rows_out / n:.1%} kept); "
            f"{self.rejected:,} rejected; accounted: {'yes' if not self.check_accounting() else 'NO'}; "
            f"{self.wall_s or 0:.1f} s",
            "",
            "| # | operator | rows in | dropped | rows out | dropped (% of input) | reasons |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for i, s in enumerate(self.stages):
            reasons = "; ".join(f"{r} {c:,}" for r, c in s.reasons.most_common()) or "—"
            lines.append(f"| {i} | {s.name} | {s.rows_in:,} | {s.dropped:,} | {s.kept:,} | {s.dropped / n:.1%} | {reasons} |")
        for i, s in enumerate(self.stages):
            if not s.reasons and not s.extra_md and not s.extra:
                continue
            lines += ["", f"## {i}. {s.name}" + (f" — {s.summary}" if s.summary else ""), ""]
            for reason, c in s.reasons.most_common():
                lines.append(f"**{reason}** ({c:,})")
                lines.append("")
                for ex in s.examples.get(reason, []):
                    detail = f" — {ex['detail']}" if ex.get("detail") else ""
                    text = f": “{_md_escape(ex['text'])}”" if ex.get("text") else ""
                    lines.append(f"* `{ex['id']}`{detail}{text}")
                lines.append("")
            if s.extra_md:
                lines += [s.extra_md, ""]
            elif s.extra:
                lines += ["Details: " + ", ".join(f"{k} = {v}" for k, v in s.extra.items()), ""]
        return "\n".join(lines).rstrip() + "\n"

    def write(self, json_path: Path, md_path: Path) -> None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False, default=str) + "\n")
        md_path.write_text(self.markdown(), encoding="utf-8")


_PREVIEW_FIELDS = ("text", "input", "question", "prompt", "instruction", "completion", "rationale", "output", "raw")


def _preview(row: dict[str, Any], field_name: str | None) -> str | None:
    """The operator's own field, else the first usual text field, else the longest string in the row."""
    value = row.get(field_name) if field_name else None
    if not isinstance(value, str):
        value = next((row[k] for k in _PREVIEW_FIELDS if isinstance(row.get(k), str)), None)
    if not isinstance(value, str):
        strings = [v for k, v in row.items() if isinstance(v, str) and k != "id"]
        value = max(strings, key=len) if strings else None
    return clip(value, 160) if isinstance(value, str) else None


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")
