"""Answer consistency: keep rows whose answer matches the gold label, or the majority of the k samples
(self-consistency), with a minimum agreement.

Where the answer comes from, in order: the ``answer`` field (rows of ``synthkd generate rationales``
carry it, ``null`` when none could be read), else the answer parsed from a raw ``completion`` with
:func:`synthkd.answers.extract_answer`.  The k sample answers: an ``answers`` list, else the
``answer`` of each entry of ``samples`` (rationale rows), else parsed from ``completions``.

How answers compare: numbers with :func:`synthkd.answers.numbers_equal` (a gold given as text is
read as a number or as plain arithmetic, so SVAMP's ``"( 10.0 * 45.0 )"`` is 450 — never with
``eval``); anything else as normalised text (case, spacing and punctuation ignored), which covers
option texts and class labels.  ``kind`` picks the parser for raw completions: ``number``,
``choice`` (needs ``choices``), ``label`` (needs ``labels``); ``auto`` reads the row's ``kind``
(``math`` → number) and otherwise compares as numbers when either side is one.

Why keep the agreement threshold separate from the gold check: with gold labels, "correct but only
2 of 5 samples agree" is a useful signal of a lucky rationale; without gold, agreement is the only
signal there is.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Literal

from pydantic import Field

from synthkd.filters.base import OpConfig, Reject, RowOperator
from synthkd.filters.text import FieldProblem

_NORM_RE = re.compile(r"[\W_]+")
_BOOL_KEYS = {"true": "yes", "false": "no"}  # kind boolean reads both as one answer


class ConsistencyConfig(OpConfig):
    op: str = "consistency"
    mode: Literal["gold", "majority"] = Field("gold", description="gold: answer must equal the gold label; majority: answer must be the samples' majority.")
    kind: Literal["auto", "number", "choice", "label", "boolean"] = Field("auto", description="How answers are parsed from completions and compared (boolean: yes/no, true/false).")
    min_agreement: float | None = Field(None, ge=0, le=1, description="Minimum share of the k samples agreeing (with gold in gold mode, with the majority in majority mode; default 0.5 there).")
    answer_field: str = Field("answer", description="The row's answer (null = none could be read).")
    completion_field: str = Field("completion", description="Raw teacher text to parse when answer_field is absent.")
    gold_field: str = Field("gold", description="The gold label (gold mode).")
    answers_field: str = Field("answers", description="The k sample answers (list).")
    samples_field: str = Field("samples", description="Fallback: list of {answer: ...} (rationale rows).")
    completions_field: str = Field("completions", description="Fallback: k raw completions to parse.")
    choices_field: str = Field("choices", description="Option texts (kind choice).")
    labels: list[str] | None = Field(None, description="Class labels (kind label).")
    drop_hedged: bool = Field(False, description="Drop a parsed answer that offers several alternatives.")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Consistency(RowOperator):
    op = "consistency"
    Config = ConsistencyConfig
    summary = "Keep rows whose answer equals the gold label (or the samples' majority), with a minimum agreement."

    def __init__(self, config: ConsistencyConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.agreements: Counter = Counter()

    def needs(self) -> list[tuple[str, ...]]:
        c = self.cfg
        if c.mode == "gold":
            return [(c.answer_field, c.completion_field), (c.gold_field,)]
        return [(c.answers_field, c.samples_field, c.completions_field, c.answer_field, c.completion_field)]

    def preview_field(self) -> str | None:
        return None

    # -- reading values ---------------------------------------------------------------------------
    def _kind(self, row: dict[str, Any]) -> str:
        k = self.cfg.kind
        if k != "auto":
            return k
        rk = row.get("kind")
        return {"math": "number", "choice": "choice", "nli": "label", "classification": "label"}.get(str(rk), "number")

    def _parse(self, text: Any, row: dict[str, Any]) -> tuple[Any, str | None]:
        from synthkd.answers import NLI_LABELS, NLI_SYNONYMS, extract_answer

        if not isinstance(text, str):
            return None, "completion is not text"
        kind = self._kind(row)
        kw: dict[str, Any] = {}
        if kind == "choice":
            choices = row.get(self.cfg.choices_field)
            if not isinstance(choices, list):
                raise FieldProblem(self.cfg.choices_field, "missing (kind choice needs the options)")
            kw["choices"] = [str(c) for c in choices]
        elif kind == "label":
            labels = self.cfg.labels or (NLI_LABELS if row.get("kind") == "nli" else None)
            if not labels:
                raise FieldProblem("labels", "not configured (kind label needs 'labels')")
            kw["labels"] = labels
            if labels == NLI_LABELS:
                kw["synonyms"] = NLI_SYNONYMS
        ex = extract_answer(text, kind, **kw)  # type: ignore[arg-type]
        if ex.value is None:
            return None, ex.reason
        if ex.hedged and self.cfg.drop_hedged:
            return None, "hedged answer"
        if kind == "choice":
            return kw["choices"][int(ex.value)], None
        return ex.value, None

    def _answer(self, row: dict[str, Any]) -> tuple[Any, str | None]:
        c = self.cfg
        if c.answer_field in row:
            v = row[c.answer_field]
            return v, (None if v is not None else (row.get("answer_reason") or "answer is null"))
        if c.completion_field in row:
            return self._parse(row[c.completion_field], row)
        raise FieldProblem(f"{c.answer_field}' or '{c.completion_field}")

    def _samples(self, row: dict[str, Any]) -> list[Any] | None:
        c = self.cfg
        if isinstance(row.get(c.answers_field), list):
            return list(row[c.answers_field])
        s = row.get(c.samples_field)
        if isinstance(s, list) and s and all(isinstance(x, dict) for x in s):
            return [x.get("answer") for x in s]
        comps = row.get(c.completions_field)
        if isinstance(comps, list):
            return [self._parse(t, row)[0] for t in comps]
        return None

    def _numeric(self, v: Any) -> float | None:
        from synthkd.answers import extract_number, safe_eval_arithmetic

        if _is_num(v):
            return float(v)
        if isinstance(v, str):
            s = v.strip().replace(",", "")
            try:
                return float(s)
            except ValueError:
                pass
            try:
                return safe_eval_arithmetic(s)
            except ValueError:
                return extract_number(s)
        return None

    def _key(self, v: Any, numeric: bool) -> Any:
        """A hashable comparison key (None: unreadable)."""
        if v is None:
            return None
        if isinstance(v, bool) and not numeric:  # a boolean answer against a "yes"/"no"/"true" gold
            return "yes" if v else "no"
        if numeric:
            x = self._numeric(v)
            return None if x is None else round(x, 6)
        if _is_num(v):
            return round(float(v), 6)
        key = _NORM_RE.sub(" ", str(v).casefold()).strip() or None
        return _BOOL_KEYS.get(key, key) if key else None

    def _same(self, a: Any, b: Any, numeric: bool) -> bool:
        from synthkd.answers import numbers_equal

        if numeric:
            return numbers_equal(self._numeric(a), self._numeric(b))
        ka, kb = self._key(a, False), self._key(b, False)
        return ka is not None and ka == kb

    # -- the decision ------------------------------------------------------------------------------
    def check(self, row: dict[str, Any]) -> Reject | None:
        c = self.cfg
        samples = self._samples(row)
        if c.mode == "gold":
            if c.gold_field not in row:
                raise FieldProblem(c.gold_field)
            gold = row[c.gold_field]
            answer, why = self._answer(row)
            numeric = self._kind(row) == "number" if c.kind != "auto" else (
                row.get("kind") == "math" or _is_num(answer) or _is_num(gold))
            if gold is None or self._key(gold, numeric) is None:
                return Reject("gold unreadable", f"gold {gold!r}")
            if answer is None:
                return Reject("no answer", why)
            if not self._same(answer, gold, numeric):
                return Reject("wrong answer", f"answer {answer!r}, gold {gold!r}")
            info: dict[str, Any] = {"answer": answer, "gold": gold}
            if samples:
                agree = sum(1 for s in samples if self._same(s, gold, numeric)) / len(samples)
                info["agreement"] = round(agree, 4)
                self.agreements[round(agree, 1)] += 1
                if c.min_agreement is not None and agree < c.min_agreement - 1e-9:
                    return Reject("low agreement", f"{agree:.0%} of {len(samples)} samples give gold {gold!r}")
            elif c.min_agreement is not None and _is_num(row.get("agreement")):
                if row["agreement"] < c.min_agreement - 1e-9:
                    return Reject("low agreement", f"agreement {row['agreement']:.0%}")
            row["consistency"] = info
            return None
        # majority mode
        answer = None
        has_answer = c.answer_field in row or c.completion_field in row
        if has_answer:
            answer, why = self._answer(row)
            if answer is None and not samples:
                return Reject("no answer", why)
        if not samples:
            if has_answer:
                samples = [answer]
            else:
                raise FieldProblem(c.answers_field)
        numeric = c.kind == "number" or (c.kind == "auto" and (row.get("kind") == "math" or any(_is_num(s) for s in samples)))
        keys = [self._key(s, numeric) for s in samples]
        counts = Counter(k for k in keys if k is not None)
        if not counts:
            return Reject("no answer", f"none of {len(samples)} samples has a readable answer")
        top_n = max(counts.values())
        top_key = next(k for k in keys if k is not None and counts[k] == top_n)  # ties: the first seen
        majority = samples[keys.index(top_key)]
        share = top_n / len(samples)
        self.agreements[round(share, 1)] += 1
        need = 0.5 if c.min_agreement is None else c.min_agreement
        if share < need - 1e-9:
            return Reject("low agreement", f"majority {majority!r} has {share:.0%} of {len(samples)} samples")
        if has_answer and answer is not None and not self._same(answer, majority, numeric):
            return Reject("disagrees with majority", f"answer {answer!r}, majority {majority!r}")
        if has_answer and answer is None:
            return Reject("no answer", "the row's own answer could not be read")
        row["consistency"] = {"answer": answer if answer is not None else majority, "majority": majority,
                              "agreement": round(share, 4)}
        return None

    def report(self) -> dict[str, Any]:
        if not self.agreements:
            return {}
        return {"agreement_histogram": {f"{k:.1f}": v for k, v in sorted(self.agreements.items())}}
