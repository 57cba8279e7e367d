"""What a "task kind" means for chain-of-thought generation: which fields a row needs, how its question
is shown to the teacher, how a gold label is read, and how a teacher's answer is parsed and compared.

Why one place: the rationale method, its input validation, its prompt templates and the replay
converter (which must write *exactly* the question text the template inserts, so that a
``ReplayTeacher`` finds it inside the prompt) all need the same answers to these questions.  Keeping
them in one small spec object means they cannot drift apart.

Four kinds:

* ``math``            -- a question, a numeric answer (gold: a number, an arithmetic expression such as
                         SVAMP's ``"( 10.0 * 45.0 )"``, or text with a final-answer cue such as GSM8K's
                         ``"... #### 72"``); compared with :func:`synthkd.answers.numbers_equal`.
* ``choice``          -- a question and a list of options; gold: the option text, its letter or its index.
* ``nli``             -- premise and hypothesis; gold: entailment / neutral / contradiction (or 0 / 1 / 2).
* ``classification``  -- an input text and a user-given label set; gold: one of the labels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from synthkd.answers import (
    NLI_LABELS,
    NLI_SYNONYMS,
    ExtractedAnswer,
    extract_answer,
    numbers_equal,
    safe_eval_arithmetic,
    strip_continuation,
)
from synthkd.errors import GoldError  # noqa: F401 (re-exported: their home was here)
from synthkd.jsonl_io import check_id

KINDS: tuple[str, ...] = ("math", "choice", "nli", "classification")
LETTERS = "abcdefghijklmnopqrstuvwxyz"

_ANSWER_KIND = {"math": "number", "choice": "choice", "nli": "label", "classification": "label"}
_NORM_RE = re.compile(r"[^0-9a-z]+")
_LETTER_GOLD_RE = re.compile(r"^\s*[(\[]?\s*([A-Za-z])\s*[)\].:]?\s*$")


def _norm(text: str) -> str:
    return _NORM_RE.sub(" ", text.lower()).strip()


def format_number(x: float) -> str:
    """A number as a person writes it: ``450`` not ``450.0``; at most 10 significant digits."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.10g}"


def json_number(x: float) -> int | float:
    """``450.0`` -> ``450`` (JSON readers then see an integer); other floats unchanged."""
    return int(x) if float(x).is_integer() and abs(x) < 1e15 else float(x)


@dataclass(frozen=True)
class FieldNames:
    """Which input fields hold what; every name is configurable on the command line."""

    input: str = "question"
    label: str = "answer"
    choices: str = "choices"
    premise: str = "premise"
    hypothesis: str = "hypothesis"
    rationale: str = "rationale"


