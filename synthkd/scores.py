"""Read a judge's 1-10 score from a teacher's free-text answer.

Shared by the cleaning judge (:mod:`synthkd.filters.judge`) and the preference-pair judge
(:mod:`synthkd.methods.preferences`).  The score is the answer's *last* "Score: N" (also "score of
N", "N/10", "N out of 10", "Rating: N", or a bare number): judges often restate the scale ("on a
1-10 scale…") before their verdict.  Scores outside 1–10 count as unreadable.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import BaseModel, field_validator

__all__ = ["JudgeScore", "parse_score"]


class JudgeScore(BaseModel):
    """A judge's answer as a schema: the reason first (the judge reasons before it scores), then the
    1-10 score (checked here, not in the schema: strict JSON schemas may not take bounds)."""

    schema_name: ClassVar[str] = "judge_score"
    reason: str
    score: int

    @field_validator("score")
    @classmethod
    def _in_range(cls, v: int) -> int:
        if not 1 <= v <= 10:
            raise ValueError(f"score {v} outside 1-10")
        return v

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
