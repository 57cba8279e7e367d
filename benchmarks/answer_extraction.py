#!/usr/bin/env python
"""Measure :mod:`synthkd.answers` on real recorded teacher outputs.

Datasets (all under the shared data folder, see its README.md):

* CQA, SVAMP, e-SNLI, ANLI-R1: raw PaLM-540B few-shot chain-of-thought completions from
  *Distilling step-by-step* (``distilling_step_by_step/<ds>/llm/<split>_CoT_<k>.json``), row-aligned
  with the gold files (``<ds>_<split>.json``).
* GSM8K: the GPT-3 6B/175B solutions of ``gsm8k/example_model_solutions.jsonl`` (4 model fields,
  each ``{"is_correct", "solution"}``), scored against ``ground_truth`` and cross-checked against the
  ``#### N`` line of ``gsm8k/test.jsonl``.

For every dataset it prints: rows; share of outputs with an extracted answer; share of well-formed
outputs (those with an answer cue) that were parsed; agreement of the extracted answer with the
gold label (over all rows, and over parsed rows); for GSM8K also the agreement of our
correct/incorrect judgement with the recorded ``is_correct``.  Then every unparsed output and every
disagreement is put into a category, with counts and real examples (``--show-failures N``).

Usage::

    python benchmarks/answer_extraction.py [--data-dir PATH] [--show-failures 2] [--no-failures]
        [--show-fallbacks 50 --seed 0]

The data folder defaults to ``$SYNTHKD_SHARED_DATA`` or else ``../shared/data`` next to the repo.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import json
import math
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from synthkd.answers import (
    NLI_LABELS,
    NLI_SYNONYMS,
    ExtractedAnswer,
    _proposition,  # the reader's rule asks whether a question is a yes/no question
    extract_answer,
    extract_choice,
    numbers_equal,
    safe_eval_arithmetic,
    strip_continuation,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.99
NOTES: list[str] = []  # facts about the data found while loading, printed under the table
GSM8K_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def resolve_data_dir(arg: str | None) -> Path:
    if arg:
        p = Path(arg)
        return p if p.is_absolute() else (Path.cwd() / p).resolve()
    env = os.environ.get("SYNTHKD_SHARED_DATA")
    if env:
        return Path(env).resolve()
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_palm_cot(data_dir: Path, ds: str, split: str) -> list[str]:
    """The PaLM completions of one split, concatenated in shard order (``_CoT_0``, ``_CoT_1`` ...)."""
    pattern = str(data_dir / "distilling_step_by_step" / ds / "llm" / f"{split}_CoT_*.json")
    files = sorted(glob.glob(pattern), key=lambda p: int(p.rsplit("_CoT_", 1)[1].split(".")[0]))
    if not files:
        raise FileNotFoundError(pattern)
    out: list[str] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            out.extend(json.load(fh))
    return out


def load_palm_gold(data_dir: Path, ds: str, split: str) -> list[dict]:
    return _jsonl(data_dir / "distilling_step_by_step" / ds / f"{ds}_{split}.json")


# --------------------------------------------------------------------------------------------------
# per-row records
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    text: str
    ans: ExtractedAnswer
    gold: object
    agree: bool
    pred_show: str  # the prediction as shown in reports
    gold_show: str
    recorded_correct: bool | None = None  # GSM8K only
    reference: object = None  # teacher_outputs: the source's own extraction, in the same value space
    has_reference: bool = False  # the source records its own extraction
    kind: str = ""
    question: str = ""  # teacher_outputs: the question the output answers (the reader's rule reads it)
    choices: list[str] = field(default_factory=list)  # teacher_outputs, kind choice: the option texts, normalised


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    categorise: Callable[[Row], str] | None = None

    @property
    def n(self) -> int:
        return len(self.rows)

    def stats(self) -> dict[str, float | int | None]:
        n = self.n
        answered = sum(r.ans.value is not None for r in self.rows)
        well = [r for r in self.rows if r.ans.span is not None and r.ans.cue != "bare"]
        well_parsed = sum(r.ans.value is not None for r in well)
        agree = sum(r.agree for r in self.rows)
        out: dict[str, float | int | None] = {
            "rows": n,
            "answered": answered / n,
            "well_formed": len(well) / n,
            "well_parsed": well_parsed / len(well) if well else float("nan"),
            "agree_all": agree / n,
            "agree_answered": agree / answered if answered else float("nan"),
            "judge_agree": None,
            "recorded_acc": None,
            "hedged": sum(r.ans.hedged for r in self.rows) / n,
        }
        if self.rows and self.rows[0].recorded_correct is not None:
            out["judge_agree"] = sum(r.agree == r.recorded_correct for r in self.rows) / n
            out["recorded_acc"] = sum(bool(r.recorded_correct) for r in self.rows) / n
        return out


# --------------------------------------------------------------------------------------------------
# failure categories
# --------------------------------------------------------------------------------------------------

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+")
_SPACE_RE = re.compile(r"\s+")


def _repeated_tail(text: str) -> bool:
    """The text ends with one unit of 1-80 characters said 5+ times ("181818...", spaces ignored).

    (A backreference regex, ``(.{1,80}?)(?:\\s*\\1){4,}\\s*$``, took minutes on some LaTeX outputs.)
    """
    t = _SPACE_RE.sub("", text)
    return any(len(t) >= 5 * k and t[-5 * k :] == t[-k:] * 5 for k in range(1, 81))


def _is_degenerate(text: str) -> bool:
    """A sentence said 3+ times, a unit repeated 5+ times at the end ("181818..."), or the model
    copying its question back ("...?\\nA: <question again>")."""
    sents = [s.strip() for s in _SENT_SPLIT.split(text) if len(s.strip()) > 10]
    if sents and Counter(sents).most_common(1)[0][1] >= 3:
        return True
    if _repeated_tail(text[-400:]):
        return True
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 10]
    if lines and Counter(lines).most_common(1)[0][1] >= 2 and len(lines) >= 6:
        return True
    return bool(re.search(r"\?\nA: ", text))


def unparsed_category(r: Row) -> str:
    body = strip_continuation(r.text)
    if r.ans.reason == "no answer cue":
        if _is_degenerate(body):
            return "unparsed: no answer cue - degenerate output (repeats itself / echoes the question)"
        if not re.search(r"[.!?)\]]\s*$", body) or body.count("<<") > body.count(">>"):
            return "unparsed: no answer cue - cut off mid-sentence (length limit) before any answer"
        return "unparsed: no answer cue - rationale ends without stating an answer"
    return f"unparsed: cue found, but {r.ans.reason}"


def _n(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def cqa_category(r: Row, choices: list[str]) -> str:
    span = r.ans.span or ""
    if r.ans.alternatives:
        offered = {choices[int(i)] for i in (r.ans.value, *r.ans.alternatives) if i is not None}
        if r.gold in offered:
            return "hedge: span offers several options incl. gold; we take the last, it is not gold (see ExtractedAnswer.alternatives)"
        return "hedge: span offers several options, none is gold (model error)"
    m = re.match(r"\s*\(([a-e])\)\s*(.*)$", span)
    if not m:
        return "disagree: no option letter; option text names a non-gold option (model error)"
    letter_idx = "abcde".index(m.group(1))
    rest = _n(m.group(2))
    if not rest:
        return "disagree: letter only, names a non-gold option (model error)"
    exact_rest = [i for i, c in enumerate(choices) if _n(c) == rest]
    if exact_rest and letter_idx not in exact_rest:
        if choices[letter_idx] == r.gold:
            return "disagree: letter and text name different options; the LETTER is gold (we follow the text)"
        return "disagree: letter and text name different non-gold options (model error)"
    if exact_rest:
        return "disagree: letter and option text agree on a non-gold option (model error)"
    rest_idx = extract_choice(m.group(2), choices)
    if rest_idx is None:
        if difflib.SequenceMatcher(None, rest, _n(choices[letter_idx])).ratio() >= 0.8:
            return (
                "disagree: letter names a non-gold option; text after it is a misspelling of that option (model error)"
            )
        return "disagree: letter names a non-gold option; text after it is no option at all (model invented it)"
    if rest_idx == letter_idx:
        return "disagree: letter names a non-gold option; text after it contains that option (model error)"
    return "disagree: letter names a non-gold option; text after it contains another option (we follow the letter)"


_RESULT_RE = re.compile(r"=\s*\$?\s*(-?[\d,]*\.?\d+)")


def svamp_category(r: Row) -> str:
    if r.ans.alternatives:
        if any(numbers_equal(v, r.gold) for v in r.ans.alternatives):
            return "hedge: span gives several answers incl. gold; we take the first, it is not gold"
        return "hedge: span gives several answers, none is gold (model error)"
    body = strip_continuation(r.text)
    m = re.search(r"answer is", body, re.IGNORECASE)
    rationale = body[: m.start()] if m else body
    stated = [float(x.replace(",", "")) for x in _RESULT_RE.findall(rationale)]
    if stated and numbers_equal(stated[-1], r.ans.value):
        return "disagree: answer expression = the rationale's own last result; both wrong (model error)"
    if stated and numbers_equal(stated[-1], r.gold):
        return "disagree: rationale's last result is gold but the answer expression differs (model inconsistency)"
    return "disagree: answer expression wrong, no matching result stated in the rationale (model error)"


def nli_category(r: Row) -> str:
    return f"disagree: model says {r.pred_show}, gold {r.gold_show} (model error)"


def gsm8k_category(r: Row) -> str:
    """Category for a GSM8K row whose correctness judgement differs from the recorded one,
    or whose answer could not be read."""
    if r.ans.value is None:
        return unparsed_category(r)
    return (
        "judgement differs from recorded is_correct: we say "
        + ("correct" if r.agree else "incorrect")
        + (" (recorded incorrect)" if not r.recorded_correct else " (recorded correct)")
    )


# --------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------


def run_cqa(data_dir: Path, split: str) -> Result:
    texts = load_palm_cot(data_dir, "cqa", split)
    gold = load_palm_gold(data_dir, "cqa", split)
    assert len(texts) == len(gold), (len(texts), len(gold))
    res = Result(f"CQA {split}")
    t0 = time.perf_counter()
    for text, g in zip(texts, gold):
        a = extract_answer(text, "choice", choices=g["choices"], question=g["question"])
        agree = a.value is not None and g["choices"][a.value] == g["answer"]
        res.rows.append(Row(text, a, g["answer"], agree, "" if a.value is None else g["choices"][a.value], g["answer"],
                            kind="choice", question=g["question"], choices=[_n(c) for c in g["choices"]]))
    res.seconds = time.perf_counter() - t0
    choices_of = {id(r): g["choices"] for r, g in zip(res.rows, gold)}
    res.categorise = lambda r: cqa_category(r, choices_of[id(r)])
    return res


def run_svamp(data_dir: Path, split: str) -> Result:
    texts = load_palm_cot(data_dir, "svamp", split)
    gold = load_palm_gold(data_dir, "svamp", split)
    assert len(texts) == len(gold), (len(texts), len(gold))
    res = Result(f"SVAMP {split}")
    t0 = time.perf_counter()
    for text, g in zip(texts, gold):
        gv = safe_eval_arithmetic(g["label"])
        a = extract_answer(text, "number", question=g["input"])
        agree = numbers_equal(a.value, gv)
        res.rows.append(Row(text, a, gv, agree, repr(a.value), f"{gv:g} = {g['label']}", kind="number",
                            question=g["input"]))
    res.seconds = time.perf_counter() - t0
    res.categorise = svamp_category
    return res


def run_nli(data_dir: Path, ds: str, split: str, name: str) -> Result:
    texts = load_palm_cot(data_dir, ds, split)
    gold = load_palm_gold(data_dir, ds, split)
    assert len(texts) == len(gold), (len(texts), len(gold))
    res = Result(name)
    t0 = time.perf_counter()
    for text, g in zip(texts, gold):
        gl = NLI_LABELS[int(g["label"])]
        a = extract_answer(text, "label", labels=NLI_LABELS, synonyms=NLI_SYNONYMS)
        res.rows.append(Row(text, a, gl, a.value == gl, str(a.value), gl, kind="label"))
    res.seconds = time.perf_counter() - t0
    res.categorise = nli_category
    return res


def run_gsm8k(data_dir: Path) -> list[Result]:
    rows = _jsonl(data_dir / "gsm8k" / "example_model_solutions.jsonl")
    test = _jsonl(data_dir / "gsm8k" / "test.jsonl")
    # gold: the "A: N" line of ground_truth, cross-checked against test.jsonl's "#### N"
    by_q = {t["question"]: t for t in test}
    gold: list[float] = []
    mismatch = checked = 0
    for r in rows:
        g = extract_answer(r["ground_truth"], "number").value
        t = by_q.get(r["question"])
        if t is not None:
            g2 = extract_answer(t["answer"], "number").value
            checked += 1
            if not numbers_equal(g, g2):
                mismatch += 1
        if not isinstance(g, float):
            raise ValueError(f"unreadable GSM8K ground truth: {r['ground_truth'][-80:]!r}")
        gold.append(g)
    NOTES.append(
        f"GSM8K gold: the `A: N` line of `ground_truth`; cross-checked against `#### N` in test.jsonl for "
        f"{checked:,}/{len(rows):,} questions, {mismatch} mismatches."
    )
    out = []
    for model in GSM8K_MODELS:
        res = Result(f"GSM8K {model}")
        t0 = time.perf_counter()
        for r, g in zip(rows, gold):
            sol = r[model]["solution"]
            a = extract_answer(sol, "number", question=r["question"])
            agree = numbers_equal(a.value, g)
            res.rows.append(
                Row(sol, a, g, agree, repr(a.value), f"{g:g}", recorded_correct=bool(r[model]["is_correct"]),
                    kind="number", question=r["question"])
            )
        res.seconds = time.perf_counter() - t0
        res.categorise = gsm8k_category
        out.append(res)
    return out


# --------------------------------------------------------------------------------------------------
# teacher_outputs/: published outputs of other teachers and prompt styles (see its README.md)
# --------------------------------------------------------------------------------------------------

TEACHER_SOURCES = ("zeroeval", "mmlu_pro", "rereading", "bbh", "plan_and_solve", "skythought", "theoremqa", "judgebench")
_INLINE_OPTION_RE = re.compile(r"\(([a-j])\):?\s")
_OPTION_TAIL_RE = re.compile(r"[\s.;,]*(?:Which (?:option|one) is correct\?)?\s*$")


def inline_options(question: str) -> list[str]:
    """Option texts written inline in a question, "(a) X; (b) Y. ..." (TheoremQA); four blanks when none are."""
    marks = list(_INLINE_OPTION_RE.finditer(question))
    if not marks:
        return [""] * 4  # the options are in a figure: only the letters can be read
    ends = [m.start() for m in marks[1:]] + [len(question)]
    return [_OPTION_TAIL_RE.sub("", question[m.end() : e]).strip() for m, e in zip(marks, ends)]

_BOOL_GOLD = {"yes": True, "true": True, "no": False, "false": False}
#: JudgeBench's Arena-Hard verdicts: ``[[A>>B]]`` counts as ``A>B``.
VERDICT_LABELS = ["A>B", "A=B", "B>A"]
VERDICT_SYNONYMS = {"A>B": ["A>>B", "B<A", "B<<A"], "B>A": ["B>>A", "A<B", "A<<B"], "A=B": ["B=A", "tie"]}
#: Coin flip (Plan-and-Solve): the question is always "Is the coin still heads up?"; the outputs state
#: the coin's final side ("Therefore, the coin is tails up."), so the task is read as a two-label task
#: whose labels are the sides, "yes"/"no" being their synonyms.
COIN_LABELS = ["heads up", "tails up"]
COIN_SYNONYMS = {"heads up": ["yes", "heads"], "tails up": ["no", "tails"]}


try:  # the boolean kind (yes/no, true/false); older versions of synthkd.answers read it as a label
    from synthkd.answers import BOOLEAN_KIND as _BK

    BOOL_KIND: str = _BK
    BOOL_KWARGS: dict = {}
except ImportError:  # pragma: no cover - only for measuring an older synthkd.answers
    BOOL_KIND = "label"
    BOOL_KWARGS = {"labels": ["yes", "no"], "synonyms": {"yes": ["true"], "no": ["false"]}}


def BOOL_GOLD(gold: str) -> object:  # noqa: N802 - a constant-like converter
    v = _BOOL_GOLD[gold.strip().lower()]
    return v if BOOL_KIND != "label" else ("yes" if v else "no")


@dataclass
class TeacherSpec:
    """How one normalised row is read: the kind, its keyword arguments, the gold value."""

    kind: str
    kwargs: dict
    gold: object


def teacher_spec(r: dict) -> TeacherSpec | None:
    """The reading of one ``normalized.jsonl.gz`` row; None for free-form golds (no kind reads them)."""
    kind, gold = r["kind"], r["gold"]
    if r["dataset"] == "coin_flip":
        return TeacherSpec("label", {"labels": COIN_LABELS, "synonyms": COIN_SYNONYMS}, COIN_LABELS[0 if gold == "yes" else 1])
    if kind == "number":
        return TeacherSpec("number", {}, float(gold))
    if kind == "choice":
        choices = r.get("choices")
        if choices is None:  # TheoremQA: options inline in the question, "(a) X; (b) Y; ..."
            choices = inline_options(r["question"])
        return TeacherSpec(
            "choice", {"choices": list(choices), "letters": "abcdefghij"[: len(choices)]}, "ABCDEFGHIJ".index(gold)
        )
    if kind == "label":
        if gold.lower() in _BOOL_GOLD:
            return TeacherSpec(BOOL_KIND, BOOL_KWARGS, BOOL_GOLD(gold))
        if gold in VERDICT_LABELS:
            return TeacherSpec("label", {"labels": VERDICT_LABELS, "synonyms": VERDICT_SYNONYMS}, gold)
    return None


def _reference(spec: TeacherSpec, pred: str | None) -> object:
    """The source's own extraction, read into the same value space (None when it found nothing)."""
    if pred is None or not str(pred).strip() or str(pred).strip().lower() in ("none", "null"):
        return None
    a = extract_answer(str(pred), spec.kind, **spec.kwargs)  # type: ignore[arg-type]
    return a.value


