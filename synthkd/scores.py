"""Read a judge's 1-10 score from a teacher's free-text answer.

Shared by the cleaning judge (:mod:`synthkd.filters.judge`) and the preference-pair judge
(:mod:`synthkd.methods.preferences`).  The score is the answer's *last* "Score: N" (also "score of
N", "N/10", "N out of 10", "Rating: N", or a bare number): judges often restate the scale ("on a
1-10 scale…") before their verdict.  Scores outside 1–10 count as unreadable.
"""

from __future__ import annotations

import re

__all__ = ["parse_score"]

_NUM = r"(\d+(?:\.\d+)?)"
_SCORE_RES = [
    re.compile(r"\bscore\b\s*(?:\(\s*1\s*-\s*10\s*\))?\s*(?:[:=]|is|of)?\s*[*_]*\s*" + _NUM + r"(?!\s*-)", re.IGNORECASE),
    re.compile(r"\brating\b\s*(?:[:=]|is|of)?\s*[*_]*\s*" + _NUM, re.IGNORECASE),
    re.compile(_NUM + r"\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE),
]
_BARE = re.compile(r"^\s*[*_]*" + _NUM + r"[*_.]*\s*$")


def parse_score(text: str | None) -> tuple[float | None, str | None]:
    """(score in 1..10, None) or (None, why)."""
    if not text or not text.strip():
        return None, "empty answer"
    for rx in _SCORE_RES:
        found = rx.findall(text)
        if found:
            v = float(found[-1])
            return (v, None) if 1 <= v <= 10 else (None, f"score {v:g} outside 1-10")
    m = _BARE.match(text)
    if m:
        v = float(m.group(1))
        return (v, None) if 1 <= v <= 10 else (None, f"score {v:g} outside 1-10")
    return None, "no score found"
