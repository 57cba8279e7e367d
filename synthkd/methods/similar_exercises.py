"""New exercises aimed at a student's weakness (LLM2LLM, Lee et al. 2024; Lion, Jiang et al. 2023).

Why: correcting the questions a student got wrong fixes those questions; showing it *more* questions
of the same kind fixes the skill.  For every mistake the teacher writes ``m`` new exercises in the
style of the one that was missed (``prompts/tailored/similar.j2``), each with the answer it intends.
Generated data is never trusted as is, so each exercise is then treated like any generated row:

1. parsed (``Exercise k:`` / ``Answer:`` blocks); a reply with no exercise, an exercise with no
   numeric answer, a verbatim copy of a training-pool or held-out question (decontamination: a copy
   of a held-out question would leak the test), or a repeat of an exercise already written in this
   round is dropped, with its reason;
2. solved by the teacher independently (the ordinary step-by-step rationale prompt, which does not
   show the intended answer) and kept only when that solution reaches the intended answer — the
   generator and the solver must agree, which catches the teacher's own slips.

Both steps are deterministic on a rerun: exercises get ids ``<mistake id>#r<round>#x<k>``, the
parse/dedup pass runs over all replies in mistake-id order (never completion order), and every
answer comes from the request cache, so a resumed round pays for nothing twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

from pydantic import BaseModel

from synthkd.answers import extract_answer, numbers_equal
from synthkd.teachers.base import Teacher, TeacherRequest, TeacherResult
from synthkd.teachers.jobs import Job, stream_jobs
from synthkd.teachers.structured import answer_of
from synthkd.templates import PromptTemplate

__all__ = [
    "exercise_rows",
    "generate_exercises",
    "normalize_question",
    "parse_exercises",
    "similar_request",
    "solved_row",
]

_BLOCK = re.compile(r"^\s*(?:\*\*)?\s*(?:Exercise|Problem|Question)\s*(\d+)\s*[:.)]\s*(?:\*\*)?\s*", re.IGNORECASE | re.MULTILINE)
_ANSWER = re.compile(r"^\s*(?:\*\*)?\s*(?:Answer|Solution)\s*(?:\*\*)?\s*[:=]\s*(?:\*\*)?(.*)$", re.IGNORECASE | re.MULTILINE)


def parse_exercises(text: str | None) -> list[dict[str, Any]]:
    """``[{"index", "question", "answer_text"}]`` from a numbered ``Exercise k:`` / ``Answer:`` reply.

    ``answer_text`` is the raw text after ``Answer:`` (None when the block has no answer line); the
    question is everything between the block's header and its answer line, whitespace-collapsed.
    """
    text = text or ""  # a reply without text (None) has no exercise
    heads = list(_BLOCK.finditer(text))
    out = []
    for i, h in enumerate(heads):
        body = text[h.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        a = _ANSWER.search(body)
        question = body[: a.start()] if a else body
        question = " ".join(question.split()).strip()
        out.append({"index": int(h.group(1)), "question": question,
                    "answer_text": a.group(1).strip().strip("*").strip() if a else None})
    return out


class Exercise(BaseModel):
    question: str
    answer: str


class Exercises(BaseModel):
    """Similar exercises, each with its intended answer (a number)."""

    schema_name: ClassVar[str] = "exercises"
    exercises: list[Exercise]


def exercises_of(parsed: Exercises) -> list[dict[str, Any]]:
    """The structured answer in :func:`parse_exercises`'s shape."""
    return [{"index": k, "question": " ".join(e.question.split()).strip(), "answer_text": e.answer.strip() or None}
            for k, e in enumerate(parsed.exercises, start=1)]


