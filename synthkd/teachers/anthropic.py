"""The native Anthropic Messages API teacher (``anthropic:MODEL``, or ``provider: anthropic``).

Why native and not through a compatibility layer: only the Messages API returns Claude's ``thinking``
blocks (the trace a student can learn from), prompt-cache token counts (billed at their own rates), and
the ``anthropic-ratelimit-*`` headers the pacing needs.  It runs on the same engine as every API
teacher (:class:`OpenAICompatibleTeacher`: concurrency, pacing, retries with backoff — 529
"overloaded" included —, the request cache, exact cost, the budget, the ledger); only the request body,
the reply and the credentials differ.  Shapes: ``../shared/api_reference.md`` §3 and §6.2/6.5.

What a request becomes:
* ``system`` chat messages -> the ``system`` field; a plain prompt -> one user message;
* ``max_tokens`` is required: the request's, else ``DEFAULT_MAX_TOKENS``;
* ``thinking_budget`` N (>= 1024) -> ``thinking: {type: enabled, budget_tokens: N}``, and ``max_tokens``
  becomes N + the answer's ``max_tokens`` (Anthropic counts the thinking inside it); ``temperature``
  and ``top_k`` are left out while thinking (the API allows only the default);
* ``stop`` -> ``stop_sequences``; ``seed`` and ``n`` do not exist here (k samples are k requests);
* a structured request (``response_format: json_schema``) -> one tool with the schema as its
  ``input_schema`` and ``tool_choice: {type: tool, name}`` (a forced tool call); the ``tool_use``
  block's ``input`` is the answer's JSON text.  Thinking is incompatible with a forced tool, so a
  thinking teacher asks in text (its trace is what the student learns).
"""

from __future__ import annotations

from typing import Any

import orjson

from synthkd.teachers.base import TeacherCapabilities, TeacherConfigError, TeacherFatalError, TeacherRequest, Usage
from synthkd.teachers.errors import MalformedResponse, Reshape
from synthkd.teachers.families import FAMILIES, FamilyTable, RequestShaper
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.teachers.replies import REFUSAL, Choice, Reply, truncated_message

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024
#: stop_reason -> the finish_reason every method reads
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "pause_turn": "stop", "refusal": "refusal", "model_context_window_exceeded": "length"}


