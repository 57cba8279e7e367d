"""Refusals and AI boilerplate: drop outputs like "As an AI language model, I cannot…" or "I'm sorry,
but I can't help with that".

Why two lists: self-identification and explicit refusal phrases ("as an AI language model",
"I cannot fulfill") are refusals wherever they appear, but apologies ("I'm sorry, but I…") are only
refusals at the *start* of an answer — inside a story or a customer-service reply they are content.
Apostrophes are normalised (’ → ') and matching ignores case.  The phrases were checked against the
real GPT-3.5/GPT-4/Claude-2 outputs in ``shared/data/alpaca_eval`` (see the tests).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from synthkd.filters.base import OpConfig, Reject, RowOperator

ANYWHERE_PATTERNS: list[str] = [
    r"\bas an? (?:ai|artificial intelligence)(?: language model| assistant| model| chatbot)?\b",
    r"\bas a (?:large )?language model\b",
    r"\bi(?:'m| am) (?:just |only )?an? (?:ai|artificial intelligence|large language model|language model)\b",
    r"\bi (?:cannot|can't|can not|won't|will not|am unable to|'m unable to|am not able to|'m not able to) "
    r"(?:fulfill|comply|assist with|help with (?:that|this|your request)|provide (?:that|this|assistance)"
    r"|engage in|create content|generate content|answer that|answer this)",
    r"\bi (?:do not|don't) feel comfortable\b",
    r"\bi must (?:respectfully )?decline\b",
    r"\b(?:it is|it's) not appropriate for me\b",
]
START_PATTERNS: list[str] = [
    r"^(?:i'm sorry|i am sorry|sorry|i apologi[sz]e|unfortunately)[,.!]? (?:but )?(?:i|as an)\b",
    r"^i (?:cannot|can't|can not|won't|will not|am unable to|'m unable to)\b",
]

_APOS = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


class RefusalConfig(OpConfig):
    op: str = "refusal"
    field: str = Field("completion", description="The text checked.")
    patterns: list[str] = Field(default_factory=lambda: list(ANYWHERE_PATTERNS), description="Regexes that mark a refusal anywhere (lower-cased text).")
    start_patterns: list[str] = Field(default_factory=lambda: list(START_PATTERNS), description="Regexes that mark a refusal only at the start.")
    extra_patterns: list[str] = Field(default_factory=list, description="More anywhere-regexes, added to the defaults.")
    start_window: int = Field(160, ge=1, description="How many leading characters the start patterns see.")

    @field_validator("patterns", "start_patterns", "extra_patterns")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a valid regular expression: {exc}") from None
        return v


class Refusal(RowOperator):
    op = "refusal"
    Config = RefusalConfig
    summary = "Drop refusals and AI boilerplate ('As an AI language model…', 'I'm sorry, but I can't…')."

    def __init__(self, config: RefusalConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.anywhere = re.compile("|".join(f"(?:{p})" for p in config.patterns + config.extra_patterns)) \
            if config.patterns or config.extra_patterns else None
        self.start = re.compile("|".join(f"(?:{p})" for p in config.start_patterns)) if config.start_patterns else None

    def needs(self) -> list[tuple[str, ...]]:
        return [(self.cfg.field,)]

    def check(self, row: dict[str, Any]) -> Reject | None:
        text = self.text(row, self.cfg.field).translate(_APOS).lower()
        if self.anywhere is not None:
            m = self.anywhere.search(text)
            if m:
                return Reject("refusal", f"{m.group(0)!r}")
        if self.start is not None:
            m = self.start.search(text.lstrip(" \t\n\"'*")[: self.cfg.start_window])
            if m:
                return Reject("refusal", f"starts {m.group(0)!r}")
        return None
