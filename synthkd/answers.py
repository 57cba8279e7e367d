"""Answer extraction and normalisation for real teacher text.

Teacher models answer in prose.  Before a chain-of-thought completion can be scored against a gold
label, filtered for correctness, or turned into a training target, the final answer has to be found
and normalised.  This module does that with pure, fast functions (all regexes are compiled once at
import time; nothing here calls ``eval`` or ``exec``).

The pipeline applied by :func:`extract_answer` is:

1. :func:`strip_continuation` - cut the text at the first hallucinated next few-shot exemplar
   (a line starting with ``Q:``, ``Question:``, ``Premise:``, ``Input:`` ...).  Raw few-shot
   continuations (e.g. the PaLM-540B rationales of *Distilling step-by-step*) very often run on
   into an invented next question that carries its own, unrelated answer.
2. :func:`extract_final_answer_span` - locate the *last* answer cue ("So the answer is",
   "The answer is", "Answer:", "####", ``\\boxed{...}``, a short ``A: ...`` line) and return the raw
   text it introduces, trimmed of trailing punctuation, quotes and markdown.
3. a kind-specific parser on that span: :func:`extract_number`, :func:`extract_choice`,
   :func:`extract_label` or :func:`extract_boolean` (kind ``"boolean"``: yes/no, true/false).
4. no cue at all: the cue-less fallback reads the number, option or label that the final sentence
   (or last equation) states, only when unambiguous, with ``cue="fallback"``; a hedge, a bound, a
   question, a request, a cut-off text or an unfinished reasoning trace gives no answer.
5. with the item's ``question`` (optional): several stated quantities are read as the one the
   question asks for, and a yes/no question answered with a claim is read by the claim's polarity
   (section 5); without it those stay ``None``.  :func:`read_answer` is the reading of a model's
   output (after its ``</think>`` block) that evaluation and the tailored rounds share.

Every failure is reported with a short machine-readable ``reason`` (see :data:`REASONS`), so that a
pipeline can count *why* rows were dropped.

Example::

    >>> extract_answer("5 + 3 = 8 apples. The answer is 8.\\n\\nQ: next question...", "number").value
    8.0
    >>> extract_answer("So the answer is (c) wooded area.", "choice",
    ...                choices=["british columbia", "body of water", "wooded area", "pay debts", "zoo"]).value
    2
    >>> extract_answer("Answer: neutral", "label", labels=NLI_LABELS, synonyms=NLI_SYNONYMS).value
    'neutral'
"""

from __future__ import annotations

import ast
import asyncio
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, TypeVar

__all__ = [
    "ANLI_LABELS",
    "ANSWER_KINDS",
    "BOOLEAN_KIND",
    "ExtractedAnswer",
    "NLI_LABELS",
    "NLI_SYNONYMS",
    "REASONS",
    "extract_answer",
    "extract_boolean",
    "extract_choice",
    "extract_final_answer_span",
    "extract_label",
    "extract_number",
    "numbers_equal",
    "parse_off_loop",
    "read_answer",
    "safe_eval_arithmetic",
    "strip_continuation",
]

AnswerKind = Literal["number", "choice", "label", "boolean"]
#: The kind of yes/no and true/false answers (StrategyQA-style tasks); its values are ``True``/``False``.
BOOLEAN_KIND: AnswerKind = "boolean"
#: Every answer kind, in the order the docs list them.
ANSWER_KINDS: tuple[str, ...] = ("number", "choice", "label", "boolean")

#: NLI class names in the conventional SNLI/MNLI/ANLI integer order (0, 1, 2).
NLI_LABELS: list[str] = ["entailment", "neutral", "contradiction"]
#: ANLI uses the same integer encoding as SNLI: 0 entailment, 1 neutral, 2 contradiction.
ANLI_LABELS: list[str] = NLI_LABELS

#: Common ways models phrase the three NLI classes (zero-shot "yes / no / maybe" prompts included).
NLI_SYNONYMS: dict[str, list[str]] = {
    "entailment": ["yes", "entails", "entailed", "entailing", "entail", "true", "definitely true"],
    "neutral": [
        "maybe",
        "it is not possible to tell",
        "not possible to tell",
        "impossible to tell",
        "cannot tell",
        "can not tell",
        "can't tell",
        "cannot be determined",
        "can not be determined",
        "undetermined",
        "unknown",
        "inconclusive",
        "neither",
        "possibly",
    ],
    "contradiction": ["no", "contradicts", "contradicted", "contradictory", "contradict", "false", "definitely false"],
}

#: Every ``reason`` that :func:`extract_answer` may return when ``value`` is None.
REASONS: dict[str, str] = {
    "empty text": "the text is empty or whitespace only",
    "no answer cue": "no final-answer cue (and the text is not a short bare answer)",
    "empty answer span": "an answer cue was found but nothing follows it",
    "cue found but no number": "the answer span contains no number",
    "ambiguous": "the answer span names several different answers",
    "no choice matched": "the answer span matches no option letter and no option text",
    "no label matched": "the answer span matches no class name or synonym",
    "no yes/no matched": "the answer span says neither yes/no nor true/false (kind boolean)",
    "bad expression": "the answer span is arithmetic with unknowns ('(some - 8)', '2 * x') or cannot be evaluated",
    "truncated expression": "the answer span is an arithmetic expression cut off before its end ('(9 + 6')",
}


@dataclass(frozen=True)
class ExtractedAnswer:
    """Result of :func:`extract_answer`.

    ``value``: a ``float`` (kind "number"), an ``int`` index into ``choices`` (kind "choice"), a label
    string from ``labels`` (kind "label"), or ``None`` when nothing could be extracted.
    ``span``: the raw answer text the value was read from (``None`` when no answer cue was found).
    ``reason``: why ``value`` is ``None`` (one of :data:`REASONS`); ``None`` on success.
    ``cue``: which cue introduced the span ("answer is", "answer is that", "answer:", "json", "####", "boxed",
    "[[verdict]]", "A:", "bare"), or "fallback" when there was no cue and the value is the one that
    the final sentence or last equation states unambiguously (filters may choose not to trust it).
    ``alternatives``: other answers the same span also offers, when the teacher hedged
    (``"either (a) aquarium or (e) pond"`` -> value 4, alternatives ``(0,)``;
    ``"(28 - 13) and (28 - 15)"`` -> value 15.0, alternatives ``(13.0,)``).  ``value`` follows the
    documented precedence; callers that need one unambiguous answer should drop rows where this is
    non-empty (see :attr:`hedged`).
    """

    value: float | int | str | None
    span: str | None
    reason: str | None
    cue: str | None = None
    alternatives: tuple[float | int | str, ...] = ()

    @property
    def ok(self) -> bool:
        """An answer was extracted."""
        return self.value is not None

    @property
    def hedged(self) -> bool:
        """The span offers more than one answer."""
        return bool(self.alternatives)


# --------------------------------------------------------------------------------------------------
# 1. continuation stripping
# --------------------------------------------------------------------------------------------------

#: Line prefixes that open a new few-shot exemplar.  ``Answer:`` / ``A:`` are deliberately absent:
#: in many prompt formats they carry the answer itself.
CONTINUATION_MARKERS: tuple[str, ...] = (
    "Q",
    "Question",
    "Problem",
    "Premise",
    "Input",
    "Context",
    "Passage",
    "Instruction",
    "Example",
)

_CONTINUATION_RE = re.compile(
    r"\n[ \t>*#]*(?:" + "|".join(CONTINUATION_MARKERS) + r")[ \t]*(?:\d+[ \t]*)?:",
)


def strip_continuation(text: str) -> str:
    """Return ``text`` cut before the first hallucinated next exemplar.

    A continuation starts at a line (other than the first line) that begins with one of
    :data:`CONTINUATION_MARKERS` followed by a colon, e.g. ``"\\n\\nQ: What is ..."`` or
    ``"\\nPremise: ..."``.  A marker on the very first line is kept: it is the model echoing the
    current question, not a new one.  Trailing whitespace is removed.

    >>> strip_continuation("So the answer is (a) go downtown.\\n\\nQ: What is the best way...")
    'So the answer is (a) go downtown.'
    """
    if not text:
        return ""
    # skip leading whitespace so that a first-line echo ("Q: ...") is never treated as continuation
    start = len(text) - len(text.lstrip())
    m = _CONTINUATION_RE.search(text, start)
    if m is not None:
        text = text[: m.start()]
    return text.rstrip()


# --------------------------------------------------------------------------------------------------
# 2. answer span
# --------------------------------------------------------------------------------------------------

# A qualifier between the cue word and its verb: a format hint or a range ("the final answer (in
# dollars) is", "the answer, in cm, is", "the answer to the question is", "the answer choice is").
_QUAL = r"""(?:\s+(?:choice|option|letter))?
        (?:\s*\([^()\n]{0,40}\)|\s*,[^,\n]{1,40},|\s+(?:to|for|of)\s+(?:the|this|that|our|my)\s+(?:\w+\s+){0,2}?(?:question|problem|task|item|exercise))?"""
_VERB = r"\s+(?:is|are|would\s+be|should\s+be|will\s+be|must\s+be|remains|=)(?:\s+therefore|\s+thus)?"
_CUE_RE = re.compile(
    rf"""
    (?P<is>\b(?:(?:final|correct|right|best|only|true|most\s+(?:likely|appropriate|plausible|reasonable|suitable))\s+)?
        answer{_QUAL}{_VERB}\b(?!\s+not\b)(?!\s+(?:whether|if)\b)
        (?:\s*:)?)                                       # "... the answer is", "the final answer (in $) is"
    | (?P<opt>\b(?:final|correct|right|best|most\s+(?:likely|appropriate|plausible|reasonable|suitable))\s+
        (?:option|choice|response|verdict){_QUAL}{_VERB}\b(?!\s+not\b)(?!\s+(?:that|whether|if)\b)
        (?:\s*:)?)                                       # "the correct option is (C)", "final verdict is"
    | (?P<json>["'](?:final[ _]?)?answer["']\s*:\s*)     # JSON {{"answer": "18"}}
    | (?P<colon>\b(?:final\s+)?(?:answer|verdict)(?:\s*\([^()\n]{{0,40}}\))?(?:\s*\*\*)?\s*:)  # "Answer:", "**Final answer:**"
    | (?P<head>(?:^|\n)[ \t]*(?:\#{{1,6}}[ \t]*|\*\*)(?:final[ \t]+)?answer[ \t]*(?:\*\*)?[ \t]*(?=\n))  # "### Final Answer" line
    | (?P<hash>\#\#\#\#)                                    # GSM8K "#### 72"
    | (?P<boxed>\\(?:boxed|fbox)\s*\{{)                      # LaTeX \boxed{{...}}
    | (?P<verdict>\[\[)                                     # a judge's verdict "[[B>>A]]"
    | (?P<aline>(?:^|\n)[ \t]*A[ \t]*:)                     # few-shot "A: 18" (short lines only)
    """,
    re.IGNORECASE | re.VERBOSE,
)
_A_LINE_MAX_WORDS = 6  # "A:" introduces a final answer only when it is short ("A: 90,000")
_BARE_MAX_CHARS = 64  # a cue-less text this short and on one line is treated as a bare answer
# Bounds that keep extraction linear in the text length (F11: a degenerate answer such as
# "answer is " * 100_000 made the old scan quadratic).  Final answers sit at the end of a completion,
# so cues are looked for only in its last _TAIL_CHARS characters (the longest real CoT completions in
# benchmarks/answer_extraction.py are ~3 KB, and their final cue is within ~1 KB of the end), and a
# span is read from at most _SPAN_MAX_CHARS characters after its cue (as long as the longest
# expression the evaluator accepts; real spans are under 200 characters).
_TAIL_CHARS = 32_768
_SPAN_MAX_CHARS = 2_000

# a sentence ends at ". X" - not after a title or a Latin abbreviation ("Mrs. Smith", "e.g. 5")
_SENTENCE_END_RE = re.compile(r"(?<!\bMrs)(?<!\bMr)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bvs)(?<!\be\.g)(?<!\bi\.e)"
                              r"[.!?](?=\s+[A-Z0-9\"'(])|;\s")
_TRAIL_STRIP = " \t\r\n.,;:!?\"'`*_\u201c\u201d\u2018\u2019"
_LEAD_STRIP = " \t\r\n:\"'`*_\u201c\u201d\u2018\u2019"
_MARKDOWN_RE = re.compile(r"__|`")
_CUE_LINE_BLANK = " \t\r*_"  # what may follow a cue on its line when the answer is on the next line
# "**" is markdown bold only when it wraps text ("**42**", "**Total:** 8"); between digits or
# spaced out it is the power operator ("2**64", "3 ** 2") and must reach the evaluator (F12)
_BOLD_RE = re.compile(r"(?<![\w*])\*\*(?=[^\s*])(.+?)(?<=[^\s*])\*\*(?![\w*])")


def _braced(text: str, open_pos: int) -> str | None:
    """Content of the brace group whose ``{`` is at ``open_pos`` (nested braces allowed).

    Only the first ``_SPAN_MAX_CHARS`` characters are looked at: a longer group counts as unbalanced.
    """
    depth = 0
    for i in range(open_pos, min(len(text), open_pos + _SPAN_MAX_CHARS)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_pos + 1 : i]
    return None  # unbalanced (truncated generation)


