"""``synthkd complete``: complete every prompt of a jsonl file, resumably, exactly once per id.

The simplest job, and the contract the benchmarks rely on.  Its guarantees:
* the input is validated whole before the first request (file, line and field in every error);
* one output row per input id, appended and flushed as it completes, in completion order;
* a rerun after a crash, Ctrl-C or SIGKILL skips ids already written, repairs a torn last line,
  and gets every answer it had already paid for from the cache;
* a row that fails for good goes to the rejects file with its error, never silently missing; the
  rejects file is never truncated: an earlier attempt's entry stays until its row is redone
  (see :class:`synthkd.jsonl_io.RejectsWriter`);
* every path (input, output, rejects, summary, cache) is checked before the first request: a missing,
  unwritable or directory path, or two options naming one file, is exit 2 and costs nothing;
* the exit code is 0 only when every row is in the output.  A write that fails mid-run (disk full,
  read-only file system) stops the run with one line naming the file, the rows kept and "rerun the same
  command to resume", and exit 2 (ExitCode.BAD_INPUT: the environment needs fixing before a rerun; 1 stays
  reserved for rejected rows).  SIGTERM stops like Ctrl-C: rows kept, exit 130, rerun to resume.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from synthkd.errors import (
    ExitCode,
    OutputWriteError,
    TeacherFatalError,
    TeacherStorageError,
    exit_code_for,
    report_error,
)
from synthkd.jsonl_io import (
    AppendWriter,
    OutputLock,
    RejectsWriter,
    check_paths,
    index_output,
    iter_jsonl,
    scan_prompt_file,
    write_summary,
)
from synthkd.methods.runner import rejects_path_for
from synthkd.options import check_bounds, opt, register_feature
from synthkd.progress import ProgressReporter
from synthkd.reasoning import reasoning_tokens, trace_of
from synthkd.row_source import InputOptions, bind
from synthkd.teachers.base import Teacher, TeacherRequest
from synthkd.teachers.factory import SamplingParams, TeacherSpec, make_teacher, spec_of
from synthkd.teachers.jobs import Job, stream_jobs

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class CompleteJob:
    """What ``synthkd complete`` adds to a teacher: its files and samples.  In a pipeline only
    ``samples`` is a stage option (the stage's files are the pipeline's, its teacher the ``teacher:`` block)."""

    input: Path = opt(help="Rows {id, prompt} or {id, messages} (jsonl, csv, parquet, a datasets directory, hf:org/name:split; ids from positions where there is no id column); other fields pass through.", flags=("-i",),
                      stage=False)
    output: Path = opt(help="jsonl output, appended as rows complete; rerun to resume.", flags=("-o",), stage=False)
    samples: int = opt(1, help="Samples per prompt (needs --temperature > 0); output gets 'completions'.", ge=1)
    rejects: Path | None = opt(None, help="Where failed rows go (default OUTPUT.rejects.jsonl).", stage=False)
    progress: bool | None = opt(None, help="Progress bar (default: only on a terminal).", stage=False)
    summary_json: Path | None = opt(None, help="Also write the final counts, tokens, cost and timings as JSON.",
                                    stage=False)


@dataclass
class CompleteConfig(CompleteJob, InputOptions, SamplingParams, TeacherSpec):
    """Every setting of ``synthkd complete``: the teacher's (:class:`TeacherSpec`, declared once for every
    command and the pipeline's ``teacher:`` block), the sampling parameters and the job's own.  The
    command's options are generated from it; the Python API builds it directly."""

    def teacher_spec(self) -> TeacherSpec:
        """The teacher part, with the sampling parameters as default request parameters."""
        return spec_of(self, default_params={**self.default_params, **self.sampling_params()})


#: the name the Python API had
CompleteOptions = CompleteConfig

register_feature("complete", CompleteJob, command=("complete",), stage="complete")


def _validate_options(o: CompleteConfig) -> list[str]:
    """The declared bounds (the same check the CLI made), and what no single option can say."""
    problems = check_bounds(o)
    if o.samples > 1 and not (o.temperature and o.temperature > 0):
        problems.append("--samples > 1 draws distinct samples: set --temperature above 0")
    return problems


