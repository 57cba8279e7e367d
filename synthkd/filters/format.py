"""Format and length: drop empty or truncated outputs, outputs too short or too long, and outputs that
miss a required pattern (or contain a forbidden one).

Why truncation is read from ``finish_reason`` and not guessed from the text: a completion cut by
``max_tokens`` can look complete ("... so the total is 4"), and training on it teaches the student to
stop mid-thought; the API says exactly when it happened.  Rows without the field are not judged on it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from synthkd.filters.base import OpConfig, Reject, RowOperator


class FormatConfig(OpConfig):
    op: str = "format"
    field: str = Field("completion", description="The text checked (e.g. completion, output, rationale).")
    finish_reason_field: str = Field("finish_reason", description="Field holding the API's finish_reason.")
    drop_empty: bool = Field(True, description="Drop empty / whitespace-only text.")
    drop_truncated: bool = Field(True, description="Drop rows whose finish_reason is 'length' (cut by max_tokens).")
    min_words: int | None = Field(None, ge=0, description="Drop texts with fewer words.")
    max_words: int | None = Field(None, ge=1, description="Drop texts with more words.")
    min_chars: int | None = Field(None, ge=0, description="Drop texts with fewer characters.")
    max_chars: int | None = Field(None, ge=1, description="Drop texts with more characters.")
    require_pattern: str | None = Field(None, description="Regex (Python re.search) the text must contain, e.g. '(?i)the answer is'.")
    forbid_pattern: str | None = Field(None, description="Regex the text must not contain.")

    @field_validator("require_pattern", "forbid_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _ranges(self) -> "FormatConfig":
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise ValueError("min_words is larger than max_words")
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError("min_chars is larger than max_chars")
        return self


class Format(RowOperator):
    op = "format"
    Config = FormatConfig
    summary = "Drop empty, truncated (finish_reason=length), too short/long outputs, or outputs missing a required pattern."

    def __init__(self, config: FormatConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.req = re.compile(config.require_pattern) if config.require_pattern else None
        self.forbid = re.compile(config.forbid_pattern) if config.forbid_pattern else None

    def needs(self) -> list[tuple[str, ...]]:
        return [(self.cfg.field,)]

    def check(self, row: dict[str, Any]) -> Reject | None:
        c = self.cfg
        text = self.text(row, c.field)
        if c.drop_empty and not text.strip():
            return Reject("empty", None)
        if c.drop_truncated and row.get(c.finish_reason_field) == "length":
            return Reject("truncated", "finish_reason = length")
        if c.min_words is not None or c.max_words is not None:
            n = len(text.split())
            if c.min_words is not None and n < c.min_words:
                return Reject("too short", f"{n} words < {c.min_words}")
            if c.max_words is not None and n > c.max_words:
                return Reject("too long", f"{n} words > {c.max_words}")
        n = len(text)
        if c.min_chars is not None and n < c.min_chars:
            return Reject("too short", f"{n} characters < {c.min_chars}")
        if c.max_chars is not None and n > c.max_chars:
            return Reject("too long", f"{n} characters > {c.max_chars}")
        if self.req is not None and not self.req.search(text):
            return Reject("required pattern missing", f"no match for {c.require_pattern!r}")
        if self.forbid is not None:
            m = self.forbid.search(text)
            if m:
                return Reject("forbidden pattern", f"{m.group(0)[:60]!r}")
        return None