class AnthropicTeacher(OpenAICompatibleTeacher):
    """Claude through ``POST {base_url}/v1/messages`` with ``x-api-key`` (default ``$ANTHROPIC_API_KEY``)."""

    capabilities = TeacherCapabilities(n_samples=False, json_schema=True, batch=True, reasoning_trace=True)
    KEY_ENV = "ANTHROPIC_API_KEY"
    URL_ENV = "ANTHROPIC_BASE_URL"
    DEFAULT_URL = "https://api.anthropic.com/v1"

    def __init__(self, model: str, *, thinking_budget: int | None = None, families: FamilyTable | None = None,
                 **kwargs: Any) -> None:
        if thinking_budget is not None and thinking_budget < MIN_THINKING_BUDGET:
            raise TeacherConfigError(f"--thinking-budget {thinking_budget}: Anthropic needs at least "
                                     f"{MIN_THINKING_BUDGET} thinking tokens")
        if kwargs.get("reasoning_effort") is not None:
            raise TeacherConfigError("--reasoning-effort is an OpenAI-style option; Claude's reasoning is set with "
                                     "--thinking-budget TOKENS (or pass any Messages API field with --param)")
        if kwargs.pop("reasoning_budget", None) is not None:
            raise TeacherConfigError("--reasoning-budget is for OpenAI-style reasoning models; Claude's thinking is "
                                     "set with --thinking-budget TOKENS")
        super().__init__(model, families=families, **kwargs)
        self.family = FAMILIES["anthropic"]  # whatever the model is called (a proxy's alias)
        self.shaper = RequestShaper(self.family, protected=self._protected())  # thinking: its own budget
        self.thinking_budget = thinking_budget
        if thinking_budget is not None:
            # part of every cache key: the same prompt with and without thinking are different answers
            self.default_params.setdefault("thinking_budget", thinking_budget)

    def wants_structured(self, req: TeacherRequest) -> bool:
        return self.thinking_budget is None and super().wants_structured(req)

    @staticmethod
    def _sent_structured(body: dict[str, Any]) -> bool:
        return "tool_choice" in body and "response_format" not in body

    @staticmethod
    def _normalise_base_url(url: str) -> str:
        url = url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"  # the SDK's base (no /v1) works too

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    # ---------------------------------------------------------------- request
    def _request_body(self, req: TeacherRequest, params: dict[str, Any], n: int) -> tuple[str, dict[str, Any]]:
        shaped = self.shaper.shape(params)
        system: list[str] = []
        messages: list[dict[str, Any]] = []
        for m in req.messages if req.messages is not None else [{"role": "user", "content": req.prompt}]:
            if m.get("role") in ("system", "developer"):
                content = m.get("content")
                system.append(content if isinstance(content, str) else str(content))
            else:
                messages.append({"role": m.get("role"), "content": m.get("content")})
        budget = shaped.pop("thinking_budget", None)
        fmt = shaped.pop("response_format", None)
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            js = fmt["json_schema"]
            shaped["tools"] = [{"name": js["name"], "description": "Give the answer with this tool.",
                                "input_schema": js["schema"]}]
            shaped["tool_choice"] = {"type": "tool", "name": js["name"]}
        answer_tokens = int(shaped.pop("max_tokens", None) or shaped.pop("max_completion_tokens", None)
                            or DEFAULT_MAX_TOKENS)
        shaped.pop("seed", None)
        if "stop" in shaped:
            stop = shaped.pop("stop")
            shaped["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if system:
            body["system"] = "\n\n".join(system)
        if budget:
            body["thinking"] = {"type": "enabled", "budget_tokens": int(budget)}
            body["max_tokens"] = int(budget) + answer_tokens
            for k in ("temperature", "top_k"):
                shaped.pop(k, None)
        else:
            body["max_tokens"] = answer_tokens
        body.update(shaped)
        body.update(self.extra_body)
        return f"{self.base_url}/messages", body

    # ---------------------------------------------------------------- reply
    def _parse_reply(self, data: Any, chat: bool, body: dict[str, Any]) -> Reply:
        if not isinstance(data, dict):
            raise MalformedResponse("body is not a JSON object")
        usage = anthropic_usage(data.get("usage"))
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise MalformedResponse("body has no 'content' blocks", billed=usage if usage.total_tokens else None)
        texts, thoughts = [], []
        for b in blocks:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text" and isinstance(b.get("text"), str):
                texts.append(b["text"])
            elif b.get("type") == "thinking" and isinstance(b.get("thinking"), str):
                thoughts.append(b["thinking"])
            elif b.get("type") == "tool_use" and "tool_choice" in body:  # a forced tool: its input is the answer
                texts.append(orjson.dumps(b.get("input")).decode())
        stop_reason = data.get("stop_reason")
        finish = _FINISH.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else None
        reasoning = "\n\n".join(thoughts) if thoughts else None
        text = "".join(texts)
        if stop_reason == "refusal" and not text:
            choice = Choice(None, reasoning, finish, f"{REFUSAL}: the model refused (stop_reason refusal)")
        elif not texts and finish == "length":
            choice = Choice(None, reasoning, finish, truncated_message(body.get("max_tokens"), usage))
        elif not texts and stop_reason is None:
            raise MalformedResponse("reply has no text block and no stop_reason",
                                    billed=usage if usage.total_tokens else None)
        else:
            choice = Choice(text, reasoning, finish)
        return Reply([choice], usage, data.get("model"))

    def _classify_error(self, status: int, raw: bytes, headers: Any, message: str, body: dict[str, Any]) -> None:
        low = message.lower()
        if status == 400 and "tool_choice" in body and "tool" in low:  # the forced tool refused: text from now on
            if self.shaper.learn("response_format", message, {"response_format": body["tool_choice"]}, self.model):
                raise Reshape(f"HTTP 400: {message}")
        if status in (400, 402) and ("credit balance" in low or "billing" in low):
            raise TeacherFatalError(self._scrub(f"{self.base_url}: no credit left (HTTP {status}): {message}"))
        if status == 429 and "retry-after" not in headers and ("spend" in low or "usage limit" in low):
            raise TeacherFatalError(self._scrub(f"{self.base_url}: spend limit reached (429): {message}"))
        super()._classify_error(status, raw, headers, message, body)


def anthropic_usage(u: Any) -> Usage:
    """Anthropic ``usage`` as the shared :class:`Usage`: all input (uncached + cache writes + cache
    reads) is ``prompt_tokens``; ``output_tokens`` (thinking included, as billed) is ``completion_tokens``."""
    if u is None:
        u = {}
    if not isinstance(u, dict):
        raise MalformedResponse("usage is not an object")
    try:
        read = int(u.get("cache_read_input_tokens") or 0)
        write = int(u.get("cache_creation_input_tokens") or 0)
        details = u.get("output_tokens_details") or {}
        return Usage(
            prompt_tokens=int(u.get("input_tokens") or 0) + read + write,
            completion_tokens=int(u.get("output_tokens") or 0),
            cached_tokens=read,
            cache_write_tokens=write,
            reasoning_tokens=int(details.get("thinking_tokens") or 0) if isinstance(details, dict) else 0,
        )
    except (TypeError, ValueError):
        raise MalformedResponse("usage is not numeric") from None
