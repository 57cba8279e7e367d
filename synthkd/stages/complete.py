"""Stage ``complete``: the teacher completes every prompt of the input (same as ``synthkd complete``)."""

from __future__ import annotations

from typing import Any

from synthkd.complete import CompleteConfig, CompleteJob, run_completions
from synthkd.errors import ExitCode, StageFailed
from synthkd.jsonl_io import count_rows, index_output, iter_jsonl, scan_prompt_file
from synthkd.options import stage_model
from synthkd.stages.base import Estimate, StageContext, register_stage
from synthkd.teachers.base import BudgetExceeded


@register_stage("complete")
class CompleteStage:
    #: the stage options of CompleteJob (``samples``); the teacher and sampling come from the ``teacher:`` block
    Options: Any = stage_model(CompleteJob, name="CompleteStageOptions")
    options_model = Options

    async def run(self, ctx: StageContext, opts: Options) -> dict[str, Any]:
        scan = scan_prompt_file(ctx.input)
        done = index_output(ctx.output)
        teacher = ctx.teacher()
        tc = ctx.teacher_config
        o = CompleteConfig(teacher=teacher.model, input=ctx.input, output=ctx.output, samples=opts.samples,
                           temperature=tc.temperature if tc else None, progress=False)  # the pipeline shows its own bar
        # a fatal teacher error goes up to `synthkd run` as such (exit 4, or 2 for a setting), not as
        # "some rows failed for good" (exit 1)
        code = await run_completions(o, teacher, scan.rows, done, reraise_fatal=True)
        if code == ExitCode.SUBMITTED:  # batch mode: the pipeline waits for the batches, then runs it again
            return {"rows_in": scan.rows, "rows_out": count_rows(ctx.output)}
        if code == ExitCode.BUDGET:
            raise BudgetExceeded(f"[{ctx.stage.name}] budget reached; rerun with a larger max_cost to finish")
        if code != ExitCode.OK:
            raise StageFailed(f"[{ctx.stage.name}] some rows failed for good: see {ctx.output.name.replace('.jsonl', '.rejects.jsonl')}")
        return {"rows_in": scan.rows, "rows_out": count_rows(ctx.output)}

    def estimate(self, ctx: StageContext, opts: Options) -> Estimate:
        calls = prompt_tokens = 0
        for _, row in iter_jsonl(ctx.input):  # the shared reader (a BOM accepted, bad lines named)
            text = row.get("prompt") or " ".join(str(m.get("content", "")) for m in row.get("messages", []))
            calls += opts.samples
            prompt_tokens += (len(text) // 4 + 4) * opts.samples
        max_tokens = (ctx.teacher_config.max_tokens if ctx.teacher_config else None) or 256
        return Estimate(calls, prompt_tokens, calls * max_tokens)
