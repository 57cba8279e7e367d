"""The contract every cleaning operator follows, so that a chain of them can account for every row.

An operator consumes an async stream of rows and yields **exactly one outcome per row, in input
order**: ``(row, None)`` to keep it (possibly annotated or relabelled) or ``(row, Reject(reason,
detail))`` to drop it.  The pipeline counts rows in and outcomes out for each operator and fails
loudly if they differ, so "rows in = rows out + rejects" holds by construction, not by hope.

Why async everywhere: the teacher operators (relabel, judge) are network-bound and must overlap
hundreds of requests; making the chain async lets them do that while the cheap operators are
trivially wrapped (:class:`RowOperator`, :class:`BatchOperator`).

Why a ``Reject`` with a short ``reason`` *and* a free-form ``detail``: the funnel report groups by
reason ("near duplicate", "wrong answer"), while the detail ("J≈0.91 with id r17", "got 12, gold
15") is what a user reads when checking an example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from synthkd.filters.text import FieldProblem, text_of
from synthkd.jsonl_io import InputError


@dataclass(frozen=True)
class Reject:
    reason: str
    detail: str | None = None


Outcome = tuple[dict[str, Any], "Reject | None"]


class OpConfig(BaseModel):
    """Options every operator accepts; each operator's ``Config`` adds its own (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    op: str
    name: str | None = Field(None, description="Label in the funnel report and the rejects file (default: the op name).")


@dataclass
class RunContext:
    """What operators may need from the run: strictness, where errors point, a teacher, a scratch dir."""

    strict: bool = True
    source: str = "input"
    id_field: str = "id"
    teacher: Any = None  # a synthkd.teachers.base.Teacher, only when the chain has teacher operators
    workdir: Path | None = None  # scratch space for two-pass operators (spilled rows)
    teacher_name: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Operator:
    """Base class.  Subclasses set ``op``/``Config`` and implement :meth:`run` (or use a helper base)."""

    op: ClassVar[str]
    Config: ClassVar[type[OpConfig]] = OpConfig
    uses_teacher: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def __init__(self, config: OpConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.label = config.name or self.op

    # -- what the operator reads (checked up front in strict mode) ------------------------------
    def needs(self) -> list[tuple[str, ...]]:
        """Groups of fields: each row must have at least one field of every group."""
        return []

    def provides(self) -> list[str]:
        """Fields this operator adds to rows (later operators may need them)."""
        return []

    def preview_field(self) -> str | None:
        """The field whose text the funnel report shows for this operator's examples."""
        groups = self.needs()
        return groups[0][0] if groups else None

    # -- running ---------------------------------------------------------------------------------
    async def setup(self) -> None:
        """Load what the operator needs (eval sets, label spaces...) before any row flows."""

    async def run(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        raise NotImplementedError
        yield  # pragma: no cover

    def report(self) -> dict[str, Any]:
        """Operator-specific figures for the funnel report (confusion matrix, score histogram...)."""
        return {}

    def report_markdown(self) -> str:
        return ""

    # -- bad rows ---------------------------------------------------------------------------------
    def row_id(self, row: dict[str, Any]) -> Any:
        return row.get(self.ctx.id_field)

    def field_problem(self, row: dict[str, Any], problem: FieldProblem) -> Reject:
        """Strict: an InputError naming the row and field.  Lenient: a reject with that reason."""
        if self.ctx.strict:
            raise InputError(
                [f"{self.ctx.source}: row id {self.row_id(row)!r}: field {problem.field!r}: {problem.problem} "
                 f"(needed by operator {self.label!r}; use --lenient to reject such rows instead)"]
            )
        return Reject(f"field {problem.field!r} {problem.problem}", None)

    def text(self, row: dict[str, Any], field_name: str) -> str:
        return text_of(row, field_name)


class RowOperator(Operator):
    """An operator that decides each row on its own: implement :meth:`check`."""

    def check(self, row: dict[str, Any]) -> Reject | None:
        raise NotImplementedError

    async def run(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        check = self.check
        async for row in rows:
            try:
                rej = check(row)
            except FieldProblem as exc:
                rej = self.field_problem(row, exc)
            yield row, rej


class BatchOperator(Operator):
    """An operator that decides rows a batch at a time (vectorised work): implement :meth:`check_batch`.

    Only ``batch_size`` rows are held at once; outcomes keep input order.
    """

    batch_size: int = 2048

    def check_batch(self, rows: list[dict[str, Any]]) -> list[Reject | None]:
        raise NotImplementedError

    async def run(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        batch: list[dict[str, Any]] = []
        async for row in rows:
            batch.append(row)
            if len(batch) >= self.batch_size:
                for pair in zip(batch, self.check_batch(batch)):
                    yield pair
                batch = []
        if batch:
            for pair in zip(batch, self.check_batch(batch)):
                yield pair

