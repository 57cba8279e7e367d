"""Judge: the teacher scores each row from 1 to 10 with a rubric template; keep rows scoring at least
``threshold``, or the ``top_fraction`` best.

The prompt is ``prompts/judge/score.j2`` (variables ``input``, ``output``, ``rubric``, ``row``), or
any template given by name or path.  The score is read from the answer's *last* "Score: N" (also
"score of N", "N/10", "N out of 10", "Rating: N", or a bare number): judges often restate the scale
("on a 1-10 scale…") before their verdict.  Scores outside 1–10 count as unreadable
(:func:`synthkd.scores.parse_score`).

``top_fraction`` needs every score before any row can be kept: rows are parked on disk while their
scores come in (memory holds only position → score), then a second pass keeps the best
``ceil(fraction × scored rows)`` (ties: the earlier row).  Rows whose score could not be read are
dropped (``on_unparsed: drop``) or kept unscored (``keep``); a teacher error always drops the row
(rerun to retry it: paid answers come back from the cache).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Literal

from pydantic import Field, model_validator

from synthkd.filters.base import OpConfig, Operator, Outcome, Reject
from synthkd.filters.teacher_ops import InOrder
from synthkd.filters.text import FieldProblem
from synthkd.scores import JudgeScore, parse_score
from synthkd.teachers.structured import answer_of

if TYPE_CHECKING:
    from synthkd.templates import PromptTemplate


class JudgeConfig(OpConfig):
    op: str = "judge"
    output_field: str = Field("completion", description="The response judged.")
    input_field: str | None = Field("input", description="The instruction/input shown with it (skipped when a row lacks it).")
    template: str = Field("judge/score", description="Prompt template (name under prompts/ or a path).")
    rubric: str | None = Field(None, description="Rubric text (replaces the template's default rubric).")
    rubric_file: Path | None = Field(None, description="Read the rubric from this file.")
    threshold: float | None = Field(None, ge=1, le=10, description="Keep rows scoring at least this (default 7 unless top_fraction).")
    top_fraction: float | None = Field(None, gt=0, le=1, description="Keep this fraction of the best-scored rows instead.")
    samples: int = Field(1, ge=1, le=16, description="Judge calls per row (needs temperature > 0 when above 1).")
    aggregate: Literal["mean", "median", "min"] = Field("mean", description="How several samples' scores combine.")
    temperature: float | None = Field(None, ge=0, description="Judge sampling temperature.")
    max_tokens: int = Field(256, ge=1, description="Judge answer length.")
    on_unparsed: Literal["drop", "keep"] = Field("drop", description="A row whose score cannot be read: drop it or keep it unscored.")

    @model_validator(mode="after")
    def _mode(self) -> "JudgeConfig":
        if self.threshold is not None and self.top_fraction is not None:
            raise ValueError("give threshold or top_fraction, not both")
        if self.threshold is None and self.top_fraction is None:
            self.threshold = 7.0
        if self.samples > 1 and not (self.temperature and self.temperature > 0):
            raise ValueError("samples > 1 needs temperature > 0 (otherwise every sample is the same answer)")
        if self.rubric is not None and self.rubric_file is not None:
            raise ValueError("give rubric or rubric_file, not both")
        return self


class Judge(Operator):
    op = "judge"
    Config = JudgeConfig
    uses_teacher = True
    summary = "The teacher scores each row 1-10 with a rubric; keep rows at or above a threshold, or the top fraction."

    def __init__(self, config: JudgeConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.hist: Counter = Counter()
        self.unparsed = 0
        self.cost = 0.0
        self.cost_known = True
        self.cached = 0
        self.calls = 0
        self.cutoff: float | None = None
        self.template: PromptTemplate | None = None  # loaded in setup()
        self.rubric = config.rubric or ""

    def needs(self) -> list[tuple[str, ...]]:
        return [(self.cfg.output_field,)]

    async def setup(self) -> None:
        from synthkd.jsonl_io import InputError
        from synthkd.templates import load_template

        self.template = load_template(self.cfg.template)
        self.template.check({"input", "output", "rubric", "row"}, where=f"operator {self.label!r}")
        if self.cfg.rubric_file is not None:
            if not self.cfg.rubric_file.is_file():
                raise InputError([f"{self.cfg.rubric_file}: rubric file not found"])
            self.rubric = self.cfg.rubric_file.read_text(encoding="utf-8").strip()

    def _requests(self, row: dict[str, Any]) -> list:
        from synthkd.teachers.base import TeacherRequest

        c = self.cfg
        output = self.text(row, c.output_field)
        inp = ""
        if c.input_field and row.get(c.input_field) is not None:
            inp = self.text(row, c.input_field)
        assert self.template is not None
        prompt = self.template.render(input=inp, output=output, rubric=self.rubric, row=row)
        params: dict[str, Any] = {"max_tokens": c.max_tokens}
        if c.temperature is not None:
            params["temperature"] = c.temperature
        reqs = []
        for s in range(c.samples):
            # the same params for every sample: k samples go as one request with n=k (prompt billed once)
            reqs.append(TeacherRequest(key=f"judge:{self.row_id(row)}#{s}", messages=[{"role": "user", "content": prompt}],
                                       params=dict(params), sample_index=s, schema=JudgeScore))
        return reqs

    def _score(self, results: list) -> tuple[float | None, list[float], Reject | None]:
        """(aggregate score, sample scores, reject when it cannot be scored)."""
        scores: list[float] = []
        why = None
        for res in results:
            for paid in (*res.reasks, res):  # the invalid structured answers re-asked were paid too
                self.calls += 1
                self.cached += bool(paid.cached)
                if paid.cost_usd is None:
                    self.cost_known = False
                else:
                    self.cost += paid.cost_usd
            if not res.ok:
                return None, [], Reject("teacher error", str(res.error)[:200])
            got, invalid = answer_of(res, lambda p: (float(p.score), None), parse_score)
            v, w = got if invalid is None else (None, invalid)
            if v is None:
                why = f"{w}: {(res.text or '').strip()[:120]!r}"
            else:
                scores.append(v)
        if not scores:
            self.unparsed += 1
            return None, [], (Reject("unparsed score", why) if self.cfg.on_unparsed == "drop" else None)
        aggregate: dict[str, Callable[[list[float]], float]] = {
            "mean": statistics.fmean, "median": statistics.median, "min": min}
        agg = aggregate[self.cfg.aggregate](scores)
        self.hist[int(round(agg))] += 1
        return round(agg, 3), scores, None

    def _annotate(self, row: dict[str, Any], score: float | None, scores: list[float]) -> None:
        assert self.template is not None
        row["judge"] = {"score": score, **({"scores": scores} if len(scores) > 1 else {}), **self.template.provenance()}

    async def run(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        if self.cfg.top_fraction is not None:
            async for x in self._run_top(rows):
                yield x
            return
        from synthkd.teachers.jobs import Job, stream_jobs

        order = InOrder()
        thr = self.cfg.threshold

        async def jobs():
            async for row in rows:
                pos = order.take()
                try:
                    reqs = self._requests(row)
                except FieldProblem as exc:
                    order.put(pos, row, self.field_problem(row, exc))
                    continue
                yield Job((pos, row), reqs)

        async for job in stream_jobs(self.ctx.teacher, jobs()):
            pos, row = job.item
            score, scores, rej = self._score(job.results)
            if rej is None:
                self._annotate(row, score, scores)
                if score is not None and score < thr:  # type: ignore[operator]
                    rej = Reject("below threshold", f"score {score:g} < {thr:g}")
            order.put(pos, row, rej)
            for x in order.ready():
                yield x
        for x in order.ready():
            yield x
        # every row came back, except in a batch-mode pass: rows waiting for a batch come in the next pass
        t = self.ctx.teacher
        assert order.finished() or (t is not None and t.batch is not None and t.batch.deferred)

    async def _run_top(self, rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Outcome]:
        from synthkd.filters.spill import Spill
        from synthkd.teachers.jobs import Job, stream_jobs

        spill = Spill(self.ctx.workdir, "judge")
        got: dict[int, tuple[float | None, list[float]]] = {}
        bad: dict[int, Reject] = {}
        try:
            async def jobs():
                async for row in rows:
                    pos = spill.write(row)
                    try:
                        reqs = self._requests(row)
                    except FieldProblem as exc:
                        bad[pos] = self.field_problem(row, exc)
                        continue
                    yield Job(pos, reqs)

            async for job in stream_jobs(self.ctx.teacher, jobs()):
                score, scores, rej = self._score(job.results)
                if rej is not None:
                    bad[job.item] = rej
                else:
                    got[job.item] = (score, scores)
            scored = sorted((p for p, (s, _) in got.items() if s is not None), key=lambda p: (-got[p][0], p))  # type: ignore[operator]
            k = math.ceil(self.cfg.top_fraction * len(scored))  # type: ignore[operator]
            keep = set(scored[:k])
            self.cutoff = got[scored[k - 1]][0] if k else None
            for pos, row in enumerate(spill.read()):
                if pos in bad:
                    yield row, bad[pos]
                    continue
                score, scores = got[pos]
                self._annotate(row, score, scores)
                if score is None or pos in keep:
                    yield row, None
                else:
                    yield row, Reject("below top fraction", f"score {score:g}; kept the top {self.cfg.top_fraction:.0%} "
                                                            f"(cut-off {self.cutoff:g})")
        finally:
            spill.close()

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score_histogram": {str(k): v for k, v in sorted(self.hist.items())},
                               "unparsed": self.unparsed, "calls": self.calls, "cached_calls": self.cached,
                               "cost_usd": round(self.cost, 6) if self.cost_known else None}
        if self.cfg.top_fraction is not None:
            out["top_fraction"] = self.cfg.top_fraction
            out["cutoff_score"] = self.cutoff
        else:
            out["threshold"] = self.cfg.threshold
        if self.template is not None:
            out.update(self.template.provenance())
        return out

    def report_markdown(self) -> str:
        if not self.hist and not self.unparsed:
            return ""
        total = sum(self.hist.values())
        lines = ["| score | rows |", "|---:|---:|"] + [f"| {k} | {v:,} |" for k, v in sorted(self.hist.items())]
        mode = (f"threshold {self.cfg.threshold:g}" if self.cfg.top_fraction is None
                else f"top {self.cfg.top_fraction:.0%} (cut-off score {self.cutoff})")
        cost = f"${self.cost:.4f}" if self.cost_known else "unknown"
        lines.append(f"\n{total:,} rows scored, {self.unparsed:,} unreadable; {mode}; {self.calls:,} calls "
                     f"({self.cached:,} from cache), cost {cost}.")
        return "\n".join(lines)