def _same(a: object, b: object, kind: str) -> bool:
    if a is None or b is None:
        return False
    if kind == "number":
        # TheoremQA golds are rounded (0.02 for 0.0199...): 1 % relative tolerance
        return numbers_equal(a, b) or numbers_equal(a, b, rel_tol=1e-2)
    return a == b


def load_teacher_outputs(data_dir: Path) -> list[dict]:
    import gzip

    out: list[dict] = []
    base = data_dir / "teacher_outputs"
    for src in TEACHER_SOURCES:
        path = base / src / "normalized.jsonl.gz"
        if not path.is_file():
            NOTES.append(f"teacher_outputs/{src}: {path} missing, skipped.")
            continue
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


def _group(r: dict) -> str:
    ds = r["dataset"].split("/")[-1]
    if r["source"] in ("bbh", "plan_and_solve"):
        return f"{r['source']} {ds}"
    if r["source"] == "theoremqa":
        return f"{r['source']} {r['model']}"
    return f"{r['source']} {r['model']}" + (f" {ds}" if r["source"] == "zeroeval" else "")


def run_teacher_outputs(data_dir: Path) -> list[Result]:
    rows = load_teacher_outputs(data_dir)
    groups: dict[str, Result] = {}
    free: Counter[str] = Counter()
    for r in rows:
        spec = teacher_spec(r)
        name = _group(r)
        if spec is None:
            free[name] += 1
            continue
        res = groups.setdefault(name, Result(name, categorise=teacher_category))
        t0 = time.perf_counter()
        # the question goes with the output, as a reader (and evaluation) has it
        a = extract_answer(r["output"], spec.kind, question=r.get("question"), **spec.kwargs)  # type: ignore[arg-type]
        res.seconds += time.perf_counter() - t0
        row = Row(r["output"], a, spec.gold, _same(a.value, spec.gold, spec.kind), _show(a.value, spec),
                  _show(spec.gold, spec))
        if "source_pred" in r:
            row.reference = _reference(spec, r["source_pred"])
            row.has_reference = True
        row.kind = spec.kind
        row.question = r.get("question") or ""
        if spec.kind == "choice":
            row.choices = [" ".join(re.sub(r"[^0-9a-z]+", " ", str(c).lower()).split()) for c in spec.kwargs["choices"]]
        res.rows.append(row)
    if free:
        NOTES.append(
            "teacher_outputs rows with free-form golds (lists, strings, LaTeX expressions: no answer kind reads them) "
            "are not scored: " + ", ".join(f"{k} {v}" for k, v in sorted(free.items())) + "."
        )
    return list(groups.values())


