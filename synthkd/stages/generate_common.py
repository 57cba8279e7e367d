"""What the ``generate.*`` stages share: the budget check after a run, the manifest's row funnel, and
resolving a config's file options against the pipeline's directory."""

from __future__ import annotations

import dataclasses
from typing import Any

from synthkd.pipeline import StageContext
from synthkd.teachers.base import BudgetExceeded


def _check_budget(ctx: StageContext) -> None:
    t = ctx._teacher
    if t is not None and t.budget_exhausted:
        raise BudgetExceeded(f"[{ctx.stage.name}] budget reached; rerun with a larger max_cost to finish")


def _funnel(rows_in: int, counts: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Manifest counts: rows that left go under ``dropped``; kept rows with a null answer under ``kept_notes``."""
    dropped = {r: n for r, n in counts.reasons.items() if not r.startswith("answer null")}
    notes = {r: n for r, n in counts.reasons.items() if r.startswith("answer null")}
    return {"rows_in": rows_in, "rows_out": counts.written + counts.already_there, "rejected": counts.rejected,
            "dropped": dropped, "kept_notes": notes, **(extra or {})}


def resolved(ctx: StageContext, cfg: Any, files: tuple[str, ...] = (), templates: tuple[str, ...] = ()) -> Any:
    """``cfg`` with its file options (``files``) and ``.j2`` template options (``templates``) taken
    relative to the pipeline file's directory, as every path in a pipeline is."""
    changes: dict[str, Any] = {}
    for name in files:
        v = getattr(cfg, name)
        if v is not None:
            changes[name] = ctx.resolve(str(v))
    for name in templates:
        v = getattr(cfg, name)
        if v is not None and str(v).endswith(".j2"):
            changes[name] = str(ctx.resolve(str(v)))
    return dataclasses.replace(cfg, **changes) if changes else cfg
