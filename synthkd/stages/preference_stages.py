"""Pipeline stage for preference distillation: ``generate.preferences`` (``train.dpo``, which trains on its
pairs, is in :mod:`synthkd.stages.train_stages` with the other train stages).

``generate.preferences`` builds ``{prompt, chosen, rejected}`` pairs with
:mod:`synthkd.methods.preferences`, in one of two modes:

* ``student`` (default): the stage's teacher and a *student* answer the same labelled rows; a pair is
  kept where the teacher is right and the student wrong.  ``student`` names an earlier ``train.sft`` /
  ``train.dpo`` stage (its model directory ``runs/<name>/<stage>`` is used as ``local:PATH``), a model
  directory, or any teacher name (API model, ``local:PATH``, ``replay:FILE``).  Why the student is
  usually an earlier stage: the rejected side should be what *this* student really says, so DPO
  pushes mass away from its own mistakes towards the teacher's rationale.
* ``judge``: k samples per prompt from the stage's teacher (and ``teacher2``), scored by a judge
  (default: the stage's teacher model); best vs worst when the scores differ by ``min_margin``.

Note on reruns: the pipeline fingerprints a stage by its options and *input files*; the student model
named by stage is not an input file, so a retrained student is picked up only with ``--from``.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from synthkd.config import TeacherConfig
from synthkd.jsonl_io import InputError, index_output, load_rows
from synthkd.methods.runner import write_rows
from synthkd.pipeline import Estimate, StageContext, register_stage, teacher_spec_from
from synthkd.pipeline import count_rows
from synthkd.stages.generate_stages import _check_budget, _funnel
from synthkd.stages.train_stages import _earlier_train_stage, _later_or_untrained_stage
from synthkd.teachers.factory import make_teacher


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- generate.preferences
@register_stage("generate.preferences")
class PreferencesStage:
    class Options(_Opts):
        mode: str = "student"
        # student mode
        student: Optional[str] = Field(None, description="earlier train stage, model dir, or teacher name")
        student_base_url: Optional[str] = None
        kind: Optional[str] = None
        student_template: Optional[str] = None
        demos: Optional[str] = None
        n_demos: int = Field(0, ge=0)
        labels: Optional[list[str]] = None
        input_field: str = "question"
        label_field: str = "answer"
        choices_field: str = "choices"
        # both modes
        template: Optional[str] = None  # student mode: CoT template; judge mode: judge template
        seed: int = 0
        temperature: Optional[float] = Field(None, ge=0)
        max_tokens: Optional[int] = Field(None, ge=1)
        # judge mode
        judge: Optional[str] = None
        judge_base_url: Optional[str] = None
        teacher2: Optional[str] = None
        teacher2_base_url: Optional[str] = None
        samples: int = Field(4, ge=1)
        min_margin: float = 2.0
        rubric: Optional[str] = None
        judge_max_tokens: int = Field(256, ge=1)
        prompt_field: Optional[str] = None

    options_model = Options

    @staticmethod
    def _tpl(ctx: StageContext, name: Optional[str]) -> Any:
        return None if name is None else (ctx.resolve(name) if name.endswith(".j2") else name)

    def check(self, ctx: StageContext, o: Options) -> None:
        from synthkd.methods.tasks_spec import KINDS
        from synthkd.templates import load_template

        problems = []
        if o.mode not in ("student", "judge"):
            problems.append(f"mode {o.mode!r}: use student or judge")
        elif o.mode == "student":
            if not o.student:
                problems.append("mode student needs 'student' (an earlier train stage, a model dir or a model)")
            elif (why := _later_or_untrained_stage(ctx, o.student)) is not None:
                problems.append(f"student: {why}")
            if o.kind not in KINDS:
                problems.append(f"kind {o.kind!r}: use one of {', '.join(KINDS)}")
            if o.demos and not ctx.resolve(o.demos).exists():
                problems.append(f"demos: {ctx.resolve(o.demos)} not found")
        if problems:
            raise InputError(problems)
        for t in (o.template, o.student_template):
            if t:
                load_template(self._tpl(ctx, t))

    def _student_name(self, ctx: StageContext, o: Options) -> str:
        s = o.student or ""
        if _earlier_train_stage(ctx, s):
            return f"local:{ctx.run_dir / s}"
        if not s.startswith(("local:", "replay:")) and ctx.resolve(s).is_dir():
            return f"local:{ctx.resolve(s)}"
        return s

    def _other(self, ctx: StageContext, model: str, base_url: Optional[str]) -> Any:
        """A second teacher built like the stage's own (same cache, limits, params), another model."""
        tc = ctx.teacher_config or TeacherConfig(model=model)
        tc = tc.model_copy(update={"model": model, "base_url": base_url or tc.base_url})
        return make_teacher(teacher_spec_from(tc, ctx.base_dir, ctx.run_dir))

    def _plan(self, ctx: StageContext, o: Options, n_samplers: int = 1) -> tuple[list[dict[str, Any]], Any]:
        from synthkd.methods.preferences import plan_judge_pairs, plan_teacher_student
        from synthkd.methods.tasks_spec import FieldNames

        rows, lines = load_rows(ctx.input)
        where = lambda i: f"{ctx.input}:{lines[i]}"  # noqa: E731
        if o.mode == "student":
            demo_path = ctx.resolve(o.demos) if o.demos else None
            demo_rows, demo_lines = load_rows(demo_path) if demo_path else (None, [])
            plan = plan_teacher_student(
                rows, kind=o.kind, template=self._tpl(ctx, o.template),  # type: ignore[arg-type]
                student_template=self._tpl(ctx, o.student_template), demos=demo_rows, n_demos=o.n_demos,
                labels=o.labels, fields=FieldNames(input=o.input_field, label=o.label_field, choices=o.choices_field),
                seed=o.seed, temperature=o.temperature, max_tokens=o.max_tokens, row_where=where,
                demo_where=lambda i: f"{demo_path}:{demo_lines[i]}",
            )
        else:
            plan = plan_judge_pairs(
                rows, prompt_field=o.prompt_field, template=self._tpl(ctx, o.template), rubric=o.rubric,
                samples=o.samples, n_samplers=n_samplers, temperature=1.0 if o.temperature is None else o.temperature,
                seed=o.seed, max_tokens=o.max_tokens, judge_max_tokens=o.judge_max_tokens, min_margin=o.min_margin,
                row_where=where,
            )
        return rows, plan

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        n_samplers = 2 if (o.mode == "judge" and o.teacher2) else 1
        rows, plan = self._plan(ctx, o, n_samplers)  # every row checked before any model is loaded
        teacher = ctx.teacher()
        others: list[Any] = []
        try:
            done = index_output(ctx.output)
            if o.mode == "student":
                student = self._other(ctx, self._student_name(ctx, o), o.student_base_url)
                others.append(student)
                out_rows = plan.run(teacher, student, skip_ids=done)
            else:
                if o.teacher2:
                    others.append(self._other(ctx, o.teacher2, o.teacher2_base_url))
                judge = self._other(ctx, o.judge or teacher.model, o.judge_base_url)
                others.append(judge)
                out_rows = plan.run([teacher, *others[:-1]], judge, skip_ids=done)
            counts = await write_rows(out_rows, ctx.output)
        finally:
            sides = {}
            for role, t in zip(("student",) if o.mode == "student" else
                               (("teacher2",) if o.teacher2 else ()) + ("judge",), others):
                sides[role] = {"model": t.model, "requests": t.stats.attempts}
                await t.aclose()
        _check_budget(ctx)
        if any(t.budget_exhausted for t in others):
            from synthkd.teachers.base import BudgetExceeded

            raise BudgetExceeded(f"[{ctx.stage.name}] budget reached; rerun with a larger max_cost to finish")
        return _funnel(len(rows), counts, {"mode": o.mode, "pairs": count_rows(ctx.output),
                                          "models": sides})

    def estimate(self, ctx: StageContext, o: Options) -> Estimate:
        rows, plan = self._plan(ctx, o, 2 if (o.mode == "judge" and o.teacher2) else 1)
        n = len(rows)
        if o.mode == "student":  # only the teacher's calls are paid; a local student costs nothing
            prompt = sum(len(plan.teacher_plan.prompt(r, plan.teacher_plan.demos_for(r))) for r in rows) // 4
            return Estimate(n, prompt, n * (o.max_tokens or 256))
        k = o.samples * (2 if o.teacher2 else 1)
        return Estimate(n * 2 * k, n * 2 * k * 300, n * k * ((o.max_tokens or 256) + o.judge_max_tokens))