def _show(v: object, spec: TeacherSpec) -> str:
    if v is None:
        return "None"
    if spec.kind == "choice" and isinstance(v, int):
        return "ABCDEFGHIJ"[v]
    return repr(v) if spec.kind == "number" else str(v)


_TRACE_OPEN_RE = re.compile(r"<\|begin_of_thought\|>|<think>")
_TRACE_CLOSE_RE = re.compile(r"<\|end_of_thought\|>|</think>")


_DECLINES_RE = re.compile(
    r"\b(?:(?:is|are)\s+not\s+(?:one\s+of|among|in|listed\s+in|available\s+in)\s+the\s+(?:given\s+|provided\s+|answer\s+)?(?:options|choices)"
    r"|none\s+of\s+(?:the\s+(?:given\s+|provided\s+|answer\s+)?(?:options|choices)|them\s+match)"
    r"|(?:options|choices)\s+(?:provided\s+|given\s+)?do\s+not\s+(?:include|contain|match)"
    r"|not\s+(?:directly\s+)?provided\s+in\s+the\s+options"
    r"|cannot\s+(?:be\s+)?(?:determine[d]?|provide|answer|calculate[d]?|solve[d]?)"
    r"|let\s+me\s+know\s+if\s+you|please\s+provide|(?:need|without)\s+(?:more|additional)\s+information"
    r"|insufficient\s+information|not\s+enough\s+information|cannot\s+conclude|can\s*not\s+be\s+concluded)",
    re.IGNORECASE,
)
#: a chat template's turn marker in the output: a base model writing the next turn of the template
_TURN_MARKER_RE = re.compile(r"<\|im_start\|>|<\|start_header_id\|>|<\|eot_id\|>|\[INST\]|<start_of_turn>")
#: a last line that is a list item with nothing after its marker, or the heading of a step ("3. Time (t)")
_EMPTY_ITEM_RE = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,2}[.)]|[-*])[ \t]*(?:[A-Z][\w ]{0,30}(?:\([^()]{1,10}\))?)?[ \t:]*$")
#: variables in a stated answer: a lone letter or a subscripted one ("3π:4r3", "2x + 2", "z_1", "3L^2");
#: "e" and "i" are constants, SI units after a number are not variables
_VARIABLE_RE = re.compile(r"(?<![A-Za-z\\])(?:[a-df-hj-zA-Z](?:_\{?\w+\}?|\d)?)(?![A-Za-z(])|[\u0391-\u03a0\u03a2-\u03a9\u03b1-\u03c0\u03c2-\u03c9]|\\(?:varepsilon|epsilon|alpha|beta|gamma|delta|theta|lambda|mu|sigma|omega|phi|Phi|rho|tau)\b")
_BOUND_RE = re.compile(r"\b(?:(?:less|more|fewer|greater|smaller|larger|higher|lower)\s+than(?:\s+or\s+equal\s+to)?|at\s+(?:least|most)"
                       r"|up\s+to|no\s+more\s+than)\s+\$?\d[^\s]*|[\u2264\u2265<>]=?\s*\$?[\de]")
