"""A local transformers model as a Teacher (``--teacher local:PATH``), with batched generation.

Why: any local causal LM can then be the teacher of any generation method, and a student trained by
``synthkd train`` can answer in the tailored loop, all through the same ``Teacher.stream`` contract
as the API teachers (results stream back as they are done, failures carry ``error``).

How it batches: a reader task pulls requests into a queue while the model is busy; each round takes
what is waiting (up to ``batch_size``), groups it by sampling parameters, and generates each group
in one left-padded ``generate`` call in a worker thread, so the event loop keeps feeding requests.

Request mapping: ``messages`` are rendered with the model's chat template (or the plain format of
``synthkd.train.student`` when it has none), with a synthkd-trained student's inference prefix
(``predict: ``) put before the last user message; a plain ``prompt`` is used as raw text (tokenized with
the tokenizer's usual special tokens, never through the chat template).
Params: ``max_tokens`` (default 256), ``temperature`` (default 0: greedy), ``top_p``, ``stop``,
``seed``.  With sampling, each batch is seeded from ``seed`` and the batch's request keys, so a rerun
with the same batching reproduces its samples.  Cost is 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, AsyncGenerator, AsyncIterable

from synthkd.teachers.base import (
    Teacher,
    TeacherCapabilities,
    TeacherConfigError,
    TeacherRequest,
    TeacherResult,
    Usage,
)
from synthkd.teachers.pricing import Price
from synthkd.teachers.replies import split_think, truncated_message

DEFAULT_MAX_TOKENS = 256
_DONE = object()


class LocalTeacher(Teacher):
    """Teacher backed by a local (or Hub) causal LM loaded with ``synthkd.train.student.load_student``.

    Capabilities: each sample is its own request (no ``n``), free text only, no batch jobs (it batches
    live requests itself), no reasoning trace.  Costs nothing (price 0).
    """

    capabilities = TeacherCapabilities(n_samples=False, json_schema=False, batch=False, reasoning_trace=True)

    def __init__(
        self,
        path: str,
        default_params: dict[str, Any] | None = None,
        *,
        batch_size: int = 16,
        device: str | None = None,
        bf16: bool | None = None,
        trust_remote_code: bool = False,
        apply_task_prefix: bool = True,
        student: Any = None,
    ) -> None:
        if student is None:
            from synthkd.jsonl_io import InputError

            try:
                from synthkd.train.student import load_student

                student = load_student(path, bf16=bf16, device=device, trust_remote_code=trust_remote_code)
            except InputError as exc:
                raise TeacherConfigError(f"local teacher {path!r}: {exc}") from None
            except ImportError as exc:  # torch/transformers missing: a setup problem, one line, exit 2
                raise TeacherConfigError(f"local teacher {path!r} needs the training extra ({exc}): "
                                         "pip install torch==2.13.0 'synthkd[train]'") from None
        super().__init__(f"local:{path}", price=Price(0.0, 0.0))
        self.student = student
        self.default_params = dict(default_params or {})
        self.batch_size = max(1, int(batch_size))
        self.apply_task_prefix = apply_task_prefix
        self.batches = 0

    @classmethod
    def from_student(cls, student: Any, default_params: dict[str, Any] | None = None, **kw: Any) -> "LocalTeacher":
        return cls(str(student.source), default_params, student=student, **kw)

    # ----------------------------------------------------------------------------------------------

    def render(self, req: TeacherRequest) -> str:
        if req.prompt is not None:
            return req.prompt
        msgs = [dict(m) for m in (req.messages or [])]
        prefix = self.student.inference_prefix if self.apply_task_prefix else ""
        if prefix:
            for m in reversed(msgs):
                if m.get("role") == "user" and isinstance(m.get("content"), str):
                    if not m["content"].startswith(prefix):
                        m["content"] = prefix + m["content"]
                    break
        return self.student.render(msgs)

    def _params(self, req: TeacherRequest) -> dict[str, Any]:
        p = {**self.default_params, **(req.params or {})}
        stop = p.get("stop")
        top_p = p.get("top_p")
        return {
            "max_new_tokens": int(p.get("max_tokens") or p.get("max_new_tokens") or DEFAULT_MAX_TOKENS),
            "temperature": float(p.get("temperature") or 0.0),
            "top_p": float(top_p if top_p is not None else 1.0),
            "stop": tuple([stop] if isinstance(stop, str) else (stop or [])),
            "seed": int(p.get("seed") or 0),
        }

    def _generate_group(self, reqs: list[TeacherRequest], params: dict[str, Any]) -> list[TeacherResult]:
        prompts = [self.render(r) for r in reqs]
        seed = params["seed"]
        if params["temperature"] > 0:
            h = hashlib.blake2b("\x00".join(f"{r.key}#{r.sample_index}" for r in reqs).encode(), digest_size=4)
            seed += int.from_bytes(h.digest(), "little")
        t0 = time.monotonic()
        raw = reqs[0].prompt is not None  # groups never mix raw prompts and chat messages
        gens = self.student.generate(prompts, chat=self.student.chat and not raw, batch_size=len(prompts),
                                     max_new_tokens=params["max_new_tokens"],
                                     temperature=params["temperature"], top_p=params["top_p"],
                                     stop=list(params["stop"]), seed=seed)
        dt = time.monotonic() - t0
        return [self._result(r, g, dt) for r, g in zip(reqs, gens)]

    def _result(self, req: TeacherRequest, g: Any, dt: float) -> TeacherResult:
        """A local reasoning model (R1 distills, Qwen3) writes its trace inline: split it off like an
        API teacher's (an unclosed ``<think>`` is an answer cut inside the reasoning)."""
        usage = Usage(g.prompt_tokens, g.completion_tokens)
        trace, answer, cut = split_think(g.text) if "think>" in g.text else (None, g.text, False)
        if cut:
            return TeacherResult(request=req, text=None, finish_reason=g.finish_reason, usage=usage, cost_usd=0.0,
                                 model=self.model, attempts=1, latency_s=dt, reasoning=trace,
                                 error=truncated_message(None, usage))
        return TeacherResult(request=req, text=answer, finish_reason=g.finish_reason, usage=usage, cost_usd=0.0,
                             model=self.model, attempts=1, latency_s=dt, reasoning=trace)

    async def stream(self, requests: AsyncIterable[TeacherRequest]) -> AsyncGenerator[TeacherResult, None]:
        queue: asyncio.Queue = asyncio.Queue()
        reader_error: list[BaseException] = []

        async def reader() -> None:
            try:
                async for req in requests:
                    await queue.put(req)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                reader_error.append(exc)
            finally:
                await queue.put(_DONE)

        task = asyncio.create_task(reader())
        finished = False
        try:
            while not finished:
                first = await queue.get()
                if first is _DONE:
                    break
                batch = [first]
                while len(batch) < self.batch_size and not queue.empty():
                    nxt = queue.get_nowait()
                    if nxt is _DONE:
                        finished = True
                        break
                    batch.append(nxt)
                groups: dict[tuple, list[TeacherRequest]] = {}
                for r in batch:
                    key = (*sorted(self._params(r).items()), ("raw", r.prompt is not None))
                    groups.setdefault(key, []).append(r)
                self.stats.in_flight += len(batch)
                if self.stats.first_request_at is None:
                    self.stats.first_request_at = time.monotonic()
                for key, reqs in groups.items():
                    params = {k: v for k, v in key if k != "raw"}
                    try:
                        results = await asyncio.to_thread(self._generate_group, reqs, params)
                    except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the run
                        msg = f"local generation failed: {type(exc).__name__}: {exc}"
                        results = [TeacherResult(request=r, text=None, error=msg, model=self.model, attempts=1)
                                   for r in reqs]
                    self.batches += 1
                    for res in results:
                        self.stats.in_flight -= 1
                        self.stats.attempts += 1
                        self.stats.done += 1
                        if res.error:
                            self.stats.failed += 1
                        self.stats.prompt_tokens += res.usage.prompt_tokens
                        self.stats.completion_tokens += res.usage.completion_tokens
                        self.stats.last_result_at = time.monotonic()
                        yield res
            if reader_error:
                raise reader_error[0]
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass

    async def aclose(self) -> None:
        return None
