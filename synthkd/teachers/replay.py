"""A Teacher that answers from recorded outputs, so a pipeline can run on a published teacher's real
completions (e.g. the PaLM-540B rationales of Distilling step-by-step) without any API.

Recorded data is a jsonl of ``{"question": ..., "completion": ...}`` (or ``"completions": [...]`` for
several samples).  A recorded reasoning teacher adds ``"reasoning"`` (the trace beside the answer; or
``"reasonings": [...]``, one per completion, null where a sample has none) and optionally
``"reasoning_tokens"`` (an int, or a list, one per completion; default: the trace's words): they come
back as ``TeacherResult.reasoning`` and ``usage.reasoning_tokens`` (part of ``completion_tokens``), so a
reasoning teacher (DeepSeek-R1, Qwen3...) can be replayed offline.  A request is matched by finding a recorded question *inside* the rendered prompt —
the rightmost one, because few-shot prompts show demonstrations first and the target question last.
An unmatched prompt is a clear error, never an empty answer.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterable

from synthkd.jsonl_io import InputError, iter_jsonl
from synthkd.teachers.base import Teacher, TeacherCapabilities, TeacherFatalError, TeacherRequest, TeacherResult, Usage
from synthkd.teachers.pricing import Price

_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


@dataclass(frozen=True)
class Recorded:
    """One recorded sample: the answer text and, for a reasoning teacher, its trace and trace tokens."""

    text: str
    reasoning: str | None = None
    reasoning_tokens: int | None = None  # None: the trace's words


class ReplayTeacher(Teacher):
    """Recorded question -> completion(s), matched inside each prompt.

    Costs nothing (price 0) and calls no model: ``stats`` counts each request as one attempt, its
    tokens as the whitespace-separated words of prompt and answer (what its results report; a
    recorded trace's tokens are added to the completion tokens, as an API bills them).
    """

    # a recording may carry traces (``reasoning``): they are returned apart from the answer
    capabilities = TeacherCapabilities(n_samples=False, json_schema=False, batch=False, reasoning_trace=True)
    calls_model = False

    def __init__(
        self,
        records: list[tuple[str, list[str]]] | list[tuple[str, list[Recorded]]],
        *,
        name: str = "replay",
        question_field: str = "question",
        strict: bool = True,
    ) -> None:
        if not records:
            raise InputError([f"{name}: no recorded outputs"])
        super().__init__(name, price=Price(0.0, 0.0))
        self.strict = strict
        self._by_question: dict[str, list[Recorded]] = {}
        for q, comps in records:
            self._by_question.setdefault(
                _norm(q), [c if isinstance(c, Recorded) else Recorded(c) for c in comps])
        self._k = max(1, min(32, min(len(q) for q in self._by_question)))
        self._by_prefix: dict[str, list[str]] = {}
        for q in self._by_question:
            self._by_prefix.setdefault(q[: self._k], []).append(q)

    @classmethod
    def from_jsonl(
        cls, path: str | Path, *, question_field: str = "question", completion_field: str = "completion",
        strict: bool = True,
    ) -> "ReplayTeacher":
        path = Path(path)
        if not path.exists():
            raise InputError([f"{path}: recorded outputs file not found"])
        records: list[tuple[str, list[Recorded]]] = []
        for lineno, row in iter_jsonl(path):
            if not isinstance(row, dict) or not isinstance(row.get(question_field), str):
                raise InputError([f"{path}:{lineno}: field '{question_field}': missing or not a string"])
            comps = row.get(completion_field + "s")
            if comps is None:
                comp = row.get(completion_field)
                if not isinstance(comp, str):
                    raise InputError([f"{path}:{lineno}: field '{completion_field}': missing or not a string"])
                comps = [comp]
            records.append((row[question_field], _recorded(row, list(comps), f"{path}:{lineno}")))
        return cls(records, name=f"replay:{path.name}", strict=strict)

    def match(self, prompt: str) -> list[str] | None:
        """Completion texts of the rightmost recorded question found in ``prompt``."""
        found = self.match_recorded(prompt)
        return None if found is None else [c.text for c in found]

    def match_recorded(self, prompt: str) -> list[Recorded] | None:
        """Completions of the rightmost recorded question found in ``prompt``."""
        text = _norm(prompt)
        k = self._k
        best_end, best = -1, None
        for i in range(0, max(0, len(text) - k + 1)):
            cands = self._by_prefix.get(text[i : i + k])
            if not cands:
                continue
            for q in cands:
                if text.startswith(q, i) and i + len(q) >= best_end:
                    # prefer the rightmost end; on ties the longer question
                    if i + len(q) > best_end or best is None or len(q) > len(best[0]):
                        best_end, best = i + len(q), (q, self._by_question[q])
        return best[1] if best else None

    async def stream(self, requests: AsyncIterable[TeacherRequest]) -> AsyncGenerator[TeacherResult, None]:
        st = self.stats
        async for req in requests:
            st.attempts += 1
            if st.first_request_at is None:
                st.first_request_at = time.monotonic()
            prompt = req.prompt if req.prompt is not None else _messages_text(req.messages or [])
            comps = self.match_recorded(prompt)
            st.done += 1
            st.last_result_at = time.monotonic()
            if comps is None or req.sample_index >= len(comps):
                msg = (f"replay: no recorded output matches this prompt: {prompt[-160:]!r}" if comps is None else
                       f"replay: sample {req.sample_index} asked, only {len(comps)} recorded for this question")
                st.failed += 1
                if self.strict:
                    raise TeacherFatalError(msg)
                yield TeacherResult(request=req, text=None, error=msg, model=self.model)
                continue
            rec = comps[req.sample_index]
            text = rec.text
            trace_tokens = (rec.reasoning_tokens if rec.reasoning_tokens is not None
                            else len((rec.reasoning or "").split()))
            usage = Usage(len(prompt.split()), len(text.split()) + trace_tokens, reasoning_tokens=trace_tokens)
            st.prompt_tokens += usage.prompt_tokens
            st.completion_tokens += usage.completion_tokens
            yield TeacherResult(
                request=req, text=text, finish_reason="stop", usage=usage, cost_usd=0.0, model=self.model,
                reasoning=rec.reasoning,
            )

    async def aclose(self) -> None:
        return None


def _recorded(row: dict[str, Any], comps: list[Any], where: str) -> list[Recorded]:
    """A recorded row's samples with their optional traces (``reasoning``/``reasonings``) and trace
    tokens (``reasoning_tokens``: an int, or a list per sample)."""
    n = len(comps)
    traces: Any = row.get("reasonings")
    if traces is None:
        traces = [row.get("reasoning")] * n if n == 1 or "reasoning" not in row else None
        if traces is None:
            raise InputError([f"{where}: field 'reasoning': one trace for {n} completions; give 'reasonings', "
                              "a list with one trace (or null) per completion"])
    if not isinstance(traces, list) or len(traces) != n or not all(t is None or isinstance(t, str) for t in traces):
        raise InputError([f"{where}: field 'reasonings': must be a list of {n} strings or nulls, one per completion"])
    toks: Any = row.get("reasoning_tokens")
    if toks is None or isinstance(toks, int):
        toks = [toks] * n
    if (not isinstance(toks, list) or len(toks) != n
            or not all(t is None or (isinstance(t, int) and not isinstance(t, bool) and t >= 0) for t in toks)):
        raise InputError([f"{where}: field 'reasoning_tokens': must be a count (>= 0) or a list of {n} counts"])
    return [Recorded(c, t or None, k) for c, t, k in zip(comps, traces, toks)]


def _messages_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
