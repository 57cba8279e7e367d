"""Tests for synthkd.answers: unit cases per extractor, the safe evaluator, and real recorded teacher outputs.

The recorded slices live in tests/fixtures/recorded/ (see the README.md in each folder for source and licence).
Thresholds on real data are the values measured on those slices minus a small margin, so a regression in
extraction makes them fail.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from synthkd.answers import (
    NLI_LABELS,
    NLI_SYNONYMS,
    REASONS,
    ExtractedAnswer,
    extract_answer,
    extract_choice,
    extract_final_answer_span,
    extract_label,
    extract_number,
    numbers_equal,
    safe_eval_arithmetic,
    strip_continuation,
)

FIXTURES = Path(__file__).parent / "fixtures" / "recorded"
CSQA_CHOICES = ["british columbia", "body of water", "wooded area", "pay debts", "zoo"]


# --------------------------------------------------------------------------------------------------
# strip_continuation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "So the answer is (a) go downtown.\n\nQ: What is the best way?\nA: So the answer is (b).",
            "So the answer is (a) go downtown.",
        ),
        ("Answer: neutral\n\nPremise: A man.\nHypothesis: A woman.\nAnswer: contradiction", "Answer: neutral"),
        ("The answer is 5.\nQuestion: next one? The answer is 7.", "The answer is 5."),
        ("x.\nInput: foo", "x."),
        ("So the answer is entailment.\n\nPre", "So the answer is entailment.\n\nPre"),  # truncated marker kept
        ("Q: What is 2+2?\nA: 4", "Q: What is 2+2?\nA: 4"),  # an echo on the first line is not a continuation
        ("  \nQuestion: echo\nThe answer is 3", "  \nQuestion: echo\nThe answer is 3"),
        (
            "The answer is 3. Q: inline markers are not line starts",
            "The answer is 3. Q: inline markers are not line starts",
        ),
        ("no continuation here\n", "no continuation here"),
        ("", ""),
    ],
)
def test_strip_continuation(text: str, expected: str) -> None:
    assert strip_continuation(text) == expected


# --------------------------------------------------------------------------------------------------
# extract_final_answer_span
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Only wooded areas have supplies. So the answer is (c) wooded area.", "(c) wooded area"),
        ("10 - (3 + 6) = 1 emails. The answer is (10 - (3 + 6)).", "(10 - (3 + 6))"),
        ("Therefore, the answer is: 42.", "42"),
        ("The final answer is $18.", "$18"),
        ("blah\nAnswer: neutral", "neutral"),
        ("**Final Answer:** **Paris**", "Paris"),
        ("Janet sells 9 eggs.\n#### 18", "18"),
        ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{{a}{b}}", "{a}{b}"),  # nested braces
        ("The answer is 5. Then, the answer is 7.", "7"),  # last cue wins
        ("The answer is 5. Also the answer is", "5"),  # a cue with nothing after it does not override
        ('The answer is "entailment".', "entailment"),
        ("So the answer is 18. 9 * 2 = 18", "18"),  # span ends at the sentence boundary
        ("So the answer is 2.5 hours.", "2.5 hours"),  # decimal point is not a sentence end
        ("So the answer is (d) u.s. capital.", "(d) u.s. capital"),
        ("Answer:\n  42\n", "42"),  # cue at the end of its line: the next line
        ("She makes $18 every day\nA: 18", "18"),  # short few-shot "A:" line
        (
            "Q: how many?\nA: There are 15 trees and 21 trees after planting, so they planted six",
            None,
        ),  # long "A:" line
        ("No cue in this text at all.", None),
        ("The answer is", ""),  # cue without content
        ("The answer is not 5. So the answer is 6.", "6"),
        ("The answer is not obvious.", None),  # a negated cue is no cue
    ],
)
def test_extract_final_answer_span(text: str, expected: str | None) -> None:
    assert extract_final_answer_span(text) == expected


# --------------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("18", 18.0),
        ("1,234", 1234.0),
        ("1,234,567.5", 1234567.5),
        ("$5.50", 5.5),
        ("\\$5", 5.0),
        ("$ 23 dollars", 23.0),
        ("€12", 12.0),
        ("5 apples", 5.0),
        ("50%", 50.0),
        ("-129025", -129025.0),
        ("\u22127", -7.0),  # unicode minus
        ("3/4", 0.75),
        ("1 1/2 cups", 1.5),
        ("\\frac{3}{4}", 0.75),
        ("5 + 3 = 8", 8.0),
        ("10 * 45 = 450 seeds", 450.0),
        ("x = 5", 5.0),
        ("(10 * 45)", 450.0),
        ("(10 - (3 + 6))", 1.0),
        ("(45 - (-1))", 46.0),
        ("(126 - 115) - (48 - 81)", 44.0),
        ("(95 * 118) + (11,210 / 84)", 95 * 118 + 11210 / 84),
        ("2 x 0.5", 1.0),
        ("2^3", 8.0),
        ("2.5 hours", 2.5),
        (".5", 0.5),
        ("42 apples in 6 boxes", 42.0),  # the span opens with its number
        ("twenty-one", 21.0),
        ("Seven", 7.0),
        ("$15/hour", 15.0),
        ("Jake has 26 peaches and 21 apples", None),  # ambiguous
        ("(some - 8)", None),  # unknowns
        ("(2 * x)", None),
        ("(7x = 14)", None),
        ("(9 + 6", None),  # truncated expression
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_number(text: str, expected: float | None) -> None:
    got = extract_number(text)
    if expected is None:
        assert got is None
    else:
        assert got is not None and numbers_equal(got, expected), got


def test_extract_number_reasons_and_hedges() -> None:
    a = extract_answer("The answer is ((28 - 13) and (28 - 15)).", "number")
    assert a.value == 15.0 and a.alternatives == (13.0,) and a.hedged
    assert extract_answer("The answer is (some - 8).", "number").reason == "bad expression"
    assert extract_answer("The answer is ((491 - 21", "number").reason == "truncated expression"
    assert extract_answer("The answer is Jake has 26 peaches and 21 apples.", "number").reason == "ambiguous"
    assert extract_answer("The answer is unknown.", "number").reason == "cue found but no number"
    assert (
        extract_answer("It rained a lot that day, more than ever before in the whole wide world.", "number").reason
        == "no answer cue"
    )
    assert extract_answer("   ", "number").reason == "empty text"
    assert extract_answer("The answer is", "number").reason == "empty answer span"


def test_numbers_equal() -> None:
    assert numbers_equal(0.1 + 0.2, 0.3)
    assert numbers_equal(1e9, 1e9 + 1)  # within rel_tol=1e-6
    assert not numbers_equal(1.0, 1.001)
    assert numbers_equal(1.0, 1.001, rel_tol=1e-2)
    assert numbers_equal(0.0, 1e-12)
    assert not numbers_equal(None, 1.0)
    assert not numbers_equal(float("nan"), float("nan"))
    assert numbers_equal(3, 3.0)


# --------------------------------------------------------------------------------------------------
# the safe evaluator
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("( 10.0 - ( 6.0 + 3.0 ) )", 1.0),
        ("( ( 13.0 + 15.0 ) / 28.0 )", 1.0),
        ("-3 + +4", 1.0),
        ("7 // 2", 3.0),
        ("7 % 4", 3.0),
        ("2 ** 10", 1024.0),
        ("2 ** -1", 0.5),
        ("3 \u00d7 4 \u00f7 2 \u2212 1", 5.0),
    ],
)
def test_safe_eval_accepts_arithmetic(expr: str, expected: float) -> None:
    assert safe_eval_arithmetic(expr) == pytest.approx(expected)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('echo hi')",
        "os.system",
        "x + 1",
        "abs(-3)",
        "(1).real",
        "[1, 2]",
        "'a' * 3",
        "1 if 1 else 2",
        "lambda: 1",
        "1 < 2",
        "True + 1",
        "1j * 2",
        "2 ** 1000",
        "9 ** 9 ** 9",
        "10 ** 65",
        "1e200 * 1e200",
        "1" + "0" * 400,  # an int literal too large for a float
        "1e999",
        "1 / 0",
        "5 % 0",
        "(-8) ** 0.5",
        "1 +",
        "",
        "(" * 500 + "1" + ")" * 500,
        "1" + " + 1" * 2000,
    ],
)
def test_safe_eval_rejects(expr: str) -> None:
    with pytest.raises(ValueError):
        safe_eval_arithmetic(expr)


def test_safe_eval_rejects_non_string() -> None:
    with pytest.raises(ValueError):
        safe_eval_arithmetic(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# multiple choice
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(c) wooded area", 2),
        ("(C)", 2),
        ("c", 2),
        ("C.", 2),
        ("C)", 2),
        ("c) wooded area", 2),
        ("[b]", 1),
        ("option E", 4),
        ("Choice (d)", 3),
        ("B. body of water", 1),
        ("wooded area", 2),
        ("Wooded-Area!", 2),  # case / punctuation slack
        ("the BODY   of water", 1),  # spacing slack, contained in text
        ("water", None),  # not an option by itself ("body of water" is)
        ("wooded areas", 2),  # plural folded
        ("(a) wooded area", 2),  # exact option text beats a mislabelled letter
        ("(e) zoos", 4),  # not exact text: the letter decides
        ("a zoo, not british columbia, so zoo", 4),  # last-mentioned option
        ("body of water", 1),  # longer option beats the one it contains
        ("something else", None),
        ("a", 0),  # a lone letter, even the article-like "a"
        ("f", None),  # out of range
    ],
)
def test_extract_choice(text: str, expected: int | None) -> None:
    assert extract_choice(text, CSQA_CHOICES) == expected


def test_extract_choice_hedge_and_duplicates() -> None:
    a = extract_answer(
        "So the answer is either (a) aquarium or (e) pond.",
        "choice",
        choices=["aquarium", "creek", "pet store", "playground", "pond"],
    )
    assert a.value == 4 and a.alternatives == (0,)
    a = extract_answer(
        "The answer is (a) aquarium, not (e) pond.",
        "choice",
        choices=["aquarium", "creek", "pet store", "playground", "pond"],
    )
    assert a.value == 0 and a.alternatives == ()
    assert extract_choice("pond rather than aquarium", ["aquarium", "creek", "pet store", "playground", "pond"]) == 4
    # identical option texts: the letter picks which copy
    dup = ["bus depot", "beach", "train station", "bridge", "bridge"]
    assert extract_choice("(e) bridge", dup) == 4
    assert extract_choice("bridge", dup) == 3
    # custom letters
    assert extract_choice("(2)", ["x", "y", "z"], letters="123") == 1
    assert extract_choice("Option B", ["x", "y"], letters="AB") == 1


# --------------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("entailment", "entailment"),
        ("Contradiction", "contradiction"),
        ("NEUTRAL", "neutral"),
        ("yes", "entailment"),
        ("No", "contradiction"),
        ("it is not possible to tell", "neutral"),
        ("Maybe", "neutral"),
        ("the hypothesis is entailed by the premise", "entailment"),
        ("not entailment", None),  # negated mention names nothing
        ("neutral, since it is neither entailment nor contradiction", "neutral"),
        ("entailment or contradiction", "entailment"),  # the span starts with a label
        ("I think entailment or maybe contradiction", None),  # ambiguous
        ("banana", None),
    ],
)
def test_extract_label_nli(text: str, expected: str | None) -> None:
    assert extract_label(text, NLI_LABELS, NLI_SYNONYMS) == expected


def test_extract_label_slack_and_validation() -> None:
    labels = ["not_entailment", "entailment"]
    assert extract_label("Not Entailment", labels) == "not_entailment"
    assert extract_label("not-entailment", labels) == "not_entailment"
    assert extract_label("NotEntailment", labels) == "not_entailment"
    assert extract_label("entailment", labels) == "entailment"
    assert extract_label("card_arrival", ["card_arrival", "card_linking"]) == "card_arrival"
    assert extract_label("Card Arrival", ["card_arrival", "card_linking"]) == "card_arrival"
    with pytest.raises(ValueError):
        extract_label("x", ["a"], {"b": ["c"]})
    a = extract_answer(
        "So the answer is entailment or contradiction.", "label", labels=NLI_LABELS, synonyms=NLI_SYNONYMS
    )
    assert a.value == "entailment" and a.alternatives == ("contradiction",)


# --------------------------------------------------------------------------------------------------
# extract_answer
# --------------------------------------------------------------------------------------------------


def test_extract_answer_pipeline() -> None:
    a = extract_answer("5 + 3 = 8 apples. The answer is 8.\n\nQ: next?\nA: The answer is 3.", "number")
    assert a == ExtractedAnswer(8.0, "8", None, "answer is", ())
    a = extract_answer(
        "Answer: neutral\n\nPremise: p\nHypothesis: h\nAnswer: contradiction",
        "label",
        labels=NLI_LABELS,
        synonyms=NLI_SYNONYMS,
    )
    assert a.value == "neutral" and a.cue == "answer:"
    a = extract_answer("25", "number")
    assert a.value == 25.0 and a.cue == "bare"
    a = extract_answer("(b)", "choice", choices=CSQA_CHOICES)
    assert a.value == 1 and a.cue == "bare"
    a = extract_answer("The answer is \\boxed{42}.", "number")
    assert a.value == 42.0 and a.cue == "boxed"
    a = extract_answer("Step 1...\n#### 1,000", "number")
    assert a.value == 1000.0 and a.cue == "####"
    with pytest.raises(ValueError):
        extract_answer("x", "choice")
    with pytest.raises(ValueError):
        extract_answer("x", "label")
    with pytest.raises(ValueError):
        extract_answer("x", "date")  # type: ignore[arg-type]


def test_extract_answer_is_fast() -> None:
    text = (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18.\nSo the answer is $18.\n\nQ: "
        + "filler " * 50
    )
    t0 = time.perf_counter()
    for _ in range(2000):
        extract_answer(text, "number")
    per_call = (time.perf_counter() - t0) / 2000
    assert per_call < 1e-3, per_call  # measured ~30 µs; generous bound for slow CI


# audit mutant 10: an equation's value is its right-hand side, even when the teacher's arithmetic is wrong
@pytest.mark.parametrize(("text", "expected"), [("3 + 4 = 8", 8.0), ("2 + 2 = 4 = 5", 5.0), ("x: 10 - 1 = 7 apples", 7.0)])
def test_equation_value_is_the_last_right_hand_side(text: str, expected: float) -> None:
    assert extract_number(text) == expected
    assert extract_answer(f"So the answer is {text}.", "number").value == expected


# F12 regression: the right value or None with a reason, never a wrong number
@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("2**64", float(2**64)),
        ("3 ** 2", 9.0),
        ("(2**3)**2", 64.0),
        ("1e5", 1e5),
        ("1.5e3", 1500.0),
        ("2.5E-3 kg", 0.0025),
        ("1e+5", 1e5),
        ("2^10", 1024.0),
        ("10 % 3", 1.0),
        ("50%", 50.0),
        ("**42**", 42.0),
        ("**8** apples", 8.0),
        ("10**10**10", None),
        ("(10**64)**64", None),
        ("10^100", None),
        ("2^1000000", None),
        ("1/0", None),
        ("5 % 0", None),
        ("1e400", None),
    ],
)
def test_number_extraction_never_returns_a_wrong_number(expr: str, expected: float | None) -> None:
    ex = extract_answer(f"So the answer is {expr}.", "number")
    assert ex.value == expected, (expr, ex)
    if expected is None:
        assert ex.reason == "bad expression" and ex.span == expr
    assert extract_answer(f"The answer is **{expr}**.", "number").value == expected


# F11 regression: extraction is linear in the text length, whatever the text (it once took 19.5 s for
# 160 KB of "answer is " and hung for minutes on 1 MB).  The bound is ~50x the measured time.
_MB = 1_000_000
_DEGENERATE = {
    "cues then answer": "The answer is " + "answer is " * (_MB // 10) + "5.",
    "cues only": "The answer is " + "answer is " * (_MB // 10),
    "hashes": "#### " * (_MB // 5),
    "empty spans on one line": "Answer: . " * (_MB // 10),
    "empty spans on lines": "Answer: .\n" * (_MB // 10),
    "unclosed boxes": "\\boxed{" * (_MB // 7),
    "A: lines": "\nA: " * (_MB // 4),
    "letters": "So the answer is " + "(a) (b) " * (_MB // 8),
    "labels": "So the answer is " + "not entailment or neutral " * (_MB // 26),
    "bold": "The answer is " + "**a " * (_MB // 4),
    "one long expression": "The answer is " + "1 + " * (_MB // 4) + "1",
    "long prose": "Some long rationale words. " * (_MB // 27) + "So the answer is 7.",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(_DEGENERATE))
def test_one_megabyte_answer_is_parsed_in_under_a_second_for_every_kind(name: str) -> None:
    text = _DEGENERATE[name]
    assert len(text) >= _MB - 30
    for kind, kw in (("number", {}), ("choice", {"choices": CSQA_CHOICES}), ("label", {"labels": ["yes", "no"]}),
                     ("label", {"labels": NLI_LABELS, "synonyms": NLI_SYNONYMS})):
        t0 = time.perf_counter()
        ex = extract_answer(text, kind, **kw)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t0
        assert elapsed < 1.0, (name, kind, elapsed)
        assert ex.value is not None or ex.reason in REASONS
    # the answer at the end is still found
    assert extract_answer(_DEGENERATE["cues then answer"], "number").value == 5.0
    assert extract_answer(_DEGENERATE["long prose"], "number").value == 7.0


# --------------------------------------------------------------------------------------------------
# real recorded outputs
# --------------------------------------------------------------------------------------------------


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _palm(name: str) -> tuple[list[str], list[dict]]:
    comp = json.loads((FIXTURES / name / "completions.json").read_text(encoding="utf-8"))
    gold = _jsonl(FIXTURES / name / "gold.jsonl")
    assert len(comp) == len(gold) == 100
    return comp, gold


def _rates(answers: list[ExtractedAnswer], agree: list[bool]) -> tuple[float, float]:
    well = [a for a in answers if a.span is not None and a.cue != "bare"]
    parsed = sum(a.ok for a in well) / len(well)
    return parsed, sum(agree) / len(agree)


def test_recorded_cqa() -> None:
    comp, gold = _palm("cqa_test_head100")
    answers = [extract_answer(t, "choice", choices=g["choices"]) for t, g in zip(comp, gold)]
    agree = [a.ok and g["choices"][a.value] == g["answer"] for a, g in zip(answers, gold)]
    parsed, acc = _rates(answers, agree)
    assert parsed >= 0.99
    assert acc >= 0.82  # measured 0.85
    # independent check: the option letter right after "So the answer is" in the text before the first
    # "\n\nQ:" (the official distilling-step-by-step parse) is what we return, unless the text after
    # the letter is verbatim another option
    checked = 0
    for t, g, a in zip(comp, gold, answers):
        m = re.search(r"So the answer is \(([a-e])\) ([^\n]*?)\.?$", t.split("\n\nQ:")[0])
        if m and "(" not in m.group(2):
            rest = m.group(2).strip().lower()
            expected = g["choices"].index(rest) if rest in g["choices"] else "abcde".index(m.group(1))
            assert a.value == expected, (t, a)
            checked += 1
    assert checked >= 95


def test_recorded_svamp() -> None:
    comp, gold = _palm("svamp_test_head100")
    answers = [extract_answer(t, "number") for t in comp]
    agree = [numbers_equal(a.value, safe_eval_arithmetic(g["label"])) for a, g in zip(answers, gold)]
    parsed, acc = _rates(answers, agree)
    assert parsed >= 0.99
    assert acc >= 0.73  # measured 0.76
    # the continuation's own "The answer is" must never be used: each value is the first answer cue's
    for t, a in zip(comp, answers):
        first = t.split("\n\nQ:")[0]
        if a.ok:
            assert a.span is not None and a.span in first


@pytest.mark.parametrize(
    "name, threshold", [("esnli_test_head100", 0.67), ("anli1_test_head100", 0.66)]
)  # measured 0.70 / 0.69
def test_recorded_nli(name: str, threshold: float) -> None:
    comp, gold = _palm(name)
    answers = [extract_answer(t, "label", labels=NLI_LABELS, synonyms=NLI_SYNONYMS) for t in comp]
    agree = [a.value == NLI_LABELS[int(g["label"])] for a, g in zip(answers, gold)]
    parsed, acc = _rates(answers, agree)
    assert parsed >= 0.99
    assert acc >= threshold
    # independent check: the word after the last cue before the first "\nPremise:"
    for t, a in zip(comp, answers):
        words = re.findall(r"(?:answer is|Answer:)\s*(\w+)", t.split("\nPremise:")[0])
        assert a.value == words[-1], (t, a)


def test_recorded_gsm8k() -> None:
    rows = _jsonl(FIXTURES / "gsm8k_solutions_head50" / "example_model_solutions.jsonl")
    assert len(rows) == 50
    answers, agree, judge = [], [], []
    for r in rows:
        gold = extract_answer(r["ground_truth"], "number")
        assert gold.ok, r["ground_truth"]
        for model in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            a = extract_answer(r[model]["solution"], "number")
            ok = numbers_equal(a.value, gold.value)
            answers.append(a)
            agree.append(ok)
            judge.append(ok == r[model]["is_correct"])
    parsed, acc = _rates(answers, agree)
    assert parsed >= 0.99
    assert 0.30 <= acc <= 0.36  # measured 0.33 (= the recorded accuracy of these 200 solutions)
    assert sum(judge) / len(judge) >= 0.99  # measured 1.00: our correctness judgement = OpenAI's is_correct


def _hard_cases() -> list[dict]:
    return _jsonl(FIXTURES / "hard_cases" / "cases.jsonl")


@pytest.mark.parametrize(
    "case", _hard_cases(), ids=lambda c: f"{c['source'].split('/')[-3 if 'llm' in c['source'] else -1]}-{c['index']}"
)
def test_recorded_hard_cases(case: dict) -> None:
    kw: dict = {}
    if case["kind"] == "choice":
        kw["choices"] = case["choices"]
    if case["kind"] == "label":
        kw["labels"] = case["labels"]
        kw["synonyms"] = NLI_SYNONYMS
    a = extract_answer(case["text"], case["kind"], **kw)
    exp = case["expected_value"]
    if isinstance(exp, float):
        assert numbers_equal(a.value, exp), (a, case["note"])
    else:
        assert a.value == exp, (a, case["note"])
    assert a.reason == case["expected_reason"], (a, case["note"])
    assert list(a.alternatives) == case["expected_alternatives"], (a, case["note"])
