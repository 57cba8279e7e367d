"""Wrong language: drop outputs not written in the expected language(s).

A light heuristic instead of a language-ID library, on purpose: the well-known small libraries either
need a model download at run time (fastText lid.176), are unmaintained (langdetect: last release
2021; langid.py: 2017) or pull a large native wheel (lingua), and the job here is narrower than
language ID — "is this the language I asked for" — for which two cheap signals are enough:

1. **script**: the share of letters in the expected script (Latin for en/de/fr/es/it/pt/nl; Han,
   Kana, Hangul, Cyrillic, Arabic, Greek, Hebrew, Devanagari, Thai for the others).  Catches a
   Chinese or Russian answer to an English prompt at any length.
2. **function words** (Latin-script languages, texts of ``min_words`` or more): the share of the
   text's words that are among ~40 of each language's most frequent function words.  English prose
   scores ~0.35–0.5 on its own list and ~0.05 on the others; a text is dropped only when another
   language beats the expected one by ``margin`` (and reaches 0.15), so code, lists and numbers —
   which score low on every list — are not dropped.

Tested on real outputs in ``shared/data/alpaca_eval`` (French and German answers among English ones).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from synthkd.filters.base import OpConfig, Reject, RowOperator

STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the of and to in is that it for was on are as with be by this at from or have an they which "
                    "you not but we can has his her their there were been will would what all if when so do does "
                    "its than then these those".split()),
    "de": frozenset("der die das und ist nicht ein eine einen dem den des zu mit sich auf für von auch es im ich "
                    "sie wir ihr wie aber oder wenn noch nur bei aus sind werden wird kann über diese dass".split()),
    "fr": frozenset("le la les des et est une un du que qui dans pour pas sur au avec ce il elle sont par plus "
                    "ne se ou mais nous vous leur aux été cette être comme ont son sa ses".split()),
    "es": frozenset("el la los las y que en un una es por con para del se no al lo como más pero sus le ya "
                    "este esta son entre cuando muy sin sobre también hay ser ha fue".split()),
    "it": frozenset("il la che di e è un una per non del della le gli si con sono al da nel ma come più anche "
                    "questo questa ha alla dei delle nella essere sul".split()),
    "pt": frozenset("o a os as que de e do da em um uma para com não é se na no por mais dos das ao como mas "
                    "foi ele ela são seu sua ou quando muito também".split()),
    "nl": frozenset("de het een en van in is dat op te zijn niet met voor er maar ook als aan bij dit die om "
                    "nog wordt door naar heeft ze wij hij kan worden".split()),
}

# Unicode ranges per script (enough for a yes/no script check)
_SCRIPTS: dict[str, list[tuple[int, int]]] = {
    "Latin": [(0x41, 0x24F), (0x1E00, 0x1EFF)],
    "Greek": [(0x370, 0x3FF)],
    "Cyrillic": [(0x400, 0x52F)],
    "Hebrew": [(0x590, 0x5FF)],
    "Arabic": [(0x600, 0x6FF), (0x750, 0x77F)],
    "Devanagari": [(0x900, 0x97F)],
    "Thai": [(0xE00, 0xE7F)],
    "Hangul": [(0xAC00, 0xD7AF), (0x1100, 0x11FF)],
    "Kana": [(0x3040, 0x30FF)],
    "Han": [(0x4E00, 0x9FFF), (0x3400, 0x4DBF)],
}
LANG_SCRIPTS: dict[str, set[str]] = {
    **{lang: {"Latin"} for lang in STOPWORDS},
    "zh": {"Han"}, "ja": {"Han", "Kana"}, "ko": {"Hangul", "Han"}, "ru": {"Cyrillic"}, "uk": {"Cyrillic"},
    "ar": {"Arabic"}, "el": {"Greek"}, "he": {"Hebrew"}, "hi": {"Devanagari"}, "th": {"Thai"},
}
_WORD_RE = re.compile(r"[^\W\d_]+")


def script_of(ch: str) -> str | None:
    o = ord(ch)
    for name, ranges in _SCRIPTS.items():
        for lo, hi in ranges:
            if lo <= o <= hi:
                return name
    return None


def script_shares(text: str) -> tuple[int, dict[str, float]]:
    """(number of letters, share of letters per script)."""
    counts: dict[str, int] = {}
    n = 0
    for ch in text:
        if ch.isalpha():
            n += 1
            s = "Latin" if ch.isascii() else (script_of(ch) or "other")
            counts[s] = counts.get(s, 0) + 1
    return n, {k: v / n for k, v in counts.items()} if n else {}


def stopword_shares(text: str) -> tuple[int, dict[str, float]]:
    ws = _WORD_RE.findall(text.casefold())
    if not ws:
        return 0, {}
    return len(ws), {lang: sum(1 for w in ws if w in sw) / len(ws) for lang, sw in STOPWORDS.items()}


class LanguageConfig(OpConfig):
    op: str = "language"
    field: str = Field("completion", description="The text checked.")
    expect: list[str] = Field(["en"], description=f"Accepted language codes ({', '.join(LANG_SCRIPTS)}).")
    min_letters: int = Field(10, ge=1, description="Texts with fewer letters are not judged.")
    min_script_share: float = Field(0.8, ge=0, le=1, description="Share of letters that must be in an expected script.")
    min_words: int = Field(8, ge=1, description="Function-word check only from this many words.")
    margin: float = Field(2.0, ge=1, description="Another language must score this many times the expected one.")

    @field_validator("expect")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in LANG_SCRIPTS]
        if bad or not v:
            raise ValueError(f"unknown language code(s) {bad} (known: {', '.join(LANG_SCRIPTS)})")
        return v


class Language(RowOperator):
    op = "language"
    Config = LanguageConfig
    summary = "Drop outputs not in the expected language (script share + function-word heuristic)."

    def __init__(self, config: LanguageConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.scripts = set().union(*(LANG_SCRIPTS[x] for x in config.expect))
        self.word_langs = [x for x in config.expect if x in STOPWORDS]

    def needs(self) -> list[tuple[str, ...]]:
        return [(self.cfg.field,)]

    def check(self, row: dict[str, Any]) -> Reject | None:
        c = self.cfg
        text = self.text(row, c.field)
        n, shares = script_shares(text)
        if n < c.min_letters:
            return None
        ok = sum(v for k, v in shares.items() if k in self.scripts)
        if ok < c.min_script_share:
            main = max(shares, key=lambda k: shares[k])
            return Reject("wrong language", f"script: {main} {shares[main]:.0%} of letters")
        if not self.word_langs:
            return None
        nw, sw = stopword_shares(text)
        if nw < c.min_words:
            return None
        best_expected = max(sw[x] for x in self.word_langs)
        other = max((k for k in sw if k not in c.expect), key=lambda k: sw[k], default=None)
        if other is not None and sw[other] >= 0.15 and sw[other] >= c.margin * best_expected:
            return Reject("wrong language", f"looks like {other} (function words {sw[other]:.0%} vs "
                                            f"{'/'.join(self.word_langs)} {best_expected:.0%})")
        return None
