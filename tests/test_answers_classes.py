"""Answer extraction by phrasing class (issue 14): made-up examples of each class, and near-misses that
must stay ``None`` with their reason.

The classes were found on the published outputs of other teachers (see benchmarks/answer_extraction.py),
but every string here is invented, so that the tests pin a class of phrasing, not one model's strings.
"""

from __future__ import annotations

import math
import time

import pytest

from synthkd.answers import ANSWER_KINDS, BOOLEAN_KIND, extract_answer, extract_boolean

OPTS5 = ["ten apples", "twelve pears", "nine plums", "a basket", "nothing"]
VERDICTS = ["A>B", "A=B", "B>A"]
VERDICT_SYNONYMS = {"A>B": ["A>>B"], "B>A": ["B>>A"]}


def _num(text: str):
    return extract_answer(text, "number")


# --------------------------------------------------------------------------------------------------
# qualified and parenthetical cues
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("She pays 3 * 4 = 12 dollars. So the final answer (in dollars) is 12.", 12.0),
        ("The answer, in centimetres, is 7.5.", 7.5),
        ("Hence the answer to this question is 31.", 31.0),
        ("Checking the sum once more, the correct answer would be 8.", 8.0),
        ("Thus the answer is therefore 44 cookies.", 44.0),
        ("**Final answer:** 42", 42.0),
        ("**Final Answer**: $42$", 42.0),
        ("### Final Answer\n\n42", 42.0),
        ("Final answer (rounded): 0.25", 0.25),
    ],
)
def test_qualified_cues_number(text: str, value: float) -> None:
    a = _num(text)
    assert a.value == value and a.cue in ("answer is", "answer:"), a


@pytest.mark.parametrize(
    "text, index",
    [
        ("Of the five options, the answer is B.", 1),
        ("The correct option is (C) nine plums.", 2),
        ("After checking each one, the best choice is D.", 3),
        ("The most likely answer would be (A) ten apples.", 0),
        ("The answer choice is (E).", 4),
    ],
)
def test_qualified_cues_choice(text: str, index: int) -> None:
    assert extract_answer(text, "choice", choices=OPTS5).value == index


@pytest.mark.parametrize(
    "text",
    [
        "The answer is not 12, since we counted twice.",  # negated
        "We have to check whether the answer is that large.",  # "answer is that ..." is no answer
        "We compare.\n\nOption (B) is wrong because pears are not apples.",  # named but not chosen, no cue
    ],
)
def test_qualified_cue_near_misses_stay_unanswered(text: str) -> None:
    assert extract_answer(text, "choice", choices=OPTS5).value is None


# --------------------------------------------------------------------------------------------------
# LaTeX and JSON
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        (r"So $x = \boxed{\frac{3}{4}}$.", 0.75),
        (r"Thus the answer is \(\boxed{12}\).", 12.0),
        ("Therefore:\n\\[\n\\boxed{1,250}\n\\]", 1250.0),
        ('```json\n{"reasoning": "3 + 4 = 7", "answer": "7"}\n```', 7.0),
        ('{"reasoning": "raw \\frac{1}{2} newline\n", "answer": 18}', 18.0),
        ('{"reasoning": "...", "answer": "\\\\frac{1}{4}"}', 0.25),
    ],
)
def test_latex_and_json_numbers(text: str, value: float) -> None:
    assert _num(text).value == pytest.approx(value)


def test_json_null_answer_is_an_empty_span() -> None:
    a = _num('{"reasoning": "I could not solve it", "answer": null}')
    assert a.value is None and a.reason == "empty answer span" and a.cue == "json"


@pytest.mark.parametrize(
    "text, index",
    [
        (r"The answer is \boxed{(C) \text{nine plums}}.", 2),
        (r"\[\n\boxed{D}\n\]", 3),
        (r"So the answer is $\text{(B)}$.", 1),
    ],
)
def test_latex_choice(text: str, index: int) -> None:
    assert extract_answer(text, "choice", choices=OPTS5).value == index


# --------------------------------------------------------------------------------------------------
# boolean kind
# --------------------------------------------------------------------------------------------------


def test_boolean_kind_is_listed() -> None:
    assert BOOLEAN_KIND == "boolean" and BOOLEAN_KIND in ANSWER_KINDS


@pytest.mark.parametrize(
    "text, value",
    [
        ("Ana was born after 2001, so the answer is yes.", True),
        ("So the answer is No.", False),
        ("Therefore, the answer is True.", True),
        ("Answer: false", False),
        (r"The answer is $\boxed{\text{yes}}$.", True),
        ("The answer is: the statement is not true.", False),
        ("Yes", True),
        ("Step 1: a bird can fly.\n\nYes, a sparrow could cross the river.", True),  # fallback: a yes/no reply
        ("Checking each case again.\n\nTherefore, the statement is false.", False),  # fallback: "statement is"
    ],
)
def test_boolean_answers(text: str, value: bool) -> None:
    a = extract_answer(text, "boolean")
    assert a.value is value, a


