"""``synthkd clean``: run a chain of cleaning operators from a config (``clean run``), or one operator
alone (``clean <op>``, its options generated from the operator's config model so the two can never
disagree).

Exit codes: 0 done (rejected rows are a normal outcome; see the funnel report); 2 bad input or
config (nothing written); 4 the teacher refused us (bad key, unreachable).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from synthkd.commands.common import (
    exit_on_error,
    make_teacher,
    run_job,
    teacher_spec,
    with_columns,
    with_connection_options,
)
from synthkd.options import help_of, pydantic_cli_values, pydantic_typer_params
from synthkd.row_source import bind
from synthkd.teachers.factory import CONNECTION_FIELDS, TeacherSpec

if TYPE_CHECKING:
    from synthkd.filters.base import Operator

log = logging.getLogger(__name__)

clean_app = typer.Typer(
    help="Clean training data: dedup, near-dup, answer consistency, relabel, judge, format/length/refusal/"
    "language, decontamination, balance. Every dropped row goes to a rejects file with its operator and reason; "
    "a funnel report (JSON + Markdown) says where the rows went.",
    no_args_is_help=True,
)

InputOpt = Annotated[Path, typer.Option("--input", "-i", help="Rows, each with an 'id' (jsonl, csv, parquet, a datasets directory or hf:; tables without an id column get their positions).")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="jsonl of the kept rows (written whole at the end).")]
RejectsOpt = Annotated[Optional[Path], typer.Option("--rejects", help="Dropped rows with reject_op/reject_reason/reject_detail (default OUTPUT.rejects.jsonl).")]
ReportDirOpt = Annotated[Optional[Path], typer.Option("--report-dir", help="Where funnel.json and funnel.md go (default OUTPUT.funnel.json/.md).")]
StrictOpt = Annotated[bool, typer.Option("--strict/--lenient", help="Strict: a row missing a field an operator needs is an error (file, line, row id, field) before any work; lenient: such rows are rejected with that reason.")]
ProgressOpt = Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Progress bar (default: only on a terminal).")]
_TEACHER_HELP = help_of(next(f for f in dataclasses.fields(TeacherSpec) if f.name == "teacher"))
TeacherOptional = Annotated[Optional[str], typer.Option("--teacher", "--model", "-m", help="Teacher for relabel/judge: " + _TEACHER_HELP[0].lower() + _TEACHER_HELP[1:])]


def _teacher_factory(teacher: str | None, **kw: Any):
    if teacher is None:
        return None
    spec = teacher_spec(teacher, **kw)
    return lambda: make_teacher(spec)


def _run(input: Path, configs: list, output: Path, rejects: Path | None, report_dir: Path | None, strict: bool,
         progress: bool | None, factory, meta: dict[str, Any], cache: Path | None = None) -> None:
    from synthkd.filters.chain import CleanPaths, clean_file, default_rejects, default_report_paths
    from synthkd.jsonl_io import check_paths

    rj, rm = default_report_paths(output, report_dir)
    paths = CleanPaths(output=output, rejects=rejects or default_rejects(output), report_json=rj, report_md=rm)

    async def job() -> int:
        check_paths({"--input": input}, {"--output": output, "--rejects" if rejects else "rejects file": paths.rejects,
                                         "funnel report": rj, "funnel report (Markdown)": rm},
                    cache=cache if factory is not None else None)
        funnel = await clean_file(input, configs, paths, strict=strict, teacher_factory=factory,
                                  progress=progress, meta=meta)
        drops = ", ".join(f"{s.name} {s.dropped:,}" for s in funnel.stages if s.dropped) or "none"
        log.info(f"clean: {funnel.rows_in:,} rows in -> {funnel.rows_out:,} out, {funnel.rejected:,} rejected ({drops}) "
            f"in {funnel.wall_s:.1f} s\n  output {paths.output}\n  rejects {paths.rejects}\n  report {paths.report_md}")
        return 0

    run_job(job)


@clean_app.command("run")
@with_connection_options
@with_columns
def run_cmd(
    input: InputOpt,
    config: Annotated[Path, typer.Option("--config", help="YAML/JSON list of operators: [{op: exact_dedup, fields: [text]}, {op: near_dup, threshold: 0.8}, ...].")],
    output: OutputOpt,
    rejects: RejectsOpt = None,
    report_dir: ReportDirOpt = None,
    strict: StrictOpt = True,
    progress: ProgressOpt = None,
    teacher: TeacherOptional = None,
    conn: Optional[dict] = None,  # the connection options (with_connection_options)
    inp: Optional[dict] = None,  # the column map (with_columns)
) -> None:
    """Run the operators of a config file over INPUT, in order, streaming."""
    from synthkd.filters.op_config import load_config
    from synthkd.jsonl_io import check_paths

    if conn is None:  # with_connection_options always passes it
        raise TypeError("run_cmd needs the connection options (conn)")
    with exit_on_error():
        check_paths({"--config": config})
        configs = load_config(config)
    factory = _teacher_factory(teacher, **conn)
    columns = (inp or {}).get("columns")
    if columns:
        input = bind(input, columns)
    _run(input, configs, output, rejects, report_dir, strict, progress, factory,
         {"config": str(config), **({"teacher": teacher} if teacher else {})},
         cache=None if conn["no_cache"] else conn["cache"])


# ---------------------------------------------------------------------------------------------------
# one command per operator, generated from its Config model
# ---------------------------------------------------------------------------------------------------

_COMMON = ["input", "output", "rejects", "report_dir", "strict", "progress"]


def _op_command(op_cls: type[Operator]) -> None:
    """``synthkd clean <op>``: the shared options of ``clean run`` (and the teacher's, for an operator
    that uses one), then one option per field of the operator's Config (synthkd.options's pydantic
    adapter: the same names, switches and help as every other generated command)."""
    cfg_cls = op_cls.Config
    hints = typing.get_type_hints(run_cmd, include_extras=True)
    run_sig = inspect.signature(run_cmd)
    common = _COMMON + (["teacher"] if op_cls.uses_teacher else [])
    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=run_sig.parameters[name].default,
                                annotation=hints[name]) for name in common]
    own = ["op", *common, *(CONNECTION_FIELDS if op_cls.uses_teacher else ())]
    params += pydantic_typer_params(cfg_cls, exclude=own)
    if op_cls.uses_teacher:  # the connection options: with_connection_options adds them below
        params.append(inspect.Parameter("conn", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Optional[dict]))

    def command(**kw: Any) -> None:
        from synthkd.filters.op_config import parse_ops

        item: dict[str, Any] = {"op": op_cls.op, **pydantic_cli_values(cfg_cls, kw, exclude=own)}
        with exit_on_error():
            configs = parse_ops([item], f"synthkd clean {op_cls.op}")
        conn = kw.get("conn")
        factory = _teacher_factory(kw["teacher"], **conn) if conn is not None else None
        _run(kw["input"], configs, kw["output"], kw["rejects"], kw["report_dir"], kw["strict"], kw["progress"],
             factory, {"config": json.dumps(item, default=str)},
             cache=None if conn is None or conn["no_cache"] else conn["cache"])

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = op_cls.op
    command.__doc__ = (op_cls.summary or op_cls.op) + "\n\n" + (inspect.getdoc(op_cls.__module__ and __import__(op_cls.__module__, fromlist=["x"])) or "").split("\n\n")[0]
    cmd = with_connection_options(command) if op_cls.uses_teacher else command
    clean_app.command(op_cls.op)(cmd)
    if "_" in op_cls.op:  # `synthkd clean near-dup` works too
        clean_app.command(op_cls.op.replace("_", "-"), hidden=True)(cmd)


def _register_ops() -> None:
    from synthkd.filters.op_config import registry

    for op_cls in registry().values():
        _op_command(op_cls)


_register_ops()
