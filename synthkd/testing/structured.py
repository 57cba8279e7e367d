"""Structured outputs on the test server: ``response_format: {type: json_schema}`` (OpenAI-shaped
flavors, ``api_reference.md`` §1.8) and a forced tool call (Anthropic, §3).

What the server does with a request that asks for a JSON schema:

* it checks the schema as a strict provider does (``name`` ``[a-zA-Z0-9_-]{1,64}``, every object
  ``additionalProperties: false`` and every property ``required``): a client bug is a 400;
* the responder answers as usual.  Its answer is the reply when it is JSON already (a responder may
  also return ``{"json": OBJECT}``); free text is put into the schema where that is obvious
  (:func:`text_to_schema`: a string property gets the text, a number the first number in it, an enum
  the first of its values named, an array of strings the items of the list), so that scripted text
  responders serve structured requests too;
* ``FaultConfig.invalid_json_rate`` corrupts that share of replies (:func:`corrupt`: cut JSON, or valid
  JSON that does not match the schema), from its own seeded draw (the other faults' sequence is
  unchanged);
* a flavor without JSON-schema support, or ``FaultConfig.json_schema_supported = False``, answers
  400 naming ``response_format`` (:data:`UNSUPPORTED_MESSAGE`).
"""

from __future__ import annotations

import random
import re
from typing import Any

import orjson

__all__ = ["JSON_SCHEMA_FLAVORS", "UNSUPPORTED_MESSAGE", "requested_schema", "schema_problem",
           "text_to_schema", "structured_text", "corrupt"]

#: OpenAI-shaped flavors whose provider takes ``response_format: json_schema`` (§1.8, §4.2, §5).
JSON_SCHEMA_FLAVORS = frozenset({"openai", "openai-reasoning", "vllm", "gemini", "openrouter"})
UNSUPPORTED_MESSAGE = "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model."

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def requested_schema(body: dict) -> tuple[str, dict] | None:
    """``(name, schema)`` when an OpenAI-shaped body asks for a JSON schema, else None."""
    rf = body.get("response_format")
    if not isinstance(rf, dict) or rf.get("type") != "json_schema":
        return None
    js = rf.get("json_schema")
    if not isinstance(js, dict):
        return "", {}
    schema = js.get("schema")
    return str(js.get("name") or ""), schema if isinstance(schema, dict) else {}


def schema_problem(name: str, schema: Any, *, strict: bool = True) -> str | None:
    """Why a provider would refuse this schema (a 400), or None."""
    if not _NAME.match(name or ""):
        return f"Invalid 'response_format.json_schema.name': {name!r} must match [a-zA-Z0-9_-] (at most 64 characters)."
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "Invalid schema for response_format: the root must be an object."
    if strict:
        return _strict_problem(schema, "schema")
    return None


def _strict_problem(node: Any, where: str) -> str | None:
    if not isinstance(node, dict):
        return None
    if node.get("type") == "object" or "properties" in node:
        props = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return f"Invalid schema for response_format: In context={where}, 'additionalProperties' is required " \
                   "to be supplied and to be false."
        missing = sorted(set(props) - set(node.get("required") or []))
        if missing:
            return f"Invalid schema for response_format: In context={where}, 'required' is required to be " \
                   f"supplied and to be an array including every key in properties. Missing '{missing[0]}'."
        for k, v in props.items():
            p = _strict_problem(v, f"{where}.properties.{k}")
            if p:
                return p
    for key in ("items",):
        if key in node:
            p = _strict_problem(node[key], f"{where}.{key}")
            if p:
                return p
    for key in ("anyOf", "allOf"):
        for i, sub in enumerate(node.get(key) or ()):
            p = _strict_problem(sub, f"{where}.{key}.{i}")
            if p:
                return p
    for name, sub in (node.get("$defs") or {}).items():
        p = _strict_problem(sub, f"{where}.$defs.{name}")
        if p:
            return p
    return None


def _resolve(node: Any, root: dict) -> Any:
    if isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/$defs/"):
        return (root.get("$defs") or {}).get(node["$ref"][len("#/$defs/"):], {})
    if isinstance(node, dict) and node.get("anyOf"):
        for sub in node["anyOf"]:
            sub = _resolve(sub, root)
            if isinstance(sub, dict) and sub.get("type") != "null":
                return sub
    return node


def _value_for(node: Any, text: str, root: dict) -> Any:
    from synthkd.teacher_lists import parse_list_items  # the server's only import from the library

    node = _resolve(node, root)
    if not isinstance(node, dict):
        return text
    if "enum" in node:
        values = [v for v in node["enum"]]
        low = text.lower()
        found = sorted(((low.find(str(v).lower()), -len(str(v)), v) for v in values if str(v).lower() in low))
        return found[0][2] if found else (values[0] if values else None)
    kind = node.get("type")
    if kind in ("integer", "number"):
        m = _NUMBER.search(text)
        if m is None:
            return 0
        num = float(m.group())
        return int(num) if kind == "integer" else num
    if kind == "boolean":
        return bool(re.search(r"\b(yes|true)\b", text, re.I))
    if kind == "array":
        items = parse_list_items(text)
        return [_value_for(node.get("items"), it, root) for it in items]
    if kind == "object":
        return {k: _value_for(v, text, root) for k, v in (node.get("properties") or {}).items()}
    return text


def text_to_schema(text: str, schema: dict) -> Any:
    """A free-text answer put into ``schema`` where it is obvious (see the module docstring)."""
    return _value_for(schema, text, schema)


def structured_text(text: str, schema: dict) -> str:
    """The reply's content for a structured request: the responder's JSON as is, else its text put
    into the schema."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            orjson.loads(stripped)
            return stripped
        except orjson.JSONDecodeError:
            pass
    return orjson.dumps(text_to_schema(text, schema)).decode()


def corrupt(content: str, rng: random.Random) -> str:
    """An invalid reply in place of ``content``: cut JSON (half the time) or JSON of the wrong shape."""
    if rng.random() < 0.5:
        return content[: max(1, len(content) // 2)]
    return orjson.dumps({"unexpected": content[:40]}).decode()


def parse_object(content: str) -> Any:
    """``content`` as JSON (an Anthropic ``tool_use`` input); a corrupted reply that is not JSON stays a string."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content