@pytest.mark.parametrize(
    "text, reason",
    [
        ("So the answer is yes or no, depending on the year.", "ambiguous"),
        ("The answer is: the series converges.", "no yes/no matched"),  # a claim, not a yes/no: needs the question
        ("We look at the series.\n\nTherefore, the series converges.", "no answer cue"),
        ("Is the sparrow faster?\n\nMaybe it is.", "no answer cue"),
    ],
)
def test_boolean_near_misses(text: str, reason: str) -> None:
    a = extract_answer(text, "boolean")
    assert a.value is None and a.reason == reason, a


def test_extract_boolean_helper() -> None:
    assert extract_boolean("not false") is True
    assert extract_boolean("incorrect") is False
    assert extract_boolean("perhaps") is None


# --------------------------------------------------------------------------------------------------
# labels with symbols and synonyms (judge verdicts)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, label",
    [
        ("Assistant B is much better.\n\nMy final verdict is: [[B>>A]]", "B>A"),
        ("Both are equally good. My final verdict is tie: [[A=B]]", "A=B"),
        ("Final verdict: [[A>B]]", "A>B"),
    ],
)
def test_verdict_labels(text: str, label: str) -> None:
    a = extract_answer(text, "label", labels=VERDICTS, synonyms=VERDICT_SYNONYMS)
    assert a.value == label, a


def test_symbol_labels_are_not_confused() -> None:
    # "A>B" and "B>A" differ only in order: both must stay distinct labels
    assert extract_answer("[[B>A]]", "label", labels=VERDICTS).value == "B>A"
    assert extract_answer("[[A>B]]", "label", labels=VERDICTS).value == "A>B"


# --------------------------------------------------------------------------------------------------
# cue-less fallback: the final sentence or last equation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("Ana has 12 marbles and gives 3 away.\n\nSo Ana ends up with 9 marbles.", 9.0),
        ("Tom had 40 stamps.\nHe used 31.\n40 - 31 = 9 stamps left.", 9.0),
        ("Calculation:\nTotal cost = 3 + 4 = $7", 7.0),
        ("First we add.\n\nTherefore, the area of the 3-sided garden is 24.5 square metres.", 24.5),
        ("Work:\n\nm + n = 25 + 169 = **194**", 194.0),
        ("Work:\n\nTherefore, the value of $c_0$ is 0.", 0.0),  # a name with a digit is not a number
        ("Work:\n\nTherefore, the acceleration of the cart is 49.3 m/s^2.", 49.3),  # a unit's power neither
        ("We discount each payment.\n\nThe price of the 2-year bond is 98.5.", 98.5),
    ],
)
def test_fallback_number(text: str, value: float) -> None:
    a = _num(text)
    assert a.value == value and a.cue == "fallback", a


@pytest.mark.parametrize(
    "text",
    [
        "We add them up.\n\nSo Ana has 9 or 10 marbles.",  # a hedge between two answers
        "We add them up.\n\nSo Ana has 5 red and 4 blue marbles.",  # two answers
        "We add them up.\n\nHow many marbles does Ana have now?",  # a question
        "We add them up.\n\nThe stress is 18 MPa, the strain is 9 and the elongation is 0.2 mm.",  # several results
        "We add them up.\n\nLet me know if you want me to finish the 3 remaining steps.",  # a request / offer
        "We add them up.\n\nThe series converges at x = 5.",  # a condition, not a result
        "We add them up.\n\nThe total is 12 +",  # cut off
        "We add them up.\n\nThen n1 =",  # cut off after "="
        "We integrate.\n\n$-2 \\int_0^1 (1 - u)^3 \\, du = -2 \\left[ \\frac{1",  # cut off inside LaTeX
        "<think>\nLet me count. So far 7 apples.",  # a reasoning trace cut off before its end
        "We add them up.\n\nWe cannot tell without the value of C_2.",  # a name with a digit
        "We add them up.\n\nWait, no, n < 3.",  # second thoughts and an inequality
        "We add them up.\n\nSo Ed lost more than 19 marbles.",  # a bound, not a value
        "We add them up.\n" + "So Ana has 9 marbles. " * 5,  # the last sentence said over and over: degenerate
        "Q: Ana has 12 marbles.\nA: Ana has 12 marbles and gives some of them away to her two friends",  # echo
    ],
)
def test_fallback_near_misses_stay_unanswered(text: str) -> None:
    a = _num(text)
    assert a.value is None, a


