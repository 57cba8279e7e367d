"""Pipeline stage ``generate.preferences``: ``{prompt, chosen, rejected}`` pairs with
:mod:`synthkd.methods.preferences`; its options are
:class:`synthkd.methods.preferences.PreferencesConfig`'s stage fields (the same defaults, bounds and
help as ``synthkd generate preferences``).  Two modes:

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

from synthkd.config import TeacherConfig
from synthkd.jsonl_io import InputError, count_rows, index_output, load_rows
from synthkd.methods.metrics import PreferencesMetrics, observed
from synthkd.methods.preferences import PreferencesConfig
from synthkd.methods.runner import write_rows
from synthkd.options import from_stage, stage_model
from synthkd.stages.base import Estimate, StageContext, check_budget, funnel_counts, register_stage, teacher_spec_from
from synthkd.stages.generate_common import resolved
from synthkd.stages.train import earlier_train_stage, later_or_untrained_stage
from synthkd.teachers.factory import make_teacher


@register_stage("generate.preferences")
class PreferencesStage:
    Options = stage_model(PreferencesConfig, name="PreferencesOptions")
    options_model = Options

    def _cfg(self, ctx: StageContext, o: Any) -> PreferencesConfig:
        cfg = from_stage(PreferencesConfig, o, input=ctx.input, output=ctx.output)
        return resolved(ctx, cfg, files=("demos", "rubric_file"), templates=("template", "student_template"))

    def check(self, ctx: StageContext, o: Any) -> None:
        from synthkd.methods.task_kinds import KINDS
        from synthkd.templates import load_template

        cfg = self._cfg(ctx, o)
        problems = []
        if cfg.mode == "student":
            if not cfg.student:
                problems.append("mode student needs 'student' (an earlier train stage, a model dir or a model)")
            elif (why := later_or_untrained_stage(ctx, cfg.student)) is not None:
                problems.append(f"student: {why}")
            if cfg.kind not in KINDS:
                problems.append(f"kind {cfg.kind!r}: use one of {', '.join(KINDS)}")
            if cfg.demos and not cfg.demos.exists():
                problems.append(f"demos: {cfg.demos} not found")
        if problems:
            raise InputError(problems)
        cfg.rubric_text() if cfg.mode == "judge" else None  # a missing rubric file, named now
        for t in (cfg.template, cfg.student_template):
            if t:
                load_template(t)

    def _student_name(self, ctx: StageContext, o: Any) -> str:
        s = o.student or ""
        if earlier_train_stage(ctx, s):
            return f"local:{ctx.run_dir / s}"
        if not s.startswith(("local:", "replay:")) and ctx.resolve(s).is_dir():
            return f"local:{ctx.resolve(s)}"
        return s

    def _other(self, ctx: StageContext, model: str, base_url: Optional[str]) -> Any:
        """A second teacher built like the stage's own (same cache, limits, params), another model."""
        tc = ctx.teacher_config or TeacherConfig(model=model)
        tc = tc.model_copy(update={"model": model, "base_url": base_url or tc.base_url})
        return make_teacher(teacher_spec_from(tc, ctx.base_dir, ctx.run_dir))

    def _plan(self, ctx: StageContext, o: Any) -> tuple[list[dict[str, Any]], Any]:
        cfg = self._cfg(ctx, o)
        rows, lines = load_rows(ctx.input)
        demo_rows, demo_lines = load_rows(cfg.demos) if (cfg.mode == "student" and cfg.demos) else (None, [])
        plan = cfg.plan(rows, demos=demo_rows, row_where=lambda i: f"{ctx.input}:{lines[i]}",
                        demo_where=lambda i: f"{cfg.demos}:{demo_lines[i]}")
        return rows, plan

    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        rows, plan = self._plan(ctx, o)  # every row checked before any model is loaded
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
            metrics = PreferencesMetrics(o.mode)
            counts = await write_rows(observed(out_rows, metrics), ctx.output)
        finally:
            sides = {}
            for role, t in zip(("student",) if o.mode == "student" else
                               (("teacher2",) if o.teacher2 else ()) + ("judge",), others):
                sides[role] = {"model": t.model, "requests": t.stats.attempts}
                await t.aclose()
        check_budget(ctx)
        if any(t.budget_exhausted for t in others):
            from synthkd.teachers.base import BudgetExceeded

            raise BudgetExceeded(f"[{ctx.stage.name}] budget reached; rerun with a larger max_cost to finish")
        return funnel_counts(len(rows), counts, {"mode": o.mode, "pairs": count_rows(ctx.output),
                                          "models": sides, "method_metrics": metrics.as_dict(sides)})

    def estimate(self, ctx: StageContext, o: Any) -> Estimate:
        rows, plan = self._plan(ctx, o)
        n = len(rows)
        if o.mode == "student":  # only the teacher's calls are paid; a local student costs nothing
            prompt = sum(len(plan.teacher_plan.prompt(r, plan.teacher_plan.demos_for(r))) for r in rows) // 4
            return Estimate(n, prompt, n * (o.max_tokens or 256))
        k = o.samples * (2 if o.teacher2 else 1)
        return Estimate(n * 2 * k, n * 2 * k * 300, n * k * ((o.max_tokens or 256) + o.judge_max_tokens))