def run_complete(o: CompleteConfig) -> ExitCode:
    """Run the job; returns the process exit code (an error that stops it is said once, with its code:
    :func:`synthkd.errors.report_error`).  The teacher is built by the factory every command uses
    (:func:`synthkd.teachers.factory.make_teacher`): a model behind an OpenAI-compatible API,
    ``replay:FILE``, ``local:PATH`` or ``simulated:TASK``."""
    problems = _validate_options(o)
    if problems:
        log.error("error: " + "\n       ".join(problems))
        return ExitCode.BAD_INPUT
    full = o
    if o.columns or o.limit is not None:  # read the input through the column map, the first --limit rows only
        o = dataclasses.replace(o, input=bind(o.input, o.columns, o.limit))
    teacher: Teacher | None = None
    try:
        check_paths(
            {"--input": o.input},
            {"--output": o.output, "--rejects" if o.rejects else "rejects file": _rejects_path(o),
             "--summary-json": o.summary_json},
            cache=None if o.no_cache else o.cache,
        )
        scan = scan_prompt_file(o.input)
        teacher = make_teacher(o.teacher_spec())  # a TeacherConfigError here was found before any request: exit 2
        recorder = None
        if o.limit is not None:
            from synthkd.dry_run import Recorder

            recorder = Recorder()
            recorder.attach(teacher)
        with OutputLock(o.output):  # a busy output, or one that cannot be opened: exit 2
            done = index_output(o.output)
            code = asyncio.run(complete_in_passes(o, teacher, scan.rows, done))
        if recorder is not None:
            _dry_run_report(full, recorder)
        return code
    except BaseException as exc:
        if exit_code_for(exc) is None:
            raise
        return report_error(
            exc, interrupted=f"interrupted: rows written so far are kept in {o.output}; rerun the same command to resume")
    finally:
        if teacher is not None:
            _close(teacher)


def _dry_run_report(o: CompleteConfig, recorder: Any) -> None:
    """``--limit``: the prompts and answers side by side, the first rows, the whole input's estimate."""
    from synthkd.dry_run import command_estimate, report

    estimate = command_estimate("complete", o, teacher=o.teacher, conn={"prices": o.prices}, input_path=o.input,
                                columns=o.columns, sampling=o.sampling_params())
    report(recorder, [("", o.output)], o.limit or 0, estimate)


def _close(teacher: Teacher) -> None:
    """Close what the teacher holds, whether or not the run got as far as closing it (``aclose`` is
    idempotent: a busy output stops before the run, a simulated teacher's server must stop all the same)."""
    try:
        asyncio.run(teacher.aclose())
    finally:
        if teacher.cache is not None:  # the cache is closed by whoever built the teacher: us
            teacher.cache.close()


async def complete_in_passes(o: CompleteConfig, teacher: Teacher, n_rows: int, done: Any, **kw: Any) -> ExitCode:
    """:func:`run_completions`, pass after pass in batch mode (:mod:`synthkd.teachers.batch.passes`):
    a pass whose requests went into batches is followed by waiting for them (or exit 5 with
    ``--no-wait``) and another pass, which writes the rows from the cache."""
    from synthkd.teachers.batch.passes import wait_or_stop

    while True:
        code = await run_completions(o, teacher, n_rows, done, **kw)
        if code != ExitCode.SUBMITTED:
            return code
        await wait_or_stop([teacher], str(o.output))
        done = index_output(o.output)


def _rejects_path(o: CompleteConfig) -> Path:
    return o.rejects or rejects_path_for(o.output)