@pytest.mark.parametrize(
    "text, index",
    [
        ("Pears are not apples.\n\nThe closest option to our count is (C) nine plums.", 2),
        ("Counting again gives 12.\n\nThe false statement is (B).", 1),
        ("Let me go through them.\n\nThe best description is:\nD. a basket\n\nIt fits all the clues.", 3),
    ],
)
def test_fallback_choice(text: str, index: int) -> None:
    a = extract_answer(text, "choice", choices=OPTS5)
    assert a.value == index and a.cue == "fallback", a


@pytest.mark.parametrize(
    "text",
    [
        "Looking at them.\n\n(A) is incorrect and (B) is not right either.",  # negations
        "Looking at them.\n\nIt is either (A) or (C).",  # a hedge
        "Looking at them.\n\nA. ten apples\nB. twelve pears\nC. nine plums",  # a list of options, no choice
        "Looking at them.\n\nNone of the options (A)-(E) matches our count of 11.",
        "The closest is:\nD. a basket\n\nSince none of the options fit exactly, we cannot choose one.",  # taken back
    ],
)
def test_fallback_choice_near_misses(text: str) -> None:
    assert extract_answer(text, "choice", choices=OPTS5).value is None


def test_fallback_label_needs_one_label() -> None:
    labels = ["heads up", "tails up"]
    a = extract_answer("Jo flips it.\n\nTherefore, the coin is tails up.", "label", labels=labels)
    assert (a.value, a.cue) == ("tails up", "fallback")
    assert extract_answer("Jo flips it.\n\nIt was heads up, now tails up.", "label", labels=labels).value is None


def test_cue_beats_fallback() -> None:
    a = _num("The answer is 7.\n\nSo Ana ends up with 9 marbles.")
    assert (a.value, a.cue) == (7.0, "answer is")


# --------------------------------------------------------------------------------------------------
# speed: new cues and the fallback stay linear
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit",
    ["the answer (", '"answer": "', "[[", "### Final Answer\n", "So Ana has 9 marbles. ", "(A) ", "= 1 = "],
)
def test_degenerate_inputs_are_fast(unit: str) -> None:
    text = unit * (1_000_000 // len(unit))
    t0 = time.perf_counter()
    for kind, kw in (("number", {}), ("choice", {"choices": OPTS5}), ("boolean", {})):
        extract_answer(text, kind, **kw)  # type: ignore[arg-type]
    assert time.perf_counter() - t0 < 3.0


# --------------------------------------------------------------------------------------------------
# a free-form answer sentence: the number of its main clause
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "span, value",
    [
        ("Answer:\nKelly needs to buy 118 games so that she will have 140 games left.", 118.0),
        ("Answer:\nIt will cost 2673 dollars to buy 33 packs.", 2673.0),
        ("Answer:\nMelissa scored 1492 points in 79 games.", 1492.0),
        ("Answer:\nThe present value of the 3 payments at a 7% rate is $2101.66.", 2101.66),
    ],
)
def test_main_clause_number(span: str, value: float) -> None:
    assert _num(span).value == value


@pytest.mark.parametrize(
    "span",
    [
        "Answer:\nEach of the 10 guests had 18 cookies.",  # a number in the subject
        "Answer:\nThere are 5 birds and 4 storks on the fence.",  # two results
        "Answer:\nBaker made 255 cakes, which is 184 more than those he sold.",  # two results
        "Answer:\nRyan spends 4 hours on English and 6 hours on Chinese.",
    ],
)
def test_main_clause_near_misses(span: str) -> None:
    a = _num(span)
    assert a.value is None and a.reason == "ambiguous", a


# --------------------------------------------------------------------------- one reading for evaluation and tailored rounds


STUDENT_FORMATS = [
    "6 + 6 = 12. The answer is 12.",
    "6 + 6 = 12.\n\n**Final answer:** 12",
    "We add the two groups: $6 + 6 = \\boxed{12}$.",
    "6 + 6 = 12\n#### 12",
    "<think>six and six, that is twelve</think>\nThe final answer (in apples) is 12.",
    '{"reasoning": "6 + 6 = 12", "answer": "12"}',
]


@pytest.mark.parametrize("text", STUDENT_FORMATS)
def test_evaluation_and_tailored_rounds_read_any_format_the_same(text):
    """Point 4 of issue 14: a student trained on one teacher's format and scored on another's is scored
    the same: evaluation's reading (which also finds the tailored rounds' mistakes) and the tailored
    rounds' reading of the teacher's correction are both synthkd.answers.read_answer."""
    from synthkd.loops.tailored import correction_row
    from synthkd.teachers.base import TeacherRequest, TeacherResult
    from synthkd.templates import load_template
    from synthkd.train.evaluate import predicted_value, score

    v, why = predicted_value(text, "number")
    assert v == 12.0 and why is None
    base, _ = predicted_value(STUDENT_FORMATS[0], "number")
    m = score([12.0, 12.0], [base, v], "number")
    assert m["correct"] == 2 and m["accuracy"] == 1.0
    wrong, _ = predicted_value(text.replace("12", "13"), "number")
    assert score([12.0], [wrong], "number")["correct"] == 0  # and a wrong one in that format is wrong

    tpl = load_template("tailored/correct")
    mistake = {"id": "m1", "input": "6 + 6?", "question": "6 + 6?", "gold_answer": 12, "student_output": "11"}
    row = correction_row(mistake, TeacherResult(TeacherRequest.user("m1#r1", "p"), text), 1, tpl)
    assert "reject_reason" not in row and row["answer"] == "12"


