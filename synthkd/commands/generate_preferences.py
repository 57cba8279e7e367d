"""``synthkd generate preferences``: DPO preference pairs (teacher vs student, or judge-ranked samples).

Everything is read and validated before any teacher is built; pair ids already in the output are
skipped (resume = rerun; with the request cache a rerun pays only for what was in flight); rows are
written as they complete and one summary line names the pairs written and the rejects by reason.
Exit codes: 0 done (rejected rows are an expected outcome here, not a failure); 2 bad input;
3 budget reached; 4 a teacher failed fatally.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from synthkd.commands.common import (
    TeacherOpt, check_job_paths, make_teacher, run_job, teacher_spec, with_connection_options,
)
from synthkd.commands.generate import generate_app
from synthkd.errors import ExitCode
from synthkd.jsonl_io import InputError, index_output, load_rows, write_summary
from synthkd.methods.tasks_spec import KINDS, FieldNames

log = logging.getLogger(__name__)

MODES = ("student", "judge")


@generate_app.command("preferences")
@with_connection_options
def preferences(
    input: Annotated[Path, typer.Option("--input", "-i", help="jsonl rows with 'id' and the task's fields (student mode: with gold).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl pairs {id, prompt, chosen, rejected, ...}; rerun to resume.")],
    teacher: TeacherOpt,
    mode: Annotated[str, typer.Option("--mode", help="student: teacher right vs student wrong; judge: best vs worst of k samples.")] = "student",
    student: Annotated[Optional[str], typer.Option("--student", help="Student model (student mode): API model name, local:PATH or replay:FILE.")] = None,
    student_base_url: Annotated[Optional[str], typer.Option("--student-base-url", help="Base URL of the student (default --base-url).")] = None,
    teacher2: Annotated[Optional[str], typer.Option("--teacher2", help="Second sampler (judge mode), also --samples per prompt.")] = None,
    teacher2_base_url: Annotated[Optional[str], typer.Option("--teacher2-base-url", help="Base URL of --teacher2 (default --base-url).")] = None,
    judge: Annotated[Optional[str], typer.Option("--judge", help="Judge model (judge mode; default --teacher).")] = None,
    judge_base_url: Annotated[Optional[str], typer.Option("--judge-base-url", help="Base URL of the judge (default --base-url).")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="Task kind (student mode): math | choice | nli | classification.")] = None,
    template: Annotated[Optional[str], typer.Option("--template", help="Student mode: CoT template (default rationale/cot_<kind>); judge mode: judge template (default judge/score).")] = None,
    student_template: Annotated[Optional[str], typer.Option("--student-template", help="Template for the student's prompt (default: the teacher's).")] = None,
    demos: Annotated[Optional[Path], typer.Option("--demos", help="jsonl demonstrations for the CoT prompt (student mode).")] = None,
    n_demos: Annotated[int, typer.Option("--n-demos", help="Demonstrations per prompt (student mode; 0 = zero-shot).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Demonstration order seed (student) / first sample seed (judge).")] = 0,
    samples: Annotated[int, typer.Option("--samples", help="Samples per prompt per sampler (judge mode).")] = 4,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature (judge mode default 1.0).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="max_tokens per answer.")] = None,
    min_margin: Annotated[float, typer.Option("--min-margin", help="Judge mode: keep best vs worst only when their scores differ by this much.")] = 2.0,
    rubric_file: Annotated[Optional[Path], typer.Option("--rubric-file", help="Judge mode: rubric text replacing the template's default.")] = None,
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", help="Judge answer length.")] = 256,
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field", help="Judge mode: field with the prompt (default first of prompt/input/question).")] = None,
    input_field: Annotated[str, typer.Option("--input-field", help="Student mode: field with the question.")] = "question",
    label_field: Annotated[str, typer.Option("--label-field", help="Student mode: field with the gold answer (required per row).")] = "answer",
    choices_field: Annotated[str, typer.Option("--choices-field", help="Options field (choice).")] = "choices",
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label set, comma-separated (classification / nli).")] = None,
    summary_json: Annotated[Optional[Path], typer.Option("--summary-json", help="Also write the summary as JSON.")] = None,
    conn: Optional[dict] = None,  # the connection options (with_connection_options)
) -> None:
    """Preference pairs for DPO: the teacher's right answer vs the student's wrong one, or judge-ranked samples.

    Exit codes: 0 done; 2 bad input; 3 budget reached; 4 teacher fatal.
    """

    async def job() -> int:
        from synthkd.jsonl_io import OutputLock
        from synthkd.methods.preferences import plan_judge_pairs, plan_teacher_student
        from synthkd.methods.runner import rejects_path_for, write_rows

        if mode not in MODES:
            raise InputError([f"--mode {mode!r}: use one of {', '.join(MODES)}"])
        check_job_paths({"--input": input, "--demos": demos, "--rubric-file": rubric_file}, output, summary_json,
                        conn)
        rows, lines = load_rows(input)
        where = lambda i: f"{input}:{lines[i]}"  # noqa: E731
        if mode == "student":
            if not student:
                raise InputError(["--mode student needs --student MODEL (local:PATH, replay:FILE or an API model)"])
            if kind not in KINDS:
                raise InputError([f"--kind {kind!r}: use one of {', '.join(KINDS)}"])
            demo_rows, demo_lines = load_rows(demos) if demos else (None, [])
            plan = plan_teacher_student(
                rows, kind=kind, template=template, student_template=student_template, demos=demo_rows,
                n_demos=n_demos, labels=[x.strip() for x in labels.split(",") if x.strip()] if labels else None,
                fields=FieldNames(input=input_field, label=label_field, choices=choices_field), seed=seed,
                temperature=temperature, max_tokens=max_tokens, row_where=where,
                demo_where=lambda i: f"{demos}:{demo_lines[i]}",
            )
            specs = [(teacher, conn["base_url"]), (student, student_base_url or conn["base_url"])]
            roles = ["teacher", "student"]
        else:
            rubric = None
            if rubric_file is not None:
                if not rubric_file.is_file():
                    raise InputError([f"{rubric_file}: rubric file not found"])
                rubric = rubric_file.read_text(encoding="utf-8").strip()
            samplers = [(teacher, conn["base_url"])] + ([(teacher2, teacher2_base_url or conn["base_url"])] if teacher2 else [])
            plan = plan_judge_pairs(
                rows, prompt_field=prompt_field, template=template, rubric=rubric, samples=samples,
                n_samplers=len(samplers), temperature=1.0 if temperature is None else temperature, seed=seed,
                max_tokens=max_tokens, judge_max_tokens=judge_max_tokens, min_margin=min_margin, row_where=where,
            )
            specs = samplers + [(judge or teacher, judge_base_url or conn["base_url"])]
            roles = ["teacher", "teacher2"][:len(samplers)] + ["judge"]
        teachers = [make_teacher(teacher_spec(
            name, **{**conn, "base_url": url},
        )) for name, url in specs]
        t0 = time.monotonic()
        try:
            with OutputLock(output):
                done = index_output(output)
                if mode == "student":
                    rows_out = plan.run(teachers[0], teachers[1], skip_ids=done)  # type: ignore[union-attr]
                else:
                    rows_out = plan.run(teachers[:-1], teachers[-1], skip_ids=done)  # type: ignore[union-attr]
                counts = await write_rows(rows_out, output)
        finally:
            for t in teachers:
                await t.aclose()
        sent = sum(t.stats.attempts for t in teachers)
        reasons = {k: v for k, v in counts.reasons.items() if not k.startswith("answer null")}
        rejects = rejects_path_for(output)
        log.info(
            f"preferences ({mode}): {counts.written} pairs written to {output} ({len(done)} already there), "
            f"{counts.rejected} rows without a pair" + (f" -> {rejects}" if counts.rejected else "")
            + ("" if not reasons else " (" + ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) + ")")
            + f"; {time.monotonic() - t0:.1f}s"
        )
        for role, t in zip(roles, teachers):
            log.info(f"  {role} {t.model}: {t.stats.summary()}")
        code = ExitCode.OK
        if any(t.budget_exhausted for t in teachers):
            log.warning("budget reached: some rows not started; rerun with a larger --max-cost (nothing is paid twice)")
            code = ExitCode.BUDGET
        if summary_json:
            write_summary(summary_json, {
                "exit_code": code, "mode": mode, "pairs_written": counts.written, "rows_rejected": counts.rejected,
                "reject_reasons": reasons, "pairs_already_done": len(done), "requests_sent": sent,
            })
        return code

    run_job(job)
