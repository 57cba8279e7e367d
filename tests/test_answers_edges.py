"""Edge cases of synthkd.answers, grouped by behaviour: where a span starts and ends, how it is cleaned,
how numbers, option letters / texts and class labels are read from it, and the documented limits.

Each case pins one documented rule with a realistic teacher text (see the docstrings in synthkd/answers.py);
tests/test_answers.py holds the main cases and the recorded teacher outputs.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from synthkd.answers import (
    NLI_LABELS,
    NLI_SYNONYMS,
    OFF_LOOP_CHARS,
    ExtractedAnswer,
    extract_answer,
    extract_choice,
    extract_final_answer_span,
    extract_label,
    extract_number,
    numbers_equal,
    parse_off_loop,
    safe_eval_arithmetic,
)

CSQA_CHOICES = ["british columbia", "body of water", "wooded area", "pay debts", "zoo"]
# a CommonsenseQA-style question whose options contain each other ("water" is inside "body of water")
WATER_CHOICES = ["water", "body of water", "wooded area", "pay debts", "zoo"]


# --------------------------------------------------------------------------------------------------
# where the span is: line ends, blank lines, markdown cue lines, limits
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the span ends at the end of the cue's line, whatever follows on later lines
        ("The answer is 42\nThat is all.\nThanks", "42"),
        ("The answer is 42\nSo we are done", "42"),
        # a cue that ends its line: the next non-empty line
        ("Answer:\n42", "42"),
        ("Answer:\n\n7", "7"),
        ("Answer:\n\n\n7", "7"),
        ("Final answer:\n\n", ""),  # nothing after the blank lines
        # markdown bold around the cue, answer on the next line (regression: used to give "")
        ("**Answer:**\n42", "42"),
        ("**Final Answer:**\n\n42", "42"),
        ("Answer: **\n", ""),
        # a few-shot "A:" line is an answer when it is at most six words long
        ("How many?\nA: 90,000 people live there in total", "90,000 people live there in total"),
        ("How many?\nA: 90,000 people live there in total now", None),
        # \boxed{...}: braces before the box are not part of it
        ("Let $S = \\{1, 2\\}$, so $|S| = \\boxed{2}$", "2"),
    ],
)
def test_span_boundaries(text: str, expected: str | None) -> None:
    assert extract_final_answer_span(text) == expected


def test_markdown_answer_header_then_answer_on_next_line() -> None:
    # regression: "**Answer:**" + newline used to give reason "empty answer span" for every kind
    assert extract_answer("Let me compute.\n**Answer:**\n\n42", "number") == ExtractedAnswer(
        42.0, "42", None, "answer:", ()
    )
    ex = extract_answer("**Answer:**\n(C) wooded area", "choice", choices=CSQA_CHOICES)
    assert (ex.value, ex.span, ex.cue) == (2, "(C) wooded area", "answer:")


def test_span_is_read_from_at_most_2000_characters_of_a_line() -> None:
    digits = "7" * 5000
    assert extract_final_answer_span("Answer:" + digits) == "7" * 2000
    # also when the line does end, but only after the limit
    assert extract_final_answer_span("Answer:" + digits + "\nmore") == "7" * 2000


def test_only_the_last_32k_characters_are_searched_for_cues() -> None:
    early = "The answer is 5. " + "Then some more words. " * 1600  # the cue is 35 KB before the end
    assert len(early) > 32_768 + 100
    assert extract_final_answer_span(early) is None
    assert extract_answer(early, "number").reason == "no answer cue"
    assert extract_final_answer_span(early + "So the answer is 6.") == "6"


def test_a_line_cue_is_reported_as_A() -> None:
    ex = extract_answer("Q: How much does she make?\nA: 18 dollars", "number")
    assert ex == ExtractedAnswer(18.0, "18 dollars", None, "A:", ())


# --------------------------------------------------------------------------------------------------
# how the span is cleaned: markdown, LaTeX inline math wrappers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is `42`.", "42"),  # inline code
        ("The answer is __neutral__.", "neutral"),
        ("The answer is $42$", "42"),  # inline math
        ("The answer is $-5$\n", "-5"),
        ("Answer: $", "$"),  # a lone "$" is a currency sign, not math
        ("Answer: $$", ""),  # an empty inline-math pair
        ("The answer is \\(\\frac{3}{4}\\)", "\\frac{3}{4}"),
        ("The answer is \\(42\\)", "42"),
        ("The answer is \\(42", "\\(42"),  # only a complete \( ... \) pair is removed
        ("The answer is 42\\)", "42\\)"),
    ],
)
def test_span_cleaning(text: str, expected: str) -> None:
    assert extract_final_answer_span(text) == expected


def test_a_lone_currency_sign_is_a_span_without_a_number() -> None:
    assert extract_answer("Answer: $", "number") == ExtractedAnswer(None, "$", "cue found but no number", "answer:")


# --------------------------------------------------------------------------------------------------
# bare answers and reasons of extract_answer
# --------------------------------------------------------------------------------------------------


def test_bare_answer_is_one_line_of_at_most_64_characters() -> None:
    line64 = "There are 42 apples left in the basket after the friends ate some"[:64]
    assert len(line64) == 64
    ex = extract_answer(line64, "number")
    assert (ex.value, ex.cue) == (42.0, "bare")
    # 65 characters: not a bare answer; the cue-less fallback reads the one number its sentence states
    assert extract_answer(line64 + "!", "number") == ExtractedAnswer(42.0, line64 + "!", None, "fallback")
    assert extract_answer(line64 + " or 43!", "number").reason == "no answer cue"  # a hedge: no fallback
    assert extract_answer("Let me think.\n42", "number") == ExtractedAnswer(None, None, "no answer cue")


def test_empty_answer_span_keeps_span_and_cue() -> None:
    assert extract_answer("The answer is", "number") == ExtractedAnswer(None, "", "empty answer span", "answer is")
    assert extract_answer("#### ", "choice", choices=CSQA_CHOICES) == ExtractedAnswer(
        None, "", "empty answer span", "####"
    )


def test_extract_answer_passes_synonyms_to_the_label_parser() -> None:
    ex = extract_answer("Answer: yes", "label", labels=NLI_LABELS, synonyms=NLI_SYNONYMS)
    assert ex == ExtractedAnswer("entailment", "yes", None, "answer:", ())
    ex = extract_answer("Answer: yes", "label", labels=NLI_LABELS)
    assert (ex.value, ex.reason) == (None, "no label matched")


def test_parsers_accept_the_none_of_a_missing_cue() -> None:
    # extract_final_answer_span returns None when there is no cue; its documented use is to pass the
    # span on to a parser, which then finds nothing instead of raising
    span = extract_final_answer_span("I am not sure about this one at all.")
    assert span is None
    assert extract_number(span) is None  # type: ignore[arg-type]
    assert extract_choice(span, CSQA_CHOICES) is None  # type: ignore[arg-type]
    assert extract_label(span, NLI_LABELS, NLI_SYNONYMS) is None  # type: ignore[arg-type]
    assert extract_number("   ") is None
    assert extract_choice("   ", CSQA_CHOICES) is None
    assert extract_label("   ", NLI_LABELS, NLI_SYNONYMS) is None


# --------------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unbalanced parentheses / trailing operators around one expression are trimmed before it
        # is evaluated: the value is the expression's, not its first number
        ("2 * 3) %", 6.0),
        ("2 * 3)%", 6.0),
        ("2 * 3 +", 6.0),
        ("2 * 3 ) )", 6.0),
        ("( ( 2 * 3 apples", 6.0),
        # mixed numbers and their sign
        ("-1 1/2 cups", -1.5),
        ("3 4/4 cups", 4.0),
        # "%" is a percent sign unless a number follows it
        ("50% - 20%", 30.0),
        # LaTeX and currency markup is removed, not turned into text
        ("\\frac{1}{2} + 1", 1.5),
        ("2 \\times \\left(3 + 4\\right)", 14.0),
        ("$12 per hour for 3 hours", 12.0),
        # the same number twice is one answer
        ("Each of them gets 4, so 4", 4.0),
        ("4 apples, that is 4", 4.0),
        # several different numbers, the span does not start with one: ambiguous
        ("around 40 50", None),
    ],
)
def test_number_spans(text: str, expected: float | None) -> None:
    assert extract_number(text) == expected


def test_several_numbers_in_one_run_are_read_one_by_one() -> None:
    # "12 15" is no expression: its numbers are candidates; the span opens with one, so it is the value
    assert extract_answer("The answer is 12 15.", "number") == ExtractedAnswer(12.0, "12 15", None, "answer is", ())
    assert extract_answer("The answer is 3 * * 4.", "number").value == 3.0
    # a hedge across runs: "12 or 13 14" offers 13 as well
    ex = extract_answer("The answer is 12 or 13 14.", "number")
    assert (ex.value, ex.alternatives) == (12.0, (13.0, 14.0))
    # letters before the first of several numbers: ambiguous
    assert extract_answer("The answer is about 12 15.", "number").reason == "ambiguous"
    # two fractions side by side are not one expression: the span is flagged as a hedge, not read as "1"
    ex = extract_answer("The answer is 1/2 3/4.", "number")
    assert ex.span == "1/2 3/4" and ex.hedged


def test_number_alternatives_only_for_a_hedge() -> None:
    # no "or"/"and"/"/"/"," between the first number and the next one: no alternatives
    ex = extract_answer("The answer is 42 apples in 6 boxes.", "number")
    assert (ex.value, ex.alternatives) == (42.0, ())
    ex = extract_answer("The answer is 12 apples (1/2 of the basket).", "number")
    assert (ex.value, ex.alternatives) == (12.0, ())
    # a hedge: the other numbers are alternatives
    ex = extract_answer("The answer is 12 or 15 apples.", "number")
    assert (ex.value, ex.alternatives) == (12.0, (15.0,))


def test_number_spans_without_a_number() -> None:
    for span in ("unclear - sorry", "( )", "( ) blank", "unclear -"):
        ex = extract_answer(f"The answer is {span}", "number")
        assert (ex.value, ex.reason) == (None, "cue found but no number"), span


def test_a_mixed_number_with_zero_denominator_does_not_raise() -> None:
    ex = extract_answer("The answer is 1 1/0 cups.", "number")  # a broken fraction: no ZeroDivisionError
    assert ex.span == "1 1/0 cups"


# --------------------------------------------------------------------------------------------------
# the safe evaluator: documented limits and powers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("1e100", 1e100),  # |x| <= 1e100 is allowed
        ("1e100 * 1", 1e100),
        ("-1e100", -1e100),
        ("0 ** 0", 1.0),
        ("0 ** 0.5", 0.0),
        ("0 ** 2", 0.0),
        ("1 ** -1", 1.0),
        ("4 ** 0.5", 2.0),
        ("0.25 ** 0.5", 0.5),
        ("(-2) ** 2", 4.0),
        ("(-2) ** 3", -8.0),
        ("(-8) ** -1", -0.125),
    ],
)
def test_safe_eval_limits_accept(expr: str, expected: float) -> None:
    assert safe_eval_arithmetic(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "1e101",  # a literal above 1e100
        "-1e101",
        "1e60 * 1e60",  # a finite result above 1e100
        "0 ** -1",
        "(-8) ** (1/3)",
        "(-4) ** 0.5",
    ],
)
def test_safe_eval_limits_reject(expr: str) -> None:
    with pytest.raises(ValueError):
        safe_eval_arithmetic(expr)


def test_safe_eval_length_limit_is_2000_characters() -> None:
    # shallow on purpose (a long sum nests 500 deep, which a tracing wrapper such as mutmut's turns
    # into "nested too deeply"): the limit is on characters, so pad a short expression with spaces
    expr = "(1000 + 499)" + " " * 1988
    assert len(expr) == 2000
    assert safe_eval_arithmetic(expr) == 1499.0
    with pytest.raises(ValueError, match="too long"):
        safe_eval_arithmetic(expr + " ")


def test_out_of_range_numbers_give_no_answer() -> None:
    assert extract_answer("The answer is 1e101.", "number").reason == "bad expression"
    assert extract_answer("The answer is 1e100.", "number").value == 1e100


# --------------------------------------------------------------------------------------------------
# numbers_equal
# --------------------------------------------------------------------------------------------------


def test_numbers_equal_rejects_bools_on_either_side() -> None:
    assert not numbers_equal(True, 1.0)
    assert not numbers_equal(1.0, True)
    assert not numbers_equal(False, 0)
    assert not numbers_equal(1, "1")
    assert not numbers_equal(float("nan"), 1.0)
    assert numbers_equal(1, 1.0)


# --------------------------------------------------------------------------------------------------
# multiple choice
# --------------------------------------------------------------------------------------------------


def test_letter_must_name_an_existing_option() -> None:
    three = ["pond", "creek", "sea"]
    assert extract_choice("(c)", three) == 2
    assert extract_choice("(d)", three) is None  # "d" is a letter of the default "abcde" but there is no 4th option
    assert extract_answer("The answer is (d).", "choice", choices=three).reason == "no choice matched"


def test_negated_letters_and_options_at_the_start_of_the_span() -> None:
    assert extract_choice("not (e)", CSQA_CHOICES) is None
    assert extract_choice("not zoo", CSQA_CHOICES) is None
    ex = extract_answer("The answer is: not (e), but (a).", "choice", choices=CSQA_CHOICES)
    assert (ex.value, ex.alternatives) == (0, ())


def test_adjacent_letters_are_both_read() -> None:
    ex = extract_answer("So the answer is (a)(e).", "choice", choices=CSQA_CHOICES)
    assert (ex.value, ex.alternatives) == (4, (0,))


def test_option_text_mentions_longer_option_beats_contained_one() -> None:
    # "water" is an option and is inside the option "body of water"
    assert extract_choice("the body of water", WATER_CHOICES) == 1
    assert extract_choice("a body of water", WATER_CHOICES) == 1
    assert extract_choice("just water", WATER_CHOICES) == 0
    ex = extract_answer("The answer is the body of water.", "choice", choices=WATER_CHOICES)
    assert (ex.value, ex.alternatives) == (1, ())
    # order of the options does not matter
    for choices in (["body", "body of water", "zoo"], ["body of water", "body", "zoo"]):
        ex = extract_answer("The answer is the body of water.", "choice", choices=choices)
        assert (ex.value, ex.alternatives) == (choices.index("body of water"), ()), choices


def test_option_text_mentions_last_one_wins_others_are_alternatives() -> None:
    ex = extract_answer("The answer is a body of water or a zoo.", "choice", choices=WATER_CHOICES)
    assert (ex.value, ex.alternatives) == (4, (1,))
    ex = extract_answer("The answer is body of water or zoo.", "choice", choices=CSQA_CHOICES)
    assert (ex.value, ex.alternatives) == (4, (1,))
    ex = extract_answer("The answer is zoo or wooded area.", "choice", choices=CSQA_CHOICES)
    assert (ex.value, ex.alternatives) == (2, (4,))
    # one option mentioned twice is not a hedge
    ex = extract_answer("The answer is zoo, the zoo.", "choice", choices=CSQA_CHOICES)
    assert (ex.value, ex.alternatives) == (4, ())
    # the last mention that is not negated
    ex = extract_answer("The answer is zoo, then pond, then zoo again, but not zoo", "choice",
                        choices=["aquarium", "creek", "pet store", "pond", "zoo"])
    assert (ex.value, ex.alternatives) == (4, (3,))


def test_identical_option_texts_mentioned_in_prose_give_the_first() -> None:
    dup = ["bus depot", "beach", "train station", "bridge", "bridge"]
    ex = extract_answer("The answer is the bridge.", "choice", choices=dup)
    assert (ex.value, ex.alternatives) == (3, ())


def test_blank_option_is_skipped() -> None:
    assert extract_choice("I would say the zoo", ["", "pond", "zoo"]) == 2
    assert extract_choice("I would say the zoo", ["?", "pond", "zoo"]) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("two boxes", 0),  # -es after x
        ("the glasses", 1),  # -es after s; "glass" itself keeps its "ss"
        ("buses", 2),  # a three-letter option ("bus") is not stemmed
        ("cats", 3),  # four-letter plural
        ("axes", 4),  # four-letter -es plural
        ("tables", 5),  # -es after another letter: only the "s" goes
    ],
)
def test_plural_folding(text: str, expected: int) -> None:
    choices = ["box", "glass", "bus", "cat", "ax", "table"]
    assert extract_choice(text, choices) == expected


def test_plural_folding_of_the_option_text() -> None:
    # the option is the plural, the answer the singular
    assert extract_choice("pay debt", CSQA_CHOICES) == 3
    assert extract_choice("you should pay the debt", CSQA_CHOICES) is None


# --------------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------------


def test_label_negation_is_the_word_right_before() -> None:
    assert extract_label("it is not entailment", NLI_LABELS, NLI_SYNONYMS) is None
    assert extract_label("it would never contradict", NLI_LABELS, NLI_SYNONYMS) is None
    assert extract_label("so now, entailment", NLI_LABELS, NLI_SYNONYMS) == "entailment"
    # a negated mention is skipped, later mentions still count
    assert extract_label("not entailment, so contradiction", NLI_LABELS, NLI_SYNONYMS) == "contradiction"


def test_label_mentioned_again_after_another() -> None:
    ex = extract_answer(
        "The answer is entailment, although one could argue contradiction; still entailment",
        "label",
        labels=NLI_LABELS,
        synonyms=NLI_SYNONYMS,
    )
    assert ex.span == "entailment, although one could argue contradiction"
    assert (ex.value, ex.alternatives) == ("entailment", ("contradiction",))
    assert extract_label(
        "entailment, although one could argue contradiction, still entailment", NLI_LABELS, NLI_SYNONYMS
    ) == "entailment"


def test_label_ambiguous_reason() -> None:
    ex = extract_answer(
        "The answer is probably entailment or contradiction.", "label", labels=NLI_LABELS, synonyms=NLI_SYNONYMS
    )
    assert ex == ExtractedAnswer(None, "probably entailment or contradiction", "ambiguous", "answer is", ())


def test_synonym_keys_are_matched_like_labels() -> None:
    # capitalised labels with the lower-case NLI_SYNONYMS keys
    labels = ["Entailment", "Neutral", "Contradiction"]
    assert extract_label("yes", labels, NLI_SYNONYMS) == "Entailment"
    assert extract_label("it is impossible to tell", labels, NLI_SYNONYMS) == "Neutral"
    # a key that is one of the labels verbatim owns its synonyms, even when another label looks the same
    assert extract_label("good", ["POS", "pos"], {"POS": ["good"]}) == "POS"


def test_many_labels_longer_label_beats_contained_one() -> None:
    # a topic label set in which "sports" is inside "sports news"
    labels = [f"topic {i}" for i in range(17)] + ["sports", "sports news"]
    assert labels.index("sports") == 17
    assert extract_label("it is sports news", labels) == "sports news"
    assert extract_label("it is sports", labels) == "sports"


# --------------------------------------------------------------------------------------------------
# parse_off_loop
# --------------------------------------------------------------------------------------------------


def _where(*args: object, **kwargs: object) -> tuple[bool, tuple, dict]:
    return threading.current_thread() is threading.main_thread(), args, kwargs


def test_parse_off_loop_inline_below_threshold_thread_from_threshold() -> None:
    async def go() -> list[tuple[bool, tuple, dict]]:
        return [
            await parse_off_loop(OFF_LOOP_CHARS - 1, _where, "a", 1, kind="number"),
            await parse_off_loop(OFF_LOOP_CHARS, _where, "a", 1, kind="number"),
            await parse_off_loop(10 * OFF_LOOP_CHARS, extract_number, "The total is 18"),
        ]

    inline, threaded, value = asyncio.run(go())
    assert inline == (True, ("a", 1), {"kind": "number"})
    assert threaded == (False, ("a", 1), {"kind": "number"})
    assert value == 18.0