# --------------------------------------------------------------------------- classes added from the wider benchmark


def test_an_answer_cue_owned_by_someone_else_does_not_introduce_the_final_answer():
    # a judge compares two responses: "Response 2's answer is ..." describes an answer, it is not the verdict
    labels = ["A>B", "A=B", "B>A"]
    text = ("Both are fine; the second is tighter.\n\nVerdict: [[B>A]]\n\n"
            "Response B's answer is clearer and better organised than the other one.")
    a = extract_answer(text, "label", labels=labels)
    assert (a.value, a.cue) == ("B>A", "[[verdict]]")
    text = "The pupil's answer is 40. Checking it: 8 * 6 = 48, so the correct answer is 48."
    assert extract_answer(text, "number").value == 48.0
    assert extract_answer("So the problem's answer is 48.", "number").value == 48.0  # the item's own answer


@pytest.mark.parametrize("span,value", [
    ("\\frac{\\pi}{6}", math.pi / 6),
    ("3\\sqrt{2}", 3 * math.sqrt(2)),
    ("e^{-3}", math.exp(-3)),
    ("\\frac{1}{2}\\ln(3)", 0.5 * math.log(3)),
    ("cos(\\pi/3) + 1", 1.5),
    ("√7", math.sqrt(7)),
    ("5π/4 radians", 5 * math.pi / 4),
    ("log_2(8) bits", 3.0),
    ("2\\sqrt[3]{8}", 4.0),
])
def test_closed_form_answers_are_evaluated(span, value):
    a = extract_answer(f"Putting it together, the final answer is {span}.", "number")
    assert a.value == pytest.approx(value) and a.reason is None


@pytest.mark.parametrize("span", [
    "\\frac{k}{2}\\pi",  # a free variable k
    "4\\pi r^2",
    "\\sin(\\theta) + 1",
    "e^{3s}",
    "7/2(1 + \\pi)",  # is the product under the fraction bar? no reading is safe
    "\\log(5)",  # log without a base: ln in analysis, log2 in information theory
    "3 pi d",
])
def test_closed_forms_with_unknowns_or_unclear_precedence_give_no_answer(span):
    a = extract_answer(f"Therefore, the answer is {span}.", "number")
    assert a.value is None and a.reason == "bad expression"


@pytest.mark.parametrize("span,value", [("about 4.9 m/s^2", 4.9), ("31 N/m", 31.0), ("2.5 kg·m^2", 2.5),
                                        ("7 m/s²", 7.0)])
def test_a_number_with_a_compound_unit(span, value):
    assert extract_answer(f"The acceleration is found; the answer is {span}.", "number").value == value


CHOICES = ["a kettle", "a toaster", "a lamp", "a blender", "a radio"]


def test_choice_fallback_reads_an_option_after_the_verb_despite_a_negation_in_the_subject():
    text = ("Each device was checked in turn.\n\n"
            "The one device that does not need a plug is (C) a lamp, as it may run on batteries.")
    a = extract_answer(text, "choice", choices=CHOICES)
    assert (a.value, a.cue) == (2, "fallback")
    # negated or hedged after the verb: no answer
    for said in ("The device is not (C) a lamp.", "The device is (C) a lamp or (D) a blender.",
                 "The device might be (C) a lamp."):
        assert extract_answer("Each device was checked.\n\n" + said, "choice", choices=CHOICES).value is None


def test_choice_fallback_reads_a_restated_option_with_its_explanation_or_a_caveat_after_it():
    text = "Weighing all five, the most suitable one is:\n\nD. a blender - it is the only one that mixes."
    assert extract_answer(text, "choice", choices=CHOICES).value == 3
    text = ("Weighing all five, the most suitable one is:\n\nB. a toaster\n\n"
            "However, it is important to note that the result might depend on the kitchen.")
    assert extract_answer(text, "choice", choices=CHOICES).value == 1
    text = "Weighing all five, the most suitable one is:\n\nB. a toaster\n\nHowever, (E) might be better."
    assert extract_answer(text, "choice", choices=CHOICES).value is None  # taken back: no answer


