"""Pipeline stage ``generate.tasks``: labelled examples from a task spec (no input rows needed).

Its options are :class:`synthkd.methods.label_tasks.LabelTaskConfig`'s stage fields (the same
defaults, bounds and help as ``synthkd generate tasks``); rows are written with
:func:`synthkd.methods.runner.write_rows`, so a rerun resumes: the method's prompts and ids are
deterministic, cached answers are free, ids already written are skipped.

Why a ``check``: the spec file, the label filter and the template are validated when the pipeline is
planned, so a typo in the spec costs nothing — not even the stages before this one.
"""

from __future__ import annotations

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
        from synthkd.methods.metrics import TasksMetrics
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
            "method_metrics": TasksMetrics(stats).as_dict(),  # the same metrics as `synthkd generate tasks`
        })

    def estimate(self, ctx: StageContext, o: Any) -> Estimate:
        """Requests expected once dedup losses are counted: a request yields ``batch_size`` items, of
        which a share ``keep_rate`` is kept (the rest are seed copies, duplicates, too short or cut);
        the method tops a label up until it has N (:func:`~synthkd.methods.metrics.expected_task_requests`
        follows its policy).  The keep rate is the one measured on this stage's last run in the run
        directory when there is one, else :data:`~synthkd.methods.metrics.KEEP_RATE_PRIOR`; the note
        says which, and the cap (``max_requests_per_label``) bounds the count."""
        from synthkd.methods.metrics import expected_task_requests

        plan = self._plan(ctx, o)
        rate, items, source = keep_rate_of(ctx)
        per_request = (items or plan.config.per_request) * rate  # kept rows a request yields, on average
        per_label = expected_task_requests(o.per_label, plan.config.per_request, plan.max_requests, per_request)
        calls = per_label * len(plan.labels)
        prompt_chars = sum(len(plan.template.render(**plan.variables(lab, 0))) for lab in plan.labels) * per_label
        cap = plan.max_requests * len(plan.labels)
        note = (f"{calls} requests expected: {o.per_label} rows x {len(plan.labels)} labels at "
                f"{items or plan.config.per_request:g} items a request with keep rate {rate:.2f} after dedup ({source}); "
                f"at most {cap} (max_requests_per_label {plan.max_requests})")
        return Estimate(calls, prompt_chars // 4, calls * (o.max_tokens or 30 * plan.config.per_request), note,
                        rows_out=o.per_label * len(plan.labels))


def keep_rate_of(ctx: StageContext) -> tuple[float, float | None, str]:
    """(keep rate, items per request or None, where they come from): measured on the stage's last run
    (its ``method_metrics`` in the run directory's manifest), else the prior."""
    import json

    from synthkd.methods.metrics import KEEP_RATE_PRIOR

    try:
        rec = json.loads((ctx.run_dir / "manifest.json").read_text(encoding="utf-8"))["stages"][ctx.stage.name]
        m = rec["counts"]["method_metrics"] if rec.get("kind") == "generate.tasks" else {}
        rate, items, cand = m.get("keep_rate"), m.get("items_per_request"), m.get("candidates")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        rate = items = cand = None
    if isinstance(rate, (int, float)) and rate > 0:
        return (float(rate), float(items) if isinstance(items, (int, float)) and items > 0 else None,
                f"measured on this stage's last run, {cand} candidates")
    return KEEP_RATE_PRIOR, None, "prior: no earlier run of this stage to measure it on"