async def run_completions(o: CompleteConfig, teacher: Teacher, n_rows: int, done: Any, *,
               reraise_fatal: bool = False) -> ExitCode:
    """The job itself; returns the exit code.  ``reraise_fatal``: a fatal teacher error is raised again
    (after the summary) instead of reported, for a caller that reports it itself (a pipeline stage)."""
    install_sigterm()
    rejects_path = _rejects_path(o)
    todo_rows = n_rows - len(done)
    S = o.samples

    def jobs() -> Iterator[Job[tuple[int, dict[str, Any]]]]:
        for lineno, row in iter_jsonl(o.input):
            if row["id"] in done:
                continue
            reqs = [
                TeacherRequest(
                    key=str(row["id"]),
                    messages=row.get("messages"),
                    prompt=row.get("prompt") if "messages" not in row else None,
                    params={},  # samples differ by sample_index only: sent as one request with n=S
                    sample_index=s,
                )
                for s in range(S)
            ]
            yield Job((lineno, row), reqs)

    written = rejected = cached_rows = 0
    t0 = time.monotonic()
    out = AppendWriter(o.output)
    try:
        rej = RejectsWriter(rejects_path, done)
    except BaseException:
        out.close()
        raise
    reporter = ProgressReporter(teacher.stats, todo_rows * S, enabled=o.progress)
    reporter.start()
    code = ExitCode.OK
    stopped: dict[str, str] | None = None  # why the run stopped before its end, for --summary-json

    def summary() -> dict[str, Any]:
        st = teacher.stats
        span = (st.last_result_at - st.first_request_at) if st.first_request_at and st.last_result_at else 0.0
        return {
            "exit_code": code, "stopped": stopped["stopped"] if stopped else None,
            **({"error": stopped["error"]} if stopped and "error" in stopped else {}),
            "rows_written": written, "rows_rejected": rejected, "rows_from_cache": cached_rows,
            "rows_already_done": len(done),
            "rows_not_started": todo_rows - written - rejected if stopped or teacher.budget_exhausted else 0,
            "requests_sent": st.attempts, "requests_batched": st.batched, "retries": st.retries, "rate_limited": st.rate_limited,
            "timeouts": st.timeouts, "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
            "cost_usd": st.cost_usd if teacher.price_known else None, "elapsed_s": round(time.monotonic() - min(t0, st.started_at), 4),  # batch mode: every pass
            "first_request_to_last_result_s": round(span, 4),
        }

    try:
        async with aclosing(stream_jobs(teacher, jobs())) as stream:
            async for job in stream:
                (lineno, row), results = job.item, job.done_results()
                errors = [r.error for r in results if not r.ok]
                if errors:
                    rej.write({"id": row["id"], "line": lineno, "error": errors[0], "errors": errors,
                               "attempts": sum(r.attempts for r in results)})
                    rejected += 1
                    continue
                out.write(_output_row(row, results, teacher.model))
                rej.redone(row["id"])
                written += 1
                cached_rows += all(r.cached for r in results)
    except TeacherFatalError as exc:
        await reporter.stop()
        # the cache itself could not be written: an output failure, like OutputWriteError below
        stopped = {"stopped": "output" if isinstance(exc, TeacherStorageError) else "teacher", "error": str(exc)}
        if reraise_fatal:
            code = exit_code_for(exc) or ExitCode.TEACHER
            _write_summary(o, summary())
            raise
        code = report_error(exc, hints={TeacherFatalError: _kept_after_fatal(o, teacher, written + len(done))})
    except OutputWriteError as exc:
        await reporter.stop()
        code = report_error(exc, hints={OutputWriteError: (
            f"stopped: the {written + len(done)} rows already in {o.output} are kept (each whole); "
            + ("free some space, then " if exc.disk_full else "fix that, then ")
            + "rerun the same command to resume"
            + ("" if o.no_cache else " (answers already paid for come from the cache)"))})
        stopped = {"stopped": "output", "error": str(exc)}
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM: run_complete says the rest
        stopped, code = {"stopped": "interrupted"}, ExitCode.INTERRUPTED
        _write_summary(o, summary())
        raise
    finally:
        out.close()
        rej.close()
        await teacher.aclose()
    if stopped is not None:
        return _write_summary(o, summary()) or code
    await reporter.stop()
    missing = todo_rows - written - rejected
    st = teacher.stats
    from synthkd.teachers.batch.passes import batch_waiting

    if batch_waiting([teacher]):  # batch mode: the rest waits for batches (the caller waits, or exits 5)
        log.info(f"pass: {written} rows written to {o.output} from the cache, {rejected} rejected; "
                 f"{missing} wait for batches")
        stopped, code = {"stopped": "batch"}, ExitCode.SUBMITTED  # (the next pass's summary replaces it)
        return _write_summary(o, summary()) or code
    elapsed = time.monotonic() - t0
    log.info(
        f"done: {written} rows written to {o.output} ({cached_rows} from cache, {len(done)} already there), "
        f"{rejected} rejected"
        + (f" -> {rejects_path}" if rejected else "")
        + f"; {st.summary()}; {elapsed:.1f}s"
    )
    if teacher.budget_exhausted:
        log.warning(
            f"budget reached: ${st.cost_usd:.4f} spent of --max-cost ${o.max_cost}; {missing} rows not started. "
            "Rerun with a larger --max-cost to finish (nothing is paid twice)."
        )
        stopped = {"stopped": "budget"}
        code = ExitCode.BUDGET
    elif rejected:
        code = ExitCode.REJECTED
    elif missing:
        log.error(f"error: {missing} rows were neither written nor rejected")
        code = ExitCode.REJECTED
    return _write_summary(o, summary()) or code