def test_fallback_abstains_on_a_result_over_a_free_variable_and_on_a_list_of_givens():
    # found by the spot-check of fallbacks: "is v/440 Hz" read as 440, a given read as the result
    a = extract_answer("We solve for the length.\n\nTherefore, the rope's length is k/125 m.", "number")
    assert a.value is None
    a = extract_answer("Known:\nApples picked on Monday = 31\nApples eaten on Tuesday = 12", "number")
    assert a.value is None
    a = extract_answer("Known:\nApples picked = 31\nApples eaten = 12\n\nSo 31 - 12 = 19 apples are left.", "number")
    assert (a.value, a.cue) == (19.0, "fallback")


# --------------------------------------------------------------------------- the question settles what the text alone cannot


def test_several_quantities_are_read_as_the_one_the_question_asks_for():
    text = "Stickers: 9 + 5 = 14. Stamps: 10 - 4 = 6.\n\nAnswer: Lena has 14 stickers and 6 stamps left."
    assert extract_answer(text, "number").value is None  # which one? the text alone does not say
    a = extract_answer(text, "number", question="Lena had 9 stickers and 10 stamps. ... How many stamps does she have left?")
    assert a.value == 6.0 and a.cue == "answer:"
    # the same as a cue-less final sentence
    fb = "Stickers: 9 + 5 = 14. Stamps: 10 - 4 = 6.\n\nSo Lena has 14 stickers and 6 stamps left."
    a = extract_answer(fb, "number", question="How many stickers does Lena have left?")
    assert (a.value, a.cue) == (14.0, "fallback")
    # two things asked, or the noun with two numbers, or a difference that is not stated: no answer
    assert extract_answer(text, "number", question="How many stickers and stamps are left?").value is None
    assert extract_answer("Answer: Ana has 4 red pens and 7 blue pens.", "number",
                          question="How many pens are there?").value is None
    assert extract_answer(text, "number", question="How many more stickers than stamps are left?").value is None
    said = "Answer: Lena has 14 stickers, which is 8 more stickers than stamps."
    assert extract_answer(said, "number", question="How many more stickers than stamps are left?").value == 8.0


@pytest.mark.parametrize("claim,question,value", [
    ("the number 15 is not a perfect square", "Is 15 a perfect square?", False),
    ("the map f is injective on the reals", "Let f(x) = 3x + 1. Is f injective on the reals?", True),
    ("The set of odd integers is NOT closed under addition", "Is the set of odd integers closed under addition?", False),
    ("the series converges", "Consider the series sum 1/n^2. Does the series converge or not?", True),
    ("the series does not converge", "Consider the series sum 1/n^2. Does the series converge or not?", False),
    ("the kernel of T is trivial", "The kernel of T is trivial. True or False?", True),
])
def test_a_yes_no_question_answered_with_a_claim_is_read_by_its_polarity(claim, question, value):
    text = f"We check the definition step by step.\n\nTherefore, the answer is: {claim}."
    assert extract_answer(text, BOOLEAN_KIND).value is None  # without the question: no answer
    a = extract_answer(text, BOOLEAN_KIND, question=question)
    assert a.value is value and a.reason is None
    # the same claim as the concluding sentence, no cue
    a = extract_answer(f"We check the definition step by step.\n\nTherefore, {claim}.", BOOLEAN_KIND, question=question)
    assert (a.value, a.cue) == (value, "fallback")


@pytest.mark.parametrize("claim,question", [
    ("the number 15 might be a perfect square", "Is 15 a perfect square?"),  # a hedge
    ("the number 15 is a perfect square if we round", "Is 15 a perfect square?"),  # a condition
    ("the matrix has rank 2", "Is 15 a perfect square?"),  # about something else
    ("the number 15 is not a perfect square", "What is the square root of 15?"),  # not a yes/no question
])
def test_a_claim_that_hedges_or_does_not_restate_the_question_gives_no_answer(claim, question):
    text = f"We check it.\n\nTherefore, the answer is: {claim}."
    assert extract_answer(text, BOOLEAN_KIND, question=question).value is None


def test_the_answer_is_that_clause_states_its_number_with_its_verb():
    assert extract_answer("So the answer is that there are 35 ways to seat the 7 guests.", "number").value == 35.0
    rows = "Thus the answer is that the garden has 12 rows of 8 tulips."
    assert extract_answer(rows, "number").value is None  # rows or tulips per row?
    assert extract_answer(rows, "number", question="How many rows does the garden have?").value == 12.0
    for clause in ("the series converges at x = 3", "we need at least 6 boxes", "the limit is infinite for 2 cases"):
        assert extract_answer(f"So the answer is that {clause}.", "number").value is None


def test_a_yes_no_answer_given_first_and_then_explained():
    text = "Yes, the map is injective. Two different inputs 3a + 1 and 3b + 1 differ whenever a and b differ."
    assert extract_answer(text, BOOLEAN_KIND).value is True
    text = "Yes, it looks injective at first. But no: f(1) = f(-1), so it is not."
    assert extract_answer(text, BOOLEAN_KIND).value is None  # said both ways


