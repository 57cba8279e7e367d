"""Text helpers every cleaning operator shares: reading a field as text, normalising it, cutting words.

Why one module: exact dedup, near-dup and decontamination must agree on what "the same text" means
(case, Unicode forms, punctuation, spacing), otherwise a row deduplicated against the training set
could still leak past the eval-set check.  Normalisation is deliberately simple and documented:

* ``basic``: Unicode NFKC, case-folded, runs of whitespace collapsed to one space, trimmed;
* ``words``: ``basic`` and then only the word characters kept (punctuation dropped), words joined
  by one space — "Hello,  World!" and "hello world" are the same text;
* ``none``: the text as it is.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

Normalization = Literal["none", "basic", "words"]

_WS_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"\w+")


class FieldProblem(Exception):
    """A row lacks a field an operator needs, or the field has the wrong type."""

    def __init__(self, field: str, problem: str = "missing") -> None:
        super().__init__(f"field {field!r}: {problem}")
        self.field = field
        self.problem = problem


def text_of(row: dict[str, Any], field: str) -> str:
    """The text of ``row[field]``: a string, a list of strings (joined by newlines), or chat
    messages (their contents joined).  Raises :class:`FieldProblem` when absent or not text."""
    try:
        value = row[field]
    except KeyError:
        raise FieldProblem(field) from None
    if isinstance(value, str):
        return value
    if value is None:
        raise FieldProblem(field, "is null")
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, dict) and isinstance(item.get("content"), str):
                parts.append(item["content"])
            else:
                raise FieldProblem(field, "must be a string, a list of strings or chat messages")
        return "\n".join(parts)
    raise FieldProblem(field, f"must be text, got {type(value).__name__}")


def normalize(text: str, how: Normalization = "basic") -> str:
    if how == "none":
        return text
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.casefold()
    if how == "words":
        return " ".join(_WORD_RE.findall(text))
    return _WS_RE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """Normalised words (NFKC, case-folded, punctuation dropped) — the unit of every n-gram here."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _WORD_RE.findall(text.casefold())


def clip(text: str, n: int = 240) -> str:
    """A short one-line preview for reports."""
    text = _WS_RE.sub(" ", text).strip()
    return text if len(text) <= n else text[: n - 1] + "…"
