"""Options every teacher-using command shares, and one way to run a job and map errors to exit codes.

Why here: ``synthkd generate <method>`` and ``synthkd clean`` all talk to a teacher; defining the
options once keeps their names, defaults and help identical everywhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Optional

import typer

from synthkd.errors import OutputWriteError, exit_code_for, report_error
from synthkd.jsonl_io import check_paths
from synthkd.log import setup_cli_logging
from synthkd.methods.runner import rejects_path_for
from synthkd.options import option_group, typer_params
from synthkd.row_source import InputOptions, bind
from synthkd.teachers.factory import CONNECTION_FIELDS, TeacherSpec, make_teacher

#: ``--teacher/--model/-m`` (required), as declared on :class:`synthkd.teachers.factory.TeacherSpec`
TeacherOpt = next(p for p in typer_params(TeacherSpec) if p.name == "teacher").annotation


def with_connection_options(func: Callable[..., Any] | None = None, **defaults: Any) -> Any:
    """The teacher connection options (``--base-url`` ... ``--max-retries``, generated from
    :class:`~synthkd.teachers.factory.TeacherSpec`) as one ``conn`` dict of :func:`teacher_spec`
    keyword arguments, checked (bounds: exit 2 naming the flag): ``teacher_spec(teacher, **conn)``
    builds the teacher.  Use it below ``@app.command``; the command declares ``conn: Optional[dict] =
    None``.  No per-command defaults: the same option with another default on one command is the
    drift this declaration exists to prevent (``tailor`` had ``--concurrency`` 16, its pipeline stage 32)."""
    if defaults:
        raise TypeError(f"with_connection_options: a command may not change the shared defaults {sorted(defaults)}: "
                        "change TeacherSpec (every command and the pipeline follow), or give the option")
    decorate = option_group(TeacherSpec, "conn", exclude=("teacher",))
    return decorate(func) if func is not None else decorate


#: the ``inp`` parameter of a command that takes the input options (:class:`synthkd.row_source.InputOptions`)
INP_PARAM = inspect.Parameter("inp", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Optional[dict])


def with_columns(func: Callable[..., Any]) -> Any:
    """The column map option (``--column FIELD=COLUMN``, :class:`synthkd.row_source.InputOptions`) as the
    command's ``inp`` dict; :func:`bind_columns` applies it to the command's input."""
    return option_group(InputOptions, "inp", exclude=("limit",))(func)


def bind_columns(cfg: Any, inp: dict[str, Any] | None, attr: str = "input") -> Any:
    """``cfg`` with its ``attr`` (the rows it reads) read through the ``--column`` map, if one was given."""
    columns = (inp or {}).get("columns")
    if not columns:
        return cfg
    return dataclasses.replace(cfg, **{attr: bind(getattr(cfg, attr), columns)})


def teacher_spec(teacher: str, **kw: Any) -> TeacherSpec:
    """A TeacherSpec from a command's ``teacher`` and ``conn`` options; other keyword arguments not None
    (``temperature=...``, ``max_tokens=...``) become its default sampling parameters."""
    conn = {k: kw.pop(k) for k in list(kw) if k in CONNECTION_FIELDS}
    return TeacherSpec(teacher=teacher, **conn, default_params={k: v for k, v in kw.items() if v is not None})


def check_job_paths(inputs: dict[str, Path | None], output: Path, summary_json: Path | None = None,
                    conn: dict[str, Any] | None = None) -> None:
    """Check, before anything is read or paid for, every path a ``generate`` job reads or writes: the
    inputs, the output, its rejects file, ``--summary-json`` and ``--cache`` (see
    :func:`synthkd.jsonl_io.check_paths`: unusable or clashing paths are exit 2)."""
    check_paths(inputs, {"--output": output, "rejects file": rejects_path_for(output), "--summary-json": summary_json},
                cache=None if not conn or conn.get("no_cache") else conn.get("cache"))


@contextmanager
def exit_on_error(**report: Any) -> Iterator[None]:
    """Inside, an error a command reports (:func:`synthkd.errors.exit_code_for`) ends the command with
    its message and exit code (:func:`synthkd.errors.report_error`, given ``report``: ``interrupted``,
    ``hints``) instead of a traceback; anything else (a bug) keeps its traceback."""
    try:
        yield
    except BaseException as exc:
        if exit_code_for(exc) is None:
            raise
        raise typer.Exit(report_error(exc, **report)) from None


def _output_write_hint(exc: BaseException) -> str:
    return ("rows written before are kept (each whole); "
            + ("free some space, then " if getattr(exc, "disk_full", False) else "fix that, then ")
            + "rerun the same command to resume (answers already paid for come from the cache)")


def run_job(job: Callable[[], Awaitable[int]], *, sigterm: bool = True) -> None:
    """Run an async job; end with its exit code, or with the one message and exit code of the error that
    stopped it (:func:`exit_on_error`): 2 bad input, an unusable path, a write that failed mid-run such
    as disk full, or a teacher setting found wrong before any request; 3 budget; 4 teacher refused or
    unreachable; 130 interrupted by Ctrl-C or SIGTERM, rows kept.

    ``sigterm=False`` keeps the default SIGTERM (die at once) for a job that blocks the event loop for
    long stretches (training): a handler on the loop would only run once that stretch is over.
    """
    from synthkd.complete import install_sigterm  # one SIGTERM rule

    setup_cli_logging()  # messages reach stderr even when the command is mounted outside synthkd's app

    async def main() -> int:
        if sigterm:
            install_sigterm()
        return await job()

    with exit_on_error(interrupted="interrupted: rows written so far are kept; rerun the same command to resume",
                       hints={OutputWriteError: _output_write_hint}):
        code = asyncio.run(main())
    raise typer.Exit(code)


__all__ = ["make_teacher", "teacher_spec", "run_job", "exit_on_error", "check_job_paths"]