def test_a_title_abbreviation_does_not_end_the_answer_span():
    assert extract_answer("The answer is that the last grade Mrs. Ortiz recorded was 88.", "number").value == 88.0


def test_evaluation_and_tailored_rounds_pass_the_question_to_the_reading():
    from synthkd.loops.tailored import correction_row
    from synthkd.teachers.base import TeacherRequest, TeacherResult
    from synthkd.templates import load_template
    from synthkd.train.evaluate import predicted_value

    out = "Red: 3 + 4 = 7. Blue: 9 - 4 = 5.\n\nSo Omar has 7 red cars and 5 blue cars."
    q = "Omar had 3 red cars and 9 blue cars. He bought 4 red cars and gave away 4 blue ones. How many blue cars does he have?"
    assert predicted_value(out, "number")[0] is None
    assert predicted_value(out, "number", question=q)[0] == 5.0
    tpl = load_template("tailored/correct")
    mistake = {"id": "m1", "input": q, "question": q, "gold_answer": 5, "student_output": "7"}
    row = correction_row(mistake, TeacherResult(TeacherRequest.user("m1#r1", "p"), out), 1, tpl)
    assert "reject_reason" not in row and row["answer"] == "5"


@pytest.mark.parametrize("text,question,value", [
    # the question's verb picks the quantity when it names no noun
    ("Answer: Each of the 6 children got 4 apples.", "She shared 24 apples. How many did each of the children get?", 4.0),
    # the question's subject and verb pick among numbers with the same noun
    ("Answer: Nora has 12 shells and Ben has 30 shells.", "Ben has 18 more shells than Nora. How many shells does Nora have?",
     12.0),
    ("Answer: Tim had 9 + k coins and he spent 6 coins at the fair.", "How many coins did Tim spend?", 6.0),
    # a unit the question names
    ("Therefore, the force is 12.5 N, the work is 40 J and the distance is 3.2 m.",
     "Find the force, the work and the distance. (Unit: m)", 3.2),
])
def test_the_question_picks_by_verb_subject_or_unit(text, question, value):
    assert extract_answer(text, "number").value is None
    assert extract_answer(text, "number", question=question).value == value


def test_parts_of_a_total_asked_with_and_give_no_answer():
    text = "Answer: Mia reads 3 hours on Monday and 5 hours on Tuesday."
    assert extract_answer(text, "number", question="How many hours does Mia read on Monday and Tuesday?").value is None


def test_a_given_restated_as_if_clause_is_no_condition():
    text = "We multiply.\n\nIf there are 7 rows in each crate, then the farmer packs 7 x 9 = 63 melons in each crate."
    q = "A farmer packs 9 melons per row. If there are 7 rows in each crate. How many melons are in each crate?"
    assert extract_answer(text, "number").value is None  # a condition, as far as the text alone tells
    a = extract_answer(text, "number", question=q)
    assert (a.value, a.cue) == (63.0, "fallback")
    assert extract_answer(text.replace("7 rows", "8 rows"), "number", question=q).value is None  # not the given


def test_a_concluding_claim_is_not_hedged_by_a_word_it_shares_with_the_question():
    q = "Group A scored 71, 75, 80; group B 70, 74, 82. Is there any difference between the groups at the 5% level?"
    text = "We run a t-test.\n\nTherefore, there is no significant difference between the two groups at the 5% level."
    assert extract_answer(text, BOOLEAN_KIND, question=q).value is False


def test_the_question_never_rescues_a_number_inside_an_expression_with_unknowns():
    for text in ("Answer: Bob has 2x + 2 apples.", "Answer: Bob has 3 + y apples.", "Answer: Bob has y + 3 apples."):
        assert extract_answer(text, "number", question="How many apples does Bob have?").value is None
    # a power is one number, not its exponent
    text = "Answer: Bob has 2^40 apples in the 3 crates."
    assert extract_answer(text, "number", question="How many apples does Bob have?").value == 2.0 ** 40
    said = "Answer: Bob now has k + 12 apples more than Ann."
    assert extract_answer(said, "number", question="How many more apples does Bob have than Ann?").value is None


def test_an_option_of_several_lines_after_a_lead_in_is_read_by_its_letter():
    choices = ["x = 1\ny = 2\nprint(x + y)", "x = 1\ny = 2\nprint(x - y)", "x = 2\ny = 2\nprint(x * y)"]
    text = ("Each snippet is traced by hand.\n\nThe snippet that prints 3 is:\n\nA. x = 1\ny = 2\nprint(x+y)\n\n"
            "It adds the two values and prints the sum.")
    a = extract_answer(text, "choice", choices=choices, letters="abc")
    assert (a.value, a.cue) == (0, "fallback")
    # without the lead-in the paragraph may be a list being recited: no answer
    assert extract_answer(text.replace("The snippet that prints 3 is:", "Consider this one."), "choice",
                          choices=choices, letters="abc").value is None


