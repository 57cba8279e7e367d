"""One runner for every ``synthkd generate <method>`` job.

Every generate command does the same things around its method, in the same order, so they are
written once here (:class:`GenerateJob`) and each command is a thin adapter that says only what is
its own (what to read and plan, which rows to stream, what its summary adds):

1. check every path the job reads or writes (inputs, output, rejects file, ``--summary-json``,
   ``--cache``) before anything is read or paid for;
2. read, validate and plan (:meth:`GenerateJob.prepare`): a bad row or template is exit 2 and no
   teacher is built;
3. build the teacher(s), lock the output, note the ids already in it (resume = rerun: with the
   request cache a rerun pays only for what was in flight), write rows as they complete;
4. close the teachers, print one summary line (rows written, already there, dropped/rejected by
   reason, the method's own counts, the teacher's :meth:`TeacherStats.summary`, the time), and
   choose the exit code: 0 done; 1 some rows rejected / a target not reached; 2 bad input;
   3 budget reached; 4 the teacher failed fatally; 5 batch mode with ``--no-wait``: submitted, rerun
   to collect; 130 interrupted (as ``synthkd complete``).  In batch mode the rows are written pass after
   pass (:mod:`synthkd.teachers.batch.passes`).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Callable, Optional

import typer

from synthkd.commands.common import (
    TeacherOpt,
    check_job_paths,
    make_teacher,
    run_job,
    teacher_spec,
    with_connection_options,
)
from synthkd.commands.generate import generate_app
from synthkd.errors import ExitCode, InputError, report_error
from synthkd.jsonl_io import OutputLock, index_output, write_summary
from synthkd.methods.runner import REJECT_KEY, RunCounts, rejects_path_for, write_rows
from synthkd.options import FEATURES, config_command, option_group
from synthkd.row_source import InputOptions, bind
from synthkd.teachers.base import Teacher, TeacherFatalError
from synthkd.teachers.batch.passes import batch_waiting, wait_or_stop

#: the codes a generate job ends with on its own (errors are mapped by run_job / report_error)
EXIT_OK, EXIT_SHORT, EXIT_BUDGET = ExitCode.OK, ExitCode.REJECTED, ExitCode.BUDGET

log = logging.getLogger(__name__)

_KW = inspect.Parameter.KEYWORD_ONLY
#: the parameters every generate command takes besides its config: the teacher, --summary-json, and the
#: connection options (added by :func:`with_connection_options`, received as one ``conn`` dict)
TEACHER_PARAM = inspect.Parameter("teacher", _KW, annotation=TeacherOpt)
SUMMARY_PARAM = inspect.Parameter(
    "summary_json", _KW, default=None,
    annotation=Annotated[Optional[Path], typer.Option("--summary-json", help="Also write the summary as JSON.")])
CONN_PARAM = inspect.Parameter("conn", _KW, default=None, annotation=Optional[dict])


INP_PARAM = inspect.Parameter("inp", _KW, default=None, annotation=Optional[dict])


def generate_command(name: str, config: type, *, required: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``synthkd generate <name>``: its options are ``config``'s CLI fields (see
    :func:`synthkd.options.config_command`), plus ``--teacher``, ``--summary-json``, the connection
    options and the input options (``--column``, ``--limit``: :class:`synthkd.row_source.InputOptions`).
    The function receives ``(cfg, teacher=, summary_json=, conn=, inp=)``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        cmd = config_command(config, required=required,
                             extra=[TEACHER_PARAM, SUMMARY_PARAM, CONN_PARAM, INP_PARAM])(fn)
        cmd = option_group(InputOptions, "inp")(cmd)
        cmd = with_connection_options(cmd)
        generate_app.command(name)(cmd)
        return cmd

    return decorate


def fmt_reasons(reasons: dict[str, int], sep: str = " ") -> str:
    """``reason n`` pairs, most frequent first."""
    return ", ".join(f"{k}{sep}{v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class Outcome:
    """What a run did: the writer's counts, the ids already in the output when it started, the
    teachers (their stats), the time, and the fatal teacher error that stopped it, if any."""

    counts: RunCounts
    done: int
    teachers: list[Teacher]
    elapsed: float
    fatal: TeacherFatalError | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class GenerateJob:
    """A generate job: subclasses fill in the hooks; :meth:`run` does the rest (see module docstring)."""

    #: the summary line's first word
    name = "generate"
    #: what a written row is called in the summary line ("rows", "pairs")
    unit = "rows"
    #: what a row sent to the rejects file is called ("rejected", "dropped")
    rejected_word = "rejected"

    #: the option that names the rows the method reads (``--input``; ``--seeds``...), None for a method
    #: that reads none (its results are made from a spec): the column map and ``--limit`` apply to it
    input_attr: str | None = "input"

    def __init__(self, cfg: Any, *, teacher: str, conn: dict[str, Any] | None = None,
                 summary_json: Path | None = None, inp: dict[str, Any] | None = None) -> None:
        self.full_cfg = cfg
        inp = inp or {}
        self.columns: dict[str, str] = dict(inp.get("columns") or {})
        self.limit: int | None = inp.get("limit")
        if self.input_attr is not None and (self.columns or self.limit is not None):
            cfg = dataclasses.replace(cfg, **{self.input_attr: bind(getattr(cfg, self.input_attr), self.columns,
                                                                    self.limit)})
        self.cfg = cfg
        self.teacher_name = teacher
        self.conn: dict[str, Any] = dict(conn or {})
        self.summary_json = summary_json
        self.output = Path(cfg.output)

    # ------------------------------------------------------------------ hooks
    def finish_output(self) -> None:
        """Called once the rows are written (still under the output lock): e.g. put them in canonical order."""

    def inputs(self) -> dict[str, Path | None]:
        """The files the job reads, by flag (checked before anything is read)."""
        return {}

    def prepare(self) -> None:
        """Read, validate and plan; raise InputError (exit 2) before any teacher is built."""

    def teacher_specs(self) -> list[tuple[str, str, str | None]]:
        """(role, model, base_url) of each teacher to build; the first is the main one."""
        return [("teacher", self.teacher_name, self.conn.get("base_url"))]

    def rows(self, teachers: list[Teacher], done: Any) -> AsyncIterator[dict[str, Any]]:
        """The rows to write; ``done``: ids already in the output."""
        raise NotImplementedError

    def already(self, out: Outcome) -> int:
        """Rows already there, for the summary (default: ids in the output when the run started)."""
        return out.done

    def target(self, out: Outcome) -> str:
        """The method's target, shown after "already there" (e.g. "50/50 kept over 5 labels")."""
        return ""

    def drops(self, out: Outcome) -> tuple[int, dict[str, int]]:
        """Rows sent to the rejects file this run, and their reasons (a kept row's null answer is a note,
        not a drop)."""
        return out.counts.rejected, {k: v for k, v in out.counts.reasons.items() if not k.startswith("answer null")}

    def reason_sep(self) -> str:
        return " "

    def details(self, out: Outcome) -> str:
        """The method's own counts, for the summary line."""
        return ""

    def report(self, out: Outcome) -> None:
        """More lines after the summary line (confusions, short labels...)."""

    def expected(self) -> int | None:
        """Rows this run should decide (written or rejected), when known: the rest are "not started"."""
        return None

    def budget_reached(self, out: Outcome) -> bool:
        return any(t.budget_exhausted for t in out.teachers)

    def result_code(self, out: Outcome) -> int:
        """0 or 1 once the run ended normally (default: 1 when a row was rejected or not decided)."""
        missing = self._missing(out)
        if out.counts.rejected:
            return EXIT_SHORT
        if missing:
            log.error(f"error: {missing} rows were neither written nor rejected")
            return EXIT_SHORT
        return EXIT_OK

    def summary(self, out: Outcome) -> dict[str, Any]:
        """The ``--summary-json`` fields besides ``exit_code``."""
        return {**out.counts.as_dict(), "rows_already_done": out.done}

    # ------------------------------------------------------------------ the runner
    def _missing(self, out: Outcome) -> int:
        exp = self.expected()
        if exp is None:
            return 0
        return max(0, exp - out.counts.written - out.counts.rejected - out.counts.already_there)

    def line(self, out: Outcome) -> str:
        c = out.counts
        target = self.target(out)
        n_drop, reasons = self.drops(out)
        line = (f"{self.name}: {c.written} {self.unit} written to {self.output} "
                f"({self.already(out)} already there{'; ' + target if target else ''}), {n_drop} {self.rejected_word}")
        if reasons:
            line += f" ({fmt_reasons(reasons, self.reason_sep())})"
        if c.rejected:
            line += f" -> {rejects_path_for(self.output)}"
        details = self.details(out)
        if details:
            line += f"; {details}"
        if len(out.teachers) == 1:
            line += f"; {out.teachers[0].stats.summary()}"
        return line + f"; {out.elapsed:.1f}s"

    def exit_code(self, out: Outcome) -> int:
        if out.fatal is not None:
            return report_error(out.fatal)  # the one mapping (4 here: the teacher was built)
        if self.budget_reached(out):
            missing = self._missing(out)
            what = f"{missing} rows not started" if self.expected() is not None else "some rows not started"
            log.warning(f"budget reached: {what}; rerun with a larger --max-cost to finish (nothing is paid twice)")
            return EXIT_BUDGET
        return self.result_code(out)

    def _capped(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """A dry run of a method that reads no rows: its first ``--limit`` results."""
        limit = self.limit

        async def gen() -> AsyncIterator[dict[str, Any]]:
            n = 0
            try:
                async for row in rows:
                    yield row
                    n += REJECT_KEY not in row  # a candidate the method dropped is not a result
                    if limit is not None and n >= limit:
                        break
            finally:
                aclose = getattr(rows, "aclose", None)
                if aclose is not None:
                    await aclose()

        return gen()

    def dry_run_report(self, recorder: Any) -> None:
        """The dry run's prompts and answers, first rows and the whole input's cost estimate."""
        from synthkd.dry_run import command_estimate, report

        feat = next((f for f in FEATURES.values() if f.config is type(self.full_cfg) and f.stage), None)
        estimate = None
        if feat is not None and feat.stage is not None:
            src = getattr(self.full_cfg, self.input_attr) if self.input_attr else None
            estimate = command_estimate(feat.stage, self.full_cfg, teacher=self.teacher_name, conn=self.conn,
                                        input_path=src, columns=self.columns)
        report(recorder, [("", self.output)], self.limit or 0, estimate)

    async def main(self) -> int:
        if self.input_attr is None and self.columns:
            raise InputError([f"--column: generate {self.name} reads no input rows (it makes them), "
                              "so there are no columns to map"])
        check_job_paths(self.inputs(), self.output, self.summary_json, self.conn)
        self.prepare()
        recorder = None
        if self.limit is not None:
            from synthkd.dry_run import Recorder

            recorder = Recorder()
        teachers: list[Teacher] = []
        t0 = time.monotonic()
        counts = RunCounts()
        done: Any = ()
        fatal: TeacherFatalError | None = None
        try:
            for _role, model, url in self.teacher_specs():
                teachers.append(make_teacher(teacher_spec(model, **{**self.conn, "base_url": url})))
                if recorder is not None:
                    recorder.attach(teachers[-1], "" if len(teachers) == 1 else f"{_role}: ")
            with OutputLock(self.output):  # two processes never append to the same output
                done = index_output(self.output)
                first_done, earlier = done, 0
                while True:  # one pass online; in batch mode, passes until nothing waits for a batch
                    try:
                        rows = self.rows(teachers, done)
                        if self.limit is not None and self.input_attr is None:
                            rows = self._capped(rows)
                        counts = await write_rows(rows, self.output)
                    except TeacherFatalError as exc:  # the summary still says what was written
                        fatal = exc
                        break
                    if not batch_waiting(teachers):
                        break
                    earlier += counts.written
                    await wait_or_stop(teachers, str(self.output))
                    done = index_output(self.output)
                counts.written += earlier
                done = first_done
                self.finish_output()
        finally:
            for t in teachers:
                await t.aclose()
                if t.cache is not None:
                    t.cache.close()
        out = Outcome(counts, len(done), teachers, time.monotonic() - t0, fatal)
        log.info(self.line(out))
        if len(teachers) > 1:
            for (role, _m, _u), t in zip(self.teacher_specs(), teachers):
                log.info(f"  {role} {t.model}: {t.stats.summary()}")
        self.report(out)
        if recorder is not None:
            self.dry_run_report(recorder)
        code = self.exit_code(out)
        if self.summary_json:
            summary = {"exit_code": code, **self.summary(out)}
            for k, v in structured_summary(teachers).items():  # re-asks of every method, from the teachers
                summary.setdefault(k, v)
            write_summary(self.summary_json, summary)
        return code

    def run(self) -> None:
        """Run the job and exit with its code (errors mapped by :func:`synthkd.commands.common.run_job`)."""
        run_job(self.main)


def structured_summary(teachers: list[Teacher]) -> dict[str, Any]:
    """The teachers' structured-output counters (answers asked as JSON, re-asks and their cost, answers
    still invalid), summed; empty when no answer was asked as JSON."""
    out: dict[str, Any] = {}
    for t in teachers:
        for k, v in t.stats.structured_dict().items():
            out[k] = round(out.get(k, 0) + v, 8) if isinstance(v, float) else out.get(k, 0) + v
    return out
