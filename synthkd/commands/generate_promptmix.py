"""``synthkd generate promptmix`` and ``synthkd generate relabel``.

Both print one ``done:`` line (rows, rejects, requests, tokens, cost) and an "intended vs relabeled"
agreement line with the top confusions on stderr, like ``synthkd complete``, and use its exit codes:
0 every row done; 1 some rows failed (teacher errors, in OUTPUT.rejects.jsonl; a rerun retries
them); 2 bad input (before any request); 3 budget reached; 4 the teacher refused us; 130 interrupted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Optional

import typer

from synthkd.commands.common import (
    TeacherOpt, check_job_paths, make_teacher, run_job, teacher_spec, with_connection_options,
)
from synthkd.commands.generate import generate_app
from synthkd.errors import ExitCode
from synthkd.jsonl_io import OutputLock
from synthkd.jsonl_io import InputError, check_id, id_hash, index_output, iter_jsonl, write_summary
from synthkd.methods.runner import rejects_path_for, write_rows
from synthkd.teachers.base import Teacher

log = logging.getLogger(__name__)

LabelsOpt = Annotated[Path, typer.Option("--labels", "-l", help="Label space YAML/JSON: labels (a list, or name: description), examples per label (a list of texts), optional task.")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output jsonl (appended; ids already there are skipped).")]
SummaryJsonOpt = Annotated[Optional[Path], typer.Option("--summary-json", help="Also write the counts and the confusion summary as JSON.")]


async def _close(teacher: Teacher) -> None:
    await teacher.aclose()
    if teacher.cache is not None:
        teacher.cache.close()


def _reasons(counts: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# --------------------------------------------------------------------------------------------------
# relabel
# --------------------------------------------------------------------------------------------------


def _intended_of(row: dict[str, Any], label_field: str | None) -> Any:
    if label_field:
        return row.get(label_field)
    return row.get("intended_label", row.get("label"))


def _validate_relabel_input(path: Path, text_field: str, label_field: str | None, labels: set[str]) -> int:
    """Check the whole file before any request; returns the row count."""
    if not path.is_file():
        raise InputError([f"{path}: file not found"])
    problems: list[str] = []
    seen: dict[int, int] = {}
    n = 0
    for lineno, row in iter_jsonl(path):
        n += 1
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object")
        else:
            rid = row.get("id")
            if "id" not in row:
                problems.append(f"{where}: field 'id': missing")
            elif why := check_id(rid):  # the one id rule (64-bit integers named, F16)
                problems.append(f"{where}: {why}")
            else:
                h = id_hash(rid)
                if h in seen:
                    problems.append(f"{where}: field 'id': duplicate id {rid!r} (first on line {seen[h]})")
                seen.setdefault(h, lineno)
            t = row.get(text_field)
            if not isinstance(t, str) or not t.strip():
                problems.append(f"{where}: field '{text_field}': missing or not a non-empty string")
            lab = _intended_of(row, label_field)
            fname = label_field or ("intended_label" if "intended_label" in row else "label")
            if lab is not None and not isinstance(lab, str):
                problems.append(f"{where}: field '{fname}': must be a class name string, got {lab!r}")
            elif lab is not None and lab not in labels:
                problems.append(f"{where}: field '{fname}': {lab!r} is not a class of the label space")
        if len(problems) >= 20:
            break
    if not problems and n == 0:
        problems.append(f"{path}: no rows (the file is empty)")
    if problems:
        raise InputError(problems)
    return n


@generate_app.command("relabel")
@with_connection_options
def relabel_cmd(
    input: Annotated[Path, typer.Option("--input", "-i", help="Input jsonl with an id and a text field per row.")],
    labels: LabelsOpt,
    output: OutputOpt,
    teacher: TeacherOpt,
    text_field: Annotated[str, typer.Option("--text-field", help="Field holding the text to classify.")] = "text",
    label_field: Annotated[Optional[str], typer.Option("--label-field", help="Field holding the intended label (default: intended_label, else label).")] = None,
    k_shot: Annotated[int, typer.Option("--k-shot", help="Examples per class shown in the prompt.")] = 2,
    candidates: Annotated[Optional[int], typer.Option("--candidates", help="Offer only the N lexically most similar classes (+ the intended one); default all.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Answers per row, majority vote (needs --temperature > 0).")] = 1,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature for the classifier.")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first sample when --samples > 1.")] = 0,
    template: Annotated[str, typer.Option("--template", help="Classification prompt template (name or path).")] = "relabel/classify",
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="max_tokens for each answer.")] = 32,
    summary_json: SummaryJsonOpt = None,
    conn: Optional[dict] = None,  # the connection options (with_connection_options)
) -> None:
    """Ask the teacher for each row's class; add relabeled_label, relabel_raw, relabel_reason.

    Prints intended vs relabeled agreement and the top confusions (over the whole output file).
    """
    from synthkd.methods.relabel import LabelSpace, classify, confusion_summary, format_confusion

    async def job() -> int:
        check_job_paths({"--input": input, "--labels": labels}, output, summary_json, conn)
        space = LabelSpace.from_file(labels)
        n_rows = _validate_relabel_input(input, text_field, label_field, set(space.labels))
        if samples > 1 and not (temperature and temperature > 0):
            raise InputError(["--samples > 1 draws distinct answers: set --temperature above 0"])
        done = index_output(output)
        t = make_teacher(teacher_spec(teacher, **conn))
        t0 = time.monotonic()

        def todo():
            for _lineno, row in iter_jsonl(input):
                if row["id"] not in done:
                    yield row

        async def rows() -> AsyncIterator[dict[str, Any]]:
            async for row, rel in classify(
                todo(), t, space, text_field=text_field, k_shot=k_shot, candidates=candidates, template=template,
                samples=samples, temperature=temperature, seed=seed, intended_field=label_field,
                max_tokens=max_tokens,
            ):
                out = {**row, "relabeled_label": rel.label, "relabel_raw": rel.raw, "relabel_reason": rel.reason}
                if candidates is not None:
                    out["relabel_candidates"] = rel.candidates
                if samples > 1:
                    out["relabel_votes"] = rel.votes
                out.update(relabel_template=rel.template, relabel_model=rel.model, relabel_cost_usd=rel.cost_usd,
                           relabel_cached=rel.cached)
                if rel.teacher_error:
                    out["reject_reason"] = rel.reason
                yield out

        try:
            with OutputLock(output):  # two processes never append to the same output
                counts = await write_rows(rows(), output)
        finally:
            await _close(t)
        todo_n = n_rows - len(done)
        missing = todo_n - counts.written - counts.rejected - counts.already_there
        summary = confusion_summary(
            (_intended_of(r, label_field), r.get("relabeled_label")) for _, r in iter_jsonl(output)
        ) if output.exists() else confusion_summary([])
        rej = rejects_path_for(output)
        log.info(f"done: {counts.written} rows written to {output} ({len(done)} already there), {counts.rejected} rejected"
            + (f" -> {rej} ({_reasons(counts.reasons)})" if counts.rejected else "")
            + f"; {t.stats.summary()}; {time.monotonic() - t0:.1f}s")
        log.info(format_confusion(summary, f"intended vs relabeled (all {summary['rows']} rows of {output.name})"))
        code = ExitCode.OK
        if t.budget_exhausted:
            log.warning(f"budget reached: {missing} rows not started. Rerun with a larger --max-cost to finish (nothing is paid twice).")
            code = ExitCode.BUDGET
        elif counts.rejected:
            code = ExitCode.REJECTED
        elif missing > 0:
            log.error(f"error: {missing} rows were neither written nor rejected")
            code = ExitCode.REJECTED
        if summary_json:
            write_summary(summary_json, {"exit_code": code, **counts.as_dict(), "rows_already_done": len(done),
                                         "confusion": summary})
        return code

    run_job(job)


# --------------------------------------------------------------------------------------------------
# promptmix
# --------------------------------------------------------------------------------------------------


@generate_app.command("promptmix")
@with_connection_options
def promptmix_cmd(
    labels: LabelsOpt,
    output: OutputOpt,
    per_class: Annotated[int, typer.Option("--per-class", "-n", help="Examples to generate per class (before drops).")],
    teacher: TeacherOpt,
    group_size: Annotated[int, typer.Option("--group-size", help="Classes per group; each class mixes with the others of its group.")] = 4,
    examples_per_call: Annotated[int, typer.Option("--examples-per-call", help="Examples asked for in one generation call.")] = 4,
    grouping: Annotated[str, typer.Option("--grouping", help="similar (TF-IDF nearest classes) or random (seeded).")] = "similar",
    policy: Annotated[str, typer.Option("--policy", help="label = relabeled (overwrite), intended (keep), or drop rows where they differ (drop-disagreeing).")] = "overwrite",
    seed: Annotated[int, typer.Option("--seed", help="Seed for groups, partners and alpha.")] = 0,
    alpha_a: Annotated[float, typer.Option("--alpha-a", help="alpha = 0.5 + 0.5*Beta(a, b): a.")] = 2.0,
    alpha_b: Annotated[float, typer.Option("--alpha-b", help="alpha = 0.5 + 0.5*Beta(a, b): b.")] = 1.0,
    k_shot: Annotated[int, typer.Option("--k-shot", help="Seed examples per class in the generation prompt.")] = 3,
    relabel_k_shot: Annotated[int, typer.Option("--relabel-k-shot", help="Examples per class in the relabel prompt.")] = 2,
    relabel_candidates: Annotated[int, typer.Option("--relabel-candidates", help="Classes offered when relabeling (most similar + the pair); 0 = all.")] = 10,
    template: Annotated[str, typer.Option("--template", help="Generation prompt template.")] = "promptmix/generate",
    relabel_template: Annotated[str, typer.Option("--relabel-template", help="Relabel prompt template.")] = "relabel/classify",
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Generation temperature.")] = 1.0,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="max_tokens for each generation call.")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Comma-separated classes to generate for (default all).")] = None,
    summary_json: SummaryJsonOpt = None,
    conn: Optional[dict] = None,  # the connection options (with_connection_options)
) -> None:
    """PromptMix: borderline examples mixing two classes (alpha% A, rest B), relabeled by the teacher."""
    from synthkd.methods.promptmix import PromptMixConfig, PromptMixStats, plan_calls, promptmix
    from synthkd.methods.relabel import LabelSpace, confusion_summary, format_confusion

    async def job() -> int:
        check_job_paths({"--labels": labels}, output, summary_json, conn)
        space = LabelSpace.from_file(labels)
        cfg = PromptMixConfig(
            per_class=per_class, group_size=group_size, examples_per_call=examples_per_call, grouping=grouping,
            policy=policy, seed=seed, alpha_beta=(alpha_a, alpha_b), k_shot=k_shot, relabel_k_shot=relabel_k_shot,
            relabel_candidates=relabel_candidates or None, template=template, relabel_template=relabel_template,
            temperature=temperature, max_tokens=max_tokens,
            classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
        )
        problems = cfg.problems(space)
        if problems:
            raise InputError([f"{labels}: {p}" if "label space" in p else p for p in problems])
        n_calls = len(plan_calls(space, cfg))  # renders every prompt now: template errors before any request
        t = make_teacher(teacher_spec(teacher, **conn))
        t0 = time.monotonic()
        stats = PromptMixStats()
        pairs: list[tuple[str | None, str | None]] = []
        by_class: Counter = Counter()
        alphas: list[float] = []

        async def rows() -> AsyncIterator[dict[str, Any]]:
            async for row in promptmix(space, t, cfg, stats):
                if "relabeled_label" in row and not str(row.get("reject_reason", "")).startswith("teacher error"):
                    pairs.append((row["intended_label"], row["relabeled_label"]))
                    alphas.append(row["alpha"])
                if "reject_reason" not in row:
                    by_class[row["label"]] += 1
                yield row

        try:
            with OutputLock(output):  # two processes never append to the same output
                counts = await write_rows(rows(), output)
        finally:
            await _close(t)
        summary = confusion_summary(pairs)
        rej = rejects_path_for(output)
        log.info(f"done: {counts.written} rows written to {output} ({counts.already_there} already there), "
            f"{counts.rejected} rejected" + (f" -> {rej} ({_reasons(counts.reasons)})" if counts.rejected else "")
            + f"; generation calls {stats.calls}/{n_calls} answered ({stats.failed_calls} failed), "
            f"{stats.parsed} examples parsed, {stats.kept} kept after dedup; "
            f"{t.stats.summary()}; {time.monotonic() - t0:.1f}s")
        if alphas:
            log.info(f"alpha: mean {sum(alphas) / len(alphas):.3f}, min {min(alphas):.2f}, max {max(alphas):.2f}; "
                f"rows per label ({policy}): " + ", ".join(f"{k} {v}" for k, v in sorted(by_class.items())))
        log.info(format_confusion(summary))
        failed = stats.failed_calls + counts.reasons.get("teacher error", 0)
        code = ExitCode.OK
        if t.budget_exhausted:
            log.warning("budget reached: some calls not sent. Rerun with a larger --max-cost to finish (nothing is paid twice).")
            code = ExitCode.BUDGET
        elif failed:
            code = ExitCode.REJECTED
        if summary_json:
            write_summary(summary_json, {
                "exit_code": code, **counts.as_dict(), "calls_planned": n_calls, "calls_answered": stats.calls,
                "failed_calls": stats.failed_calls, "parsed": stats.parsed, "kept": stats.kept,
                "dropped": stats.dropped, "rows_per_label": dict(by_class),
                "alpha_mean": round(sum(alphas) / len(alphas), 4) if alphas else None, "confusion": summary,
            })
        return code

    run_job(job)