def test_the_answer_section_goes_on_to_state_the_asked_quantity():
    q = "There were 4 cats and 2 dogs. 3 more cats came. How many more cats than dogs are there?"
    text = "Cats: 4 + 3 = 7.\n\nAnswer: There are 7 cats and 2 dogs. So there are 5 more cats than dogs."
    assert extract_answer(text, "number", question=q).value == 5.0
    text = ("Cats: 4 + 3 = 7.\n\nAnswer:\nThere are more cats than dogs. The difference between the number of cats "
            "and the number of dogs is 5.")
    assert extract_answer(text, "number", question=q).value == 5.0
    text = "Cats: 4 + 3 = 7.\n\nAnswer: There are 7 cats and 2 dogs.\n\nWe are done."
    assert extract_answer(text, "number", question=q).value is None  # the difference is never stated


@pytest.mark.parametrize("sentence,value", [
    ("Therefore, the area under the curve over the interval 0 <= t <= 4 is 36 square units.", 36.0),
    ("Therefore, the share of samples measured at 40 °C or more is 2.5 x 10^-3.", 0.0025),
    ("So the speed of the cart when d = 0.50 m is 1.25 m/s.", 1.25),
    ("Therefore, the number of ways with at least 2 red beads in each box is 84.", 84.0),
    ("Hence the monthly rate is 0.015 or 1.5%.", 0.015),
    ("Therefore, the largest value is -12 which occurs at (3, 4).", -12.0),
    ("Therefore, the slope of the tangent at x = 1 is -3/4.", -0.75),
    ("Thus the estimate after two steps is $y(1.2) \\approx 2.4375$.", 2.4375),
])
def test_the_final_sentence_states_its_result_after_the_verb(sentence, value):
    a = extract_answer("We set up the computation and carry it out.\n\n" + sentence, "number")
    assert a.value == pytest.approx(value) and a.cue == "fallback"


@pytest.mark.parametrize("sentence", [
    "Therefore, the momentum is greater than or equal to 2.1 x 10^-5 kg m/s.",  # a bound
    "Therefore, the ratio is 4 for small loads and 9 for large ones.",  # two values
    "Therefore, the voltage across the resistor is $\\varepsilon/4$ volts.",  # a free variable
    "Therefore, the length is 3k.",
    "Therefore, the rate is 0.2 or 30%.",  # two different values
    "Therefore, the first root is 2 and the second root is 5.",
])
def test_a_final_sentence_with_a_bound_two_values_or_unknowns_gives_no_answer(sentence):
    assert extract_answer("We set up the computation and carry it out.\n\n" + sentence, "number").value is None


@pytest.mark.parametrize("text,question,value", [
    ("We apply the test.\n\nTherefore, the map T(A) = 3A is NOT injective from R^{2x2} to R^{2x2}.",
     "For a matrix A, is the map T(A) = 3A from R^{2x2} to R^{2x2} injective?", False),
    ("We check the scaling.\n\nTherefore, the function g(s, u) = (s^2 + u^2) / (s u) is homogeneous.",
     "is the function g(s, u) = (s^2 + u^2) / (s u) homogeneous", True),
    ("We induct on n.\n\nTherefore, by induction, 2^n >= n + 1 for all n >= 0.", "Let n >= 0. Is 2^n >= n + 1?", True),
    ("We compute the checksum.\n\nTherefore, the code 4-711 passes the checksum and is a valid product code.",
     "Is 4-711 a valid product code?", True),
    ("We compare both.\n\nSo in conclusion, the statement is false. The kernel of T has dimension 2.",
     "The kernel of T is trivial. True or False?", False),
])
def test_claims_in_the_forms_teachers_write_them(text, question, value):
    assert extract_answer(text, BOOLEAN_KIND, question=question).value is value


def test_a_claim_about_another_proposition_gives_no_answer():
    q = "The yields were 5.1, 4.8, 5.3. Do the results conform to the expectation at the 5% significance level?"
    text = "We run the test.\n\nTherefore, the answer is that we fail to reject the null hypothesis at the 5% significance level."
    assert extract_answer(text, BOOLEAN_KIND, question=q).value is None  # true in effect, but not a restatement


@pytest.mark.parametrize("text,question,value", [
    ("So the answer is that there are 924 lattice paths from A to B in a 6 by 6 grid.",
     "What is the number of lattice paths from A to B in the 6 by 6 grid?", 924.0),
    ("So the answer is that there is only 1 spanning tree on 4 labelled vertices of the path.",
     "How many trees are there on the path's 4 labelled vertices?", 1.0),
    ("So the answer is that the capacitor C should be 47 µF to give a 20 degree lag.",
     "Find C for a 20 degree lag. Give the answer in unit of $\\mu F$.", 47.0),
    ("So the answer is that there are 120 different fruit salads you can make with 5 fruits and 3 bowls.",
     "How many different fruit salads can you make?", 120.0),
])
def test_more_ways_a_question_names_its_quantity(text, question, value):
    assert extract_answer(text, "number", question=question).value == value