_TWO_RESULTS_RE = re.compile(r"\b(?:is|are|=)\s+\$?-?\d[^;]{0,80}?(?:,\s*|\s+)(?:and|so|while)\b[^;]{0,120}?\b(?:is|are|=)\s+\$?-?\d"
                             r"|\b(?:is|are)\s+\$?-?\d[^;]{0,80}?,?\s+and\s+\$?-?\d")
_HEDGED_CLAIM_RE = re.compile(r"\b(?:likely|probably|possibly|perhaps|may|might|could\s+be|marginally|if\s+and\s+only\s+if|"
                              r"or\s+is|in\s+terms\s+of)\b", re.IGNORECASE)
_UNCLEAR_RE = re.compile(r"/\s*[\w.]+\s*\(|(?<![\w\\])log\s*\(|\\log\b|(?<![A-Za-z\\])i\s*\\?pi|\\frac\{i|\bi\s*[*/]")
_ASKS_TWO_RE = re.compile(r"\bhow\s+many\s+[a-z-]+\s+and\s+[a-z-]+|\bhow\s+many\b[^?.]*\band\b[^?.]*\?", re.IGNORECASE)
_NOT_A_NUMBER_RE = re.compile(r"\b(?:does\s+not\s+exist|doesn't\s+exist|is\s+undefined|diverges|is\s+not\s+convergent|converges\.?$|"
                              r"does\s+converge|"
                              r"is\s+infinit[ey]|(?:is|be)\s+infinity|goes\s+to\s+infinity|to\s+infinity)\b", re.IGNORECASE)
