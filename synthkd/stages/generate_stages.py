"""Pipeline stages for the generation methods: ``generate.rationales``, ``generate.promptmix``,
``generate.relabel``.  Each maps YAML options onto the method's Python API and writes the stage's rows
with :func:`synthkd.methods.runner.write_rows` (so a rerun resumes and pays nothing twice)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from synthkd.jsonl_io import InputError, index_output, iter_jsonl, load_rows
from synthkd.methods.runner import write_rows
from synthkd.pipeline import Estimate, StageContext, register_stage
from synthkd.teachers.base import BudgetExceeded


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


@register_stage("generate.rationales")
class RationalesStage:
    class Options(_Opts):
        kind: str
        template: Optional[str] = None
        demos: Optional[str] = None
        n_demos: int = Field(4, ge=0)
        seed: int = 0
        samples: int = Field(1, ge=1)
        temperature: Optional[float] = Field(None, ge=0)
        max_tokens: Optional[int] = Field(None, ge=1)
        rationalize: bool = False
        labels: Optional[list[str]] = None
        input_field: str = "question"
        label_field: str = "answer"
        choices_field: str = "choices"
        premise_field: str = "premise"
        hypothesis_field: str = "hypothesis"
        rationale_field: str = "rationale"

    options_model = Options

    def check(self, ctx: StageContext, o: Options) -> None:
        from synthkd.methods.tasks_spec import KINDS
        from synthkd.templates import load_template

        if o.kind not in KINDS:
            raise InputError([f"kind {o.kind!r}: use one of {', '.join(KINDS)}"])
        if o.template:
            load_template(ctx.resolve(o.template) if o.template.endswith(".j2") else o.template)
        if o.demos and not ctx.resolve(o.demos).exists():
            raise InputError([f"demos: {ctx.resolve(o.demos)} not found"])

    def _plan(self, ctx: StageContext, o: Options):
        from synthkd.methods.rationales import plan_rationales
        from synthkd.methods.tasks_spec import FieldNames

        rows, lines = load_rows(ctx.input)
        demo_path = ctx.resolve(o.demos) if o.demos else None
        demo_rows, demo_lines = load_rows(demo_path) if demo_path else (None, [])
        fields = FieldNames(input=o.input_field, label=o.label_field, choices=o.choices_field,
                            premise=o.premise_field, hypothesis=o.hypothesis_field, rationale=o.rationale_field)
        plan = plan_rationales(
            rows, kind=o.kind, template=o.template, demos=demo_rows, n_demos=o.n_demos, samples=o.samples,
            temperature=o.temperature, rationalize=o.rationalize, labels=o.labels, fields=fields, seed=o.seed,
            max_tokens=o.max_tokens, row_where=lambda i: f"{ctx.input}:{lines[i]}",
            demo_where=lambda i: f"{demo_path}:{demo_lines[i]}",
        )
        return rows, plan

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.methods.rationales import RationaleTally

        rows, plan = self._plan(ctx, o)
        teacher = ctx.teacher()
        done = index_output(ctx.output)
        tally = RationaleTally(samples=o.samples)

        async def tallied():
            async for row in plan.run(teacher, skip_ids=done):
                tally.add(row)
                yield row

        counts = await write_rows(tallied(), ctx.output)
        _check_budget(ctx)
        return _funnel(len(rows), counts, {"teacher_scores": tally.as_dict()})

    def estimate(self, ctx: StageContext, o: Options) -> Estimate:
        rows, plan = self._plan(ctx, o)
        calls = len(rows) * o.samples
        # every prompt is rendered (cheap): exact prompt sizes, at ~4 characters a token
        prompt_tokens = sum(len(plan.prompt(r, plan.demos_for(r))) for r in rows) // 4 * o.samples
        return Estimate(calls, prompt_tokens, calls * (o.max_tokens or 256))


@register_stage("generate.promptmix")
class PromptMixStage:
    class Options(_Opts):
        labels: str
        per_class: int = Field(ge=1)
        group_size: int = Field(4, ge=2)
        examples_per_call: int = Field(4, ge=1)
        grouping: str = "similar"
        policy: str = "overwrite"
        seed: int = 0
        k_shot: int = 3
        relabel_k_shot: int = 2
        relabel_candidates: Optional[int] = 10
        temperature: Optional[float] = 1.0
        max_tokens: Optional[int] = None

    options_model = Options

    def check(self, ctx: StageContext, o: Options) -> None:
        self._cfg(ctx, o)

    def _cfg(self, ctx: StageContext, o: Options):
        from synthkd.methods.promptmix import PromptMixConfig
        from synthkd.methods.relabel import LabelSpace

        space = LabelSpace.from_file(ctx.resolve(o.labels))
        cfg = PromptMixConfig(per_class=o.per_class, group_size=o.group_size, examples_per_call=o.examples_per_call,
                              grouping=o.grouping, policy=o.policy, seed=o.seed, k_shot=o.k_shot,
                              relabel_k_shot=o.relabel_k_shot, relabel_candidates=o.relabel_candidates,
                              temperature=o.temperature, max_tokens=o.max_tokens)
        problems = cfg.problems(space)
        if problems:
            raise InputError([f"{ctx.stage.name}: {p}" for p in problems])
        return space, cfg

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.methods.promptmix import PromptMixStats, promptmix

        space, cfg = self._cfg(ctx, o)
        stats = PromptMixStats()
        counts = await write_rows(promptmix(space, ctx.teacher(), cfg, stats), ctx.output)
        _check_budget(ctx)
        return _funnel(stats.parsed, counts, {"generation_calls": stats.calls})

    def estimate(self, ctx: StageContext, o: Options) -> Estimate:
        from synthkd.methods.promptmix import plan_calls

        space, cfg = self._cfg(ctx, o)
        calls = plan_calls(space, cfg)
        n_items = len(calls) * o.examples_per_call
        gen_prompt = sum(len(c.prompt) for c in calls) // 4
        return Estimate(len(calls) + n_items, gen_prompt + n_items * 300,
                        len(calls) * (o.max_tokens or 60 * o.examples_per_call) + n_items * 32)


@register_stage("generate.relabel")
class RelabelStage:
    class Options(_Opts):
        labels: str
        text_field: str = "text"
        label_field: str = "label"
        k_shot: int = 2
        candidates: Optional[int] = 10
        samples: int = Field(1, ge=1)
        temperature: Optional[float] = None
        seed: int = 0

    options_model = Options

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.methods.relabel import LabelSpace, classify, confusion_summary

        space = LabelSpace.from_file(ctx.resolve(o.labels))
        done = index_output(ctx.output)
        n = sum(1 for _ in iter_jsonl(ctx.input))

        async def rows():
            todo = (r for _, r in iter_jsonl(ctx.input) if r["id"] not in done)
            async for row, rel in classify(todo, ctx.teacher(), space, text_field=o.text_field, k_shot=o.k_shot,
                                           candidates=o.candidates, samples=o.samples, temperature=o.temperature,
                                           seed=o.seed, intended_field=o.label_field):
                out = {**row, "relabeled_label": rel.label, "relabel_raw": rel.raw, "relabel_reason": rel.reason}
                if rel.teacher_error:
                    out["reject_reason"] = rel.reason
                yield out

        counts = await write_rows(rows(), ctx.output)
        _check_budget(ctx)
        summary = confusion_summary((r.get(o.label_field), r.get("relabeled_label")) for _, r in iter_jsonl(ctx.output))
        return _funnel(n, counts, {"relabel": {k: v for k, v in summary.items() if k != "matrix"}})

    def estimate(self, ctx: StageContext, o: Options) -> Estimate:
        n = sum(1 for _ in iter_jsonl(ctx.input))
        return Estimate(n * o.samples, n * o.samples * 350, n * o.samples * 32)
