"""Structured outputs: a method's answer declared as a pydantic model, sent as a strict JSON schema
where the teacher takes one, validated, and re-asked within a bounded budget when it does not parse.

Why: the methods that ask the teacher for lists or scores used to parse free text only, so every
parse failure was a paid reject row that was never re-asked.  Now:

* a method sets ``TeacherRequest.schema`` (a pydantic model; :func:`json_schema_format` turns it into
  OpenAI's ``response_format: {type: json_schema, strict: true}``, the Anthropic teacher into a forced
  tool call) — the teacher decides per request whether to send it (``--structured auto|on|off``,
  :func:`wants_structured`) and marks the result (``TeacherResult.structured``);
* :func:`synthkd.teachers.jobs.stream_jobs` validates every structured answer (:func:`validate`)
  and re-asks an invalid one (:func:`reask_request`: the conversation, the invalid reply, and the
  validation error) up to ``--reask N`` times; re-asks are counted in the teacher's stats (requests,
  cost, budget, the summary line) and a final failure keeps the raw text and the error
  (``TeacherResult.structured_error``) for the method's reject row;
* a teacher that answers 400 to ``response_format`` falls back to text for that model, once, with
  one warning (:class:`synthkd.teachers.families.RequestShaper`); the methods then use their text
  parsers, as they do for a teacher without JSON-schema support.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

__all__ = ["STRUCTURED_MODES", "json_schema_format", "strict_schema", "schema_name", "validate", "reask_request",
           "REASK_PROMPT", "answer_of", "ItemList"]

STRUCTURED_MODES = ("auto", "on", "off")
_NAME_OK = re.compile(r"[^a-zA-Z0-9_-]")

#: the follow-up message of a re-ask (the model sees its invalid reply and what was wrong with it)
REASK_PROMPT = ("Your reply could not be used: {error}\n"
                "Answer again with only a JSON object that matches the requested schema.")


class ItemList(BaseModel):
    """A list of new texts (task examples, Self-Instruct instructions, PromptMix items...)."""

    schema_name: ClassVar[str] = "items"
    items: list[str]


def schema_name(model: type[BaseModel]) -> str:
    """The schema's ``name``: ``model.schema_name`` or the class name, as ``[a-zA-Z0-9_-]{1,64}``."""
    name = str(getattr(model, "schema_name", "") or model.__name__)
    return (_NAME_OK.sub("_", name) or "answer")[:64]


def _strictify(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _strictify(v) for k, v in node.items() if k not in ("title", "default")}
        if "const" in node:  # a one-value Literal: an enum of one, which every provider takes
            node["enum"] = [node.pop("const")]
        if node.get("type") == "object" or "properties" in node:
            props = node.get("properties") or {}
            node["properties"] = props
            node["required"] = list(props)
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strictify(v) for v in node]
    return node


@functools.lru_cache(maxsize=256)
def _strict_json(model: type[BaseModel]) -> str:
    return json.dumps(_strictify(model.model_json_schema()), sort_keys=True)


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as strict structured outputs take it (§1.8): every object
    ``additionalProperties: false`` with every property ``required``; titles and defaults left out."""
    return copy.deepcopy(json.loads(_strict_json(model)))


def json_schema_format(model: type[BaseModel], name: str | None = None) -> dict[str, Any]:
    """``response_format`` for ``model`` (OpenAI, vLLM, SGLang, Gemini, Ollama)."""
    return {"type": "json_schema",
            "json_schema": {"name": name or schema_name(model), "strict": True, "schema": strict_schema(model)}}


def _first_json(text: str) -> str:
    """The JSON object in a reply, tolerating a code fence around it (some servers add one)."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0].strip()
    return s


def validate(model: type[BaseModel], text: str | None) -> tuple[BaseModel | None, str | None]:
    """``(the parsed answer, None)``, or ``(None, why not)`` for invalid JSON or a schema mismatch."""
    if text is None:
        return None, "empty reply"
    try:
        return model.model_validate_json(_first_json(text)), None
    except ValidationError as exc:
        errs = exc.errors(include_url=False)
        if errs and errs[0].get("type") == "json_invalid":
            return None, f"invalid JSON: {errs[0].get('msg')}"
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ())) or '(root)'}: {e.get('msg')}" for e in errs[:3]]
        return None, "schema mismatch: " + "; ".join(parts)


def reask_request(req: Any, raw: str | None, error: str, attempt: int) -> Any:
    """The ``attempt``-th re-ask of ``req`` (a :class:`TeacherRequest`): its messages, the invalid
    reply and what was wrong with it.  A distinct request (and cache entry) from the first ask."""
    import dataclasses

    assert req.messages is not None
    messages = [*req.messages, {"role": "assistant", "content": raw or ""},
                {"role": "user", "content": REASK_PROMPT.format(error=error)}]
    return dataclasses.replace(req, messages=messages, meta={**req.meta, "reask": attempt})


def answer_of(res: Any, from_parsed: Any, from_text: Any) -> tuple[Any, str | None]:
    """A method's answer from one result, however it was asked: ``(from_parsed(res.parsed), None)`` for a
    valid structured answer, ``(None, "invalid_structured_response: WHY")`` for one still invalid after
    the re-asks (the reject reason; ``res.text`` is the raw reply), ``(from_text(res.text), None)`` for
    an answer asked in text (no JSON-schema support, ``--structured off``, or the 400 fallback)."""
    if res.structured:
        if res.parsed is not None:
            return from_parsed(res.parsed), None
        return None, f"invalid_structured_response: {res.structured_error or 'no valid answer'}"
    return from_text(res.text), None
