"""Stage ``clean``: run a chain of filters/relabelers over the previous stage's rows.

Options: ``ops`` (the operator list inline, same shape as a ``synthkd clean run --config`` file) or
``config`` (a path to such a file), and ``strict``.  The funnel report lands next to the stage output
(``<stage>.funnel.json`` / ``.md``) and its per-operator drops go into the run manifest.  Operators'
file options are relative to the pipeline file's directory, like every path in a pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, model_validator

from synthkd.jsonl_io import iter_jsonl
from synthkd.stages.base import Estimate, StageContext, register_stage


def _resolve_paths(ctx: StageContext, c: Any) -> Any:
    """An operator's config with its file options (``eval_file``, ``label_space``, ``rubric_file``: the
    fields typed ``Path``) and ``.j2`` templates taken against the pipeline file's directory, as every
    path in a pipeline is (inline ``ops`` and a ``config:`` file alike)."""
    changes: dict[str, Any] = {}
    for name in type(c).model_fields:
        v = getattr(c, name)
        if isinstance(v, Path) and not v.is_absolute():
            changes[name] = ctx.resolve(str(v))
        elif name.endswith("template") and isinstance(v, str) and v.endswith(".j2") and not Path(v).is_absolute():
            changes[name] = str(ctx.resolve(v))
    return c.model_copy(update=changes) if changes else c


@register_stage("clean")
class CleanStage:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ops: Optional[list[dict[str, Any]]] = None
        config: Optional[str] = None
        strict: bool = True

        @model_validator(mode="after")
        def _one(self) -> "CleanStage.Options":
            if (self.ops is None) == (self.config is None):
                raise ValueError("give exactly one of 'ops' (inline list) or 'config' (a file)")
            return self

    options_model = Options

    def _configs(self, ctx: StageContext, o: Options) -> list:
        from synthkd.filters.op_config import load_config, parse_ops

        if o.config:
            configs = load_config(ctx.resolve(o.config))
        else:
            configs = parse_ops(o.ops, source=f"{ctx.stage.name}.options.ops")
        return [_resolve_paths(ctx, c) for c in configs]

    def check(self, ctx: StageContext, o: Options) -> None:
        self._configs(ctx, o)  # unknown operators or options fail before anything runs

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.filters.chain import CleanPaths, clean_file

        out = ctx.output
        paths = CleanPaths(output=out, rejects=out.with_name(out.stem + ".rejects.jsonl"),
                           report_json=out.with_name(out.stem + ".funnel.json"),
                           report_md=out.with_name(out.stem + ".funnel.md"))
        funnel = await clean_file(ctx.input, self._configs(ctx, o), paths, strict=o.strict,
                                  teacher_factory=ctx.teacher, progress=None)
        dropped: dict[str, int] = {}
        for st in funnel.stages[1:]:
            for reason, n in st.reasons.items():
                dropped[f"{st.name}: {reason}"] = n
        return {"rows_in": funnel.rows_in, "rows_out": funnel.rows_out, "rejected": funnel.rejected,
                "dropped": dropped, "funnel_report": str(paths.report_md)}

    def estimate(self, ctx: StageContext, o: Options) -> Estimate | None:
        configs = self._configs(ctx, o)
        teacher_ops = [c for c in configs if getattr(c, "op", "") in {"relabel", "judge"}]
        if ctx.input.exists():
            n, note = sum(1 for _ in iter_jsonl(ctx.input)), ""
        elif "input" in ctx.expected_rows:  # made by an earlier stage: the rows its estimate expects
            n = ctx.expected_rows["input"]
            note = f"{n} input rows expected from the stage that makes them (an upper bound: filters drop rows)"
        else:
            raise FileNotFoundError(str(ctx.input))  # known only after the stage before it runs
        # a `sample` caps the rows every later op sees (and the stage writes); other ops are counted as
        # keeping every row, so this stays an upper bound
        rows, calls = n, 0
        for c in configs:
            if getattr(c, "op", "") == "sample":
                rows = min(rows, c.n)  # type: ignore[attr-defined]
            elif c in teacher_ops:
                calls += rows
        if not teacher_ops:
            return Estimate(rows_out=rows)
        return Estimate(calls, calls * 400, calls * 32, note, rows_out=rows)
