"""Pipeline stage ``generate.tasks``: labelled examples from a task spec (no input rows needed).

Its options are :class:`synthkd.methods.label_tasks.LabelTaskConfig`'s stage fields (the same
defaults, bounds and help as ``synthkd generate tasks``); rows are written with
:func:`synthkd.methods.runner.write_rows`, so a rerun resumes: the method's prompts and ids are
deterministic, cached answers are free, ids already written are skipped.

Why a ``check``: the spec file, the label filter and the template are validated when the pipeline is
planned, so a typo in the spec costs nothing — not even the stages before this one.
"""

from __future__ import annotations

import math
from typing import Any

from synthkd.methods.label_tasks import LabelTaskConfig
from synthkd.options import from_stage, stage_model
from synthkd.stages.base import Estimate, StageContext, check_budget, funnel_counts, register_stage
from synthkd.stages.generate_common import resolved


@register_stage("generate.tasks")
class TasksStage:
    Options = stage_model(LabelTaskConfig, name="TasksOptions", defaults={"labels": ...})
    options_model = Options

    def _plan(self, ctx: StageContext, o: Any):
        from synthkd.methods.label_tasks import load_task_spec, plan_label_tasks

        cfg = resolved(ctx, from_stage(LabelTaskConfig, o, output=ctx.output), files=("labels",),
                       templates=("template",))
        return plan_label_tasks(load_task_spec(cfg.labels), cfg)  # InputError naming file, line and field

    def check(self, ctx: StageContext, o: Any) -> None:
        self._plan(ctx, o)  # spec, labels, settings and template, before any teacher call

    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        from synthkd.methods.label_tasks import MethodStats, canonical_order, generate_label_examples
        from synthkd.methods.runner import write_rows

        plan = self._plan(ctx, o)
        stats = MethodStats()
        counts = await write_rows(generate_label_examples(ctx.teacher(), plan, stats=stats), ctx.output)
        canonical_order(plan, ctx.output)  # the file does not depend on completion order
        check_budget(ctx)
        for what, why in sorted(stats.short.items()):
            ctx.log(f"[{ctx.stage.name}] short: {what}: {why}")
        # rows_in: candidates the teacher produced (kept + every dropped one), so rows_in - rows_out = drops
        candidates = stats.kept + sum(stats.drops.values())
        return funnel_counts(candidates, counts, {
            "per_label": dict(stats.per_label), "short": dict(stats.short),
            "requests": stats.requests, "requests_cached": stats.cached,
        })

    def estimate(self, ctx: StageContext, o: Any) -> Estimate:
        plan = self._plan(ctx, o)
        # the method first issues ceil(N / (batch * 0.8)) requests a label and tops up only when short
        per_label = min(plan.max_requests, math.ceil(o.per_label / (plan.config.per_request * 0.8)))
        calls = per_label * len(plan.labels)
        prompt_chars = sum(len(plan.template.render(**plan.variables(lab, 0))) for lab in plan.labels) * per_label
        return Estimate(calls, prompt_chars // 4, calls * (o.max_tokens or 30 * plan.config.per_request))
