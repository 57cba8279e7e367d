"""Pipeline stage ``generate.tasks``: labelled examples from a task spec (no input rows needed).

Maps YAML options onto :mod:`synthkd.methods.label_tasks` (the same API ``synthkd generate tasks``
uses) and writes rows with :func:`synthkd.methods.runner.write_rows`, so a rerun resumes: the method's
prompts and ids are deterministic, cached answers are free, ids already written are skipped.

Why a ``check``: the spec file, the label filter and the template are validated when the pipeline is
planned, so a typo in the spec costs nothing — not even the stages before this one.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from synthkd.pipeline import Estimate, StageContext, register_stage


@register_stage("generate.tasks")
class TasksStage:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        spec: str = Field(description="task spec file (YAML/JSON): task, labels (+ descriptions, seeds), attributes")
        per_label: int = Field(ge=1)
        batch_size: int = Field(10, ge=1)
        max_requests_per_label: Optional[int] = Field(None, ge=1)
        template: str = "tasks/examples"
        labels: Optional[list[str]] = None
        seeds_per_prompt: int = Field(3, ge=0)
        min_words: int = Field(3, ge=0)
        threshold: float = Field(0.7, gt=0, lt=1)
        temperature: Optional[float] = Field(1.0, ge=0)
        max_tokens: Optional[int] = Field(None, ge=1)
        seed: int = 0

    options_model = Options

    def _plan(self, ctx: StageContext, o: Options):
        from synthkd.methods.label_tasks import LabelTaskConfig, load_task_spec, plan_label_tasks

        params: dict[str, Any] = {}
        if o.temperature is not None:
            params["temperature"] = o.temperature
        if o.max_tokens is not None:
            params["max_tokens"] = o.max_tokens
        template = str(ctx.resolve(o.template)) if o.template.endswith(".j2") else o.template
        spec = load_task_spec(ctx.resolve(o.spec))  # InputError naming file, line and field
        return plan_label_tasks(spec, LabelTaskConfig(
            per_label=o.per_label, batch_size=o.batch_size, template=template,
            max_requests_per_label=o.max_requests_per_label, seed=o.seed, params=params, threshold=o.threshold,
            min_words=o.min_words, seeds_per_prompt=o.seeds_per_prompt, labels=o.labels,
        ))

    def check(self, ctx: StageContext, o: Options) -> None:
        self._plan(ctx, o)  # spec, labels, settings and template, before any teacher call

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.methods.label_tasks import MethodStats, generate_label_examples
        from synthkd.methods.runner import write_rows
        from synthkd.stages.generate_stages import _check_budget, _funnel

        plan = self._plan(ctx, o)
        stats = MethodStats()
        counts = await write_rows(generate_label_examples(ctx.teacher(), plan, stats=stats), ctx.output)
        _check_budget(ctx)
        for what, why in sorted(stats.short.items()):
            ctx.log(f"[{ctx.stage.name}] short: {what}: {why}")
        # rows_in: candidates the teacher produced (kept + every dropped one), so rows_in - rows_out = drops
        candidates = stats.kept + sum(stats.drops.values())
        return _funnel(candidates, counts, {
            "per_label": dict(stats.per_label), "short": dict(stats.short),
            "requests": stats.requests, "requests_cached": stats.cached,
        })

    def estimate(self, ctx: StageContext, o: Options) -> Estimate:
        plan = self._plan(ctx, o)
        # the method first issues ceil(N / (batch * 0.8)) requests a label and tops up only when short
        per_label = min(plan.max_requests, math.ceil(o.per_label / (o.batch_size * 0.8)))
        calls = per_label * len(plan.labels)
        prompt_chars = sum(len(plan.template.render(**plan.variables(lab, 0))) for lab in plan.labels) * per_label
        return Estimate(calls, prompt_chars // 4, calls * (o.max_tokens or 30 * o.batch_size))
