"""``synthkd run`` and ``synthkd validate``: carry out a pipeline YAML, or check it and estimate its cost."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from synthkd.commands.common import exit_on_error
from synthkd.config import ConfigError, line_for, load_pipeline, stage_line
from synthkd.errors import ExitCode, os_error_line  # noqa: F401 (os_error_line: its home was here)
from synthkd.options import option_group
from synthkd.row_source import InputOptions
from synthkd.teachers.pricing import PriceTable, PriceTableError

# (synthkd.config pulls in pydantic: fine here, this module is imported only for run/validate help)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config value: KEY.PATH=VALUE (repeatable).")]


log = logging.getLogger(__name__)


def estimate_table(cfg, planned, *, at_run_prices: bool = False) -> tuple[str, float | None]:
    """The cost table `synthkd validate` prints (each stage's calls, tokens and upper cost, online and at
    the Batch APIs' prices) and the total cost (None when a price is unknown): online, or with
    ``at_run_prices`` at the prices each stage's teacher will pay (batch prices for ``batch: true``);
    `--limit` dry runs print the same table for the whole input."""
    from synthkd.pipeline import estimate_all

    total = estimate_all(planned)
    lines = ["| stage | kind | teacher calls | prompt tokens | completion tokens (max) | cost (USD, at max tokens) "
             "| batch cost (USD, at max tokens) |",
             "|---|---|---|---|---|---|---|"]
    grand: float | None = 0.0
    grand_batch: float | None = 0.0
    grand_run: float | None = 0.0  # at the prices the run pays
    for p in planned:
        e = p.estimate if p.estimate is not None and p.estimate.calls else None  # no teacher call: "-"
        tc = p.ctx.teacher_config
        cost = batch = None
        if e and tc:
            prices = p.ctx.resolve(tc.prices) if tc.prices else None
            try:
                price = PriceTable.default(prices).lookup(tc.model)
            except PriceTableError as exc:  # a config error (a file that is not UTF-8 too), not a traceback
                where = (stage_line(cfg, p.index, "teacher", "prices") if p.cfg.teacher is not None
                         else f"{cfg._source}:{line_for(cfg._lines, ('teacher', 'prices')) or '?'}")
                raise ConfigError(f"{where}: teacher.prices: {exc}") from None  # exc names the file
            if price is not None:
                cost = price.cost(e.prompt_tokens, e.completion_tokens)
                batch = price.batch().cost(e.prompt_tokens, e.completion_tokens)
            elif tc.model.startswith(("replay:", "local:", "simulated:")):
                cost = batch = 0.0
        if e and cost is None:
            grand = grand_batch = grand_run = None
        elif cost is not None and batch is not None and grand is not None and grand_batch is not None:
            grand += cost
            grand_batch += batch
            if grand_run is not None:
                grand_run += batch if tc is not None and tc.batch else cost

        def fmt(v: float | None, e: Any = e) -> str:
            return "-" if not e else ("unknown" if v is None else f"{v:.4f}")

        lines.append(f"| {p.cfg.name} | {p.cfg.kind} | {e.calls if e else '-'} | {e.prompt_tokens if e else '-'} | "
                     f"{e.completion_tokens if e else '-'} | {fmt(cost)} | {fmt(batch)} |")
    lines.append(f"| **total** | | {total.calls} | {total.prompt_tokens} | {total.completion_tokens} | "
                 f"{'unknown' if grand is None else f'{grand:.4f}'} | "
                 f"{'unknown' if grand_batch is None else f'{grand_batch:.4f}'} |")
    notes = [f"- {p.cfg.name}: {p.estimate.note}" for p in planned if p.estimate and p.estimate.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines), (grand_run if at_run_prices else grand)


def validate(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    set_: SetOpt = None,
) -> None:
    """Check a pipeline file and estimate its teacher calls, tokens and cost; spends nothing."""
    from synthkd.pipeline import plan

    with exit_on_error():
        cfg = load_pipeline(pipeline, set_ or [])
        planned = plan(cfg)
        table, _ = estimate_table(cfg, planned)
    print(f"{pipeline}: valid, {len(planned)} stages; run directory {planned[0].ctx.run_dir}")
    print(table)
    print("(estimates count stages whose input exists now; later stages' inputs are made by earlier ones; "
          "batch cost: the providers' Batch APIs, teacher.batch: true)")


@option_group(InputOptions, "inp", exclude=("columns",))
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    set_: SetOpt = None,
    from_stage: Optional[str] = typer.Option(None, "--from", help="Re-run from this stage on, even if unchanged."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask when the estimate exceeds the teacher's max_cost."),
    inp: Optional[dict] = None,
) -> None:
    """Carry out a pipeline into runs/<name>/: resumable, skipping unchanged stages, with a report.

    --limit N: a dry run on the first N rows of the pipeline's inputs, into runs/<name>-limit<N>/, printing
    each stage's first prompts and answers and the cost estimate for the whole input."""
    from synthkd.pipeline import plan, run_pipeline

    limit = (inp or {}).get("limit")

    # rows rejected for good (StageFailed): exit 1, the code README reserves for that; a read-only run_dir
    # or a full disk: nothing written is lost, the manifest is intact
    with exit_on_error(hints={OSError: "nothing already written is lost: fix this and rerun the same command to resume"}):
        cfg = load_pipeline(pipeline, set_ or [])
        planned = plan(cfg)
        table, grand = estimate_table(cfg, planned, at_run_prices=True)  # batch prices for a batch teacher
        budget = cfg.teacher.max_cost if cfg.teacher else None
        if limit is not None:  # a dry run spends a fraction of the estimate: no question asked
            recorders: dict = {}
            result = asyncio.run(run_pipeline(cfg, from_stage=from_stage, limit=limit,
                                              on_plan=lambda planned: _record(planned, recorders)))
            _dry_run_report(result, recorders, limit, table)
            return
        if budget is not None and grand is not None and grand > budget and not yes:
            log.warning(table)
            if not sys.stdin.isatty() or not typer.confirm(
                f"estimated cost ${grand:.4f} exceeds max_cost ${budget}; continue (stops at the budget)?"
            ):
                log.error(f"error: estimated cost ${grand:.4f} exceeds max_cost ${budget}: rerun with --yes to go ahead")
                raise typer.Exit(ExitCode.BAD_INPUT)
        result = asyncio.run(run_pipeline(cfg, from_stage=from_stage))
    from synthkd.report import total_cost_line

    stages = result.manifest.get("stages", {})
    # the report's total (one formatter): "unknown" where a model has no price, never $0
    cost = "; teacher cost: " + total_cost_line(stages).replace("**", "") if any(
        s.get("teacher") for s in stages.values()) else ""
    log.info(f"run directory: {result.run_dir} (ran: {', '.join(result.ran) or 'nothing'}; "
             f"skipped: {', '.join(result.skipped) or 'nothing'}){cost}")


def _record(planned, recorders: dict) -> None:
    """Keep the first prompts and answers of each stage's teacher (built when the stage first asks for it)."""
    from synthkd.dry_run import Recorder

    for p in planned:
        rec = recorders[p.cfg.name] = Recorder()
        ctx, build = p.ctx, p.ctx.teacher

        def teacher(ctx=ctx, build=build, rec=rec):
            first = ctx.current_teacher is None
            t = build()
            if first:
                rec.attach(t)
            return t

        ctx.teacher = teacher
        rec.output = ctx.output


def _dry_run_report(result, recorders: dict, limit: int, table: str) -> None:
    from synthkd.dry_run import report_sections

    sections = [(f"stage {name} ({'ran' if name in result.ran else 'unchanged, not rerun'})",
                 rec if rec.pairs else None, [("", rec.output)]) for name, rec in recorders.items()]
    report_sections(sections, limit, table)
    log.info(f"dry run directory: {result.run_dir} (the full run writes runs of its own; cached answers are reused)")


def report(run_dir: Path = typer.Argument(..., help="A run directory (runs/<name>).")) -> None:
    """(Re)write report.md, report.html and plots/ of a run directory from its manifest."""
    from synthkd.pipeline import read_manifest
    from synthkd.report import write_report

    if not (run_dir / "manifest.json").is_file():
        log.error(f"error: {run_dir}: no manifest.json (not a run directory)")
        raise typer.Exit(ExitCode.BAD_INPUT)
    with exit_on_error():
        print(write_report(run_dir, read_manifest(run_dir / "manifest.json")))  # only into a run dir of ours


def push(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<name>)."),
    stage: str = typer.Argument(..., help="The stage whose rows to push."),
    repo_id: str = typer.Argument(..., help="Hub dataset repo, e.g. me/svamp-rationales."),
    public: bool = typer.Option(False, "--public", help="Create the repo public (default private)."),
) -> None:
    """Push a stage to the Hugging Face Hub (needs HF_TOKEN): a training stage's student as a model repo,
    any other stage's rows as a dataset repo, each with a card recording provenance."""
    from synthkd.hub import push_stage_dataset, push_student

    # a missing stage or file: exit 2; a HubError (offline, unreachable, refused): exit 4, like a teacher
    with exit_on_error():
        if (run_dir / stage / "config.json").exists():
            print(push_student(run_dir, stage, repo_id, private=not public))
        else:
            print(push_stage_dataset(run_dir, stage, repo_id, private=not public))
