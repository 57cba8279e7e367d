"""Pipeline stage ``generate.rationales``: its options are
:class:`synthkd.methods.rationales.RationalesConfig`'s stage fields (the same defaults, bounds and help
as ``synthkd generate rationales``); rows are written with :func:`synthkd.methods.runner.write_rows`
(so a rerun resumes and pays nothing twice)."""

from __future__ import annotations

from typing import Any

from synthkd.jsonl_io import InputError, index_output, load_rows
from synthkd.methods.rationales import RationalesConfig
from synthkd.methods.runner import write_rows
from synthkd.options import from_stage, stage_model
from synthkd.stages.base import Estimate, StageContext, check_budget, funnel_counts, register_stage
from synthkd.stages.generate_common import resolved


@register_stage("generate.rationales")
class RationalesStage:
    Options = stage_model(RationalesConfig, name="RationalesOptions")
    options_model = Options

    def config(self, ctx: StageContext, o: Any) -> RationalesConfig:
        cfg = from_stage(RationalesConfig, o, input=ctx.input, output=ctx.output)
        return resolved(ctx, cfg, files=("demos", "labels_file"), templates=("template",))

    def check(self, ctx: StageContext, o: Any) -> None:
        from synthkd.templates import load_template

        cfg = self.config(ctx, o)
        if cfg.template:
            load_template(cfg.template)
        for name in ("demos", "labels_file"):
            p = getattr(cfg, name)
            if p is not None and not p.exists():
                raise InputError([f"{name}: {p} not found"])

    def _plan(self, ctx: StageContext, o: Any):
        cfg = self.config(ctx, o)
        rows, lines = load_rows(ctx.input)
        demo_rows, demo_lines = load_rows(cfg.demos) if cfg.demos else (None, [])
        plan = cfg.plan(rows, demos=demo_rows, row_where=lambda i: f"{ctx.input}:{lines[i]}",
                        demo_where=lambda i: f"{cfg.demos}:{demo_lines[i]}")
        return rows, plan

    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
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
        check_budget(ctx)
        # the same metrics as `synthkd generate rationales` (RationaleTally, see synthkd.methods.metrics)
        return funnel_counts(len(rows), counts, {"teacher_scores": tally.as_dict(), "method_metrics": tally.as_dict()})

    def estimate(self, ctx: StageContext, o: Any) -> Estimate:
        rows, plan = self._plan(ctx, o)
        calls = len(rows) * o.samples
        # every prompt is rendered (cheap): exact prompt sizes, at ~4 characters a token
        prompt_tokens = sum(len(plan.prompt(r, plan.demos_for(r))) for r in rows) // 4 * o.samples
        return Estimate(calls, prompt_tokens, calls * (o.max_tokens or 256))
