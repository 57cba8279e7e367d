"""Preference pairs for DPO: ``{prompt, chosen, rejected}`` rows built from teacher calls.

Two ways to decide which completion is better, because they need different inputs:

* **teacher vs student** (:func:`teacher_student_pairs`) -- labelled rows (math / choice / nli /
  classification, the rationale task kinds).  Teacher and student both answer the same chain-of-thought
  prompt (planned by :mod:`synthkd.methods.rationales`, so validation, templates and answer parsing are
  shared).  A pair is kept only where the teacher's answer equals gold *and* the student's does not:
  then "chosen" is known to be better on the one thing that can be checked.  Rows where the teacher is
  wrong (or gave no readable answer), where both agree, or where a call failed are rejected with a
  ``reject_reason`` ("teacher wrong: ...", "agree: ...", "teacher error: ...", "student error: ...").
* **judge-ranked** (:func:`judge_ranked_pairs`) -- unlabelled prompts.  k samples per prompt from one
  or two samplers (temperature > 0, seed = sample index), each distinct text scored 1-10 by a judge
  with ``prompts/judge/score.j2``; the best vs the worst is kept when ``best - worst >= min_margin``
  (all scores are recorded).  The judge is asked for :class:`synthkd.scores.JudgeScore` (reason, then
  score) as a strict JSON schema where it supports one (``--structured``), re-asked on invalid JSON
  like the ``judge`` filter, and read from free text (:func:`synthkd.scores.parse_score`) otherwise.  Ties: the earliest candidate wins for best, the latest for worst.

Both are async generators over :class:`~synthkd.teachers.base.Teacher` objects; each teacher gets one
stream (so its concurrency, rate limits, cache and budget cover all its calls) and rows come out as
they complete.  Output ids are ``<source id>#pair`` and every prompt depends only on its row, so a
rerun is free: ids already written are skipped and the calls of rejected rows come from the cache.

Pair rows carry ``prompt`` (the question block the student is trained on: ``TaskKind.query`` in
teacher-vs-student mode, the row's prompt text in judge mode), ``chosen`` and ``rejected`` -- the
field names :func:`synthkd.train.export.build_preference_examples` reads.  Completions are cleaned
with :func:`synthkd.answers.strip_continuation` (few-shot completions run on into a next "Q:").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from synthkd.answers import parse_off_loop, strip_continuation
from synthkd.jsonl_io import MAX_REPORTED_ERRORS, InputError, check_id
from synthkd.methods.rationales import RationalePlan, plan_rationales
from synthkd.methods.task_kinds import KINDS, FieldNames, TaskKind
from synthkd.options import comma_list, opt, register_feature
from synthkd.reasoning import reasoning_field, trace_of
from synthkd.scores import JudgeScore, parse_score
from synthkd.teachers.base import Teacher, TeacherRequest, TeacherResult
from synthkd.teachers.jobs import Job, stream_jobs
from synthkd.teachers.structured import answer_of
from synthkd.templates import PromptTemplate, load_template

__all__ = [
    "JudgePlan", "merge_job_streams", "pair_id", "plan_judge_pairs", "plan_teacher_student",
    "judge_ranked_pairs", "teacher_student_pairs", "PROMPT_FIELDS",
]

PROMPT_FIELDS = ("prompt", "input", "question")


def pair_id(source_id: Any) -> str:
    return f"{source_id}#pair"


def clean_completion(text: str | None) -> str:
    """The completion as a training target: hallucinated next exemplar cut, whitespace stripped."""
    return strip_continuation(text or "").strip()


# --------------------------------------------------------------------------------------------------
# several teachers at once
# --------------------------------------------------------------------------------------------------


class _Feed:
    """An async iterable of jobs fed while it is being consumed (for calls that depend on earlier answers)."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[Any] = asyncio.Queue()
        self._end = object()
        self._closed = False

    def put(self, job: Job[Any]) -> None:
        self._q.put_nowait(job)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put_nowait(self._end)

    async def __aiter__(self) -> AsyncIterator[Job[Any]]:
        while True:
            item = await self._q.get()
            if item is self._end:
                return
            yield item


