"""Pipeline stage ``generate.relabel``: its options are
:class:`synthkd.labels.RelabelConfig`'s stage fields (the same defaults, bounds and help as
``synthkd generate relabel``); rows are written with :func:`synthkd.methods.runner.write_rows` (so a
rerun resumes and pays nothing twice)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synthkd.jsonl_io import index_output, iter_jsonl
from synthkd.labels import RelabelConfig
from synthkd.methods.runner import write_rows
from synthkd.options import from_stage, stage_model
from synthkd.stages.base import Estimate, StageContext, check_budget, funnel_counts, register_stage
from synthkd.stages.generate_common import resolved

if TYPE_CHECKING:
    from synthkd.labels import LabelSpace


@register_stage("generate.relabel")
class RelabelStage:
    Options = stage_model(RelabelConfig, name="RelabelOptions", defaults={"labels": ...})
    options_model = Options

    def _cfg(self, ctx: StageContext, o: Any) -> RelabelConfig:
        cfg = from_stage(RelabelConfig, o, input=ctx.input, output=ctx.output)
        return resolved(ctx, cfg, files=("labels",), templates=("template",))

    @staticmethod
    def _space(cfg: RelabelConfig) -> LabelSpace:
        from synthkd.labels import LabelSpace

        assert cfg.labels is not None  # Options makes labels required
        return LabelSpace.from_file(cfg.labels)

    def check(self, ctx: StageContext, o: Any) -> None:
        cfg = self._cfg(ctx, o)
        self._space(cfg)
        cfg.check()

    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        from synthkd.methods.metrics import relabel_metrics

        cfg = self._cfg(ctx, o)
        space = self._space(cfg)
        n = cfg.check_input(ctx.input, space)  # every row checked before any request
        done = index_output(ctx.output)
        todo = (r for _, r in iter_jsonl(ctx.input) if r["id"] not in done)
        counts = await write_rows(cfg.run(todo, ctx.teacher(), space), ctx.output)
        check_budget(ctx)
        # the same metrics as `synthkd generate relabel`: intended vs relabeled over the whole output
        summary = relabel_metrics(ctx.output, cfg.intended)
        return funnel_counts(n, counts, {"relabel": {k: v for k, v in summary.items() if k != "matrix"},
                                         "method_metrics": {"confusion": summary}})

    def estimate(self, ctx: StageContext, o: Any) -> Estimate:
        n = sum(1 for _ in iter_jsonl(ctx.input))
        return Estimate(n * o.samples, n * o.samples * 350, n * o.samples * (o.max_tokens or 32))
