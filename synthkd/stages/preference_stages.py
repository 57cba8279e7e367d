"""Pipeline stages for preference distillation: ``generate.preferences`` and ``train.dpo``.

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

``train.dpo`` runs :func:`synthkd.train.dpo.train_dpo` from an earlier train stage's model (or a
path / hub id), with the reference-model options of ``synthkd train dpo``, and records the loss
history like ``train.sft`` (the report draws the training curve from it).

Note on reruns: the pipeline fingerprints a stage by its options and *input files*; the student model
named by stage is not an input file, so a retrained student is picked up only with ``--from`` (the same
holds for ``eval``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from synthkd.config import TeacherConfig
from synthkd.jsonl_io import InputError, index_output, load_rows
from synthkd.methods.runner import write_rows
from synthkd.pipeline import Estimate, StageContext, register_stage, teacher_spec_from
from synthkd.pipeline import count_rows
from synthkd.stages.generate_stages import _check_budget, _funnel
from synthkd.stages.train_stages import TRAIN_STAGE_RESUMABLE
from synthkd.teachers.factory import make_teacher

TRAIN_KINDS = ("train.sft", "train.dpo", "tailor")


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _earlier_train_stage(ctx: StageContext, name: str) -> bool:
    """Whether ``name`` is a train stage before this one (a later one would not exist yet)."""
    return any(s.name == name and s.kind in TRAIN_KINDS for s in ctx.pipeline.stages[: ctx.index])


def _later_or_untrained_stage(ctx: StageContext, name: str) -> str | None:
    for i, s in enumerate(ctx.pipeline.stages):
        if s.name == name and not (i < ctx.index and s.kind in TRAIN_KINDS):
            where = "a later stage" if i >= ctx.index else f"a {s.kind!r} stage, not a train stage"
            return f"{name!r} is {where}: name an earlier train.sft / train.dpo stage, a model directory or a model"
    return None


def resolve_model_dir(ctx: StageContext, name: str) -> str:
    """An earlier train stage's model directory, an existing directory (relative to the pipeline's base),
    or ``name`` unchanged (a hub id)."""
    if _earlier_train_stage(ctx, name):
        return str(ctx.run_dir / name)
    p = ctx.resolve(name)
    return str(p) if p.exists() else name


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


# ----------------------------------------------------------------------------- train.dpo
@register_stage("train.dpo")
class DPOStage:
    resumable = TRAIN_STAGE_RESUMABLE  # an unfinished attempt's directory is moved aside: DPO starts over
    class Options(_Opts):
        student: str = Field(description="an earlier train stage's name, a model directory or a hub id")
        ref: str = "implicit"
        ref_model: Optional[str] = None  # with ref: explicit; a stage name or a model dir / hub id
        beta: float = Field(0.1, gt=0)
        loss_type: Union[str, list[str]] = "sigmoid"
        precompute_ref: bool = False
        prompt_field: Optional[str] = None
        chosen_field: str = "chosen"
        rejected_field: str = "rejected"
        epochs: float = 1.0
        max_steps: int = -1
        learning_rate: float = 5e-7
        batch_size: int = 8
        grad_accum: int = 1
        max_length: int = 1024
        eval_fraction: float = Field(0.0, ge=0, lt=1)
        lora: bool = False
        bf16: Optional[bool] = None
        seed: int = 0
        logging_steps: int = 10
        skip_invalid: bool = False

    options_model = Options

    def check(self, ctx: StageContext, o: Options) -> None:
        from synthkd.train.dpo import REF_MODES

        problems = []
        if o.ref not in REF_MODES:
            problems.append(f"ref {o.ref!r}: use one of {', '.join(REF_MODES)}")
        if (o.ref == "explicit") != bool(o.ref_model):
            problems.append("ref_model goes with ref: explicit (and ref: explicit needs ref_model)")
        for key, name in (("student", o.student), ("ref_model", o.ref_model)):
            if name and (why := _later_or_untrained_stage(ctx, name)) is not None:
                problems.append(f"{key}: {why}")
        if problems:
            raise InputError(problems)

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        return await asyncio.to_thread(self._run, ctx, o)

    def _run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.train.common import TrainSettings
        from synthkd.train.dpo import DPOOptions, train_dpo
        from synthkd.train.export import Fields

        out = ctx.run_dir / ctx.stage.name
        settings = TrainSettings(epochs=o.epochs, max_steps=o.max_steps, learning_rate=o.learning_rate,
                                 batch_size=o.batch_size, grad_accum=o.grad_accum, max_length=o.max_length,
                                 lora=o.lora, bf16=o.bf16, seed=o.seed, logging_steps=o.logging_steps,
                                 skip_invalid=o.skip_invalid, save_steps=0)
        loss_type = [o.loss_type] if isinstance(o.loss_type, str) else list(o.loss_type)
        opts = DPOOptions(student=resolve_model_dir(ctx, o.student), input=ctx.input, output=out, ref=o.ref,
                          ref_model=resolve_model_dir(ctx, o.ref_model) if o.ref_model else None, beta=o.beta,
                          loss_type=loss_type, precompute_ref_log_probs=o.precompute_ref,
                          eval_fraction=o.eval_fraction,
                          fields=Fields(prompt=o.prompt_field, chosen=o.chosen_field, rejected=o.rejected_field),
                          settings=settings)
        record, trainer = train_dpo(opts)
        hist = out / "log_history.json"
        hist.write_text(json.dumps(trainer.state.log_history))
        rows = sum(1 for line in open(ctx.input, "rb") if line.strip())
        return {"rows_in": rows, "rows_used": (record.get("data") or {}).get("rows_used"),
                "policy_start": record.get("policy_start"), "reference": record.get("reference"),
                "beta": o.beta, "loss_type": loss_type, "model_dir": str(out), "loss_history": str(hist),
                "train_metrics": record.get("metrics", {}), "_outputs": [out]}

    def estimate(self, ctx: StageContext, o: Options) -> None:
        return None
