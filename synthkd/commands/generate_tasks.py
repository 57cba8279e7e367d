"""``synthkd generate tasks`` (labelled examples from a task spec) and ``synthkd generate self-instruct``.

Both validate everything (spec or seed file, settings, templates) before the teacher is built, write
rows as they are decided (kept rows to the output, dropped candidates to ``<output>.rejects.jsonl``
with ``reject_reason``), and print one summary line: rows, drops by reason, requests, tokens, cost.
Resume = rerun: the same command sends the same prompts, the cache answers those already paid for,
ids already in the output are skipped.  Exit codes as ``synthkd complete``: 0 the target was reached;
1 it was not (teacher errors, request/round cap) — rerun or raise the cap; 2 bad input;
3 budget reached; 4 the teacher failed fatally; 130 interrupted.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Callable, Optional

import typer

from synthkd.commands.common import (
    TeacherOpt, check_job_paths, make_teacher, run_job, teacher_spec, with_connection_options,
)
from synthkd.commands.generate import generate_app
from synthkd.errors import ExitCode, report_error
from synthkd.jsonl_io import OutputLock, write_summary
from synthkd.teachers.base import Teacher, TeacherFatalError

log = logging.getLogger(__name__)

SummaryOpt = Annotated[Optional[Path], typer.Option("--summary-json", help="Also write the summary as JSON.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice (attribute combos, few-shot pools).")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", help="Drop a candidate whose ROUGE-L F with a kept text or seed is above this.")]


def _params(temperature: float | None, max_tokens: int | None, top_p: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if temperature is not None:
        out["temperature"] = temperature
    if top_p is not None:
        out["top_p"] = top_p
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    return out


def _fmt_reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


async def _run(
    name: str, output: Path, teacher: Teacher, rows: AsyncIterator[dict[str, Any]], stats: Any,
    summary_json: Path | None, target: Callable[[], str],
) -> int:
    """Write rows, print the summary, choose the exit code (shared by both commands)."""
    from synthkd.methods.runner import RunCounts, rejects_path_for, write_rows

    t0 = time.monotonic()
    fatal: TeacherFatalError | None = None
    counts = RunCounts()
    try:
        with OutputLock(output):  # two processes never append to the same output
            try:
                counts = await write_rows(rows, output)
            except TeacherFatalError as exc:
                fatal = exc
    finally:
        await teacher.aclose()
    attempts = teacher.stats.attempts
    log.info(
        f"{name}: {counts.written} rows written to {output} ({counts.already_there} already there; {target()}); "
        f"{sum(stats.drops.values())} dropped ({_fmt_reasons(dict(stats.drops))})"
        + (f" -> {rejects_path_for(output)}" if counts.rejected else "")
        + f"; {teacher.stats.summary()}; {time.monotonic() - t0:.1f}s"
    )
    for what, why in sorted(stats.short.items()):
        log.info(f"  short: {what}: {why}")
    code = ExitCode.OK
    if fatal is not None:
        code = report_error(fatal)  # the one mapping (4 here: the teacher was built, requests went out)
    elif stats.budget_stopped:
        log.warning("budget reached: rerun with a larger --max-cost to finish (nothing is paid twice)")
        code = ExitCode.BUDGET
    elif stats.short:
        code = ExitCode.REJECTED
    if summary_json:
        write_summary(summary_json, {
            "exit_code": code, "rows_written": counts.written, "rows_already_there": counts.already_there,
            "rejects_written": counts.rejected, **stats.as_dict(), "teacher_attempts": attempts,
            "elapsed_s": round(time.monotonic() - t0, 3),
        })
    return code


@generate_app.command("tasks")
@with_connection_options
def tasks(
    spec: Annotated[Path, typer.Option("--spec", "-s", help="Task spec (YAML/JSON): task, labels (+ descriptions, seed examples), attributes.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl output; rerun to resume.")],
    per_label: Annotated[int, typer.Option("--per-label", "-n", help="Examples to keep per label.")],
    teacher: TeacherOpt,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples asked for per request.")] = 10,
    max_requests_per_label: Annotated[Optional[int], typer.Option("--max-requests-per-label", help="Cap on requests per label (default max(4, 4*N/batch)).")] = None,
    template: Annotated[str, typer.Option("--template", help="Template name or .j2 file (tasks/examples needs label descriptions; tasks/examples_names does not).")] = "tasks/examples",
    labels: Annotated[Optional[str], typer.Option("--labels", help="Only these labels (comma-separated).")] = None,
    seeds_per_prompt: Annotated[int, typer.Option("--seeds-per-prompt", help="Seed examples of the label shown per prompt.")] = 3,
    min_words: Annotated[int, typer.Option("--min-words", help="Drop items with fewer whitespace-separated words.")] = 3,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature.")] = 1.0,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="max_tokens per request.")] = None,
    seed: SeedOpt = 0,
    threshold: ThresholdOpt = 0.7,
    summary_json: SummaryOpt = None,
    conn: Optional[dict] = None,  # the connection options (with_connection_options)
) -> None:
    """N diverse labelled examples per label from a task description, near-duplicates removed.

    Exit codes: 0 every label has N; 1 some label short; 2 bad input; 3 budget reached; 4 teacher fatal.
    """

    async def job() -> int:
        from synthkd.methods.label_tasks import (
            LabelTaskConfig, MethodStats, generate_label_examples, load_task_spec, plan_label_tasks,
        )

        check_job_paths({"--spec": spec}, output, summary_json, conn)
        plan = plan_label_tasks(load_task_spec(spec), LabelTaskConfig(
            per_label=per_label, batch_size=batch_size, template=template,
            max_requests_per_label=max_requests_per_label, seed=seed, params=_params(temperature, max_tokens),
            threshold=threshold, min_words=min_words, seeds_per_prompt=seeds_per_prompt,
            labels=[x.strip() for x in labels.split(",") if x.strip()] if labels else None,
        ))
        t = make_teacher(teacher_spec(
            teacher, **conn,
        ))
        stats = MethodStats()
        code = await _run("tasks", output, t, generate_label_examples(t, plan, stats=stats), stats, summary_json,
                          lambda: f"{sum(stats.per_label.values())}/{per_label * len(plan.labels)} kept over "
                          f"{len(plan.labels)} labels")
        return code

    run_job(job)


@generate_app.command("self-instruct")
@with_connection_options
def self_instruct(
    seeds: Annotated[Path, typer.Option("--seeds", help="Seed tasks jsonl in the Self-Instruct format.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl output; rerun to resume.")],
    num_instructions: Annotated[int, typer.Option("--num-instructions", "-n", help="New instructions to generate.")],
    teacher: TeacherOpt,
    requests_per_round: Annotated[int, typer.Option("--requests-per-round", help="Generation requests per round (in parallel).")] = 8,
    prompt_instructions: Annotated[int, typer.Option("--prompt-instructions", help="Instructions shown per generation prompt.")] = 8,
    prompt_machine: Annotated[int, typer.Option("--prompt-machine", help="How many of those are generated ones (once available).")] = 2,
    max_new_per_request: Annotated[int, typer.Option("--max-new-per-request", help="New instructions taken from one answer.")] = 8,
    max_rounds: Annotated[Optional[int], typer.Option("--max-rounds", help="Cap on generation rounds.")] = None,
    classify: Annotated[bool, typer.Option("--classify/--no-classify", help="Ask whether each task is classification (output-first instances).")] = True,
    demos: Annotated[int, typer.Option("--demos", help="Seed tasks shown as demonstrations in an instance prompt.")] = 3,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Temperature of instruction generation.")] = 0.7,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="top_p of instruction generation (paper: 0.5).")] = 0.5,
    instance_temperature: Annotated[Optional[float], typer.Option("--instance-temperature", help="Temperature of classification and instance requests.")] = 0.0,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="max_tokens per request.")] = None,
    seed: SeedOpt = 0,
    threshold: ThresholdOpt = 0.7,
    summary_json: SummaryOpt = None,
    conn: Optional[dict] = None,  # the connection options (with_connection_options)
) -> None:
    """Self-Instruct: grow N new instructions (with input/output instances) from seed tasks.

    Exit codes: 0 N instructions with instances; 1 short; 2 bad input; 3 budget reached; 4 teacher fatal.
    """

    async def job() -> int:
        from synthkd.methods.label_tasks import MethodStats
        from synthkd.methods.self_instruct import (
            SelfInstructConfig, generate_self_instruct, load_seed_tasks, plan_self_instruct,
        )

        check_job_paths({"--seeds": seeds}, output, summary_json, conn)
        plan = plan_self_instruct(load_seed_tasks(seeds), SelfInstructConfig(
            num_instructions=num_instructions, requests_per_round=requests_per_round,
            prompt_instructions=prompt_instructions, prompt_machine=prompt_machine,
            max_new_per_request=max_new_per_request, max_rounds=max_rounds, seed=seed, threshold=threshold,
            classify=classify, demos=demos, params=_params(temperature, max_tokens, top_p),
            instance_params=_params(instance_temperature, max_tokens),
        ))
        t = make_teacher(teacher_spec(
            teacher, **conn,
        ))
        stats = MethodStats()
        return await _run("self-instruct", output, t, generate_self_instruct(t, plan, stats=stats), stats,
                          summary_json, lambda: f"{stats.kept}/{num_instructions} instructions with instances")

    run_job(job)