def normalize_question(text: str) -> str:
    """Case-, space- and punctuation-insensitive form used for copy and repeat checks."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def similar_request(mistake_id: str, variables: dict[str, Any], r: int, tpl: PromptTemplate, m: int, *,
                    params: dict[str, Any], chat: bool = True) -> TeacherRequest:
    """``variables``: the mistake as the correction prompt sees it (question, student_rationale, answer)."""
    return TeacherRequest.user(f"{mistake_id}#r{r}#similar", tpl.render(**variables, m=m), chat=chat, params=params,
                               meta={"stage": "tailored-similar", "round": r}, schema=Exercises)


def exercise_rows(mistake_id: str, r: int, res: TeacherResult, m: int, known: dict[str, str],
                  seen: dict[str, str]) -> list[dict[str, Any]]:
    """Exercise rows (and rejects) from one reply.  ``known``: normalized pool/held-out question -> where;
    ``seen``: normalized exercises accepted so far this round -> id (updated in place)."""
    base = {"source_id": mistake_id, "round": r}
    if not res.ok:
        return [{"id": f"{mistake_id}#r{r}#x", **base, "reject_reason": f"teacher error: {res.error}"}]
    parsed, invalid = answer_of(res, exercises_of, parse_exercises)
    if invalid is not None:
        return [{"id": f"{mistake_id}#r{r}#x", **base, "text": res.text, "reject_reason": invalid}]
    if not parsed:
        return [{"id": f"{mistake_id}#r{r}#x", **base, "text": res.text,
                 "reject_reason": "no exercise in the teacher's reply (expected 'Exercise 1: ...' / 'Answer: ...')"}]
    rows = []
    for k, ex in enumerate(parsed[:m], start=1):
        row = {"id": f"{mistake_id}#r{r}#x{k}", **base, "question": ex["question"], "answer_text": ex["answer_text"]}
        norm = normalize_question(ex["question"])
        value = extract_answer(ex["answer_text"] or "", "number").value if ex["answer_text"] else None
        if not ex["question"]:
            why = "empty exercise"
        elif ex["answer_text"] is None:
            why = "exercise without an 'Answer:' line"
        elif value is None:
            why = f"exercise answer is not a number ({ex['answer_text'][:40]!r})"
        elif norm in known:
            why = f"copy of an existing question ({known[norm]})"
        elif norm in seen:
            why = f"repeat of exercise {seen[norm]}"
        else:
            why = None
        if why:
            rows.append({**row, "reject_reason": why})
            continue
        seen[norm] = row["id"]
        rows.append({**row, "answer": value})
    if len(parsed) > m:
        rows.append({"id": f"{mistake_id}#r{r}#x+", **base, "reject_reason": f"more than {m} exercises: "
                     f"{len(parsed) - m} extra ignored"})
    return rows


async def generate_exercises(requests: Iterable[tuple[str, TeacherRequest]], teacher: Teacher, r: int, m: int,
                             known: dict[str, str], tally: Counter) -> list[dict[str, Any]]:
    """Ask for every mistake's exercises, then parse/check the replies in mistake-id order."""
    jobs = [Job(mid, [req]) for mid, req in requests]
    replies: dict[str, TeacherResult] = {}
    async for job in stream_jobs(teacher, jobs):
        res: TeacherResult = job.results[0]  # type: ignore[assignment]
        count_result(tally, res)
        replies[job.item] = res
    seen: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for mid in sorted(replies):
        rows.extend(exercise_rows(mid, r, replies[mid], m, known, seen))
    return rows


def count_result(tally: Counter, res: TeacherResult) -> None:
    """Per-round teacher accounting: requests, cache hits, tokens, cost (micro-dollars, exact sums); the
    invalid structured answers re-asked before ``res`` are requests too (and ``reasks``)."""
    for bad in res.reasks:
        count_result(tally, bad)
        tally["reasks"] += 1
    tally["requests"] += 1
    tally["cached"] += bool(res.cached)
    if res.ok:
        tally["prompt_tokens"] += res.usage.prompt_tokens
        tally["completion_tokens"] += res.usage.completion_tokens
        if res.cost_usd is not None:
            tally["cost_micro_usd"] += round(res.cost_usd * 1e6)


def count_row(tally: Counter, row: dict[str, Any], *, from_disk: bool = False) -> None:
    """Accounting for a row written in an earlier (interrupted) run: its usage and cost are on the row."""
    tally["requests"] += 1
    tally["cached"] += bool(from_disk or row.get("cached"))
    usage = row.get("usage") or {}
    tally["prompt_tokens"] += usage.get("prompt_tokens", 0)
    tally["completion_tokens"] += usage.get("completion_tokens", 0)
    if row.get("cost_usd") is not None:
        tally["cost_micro_usd"] += round(row["cost_usd"] * 1e6)


def solved_row(exercise: dict[str, Any], solved: dict[str, Any]) -> dict[str, Any]:
    """A training row when the teacher's independent solution reaches the exercise's intended answer."""
    base = {"id": exercise["id"], "source_id": exercise["source_id"], "round": exercise["round"],
            "input": exercise["question"], "origin": "similar"}
    if "reject_reason" in solved:
        return {**base, "reject_reason": solved["reject_reason"]}
    keep = {k: solved.get(k) for k in ("text", "usage", "cost_usd", "cached", "teacher", "template", "template_sha")}
    if solved.get("answer") is None:
        return {**base, **keep, "reject_reason": f"no answer in the teacher's solution: {solved.get('answer_reason')}"}
    if not numbers_equal(solved["answer"], exercise["answer"]):
        return {**base, **keep, "reject_reason": f"the teacher's solution does not reach the exercise's answer "
                                                 f"({solved['answer']} != {exercise['answer']})"}
    return {**base, **keep, "rationale": solved["rationale"], "answer": solved["answer"],
            "gold": exercise["answer"]}


async def solve_exercises(exercises: list[dict[str, Any]], teacher: Teacher, *, skip_ids: dict[str, dict[str, Any]],
                          max_tokens: int | None, chat: bool, tally: Counter) -> AsyncIterator[dict[str, Any]]:
    """The teacher solves each exercise with the plain step-by-step prompt (intended answer not shown)."""
    from synthkd.methods.rationales import plan_rationales

    by_id = {x["id"]: x for x in exercises}
    for row in exercises:
        if row["id"] in skip_ids:
            count_row(tally, skip_ids[row["id"]], from_disk=True)
    todo = [{"id": x["id"], "question": x["question"], "answer": x["answer"]} for x in exercises
            if x["id"] not in skip_ids]
    if not todo:
        return
    plan = plan_rationales(todo, kind="math", n_demos=0, max_tokens=max_tokens, chat=chat)
    async for row in plan.run(teacher):
        count_row(tally, row)
        yield solved_row(by_id[row["id"]], row)