def _write_summary(o: CompleteConfig, summary: dict[str, Any]) -> ExitCode:
    """Write ``--summary-json`` (atomically, whole or not at all), however the run ended: ``"stopped"``
    says why it ended early (``teacher``, ``output``, ``budget``, ``interrupted``; null when it went
    through; ``batch``: batch mode, rows still waiting for batches) and ``"error"`` the message, so a
    script need not parse stderr.  Returns OK (0), or
    BAD_INPUT when the summary itself could not be written."""
    if not o.summary_json:
        return ExitCode.OK
    try:
        write_summary(o.summary_json, summary)
    except OutputWriteError as exc:
        log.error(f"error: {exc}; the run itself is over and its rows are kept (see the line above)")
        return ExitCode.BAD_INPUT
    return ExitCode.OK


def _kept_after_fatal(o: CompleteConfig, teacher: Teacher, rows: int) -> str:
    """What a fatal stop keeps, said truthfully: the rows in the output always; the answers not yet in
    a row only when the cache holds them -- not with ``--no-cache``, and not once a cache write failed
    (disk full on the cache, F1), where "nothing paid for is lost" used to be printed all the same."""
    head = f"stopped: the {rows} rows in {o.output} are kept (each whole); "
    cache = teacher.cache
    if cache is None:
        return head + "with --no-cache, an answer not yet in a row is not kept: rerun the same command to resume"
    if cache.write_error is not None:
        return (head + f"the cache {cache.path} could not be written, so an answer not yet in a row is not "
                "kept and a rerun asks for it again: make room for the cache, then rerun the same command to resume")
    return head + (f"every answer received is in the cache {cache.path}: rerun the same command to resume "
                   "(nothing is paid twice)")


def _output_row(row: dict[str, Any], results: list[Any], model: str) -> dict[str, Any]:
    out = dict(row)
    prompt_tokens = sum(r.usage.prompt_tokens for r in results)
    completion_tokens = sum(r.usage.completion_tokens for r in results)
    traces = [trace_of(r) for r in results]
    if len(results) == 1:
        out["completion"] = results[0].text
        if traces[0] is not None:  # a reasoning teacher's trace (``completion`` is then the answer alone)
            out["reasoning"] = traces[0]
        out["finish_reason"] = results[0].finish_reason
    else:
        out["completions"] = [r.text for r in results]
        if any(t is not None for t in traces):  # one per completion, null where a sample has none
            out["reasonings"] = traces
        out["finish_reason"] = [r.finish_reason for r in results]
    out["usage"] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    thought = reasoning_tokens(results)
    if thought:  # part of completion_tokens (a reasoning model's trace, returned or hidden)
        out["usage"]["reasoning_tokens"] = thought
    costs = [r.cost_usd for r in results]
    out["cost_usd"] = None if any(c is None for c in costs) else round(sum(costs), 10)
    out["cached"] = all(r.cached for r in results)
    out["model"] = results[0].model or model
    return out


def install_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C: stop, keep what is written, print how to resume.

    The handler goes with the task that installed it: when that task ends, the SIGTERM handler the
    process had before is put back (asyncio's default loop does that when it closes, uvloop does not,
    and a library caller must not be left with a process that ignores SIGTERM)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    previous = signal.getsignal(signal.SIGTERM)

    def _cancel() -> None:
        if main is not None:
            main.cancel()

    def _restore(_: object) -> None:
        try:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        except (NotImplementedError, RuntimeError, ValueError, TypeError):
            pass

    try:
        loop.add_signal_handler(signal.SIGTERM, _cancel)
    except (NotImplementedError, RuntimeError):
        return
    if main is not None:
        main.add_done_callback(_restore)