def test_a_count_stated_by_existence_and_its_limits():
    text = "So the answer is there are 720 different 6-letter words that can be formed using the letters A, B, C, D, E, F."
    assert extract_answer(text, "number").value == 720.0
    for said in ("So the answer is there are 9 cats and 4 dogs in the yard.",
                 "So the answer is there are 11 crates of pears, each crate has 10 pears."):
        assert extract_answer(said, "number").value is None  # two counts: which one?
    assert extract_answer("So the answer is that you will see the flash 4.5 seconds after the launch.", "number").value == 4.5
    for said in ("So the answer is that the wire of 2 m length is infinitely strong.",
                 "So the answer is that the limit is infinite for 3 of the cases."):
        assert extract_answer(said, "number").value is None  # the number is no result


def test_a_claim_with_latex_symbols_compares_by_its_words():
    q = "We observe 70 heads in 100 tosses. Can we reject H_0 at significance level $\\alpha = 0.05$?"
    text = "We compute the p-value.\n\nTherefore, the answer is: we can reject the null hypothesis H_0 at significance level α = 0.05."
    assert extract_answer(text, BOOLEAN_KIND, question=q).value is True


def test_scientific_notation_that_lost_its_caret():
    # "3.54 x 10-7 C" is 3.54e-7 (read as 3.54 * 10 - 7 = 28.4 it would be an invented answer)
    text = "We apply Gauss's law.\n\nTherefore, the charge enclosed by the sphere is 4.12 x 10-9 C."
    assert extract_answer(text, "number").value == pytest.approx(4.12e-9)
    assert extract_answer("So the answer is 2 x 10-3.", "number").value == 17.0  # no decimal mantissa: arithmetic


def test_a_typo_in_the_question_does_not_hide_the_claim_it_asks_about():
    q = "Let M be a square matrix. Is the vector u necesarily an eigenvector of M + I?"
    text = "We test it.\n\nTherefore, the answer is: u is not necessarily an eigenvector of M + I."
    assert extract_answer(text, BOOLEAN_KIND, question=q).value is False


def test_a_statement_to_judge_and_a_claim_about_its_antonym():
    q = "Let T be a map between vector spaces. The kernel of a linear map is always a subspace."
    text = "We check closure.\n\nTherefore, the answer is: the kernel of a linear map is always a subspace."
    assert extract_answer(text, BOOLEAN_KIND, question=q).value is True
    text = "We check closure.\n\nTherefore, the answer is: the kernel of a nonlinear map is not always a subspace."
    assert extract_answer(text, BOOLEAN_KIND, question=q).value is None  # about another proposition


@pytest.mark.parametrize("span,value", [
    ("the mean of X is equal to sqrt(q(1-q)) = sqrt(0.25*0.75) = 0.433, where q = P(X = 1) is the hit rate", 0.433),
    ("the current ratio is approximately e^12 when 0.3 V is applied at room temperature", math.exp(12)),
    ("0.5 x 10$^{-3}$ m$^3$", 0.5e-3),
    ("3.1×10^{8}", 3.1e8),
    ("the line integral of x dy - y dx over the unit circle is 6.283", 6.283),
])
def test_values_with_their_setting_or_latex_powers(span, value):
    assert extract_answer(f"Therefore, the answer is: {span}.", "number").value == pytest.approx(value)


def test_a_power_too_large_to_evaluate_gives_no_answer_not_its_base():
    assert extract_answer("Therefore, the answer is 2^{2022}.", "number").value is None


def test_options_recited_then_one_restated_after_a_lead_in():
    text = ("A. a kettle - boils water.\nB. a toaster - browns bread.\nC. a lamp - gives light.\n\n"
            "The most suitable device is:\n\nB. a toaster - it is the only one for bread.")
    assert extract_answer(text, "choice", choices=CHOICES).value == 1
    text = ("A. a kettle - boils water.\nB. a toaster - browns bread.\nC. a lamp - gives light.\n\n"
            "The suitable devices are:\nB. a toaster\nC. a lamp")
    assert extract_answer(text, "choice", choices=CHOICES).value is None  # two options after the lead-in


def test_we_can_conclude_that_is_a_conclusion_not_a_hedge():
    text = "Each device was checked.\n\nGiven this, we can conclude that the one to buy is (D) a blender."
    assert extract_answer(text, "choice", choices=CHOICES).value == 3
    text = "Each device was checked.\n\nWe can pick (D) a blender or (E) a radio."
    assert extract_answer(text, "choice", choices=CHOICES).value is None