_VECTOR_RE = re.compile(r"(?:\bis|=|:)\s*\$?\s*[\[(]\s*-?[\d.]+(?:\s*,\s*-?[\d.]+)+\s*[\])]\$?\s*\.?\s*$")  # "... is [2, 0.26, 11]."
_DECLINES_MORE_RE = re.compile(r"\bcannot\s+be\s+(?:expressed|found|computed|evaluated|simplified)|can\s+(?:only\s+)?be\s+"
                               r"(?:evaluated|computed|approximated|found)\s+(?:numerically|using)|(?:use|using)\s+(?:a\s+)?"
                               r"(?:numerical\s+(?:software|methods?|solver)|calculator|computer)", re.IGNORECASE)
_ASKS_DIFFERENCE_RE = re.compile(r"\bhow\s+many\s+(?:more|fewer|less)\b.*\bthan\b", re.IGNORECASE)
_NAMED_IN_EXPR_RE = re.compile(r"[A-Za-z]{2,}\s*[-+*/]\s*[\d(]|[\d)]\s*[-+*/]\s*[A-Za-z]{2,}")
_UNIT_AFTER_NUMBER_RE = re.compile(r"\d\s*(?:[kmcµnM]?(?:m|s|g|N|J|W|V|A|K|Hz|Pa)(?:\s*[/^·*]\s*\w+)*)\b")


def _norm_bool(span: str) -> bool | None:
    key = re.sub(r"[^a-z]", "", span.lower())
    return {"true": True, "false": False, "yes": True, "no": False}.get(key)


#: The reader's rule: why a careful reader finds no answer in an output either.  Each class is a property
#: of the text that a reader can check, in this order; an output in none of them counts as one with an
#: answer to find (if we do not parse it, it is a miss).  Never decided from our own extraction alone:
#: where the extractor's reason is used ("hedge", "free variables") the span it names is checked too.
NO_ANSWER_CLASSES = {
    "empty": "the output is empty or whitespace",
    "echo": "the output is the prompt again: a chat template's turn marker (a base model writing the next turn) "
            "or a last sentence copied from the question",
    "truncated": "cut off by the length limit: a reasoning trace opened and never closed, a last sentence "
                 "without its end, a last list item or step heading with nothing after it",
    "degenerate": "the output repeats itself (a sentence 3+ times, a unit 5+ times at its end) or echoes a question",
    "declines": "the model gives no answer: no option fits, it cannot determine it or express it, it leaves the "
                "computation to numerical software, it asks for more information",
    "hedge": "the final answer names several different options or values ('A, C, and D', 'yes or no'), or hedges "
             "its claim ('Object O is likely a circle-like polygon, but ...', 'if and only if', 'marginally stable')",
    "free variables": "the stated answer is an expression with unknowns, unknown functions or named quantities "
                      "('3π:4r3', '2x + 2', '(some - 8)', 'ε/3 volts', '1 - Φ(2/√3)'): no value",
    "bound": "the answer (or, with no cue, the last sentence) states only a bound ('less than 90°', 'at least 3', "
             "'greater than or equal to 1e-24', '|f(z)| ≤ e')",
    "several values": "the final statement gives two or more results, each after its own verb ('the multiplicity is 1, "
                      "and P'(2) + P''(2) is 192'), for a question with one gold",
    "unclear": "the stated expression has no single reading: 'a/b(c)' precedence, a log of no stated base, a "
               "complex value",
    "other kind": "the answer is of another kind: True/False or a number for an item with the other gold (also a "
                  "yes/no gold for a question that is no yes/no question), a matrix for a yes/no gold, a "
                  "vector or list ('[2, 0.26, 11]'), 'does not exist' / 'infinite' / 'diverges' for a number, or two "
                  "quantities stated apart ('29.3 skittles and 27.7 erasers') where the question asks one or two "
                  "('How many apples and pears ...?')",
    "no value": "an answer cue, but what it introduces states no number at all ('Dave added more apps than he "
                "deleted', '(total price in millions)')",
    "no option named": "no answer cue, and the last three paragraphs name no option (no letter, no option text): "
                       "the output stops in its working",
    "other question": "the question asks for a difference ('How many more X than Y?') and the final statement "
                      "gives only the separate quantities ('9 storks and 4 birds'), no difference",
}