async def merge_job_streams(
    streams: Sequence[tuple[Teacher, Iterable[Job[Any]] | AsyncIterable[Job[Any]]]],
) -> AsyncIterator[tuple[int, Job[Any] | None]]:
    """``(stream index, finished job)`` from several ``stream_jobs`` running concurrently, and
    ``(stream index, None)`` once that stream has ended (a budget stop can leave jobs unanswered).

    Why: a pair needs answers from different teachers (teacher and student, samplers and judge); each
    teacher keeps its own stream so its limits apply, and this merges their completions.  An error in
    any stream is raised here; closing the iterator cancels the streams.
    """
    q: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def pump(i: int, teacher: Teacher, jobs: Any) -> None:
        try:
            async for job in stream_jobs(teacher, jobs):
                await q.put((i, job))
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the consumer
            await q.put(exc)
            return
        await q.put((i, None))
        await q.put(done)

    tasks = [asyncio.create_task(pump(i, t, j)) for i, (t, j) in enumerate(streams)]
    left = len(tasks)
    try:
        while left:
            item = await q.get()
            if item is done:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _usage(results: Sequence[TeacherResult]) -> dict[str, Any]:
    pt = sum(r.usage.prompt_tokens for r in results)
    ct = sum(r.usage.completion_tokens for r in results)
    costs = [r.cost_usd for r in results]
    return {
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        "cost_usd": None if any(c is None for c in costs) else round(sum(costs), 10),  # type: ignore[arg-type]
        "cached": all(r.cached for r in results),
    }


def _check_ids(rows: Sequence[Any], where: Callable[[int], str], problems: list[str]) -> None:
    seen: dict[Any, str] = {}
    for i, row in enumerate(rows):
        if isinstance(row, dict) and isinstance(row.get("id"), (str, int)) and not isinstance(row["id"], bool):
            key = (type(row["id"]).__name__, row["id"])
            if key in seen:
                problems.append(f"{where(i)}: field 'id': duplicate id {row['id']!r} (first at {seen[key]})")
            else:
                seen[key] = where(i)


# --------------------------------------------------------------------------------------------------
# (a) teacher vs student
# --------------------------------------------------------------------------------------------------