def _clean_span(span: str) -> str:
    span = _MARKDOWN_RE.sub("", _BOLD_RE.sub(r"\1", span))
    span = span.strip(_LEAD_STRIP)
    # strip LaTeX inline-math wrappers "$42$" / "\(42\)" (a lone leading "$" is a currency sign)
    if len(span) > 1 and span.startswith("$") and span.endswith("$"):
        span = span[1:-1]
    if span.startswith("\\(") and span.endswith("\\)"):
        span = span[2:-2]
    return span.rstrip(_TRAIL_STRIP).strip()


def _line_from(text: str, start: int) -> tuple[str, int]:
    """(the line that starts at ``start``, at most _SPAN_MAX_CHARS long; index of its newline or -1)."""
    limit = start + _SPAN_MAX_CHARS
    nl = text.find("\n", start, limit)
    return (text[start:limit] if nl < 0 else text[start:nl]), nl


def _span_after(text: str, end: int) -> str:
    """The rest of the line after a cue; the next non-empty line when the cue ends its line.

    Reads at most _SPAN_MAX_CHARS characters of either line, so the cost per cue is bounded.
    """
    line, nl = _line_from(text, end)
    # a cue line that holds only the markdown that closes the cue ("**Answer:**" then the answer on the
    # next line) ends its line too
    if not line.strip(_CUE_LINE_BLANK) and nl >= 0:
        nxt = nl + 1
        while nxt < len(text) and text[nxt] == "\n":
            nxt += 1
        line, _ = _line_from(text, nxt)
    m = _SENTENCE_END_RE.search(line)
    if m is not None:
        line = line[: m.start()]
    return _clean_span(line)


# "Assistant B's answer is more concise", "their answer is wrong": an answer cue that describes someone
# else's answer (a judge comparing responses, a model quoting a student) does not introduce the final answer
_POSSESSOR_RE = re.compile(r"(?:\b(\w+)['\u2019]s?|\b(?:his|her|their|your|whose))\s+(?:\w+\s+)?$", re.IGNORECASE)
_OWN_POSSESSORS = frozenset({"question", "problem", "exercise", "puzzle", "equation", "task", "riddle", "system",
                             "expression", "item", "query", "prompt", "quiz", "test", "today", "model"})


def _someone_elses(text: str, m: re.Match[str]) -> bool:
    """Whether cue ``m`` ("... answer is") belongs to a possessor: "Assistant A's (final) answer is ..."."""
    if m.lastgroup != "is":
        return False
    p = _POSSESSOR_RE.search(text, max(0, m.start() - 40), m.start())
    return p is not None and (p.group(1) or "").lower() not in _OWN_POSSESSORS


def _find_span(text: str) -> tuple[str | None, str | None]:
    """(span, cue name) of the last usable answer cue in ``text``.

    The last cue with a non-empty span wins; when no cue has one, the first cue (its span ``""``).
    Cues are read from the end, so the scan usually stops at the last cue; only the last
    _TAIL_CHARS characters are searched, so even text made of cues costs time linear in its length.
    """
    cues = [m for m in _CUE_RE.finditer(text, max(0, len(text) - _TAIL_CHARS)) if not _someone_elses(text, m)]
    for m in reversed(cues):
        found = _cue_span(text, m)
        if found is not None and found[0]:
            return found
    for m in cues:
        found = _cue_span(text, m)
        if found is not None:
            return found
    return None, None


_JSON_UNESCAPE = {"n": " ", "t": " ", "r": " ", '"': '"', "/": "/", "\\": "\\"}


def _json_value(text: str, start: int) -> str:
    """The value after a JSON key ``"answer":`` - a string (escapes read; real outputs often hold raw
    LaTeX backslashes, which are kept) or a bare literal up to ``,`` / ``}`` / the line end."""
    limit = min(len(text), start + _SPAN_MAX_CHARS)
    if start < limit and text[start] in "\"'":
        quote = text[start]
        out: list[str] = []
        i = start + 1
        while i < limit:
            c = text[i]
            if c == "\\" and i + 1 < limit:
                nxt = text[i + 1]
                if nxt in _JSON_UNESCAPE and not (nxt in "nrt" and text[i + 2 : i + 3].isalpha()):
                    out.append(_JSON_UNESCAPE[nxt])  # "\\n" is a newline, "\\neq" / "\\times" are LaTeX
                    i += 2
                    continue
                out.append(c)
            elif c == quote:
                return _clean_span("".join(out))
            else:
                out.append(c)
            i += 1
        return _clean_span("".join(out))
    m = re.compile(r"[^,}\n]*").match(text, start, limit)
    raw = m.group(0) if m else ""
    return "" if raw.strip().lower() == "null" else _clean_span(raw)


def _cue_span(text: str, m: re.Match[str]) -> tuple[str, str] | None:
    """(span, cue name) introduced by cue match ``m``; None for an ``A:`` line that is not an answer."""
    kind = m.lastgroup
    if kind == "boxed":
        inner = _braced(text, m.end() - 1)
        span = _clean_span(inner) if inner is not None else _span_after(text, m.end())
        cue = "boxed"
    elif kind == "verdict":
        close = text.find("]]", m.end(), m.end() + 80)
        if close < 0:
            return None
        span, cue = _clean_span(text[m.end() : close]), "[[verdict]]"
    elif kind == "json":
        span, cue = _json_value(text, m.end()), "json"
    elif kind == "aline":
        span = _span_after(text, m.end())
        if not span or len(span.split()) > _A_LINE_MAX_WORDS:
            return None
        cue = "A:"
    else:
        span = _span_after(text, m.end())
        if kind == "is" and span[:5].lower() == "that ":
            # "the answer is that there are 24 ways ...": the clause is the answer
            return span[5:].lstrip(), "answer is that"
        cue = {"is": "answer is", "opt": "answer is", "colon": "answer:", "head": "answer:", "hash": "####"}[kind or ""]
    return span, cue


def extract_final_answer_span(text: str) -> str | None:
    """Return the raw final-answer text introduced by the last answer cue, or ``None``.

    Cues (case-insensitive): "(So / Therefore,) the (final / correct) answer is", "answer would be",
    "Answer:", "Final answer:", "####", ``\\boxed{...}`` (nested braces are matched), and a line
    ``A: ...`` whose remainder is at most six words (longer ``A:`` lines are rationales).  When
    several cues occur the last one wins, except that a cue with nothing after it (a truncated
    generation) does not override an earlier complete answer.  The span ends at the end of its
    line or at the first sentence boundary; surrounding whitespace, markdown, quotes and trailing
    punctuation are removed.  Returns ``""`` when a cue is present but nothing follows it.  Only the
    last 32 KB of the text are searched for cues, and a span is read from at most 2,000 characters
    (final answers sit at the end; this keeps the cost linear in the text length).

    The text is *not* stripped of continuations here; call :func:`strip_continuation` first (as
    :func:`extract_answer` does) for raw few-shot completions.

    >>> extract_final_answer_span("10 - (3 + 6) = 1. The answer is (10 - (3 + 6)).")
    '(10 - (3 + 6))'
    >>> extract_final_answer_span("so $x = \\\\boxed{\\\\frac{1}{2}}$")
    '\\\\frac{1}{2}'
    """
    if not text:
        return None
    return _find_span(text)[0]


# --------------------------------------------------------------------------------------------------
# 3a. numbers
# --------------------------------------------------------------------------------------------------

_BIN_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_MAX_EXPR_CHARS = 2000
_MAX_EXPONENT = 64
_MAX_MAGNITUDE = 1e100
_OP_TRANSLATION = str.maketrans({"\u2212": "-", "\u00d7": "*", "\u00f7": "/", "\u2044": "/"})


