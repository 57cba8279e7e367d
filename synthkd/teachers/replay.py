"""A Teacher that answers from recorded outputs, so a pipeline can run on a published teacher's real
completions (e.g. the PaLM-540B rationales of Distilling step-by-step) without any API.

Recorded data is a jsonl of ``{"question": ..., "completion": ...}`` (or ``"completions": [...]`` for
several samples).  A request is matched by finding a recorded question *inside* the rendered prompt —
the rightmost one, because few-shot prompts show demonstrations first and the target question last.
An unmatched prompt is a clear error, never an empty answer.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterable

from synthkd.jsonl_io import InputError, iter_jsonl
from synthkd.teachers.base import Teacher, TeacherCapabilities, TeacherFatalError, TeacherRequest, TeacherResult, Usage
from synthkd.teachers.pricing import Price

_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


class ReplayTeacher(Teacher):
    """Recorded question -> completion(s), matched inside each prompt.

    Costs nothing (price 0) and calls no model: ``stats`` counts each request as one attempt, its
    tokens as the whitespace-separated words of prompt and answer (what its results report).
    """

    capabilities = TeacherCapabilities(n_samples=False, json_schema=False, batch=False, reasoning_trace=False)
    calls_model = False

    def __init__(
        self,
        records: list[tuple[str, list[str]]],
        *,
        name: str = "replay",
        question_field: str = "question",
        strict: bool = True,
    ) -> None:
        if not records:
            raise InputError([f"{name}: no recorded outputs"])
        super().__init__(name, price=Price(0.0, 0.0))
        self.strict = strict
        self._by_question: dict[str, list[str]] = {}
        for q, comps in records:
            self._by_question.setdefault(_norm(q), comps)
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
        records: list[tuple[str, list[str]]] = []
        for lineno, row in iter_jsonl(path):
            if not isinstance(row, dict) or not isinstance(row.get(question_field), str):
                raise InputError([f"{path}:{lineno}: field '{question_field}': missing or not a string"])
            comps = row.get(completion_field + "s")
            if comps is None:
                comp = row.get(completion_field)
                if not isinstance(comp, str):
                    raise InputError([f"{path}:{lineno}: field '{completion_field}': missing or not a string"])
                comps = [comp]
            records.append((row[question_field], list(comps)))
        return cls(records, name=f"replay:{path.name}", strict=strict)

    def match(self, prompt: str) -> list[str] | None:
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
            comps = self.match(prompt)
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
            text = comps[req.sample_index]
            usage = Usage(len(prompt.split()), len(text.split()))
            st.prompt_tokens += usage.prompt_tokens
            st.completion_tokens += usage.completion_tokens
            yield TeacherResult(
                request=req, text=text, finish_reason="stop", usage=usage, cost_usd=0.0, model=self.model,
            )

    async def aclose(self) -> None:
        return None


def _messages_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
