"""Pipeline stage ``generate.promptmix``: its options are
:class:`synthkd.methods.promptmix.PromptMixConfig`'s stage fields (the same defaults, bounds and help
as ``synthkd generate promptmix``); rows are written with :func:`synthkd.methods.runner.write_rows`
(so a rerun resumes and pays nothing twice)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from synthkd.jsonl_io import InputError
from synthkd.methods.promptmix import PromptMixConfig
from synthkd.methods.runner import write_rows
from synthkd.options import from_stage, stage_model
from synthkd.stages.base import Estimate, StageContext, check_budget, funnel_counts, register_stage
from synthkd.stages.generate_common import resolved


@register_stage("generate.promptmix")
class PromptMixStage:
    # confusion: a file, or an earlier stage's name (its rows: e.g. a clean stage with a relabel op)
    Options = stage_model(PromptMixConfig, name="PromptMixOptions", defaults={"labels": ...},
                          types={"confusion": Optional[str]})
    options_model = Options

    def check(self, ctx: StageContext, o: Any) -> None:
        self._cfg(ctx, o)

    def _cfg(self, ctx: StageContext, o: Any):
        from synthkd.labels import LabelSpace

        cfg = resolved(ctx, from_stage(PromptMixConfig, o, output=ctx.output), files=("labels",),
                       templates=("template", "relabel_template"))
        if o.confusion is not None:
            stages = {st.name for st in ctx.pipeline.stages}
            cfg = dataclasses.replace(cfg, confusion=ctx.run_dir / f"{o.confusion}.jsonl" if o.confusion in stages
                                      else ctx.resolve(o.confusion))
        space = LabelSpace.from_file(cfg.labels)
        problems = cfg.problems(space)
        if problems:
            raise InputError([f"{ctx.stage.name}: {p}" for p in problems])
        return space, cfg

    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        from synthkd.methods.metrics import PromptMixMetrics, observed
        from synthkd.methods.promptmix import PromptMixStats, canonical_key, plan_calls, promptmix
        from synthkd.methods.runner import sort_output

        space, cfg = self._cfg(ctx, o)
        stats = PromptMixStats()
        # the same metrics as `synthkd generate promptmix` (relabel agreement, alpha spread...)
        metrics = PromptMixMetrics(stats, calls_planned=len(plan_calls(space, cfg)), policy=cfg.policy)
        counts = await write_rows(observed(promptmix(space, ctx.teacher(), cfg, stats), metrics), ctx.output)
        sort_output(ctx.output, canonical_key)  # the file does not depend on completion order
        check_budget(ctx)
        return funnel_counts(stats.parsed, counts, {"generation_calls": stats.calls,
                                                    "method_metrics": metrics.as_dict(),
                                                    "pair_by": "confusion" if stats.confusion_pairs else "description",
                                                    "confusion_pairs": stats.confusion_pairs})

    def estimate(self, ctx: StageContext, o: Any) -> Estimate:
        from synthkd.methods.promptmix import plan_calls

        space, cfg = self._cfg(ctx, o)
        calls = plan_calls(space, cfg)
        n_items = len(calls) * o.examples_per_call
        gen_prompt = sum(len(c.prompt) for c in calls) // 4
        return Estimate(len(calls) + n_items, gen_prompt + n_items * 300,
                        len(calls) * (o.max_tokens or 60 * o.examples_per_call) + n_items * o.relabel_max_tokens,
                        f"{len(calls)} generation calls + one relabel call per item asked ({n_items}): an upper "
                        "bound, items dropped by dedup are not relabelled", rows_out=n_items)
