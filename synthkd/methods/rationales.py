"""Step-by-step rationales (Distilling step-by-step, Hsieh et al. 2023): ask the teacher for a
chain-of-thought rationale and an answer per row, so a small student can be trained on both.

For every input row the teacher gets a few-shot chain-of-thought prompt (demonstrations with
rationales, then the row's question) and answers "<rationale> So the answer is X."  The answer is read
with :mod:`synthkd.answers` (the hallucinated next exemplar that few-shot completions run on into is
cut first), compared with the gold label when there is one, and written with the rationale.

Options and why they exist:

* ``samples=k`` (with ``temperature > 0``): self-consistency.  The majority answer is the row's
  answer, ``agreement`` says how many of the k samples gave it (a cheap confidence score for
  filtering), and the row's rationale is the first sample that reached the majority.
* ``rationalize=True`` (STaR, Zelikman et al. 2022): a labelled row the teacher got wrong gets one
  more call that shows the gold answer as a hint and asks for a rationale reaching it, so hard rows
  still yield a rationale instead of being dropped.  The original wrong attempt is kept.
* ``rationale_source`` (a reasoning teacher returns its trace beside the answer): ``text`` (default)
  parses the rationale out of the answer text, as for any teacher; ``reasoning`` takes the teacher's
  trace as the rationale; ``both`` joins the trace and the text's rationale (a blank line between).
  The answer is always read from the answer text, so voting and the gold check are unchanged.  Under
  ``reasoning``/``both`` a row whose teacher returned no trace is a reject row (``no reasoning trace``).

Determinism (what makes resume-by-rerun free): the demonstrations are one seeded shuffle of the
pool, taken in order for every row and skipping the row itself, so a row's prompt depends only on
the row, the pool and the seed -- never on which answers came back first.  Output ids are the
source ids, one output row per input row.

Output row fields: ``id, kind, input`` (the question block the student sees), ``rationale``,
``answer`` (number / option text / label, ``null`` when none could be read), ``answer_index``
(choice only), ``answer_reason`` (why ``answer`` is null), ``gold``, ``correct`` (the teacher's own
majority answer equals gold), ``agreement``, ``votes``, ``samples`` ([{sample_index, rationale,
answer, answer_reason, text, finish_reason[, reasoning]}]), ``reasoning`` (the teacher's trace of the
sample whose rationale the row keeps; present only when the teacher returned one), ``rationalized`` /
``first_attempt`` /
``rationalization`` (see above), ``demo_ids``, ``template``, ``template_sha``, ``teacher``, ``usage``,
``cost_usd``, ``cached``, ``source`` (the input row, unchanged).  When ``rationalized`` and
``rationalization.reached_gold``, ``rationale``/``answer`` are the rationalization's and
``first_attempt`` holds the teacher's original ones; ``correct`` always describes the first attempt.
A row whose request failed for good is ``{id, reject_reason, ...}`` (routed to the rejects file).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel

from synthkd.answers import ExtractedAnswer, parse_off_loop
from synthkd.jsonl_io import MAX_REPORTED_ERRORS, InputError
from synthkd.methods.task_kinds import KINDS, FieldNames, TaskKind, split_rationale
from synthkd.options import comma_list, opt, register_feature
from synthkd.reasoning import reasoning_tokens, trace_of
from synthkd.teachers.base import Teacher, TeacherRequest, TeacherResult
from synthkd.teachers.jobs import Job, stream_jobs
from synthkd.teachers.structured import answer_of
from synthkd.templates import PromptTemplate, TemplateError, load_template

RATIONALE_SOURCES: tuple[str, ...] = ("text", "reasoning", "both")
ANSWER_FORMATS: tuple[str, ...] = ("text", "json")


class RationaleAnswer(BaseModel):
    """``--answer-format json``: the rationale stays free text (what the student learns), the final answer
    gets a field of its own (read like a bare answer: a number, an option, a label)."""

    reasoning: str
    answer: str
NO_TRACE = "no reasoning trace: the teacher returned none; use --rationale-source text"

__all__ = ["RATIONALE_SOURCES", "Demo", "RationalePlan", "RationaleTally", "RationalesConfig", "generate_rationales", "load_labels",
           "plan_rationales"]

_WS = re.compile(r"\s+")


def _norm_query(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


@dataclass(frozen=True)
class Demo:
    """One demonstration: its id (for exclusion and provenance) and its template variables."""

    id: Any
    vars: dict[str, Any]
    norm_query: str


@dataclass
class RationalePlan:
    """A validated job: rows, task spec, template and demonstration pool.  Build with :func:`plan_rationales`."""

    rows: list[dict[str, Any]]
    spec: TaskKind
    template: PromptTemplate
    pool: list[Demo]
    n_demos: int = 4
    samples: int = 1
    temperature: float | None = None
    rationalize: bool = False
    seed: int = 0
    max_tokens: int | None = None
    chat: bool = True
    rationale_source: str = "text"
    answer_format: str = "text"
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._order = list(range(len(self.pool)))
        random.Random(self.seed).shuffle(self._order)

    # ------------------------------------------------------------------ prompts
    def demos_for(self, row: dict[str, Any]) -> list[Demo]:
        """The first ``n_demos`` of the seeded pool order that are not this row (same id or same question)."""
        if self.n_demos <= 0:
            return []
        rid, nq = row["id"], _norm_query(self.spec.query(row))
        out: list[Demo] = []
        for j in self._order:
            d = self.pool[j]
            if (d.id is not None and d.id == rid) or d.norm_query == nq:
                continue
            out.append(d)
            if len(out) == self.n_demos:
                break
        return out

    def prompt(self, row: dict[str, Any], demos: Sequence[Demo], hint: str | None = None) -> str:
        return self.template.render(
            **self.spec.variables(row), demos=[d.vars for d in demos], hint=hint, kind=self.spec.kind
        )

    def _request(self, key: str, prompt: str, sample: int, stage: str) -> TeacherRequest:
        params: dict[str, Any] = {}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        return TeacherRequest.user(key, prompt, chat=self.chat, params=params, sample_index=sample,
                                   meta={"stage": stage},
                                   schema=RationaleAnswer if self.answer_format == "json" else None)

    def first_job(self, row: dict[str, Any]) -> Job[Any]:
        demos = self.demos_for(row)
        prompt = self.prompt(row, demos)
        reqs = [self._request(f"{row['id']}#{s}", prompt, s, "sample") for s in range(self.samples)]
        return Job(("first", row, [d.id for d in demos]), reqs)

    def rationalize_job(self, row: dict[str, Any], out: dict[str, Any]) -> Job[Any]:
        """The STaR call: same demonstrations, the gold answer shown as ``hint``."""
        hint = self.spec.answer_text(self.spec.gold(row), row)
        prompt = self.prompt(row, self.demos_for(row), hint=hint)
        return Job(("rationalize", row, out), [self._request(f"{row['id']}#rationalize", prompt, 0, "rationalize")])

    # ------------------------------------------------------------------ answers
    def _rationale(self, res: TeacherResult) -> str:
        """The sample's rationale from the source chosen (see ``rationale_source``)."""
        trace = (trace_of(res) or "").strip()
        if self.rationale_source == "reasoning":
            return trace
        if res.structured:  # --answer-format json: the reasoning field is the free-text rationale
            text = res.parsed.reasoning.strip() if res.parsed is not None else ""
        else:
            text = split_rationale(res.text)
        if self.rationale_source == "both":
            return "\n\n".join(x for x in (trace, text) if x)
        return text

    def _missing_trace(self, results: Sequence[TeacherResult]) -> bool:
        """The rationale must come from a trace and some result has none."""
        return self.rationale_source != "text" and any(trace_of(r) is None for r in results)

    def _sample(self, res: TeacherResult, row: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        answer, invalid = answer_of(res, lambda p: p.answer, lambda text: text)
        ex = (ExtractedAnswer(None, None, invalid) if invalid is not None else self.spec.parse(answer, row))
        s: dict[str, Any] = {
            "sample_index": res.request.sample_index,
            "rationale": self._rationale(res),
            "answer": self.spec.to_json(ex.value, row),
            "answer_reason": ex.reason,
        }
        if ex.hedged:
            s["answer_alternatives"] = [self.spec.to_json(a, row) for a in ex.alternatives]
        s["text"] = res.text
        s["finish_reason"] = res.finish_reason
        trace = trace_of(res)
        if trace is not None:
            s["reasoning"] = trace
        return s, ex.value

    def _finish_first(self, job: Job[Any], model: str) -> tuple[dict[str, Any], Job[Any] | None]:
        _, row, demo_ids = job.item
        results: list[TeacherResult] = job.results  # type: ignore[assignment]
        errors = [r.error for r in results if not r.ok]
        if errors:
            return _reject(row, "teacher error: " + str(errors[0]), errors, "sample"), None
        if self._missing_trace(results):
            missing = [r.request.sample_index for r in results if trace_of(r) is None]
            return _reject(row, NO_TRACE, [f"sample {i}: no reasoning trace" for i in missing], "sample"), None
        spec = self.spec
        parsed = [self._sample(r, row) for r in results]
        samples = [s for s, _ in parsed]
        values = [v for _, v in parsed]
        clusters = _vote(values, spec.same)
        out: dict[str, Any] = {"id": row["id"], "kind": spec.kind, "input": spec.query(row)}
        if clusters:
            best_value, count, first = clusters[0]
            out["rationale"] = samples[first]["rationale"]
            if "reasoning" in samples[first]:
                out["reasoning"] = samples[first]["reasoning"]
            out["answer"] = spec.to_json(best_value, row)
            if spec.kind == "choice":
                out["answer_index"] = int(best_value)
            out["answer_reason"] = None
            agreement = count / len(samples)
        else:
            best_value = None
            reasons = Counter(s["answer_reason"] for s in samples)
            out["rationale"] = samples[0]["rationale"]
            if "reasoning" in samples[0]:
                out["reasoning"] = samples[0]["reasoning"]
            out["answer"] = None
            if spec.kind == "choice":
                out["answer_index"] = None
            out["answer_reason"] = reasons.most_common(1)[0][0]
            agreement = 0.0
        gold = spec.gold(row)
        if gold is not None:
            out["gold"] = spec.to_json(gold, row)
            out["correct"] = spec.same(best_value, gold)
        out["agreement"] = round(agreement, 6)
        out["votes"] = [{"answer": spec.to_json(v, row), "count": c} for v, c, _ in clusters]
        out["samples"] = samples
        out["demo_ids"] = demo_ids
        out.update(self.template.provenance())
        out["teacher"] = results[0].model or model
        _add_usage(out, results)
        out["source"] = row
        if self.rationalize and gold is not None and not out["correct"]:
            return out, self.rationalize_job(row, out)
        return out, None

    def _finish_rationalization(self, job: Job[Any]) -> dict[str, Any]:
        _, row, out = job.item
        res: TeacherResult = job.results[0]  # type: ignore[assignment]
        if not res.ok:
            return _reject(row, "teacher error (rationalization): " + str(res.error), [res.error], "rationalize")
        if self._missing_trace([res]):
            return _reject(row, NO_TRACE + " (rationalization)", ["rationalization: no reasoning trace"], "rationalize")
        s, value = self._sample(res, row)
        gold = self.spec.gold(row)
        reached = self.spec.same(value, gold)
        out = dict(out)
        out["rationalized"] = True
        out["first_attempt"] = {k: out.get(k) for k in ("rationale", "answer", "answer_reason")}
        if "reasoning" in out:
            out["first_attempt"]["reasoning"] = out["reasoning"]
        out["rationalization"] = {
            "rationale": s["rationale"], "answer": s["answer"], "answer_reason": s["answer_reason"],
            "reached_gold": reached, "text": s["text"], "finish_reason": s["finish_reason"],
        }
        if "reasoning" in s:
            out["rationalization"]["reasoning"] = s["reasoning"]
        if reached:
            out.pop("reasoning", None)
            if "reasoning" in s:
                out["reasoning"] = s["reasoning"]
            out["rationale"] = s["rationale"]
            out["answer"] = s["answer"]
            out["answer_reason"] = None
            if self.spec.kind == "choice":
                out["answer_index"] = int(value)
        _add_usage(out, [res])
        # keep "source" last for readability
        out["source"] = out.pop("source")
        return out

    # ------------------------------------------------------------------ driver
    async def run(self, teacher: Teacher, *, skip_ids: Container[Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Rows out as they complete (rationalized rows after their second call).

        One teacher stream carries everything: first-attempt jobs are fed from the input, and a
        rationalization job is fed back into the same stream as soon as its row's first attempt is
        judged wrong, so concurrency, rate limits, cache and budget cover both stages.
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()
        wake = object()
        state = {"outstanding": 0}
        todo = [r for r in self.rows if skip_ids is None or r["id"] not in skip_ids]

        async def jobs() -> AsyncIterator[Job[Any]]:
            for row in todo:
                while not queue.empty():  # finish started rows before starting new ones
                    item = queue.get_nowait()
                    if item is not wake:
                        yield item
                state["outstanding"] += 1
                yield self.first_job(row)
            while True:
                while not queue.empty():
                    item = queue.get_nowait()
                    if item is not wake:
                        yield item
                if state["outstanding"] == 0:
                    return
                item = await queue.get()
                if item is not wake:
                    yield item

        model = teacher.model
        async for job in stream_jobs(teacher, jobs()):
            if job.item[0] == "first":
                # parse first, then count the row done: while a long reply is parsed off the loop,
                # jobs() must still see it outstanding (its rationalization may be fed back)
                out, again = await parse_off_loop(_text_chars(job), self._finish_first, job, model)
                state["outstanding"] -= 1
                if again is not None:
                    queue.put_nowait(again)
                if state["outstanding"] == 0:
                    queue.put_nowait(wake)
                if again is None:
                    yield out
            else:
                yield await parse_off_loop(_text_chars(job), self._finish_rationalization, job)


def _text_chars(job: Job[Any]) -> int:
    """Characters of teacher text in a finished job (what parsing it costs; see parse_off_loop)."""
    return sum(len(r.text or "") for r in job.results if r is not None)


def _vote(values: Sequence[Any], same: Callable[[Any, Any], bool]) -> list[tuple[Any, int, int]]:
    """(value, count, first sample index) per distinct answer, most votes first (ties: earliest sample)."""
    clusters: list[list[Any]] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        for c in clusters:
            if same(c[0], v):
                c[1] += 1
                break
        else:
            clusters.append([v, 1, i])
    clusters.sort(key=lambda c: (-c[1], c[2]))
    return [(c[0], c[1], c[2]) for c in clusters]


def _add_usage(out: dict[str, Any], results: Sequence[TeacherResult]) -> None:
    prev = out.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0}
    pt = prev["prompt_tokens"] + sum(r.usage.prompt_tokens for r in results)
    ct = prev["completion_tokens"] + sum(r.usage.completion_tokens for r in results)
    out["usage"] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
    rt = prev.get("reasoning_tokens", 0) + reasoning_tokens(results)
    if rt:  # part of completion_tokens; only shown for a teacher that reasons
        out["usage"]["reasoning_tokens"] = rt
    costs = [r.cost_usd for r in results]
    prev_cost = out.get("cost_usd", 0.0)
    out["cost_usd"] = None if prev_cost is None or any(c is None for c in costs) else round(
        prev_cost + sum(costs), 10)  # type: ignore[arg-type]
    out["cached"] = out.get("cached", True) and all(r.cached for r in results)


def _reject(row: dict[str, Any], reason: str, errors: list[Any], stage: str) -> dict[str, Any]:
    return {"id": row["id"], "reject_reason": reason, "stage": stage, "errors": [str(e) for e in errors]}


# --------------------------------------------------------------------------------------------------
# planning (all validation happens here, before any teacher call)
# --------------------------------------------------------------------------------------------------


def plan_rationales(
    rows: Iterable[dict[str, Any]],
    *,
    kind: str | TaskKind,
    template: str | Path | PromptTemplate | None = None,
    demos: Iterable[dict[str, Any]] | None = None,
    n_demos: int = 4,
    samples: int = 1,
    temperature: float | None = None,
    rationalize: bool = False,
    labels: Sequence[str] | None = None,
    fields: FieldNames | None = None,
    seed: int = 0,
    max_tokens: int | None = None,
    chat: bool = True,
    rationale_source: str = "text",
    row_where: Callable[[int], str] | None = None,
    demo_where: Callable[[int], str] | None = None,
    answer_format: str = "text",
) -> RationalePlan:
    """Validate everything and return the plan; raises InputError / TemplateError / ValueError.

    ``demos``: demonstration rows (the task's fields + gold label + rationale field).  When ``None``
    the pool is the input rows that carry a non-empty rationale and a gold label.
    ``row_where(i)`` / ``demo_where(i)`` name the position of a bad row in errors (``file:line``).
    """
    problems: list[str] = []
    if samples < 1:
        problems.append("--samples must be at least 1")
    if samples > 1 and not (temperature is not None and temperature > 0):
        problems.append("--samples > 1 draws distinct samples: set --temperature above 0")
    if temperature is not None and temperature < 0:
        problems.append("--temperature must be >= 0")
    if n_demos < 0:
        problems.append("--n-demos must be >= 0")
    if max_tokens is not None and max_tokens < 1:
        problems.append("--max-tokens must be at least 1")
    if rationale_source not in RATIONALE_SOURCES:
        problems.append(f"--rationale-source must be one of {', '.join(RATIONALE_SOURCES)}, got {rationale_source!r}")
    if problems:
        raise ValueError("; ".join(problems))
    spec = kind if isinstance(kind, TaskKind) else TaskKind(kind, fields or FieldNames(), tuple(labels) if labels else None)
    tpl = template if isinstance(template, PromptTemplate) else load_template(template or f"rationale/cot_{spec.kind}")
    tpl.check(spec.template_variables(), where=f"kind {spec.kind!r}")
    if rationalize and "hint" not in tpl.variables:
        raise TemplateError(
            f"template {tpl.name!r} does not use the variable 'hint': --rationalize shows the gold answer "
            "as {{ hint }} (see prompts/rationale/cot_math.j2)"
        )

    row_where = row_where or (lambda i: f"rows[{i}]")
    demo_where = demo_where or (lambda i: f"demos[{i}]")
    row_list = list(rows)
    seen: dict[Any, str] = {}
    for i, row in enumerate(row_list):
        for p in spec.check_row(row):
            problems.append(f"{row_where(i)}: {p}")
        if isinstance(row, dict) and isinstance(row.get("id"), (str, int)):
            key = (type(row["id"]).__name__, row["id"])
            if key in seen:
                problems.append(f"{row_where(i)}: field 'id': duplicate id {row['id']!r} (first at {seen[key]})")
            else:
                seen[key] = row_where(i)
        if len(problems) >= MAX_REPORTED_ERRORS:
            break
    if not row_list:
        problems.append("no input rows (the input is empty)")
    if answer_format not in ANSWER_FORMATS:
        problems.append(f"--answer-format must be one of {', '.join(ANSWER_FORMATS)}, got {answer_format!r}")
    if answer_format == "json" and not chat:
        problems.append("--answer-format json needs chat requests (not --completion-api)")
    if problems:
        raise InputError(problems)

    pool: list[Demo] = []
    rat_field = spec.fields.rationale
    if demos is not None:
        for i, d in enumerate(demos):
            if isinstance(d, dict) and "id" not in d:
                d = {"id": f"demo-{i}", **d}
            found = spec.check_row(d)
            if not found:
                if spec.gold(d) is None:
                    found.append(f"field '{spec.fields.label}': missing (a demonstration needs its answer)")
                if not isinstance(d.get(rat_field), str) or not d[rat_field].strip():
                    found.append(f"field '{rat_field}': missing or empty (a demonstration needs its rationale)")
            problems += [f"{demo_where(i)}: {p}" for p in found]
            if not found:
                pool.append(_demo(spec, d))
            if len(problems) >= MAX_REPORTED_ERRORS:
                break
        if problems:
            raise InputError(problems)
        if not pool and n_demos > 0:
            raise InputError(["the demonstrations file has no rows"])
    else:
        for row in row_list:
            rat = row.get(rat_field)
            if isinstance(rat, str) and rat.strip() and spec.gold(row) is not None:
                pool.append(_demo(spec, row))
    if n_demos > 0 and len(pool) < n_demos:
        raise InputError([
            f"{len(pool)} demonstration(s) available, --n-demos {n_demos} asks for more: give --demos FILE "
            f"(rows with the task fields, '{spec.fields.label}' and '{rat_field}'), add '{rat_field}' to "
            "labelled input rows, or lower --n-demos (0 = zero-shot)"
        ])
    plan = RationalePlan(
        rows=row_list, spec=spec, template=tpl, pool=pool, n_demos=n_demos, samples=samples,
        temperature=temperature, rationalize=rationalize, seed=seed, max_tokens=max_tokens, chat=chat,
        rationale_source=rationale_source, answer_format=answer_format,
    )
    # render one prompt (and its rationalization variant) now: a template error costs nothing here
    first = row_list[0]
    plan.prompt(first, plan.demos_for(first))
    if rationalize:
        plan.prompt(first, plan.demos_for(first), hint="x")
    return plan


def _demo(spec: TaskKind, row: dict[str, Any]) -> Demo:
    v = spec.variables(row)
    v["rationale"] = split_rationale(row[spec.fields.rationale]) or row[spec.fields.rationale].strip()
    v["answer"] = spec.answer_text(spec.gold(row), row)
    v["id"] = row.get("id")
    return Demo(id=row.get("id"), vars=v, norm_query=_norm_query(v["query"]))


def load_labels(labels: str | Sequence[str] | None, labels_file: Path | None) -> list[str] | None:
    """``--labels a,b,c`` (or a list) or ``--labels-file`` (a JSON list, or one label per line)."""
    if labels and labels_file:
        raise InputError(["give --labels or --labels-file, not both"])
    if labels:
        return comma_list(labels) if isinstance(labels, str) else list(labels)
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


@dataclass(kw_only=True)
class RationalesConfig:
    """The options of step-by-step rationales, declared once: ``synthkd generate rationales``, the
    pipeline stage ``generate.rationales`` and the Python API (:meth:`plan`) are built from them."""

    input: Optional[Path] = opt(None, help="Rows with 'id' and the task's fields (jsonl, csv, parquet, a datasets directory, hf:org/name:split).", flags=("-i",), stage=False)
    output: Optional[Path] = opt(None, help="jsonl output (one row per input id); rerun to resume.", flags=("-o",),
                                 stage=False)
    kind: str = opt(help="Task kind: math | choice | nli | classification.", choices=KINDS)
    template: Optional[str] = opt(None, help="Template name or .j2 file (default rationale/cot_<kind>).")
    demos: Optional[Path] = opt(None, help="jsonl demonstrations: task fields + gold label + rationale (default: "
                                "labelled input rows that carry a rationale).")
    n_demos: int = opt(4, help="Demonstrations per prompt (0 = zero-shot).", ge=0)
    seed: int = opt(0, help="Seed of the demonstration order.")
    samples: int = opt(1, help="Rationales per row (self-consistency; needs --temperature > 0).", ge=1)
    temperature: Optional[float] = opt(None, help="Sampling temperature.", ge=0)
    max_tokens: Optional[int] = opt(None, help="max_tokens per request.", ge=1)
    rationalize: bool = opt(False, help="Wrong labelled rows get a second call with the gold answer as a hint (STaR).")
    completion_api: bool = opt(False, help="Send plain prompts (/completions) instead of chat messages.")
    answer_format: str = opt("text", help="text: the answer is read from the rationale's last sentence; json: "
                             "structured outputs where the teacher takes them, {reasoning: free text (the "
                             "rationale), answer: the final answer} (see README, Structured outputs).",
                             choices=ANSWER_FORMATS)
    rationale_source: str = opt("text", help="Where the rationale comes from: text (parsed out of the answer text), "
                                "reasoning (the reasoning teacher's trace; the answer is still read from the "
                                "text; a row without a trace is rejected) or both (trace, then the text's "
                                "rationale).", choices=RATIONALE_SOURCES)
    input_field: str = opt("question", help="Field with the question / input text.")
    label_field: str = opt("answer", help="Field with the gold answer (optional per row).")
    choices_field: str = opt("choices", help="Field with the list of options (choice).")
    premise_field: str = opt("premise", help="Premise field (nli).")
    hypothesis_field: str = opt("hypothesis", help="Hypothesis field (nli).")
    rationale_field: str = opt("rationale", help="Rationale field of demonstrations.")
    labels: Optional[list[str]] = opt(None, help="Label set, comma-separated (classification; nli default "
                                      "entailment,neutral,contradiction).", cli_type=Optional[str],
                                      cli_parse=comma_list)
    labels_file: Optional[Path] = opt(None, help="Label set file: JSON list or one label per line.")

    def fields(self) -> FieldNames:
        return FieldNames(input=self.input_field, label=self.label_field, choices=self.choices_field,
                          premise=self.premise_field, hypothesis=self.hypothesis_field,
                          rationale=self.rationale_field)

    def plan(self, rows: Iterable[dict[str, Any]], *, demos: Iterable[dict[str, Any]] | None = None,
             row_where: Callable[[int], str] | None = None,
             demo_where: Callable[[int], str] | None = None) -> RationalePlan:
        """:func:`plan_rationales` with these options (``demos``: the rows of :attr:`demos`, read by the caller)."""
        return plan_rationales(
            rows, kind=self.kind, template=self.template, demos=demos, n_demos=self.n_demos, samples=self.samples,
            temperature=self.temperature, rationalize=self.rationalize,
            labels=load_labels(self.labels, self.labels_file), fields=self.fields(), seed=self.seed,
            max_tokens=self.max_tokens, chat=not self.completion_api, rationale_source=self.rationale_source,
            row_where=row_where, demo_where=demo_where, answer_format=self.answer_format,
        )


register_feature("generate.rationales", RationalesConfig, command=("generate", "rationales"),
                 stage="generate.rationales")


async def generate_rationales(
    rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]],
    teacher: Teacher,
    *,
    kind: str | TaskKind,
    template: str | Path | PromptTemplate | None = None,
    demos: Iterable[dict[str, Any]] | None = None,
    n_demos: int = 4,
    samples: int = 1,
    temperature: float | None = None,
    rationalize: bool = False,
    labels: Sequence[str] | None = None,
    fields: FieldNames | None = None,
    seed: int = 0,
    max_tokens: int | None = None,
    chat: bool = True,
    rationale_source: str = "text",
    skip_ids: Container[Any] | None = None,
    answer_format: str = "text",
) -> AsyncIterator[dict[str, Any]]:
    """Rows in, rationale rows out as they complete (see the module docstring for the row format).

    The input is read whole and validated before the first request (the demonstration pool may
    come from it).  ``skip_ids``: ids not to generate (already in the output on a resume).
    """
    if hasattr(rows, "__aiter__"):
        row_list = [r async for r in rows]  # type: ignore[union-attr]
    else:
        row_list = list(rows)  # type: ignore[arg-type]
    plan = plan_rationales(
        row_list, kind=kind, template=template, demos=demos, n_demos=n_demos, samples=samples,
        temperature=temperature, rationalize=rationalize, labels=labels, fields=fields, seed=seed,
        max_tokens=max_tokens, chat=chat, rationale_source=rationale_source, answer_format=answer_format,
    )
    async for out in plan.run(teacher, skip_ids=skip_ids):
        yield out