def no_answer_category(r: Row) -> str | None:
    """Why a reader finds no answer either (None: a reader would find one, or we cannot tell); see
    :data:`NO_ANSWER_CLASSES`.  The label is ``"no answer to find: <class>"``."""
    body = strip_continuation(r.text).strip()
    if not body:
        return "no answer to find: empty"
    if _TURN_MARKER_RE.search(body):
        return "no answer to find: echo"
    sents = [x.strip() for x in _SENT_SPLIT.split(body) if len(x.strip()) > 20]
    if r.question and sents and r.ans.value is None and r.kind != "boolean" and _restates_question(sents[-1], r.question):
        return "no answer to find: echo"  # (a yes/no answer may well restate the question: it is its claim)
    if _TRACE_OPEN_RE.search(body) and not _TRACE_CLOSE_RE.search(body):
        return "no answer to find: truncated"
    if _is_degenerate(body):
        return "no answer to find: degenerate"
    if r.ans.value is None and r.ans.reason == "truncated expression":
        return "no answer to find: truncated"
    if not re.search(r"[.!?)\]}`*$]\s*$", body) or _EMPTY_ITEM_RE.search(body):
        return "no answer to find: truncated"
    if r.kind == "number" and r.ans.span and _norm_bool(r.ans.span) is not None:
        return "no answer to find: other kind"
    if _DECLINES_RE.search(body[-600:]) or _DECLINES_MORE_RE.search(body[-300:]):
        return "no answer to find: declines"
    final = r.ans.span if r.ans.span else (sents[-1] if sents else "")
    if r.ans.value is None and (
            (r.kind == "number" and (_NOT_A_NUMBER_RE.search(final) or _VECTOR_RE.search(final)))
            or (r.kind == "boolean" and re.fullmatch(r"\s*-?[\d.,/]+\s*", final or "x"))):
        return "no answer to find: other kind"
    if r.kind == "number" and r.ans.value is None and len(re.findall(r"\d+(?:\.\d+)?", final)) >= 2:
        if _ASKS_TWO_RE.search(r.question[-300:]):
            return "no answer to find: other kind"
        if _ASKS_DIFFERENCE_RE.search(r.question[-300:]) and not re.search(r"\b(?:more|fewer|less)\b", final):
            return "no answer to find: other question"
    span = r.ans.span or ""
    if r.ans.value is None and r.ans.reason in ("ambiguous", "no choice matched", "no label matched") and (
            len(set(re.findall(r"\b([A-J])\b", span))) >= 2 and re.search(r",|\band\b|\bor\b", span)
            and r.kind == "choice"):
        return "no answer to find: hedge"
    if r.ans.value is None and r.ans.reason == "no answer cue" and sents and _BOUND_RE.search(sents[-1]) and not re.search(
            r"\b(?:is|are|=)\s*\$?\d", _BOUND_RE.sub(" ", sents[-1])):
        return "no answer to find: bound"
    if r.ans.value is None and r.ans.reason == "bad expression" and _NAMED_IN_EXPR_RE.search(span):
        return "no answer to find: free variables"  # "(some - 8)", "(some bags + 4 bags)"
    if r.ans.value is None and r.ans.reason in ("bad expression", "no choice matched", "cue found but no number") and (
            r.kind != "choice" or re.search(r"[=+*/^:]", span)) and (
            _VARIABLE_RE.search(_UNIT_AFTER_NUMBER_RE.sub(" ", re.sub(r"\\[A-Za-z]+", " ", span)))
            and (r.ans.reason != "cue found but no number" or len(span.split()) <= 3)):
        return "no answer to find: free variables"
    last = sents[-1] if sents else ""
    if r.kind == "number" and r.ans.value is None and r.question and _proposition(r.question) is not None:
        return "no answer to find: other kind"  # "Should they switch?" with a number gold: a yes/no question
    if r.kind == "boolean" and r.ans.value is None:
        if r.question and _proposition(r.question) is None:
            return "no answer to find: other kind"  # "What is the maximum of S?" with a yes/no gold
        if span and not re.search(r"[A-Za-z]{3}", span):
            return "no answer to find: other kind"  # the answer is a matrix, "[[-1, 0], [0, -1]]"
        if _HEDGED_CLAIM_RE.search(span or last):
            return "no answer to find: hedge"
    if r.ans.value is None and (_BOUND_RE.search(span) or (not span and _BOUND_RE.search(last))) and r.kind == "number":
        return "no answer to find: bound"
    if r.kind == "number" and r.ans.value is None and _TWO_RESULTS_RE.search(span or last):
        return "no answer to find: several values"
    if r.kind == "number" and r.ans.value is None and _UNCLEAR_RE.search(span or last):
        return "no answer to find: unclear"
    if r.kind == "number" and r.ans.value is None and not span and re.search(r"\b(?:is|=)\s*\$?([^.]*)$", last.rstrip(".")) and (
            _VARIABLE_RE.search(_UNIT_AFTER_NUMBER_RE.sub(" ", re.sub(r"\\(?:frac|sqrt|mathrm|text|Omega|approx)\b", " ",
                                                                       re.search(r"\b(?:is|=)\s*\$?([^.]*)$", last.rstrip(".")).group(1))))):
        return "no answer to find: free variables"
    if r.kind == "choice" and r.ans.value is None and r.ans.reason == "no choice matched" and not _names_an_option(span, r):
        return "no answer to find: no option named"
    if r.kind == "number" and r.ans.value is None and r.ans.reason == "cue found but no number" and not re.search(
            r"\d", span) and not re.search(r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|hundred|thousand|half)\b",
                                           span, re.IGNORECASE):
        return "no answer to find: no value"
    if r.kind == "choice" and r.ans.value is None and r.ans.reason == "no answer cue" and len(set(re.findall(
            r"\((?:option\s+)?([A-J])\)", "\n\n".join(re.split(r"\n[ \t]*\n", body)[-3:]), re.IGNORECASE))) >= 3:
        return "no answer to find: hedge"  # several options named as steps or candidates, none chosen
    if r.kind == "number" and r.ans.value is None and re.search(
            r"\d+(?:\.\d+)?\s+[a-z]+\s+and\s+\d+(?:\.\d+)?\s+[a-z]+", span or last):
        return "no answer to find: other kind"  # "29.3 skittles and 27.7 erasers": two quantities, one asked
    if r.kind == "choice" and r.ans.value is None and r.ans.reason == "no answer cue" and not _names_an_option(body, r):
        return "no answer to find: no option named"
    return None


