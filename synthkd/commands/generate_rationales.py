"""``synthkd generate rationales``: step-by-step rationales from a teacher (Distilling step-by-step).

The command reads and validates the whole input (and demonstrations, label set, template) before the
teacher is built, skips ids already in the output (resume = rerun; with the request cache a rerun
pays only for what was in flight), writes rows as they complete and prints one summary line.
Exit codes as ``synthkd complete``: 0 every row written; 1 some rows rejected; 2 bad input;
3 budget reached; 4 the teacher failed fatally.
"""

from __future__ import annotations

import json
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


def load_labels(labels: str | None, labels_file: Path | None) -> list[str] | None:
    """``--labels a,b,c`` or ``--labels-file`` (a JSON list, or one label per line)."""
    if labels and labels_file:
        raise InputError(["give --labels or --labels-file, not both"])
    if labels:
        return [x.strip() for x in labels.split(",") if x.strip()]
    if labels_file:
        if not labels_file.exists():
            raise InputError([f"{labels_file}: file not found"])
        text = labels_file.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            try:
                out = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError([f"{labels_file}:{exc.lineno}: not valid JSON ({exc.msg})"]) from None
            if not isinstance(out, list) or not all(isinstance(x, str) for x in out):
                raise InputError([f"{labels_file}: expected a JSON list of label strings"])
            return out
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return None


@generate_app.command("rationales")
@with_connection_options
def rationales(
    input: Annotated[Path, typer.Option("--input", "-i", help="jsonl rows with 'id' and the task's fields.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl output (one row per input id); rerun to resume.")],
    kind: Annotated[str, typer.Option("--kind", help="Task kind: math | choice | nli | classification.")],
    teacher: TeacherOpt,
    template: Annotated[Optional[str], typer.Option("--template", help="Template name or .j2 file (default rationale/cot_<kind>).")] = None,
    demos: Annotated[Optional[Path], typer.Option("--demos", help="jsonl demonstrations: task fields + gold label + rationale (default: labelled input rows that carry a rationale).")] = None,
    n_demos: Annotated[int, typer.Option("--n-demos", help="Demonstrations per prompt (0 = zero-shot).")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the demonstration order.")] = 0,
    samples: Annotated[int, typer.Option("--samples", help="Rationales per row (self-consistency; needs --temperature > 0).")] = 1,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="max_tokens per request.")] = None,
    rationalize: Annotated[bool, typer.Option("--rationalize", help="Wrong labelled rows get a second call with the gold answer as a hint (STaR).")] = False,
    completion_api: Annotated[bool, typer.Option("--completion-api", help="Send plain prompts (/completions) instead of chat messages.")] = False,
    input_field: Annotated[str, typer.Option("--input-field", help="Field with the question / input text.")] = "question",
    label_field: Annotated[str, typer.Option("--label-field", help="Field with the gold answer (optional per row).")] = "answer",
    choices_field: Annotated[str, typer.Option("--choices-field", help="Field with the list of options (choice).")] = "choices",
    premise_field: Annotated[str, typer.Option("--premise-field", help="Premise field (nli).")] = "premise",
    hypothesis_field: Annotated[str, typer.Option("--hypothesis-field", help="Hypothesis field (nli).")] = "hypothesis",
    rationale_field: Annotated[str, typer.Option("--rationale-field", help="Rationale field of demonstrations.")] = "rationale",
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label set, comma-separated (classification; nli default entailment,neutral,contradiction).")] = None,
    labels_file: Annotated[Optional[Path], typer.Option("--labels-file", help="Label set file: JSON list or one label per line.")] = None,
    summary_json: Annotated[Optional[Path], typer.Option("--summary-json", help="Also write the summary as JSON.")] = None,
    conn: Optional[dict] = None,  # the connection options (with_connection_options)
) -> None:
    """Few-shot chain-of-thought rationales + answers for every row, scored against gold labels.

    Exit codes: 0 every row written; 1 some rows rejected; 2 bad input; 3 budget reached; 4 teacher fatal.
    """

    async def job() -> int:
        from synthkd.jsonl_io import OutputLock
        from synthkd.methods.rationales import RationaleTally, plan_rationales
        from synthkd.methods.runner import rejects_path_for, write_rows

        if kind not in KINDS:
            raise InputError([f"--kind {kind!r}: use one of {', '.join(KINDS)}"])
        check_job_paths({"--input": input, "--demos": demos, "--labels-file": labels_file}, output, summary_json, conn)
        rows, lines = load_rows(input)
        demo_rows, demo_lines = load_rows(demos) if demos else (None, [])
        fields = FieldNames(input=input_field, label=label_field, choices=choices_field, premise=premise_field,
                            hypothesis=hypothesis_field, rationale=rationale_field)
        plan = plan_rationales(
            rows, kind=kind, template=template, demos=demo_rows, n_demos=n_demos, samples=samples,
            temperature=temperature, rationalize=rationalize, labels=load_labels(labels, labels_file),
            fields=fields, seed=seed, max_tokens=max_tokens, chat=not completion_api,
            row_where=lambda i: f"{input}:{lines[i]}", demo_where=lambda i: f"{demos}:{demo_lines[i]}",
        )
        t = make_teacher(teacher_spec(
            teacher, **conn,
        ))
        tally = RationaleTally(samples=samples)
        t0 = time.monotonic()
        try:
            with OutputLock(output):
                done = index_output(output)
                todo = sum(1 for r in rows if r["id"] not in done)

                async def tallied():
                    async for row in plan.run(t, skip_ids=done):
                        tally.add(row)
                        yield row

                counts = await write_rows(tallied(), output)
        finally:
            await t.aclose()
        sent = t.stats.attempts
        rejects = rejects_path_for(output)
        log.info(
            f"rationales: {counts.written} rows written to {output} ({len(done)} already there), "
            f"{counts.rejected} rejected" + (f" -> {rejects}" if counts.rejected else "") + "; "
            + tally.line() + f"; {t.stats.summary()}; {time.monotonic() - t0:.1f}s"
        )
        missing = todo - counts.written - counts.rejected
        code = ExitCode.OK
        if t.budget_exhausted:
            log.warning(f"budget reached: {missing} rows not started; rerun with a larger --max-cost (nothing is paid twice)")
            code = ExitCode.BUDGET
        elif counts.rejected:
            code = ExitCode.REJECTED
        elif missing:
            log.error(f"error: {missing} rows were neither written nor rejected")
            code = ExitCode.REJECTED
        if summary_json:
            write_summary(summary_json, {
                "exit_code": code, "rows_written": counts.written, "rows_rejected": counts.rejected,
                "rows_already_done": len(done), "requests_sent": sent, **tally.as_dict(),
            })
        return code

    run_job(job)