# --------------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------------


@dataclass
class RationaleTally:
    """What a run produced, for the command's summary line (teacher's own first attempts)."""

    rows: int = 0
    answered: int = 0
    null_reasons: Counter = field(default_factory=Counter)
    labelled: int = 0
    correct: int = 0
    agreement_sum: float = 0.0
    rationalized: int = 0
    rationalized_reached: int = 0
    cached_rows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    samples: int = 1

    def add(self, row: dict[str, Any]) -> None:
        if "reject_reason" in row:
            return
        self.rows += 1
        first = row.get("first_attempt") or row
        if first.get("answer") is not None:
            self.answered += 1
        else:
            self.null_reasons[first.get("answer_reason") or "unknown"] += 1
        if "gold" in row:
            self.labelled += 1
            self.correct += bool(row.get("correct"))
        self.agreement_sum += float(row.get("agreement") or 0.0)
        if row.get("rationalized"):
            self.rationalized += 1
            self.rationalized_reached += bool(row["rationalization"]["reached_gold"])
        self.cached_rows += bool(row.get("cached"))
        u = row.get("usage") or {}
        self.prompt_tokens += u.get("prompt_tokens", 0)
        self.completion_tokens += u.get("completion_tokens", 0)
        c = row.get("cost_usd")
        self.cost_usd = None if c is None or self.cost_usd is None else self.cost_usd + c

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "answered": self.answered, "null_answers": sum(self.null_reasons.values()),
            "null_answer_reasons": dict(self.null_reasons), "labelled": self.labelled, "correct": self.correct,
            "accuracy": None if self.accuracy is None else round(self.accuracy, 6),
            "mean_agreement": round(self.agreement_sum / self.rows, 6) if self.rows and self.samples > 1 else None,
            "rationalized": self.rationalized, "rationalized_reached_gold": self.rationalized_reached,
            "rows_from_cache": self.cached_rows, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }

    def line(self) -> str:
        nulls = sum(self.null_reasons.values())
        parts = [f"answered {self.answered}"]
        parts.append(f"null answers {nulls}" + (
            " (" + ", ".join(f"{r}: {n}" for r, n in self.null_reasons.most_common()) + ")" if nulls else ""))
        if self.labelled:
            parts.append(f"accuracy vs gold {self.accuracy:.4f} ({self.correct}/{self.labelled})")
        if self.samples > 1 and self.rows:
            parts.append(f"self-consistency agreement {self.agreement_sum / self.rows:.3f} (k={self.samples})")
        if self.rationalized:
            parts.append(f"rationalized {self.rationalized} (reached gold {self.rationalized_reached})")
        parts.append(f"tokens {self.prompt_tokens} in / {self.completion_tokens} out")
        parts.append("cost unknown" if self.cost_usd is None else f"cost ${self.cost_usd:.6f}")
        return "; ".join(parts)
