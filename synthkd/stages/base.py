"""What a pipeline stage is and what it gets: :class:`StageContext`, the :class:`Stage` protocol,
:class:`Estimate`, the registry (:func:`register_stage`, :data:`STAGES`) and the small helpers every
stage uses (:func:`check_budget`, :func:`funnel_counts`, :func:`teacher_spec_from`).

A stage module needs only this module; it never imports the runner (:mod:`synthkd.pipeline`), which
imports the stage package lazily, when it plans a run.  The runner hands each context a way to open the
stage's teacher ledger (``open_ledger``), so the run-directory rules stay in the runner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import BaseModel

from synthkd.config import ConfigError, PipelineConfig, StageConfig, TeacherConfig, stage_line
from synthkd.teachers.base import BudgetExceeded, Teacher
from synthkd.teachers.factory import CONNECTION_FIELDS, SamplingParams, TeacherSpec, make_teacher

logger = logging.getLogger(__name__)


@dataclass
class Estimate:
    """What a stage expects to spend: teacher calls, prompt tokens, completion tokens (at most
    ``max_tokens`` each); ``note`` says how the figure was made where it is not a plain count (an
    expected dedup loss, an upper bound...), for ``synthkd validate`` to print under its table."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    note: str = ""
    #: rows the stage is expected to write, for a later stage reading them to estimate its own calls
    #: before they exist (``None``: not known)
    rows_out: int | None = None

    def __add__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                        self.completion_tokens + other.completion_tokens)


@dataclass
class StageContext:
    pipeline: PipelineConfig
    stage: StageConfig
    index: int
    run_dir: Path
    inputs: dict[str, Path]
    output: Path
    base_dir: Path
    _teacher: Teacher | None = None
    _progress: Any = None
    _ledger: Any = None
    teacher_config: TeacherConfig | None = None
    log: Callable[[str], None] = logger.info  # run_pipeline(log=...) replaces it
    #: opens the stage's teacher ledger (the teacher's journal); set by the runner
    open_ledger: Callable[[], Any] | None = None
    #: validate: rows expected in each input an earlier stage makes (from that stage's estimate), by
    #: input name; an input that exists is counted, not expected
    expected_rows: dict[str, int] = field(default_factory=dict)

    @property
    def input(self) -> Path:
        if "input" not in self.inputs:
            raise ConfigError(f"{stage_line(self.pipeline, self.index)}: stage {self.stage.name!r} needs an 'input'")
        return self.inputs["input"]

    def teacher(self) -> Teacher:
        """The stage's teacher, built on first use (a stage that needs none never builds one)."""
        if self._teacher is None:
            tc = self.teacher_config
            if tc is None:
                raise ConfigError(f"{stage_line(self.pipeline, self.index)}: stage {self.stage.name!r} needs a 'teacher'")
            self._teacher = make_teacher(teacher_spec_from(tc, self.base_dir, self.run_dir))
            if self._teacher.calls_model:  # not a replay of recorded answers: its requests count (and may cost)
                if self.open_ledger is not None:
                    self._ledger = self.open_ledger()
                    self._teacher.journal = self._ledger  # an HTTP teacher reports each request sent, failed or answered
                from synthkd.progress import ProgressReporter

                # a bar on a terminal (requests done, tok/s, cost, retries, errors); silent otherwise
                self._progress = ProgressReporter(self._teacher.stats, total=None, desc=self.stage.name)
                self._progress.start()
        return self._teacher

    @property
    def current_teacher(self) -> Teacher | None:
        """The teacher if a stage has built it (None before :meth:`teacher` was first called)."""
        return self._teacher

    def resolve(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p)


class Stage(Protocol):
    options_model: type[BaseModel]

    async def run(self, ctx: StageContext, options: Any) -> dict[str, Any]:
        """Do the work, write ``ctx.output``; return counts for the manifest."""

    def estimate(self, ctx: StageContext, options: Any) -> Estimate | None:
        """Teacher calls and tokens this stage would spend (None: no teacher)."""


#: every registered stage kind -> its (stateless) implementation
STAGES: dict[str, Stage] = {}


def register_stage(kind: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        STAGES[kind] = cls()
        return cls

    return deco


# ----------------------------------------------------------------------------- helpers for stages
def teacher_spec_from(tc: TeacherConfig, base_dir: Path, run_dir: Path) -> TeacherSpec:
    """The TeacherSpec of a ``teacher:`` block: every connection key as it is (the block is generated
    from TeacherSpec), paths resolved against the pipeline file, ``temperature``/``max_tokens`` as
    default sampling parameters.  No ``cache`` key: the same default cache as the CLI's
    (:func:`synthkd.teachers.factory.default_cache_path`, decided in one place), so a pipeline gets
    for free what ``synthkd complete`` / ``generate`` already bought, and the other way round.
    (``run_dir`` is no longer used; kept for callers.)"""
    def rel(p: str | None) -> Path | None:
        if p is None:
            return None
        q = Path(p)
        return q if q.is_absolute() else base_dir / q

    model = tc.model
    for prefix in ("replay:", "local:"):
        if model.startswith(prefix):
            model = prefix + str(rel(model[len(prefix):]))
    conn = {name: getattr(tc, name) for name in CONNECTION_FIELDS if name in type(tc).model_fields}
    conn.update(cache=rel(tc.cache), prices=rel(tc.prices), families=rel(tc.families))
    params = {f.name: getattr(tc, f.name) for f in fields(SamplingParams) if getattr(tc, f.name) is not None}
    return TeacherSpec(teacher=model, **conn, default_params=params)


def check_budget(ctx: StageContext) -> None:
    """Raise :class:`BudgetExceeded` if the stage's teacher stopped at its budget (rows are missing)."""
    t = ctx.current_teacher
    if t is not None and t.budget_exhausted:
        raise BudgetExceeded(f"[{ctx.stage.name}] budget reached; rerun with a larger max_cost to finish")


def funnel_counts(rows_in: int, counts: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Manifest counts from a :class:`synthkd.methods.runner.RunCounts`: rows that left go under
    ``dropped``; kept rows with a null answer under ``kept_notes``."""
    dropped = {r: n for r, n in counts.reasons.items() if not r.startswith("answer null")}
    notes = {r: n for r, n in counts.reasons.items() if r.startswith("answer null")}
    return {"rows_in": rows_in, "rows_out": counts.written + counts.already_there, "rejected": counts.rejected,
            "dropped": dropped, "kept_notes": notes, **(extra or {})}