def _restates_question(sentence: str, question: str) -> bool:
    """The sentence only restates the question: it is in it verbatim (case and spacing aside), or all its
    words and numbers are the question's."""
    norm = " ".join(sentence.lower().rstrip(".").split())
    q = " ".join(question.lower().split())
    if norm in q:
        return True
    words = re.findall(r"[a-z]+|\d+(?:\.\d+)?", norm)
    qwords = set(re.findall(r"[a-z]+|\d+(?:\.\d+)?", q))
    return len(words) >= 5 and all(w in qwords for w in words)


def _names_an_option(body: str, r: Row) -> bool:
    """Whether the last three paragraphs name an option: a letter marker ("(C)", "C.", "option C") or an option's text."""
    para = "\n\n".join(re.split(r"\n[ \t]*\n", body.rstrip())[-3:])
    if re.search(r"\(([A-Ja-j])\)|(?:^|\n)\s*[A-J][.):]\s|\b(?:option|choice|answer)\s*:?\s*\(?[A-Ja-j]\b", para):
        return True
    low = " ".join(re.sub(r"[^0-9a-z]+", " ", para.lower()).split())
    return any(c and f" {c} " in f" {low} " for c in r.choices)


def teacher_category(r: Row) -> str:
    if r.ans.value is None:
        why = no_answer_category(r)
        return why or f"unparsed: {r.ans.reason}"
    if r.ans.cue == "fallback":
        return "disagree: cue-less fallback answer differs from gold"
    return "disagree: answer differs from gold (model error or misread; see examples)"


def teacher_stats(res: Result) -> dict:
    n = res.n
    answered = [r for r in res.rows if r.ans.value is not None]
    no_answer = Counter(c for r in res.rows if r.ans.value is None and (c := no_answer_category(r)))
    readable = n - sum(no_answer.values())
    unparsed = Counter(r.ans.reason for r in res.rows if r.ans.value is None and not no_answer_category(r))
    with_ref = [r for r in res.rows if r.has_reference]
    ref_answered = [r for r in with_ref if r.reference is not None]
    both = [r for r in ref_answered if r.ans.value is not None]
    return {
        "rows": n,
        "answered": len(answered),
        "fallback": sum(r.ans.cue == "fallback" for r in answered),
        "no_answer": sum(no_answer.values()),
        "readable_parsed": len(answered) / readable if readable else float("nan"),
        "agree": sum(r.agree for r in res.rows),
        "has_ref": bool(with_ref),
        "ref_answered": len(ref_answered),
        "ref_agree": sum(_same(r.ans.value, r.reference, r.kind) for r in both) / len(both) if both else float("nan"),
        "ref_only": len(ref_answered) - len(both),
        "unparsed": unparsed,
        "no_answer_by": no_answer,
    }