@dataclass
class TeacherStudentPlan:
    """Validated rows and the prompts each side gets.  Build with :func:`plan_teacher_student`."""

    teacher_plan: RationalePlan
    student_plan: RationalePlan

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.teacher_plan.rows

    @property
    def spec(self) -> TaskKind:
        return self.teacher_plan.spec

    def _decide(self, row: dict[str, Any], t: TeacherResult, s: TeacherResult, names: tuple[str, str]) -> dict[str, Any]:
        spec = self.spec
        pid = pair_id(row["id"])
        gold = spec.gold(row)
        base = {"id": pid, "source_id": row["id"], "gold": spec.to_json(gold, row)}
        if not t.ok:
            return {**base, "reject_reason": f"teacher error: {t.error}"}
        if not s.ok:
            return {**base, "reject_reason": f"student error: {s.error}"}
        te, se = spec.parse(t.text, row), spec.parse(s.text, row)
        ta, sa = spec.to_json(te.value, row), spec.to_json(se.value, row)
        info = {**base, "chosen_answer": ta, "rejected_answer": sa}
        if not spec.same(te.value, gold):
            why = f"answered {ta}" if te.value is not None else f"no answer ({te.reason})"
            return {**info, "reject_reason": f"teacher wrong: {why}, gold {base['gold']}"}
        if spec.same(se.value, gold):
            return {**info, "reject_reason": f"agree: both answered {ta}"}
        chosen, rejected = clean_completion(t.text), clean_completion(s.text)
        if not rejected:
            return {**info, "reject_reason": "student empty: the student's completion is empty"}
        if chosen == rejected:  # cannot happen when the answers differ; guards the export contract
            return {**info, "reject_reason": "identical: chosen and rejected texts are the same"}
        out: dict[str, Any] = {
            "id": pid, "source_id": row["id"], "kind": spec.kind, "prompt": spec.query(row),
            "chosen": chosen, "rejected": rejected, "chosen_answer": ta, "rejected_answer": sa,
            "rejected_answer_reason": se.reason, "gold": base["gold"], "method": "teacher-vs-student",
            "teacher": t.model or names[0], "student": s.model or names[1],
        }
        out.update(reasoning_field(t, "chosen_reasoning"))  # the traces of the two answers, when returned
        out.update(reasoning_field(s, "rejected_reasoning"))
        out.update(self.teacher_plan.template.provenance())
        out.update(_usage([t, s]))
        out["source"] = row
        return out

    async def run(self, teacher: Teacher, student: Teacher, *,
                  skip_ids: Container[Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Pair / reject rows as each row's two answers are in (``skip_ids``: pair ids already written)."""
        todo = [r for r in self.rows if skip_ids is None or pair_id(r["id"]) not in skip_ids]
        jobs_t = [self.teacher_plan.first_job(r) for r in todo]
        jobs_s = [self.student_plan.first_job(r) for r in todo]
        for j in jobs_s:
            j.requests = [_with_stage(req, "student") for req in j.requests]
        names = (teacher.model, student.model)
        half: dict[Any, list[TeacherResult | None]] = {}
        async for side, job in merge_job_streams([(teacher, jobs_t), (student, jobs_s)]):
            if job is None:
                continue
            row = job.item[1]
            got = half.setdefault(row["id"], [None, None])
            got[side] = job.results[0]
            if got[0] is not None and got[1] is not None:
                del half[row["id"]]
                chars = len(got[0].text or "") + len(got[1].text or "")
                yield await parse_off_loop(chars, self._decide, row, got[0], got[1], names)


def _with_stage(req: TeacherRequest, stage: str) -> TeacherRequest:
    return TeacherRequest(key=f"{req.key}@{stage}", messages=req.messages, prompt=req.prompt, params=req.params,
                          sample_index=req.sample_index, meta={**req.meta, "stage": stage})


def plan_teacher_student(
    rows: Iterable[dict[str, Any]], *, kind: str | TaskKind, template: str | Path | PromptTemplate | None = None,
    student_template: str | Path | PromptTemplate | None = None, demos: Iterable[dict[str, Any]] | None = None,
    n_demos: int = 0, labels: Sequence[str] | None = None, fields: FieldNames | None = None, seed: int = 0,
    temperature: float | None = None, max_tokens: int | None = None, chat: bool = True,
    row_where: Callable[[int], str] | None = None, demo_where: Callable[[int], str] | None = None,
) -> TeacherStudentPlan:
    """Validate everything (every row needs its gold answer); raises InputError / TemplateError / ValueError."""
    row_list = list(rows)
    where = row_where or (lambda i: f"rows[{i}]")
    kw = dict(kind=kind, demos=demos, n_demos=n_demos, labels=labels, fields=fields, seed=seed,
              temperature=temperature, max_tokens=max_tokens, chat=chat, row_where=row_where, demo_where=demo_where)
    tplan = plan_rationales(row_list, template=template, **kw)  # type: ignore[arg-type]
    problems = []
    for i, row in enumerate(row_list):
        if tplan.spec.gold(row) is None:
            problems.append(f"{where(i)}: field '{tplan.spec.fields.label}': missing "
                            "(a teacher-vs-student pair needs the gold answer)")
            if len(problems) >= MAX_REPORTED_ERRORS:
                break
    if problems:
        raise InputError(problems)
    splan = tplan if student_template is None else plan_rationales(row_list, template=student_template, **kw)  # type: ignore[arg-type]
    return TeacherStudentPlan(tplan, splan)


async def teacher_student_pairs(
    rows: Iterable[dict[str, Any]], teacher: Teacher, student: Teacher, *, skip_ids: Container[Any] | None = None,
    **plan_kw: Any,
) -> AsyncIterator[dict[str, Any]]:
    """Rows in, pair / reject rows out as they complete (see the module docstring)."""
    plan = plan_teacher_student(rows, **plan_kw)
    async for out in plan.run(teacher, student, skip_ids=skip_ids):
        yield out


# --------------------------------------------------------------------------------------------------
# (b) judge-ranked
# --------------------------------------------------------------------------------------------------


@dataclass
class JudgePlan:
    """Validated prompts, sampling and judging settings.  Build with :func:`plan_judge_pairs`."""

    rows: list[dict[str, Any]]
    prompt_field: str | None
    template: PromptTemplate
    rubric: str = ""
    samples: int = 4
    temperature: float | None = 1.0
    seed: int = 0
    max_tokens: int | None = None
    judge_max_tokens: int = 256
    judge_temperature: float | None = None
    min_margin: float = 2.0

    def prompt_of(self, row: dict[str, Any]) -> str:
        names = (self.prompt_field,) if self.prompt_field else PROMPT_FIELDS
        return next(row[n] for n in names if isinstance(row.get(n), str))

    def sample_job(self, row: dict[str, Any]) -> Job[Any]:
        params: dict[str, Any] = {}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        msgs = [{"role": "user", "content": self.prompt_of(row)}]
        reqs = [TeacherRequest(key=f"{row['id']}#s{s}", messages=msgs, params={**params, "seed": self.seed},
                               sample_index=s, meta={"stage": "sample"}) for s in range(self.samples)]
        return Job(row, reqs)

    def judge_job(self, row: dict[str, Any], texts: list[str]) -> Job[Any]:
        params: dict[str, Any] = {"max_tokens": self.judge_max_tokens}
        if self.judge_temperature is not None:
            params["temperature"] = self.judge_temperature
        reqs = []
        for j, text in enumerate(texts):
            prompt = self.template.render(input=self.prompt_of(row), output=text, rubric=self.rubric, row=row)
            reqs.append(TeacherRequest(key=f"judge:{row['id']}#{j}", messages=[{"role": "user", "content": prompt}],
                                       params=params, meta={"stage": "judge"}, schema=JudgeScore))
        return Job(("judge", row, texts), reqs)

    def _rank(self, row: dict[str, Any], cands: list[dict[str, Any]], texts: list[str],
              judged: list[TeacherResult], sampled: list[TeacherResult], judge_name: str) -> dict[str, Any]:
        pid = pair_id(row["id"])
        scores: dict[str, tuple[float | None, str | None, str | None]] = {}
        for text, res in zip(texts, judged):
            if not res.ok:
                return {"id": pid, "source_id": row["id"], "reject_reason": f"judge error: {res.error}"}
            # the same reading as the judge filter: the schema's score when asked as JSON (an answer still
            # invalid after the re-asks is unscored, its reason "invalid_structured_response: ..."), else
            # the last "Score: N" of the free text
            got, invalid = answer_of(res, lambda p: (float(p.score), None), parse_score)
            score, why = got if invalid is None else (None, invalid)
            scores[text] = (score, why, res.text)
        for c in cands:
            c["score"], c["score_reason"], _ = scores[c["text"]]
        scored = [c for c in cands if c["score"] is not None]
        distinct = {c["text"] for c in scored}
        record = [{k: c[k] for k in ("model", "sample_index", "score", "score_reason")} for c in cands]
        base = {"id": pid, "source_id": row["id"], "candidates": record}
        if len(distinct) < 2:
            return {**base, "reject_reason": f"too few scored: {len(distinct)} distinct scored sample(s), need 2"}
        best = min(range(len(scored)), key=lambda i: (-scored[i]["score"], i))
        worst = min(range(len(scored)), key=lambda i: (scored[i]["score"], -i))
        b, w = scored[best], scored[worst]
        margin = b["score"] - w["score"]
        if margin < self.min_margin:
            return {**base, "reject_reason": f"margin: best {b['score']:g} - worst {w['score']:g} < {self.min_margin:g}"}
        out: dict[str, Any] = {
            "id": pid, "source_id": row["id"], "prompt": self.prompt_of(row), "chosen": b["text"],
            "rejected": w["text"], "chosen_score": b["score"], "rejected_score": w["score"], "margin": margin,
            "chosen_model": b["model"], "rejected_model": w["model"],
            "chosen_sample": b["sample_index"], "rejected_sample": w["sample_index"],
            "method": "judge-ranked", "judge": judge_name, "candidates": record,
        }
        for side, c in (("chosen", b), ("rejected", w)):  # the sampled answers' traces, when returned
            if c.get("reasoning") is not None:
                out[f"{side}_reasoning"] = c["reasoning"]
        out.update(self.template.provenance())
        out.update(_usage([*sampled, *judged, *(bad for r in judged for bad in r.reasks)]))
        reasks = sum(len(r.reasks) for r in judged)
        if reasks:
            out["judge_reasks"] = reasks
        out["source"] = row
        return out

    async def run(self, samplers: Sequence[Teacher], judge: Teacher, *,
                  skip_ids: Container[Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Sample from every sampler, judge the distinct texts, yield pair / reject rows as they complete."""
        todo = [r for r in self.rows if skip_ids is None or pair_id(r["id"]) not in skip_ids]
        feed = _Feed()
        n = len(samplers)
        names = [t.model for t in samplers]
        judge_name = judge.model
        gathered: dict[Any, list[Job[Any] | None]] = {}
        pending: dict[Any, tuple[list[dict[str, Any]], list[TeacherResult]]] = {}
        streams = [(t, [self.sample_job(r) for r in todo]) for t in samplers] + [(judge, feed)]
        ended = 0
        async for side, job in merge_job_streams(streams):
            if job is None:
                ended += side < n
                if ended == n:  # no more samples will come (all answered, or a budget stop)
                    feed.close()
                continue
            if side < n:
                row = job.item
                got = gathered.setdefault(row["id"], [None] * n)
                got[side] = job
                jobs = [g for g in got if g is not None]
                if len(jobs) < n:  # another sampler's job for this row is still out
                    continue
                del gathered[row["id"]]
                sampled = [r for g in jobs for r in g.done_results()]
                bad = next((r for r in sampled if not r.ok), None)
                if bad is not None:
                    yield {"id": pair_id(row["id"]), "source_id": row["id"],
                           "reject_reason": f"sampler error: {bad.error}"}
                else:
                    cands: list[dict[str, Any]] = [
                        {"model": sampled[i].model or names[i // self.samples], "sample_index": r.request.sample_index,
                         "text": clean_completion(r.text), "reasoning": trace_of(r)} for i, r in enumerate(sampled)]
                    cands = [c for c in cands if c["text"]]
                    texts = list(dict.fromkeys(c["text"] for c in cands))  # judge each distinct text once
                    if len(texts) < 2:
                        yield {"id": pair_id(row["id"]), "source_id": row["id"],
                               "reject_reason": f"too few distinct: {len(texts)} distinct non-empty sample(s)"}
                    else:
                        pending[row["id"]] = (cands, sampled)
                        feed.put(self.judge_job(row, texts))
            else:
                _, row, texts = job.item
                cands, sampled = pending.pop(row["id"])
                yield self._rank(row, cands, texts, job.done_results(), sampled, judge_name)


def plan_judge_pairs(
    rows: Iterable[dict[str, Any]], *, prompt_field: str | None = None, template: str | Path | PromptTemplate | None = None,
    rubric: str | None = None, samples: int = 4, n_samplers: int = 1, temperature: float | None = 1.0, seed: int = 0,
    max_tokens: int | None = None, judge_max_tokens: int = 256, judge_temperature: float | None = None,
    min_margin: float = 2.0, row_where: Callable[[int], str] | None = None,
) -> JudgePlan:
    """Validate everything before any call; raises InputError / TemplateError / ValueError."""
    problems = []
    if samples < 1:
        problems.append("--samples must be at least 1")
    if samples * n_samplers < 2:
        problems.append("a pair needs at least 2 samples per prompt: raise --samples or add a second sampler")
    if samples > 1 and not (temperature is not None and temperature > 0):
        problems.append("--samples > 1 draws distinct samples: set --temperature above 0")
    if not 0 <= min_margin <= 9:
        problems.append("--min-margin must be between 0 and 9 (scores are 1-10)")
    if judge_max_tokens < 1 or (max_tokens is not None and max_tokens < 1):
        problems.append("max tokens must be at least 1")
    if problems:
        raise ValueError("; ".join(problems))
    tpl = template if isinstance(template, PromptTemplate) else load_template(template or "judge/score")
    tpl.check({"input", "output", "rubric", "row"}, where="judge template")
    where = row_where or (lambda i: f"rows[{i}]")
    names = (prompt_field,) if prompt_field else PROMPT_FIELDS
    row_list = list(rows)
    for i, row in enumerate(row_list):
        if not isinstance(row, dict):
            problems.append(f"{where(i)}: expected a JSON object, got {type(row).__name__}")
            continue
        if "id" not in row:
            problems.append(f"{where(i)}: field 'id': missing")
        elif why := check_id(row["id"]):  # the one id rule (64-bit integers named, F16)
            problems.append(f"{where(i)}: {why}")
        present = [n for n in names if n in row]
        if not present:
            problems.append(f"{where(i)}: field '{' / '.join(names)}': missing (the prompt to sample)")
        elif not isinstance(row[present[0]], str) or not row[present[0]].strip():
            problems.append(f"{where(i)}: field '{present[0]}': must be a non-empty string")
        if len(problems) >= MAX_REPORTED_ERRORS:
            break
    _check_ids(row_list, where, problems)
    if not row_list:
        problems.append("no input rows (the input is empty)")
    if problems:
        raise InputError(problems[:MAX_REPORTED_ERRORS])
    plan = JudgePlan(rows=row_list, prompt_field=prompt_field, template=tpl, rubric=rubric or "", samples=samples,
                     temperature=temperature, seed=seed, max_tokens=max_tokens, judge_max_tokens=judge_max_tokens,
                     judge_temperature=judge_temperature, min_margin=min_margin)
    plan.judge_job(row_list[0], ["x"])  # a template error costs nothing here
    return plan


async def judge_ranked_pairs(
    rows: Iterable[dict[str, Any]], samplers: Sequence[Teacher], judge: Teacher, *,
    skip_ids: Container[Any] | None = None, **plan_kw: Any,
) -> AsyncIterator[dict[str, Any]]:
    """Rows in, pair / reject rows out as they complete (see the module docstring)."""
    plan = plan_judge_pairs(rows, n_samplers=len(samplers), **plan_kw)
    async for out in plan.run(samplers, judge, skip_ids=skip_ids):
        yield out


# --------------------------------------------------------------------------------------------------
# the options, declared once
# --------------------------------------------------------------------------------------------------

MODES = ("student", "judge")


@dataclass(kw_only=True)
class PreferencesConfig:
    """The options of preference-pair generation, declared once: ``synthkd generate preferences``, the
    pipeline stage ``generate.preferences`` and the Python API (:meth:`plan`) are built from them."""

    input: Optional[Path] = opt(None, help="Rows with 'id' and the task's fields (student mode: with gold); jsonl, csv, parquet, a datasets directory or hf:.",
                                flags=("-i",), stage=False)
    output: Optional[Path] = opt(None, help="jsonl pairs {id, prompt, chosen, rejected, ...}; rerun to resume.",
                                 flags=("-o",), stage=False)
    mode: str = opt("student", help="student: teacher right vs student wrong; judge: best vs worst of k samples.",
                    choices=MODES)
    student: Optional[str] = opt(None, help="Student model (student mode): API model name, local:PATH or "
                                 "replay:FILE; in a pipeline also an earlier train stage or a model directory.")
    student_base_url: Optional[str] = opt(None, help="Base URL of the student (default --base-url).")
    teacher2: Optional[str] = opt(None, help="Second sampler (judge mode), also --samples per prompt.")
    teacher2_base_url: Optional[str] = opt(None, help="Base URL of --teacher2 (default --base-url).")
    judge: Optional[str] = opt(None, help="Judge model (judge mode; default --teacher).")
    judge_base_url: Optional[str] = opt(None, help="Base URL of the judge (default --base-url).")
    kind: Optional[str] = opt(None, help="Task kind (student mode): math | choice | nli | classification.",
                              choices=KINDS)
    template: Optional[str] = opt(None, help="Student mode: CoT template (default rationale/cot_<kind>); judge "
                                  "mode: judge template (default judge/score).")
    student_template: Optional[str] = opt(None, help="Template for the student's prompt (default: the teacher's).")
    demos: Optional[Path] = opt(None, help="jsonl demonstrations for the CoT prompt (student mode).")
    n_demos: int = opt(0, help="Demonstrations per prompt (student mode; 0 = zero-shot).", ge=0)
    seed: int = opt(0, help="Demonstration order seed (student) / first sample seed (judge).")
    samples: int = opt(4, help="Samples per prompt per sampler (judge mode).", ge=1)
    temperature: Optional[float] = opt(None, help="Sampling temperature (judge mode default 1.0).", ge=0)
    max_tokens: Optional[int] = opt(None, help="max_tokens per answer.", ge=1)
    min_margin: float = opt(2.0, help="Judge mode: keep best vs worst only when their scores differ by this much.",
                            ge=0, le=9)
    rubric: Optional[str] = opt(None, help="Judge mode: rubric text replacing the template's default.")
    rubric_file: Optional[Path] = opt(None, help="Judge mode: a file with the rubric text (instead of --rubric).")
    judge_max_tokens: int = opt(256, help="Judge answer length.", ge=1)
    prompt_field: Optional[str] = opt(None, help="Judge mode: field with the prompt (default first of "
                                      "prompt/input/question).")
    input_field: str = opt("question", help="Student mode: field with the question.")
    label_field: str = opt("answer", help="Student mode: field with the gold answer (required per row).")
    choices_field: str = opt("choices", help="Options field (choice).")
    labels: Optional[list[str]] = opt(None, help="Label set, comma-separated (classification / nli).",
                                      cli_type=Optional[str], cli_parse=comma_list)

    @property
    def n_samplers(self) -> int:
        return 2 if (self.mode == "judge" and self.teacher2) else 1

    def rubric_text(self) -> str | None:
        if self.rubric is not None and self.rubric_file is not None:
            raise InputError(["give --rubric or --rubric-file, not both"])
        if self.rubric_file is not None:
            if not self.rubric_file.is_file():
                raise InputError([f"{self.rubric_file}: rubric file not found"])
            return self.rubric_file.read_text(encoding="utf-8").strip()
        return self.rubric

    def plan(self, rows: Iterable[dict[str, Any]], *, demos: Iterable[dict[str, Any]] | None = None,
             row_where: Callable[[int], str] | None = None,
             demo_where: Callable[[int], str] | None = None) -> TeacherStudentPlan | JudgePlan:
        """:func:`plan_teacher_student` (student mode) or :func:`plan_judge_pairs` (judge mode) with these
        options; ``demos``: the rows of :attr:`demos`, read by the caller."""
        if self.mode == "student":
            if self.kind not in KINDS:
                raise InputError([f"--kind {self.kind!r}: use one of {', '.join(KINDS)}"])
            return plan_teacher_student(
                rows, kind=self.kind, template=self.template, student_template=self.student_template, demos=demos,
                n_demos=self.n_demos, labels=self.labels,
                fields=FieldNames(input=self.input_field, label=self.label_field, choices=self.choices_field),
                seed=self.seed, temperature=self.temperature, max_tokens=self.max_tokens, row_where=row_where,
                demo_where=demo_where,
            )
        return plan_judge_pairs(
            rows, prompt_field=self.prompt_field, template=self.template, rubric=self.rubric_text(),
            samples=self.samples, n_samplers=self.n_samplers,
            temperature=1.0 if self.temperature is None else self.temperature, seed=self.seed,
            max_tokens=self.max_tokens, judge_max_tokens=self.judge_max_tokens, min_margin=self.min_margin,
            row_where=row_where,
        )


register_feature("generate.preferences", PreferencesConfig, command=("generate", "preferences"),
                 stage="generate.preferences")