class _EvalRefused(ValueError):
    """A well-formed arithmetic expression whose value the evaluator refuses (range, division by zero)."""


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"unsupported constant {v!r}")
        try:
            f = float(v)
        except OverflowError as exc:
            raise ValueError("number out of range") from exc
        if not math.isfinite(f) or abs(f) > _MAX_MAGNITUDE:
            raise ValueError("number out of range")
        return f
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
        left = _eval_node(node.left)
        right = _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > _MAX_EXPONENT:
                raise ValueError(f"exponent {right!r} too large (limit {_MAX_EXPONENT})")
            if left == 0 and right < 0:
                raise ValueError("zero to a negative power")
            if left < 0 and not float(right).is_integer():
                raise ValueError("fractional power of a negative number")
        try:
            out = _BIN_OPS[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ValueError("division by zero") from exc
        except OverflowError as exc:
            raise ValueError("overflow") from exc
        if isinstance(out, complex) or not math.isfinite(out) or abs(out) > _MAX_MAGNITUDE:
            raise ValueError("result out of range")
        return float(out)
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def safe_eval_arithmetic(expr: str) -> float:
    """Evaluate a plain arithmetic expression without ``eval``.

    The expression is parsed with :mod:`ast` and only these nodes are accepted: int/float literals,
    ``+ - * / // % **``, unary ``-``/``+`` and parentheses.  Exponents are limited to
    ``|e| <= 64`` and every intermediate result to ``|x| <= 1e100``.  Unicode ``×``, ``÷`` and ``−``
    are read as ``*``, ``/`` and ``-``.  Anything else (names, calls, attributes, strings,
    comparisons, division by zero, too-long input ...) raises :class:`ValueError`.

    >>> safe_eval_arithmetic("( 10.0 - ( 6.0 + 3.0 ) )")
    1.0
    """
    if not isinstance(expr, str):
        raise ValueError("expression must be a string")
    if len(expr) > _MAX_EXPR_CHARS:
        raise ValueError("expression too long")
    expr = expr.translate(_OP_TRANSLATION).strip()
    if not expr:
        raise ValueError("empty expression")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise ValueError(f"not an arithmetic expression: {expr!r}") from exc
    try:
        return _eval_node(tree)
    except RecursionError as exc:
        raise ValueError("expression nested too deeply") from exc
    except ValueError as exc:
        raise _EvalRefused(str(exc)) from None


_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CURRENCY_RE = re.compile(r"\\?[$\u20ac\u00a3\u00a5\u20b9]|\b(?:USD|EUR|GBP|Rs\.?)(?=\s*\d)")
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_CMD_RE = re.compile(r"\\(?:left|right|,|!|;|quad|text\s*\{[^{}]*\}|mathrm\s*\{[^{}]*\})")
_LATEX_OPS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\%", "%"), ("{,}", ""), ("\\ ", " "))
_TIMES_RE = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])")
_CARET_RE = re.compile(r"(?<=[\d)])\s*\^\s*(?=[\d(-])")
_MIXED_RE = re.compile(r"^([-+]?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
# tokens of a numeric span: runs of number/operator/space tokens are candidate expressions
# numbers include scientific notation ("1e5", "1.5e-3"): read as one number, not as "1" and "5" (F12)
_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+\b)?"
_TOKEN_RE = re.compile(rf"({_NUMBER})|(\*\*|//|[-+*/%()])|(\s+)|[^\d\s\-+*/%().]+|\.")
_NUM_RE = re.compile(_NUMBER)
_EQUALS_RE = re.compile(r"(?<![<>!=])=(?!=)")
_LETTER_RE = re.compile(r"[A-Za-z]")
_HAS_OP_RE = re.compile(r"(?<=[\d)\s])[-+*/%]")
_WORD_NUMBERS = {
    w: float(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_WORD_NUMBERS.update(
    {w: float(10 * i) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)}
)
_WORD_NUMBER_RE = re.compile(
    r"^(?:a\s+total\s+of\s+|about\s+|approximately\s+)?("
    + "|".join(_WORD_NUMBERS)
    + r")(?:[\s-]+("
    + "|".join(list(_WORD_NUMBERS)[1:10])
    + r"))?\b",
    re.IGNORECASE,
)


# "1.05 x 10-18 N/m": scientific notation whose caret was lost (a decimal mantissa times 10, a dash, digits)
_BRACED_POWER_RE = re.compile(r"\^\s*\{\s*([-+]?[\d.]+)\s*\}\$?")
_SCI_NO_CARET_RE = re.compile(r"(\d\.\d+)\s*[x\u00d7*]\s*10-(\d{1,3})(?![\d.])")


def _normalise_numeric_text(text: str) -> str:
    s = _SCI_NO_CARET_RE.sub(r"\1e-\2", text.translate(_OP_TRANSLATION))
    if "^" in s:
        s = _BRACED_POWER_RE.sub(r"^(\1)", s.replace("$^", "^"))  # "10$^{-4}$" / "10^{-4}" -> "10^(-4)"
    if "\\" in s:
        for a, b in _LATEX_OPS:
            s = s.replace(a, b)
        s = _LATEX_FRAC_RE.sub(r"(\1)/(\2)", s)
        s = _LATEX_CMD_RE.sub("", s)
    s = _CURRENCY_RE.sub("", s)
    s = _THOUSANDS_RE.sub("", s)
    s = _TIMES_RE.sub("*", s)
    s = _CARET_RE.sub("**", s)
    return s


def _balance(run: str) -> str:
    run = run.strip().rstrip("%").rstrip()
    # drop unmatched closing parentheses at the end and unmatched opening ones at the start
    while run.endswith(")") and run.count(")") > run.count("("):
        run = run[:-1].rstrip()
    while run.startswith("(") and run.count("(") > run.count(")"):
        run = run[1:].lstrip()
    return run.rstrip("+-*/%( ").strip()


# "%" is a percent sign ("50%" -> 50) unless a number follows it: "5 % 0" is modulo (F12)
_PERCENT_SIGN_RE = re.compile(r"%(?!\s*[\d(.])")
_REFUSED = object()  # _run_value: an expression that parses but cannot be evaluated


def _run_value(run: str) -> float | None | object:
    """The value of one run of number/operator tokens; None when it is not one expression (then its
    numbers are read one by one), _REFUSED when it is one but the evaluator refuses its value."""
    run = _balance(run)
    if not run:
        return None
    m = _MIXED_RE.match(run)
    if m:
        sign, whole, num, den = m.groups()
        if int(den) == 0:
            return None
        v = int(whole) + int(num) / int(den)
        return -v if sign == "-" else v
    try:
        return safe_eval_arithmetic(_PERCENT_SIGN_RE.sub("", run))
    except _EvalRefused:
        return _REFUSED
    except ValueError:
        return None


def _runs(s: str) -> Iterator[tuple[int, int]]:
    """(start, end) of maximal runs of number/operator/space tokens that hold a number."""
    start = -1
    end = -1
    has_num = False
    for m in _TOKEN_RE.finditer(s):
        num, op, ws = m.group(1), m.group(2), m.group(3)
        if num or op or ws:
            if start < 0:
                start, has_num = m.start(), False
            has_num = has_num or bool(num)
            end = m.end()
        else:
            if start >= 0 and has_num:
                yield start, end
            start = -1
    if start >= 0 and has_num:
        yield start, end


# arithmetic that involves a word or variable: "bags + 4", "2 * x", "7x = 14", "(some - 8)".
# "-" and "/" count only inside parentheses / never, so prose dashes and units ("$15/hour") pass.
_UNKNOWN_IN_EXPR_RE = re.compile(
    r"(?!(?<=\d)[eE][-+]?\d)[A-Za-z]\s*[+*^]\s*[\w(]"  # a letter, but not the "e" of "1e+5"
    r"|[\w)]\s*[+*^]\s*[A-Za-z]"
    r"|\b\d+(?:\.\d+)?[xyz]\b"
    r"|(?<![\w/.])[A-Za-z]\s*/\s*[\d(]"  # a lone letter divided: "v/440" (a unit is "m/s", "$15/hour")
    r"|\([^()]*(?:[A-Za-z]\s+-\s*[\w(]|[\w)]\s*-\s+[A-Za-z])[^()]*\)"
    r"|\([^()]*(?:[A-Za-z]\s+-\s*[\w(]|[\w)]\s*-\s+[A-Za-z])[^()]*$"
)
_COEF_VAR_RE = re.compile(r"\b\d+(?:\.\d+)?[xyz]\b")
_STEP_PREFIX_RE = re.compile(r"^\s*step\s+\d+\s*[:.)]\s*", re.IGNORECASE)  # "Step 2: Kelly has 42 games"
_UNFINISHED_RE = re.compile(r"[\d+\-*/(]\s*$")
_CONJUNCTION_RE = re.compile(r"\b(?:or|and)\b|/|,", re.IGNORECASE)


# ---- closed forms: "\\frac{\\pi}{4}", "e^(-10)", "2\\sqrt{3}", "tan(1 + π/4)", "log2(3)"
# a compound SI unit after a number ("12.3 m/s^2", "9.8 m/s²", "4 kg·m^2", "20 N/m"): a unit, not unknowns
_SI_UNIT = r"(?:[kcmµnMG]?(?:m|s|g|N|J|W|V|Pa|Hz|rad|mol|K|C|h|min)|°C)"
_COMPOUND_UNIT_RE = re.compile(
    rf"(?<=[\d)])(?:\s*{_SI_UNIT}(?:\s*[/\u00b7*]\s*{_SI_UNIT}(?:\s*\^\s*-?\d|[\u00b2\u00b3])?)+"
    rf"|\s+{_SI_UNIT}(?:\s*\^\s*-?\d|[\u00b2\u00b3]))(?![\w^])")
_CLOSED_HINT_RE = re.compile(
    r"\\pi|\u03c0|\\sqrt|\u221a|(?<![A-Za-z])(?:sqrt|exp|ln|log(?:_?\{?(?:2|10)\}?)?|sin|cos|tan|arcsin|arccos|arctan|pi)"
    r"(?![A-Za-z])|(?<![A-Za-z\\])e(?=\s*(?:[+*/^)]|-\s*[\d(]|$))")
_CLOSED_FUNCS: dict[str, Callable[[float], float]] = {
    "sqrt": math.sqrt, "exp": math.exp, "ln": math.log, "logtwo": math.log2, "logten": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "arcsin": math.asin, "arccos": math.acos,
    "arctan": math.atan}
_CLOSED_NAMES = {"pi": math.pi, "e": math.e}
_FREE = object()  # _closed_form: an expression with unknowns
_LATEX_ARG_CMDS = ("\\dfrac", "\\tfrac", "\\frac", "\\sqrt")
_CLOSED_WORD_RE = re.compile(r"[A-Za-z]+\d*")
_CLOSED_PREP = (
    (re.compile(r"\\(?:left|right|displaystyle|,|!|;|:|quad|qquad)|\\ |\$|\\[()\[\]]"), " "),
    (re.compile(r"\\(?:cdot|times)"), "*"), (re.compile(r"\\div"), "/"),
    (re.compile(r"\\(pi|exp|ln|log|sin|cos|tan|arcsin|arccos|arctan)(?![A-Za-z])"), r" \1 "),
    (re.compile(r"\u03c0"), " pi "),
    (re.compile(r"\u221a\s*(\d+(?:\.\d+)?|[A-Za-z]+|\([^()]*\))"), r" sqrt(\1) "), (re.compile(r"\u221a"), " sqrt "),
    (re.compile(r"log_?\{?2\}?"), "logtwo"), (re.compile(r"log_?\{?10\}?"), "logten"),
    (re.compile(r"\\([A-Za-z]+)"), r" _\1 "),  # any other command: "\\theta" is a variable
    (re.compile(r"[{\[]"), "("), (re.compile(r"[}\]]"), ")"), (re.compile(r"\^"), "**"),
)
# implicit products: "2pi", "3(x)", ")(", "pi e", "2 sqrt(3)"; scientific notation "2e5" is left alone
_IMPLICIT_MUL_RE = re.compile(r"(?<=[\d)])\s*(?=[(A-Za-z])(?![eE][-+]?\d)|(?:(?<=\bpi)|(?<=\be))(?=\s*[\d(]|\s+[A-Za-z])"
                              r"|(?<=\))\s*(?=\d)")


_DIV_THEN_PRODUCT_RE = re.compile(r"/\s*(?:[\w.]+|\([^()]*\))\s*@")


def _latex_args(s: str) -> str:
    """``\\frac{a}{b}`` -> ``((a)/(b))``, ``\\sqrt{a}`` -> ``sqrt(a)``, ``\\sqrt[n]{a}`` -> ``((a)**(1/(n)))``
    (nested groups allowed); an unbalanced group is left as it is."""
    for _ in range(50):
        hits = [(s.find(c), c) for c in _LATEX_ARG_CMDS if s.find(c) >= 0]
        if not hits:
            return s
        pos, cmd = min(hits)
        j = pos + len(cmd)
        while j < len(s) and s[j] == " ":
            j += 1
        root = None
        if cmd == "\\sqrt" and j < len(s) and s[j] == "[":
            close = s.find("]", j)
            if close < 0:
                return s
            root, j = s[j + 1:close], close + 1
        args: list[str] = []
        for _k in range(2 if cmd != "\\sqrt" else 1):
            while j < len(s) and s[j] == " ":
                j += 1
            if j < len(s) and s[j] == "{":
                inner = _braced(s, j)
                if inner is None:
                    return s
                args.append(inner)
                j += len(inner) + 2
            elif j < len(s) and (s[j].isalnum()):
                args.append(s[j])  # "\\frac12", "\\sqrt2"
                j += 1
            else:
                return s
        if cmd == "\\sqrt":
            rep = f" sqrt({args[0]}) " if root is None else f" (({args[0]})**(1/({root}))) "
        else:
            rep = f" (({args[0]})/({args[1]})) "
        s = s[:pos] + rep + s[j:]
    return s


def _closed_value(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _closed_value(node.body)
    if isinstance(node, ast.Name):
        if node.id not in _CLOSED_NAMES:
            raise NameError(node.id)
        return _CLOSED_NAMES[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CLOSED_FUNCS:
        if len(node.args) != 1 or node.keywords:
            raise ValueError("one argument")
        try:
            out = _CLOSED_FUNCS[node.func.id](_closed_value(node.args[0]))
        except (ValueError, OverflowError) as exc:
            raise ValueError("math domain") from exc
        if not math.isfinite(out) or abs(out) > _MAX_MAGNITUDE:
            raise ValueError("result out of range")
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _closed_value(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
        left, right = _closed_value(node.left), _closed_value(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > _MAX_EXPONENT or (left < 0 and not float(right).is_integer())
                                             or (left == 0 and right < 0)):
            raise ValueError("power out of range")
        try:
            out = _BIN_OPS[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError) as exc:
            raise ValueError("division by zero / overflow") from exc
        if isinstance(out, complex) or not math.isfinite(out) or abs(out) > _MAX_MAGNITUDE:
            raise ValueError("result out of range")
        return float(out)
    return _eval_node(node)  # numbers; anything else raises ValueError


_UNIT_TAIL_RE = re.compile(r"(?<=[\d)a-z])\s+(?!pi\b)[A-Za-z]{2,}(?:\s*/\s*[A-Za-z]+)*\s*$")  # "log2(3) bits", "pi/4 radians"
_CLOSED_COPULA_RE = re.compile(r".*(?:\b(?:is|are|equals|be|becomes)\b|\u2248|~)", re.IGNORECASE | re.DOTALL)
_CLOSED_CALL_RE = re.compile(r"(?<![A-Za-z])(?:sqrt|exp|ln|log\w*|sin|cos|tan|arcsin|arccos|arctan)\s*[({]|\\[A-Za-z]+\s*[({]")
_CLOSED_NUMBER_BEFORE_RE = re.compile(r"\d\s*(?:\\pi|\u03c0|\bpi\b|\\sqrt|\u221a|\bsqrt\b)")


def _closed_form(text: str) -> float | None | object:
    """:func:`_closed_form_expr` of the span, or else of what follows its last copula ("the area is 2 pi")."""
    out = _closed_form_expr(text)
    if out is None:
        m = _CLOSED_COPULA_RE.match(text)
        if m is not None and m.end() < len(text):
            out = _closed_form_expr(text[m.end():])
    return out


def _closed_form_expr(text: str) -> float | None | object:
    """The value of a closed-form answer with named constants and elementary functions (``\\frac{\\pi}{4}``,
    ``e^(-10)``, ``2\\sqrt{3}``, ``tan(1 + π/4)``, ``log_2(3)``); :data:`_FREE` when it has unknowns
    (``2\\pi i \\frac{f(z_1)}{z_1 - z_2}``, ``3L^2``); None when the span is not one expression (prose)."""
    t = text.translate(_OP_TRANSLATION)
    if "=" in t:
        parts = [p for p in _EQUALS_RE.split(t) if p.strip()]
        t = parts[-1] if parts else t
    t = _latex_args(t)
    for pat, rep in _CLOSED_PREP:
        t = pat.sub(rep, t)
    t = _UNIT_TAIL_RE.sub("", t.strip().rstrip("."))
    t = _THOUSANDS_RE.sub("", t)
    words = _CLOSED_WORD_RE.findall(t)
    unknown = [w for w in words if w not in _CLOSED_FUNCS and w not in _CLOSED_NAMES and not re.fullmatch(r"[eE]\d+", w)]
    if len(unknown) > 1 and any(len(w) > 2 for w in unknown):
        return None  # prose ("approximately 30 hp using ..."): not one expression
    t = _IMPLICIT_MUL_RE.sub("@", t)
    if _DIV_THEN_PRODUCT_RE.search(t):
        return _FREE  # "e^2/2(1 + e^2)", "1/2πi": is the product under the fraction bar or not? no answer
    t = t.replace("@", "*")
    if len(t) > _MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(t, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    try:
        return _closed_value(tree)
    except NameError as exc:
        name = str(exc)
        if len(name) <= 2 or "_" in name or name in ("log", "lg"):
            return _FREE  # "x", "z_1", "\\theta": a variable; "log(5)": a log of unknown base
        return None  # "mails": prose
    except (ValueError, RecursionError):
        return None


def _parse_number(text: str) -> tuple[float | None, str | None, tuple[float, ...]]:
    """(value, reason, alternatives) for :func:`extract_number`."""
    if text is None or not text.strip():
        return None, "cue found but no number", ()
    if _CLOSED_HINT_RE.search(text):
        closed = _closed_form(text)
        if closed is _FREE:
            return None, "bad expression", ()  # "2\\pi r", "3L^2": unknowns, no value
        if isinstance(closed, float):
            return closed, None, ()
        if _CLOSED_NUMBER_BEFORE_RE.search(text) or _CLOSED_CALL_RE.search(text):
            return None, "bad expression", ()  # "2 pi ..." not read as one expression: its "2" is no answer
    s = _normalise_numeric_text(text)
    if s.count("(") > s.count(")") and _UNFINISHED_RE.search(s):
        return None, "truncated expression", ()  # "(9 + 6": the generation stopped mid-expression
    s = _STEP_PREFIX_RE.sub("", s)
    if _COEF_VAR_RE.search(s):
        return None, "bad expression", ()  # "7x = 14": an equation still to solve
    if "=" in s:
        # an equation "5 + 3 = 8": the result is on the right of the last "=" that has a number
        # (comparison operators like "<=" / "!=" are not equations and are left alone); names on
        # its left ("m + n = 25 + 169 = 194") do not make the result unknown
        parts = [p for p in _EQUALS_RE.split(s) if _NUM_RE.search(p)]
        if parts:
            s = parts[-1]
    s = _COMPOUND_UNIT_RE.sub(" ", s)
    if _UNKNOWN_IN_EXPR_RE.search(s):
        return None, "bad expression", ()
    candidates: list[tuple[int, int, float]] = []  # (start, end, value)
    bad = False
    for a, b in _runs(s):
        run = s[a:b]
        value = _run_value(run)
        if value is _REFUSED:
            # "10**10**10", "2^1000000", "1/0": one expression with no readable value.  Its first
            # number would be a wrong answer, so there is no answer (F12)
            return None, "bad expression", ()
        if value is None:
            # not one valid expression (e.g. "5 3", "1-2-2020"): fall back to its separate numbers
            bad = bad or bool(_HAS_OP_RE.search(run))
            for n in _NUM_RE.finditer(run):
                candidates.append((a + n.start(), a + n.end(), float(n.group(0))))
        else:
            lead = len(run) - len(run.lstrip(" \t\r\n("))
            candidates.append((a + lead, b, value))  # type: ignore[arg-type]
    if not candidates:
        wm = _WORD_NUMBER_RE.match(s.strip())
        if wm:
            v = _WORD_NUMBERS[wm.group(1).lower()]
            if wm.group(2):
                v += _WORD_NUMBERS[wm.group(2).lower()]
            return v, None, ()
        return None, ("bad expression" if bad else "cue found but no number"), ()
    first_start, first_end, first_val = candidates[0]
    others = [v for _, _, v in candidates[1:] if not numbers_equal(v, first_val)]
    if not others:
        return first_val, None, ()
    if not _LETTER_RE.search(s[:first_start]):
        # the span opens with its number ("42 apples in 6 boxes"); when the next number is joined
        # by "or"/"and" the span is a hedge ("(28 - 13) and (28 - 15)"): report the others
        hedge = bool(_CONJUNCTION_RE.search(s[first_end : candidates[1][0]]))
        alts: tuple[float, ...] = tuple(dict.fromkeys(others)) if hedge else ()
        return first_val, None, alts
    stated = _stated_after_copula(s, candidates)
    if stated is None:
        stated = _main_clause_number(s, candidates)
    if stated is not None:
        return stated, None, ()
    return None, "ambiguous", ()


# "... is 170 m", "... = $200", "... ≈ 9.615": the verb that states a result, then the result
_COPULA_RE = re.compile(r"(?:\b(?:is|are|was|were|equals?|be|becomes?|comes\s+to|totals?)\b|=|\u2248|~)", re.IGNORECASE)
_AFTER_RESULT_MAX_WORDS = 3  # "is 170 m." / "is 4.5 x 10^5 V": units may follow, no further clause


def _stated_after_copula(s: str, candidates: list[tuple[int, int, float]]) -> float | None:
    """The one number a sentence with several states as its result: a copula ("is", "=", "≈",
    "equals") directly followed by a number, only one such number in the sentence, and at most a few
    words (its unit) after it - "the present value of 3 payments at 7% is $2101.66" -> 2101.66.
    None otherwise ("the stress is 18 MPa and the strain is 9e-5"; "we need 4 people for there to be
    2 people with one birthday month" leaves more than a unit after its number)."""
    stated: list[tuple[int, int, float]] = []
    for m in _COPULA_RE.finditer(s):
        nxt = next((c for c in candidates if c[0] >= m.end()), None)
        if nxt is not None and len(_FILLER_RE.sub(" ", s[m.end() : nxt[0]]).split()) == 0 and nxt not in stated:
            stated.append(nxt)
    if len(stated) != 1:
        return None
    tail = s[stated[0][1] :]
    if len(tail.split()) > _AFTER_RESULT_MAX_WORDS or _CONJUNCTION_RE.search(tail) or "(" in tail:
        return None
    return stated[0][2]


# "Kelly needs to buy 118 games so that she will have 140 left": the main clause states one number, a
# purpose / condition / circumstance clause after it holds the others
_CLAUSE_AFTER_RE = re.compile(
    r"\s*(?:[A-Za-z'\u2019-]+\s+){0,3}?(?:so\s+that|in\s+order\s+to|to|with|in|if|after|before|for|from|when|by|out\s+of)\b",
    re.IGNORECASE,
)
_CLAUSE_HEDGE_RE = re.compile(r"\b(?:than|which|and|or|but|more|less|fewer|either|approximately|about)\b|[,;(]",
                              re.IGNORECASE)
_SUBJECT_MAX_WORDS = 8


def _main_clause_number(s: str, candidates: list[tuple[int, int, float]]) -> float | None:
    """The number of a sentence's main clause when the other numbers sit in a clause after it
    ("It will cost 2673 dollars to buy 33 packs" -> 2673; "Melissa scored 14929 points in 79 games"
    -> 14929).  None when the subject holds a number ("Each of the 10 guests had 18 cookies"), when
    two results are joined ("5 birds and 4 storks", "255 cakes, which is 184 more"), or the subject is long."""
    first = candidates[0]
    head = s[: first[0]]
    if len(head.split()) > _SUBJECT_MAX_WORDS or _CLAUSE_HEDGE_RE.search(head) or "?" in s:
        return None
    m = _CLAUSE_AFTER_RE.match(s, first[1])
    if m is None or _CLAUSE_HEDGE_RE.search(s, first[1], m.start() + len(m.group(0))):
        return None
    if _CLAUSE_HEDGE_RE.search(s[m.end() :]):
        return None
    return first[2]


_FILLER_RE = re.compile(r"\b(?:approximately|about|around|roughly|nearly|exactly|only|just|a\s+total\s+of|equal\s+to)\b|[$:\s]",
                        re.IGNORECASE)


def extract_number(text: str) -> float | None:
    """Read one number from an answer span; ``None`` when there is none or it is ambiguous.

    Normalises thousands separators (``"1,234"``), currency signs (``"$5.50"``, ``"\\$5"``, ``€``,
    ``£``), trailing units (``"5 apples"``), percentages (``"50%"`` -> ``50.0``, the number as
    written), signs (``"-3"``, ``"−3"``), fractions (``"3/4"``, ``"1 1/2"``, ``\\frac{3}{4}``),
    scientific notation (``"1.5e3"``), arithmetic (``"(10 * 45)"`` -> ``450.0``, ``"2 x 0.5"``, ``"2^3"``,
    ``"2**64"``; an expression the evaluator refuses, ``"1/0"`` or ``"10**10**10"``, gives ``None``
    rather than one of its numbers) and equations
    (``"5 + 3 = 8"`` -> ``8.0``: the right-hand side of the last ``=``).  Small number words
    (``"twenty-one"``) are read when the span has no digits.  When the span holds several different
    numbers it is read only if it starts with one (``"42 apples in 6 boxes"`` -> ``42.0``);
    otherwise the result is ``None`` (ambiguous).  Ranges like ``"5-10"`` read as subtraction.
    """
    return _parse_number(text)[0]


def numbers_equal(a: object, b: object, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """``True`` when both are numbers (int/float, not bool) equal within ``rel_tol`` (or ``abs_tol`` near zero).

    Anything else (``None``, strings, NaN) compares unequal, so an unreadable answer is never "correct".
    """
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or isinstance(a, bool) or isinstance(b, bool):
        return False
    fa, fb = float(a), float(b)
    if math.isnan(fa) or math.isnan(fb):
        return False
    return math.isclose(fa, fb, rel_tol=rel_tol, abs_tol=abs_tol)


# --------------------------------------------------------------------------------------------------
# 3b. multiple choice
# --------------------------------------------------------------------------------------------------

_NON_ALNUM_RE = re.compile(r"[^0-9a-z<>=]+")
_CAMEL_RE = re.compile(r"(?<=[a-z])(?=[A-Z])")
_SYMBOL_RE = re.compile(r"[<>=]+")
_LATEX_TEXT_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_DELIM_RE = re.compile(r"\\[()\[\]]|\$")


def _unlatex(text: str) -> str:
    """``\\text{city}`` -> ``city``; math delimiters ``\\( \\) \\[ \\] $`` dropped (words, not numbers)."""
    if "\\" not in text and "$" not in text:
        return text
    return _LATEX_DELIM_RE.sub(" ", _LATEX_TEXT_RE.sub(r"\1", text))


def _norm(text: str) -> str:
    """Lower-case, split camelCase, punctuation/underscores to single spaces; the comparison symbols
    ``< > =`` are kept as words of their own (a verdict label "A>B" is not "B>A")."""
    low = _CAMEL_RE.sub(" ", text).lower()
    return " ".join(_NON_ALNUM_RE.sub(" ", _SYMBOL_RE.sub(lambda m: f" {m.group(0)} ", low)).split())


def _stem_words(norm_text: str) -> str:
    out = []
    for w in norm_text.split():
        if len(w) > 3 and w.endswith("es") and w[-3] in "sxz":
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return " ".join(out)


@lru_cache(maxsize=64)
def _letter_patterns(letters: str) -> tuple[re.Pattern[str], ...]:
    cls = "".join(sorted(set(letters.lower() + letters.upper())))
    cls = re.escape(cls)
    up = re.escape("".join(sorted(set(letters.upper()))))
    return (
        re.compile(rf"[(\[]\s*([{cls}])\s*[)\]]"),  # (c)  [C]
        re.compile(rf"(?<![\w(\[])([{cls}])\)"),  # c)  C)
        re.compile(rf"\b(?:option|choice|letter)\s*[:#]?\s*\(?([{cls}])\b\)?", re.IGNORECASE),  # option C
        re.compile(rf"^([{up}])[.:](?=\s|$)"),  # "C. wooded area" / "C:"
        re.compile(rf"^\W*([{cls}])\W*$"),  # the whole span is one letter: "c", "C."
    )


def _find_letters(text: str, letters: str) -> list[tuple[int, int, int]]:
    """(start, end, index) of every option-letter marker in ``text``."""
    found: dict[tuple[int, int], int] = {}
    low = letters.lower()
    for pat in _letter_patterns(letters):
        for m in pat.finditer(text):
            idx = low.find(m.group(1).lower())
            if idx >= 0 and not any(s <= m.start() < e for (s, e) in found):
                found[(m.start(), m.end())] = idx
    return sorted((s, e, i) for (s, e), i in found.items())


def _mentions(hay: str, needles: Sequence[str]) -> list[tuple[int, int, int]]:
    """(start, end, needle index) of whole-word occurrences, dropping ones inside a longer match."""
    padded = f" {hay} "
    hits: list[tuple[int, int, int]] = []
    for i, n in enumerate(needles):
        if not n:
            continue
        key = f" {n} "
        pos = padded.find(key)
        while pos >= 0:
            hits.append((pos, pos + len(n), i))
            pos = padded.find(key, pos + 1)
    hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
    kept: list[tuple[int, int, int]] = []
    for h in hits:
        if any(k[0] <= h[0] and h[1] <= k[1] and (k[1] - k[0]) > (h[1] - h[0]) for k in kept):
            continue
        kept.append(h)
    return kept


# "not (e) pond", "rather than (b)": a negated mention selects nothing
_NEGATED_BEFORE_RE = re.compile(r"\b(?:not|rather\s+than|instead\s+of)\s*$", re.IGNORECASE)


def _choice_from(text: str, choices: Sequence[str], letters: str) -> tuple[int | None, str | None, tuple[int, ...]]:
    """(index, reason, alternatives) for :func:`extract_choice`."""
    if not text or not text.strip():
        return None, "no choice matched", ()
    text = _unlatex(text)
    norm_choices = [_norm(c) for c in choices]
    letter_hits = [
        h for h in _find_letters(text, letters) if h[2] < len(choices) and not _NEGATED_BEFORE_RE.search(text, 0, h[0])
    ]

    # text with the letter markers removed ("(c) wooded area" -> "wooded area")
    rest = text
    for s, e, _ in reversed(letter_hits):
        rest = rest[:s] + " " + rest[e:]
    rest_norm = _norm(rest)

    # 1. exact choice text (ties between identical options are broken by the letter)
    exact = [i for i, c in enumerate(norm_choices) if c and c == rest_norm]
    if exact:
        letter_set = {h[2] for h in letter_hits}
        in_both = [i for i in exact if i in letter_set]
        return (in_both[-1] if in_both else exact[0]), None, ()
    # 2. option letter(s): the last one; other distinct letters are alternatives (a hedge)
    if letter_hits:
        idx = letter_hits[-1][2]
        alts = tuple(dict.fromkeys(h[2] for h in letter_hits if h[2] != idx))
        return idx, None, alts
    # 3. option text mentioned in the span, the last mention wins; then with plurals folded
    for transform in (None, _stem_words):
        hay = rest_norm if transform is None else transform(rest_norm)
        needles = norm_choices if transform is None else [transform(c) for c in norm_choices]
        hits = [h for h in _mentions(hay, needles) if not _NEGATED_BEFORE_RE.search(hay, 0, h[0])]
        if hits:
            last_start = max(h[0] for h in hits)
            idx = max((h for h in hits if h[0] == last_start), key=lambda h: h[1] - h[0])[2]
            # identical option texts are one answer, not a hedge
            alts = tuple(dict.fromkeys(h[2] for h in hits if norm_choices[h[2]] != norm_choices[idx]))
            return idx, None, alts
    return None, "no choice matched", ()


def extract_choice(text: str, choices: Sequence[str], letters: str = "abcde") -> int | None:
    """Return the index (into ``choices``) the text selects, or ``None``.

    Reads option letters in the forms ``"(c)"``, ``"[C]"``, ``"c)"``, ``"C)"``, ``"option C"``,
    ``"C. text"`` and a bare ``"c"``, and the option text itself (case-, space- and
    punctuation-insensitive, plurals folded as a last resort).  Precedence: an exact match of the
    whole remaining text with one option's text wins (a verbatim quote of an option is the least
    ambiguous signal; ``"(e) unimportant"`` with (e)="petty", (d)="unimportant" gives 3); then the
    option letter (the last one if several, the others reported as alternatives by
    :func:`extract_answer`); then the last-mentioned option text, a longer option beating one it
    contains (``"body of water"`` over ``"water"``).  Mentions right after "not" / "rather than" /
    "instead of" are ignored.
    ``letters`` gives the letter of each position (``"abcde"`` -> a=0 ... e=4).
    Pass an answer span (see :func:`extract_final_answer_span`) rather than a whole rationale.
    """
    return _choice_from(text, choices, letters)[0]


# --------------------------------------------------------------------------------------------------
# 3c. class labels
# --------------------------------------------------------------------------------------------------

_NEGATORS = frozenset({"not", "no", "non", "never", "isn", "isnt", "nor", "neither"})


@lru_cache(maxsize=256)
def _label_table(
    labels: tuple[str, ...], synonyms: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[list[str], list[str]]:
    phrases: list[str] = []
    owners: list[str] = []
    seen: set[str] = set()

    def add(phrase: str, owner: str) -> None:
        p = _norm(phrase)
        if p and p not in seen:
            seen.add(p)
            phrases.append(p)
            owners.append(owner)

    for lab in labels:  # labels first: a label name always means itself
        add(lab, lab)
    for lab, syns in synonyms:
        for s in syns:
            add(s, lab)
    return phrases, owners


def _label_from(
    text: str, labels: Sequence[str], synonyms: Mapping[str, Iterable[str]] | None
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(label, reason, alternatives) for :func:`extract_label`."""
    if not text or not text.strip():
        return None, "no label matched", ()
    syn_key: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if synonyms:
        canon = {_norm(lab): lab for lab in labels}
        items = []
        for k, v in synonyms.items():
            owner = k if k in labels else canon.get(_norm(k))
            if owner is None:
                raise ValueError(f"synonym key {k!r} is not one of the labels {list(labels)!r}")
            items.append((owner, tuple(v)))
        syn_key = tuple(items)
    phrases, owners = _label_table(tuple(labels), syn_key)
    t = _norm(_unlatex(text))
    if t in phrases:
        return owners[phrases.index(t)], None, ()
    hits: list[tuple[int, str]] = []
    for s, _e, i in _mentions(t, phrases):
        before = t[: max(0, s - 1)].rsplit(" ", 1)[-1] if s > 1 else ""
        if before in _NEGATORS and phrases[i].split()[0] not in _NEGATORS:
            continue  # "not entailment": a negated mention names nothing
        hits.append((s, owners[i]))
    if not hits:
        return None, "no label matched", ()
    named = tuple(dict.fromkeys(o for _, o in hits))
    if len(named) == 1:
        return named[0], None, ()
    if hits[0][0] == 0:
        # the span starts with a label ("entailment, or maybe contradiction"): that label, the
        # others reported as alternatives
        return hits[0][1], None, tuple(o for o in named if o != hits[0][1])
    return None, "ambiguous", ()


def extract_label(text: str, labels: Sequence[str], synonyms: Mapping[str, Iterable[str]] | None = None) -> str | None:
    """Return the label (an element of ``labels``) named by ``text``, or ``None``.

    Matching ignores case, spacing, underscores/hyphens and camelCase (``"Not_Entailment"`` ==
    ``"not entailment"`` == ``"NotEntailment"``).  ``synonyms`` maps a label to other phrases that
    mean it (see :data:`NLI_SYNONYMS`).  An exact match of the whole text wins; otherwise whole-word
    mentions are collected (a longer phrase beats one it contains, and a mention directly after
    "not"/"no" is ignored).  If they all name one label it is returned; if they name several, the
    one the text *starts* with is returned (the others become
    :attr:`ExtractedAnswer.alternatives` in :func:`extract_answer`), else ``None`` (ambiguous).
    """
    return _label_from(text, labels, synonyms)[0]


# --------------------------------------------------------------------------------------------------
# 3d. yes / no (kind "boolean")
# --------------------------------------------------------------------------------------------------

_YES_WORDS = frozenset({"yes", "true", "correct", "right", "valid", "affirmative"})
_NO_WORDS = frozenset({"no", "false", "incorrect", "wrong", "invalid", "negative"})
_BOOL_NEGATORS = frozenset({"not", "isn", "isnt", "never"})
_BOOL_WORD_RE = re.compile(r"[a-z]+")
_BOOL_HEDGE_RE = re.compile(r"\b(?:yes|true)\s+or\s+(?:no|false)\b|\b(?:no|false)\s+or\s+(?:yes|true)\b", re.IGNORECASE)


def _boolean_from(text: str) -> tuple[bool | None, str | None, tuple[bool, ...]]:
    """(value, reason, alternatives) for :func:`extract_boolean`."""
    words = _BOOL_WORD_RE.findall(_unlatex(text).lower())
    if not words:
        return None, "no yes/no matched", ()
    if _BOOL_HEDGE_RE.search(text):
        return None, "ambiguous", ()  # "yes or no, depending on ..."
    if words[0] in ("yes", "no", "true", "false"):  # "Yes, because ...", "False."
        return words[0] in ("yes", "true"), None, ()
    said: list[bool] = []
    for i, w in enumerate(words):
        if w in _YES_WORDS or w in _NO_WORDS:
            v = w in _YES_WORDS
            if i > 0 and words[i - 1] in _BOOL_NEGATORS:  # "not true" -> False, "not false" -> True
                v = not v
            said.append(v)
    if not said:
        return None, "no yes/no matched", ()
    if len(set(said)) > 1:
        return None, "ambiguous", ()
    return said[0], None, ()


def extract_boolean(text: str) -> bool | None:
    """Read yes/no from an answer span: ``True`` for yes/true/correct, ``False`` for no/false/incorrect.

    A span that starts with yes/no/true/false is that answer ("Yes, the coin is still heads up" ->
    ``True``); otherwise every yes-word and no-word is collected, a directly preceding "not" turning it
    round ("the statement is not true" -> ``False``); words that disagree give ``None`` (ambiguous).
    LaTeX ``\\text{yes}`` is read as ``yes``.
    """
    return _boolean_from(text)[0]


# --------------------------------------------------------------------------------------------------
# 4. cue-less fallback
# --------------------------------------------------------------------------------------------------

_LIST_MARK_RE = re.compile(r"^\s*(?:[-*\u2022>]+|\(?\d{1,2}[.)]|step\s+\d+\s*[:.)])\s+", re.IGNORECASE)
_FALLBACK_SENT_RE = re.compile(r"(?<!\bMrs\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<=[.!?])\s+(?=[A-Z(\\$*\"'])")
_FALLBACK_HEDGE_RE = re.compile(
    r"\b(?:or|either|neither|between|unclear|cannot|can't|could\s+be|might|may|not\s+(?:sure|possible|enough|"
    r"determin\w*|one\s+of)|none|if|unless|assum\w*|suppose|let|need\s+to|we\s+(?:can|will|must)(?!\s+(?:conclude|infer|say|see)\s+that)|should\s+we|"
    r"wait|hmm|please|provide|would\s+need|more\s+information|approach|try|check)\b|[<>\u2264\u2265\u2260]"
    r"|\b(?:at|for|when|where|with|given|whenever)\s+\\?\(?\$?[A-Za-z]\s*="  # "converges at x = 5": a condition
    r"|\b(?:more|less|fewer|greater|smaller|larger|higher|lower)\s+than\s+\$?\d|\bat\s+(?:least|most)\b",  # a bound
    re.IGNORECASE,
)
_FALLBACK_CHOICE_NEG_RE = re.compile(
    r"\b(?:not|n't|incorrect|wrong|eliminat\w*|rul\w*\s+out|exclud\w*|unlikely|instead)\b", re.IGNORECASE
)
_FALLBACK_MAX_SENT_CHARS = 400
_RUNAWAY_RE = re.compile(r"\d{30}")  # "3.33333333333333333333333333333333...": degenerate repetition
# "... = 12 cups" (no period): a last equation whose right side is a whole number and perhaps its unit
_EQUATION_END_RE = re.compile(r"=\s*[-\u2212]?\$?\s*\d[\d.,]*\s*[A-Za-z%\u00b0/ ]{0,20}\**$")
_OPEN_TRACE_RE = re.compile(r"<\|begin_of_thought\|>|<think>|<thinking>|<reasoning>", re.IGNORECASE)
_CLOSED_TRACE_RE = re.compile(r"<\|end_of_thought\|>|</think>|</thinking>|</reasoning>", re.IGNORECASE)
# a digit that belongs to a name, not a number: "C_2", "n1", "x^2", "H2O"
_NAME_DIGITS_RE = re.compile(r"(?<![\d.])[A-Za-z]+(?:_\{?|\^\{?)?\d+\}?|[A-Za-z]\^\{?\d+\}?")
_ALINE_START_RE = re.compile(r"[>*#\s]*[AQ]\s*:")
_FINISHED_RE = re.compile(r"[.!)\]}*$`'\"\u201d]\s*$")
_FALLBACK_CHOICE_SENTENCES = 3  # an option named in one of the last three sentences of the last paragraph


# a paragraph that lists the problem's data: its numbers are givens, not the result
_GIVEN_SECTION_RE = re.compile(r"[*#\s]*(?:given|variables|relevant\s+variables|known|data|plan)\s*:?\s*[*]*\s*\n",
                               re.IGNORECASE)


# the answer given first ("Yes, every vector is an eigenvector ...") and then explained, with no other yes/no
_ANSWER_FIRST_RE = re.compile(r"\s*(?:\*\*)?(yes|no)(?:\*\*)?[,.!:]", re.IGNORECASE)
# "If <a fact the question states>, then ..." restates a given; it is no condition on the result
_GIVEN_IF_RE = re.compile(r"^(?:so,?\s+|therefore,?\s+)?(?:if|since|as|because|given\s+that)\s+([^,]{3,120}),\s*(?:then\s+)?",
                          re.IGNORECASE)
# the final sentence's result after its verb: "<subject, with its conditions> is <value> <unit>."
_RESULT_COPULA_RE = re.compile(r"\b(?:is|are|was|were|equals|becomes|comes\s+to)\s+(?:approximately\s+|about\s+|roughly\s+|"
                               r"exactly\s+|equal\s+to\s+|given\s+by\s+|at\s+)?", re.IGNORECASE)
_PREDICATE_HEDGE_RE = re.compile(r"\b(?:or|and|between|than|at\s+(?:least|most)|up\s+to|either|if|unless|when|per\s+cent\s+of)\b"
                                 r"|[<>\u2264\u2265\u2260\u00b1]|\+/-", re.IGNORECASE)
_PREDICATE_TAIL_RE = re.compile(r"\s*,?\s*(?:which|that|where|at\s+which)\s+(?:occurs|is\s+attained|is\s+reached)\b.*$",
                                re.IGNORECASE)
# "is 1.68 correct to two decimal places using the bisection method": how precise, not another clause
_PRECISION_TAIL_RE = re.compile(r"\s*,?\s*(?:correct|accurate|rounded)\s+to\s+\w+\s+(?:decimal\s+places?|significant\s+"
                                r"(?:figures|digits)|digits)\b.*$", re.IGNORECASE)
# what follows a value to say where it holds or what its symbols mean, not a second value
_CONDITIONAL_START_RE = re.compile(r"^(?:if|unless|suppose|supposing|assuming|provided|when)\b", re.IGNORECASE)
_SETTING_TAIL_RE = re.compile(r"\s*,?\s*(?:where|when|whenever)\s+.*$", re.IGNORECASE | re.DOTALL)
_PERCENT_RESTATED_RE = re.compile(rf"^\s*(-?{_NUMBER})\s*[A-Za-z]?\s*,?\s*or\s+(-?{_NUMBER})\s*%")
# a name next to an operator and a number: "\\varepsilon/3", "3 + x", "2k": a value with unknowns
_PREDICATE_VARIABLE_RE = re.compile(r"\d[a-fh-lnoq-rt-zB-IMOP-UXYZ]\b(?![-+]?\d)|(?<![\w\\])(?!e\s*[-+*/^])[A-Za-z]\s*[-+*/^]\s*[\d(]|[\d)]\s*[-+*/^]\s*\\?[A-Za-z]|\\(?:varepsilon|epsilon|alpha|beta|"
                                    r"gamma|delta|theta|lambda|mu|sigma|omega|phi|rho|tau)\b")
# what a stated value starts with: a number, a sign, LaTeX, "x = ...", "y(0.2) ≈ ...", e, pi
_VALUE_START_RE = re.compile(r"\s*[-$\d\\(]|\s*[a-z]\s*=|\s*e\b|\s*pi\b|\s*(?:sqrt|exp|ln|sin|cos|tan)\s*\(|\s*[A-Za-z]\w{0,3}\s*\([^()]*\)\s*(?:=|\\approx|\u2248)")
_APPROX_RE = re.compile(r"\\approx|\u2248")
_UNIT_WORD_RE = re.compile(r"^[A-Za-z\u00b5\u03a9\u00b0%$/()\-\^\u00b7*\d]{1,14}$")
_PREDICATE_MAX_UNIT_WORDS = 3


def _stated_result(sentence: str) -> float | None | object:
    """The value a final sentence states after its main verb, its subject holding the conditions the
    question set ("the fraction of particles deflected at 90° or more is 3.92 x 10^-4" -> 3.92e-4; "the
    curvature at x = 2 is -1/2" -> -0.5; "the minimum value is -30 which occurs at (6, 12)" -> -30).

    The verb must be the sentence's only "is <number>"; what follows it is the value, a unit of at most
    three words, nothing else ("is 0.0462 or 4.62%", one value written two ways, is read too).  A bound,
    a hedge or a second value in the predicate gives None; unknowns in it give :data:`_FREE` (then the
    sentence states no value at all)."""
    s = _normalise_numeric_text(_CONCLUSION_RE.sub("", sentence.strip()).rstrip(".").strip())
    if _CONDITIONAL_START_RE.match(s):
        return None  # "If there are 7 rows, then ...": stated under a condition
    verbs = [m for m in _RESULT_COPULA_RE.finditer(s) if _VALUE_START_RE.match(s, m.end())]
    if len(verbs) != 1:
        return None
    pred = _PREDICATE_TAIL_RE.sub("", _PRECISION_TAIL_RE.sub("", s[verbs[0].end():])).strip()
    pred = _SETTING_TAIL_RE.sub("", pred).strip()  # ", where p = P(X = 1) is ...", "when 1.5 V is applied"
    if _EQUALS_RE.search(pred) and "," not in _EQUALS_RE.split(pred)[0]:
        pred = _EQUALS_RE.split(pred)[-1].strip()  # "sqrt(p(1-p)) = sqrt(0.8*0.2) = 0.4": the value is the last
    pct = _PERCENT_RESTATED_RE.match(pred)
    if pct is not None and numbers_equal(float(pct.group(1)) * 100, float(pct.group(2)), rel_tol=1e-3):
        if len(pred[pct.end():].split()) <= _PREDICATE_MAX_UNIT_WORDS + 1:  # "90.7% the speed of light"
            return float(pct.group(1))  # "0.0462 or 4.62%": one value, two ways
        return None
    if _PREDICATE_VARIABLE_RE.search(_COMPOUND_UNIT_RE.sub(" ", pred)):
        return _FREE  # "is \\varepsilon/3 volts", "is 3k": unknowns, no value
    if _PREDICATE_HEDGE_RE.search(pred):
        return None
    value, _reason, alts = _parse_number(_APPROX_RE.sub("=", pred))
    if value is None or alts:
        return None
    first = _NUM_RE.search(pred)
    tail = pred[first.end():].split() if first is not None else []
    if first is not None and len(tail) > _PREDICATE_MAX_UNIT_WORDS + 2:
        return None  # more than a unit after it: a clause, not a stated value
    return float(value)


# "the statement is true", "the argument is False": the verdict, in one of the last three sentences
_VERDICT_SENTENCE_RE = re.compile(r"\b(?:statement|claim|assertion|argument|proposition|it)\s+is\s+(not\s+)?"
                                  r"(true|false|correct|incorrect)\b", re.IGNORECASE)
_CONCLUSION_RE = re.compile(r"^(?:therefore|thus|hence|so|consequently|in\s+conclusion|in\s+summary)\b[,:]?\s*"
                            r"(?:(?:by|from|using)\s+[^,]{1,60},\s*)?", re.IGNORECASE)


def _final_sentences(body: str) -> list[str]:
    """The sentences of the last non-empty paragraph, last first (markdown and list markers removed)."""
    tail = body[-4 * _FALLBACK_MAX_SENT_CHARS :].rstrip()
    para = re.split(r"\n[ \t]*\n", tail)[-1]
    lines = [ln for ln in para.split("\n") if ln.strip()]
    if not lines:
        return []
    out: list[str] = []
    for line in reversed(lines):
        line = _LIST_MARK_RE.sub("", _MARKDOWN_RE.sub("", _BOLD_RE.sub(r"\1", line))).strip(" \t*_#")
        for sent in reversed(_FALLBACK_SENT_RE.split(line)):
            if sent.strip():
                out.append(sent.strip())
    return out


_OPTION_LINE_RE = re.compile(r"^\(?([A-Ja-j])[.):]\s+(\S.*)$", re.DOTALL)
# the option restated, then why: "B. Escape queries - While not the most secure, ..." / "... (because ...)"
_EXPLANATION_AFTER_OPTION_RE = re.compile(r"\s+[-\u2013\u2014]\s+|\s*[:;]\s+|\s+\((?=because|since|as\b)|,\s+(?:because|since|as)\b")
# a caveat after the answer, about the answer's limits rather than another option:
# "However, it's important to note that ...", "Note that ...", "Keep in mind ..."
_CAVEAT_RE = re.compile(r"^(?:however,?\s+)?(?:it(?:'s|\s+is)\s+(?:important|worth)\s+(?:to\s+)?not(?:e|ing)|note\s+that|"
                        r"keep\s+in\s+mind|please\s+note)\b", re.IGNORECASE)
# "X that does not hold is (E) ...": the option follows the sentence's verb; a negation or hedge in its
# subject ("the only pair that does not satisfy ...") or in a reason after it (", as some may ...") is not
# said of the option
_OPTION_AFTER_VERB_RE = re.compile(r"\b(?:is|are|would\s+be|will\s+be|must\s+be)\s*:?\s*$", re.IGNORECASE)
_REASON_AFTER_RE = re.compile(r",?\s+(?:as|because|since|which|given\s+that)\b|,\s", re.IGNORECASE)
_RESTATED_LINES = 8
# "The correct program to compute the mean is:" / "the answer would be:" (then the option on its own lines)
_LEAD_IN_RE = re.compile(r"\b(?:is|are|would\s+be|will\s+be|answer|option|choice)\s*:\s*$", re.IGNORECASE)


def _restated_option(body: str, choices: Sequence[str], letters: str) -> tuple[int, str] | None:
    """A line among the last few that restates one option as "C. <its text>" (the letter and the
    option's own text agree): (index, line).  None when there is none or several options are restated."""
    lines = [ln.strip() for ln in body[-4 * _FALLBACK_MAX_SENT_CHARS :].split("\n") if ln.strip()][-_RESTATED_LINES:]
    found: dict[int, str] = {}
    for line in lines:
        m = _OPTION_LINE_RE.match(_MARKDOWN_RE.sub("", _BOLD_RE.sub(r"\1", line)).strip())
        if not m:
            continue
        idx = letters.lower().find(m.group(1).lower())
        said = _norm(_EXPLANATION_AFTER_OPTION_RE.split(m.group(2), 1)[0])  # "B. Escape queries - because ..."
        if 0 <= idx < len(choices) and said and said == _norm(choices[idx]):
            found[idx] = line
    if not found:
        # an option of several lines (a program, a table) as its own paragraph after a lead-in "... is:": the
        # letter is what the text states, even where the model copies the option's text imperfectly
        paras = [x.strip() for x in re.split(r"\n[ \t]*\n", body[-4 * _FALLBACK_MAX_SENT_CHARS:]) if x.strip()]
        for before, para in zip(paras, paras[1:]):
            m = _OPTION_LINE_RE.match(para)
            if m and "\n" in m.group(2) and _LEAD_IN_RE.search(before):
                idx = letters.lower().find(m.group(1).lower())
                if 0 <= idx < len(choices):
                    found[idx] = para.split("\n", 1)[0]
    if len(found) > 1:
        # the options recited, then one restated after a lead-in ("The most relevant option is:\nB. ..."): that one
        leads = [k for k, ln in enumerate(lines) if _LEAD_IN_RE.search(ln)]
        if leads:
            after = [i for i, ln in found.items() if max(k for k, x in enumerate(lines) if x == ln) > leads[-1]]
            if len(after) == 1:  # one option after the last lead-in ("The correct statements are:\nF. ..\nI. .." is two)
                return after[0], found[after[0]]
    if len(found) != 1:
        return None  # none, or a list of options (the model reciting them)
    idx, line = next(iter(found.items()))
    return idx, line


def _fallback(
    body: str,
    kind: str,
    choices: Sequence[str] | None,
    labels: Sequence[str] | None,
    synonyms: Mapping[str, Iterable[str]] | None,
    letters: str,
    question: str | None = None,
) -> tuple[float | int | str | bool, str] | None:
    """(value, span) stated by the final sentence of a text that has no answer cue, or None.

    Used only when it is unambiguous: the final sentence (a question, a hedge or a conditional gives
    nothing) states one number (or an equation's result, or one number after its last "is"/"="), names
    one option letter with no negation (kind choice: also in one of the last three sentences of the
    last paragraph), names one label, or says yes/no (kind boolean).
    """
    sents = _final_sentences(body)
    if not sents:
        return None
    if _GIVEN_SECTION_RE.match(re.split(r"\n[ \t]*\n", body.rstrip())[-1].lstrip()):
        return None  # the text stops in its list of givens ("Given:\n... = 14"): a datum, not a result
    last = sents[0]
    if len(last) > _FALLBACK_MAX_SENT_CHARS or last.endswith("?") or _RUNAWAY_RE.search(last):
        return None
    if body.count(last) >= 3:
        return None  # the model repeats its last sentence over and over: degenerate, not a final statement
    final_line = body.rstrip().rsplit("\n", 1)[-1].strip()
    if _ALINE_START_RE.match(final_line):
        return None  # an "A:" line too long to be an answer: the model echoes its question
    if not _FINISHED_RE.search(final_line) and not _EQUATION_END_RE.search(final_line):
        return None  # the text stops mid-sentence: cut off, not a statement of the result
    if final_line.count("{") != final_line.count("}") or final_line.count("(") < final_line.count(")") - 1:
        return None  # LaTeX or an expression cut off inside its braces
    if _OPEN_TRACE_RE.search(body) and not _CLOSED_TRACE_RE.search(body):
        return None  # a reasoning trace cut off before its end: its last sentence is thinking, not an answer
    if kind == "choice":
        restated = _restated_option(body, choices or (), letters)
        if restated is not None and (not _FALLBACK_HEDGE_RE.search(last) or (
                _CAVEAT_RE.match(last) and not _find_letters(_unlatex(last), letters))):
            return restated  # "... is:\nC. An overflow error occurred." (not when the text then takes it back)
        for sent in sents[:_FALLBACK_CHOICE_SENTENCES]:
            if sent.endswith("?"):
                return None
            hits = [
                h for h in _find_letters(_unlatex(sent), letters)
                if h[2] < len(choices or ()) and sent[h[0] : h[1]].strip().startswith(("(", "[", "o", "O", "c", "C"))
            ]
            strict = [h for h in hits if re.match(r"[(\[]|option|choice", sent[h[0] : h[1]].strip(), re.IGNORECASE)]
            if not strict:
                continue
            said = sent
            if len(strict) == 1 and _OPTION_AFTER_VERB_RE.search(sent, 0, strict[0][0]):
                pred = sent[strict[0][0]:]  # the option and its text, up to a reason clause
                r_m = _REASON_AFTER_RE.search(pred, strict[0][1] - strict[0][0])
                said = sent[:0] + (pred[: r_m.start()] if r_m else pred)
            if _FALLBACK_CHOICE_NEG_RE.search(said) or _FALLBACK_HEDGE_RE.search(said):
                return None
            named = {h[2] for h in strict}
            return (strict[0][2], sent) if len(named) == 1 else None
        return None
    if kind == "boolean" and question and _CONCLUSION_RE.match(last):
        # a concluding claim has its own hedge test (_CLAIM_HEDGE_RE): "no difference between the groups"
        # restates "Is there any difference between ...?", "between" is no hedge there
        claimed = _claim_polarity(_CONCLUSION_RE.sub("", last), question)
        if claimed is not None:
            return claimed, last
    if kind == "number":
        stated = _stated_result(last)
        if stated is _FREE:
            return None
        if isinstance(stated, float):
            return stated, last  # "Therefore, the area over the interval 1 <= x <= 3 is 20 square units."
    if question:
        given = _GIVEN_IF_RE.match(last)
        if given is not None and _words(given.group(1)) <= _words(question) and set(
                _NUM_RE.findall(given.group(1))) <= set(_NUM_RE.findall(question)):
            last = last[given.end():]  # "If there are 12 houses in each block, then ...": a given, no condition
    if _FALLBACK_HEDGE_RE.search(last):
        return None
    if kind == "number":
        # "C_2", "n1", "m/s^2": a digit that names something or is a unit's power is not a number of the
        # sentence ("the value of $c_0$ is 0" -> 0; "determine the value of $C_2$." -> nothing)
        value, reason, alts = _parse_number(_NAME_DIGITS_RE.sub(" name ", last))
        if value is None and reason in ("ambiguous", "bad expression") and question:
            value = _asked_quantity(last, question)  # "... 8 balloons and 79 balls" + "How many balloons ...?"
        return (value, last) if value is not None and not alts else None
    if kind == "boolean":
        words = _BOOL_WORD_RE.findall(last.lower())
        lead = [w for w in words[:3] if w not in ("so", "thus", "therefore", "hence", "then", "overall", "in", "conclusion")]
        if lead and lead[0] in ("yes", "no"):
            return lead[0] == "yes", last
        m = next((x for x in (_VERDICT_SENTENCE_RE.search(t) for t in sents[:3]) if x is not None), None)
        if m:
            v = m.group(2).lower() in ("true", "correct")
            return (not v if m.group(1) else v), last
        if question and _CONCLUSION_RE.match(last):
            claimed = _claim_polarity(_CONCLUSION_RE.sub("", last), question)
            if claimed is not None:
                return claimed, last  # "Therefore, the vectors are linearly independent." + "Are they ...?"
        first = _ANSWER_FIRST_RE.match(body)
        if first is not None and not re.search(r"\b(?:yes|no)\b", body[first.end():], re.IGNORECASE):
            return first.group(1).lower() == "yes", first.group(0).strip()  # "Yes, this is true. <why>"
        return None
    if kind == "label":
        lab, _why, lab_alts = _label_from(last, labels or (), synonyms)
        return (lab, last) if lab is not None and not lab_alts else None
    return None


# "there are 24 ways", "the object has 19 faces", "the speed is 5.9 m/s": a clause's verb states its number
_CLAUSE_VERB_NUMBER_RE = re.compile(
    rf"\b(?:is|are|was|were|has|have|had|equals?|be|becomes?|totals?|gives?|yields?|makes?|takes?|comes\s+to)"
    rf"\s+(?:approximately\s+|about\s+|exactly\s+|only\s+|a\s+total\s+of\s+)?[$\u20ac\u00a3]?\s*(-?{_NUMBER})",
    re.IGNORECASE)


# a count stated by existence: "there are 5040 different numbers ...", "there is only 1 tree ..."
_EXISTENTIAL_RE = re.compile(rf"^\s*there\s+(?:are|is|exist|exists|were|was)\s+(?:only\s+|exactly\s+|a\s+total\s+of\s+)?"
                             rf"({_NUMBER})\s+[A-Za-z]", re.IGNORECASE)


_CLAUSE_COPULA_RE = re.compile(r"\b(?:is|are|was|were|be|equals?)\b", re.IGNORECASE)
_CLAUSE_CONDITION_RE = re.compile(r"=|\b(?:at\s+(?:least|most)|than|up\s+to|if|when|unless|or)\b|[<>\u2264\u2265]", re.IGNORECASE)


_LATER_NUMBER_RE = re.compile(rf"(?<![\w.-])({_NUMBER})(?![\w-]|\.\d)")  # "7-digit" is a word, not a number
_COUNTED_THING_RE = re.compile(r"^\s*(?:\w[\w-]*\s+){1,6}?(?:that\s+can\s+be\s+\w+\s+)?(?:using|with|from|on|in|among|"
                               r"out\s+of|made\s+from|formed\s+from)\b[^,;]*$", re.IGNORECASE)


def _existential_count(span: str) -> float | None:
    """The count of "there are N <things> <made from / on / with ...>": the other numbers of the span describe
    what the things are made from ("there are 5040 different 7-digit numbers that can be formed using the digits
    1, 2, 2, 3") - not a second count ("there are 9 storks and 4 birds" gives None)."""
    s = _normalise_numeric_text(span)
    m = _EXISTENTIAL_RE.match(s)
    if m is None:
        return None
    later = _LATER_NUMBER_RE.search(s, m.end(1))
    if later is not None and not _COUNTED_THING_RE.match(s[m.end(1): later.start()]):
        return None
    return float(m.group(1))


def _clause_states(span: str, value: float) -> bool:
    """Whether a clause given as the answer ("the answer is that ...") states ``value`` with its verb,
    rather than mentioning it in a condition ("converges at x = 5") or a bound ("at least 4")."""
    s = _normalise_numeric_text(span)
    if len(_NUM_RE.findall(s)) == 1 and not _CLAUSE_CONDITION_RE.search(s) and not _CLAUSE_COPULA_RE.search(s):
        return True  # one number, no verb "is", no condition or bound: "you will hear the boom 27.12 s after it passes"
    return any(numbers_equal(float(m.group(1)), value) for m in _CLAUSE_VERB_NUMBER_RE.finditer(s))


# --------------------------------------------------------------------------------------------------
# 5. the question decides (optional): which of several stated quantities, which polarity a claim has
# --------------------------------------------------------------------------------------------------

_Q_SENT_RE = re.compile(r"(?<=[.?!])\s+")
_HOW_MANY_RE = re.compile(
    r"\b(?:how\s+(?:many|much)|(?:what|find)\s+(?:is\s+)?the\s+number\s+of)\s+(?:(?P<cmp>more|fewer|less)\s+)?"
    r"(?P<qualifier>(?:different|distinct|possible)\s+)?(?P<noun>[a-z][a-z-]*)(?P<pair>\s+and\s+[a-z]+)?(?:.*?\bthan\b)?",
    re.IGNORECASE)
# words that end the noun phrase of "How many <noun phrase> ...": a verb, a preposition
_PHRASE_END = frozenset({"can", "could", "are", "is", "was", "were", "do", "does", "did", "will", "would", "should",
                         "have", "has", "had", "there", "in", "on", "of", "to", "with", "for", "from", "due", "that",
                         "which", "at", "by", "if", "when", "must", "may", "might", "be", "you", "we", "they", "he", "she",
                         "it", "i", "altogether", "left", "each", "per"})
_NOT_A_NOUN = frozenset({"will", "would", "did", "does", "do", "can", "could", "should", "are", "is", "were", "was",
                         "has", "have", "had", "of", "in", "times", "more", "less", "fewer"})
_AFTER_NUMBER_WORDS = 3  # "42 rows", "3 packages of white t-shirts", "15 red peaches"
_STATED_NUMBER_RE = re.compile(rf"(?<![\w.])-?\$?({_NUMBER})(?!\w|\.\d)")


def _stem(word: str) -> str:
    """Singular of a plural noun, roughly: "berries" -> "berry", "boxes" -> "box", "trees" -> "tree"."""
    w = word.lower().strip("-")
    if len(w) <= 3 or w.endswith("ss"):
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("sses", "xes", "ches", "shes", "zes")):
        return w[:-2]
    return w[:-1] if w.endswith("s") else w


# the unit the answer is asked in: "(Unit: mm)", "Give the answer in unit of $k\\Omega$", "in units of m/s"
_UNIT_ASKED_RE = re.compile(r"\(\s*unit\s*:\s*([^()]{1,20}?)\s*\)|\bin\s+(?:the\s+)?units?\s+of\s+\$?([^\s$.,;()]{1,12})\$?",
                            re.IGNORECASE)
# "... did Ed lose?", "... will each of the boys receive?": the words after the auxiliary (subject, then verb)
_ASKED_VERB_RE = re.compile(r"\b(?:did|does|do|will|would|can|could|should|must|had|has|have)\s+(?P<rest>[^?]{1,80})\?",
                            re.IGNORECASE)
_VERB_FORMS = {"have": ("have", "has", "had"), "eat": ("eat", "eats", "ate", "eaten"), "get": ("get", "gets", "got"),
               "give": ("give", "gives", "gave", "given"), "make": ("make", "makes", "made"),
               "buy": ("buy", "buys", "bought"), "take": ("take", "takes", "took"), "find": ("find", "finds", "found"),
               "sell": ("sell", "sells", "sold"), "spend": ("spend", "spends", "spent"), "lose": ("lose", "loses", "lost"),
               "do": ("do", "does", "did"), "bring": ("bring", "brings", "brought"), "catch": ("catch", "catches", "caught"),
               "pay": ("pay", "pays", "paid"), "read": ("read", "reads"), "win": ("win", "wins", "won")}


_IN_EXPR_AFTER_RE = re.compile(r"\s*(?:\*\*|[-+*/^%])\s*[\w(]")
_IN_EXPR_BEFORE_RE = re.compile(r"(?:\*\*|[+*/^%]|[\w)]\s*-)\s*\(?$")
_SCI_RE = re.compile(r"(\d(?:\.\d+)?)\s*\*\s*10\s*\*\*\s*\(?([-+]?\d+)\)?")
# words after "did/does/will <subject>" that are no verb of the question
_NOT_VERBS = frozenset({"each", "them", "all", "both", "every", "one", "ones", "people", "person", "the", "a", "an", "of",
                        "to", "in", "on", "at", "for", "with", "from", "by", "his", "her", "their", "its", "he", "she",
                        "they", "it", "we", "you", "i", "there", "this", "that", "these", "those", "and", "or"})


def _unlatex_unit(unit: str) -> str:
    """"k\\Omega" -> "kω", "\\mu m" -> "µm": a unit as a model writes it in prose, lower case."""
    u = unit.strip().replace("\\Omega", "\u03a9").replace("\\mu", "\u00b5").replace("\\", "").replace(" ", "")
    return u.lower()


def _verb_says(word: str, verb: str) -> bool:
    """Whether ``word`` is a form of ``verb`` ("had" of "have", "received" of "receive")."""
    w, v = word.lower(), verb.lower()
    if v in _VERB_FORMS:
        return w in _VERB_FORMS[v]
    return len(v) >= 3 and w.startswith(v.rstrip("e"))


def _asked_quantity(span: str, question: str) -> float | None:
    """The one number of ``span`` that the question asks for, among several the span states:

    * "How many <noun> ...?": the only number directly followed (within three words, before the next
      number) by that noun ("Jake has 136 apples and 3 peaches" + "How many peaches does Jake have?" -> 3);
      a unit the question names ("(Unit: mm)") works as the noun;
    * "How many more <X> than <Y>?": the number stated as "N more ... than";
    * "How many did each of them have?" (no noun): the number right after a form of the question's verb
      ("Each of the 10 guests had 18 cookies" -> 18);
    * when several numbers go with the noun, the one the question's verb or subject goes with
      ("Jake has 7 peaches and Jill has -65 peaches" + "How many peaches does Jake have?" -> 7).

    None when the question asks for two things ("How many apples and pears ...?"), or when none or
    several numbers remain."""
    q = question[-400:]
    s = _SCI_RE.sub(r"\1e\2", _normalise_numeric_text(span))  # "2.7 x 10^-25" is one number
    # a number that stands alone: not one in an expression ("19 + y", "2^99", "x + 33")
    numbers = [n for n in _STATED_NUMBER_RE.finditer(s)
               if not _IN_EXPR_AFTER_RE.match(s, n.end()) and not _IN_EXPR_BEFORE_RE.search(s, 0, n.start())]

    def value(n: re.Match[str]) -> float:
        return float(n.group(1)) * (-1 if s[n.start()] == "-" else 1)

    def one(vals: set[float]) -> float | None:
        return vals.pop() if len(vals) == 1 else None

    unit = _UNIT_ASKED_RE.search(q)
    found = list(_HOW_MANY_RE.finditer(q))
    if not found and unit is None:
        return None
    m = found[-1] if found else None
    if m is not None and m.group("pair"):
        return None  # "How many apples and pears ...?": two things asked
    if m is not None and m.group("cmp"):
        said = [n for n in numbers if re.match(rf"\s+(?:[a-z-]+\s+){{0,2}}?{m.group('cmp')}\b(?:\s+[a-z-]+){{0,3}}?\s+than\b",
                                                s[n.end():], re.I)
                or re.search(r"\bdifference\b[^.;]{0,120}?\b(?:is|=|was|of)\s*$", s[:n.start()], re.I)]
        return one({value(n) for n in said})
    verb = _ASKED_VERB_RE.search(q, m.start() if m is not None else 0)
    noun = m.group("noun").lower() if m is not None else ""
    if m is None or noun in _NOT_A_NOUN:
        if unit is not None:  # "(Unit: mm)": the number written with that unit
            want_unit = _unlatex_unit(unit.group(1) or unit.group(2))
            return one({value(n) for n in numbers
                        if s[n.end(): n.end() + len(want_unit) + 2].strip().lower().startswith(want_unit)})
        if verb is None:
            return None  # "How big is each group?": nothing names the quantity
        verbs = [v for v in re.findall(r"[a-z]+", verb.group("rest"))[1:6] if v not in _NOT_VERBS]
        return one({value(n) for n in numbers
                    if any(_verb_says(w, v) for w in re.findall(r"[A-Za-z]+", s[max(0, n.start() - 12): n.start()])[-1:]
                           for v in verbs)})
    # the noun phrase asked for ("different ice cream cones" in "How many different ice cream cones can you
    # make"): its first word that some number of the span goes with, in order
    phrase: list[str] = []
    for w in re.findall(r"[A-Za-z-]+", q[m.start("qualifier") if m.group("qualifier") else m.start("noun"):])[:5]:
        if w.lower() in _PHRASE_END:
            break
        phrase.append(w)
    with_noun: list[re.Match[str]] = []
    for want in dict.fromkeys(_stem(w) for w in (phrase or [noun])):
        for k, n in enumerate(numbers):
            stop = numbers[k + 1].start() if k + 1 < len(numbers) else len(s)  # the words up to the next number
            after = re.findall(r"[A-Za-z-]+", s[n.end(): min(stop, n.end() + 60)])[:_AFTER_NUMBER_WORDS]
            if any(_stem(w) == want for w in after):
                with_noun.append(n)
        if with_noun:
            break
    got = one({value(n) for n in with_noun})
    if got is not None or len(with_noun) < 2 or verb is None:
        return got
    if re.search(r"\band\b", q[m.start():].split("?", 1)[0], re.IGNORECASE):
        return None  # "How many hours on English and Chinese?" + "4 hours ... and 6 hours ...": parts of a total
    # several: keep the one whose own clause has the question's verb and subject ("Jake has 7 peaches")
    rest = re.findall(r"[A-Za-z']+", verb.group("rest"))
    subject = [w for w in rest[:4] if w[:1].isupper()]
    verbs = [w.lower() for w in rest[1:6] if w.lower() not in _NOT_VERBS]
    by_verb: list[tuple[re.Match[str], list[str]]] = []
    for n in with_noun:
        before = re.split(r"\band\b|,|;", s[max(0, n.start() - 60): n.start()])[-1]
        words = re.findall(r"[A-Za-z']+", before)
        if any(_verb_says(w, v) for w in words for v in verbs):
            by_verb.append((n, words))
    got = one({value(n) for n, _ in by_verb})
    if got is not None or not subject:
        return got
    return one({value(n) for n, words in by_verb if any(w in words for w in subject)})


_AUX_START_RE = re.compile(r"^(?:is|are|was|were|does|do|did|can|could|will|would|has|have|had|should|must|may)\b",
                           re.IGNORECASE)
_DETERMINE_IF_RE = re.compile(r"\b(?:determine|decide|check|tell|state|verify)\s+(?:if|whether)\s+(.{4,})$", re.IGNORECASE)
_AUX_CLAUSE_RE = re.compile(r"(?:^|[,;:]\s*)(?:is|are|was|were|does|do|did|can|could|will|would|has|have|had|should|"
                            r"must|may)\b", re.IGNORECASE)
_TRUE_FALSE_ASK_RE = re.compile(r"^(?:true\s+or\s+false|is\s+(?:it|this|that)(?:\s+\w+)?\s+(?:true|correct)"
                                r"(?:\s+or\s+(?:false|not))?)\s*[?.]?$", re.IGNORECASE)
_NEGATION_RE = re.compile(r"\b(?:not|no|never|cannot|none|neither|nor|fails?\s+to|non)\b|n't\b", re.IGNORECASE)
_CLAIM_HEDGE_RE = re.compile(r"\b(?:or|if|unless|whether|likely|unlikely|may|might|could|possibly|perhaps|probably|"
                             r"depends?|but|however|although|cannot\s+(?:conclude|determine|say)|marginally|partially|"
                             r"almost|nearly|approximately|conditionally|in\s+terms\s+of|that\s+can\s+be)\b|\?",
                             re.IGNORECASE)
_CLAIM_ADVERBIAL_RE = re.compile(r"\s+(?:when|while|whenever|after|before)\b.*$", re.IGNORECASE | re.DOTALL)
_CLAIM_REASON_RE = re.compile(r"(?:,?\s+(?:because|since|due\s+to|given\s+that|which\s+means)|,\s+as)\b.*$",
                              re.IGNORECASE | re.DOTALL)
_STOP = frozenset("the a an of to in on at for by with from and is are be been was were this that these those it its "
                  "there here we our you your they their he she his her has have had does do did can will would "
                  "given following such any all some not never none cannot when where which what whether".split())
_CONTENT_RE = re.compile(r"[a-z][a-z0-9_]{2,}")


def _proposition(question: str) -> str | None:
    """The proposition a yes/no question asks about: its last question sentence when that starts with an
    auxiliary ("Is W a subspace of R^2?"), or the sentence before a "True or False?" / "Is it true?"."""
    sents = [x.strip() for x in _Q_SENT_RE.split(question.strip()[-1200:]) if x.strip()]
    for i in range(len(sents) - 1, -1, -1):
        if _TRUE_FALSE_ASK_RE.match(sents[i]):
            return sents[i - 1] if i > 0 else None
        asked = _DETERMINE_IF_RE.search(sents[i])
        if asked is not None:
            return asked.group(1)  # "Determine if the system is a FIR."
        m = _AUX_CLAUSE_RE.search(sents[i])
        if sents[i].endswith("?"):
            # "Is W a subspace?", "For a matrix A, is F linear?"
            return sents[i][m.start():].lstrip(",;: ") if m is not None else None
        if i == len(sents) - 1 and m is not None:
            return sents[i][m.start():].lstrip(",;: ")  # "is the function f scale invariant" (no "?")
    if sents and "?" not in question:
        return sents[-1]  # a statement to judge true or false ("... is not in general related to ...")
    return None


def _antonym_prefixed(a: str, b: str) -> bool:
    """Whether one text has "non-X"/"un-X" where the other has plain "X" ("nonlinear" / "linear")."""
    wa = set(re.findall(r"[a-z]+(?:-[a-z]+)?", a.lower()))
    wb = set(re.findall(r"[a-z]+(?:-[a-z]+)?", b.lower()))
    for x, y in ((wa, wb), (wb, wa)):
        for w in x:
            for pre in ("non-", "non", "un"):
                if w.startswith(pre) and len(w) - len(pre) >= 4 and w[len(pre):] in y:
                    return True
    return False


def _one_edit(a: str, b: str) -> bool:
    """Whether two words of five letters or more differ by one typo (a letter changed, added, dropped, or
    two neighbours swapped)."""
    if min(len(a), len(b)) < 5 or abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _squash(text: str) -> str:
    """Lower case without spaces, ``$`` and backslashes: formulas compare as written."""
    return re.sub(r"[\s$\\{}]", "", text.lower()).rstrip("?.")


def _words(text: str) -> set[str]:
    plain = re.sub(r"\\[A-Za-z]+", " ", _unlatex(text))  # "$\\alpha = 0.01$" is no word of the claim's
    return {_stem(w)[:6] for w in _CONTENT_RE.findall(plain.lower()) if w not in _STOP}


def _claim_polarity(claim: str, question: str) -> bool | None:
    """Yes/no from a claim that restates the question's proposition ("x-1 is not a factor of ..." for "Is
    x-1 a factor of ...?" -> False; "the vectors are linearly independent" for "Are the vectors linearly
    independent?" -> True): True when the claim and the question have the same polarity (both negated or
    neither), False otherwise.  None when the question is no yes/no question, the claim hedges or is
    conditional, or it shares too few words with the question to be about its proposition."""
    prop = _proposition(question)
    if prop is None:
        return None
    claim = _CLAIM_REASON_RE.sub("", claim.strip())
    claim = re.sub(r"^(?:that|so|thus|therefore|hence|in\s+conclusion)\b[,\s]*", "", claim, flags=re.IGNORECASE)
    if not claim or _CLAIM_HEDGE_RE.search(claim):
        return None
    prop = re.sub(r",?\s+or\s+not\b", "", prop, flags=re.IGNORECASE)  # "Is it exact or not?" asks "is it exact"
    claim = _CLAIM_ADVERBIAL_RE.sub("", claim)  # "Aliasing will occur when sampling at 700 Hz"
    if _antonym_prefixed(claim, prop):
        return None  # "for a nonlinear change ..." answering "for a linear transformation ...": another proposition
    qw = _words(prop)
    # a conjunction "X satisfies the formula and is a valid ISBN": the part that restates the question
    cw = max((_words(part) for part in re.split(r"\band\b", claim)), key=lambda w: (len(w & qw) / max(1, len(w)), len(w)))
    shared = cw & qw
    shared |= {w for w in cw - qw if any(_one_edit(w, v) for v in qw - cw)}  # "bewteen", "necesarily": typos
    if cw and shared == cw:
        pass  # every word of it is the question's ("T is an isomorphism")
    elif len(cw) <= 1:
        # a formula more than words ("(1 - x)^n >= 1/(1+nx) for all n"): the question's formula must be in it
        body = _AUX_CLAUSE_RE.sub("", prop, count=1)
        formula = max(re.split(r"[a-z]{3,}", _squash(body)), key=len)
        if len(formula) < 6 or formula not in _squash(claim):
            return None
    elif not shared or (len(shared) * 3 < 2 * len(qw) and (len(shared) < 2 or len(shared) * 2 < len(cw))):
        return None  # too little of the question is in the claim, and too little of the claim is the question's
    negated = len(_NEGATION_RE.findall(claim)) % 2 == 1
    asked_negated = len(_NEGATION_RE.findall(prop)) % 2 == 1
    return negated == asked_negated


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def extract_answer(
    text: str | None,
    kind: AnswerKind,
    choices: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    synonyms: Mapping[str, Iterable[str]] | None = None,
    letters: str = "abcde",
    question: str | None = None,
) -> ExtractedAnswer:
    """Extract the final answer of kind ``"number"``, ``"choice"``, ``"label"`` or ``"boolean"`` from model text.

    Steps: :func:`strip_continuation`, then :func:`extract_final_answer_span`; when there is no cue
    and the remaining text is a single short line (at most 64 characters) it is taken as a bare
    answer (``cue="bare"``).  The span is then parsed by :func:`extract_number`,
    :func:`extract_choice` (``choices`` required) or :func:`extract_label` (``labels`` required).
    ``question`` (optional, the item's question) settles two cases the text alone cannot: a final
    statement of several quantities is read as the one the question asks for ("Jake has 136 apples and
    3 peaches" + "How many peaches ...?" -> 3; see :func:`_asked_quantity`), and a yes/no question
    answered with a claim is read by the claim's polarity ("x-1 is not a factor of p" + "Is x-1 a factor
    of p?" -> False; see :func:`_claim_polarity`).  Without it those stay ``None``.
    Never raises on bad model text; ``reason`` says why ``value`` is ``None``.
    """
    if kind == "choice" and not choices:
        raise ValueError("kind='choice' needs choices")
    if kind == "label" and not labels:
        raise ValueError("kind='label' needs labels")
    if kind not in ANSWER_KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if not text or not text.strip():
        return ExtractedAnswer(None, None, "empty text")
    body = strip_continuation(text)
    span, cue = _find_span(body)
    if span is None:
        bare = body.strip()
        if bare and "\n" not in bare and len(bare) <= _BARE_MAX_CHARS:
            span, cue = _clean_span(bare), "bare"
        else:
            fb = _fallback(body, kind, choices, labels, synonyms, letters, question)
            if fb is None:
                return ExtractedAnswer(None, None, "no answer cue")
            return ExtractedAnswer(fb[0], fb[1], None, "fallback")
    if not span:
        return ExtractedAnswer(None, span, "empty answer span", cue)
    value: float | int | str | bool | None
    alts: tuple
    if kind == "number":
        value, reason, alts = _parse_number(span)
        if value is not None and cue == "answer is that" and not _clause_states(span, value):
            value, reason, alts = None, "ambiguous", ()  # "... does converge at x = 5": 5 is no result
        if value is None and reason == "ambiguous":
            counted = _existential_count(span)
            if counted is not None:  # "there are 5040 different 7-digit numbers that can be formed using 1, 2, ..."
                value, reason, alts = counted, None, ()
        if value is None and reason in ("ambiguous", "bad expression"):
            stated = _stated_result(span)  # "the integral of y^3 dx + x^3 dy over the circle of radius 2 is 0"
            if isinstance(stated, float):
                value, reason, alts = stated, None, ()
        if value is None and reason in ("ambiguous", "bad expression", "cue found but no number") and question:
            asked = _asked_quantity(span, question)
            if asked is None:
                # the answer section goes on: "Answer: 9 storks and 4 birds. So there are 5 more storks than birds."
                at = body.rfind(span)
                rest = body[at:].split("\n\n", 1)[0] if at >= 0 else ""
                asked = _asked_quantity(rest, question) if len(rest) > len(span) + 1 else None
            if asked is not None:
                value, reason = asked, None
    elif kind == "choice":
        value, reason, alts = _choice_from(span, choices, letters)  # type: ignore[arg-type]
    elif kind == "boolean":
        value, reason, alts = _boolean_from(span)
        if value is None and reason == "no yes/no matched" and question:
            claimed = _claim_polarity(span, question)
            if claimed is not None:
                value, reason = claimed, None
    else:
        value, reason, alts = _label_from(span, labels, synonyms)  # type: ignore[arg-type]
    return ExtractedAnswer(value, span, reason, cue, alts)


#: the end of a think-mode model's reasoning block: its answer follows it
THINK_CLOSE_TAGS: tuple[str, ...] = ("</think>", "<|end_of_thought|>")


def read_answer(
    text: str | None,
    kind: AnswerKind,
    choices: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    synonyms: Mapping[str, Iterable[str]] | None = None,
    letters: str = "abcde",
    question: str | None = None,
) -> ExtractedAnswer:
    """The answer a model's output gives: the text after its reasoning block, when it has one
    (``<think>...</think>``), read by :func:`extract_answer`.

    Why one function: evaluation (:mod:`synthkd.train.evaluate`), the tailored rounds' student mistakes
    (which are evaluation's predictions) and the teacher's corrections (:mod:`synthkd.loops.tailored`)
    all read answers with it, so a student trained on one teacher's answer format ("The answer is 12")
    and scored on output in another ("**Final answer:** 12", ``\\boxed{12}``) is scored the same.
    A reasoning block that never closes is left in place (its text is read as it is).
    """
    if text:
        for tag in THINK_CLOSE_TAGS:
            i = text.rfind(tag)
            if i >= 0:
                text = text[i + len(tag):]
                break
    return extract_answer(text, kind, choices=choices, labels=labels, synonyms=synonyms, letters=letters,
                          question=question)


# --------------------------------------------------------------------------------------------------
# parsing inside async code
# --------------------------------------------------------------------------------------------------

#: Teacher text longer than this (in characters, all texts of one item together) is parsed in a worker
#: thread by :func:`parse_off_loop`.  Below it parsing takes well under a millisecond, less than the
#: thread hand-off, so it stays on the event loop.
OFF_LOOP_CHARS = 20_000

_T = TypeVar("_T")


async def parse_off_loop(chars: int, fn: Callable[..., _T], *args: object, **kwargs: object) -> _T:
    """``fn(*args)`` (answer parsing of teacher text), in a worker thread when the text is long.

    Why: the methods parse each reply inside the async loop that also drives the in-flight requests.
    Extraction is linear in the text length, but a 1 MB reply still costs tens of milliseconds of CPU,
    and the whole loop (request pacing, timeouts, other replies) would stand still meanwhile.
    ``chars`` is the length of the text ``fn`` reads; short texts are parsed inline (cheap).
    """
    if chars < OFF_LOOP_CHARS:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
