"""Parsing lists out of teacher text: the items of a numbered, bulleted, JSON or JSON-lines list a
teacher wrote, cleaned of numbering, field labels, quotes and chatter.

Used by the methods that ask for lists of new texts (:mod:`synthkd.methods.label_tasks`,
:mod:`synthkd.methods.self_instruct`).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["clean_item", "parse_list_items"]


_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
_ITEM_START = re.compile(
    r"""^\s*(?:
        \*{0,2}(?:example|item|text|sample|query|message|utterance|sentence|instruction|task)\s*\#?\s*\d{1,3}\*{0,2}\s*[:.)\-\u2013\u2014]?\*{0,2}
      | \(\s*\d{1,3}\s*\)
      | \[\s*\d{1,3}\s*\]
      | \#?\d{1,3}\s*(?:[.](?!\d)|[):\]]|\s[-\u2013\u2014](?=\s))
      | [-*\u2022\u25cf\u25aa\u2023\u25e6+]\s
    )\s*""",
    re.I | re.X,
)
_CHATTER = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|here\s+(?:are|is)|below\s+(?:are|is)|i\s+hope|let\s+me\s+know|"
    r"these\s+(?:examples|are)|note\s*:|i've|i\s+have)\b",
    re.I,
)
_FIELD_PREFIX = re.compile(
    r"^\s*\**(?:text|example|query|message|utterance|sentence|instruction|task|input|customer)\**\s*:\s*", re.I
)
_LABEL_SUFFIX = re.compile(
    r"\s*(?:[\(\[]|\s[-|\u2013\u2014\u2192]\s|\|)\s*(?:label|intent|category|class)\s*[:=][^\n]*$", re.I
)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("\u00ab", "\u00bb"), ("`", "`")]
_TEXT_KEYS = ("text", "example", "instruction", "query", "input", "sentence", "message", "utterance", "content")


def clean_item(text: str) -> str:
    """One list item without numbering, field labels, wrapping quotes or markdown emphasis."""
    s = " ".join(text.split())
    for _ in range(3):
        before = s
        m = _ITEM_START.match(s)
        if m and m.end() < len(s):
            s = s[m.end():]
        s = _FIELD_PREFIX.sub("", s)
        s = _LABEL_SUFFIX.sub("", s).strip()
        if len(s) >= 4 and s.startswith("**") and s.endswith("**"):
            s = s[2:-2].strip()
        for a, b in _QUOTES:
            # a double quote inside may close the first and open another ("x" and "y"): leave those
            if len(s) >= 2 and s.startswith(a) and s.endswith(b) and (a != '"' or s.count('"') == 2):
                s = s[1:-1].strip()
                break
        if s == before:
            break
    return s


def _json_item(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for k in _TEXT_KEYS:
            if isinstance(value.get(k), str):
                return value[k]
        strings = [v for v in value.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0]
    return None


def _parse_json_items(lines: list[str]) -> list[str] | None:
    body = "\n".join(lines).strip()
    if body.startswith("["):
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list):
            items = [_json_item(v) for v in data]
            return [i for i in items if i is not None]
    parsed: list[str] = []
    nonblank = [ln.strip().rstrip(",") for ln in lines if ln.strip()]
    if not nonblank or not nonblank[0].startswith(("{", '"')):
        return None
    ok = 0
    for ln in nonblank:
        try:
            item = _json_item(json.loads(ln))
        except json.JSONDecodeError:
            continue
        if item is not None:
            parsed.append(item)
            ok += 1
    return parsed if ok * 2 > len(nonblank) else None


def parse_list_items(text: str | None, *, leading_item: bool = False) -> list[str]:
    """The items of a list a teacher wrote, cleaned (see :func:`clean_item`), empties removed.

    Accepts numbered lists (``1.``, ``2)``, ``(3)``, ``#4``, ``Example 5:``), bullets, a JSON array,
    JSON lines (strings or objects with a ``text``-like field) and, failing all that, one item per
    line.  A preamble ("Here are 5 examples:") and closing chatter are not items.  A line that is not
    numbered continues the item above it unless a blank line separates them.  ``leading_item``: text
    before the first number is an item (a completion that continues a prompt ending in ``"9."``),
    unless it reads like a preamble.
    """
    if not text:
        return []
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if not _FENCE.match(ln)]
    js = _parse_json_items(lines)
    if js is not None:
        return [c for c in (clean_item(i) for i in js) if c]
    items: list[list[str]] = []  # numbered items (lines)
    loose: list[list[str]] = []  # unnumbered paragraphs
    lead: list[str] = []  # text before the first numbered item, no blank line
    current: list[str] | None = None
    gap = True
    seen_item = False
    for ln in lines:
        if not ln.strip():
            gap = True
            continue
        m = _ITEM_START.match(ln)
        if m:
            current = [ln[m.end():]]
            items.append(current)
            seen_item = True
        elif current is not None and not gap:
            current.append(ln)
        elif not seen_item and not loose and (not lead or not gap):
            lead.append(ln)
        else:
            current = None
            loose.append([ln])
        gap = False
    if not items:
        # no numbering: one item per line, without chatter or "...:" headers
        flat = [ln for ln in lines if ln.strip()]
        return [c for c in (clean_item(ln) for ln in flat if not _is_chatter(ln)) if c]
    out = []
    lead_text = " ".join(lead).strip()
    if leading_item and lead_text and not _is_chatter(lead_text):
        out.append(lead_text)
    out.extend(" ".join(it) for it in items)
    return [c for c in (clean_item(i) for i in out) if c]


def _is_chatter(line: str) -> bool:
    s = line.strip()
    return bool(_CHATTER.match(s)) or s.endswith(":")