@dataclass(frozen=True)
class TaskKind:
    """One task kind plus the field names and label set of one dataset."""

    kind: str
    fields: FieldNames = field(default_factory=FieldNames)
    labels: tuple[str, ...] | None = None
    synonyms: Mapping[str, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; use one of {', '.join(KINDS)}")
        labels = self.labels
        if labels is not None:
            labels = tuple(str(x).strip() for x in labels)
            if not labels or any(not x for x in labels):
                raise ValueError("the label set is empty or has an empty label")
            seen: dict[str, str] = {}
            for lab in labels:
                if _norm(lab) in seen:
                    raise ValueError(f"labels {seen[_norm(lab)]!r} and {lab!r} are the same label")
                seen[_norm(lab)] = lab
            object.__setattr__(self, "labels", labels)
        if self.kind == "classification" and not labels:
            raise ValueError("kind 'classification' needs a label set (--labels a,b,c or --labels-file)")
        if self.kind in ("math", "choice") and labels:
            raise ValueError(f"kind {self.kind!r} takes no label set (--labels is for classification and nli)")
        if self.kind == "nli" and labels is None:
            object.__setattr__(self, "labels", tuple(NLI_LABELS))
            if self.synonyms is None:
                object.__setattr__(self, "synonyms", NLI_SYNONYMS)

    # ------------------------------------------------------------------ fields
    @property
    def answer_kind(self) -> str:
        return _ANSWER_KIND[self.kind]

    @property
    def required_fields(self) -> tuple[str, ...]:
        f = self.fields
        return {
            "math": (f.input,),
            "choice": (f.input, f.choices),
            "nli": (f.premise, f.hypothesis),
            "classification": (f.input,),
        }[self.kind]

    def template_variables(self) -> set[str]:
        """Names a template for this kind may use (besides these, nothing is defined)."""
        per_kind = {
            "math": {"question"},
            "choice": {"question", "choices", "letters"},
            "nli": {"premise", "hypothesis", "labels"},
            "classification": {"question", "labels"},
        }[self.kind]
        return {"query", "demos", "hint", "kind", *per_kind}

    def check_row(self, row: Any) -> list[str]:
        """Problems with one row, each starting with ``field '<name>'``; empty when the row is usable."""
        if not isinstance(row, dict):
            return [f"expected a JSON object, got {type(row).__name__}"]
        problems = []
        if "id" not in row:
            problems.append("field 'id': missing")
        elif why := check_id(row["id"]):  # the one id rule (64-bit integers named, F16)
            problems.append(why)
        for name in self.required_fields:
            if name == self.fields.choices:
                continue
            v = row.get(name)
            if v is None:
                problems.append(f"field '{name}': missing")
            elif not isinstance(v, str) or not v.strip():
                problems.append(f"field '{name}': must be a non-empty string")
        if self.kind == "choice":
            ch = row.get(self.fields.choices)
            if ch is None:
                problems.append(f"field '{self.fields.choices}': missing")
            elif (
                not isinstance(ch, list) or len(ch) < 2 or len(ch) > len(LETTERS)
                or any(not isinstance(c, str) or not c.strip() for c in ch)
            ):
                problems.append(f"field '{self.fields.choices}': must be a list of 2 to 26 non-empty strings")
        rat = row.get(self.fields.rationale)
        if rat is not None and not isinstance(rat, str):
            problems.append(f"field '{self.fields.rationale}': must be a string")
        if not problems:
            try:
                self.gold(row)
            except GoldError as exc:
                problems.append(str(exc))
        return problems

    def choices(self, row: dict[str, Any]) -> list[str]:
        return [c.strip() for c in row[self.fields.choices]]

    def letters(self, row: dict[str, Any]) -> str:
        return LETTERS[: len(row[self.fields.choices])]

    def query(self, row: dict[str, Any]) -> str:
        """The question block the built-in templates show the teacher (and the replay converter records)."""
        f = self.fields
        if self.kind == "choice":
            opts = "\n".join(f"({ltr}) {c}" for ltr, c in zip(self.letters(row), self.choices(row)))
            return f"{row[f.input].strip()}\nAnswer Choices:\n{opts}"
        if self.kind == "nli":
            return f"Premise: {row[f.premise].strip()}\nHypothesis: {row[f.hypothesis].strip()}"
        return row[f.input].strip()

    def variables(self, row: dict[str, Any]) -> dict[str, Any]:
        """The per-row template variables (see :meth:`template_variables`)."""
        f = self.fields
        out: dict[str, Any] = {"query": self.query(row)}
        if self.kind in ("math", "choice", "classification"):
            out["question"] = row[f.input].strip()
        if self.kind == "choice":
            out["choices"] = self.choices(row)
            out["letters"] = list(self.letters(row))
        if self.kind == "nli":
            out["premise"] = row[f.premise].strip()
            out["hypothesis"] = row[f.hypothesis].strip()
        if self.kind in ("nli", "classification"):
            out["labels"] = list(self.labels or ())
        return out

    # ------------------------------------------------------------------ gold
    def gold(self, row: dict[str, Any]) -> float | int | str | None:
        """The row's gold answer in canonical form (float / option index / label), ``None`` when unlabelled.

        Raises :class:`GoldError` naming the field when the label is present but unreadable.
        """
        name = self.fields.label
        v = row.get(name)
        if v is None:
            return None
        where = f"field '{name}'"
        if self.kind == "math":
            return _gold_number(v, where)
        if self.kind == "choice":
            return _gold_choice(v, self.choices(row), where)
        return self._gold_label(v, where)

    def _gold_label(self, v: Any, where: str) -> str:
        labels = self.labels or ()
        if isinstance(v, int) and not isinstance(v, bool):
            if self.kind == "nli" and 0 <= v < len(labels):
                return labels[v]
            raise GoldError(f"{where}: label index {v} is not in 0..{len(labels) - 1} ({', '.join(labels)})"
                            if self.kind == "nli" else f"{where}: {v!r} is not one of the labels {', '.join(labels)}")
        if not isinstance(v, str):
            raise GoldError(f"{where}: must be a label string, got {type(v).__name__}")
        by_norm = {_norm(lab): lab for lab in labels}
        if _norm(v) in by_norm:
            return by_norm[_norm(v)]
        raise GoldError(f"{where}: unknown gold label {v!r} (the label set is: {', '.join(labels)})")

    # ------------------------------------------------------------------ teacher answers
    def parse(self, text: str | None, row: dict[str, Any]) -> ExtractedAnswer:
        """The final answer in a teacher completion (hallucinated continuations are stripped first)."""
        if self.kind == "choice":
            return extract_answer(text or "", "choice", choices=self.choices(row), letters=self.letters(row))
        if self.kind == "math":
            return extract_answer(text or "", "number")
        return extract_answer(text or "", "label", labels=list(self.labels or ()), synonyms=self.synonyms)

    def same(self, a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        if self.kind == "math":
            return numbers_equal(a, b)
        return a == b

    def to_json(self, value: Any, row: dict[str, Any]) -> Any:
        """An answer as written to output rows: a number, the option text, or the label."""
        if value is None:
            return None
        if self.kind == "math":
            return json_number(float(value))
        if self.kind == "choice":
            return self.choices(row)[int(value)]
        return value

    def answer_text(self, value: Any, row: dict[str, Any]) -> str:
        """An answer as a demonstration or hint says it: ``450``, ``(c) wooded area``, ``neutral``."""
        if self.kind == "math":
            return format_number(float(value))
        if self.kind == "choice":
            i = int(value)
            return f"({self.letters(row)[i]}) {self.choices(row)[i]}"
        return str(value)


def _gold_number(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise GoldError(f"{where}: must be a number, got a boolean")
    if isinstance(v, (int, float)):
        if not math.isfinite(float(v)):
            raise GoldError(f"{where}: must be a finite number")
        return float(v)
    if isinstance(v, str):
        try:
            return safe_eval_arithmetic(v.strip().replace(",", ""))
        except ValueError:
            pass
        # text carrying a final-answer cue, e.g. a GSM8K solution ending in "#### 72"
        ex = extract_answer(v, "number")
        if ex.ok and ex.cue not in (None, "bare") and not ex.hedged:
            return float(ex.value)  # type: ignore[arg-type]
        raise GoldError(f"{where}: {v[:60]!r} is not a number, an arithmetic expression or an answer ending in '#### N'")
    raise GoldError(f"{where}: must be a number, got {type(v).__name__}")


def _gold_choice(v: Any, choices: list[str], where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if 0 <= v < len(choices):
            return v
        raise GoldError(f"{where}: option index {v} is out of range 0..{len(choices) - 1}")
    if not isinstance(v, str) or not v.strip():
        raise GoldError(f"{where}: must be an option text, an option letter or an index")
    normed = [_norm(c) for c in choices]
    if _norm(v) in normed:
        return normed.index(_norm(v))
    m = _LETTER_GOLD_RE.match(v)
    if m:
        i = LETTERS.find(m.group(1).lower())
        if i < len(choices):
            return i
    raise GoldError(
        f"{where}: unknown gold answer {v[:60]!r}: not one of the choices nor an option letter "
        f"a-{LETTERS[len(choices) - 1]}"
    )


# --------------------------------------------------------------------------------------------------
# rationale text
# --------------------------------------------------------------------------------------------------

# The final-answer cues of synthkd.answers, as sentence openers: the rationale is what precedes the
# sentence that states the answer.
_CUE_RE = re.compile(
    r"\b(?:final\s+|correct\s+|right\s+|best\s+)?answer\s+(?:is|would\s+be|should\s+be|will\s+be)\b(?!\s+not\b)"
    r"|\b(?:final\s+)?answer(?:\s*\*\*)?\s*:|####|\\boxed\s*\{",
    re.IGNORECASE,
)
_SENTENCE_START_RE = re.compile(r"(?:[.!?](?=\s)|\n)\s*")


def split_rationale(text: str | None) -> str:
    """The reasoning of a CoT completion: the continuation cut off, then the final answer sentence.

    ``"10 * 45 is 450. The answer is (10 * 45).\\n\\nQ: next..."`` -> ``"10 * 45 is 450."``.  With no answer
    cue the whole (stripped) text is the rationale.  Markdown/LaTeX sentence openers before the cue
    ("**Answer:**") are removed with the sentence.
    """
    body = strip_continuation(text or "")
    last = None
    for m in _CUE_RE.finditer(body):
        last = m
    if last is None:
        return body.strip()
    start = 0
    for m in _SENTENCE_START_RE.finditer(body, 0, last.start()):
        start = m.end()
    return body[:start].strip()