def print_teacher_table(results: list[Result]) -> None:
    print(
        "| source | outputs | answered | of them fallback | no answer to find | parsed of the rest | agree w/ gold (all) "
        "| agree w/ gold (answered) | source's extraction answered | agree w/ source's (both answered) "
        "| source answered, we not | unparsed by reason | no answer to find by class | µs/row |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for res in results:
        s = teacher_stats(res)
        n = s["rows"]
        ref = (
            (f"{s['ref_answered']:,}", _pct(s["ref_agree"]), f"{s['ref_only']:,}") if s["has_ref"] else ("-", "-", "-")
        )
        unparsed = "; ".join(f"{k} {v}" for k, v in s["unparsed"].most_common()) or "-"
        none_by = "; ".join(f"{k.split(': ', 1)[1]} {v}" for k, v in s["no_answer_by"].most_common()) or "-"
        print(
            f"| {res.name} | {n:,} | {s['answered']:,} ({_pct(s['answered'] / n)}) | {s['fallback']:,} | {s['no_answer']:,} "
            f"| {_pct(s['readable_parsed'])} | {_pct(s['agree'] / n)} "
            f"| {_pct(s['agree'] / s['answered'] if s['answered'] else float('nan'))} | {ref[0]} | {ref[1]} | {ref[2]} "
            f"| {unparsed} | {none_by} | {1e6 * res.seconds / max(1, n):.0f} |"
        )


def show_fallbacks(results: list[Result], n: int, seed: int) -> None:
    """``n`` random cue-less fallback answers per source (seeded), with the gold, for reading by hand."""
    import random

    print(f"\n## Spot-check: {n} random fallbacks per source (seed {seed})\n")
    for res in results:
        fb = [r for r in res.rows if r.ans.value is not None and r.ans.cue == "fallback"]
        if not fb:
            continue
        pick = random.Random(f"{seed}:{res.name}").sample(fb, min(n, len(fb)))
        print(f"### {res.name}: {len(pick)} of {len(fb)} fallbacks, {sum(r.agree for r in pick)} agree with gold\n")
        for i, r in enumerate(pick, 1):
            print(f"{i}. read `{r.pred_show}` gold `{r.gold_show}` {'=' if r.agree else '≠'} from `{r.ans.span}`")
            print(f"    tail: `{_short(r.text, 240)}`")
        print()


def target_line(results: list[Result]) -> str:
    below = []
    for res in results:
        s = teacher_stats(res)
        if float(s["readable_parsed"]) < TARGET:
            below.append(f"{res.name} ({_pct(s['readable_parsed'])})")
    return (f"Target (teacher_outputs): >= {TARGET:.0%} of the outputs with an answer to find parsed. Below target: "
            + (", ".join(below) if below else "none") + ".")


def run_all(data_dir: Path) -> list[Result]:
    if not (data_dir / "distilling_step_by_step").is_dir():
        NOTES.append(f"{data_dir / 'distilling_step_by_step'} missing: the PaLM/GPT-3 datasets were skipped.")
        return []
    results = [
        run_cqa(data_dir, "train"),
        run_cqa(data_dir, "test"),
        run_svamp(data_dir, "train"),
        run_svamp(data_dir, "test"),
        run_nli(data_dir, "esnli", "test", "e-SNLI test"),
        run_nli(data_dir, "anli1", "valid", "ANLI-R1 valid"),
        run_nli(data_dir, "anli1", "test", "ANLI-R1 test"),
    ]
    results.extend(run_gsm8k(data_dir))
    return results


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------


def _pct(x: float | int | None) -> str:
    if x is None:
        return "-"
    if math.isnan(x):
        return "n/a"
    return f"{100 * x:.2f}%"


def print_table(results: list[Result]) -> None:
    print(
        "| dataset | rows | answered | well-formed (cue) | well-formed parsed | no answer to find | parsed of the rest "
        "| hedged | agree w/ gold (all rows) | agree w/ gold (answered) | judgement = recorded is_correct | recorded acc | µs/row |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for res in results:
        s = res.stats()
        t = teacher_stats(res)
        print(
            f"| {res.name} | {s['rows']:,} | {_pct(s['answered'])} | {_pct(s['well_formed'])} | {_pct(s['well_parsed'])} "
            f"| {t['no_answer']:,} | {_pct(t['readable_parsed'])} | {_pct(s['hedged'])} "
            f"| {_pct(s['agree_all'])} | {_pct(s['agree_answered'])} | {_pct(s['judge_agree'])} | {_pct(s['recorded_acc'])} "
            f"| {1e6 * res.seconds / max(1, res.n):.0f} |"
        )


def _short(text: str, limit: int = 300) -> str:
    text = strip_continuation(text)
    if len(text) > limit:
        text = "…" + text[-limit:]
    return text.replace("\n", "⏎")


def failure_report(results: list[Result], show: int) -> None:
    print("\n## Failures and disagreements by category\n")
    for res in results:
        cats: dict[str, list[Row]] = defaultdict(list)
        categorise = res.categorise or (lambda r: "disagree")
        gsm = bool(res.rows) and res.rows[0].recorded_correct is not None
        for r in res.rows:
            if r.ans.value is None:
                cats[unparsed_category(r)].append(r)
            elif gsm:
                if r.agree != r.recorded_correct:
                    cats[categorise(r)].append(r)
            elif not r.agree:
                cats[categorise(r)].append(r)
        total = sum(len(v) for v in cats.values())
        print(f"### {res.name}: {total} rows listed of {res.n}\n")
        if gsm:
            model_wrong = sum(
                1 for r in res.rows if r.ans.value is not None and not r.agree and r.agree == r.recorded_correct
            )
            print(
                f"- (not listed) answer read, differs from gold, recorded incorrect too: {model_wrong} (model error, both judges agree)"
            )
        for cat, rs in sorted(cats.items(), key=lambda kv: -len(kv[1])):
            print(f"- **{cat}**: {len(rs)}")
            for r in rs[:show]:
                print(f"    - pred `{r.pred_show}` gold `{r.gold_show}` span `{r.ans.span}`: `{_short(r.text)}`")
        print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data-dir", default=None, help="shared data folder (default: $SYNTHKD_SHARED_DATA or ../shared/data)"
    )
    ap.add_argument(
        "--show-failures", type=int, default=2, metavar="N", help="examples per failure category (0: counts only)"
    )
    ap.add_argument("--no-failures", action="store_true", help="print only the table")
    ap.add_argument("--show-fallbacks", type=int, default=0, metavar="N",
                    help="print N random cue-less fallback answers per source with the gold, for a spot-check by hand")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --show-fallbacks sample")
    args = ap.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    if not (data_dir / "distilling_step_by_step").is_dir() and not (data_dir / "teacher_outputs").is_dir():
        print(f"data folder not found: {data_dir} (use --data-dir or SYNTHKD_SHARED_DATA); skipped", file=sys.stderr)
        return 2
    results = run_all(data_dir)
    teacher = run_teacher_outputs(data_dir) if (data_dir / "teacher_outputs").is_dir() else []
    print(f"# Answer extraction on recorded teacher outputs ({data_dir})\n")
    if results:
        print("## PaLM-540B (distilling_step_by_step) and GPT-3 (gsm8k)\n")
        print_table(results)
    if teacher:
        print("\n## Other teachers and prompt styles (teacher_outputs/)\n")
        print_teacher_table(teacher)
        print(
            "\n'no answer to find': the reader's rule, by class (checked on the text, in this order): "
            + "; ".join(f"**{k}**: {v}" for k, v in NO_ANSWER_CLASSES.items())
            + ". 'parsed of the rest': answered / (outputs - no answer to find). "
            "Numbers agree within 1e-6, or 1 % (TheoremQA golds are rounded)."
        )
        print("\n" + target_line(teacher))
    n = sum(r.n for r in results + teacher)
    secs = sum(r.seconds for r in results + teacher)
    print(f"\n{n:,} outputs in {secs:.2f} s ({1e6 * secs / n:.0f} µs/output, extraction only).")
    for note in NOTES:
        print(f"\n{note}")
    if results:
        print("\n" + target_line(results).replace("(teacher_outputs)", "(PaLM-540B / GPT-3)"))
    if args.show_fallbacks:
        show_fallbacks(teacher, args.show_fallbacks, args.seed)
    if not args.no_failures:
        failure_report(results + teacher, args.show_failures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
