"""The consistency operator row by row: exact keep/drop decisions, reject reasons and details (the
text a user reads in the rejects file), the ``consistency`` annotation, where answers and samples
are read from, how ``kind`` picks the comparison, the agreement thresholds at their boundary, and
the report.  Pure calls of :meth:`Consistency.check` (what the streaming runner calls per row)."""

from __future__ import annotations

import pytest

from synthkd.filters.base import Reject, RunContext
from synthkd.filters.consistency import Consistency, ConsistencyConfig
from synthkd.filters.text import FieldProblem


def op(**cfg) -> Consistency:
    return Consistency(ConsistencyConfig(**cfg), RunContext())


def gold_row(answer, gold, **extra):
    return {"id": "r", "answer": answer, "gold": gold, **extra}


# -- declared needs -------------------------------------------------------------------------------

def test_needs_and_preview_per_mode():
    assert op().needs() == [("answer", "completion"), ("gold",)]
    assert op(mode="majority").needs() == [("answers", "samples", "completions", "answer", "completion")]
    custom = op(answer_field="a", completion_field="c", gold_field="g")
    assert custom.needs() == [("a", "c"), ("g",)]
    assert op(mode="majority", answers_field="as", samples_field="ss", completions_field="cs",
              answer_field="a", completion_field="c").needs() == [("as", "ss", "cs", "a", "c")]
    assert op().preview_field() is None


# -- gold mode: decisions and texts ---------------------------------------------------------------

def test_gold_mode_keeps_a_correct_answer_and_annotates_it():
    row = gold_row(12, 12)
    assert op().check(row) is None
    assert row["consistency"] == {"answer": 12, "gold": 12}


def test_gold_mode_wrong_answer_detail_names_answer_and_gold():
    assert op().check(gold_row(12, 13)) == Reject("wrong answer", "answer 12, gold 13")
    assert op().check(gold_row("cat", "dog")) == Reject("wrong answer", "answer 'cat', gold 'dog'")


def test_missing_gold_field_is_a_field_problem_naming_it():
    with pytest.raises(FieldProblem) as ei:
        op().check({"id": "r", "answer": 3})
    assert (ei.value.field, ei.value.problem) == ("gold", "missing")
    with pytest.raises(FieldProblem) as ei:
        op(gold_field="label").check({"id": "r", "answer": 3, "gold": 3})
    assert ei.value.field == "label"


def test_neither_answer_nor_completion_is_a_field_problem_naming_both():
    with pytest.raises(FieldProblem) as ei:
        op().check({"id": "r", "gold": 3})
    assert ei.value.field == "answer' or 'completion"
    assert str(ei.value) == "field \"answer' or 'completion\": missing"


@pytest.mark.parametrize(("gold", "detail"), [(None, "gold None"), ("!!!", "gold '!!!'"), ("  ", "gold '  '")])
def test_unreadable_gold_is_its_own_reason(gold, detail):
    # text gold with no word character (and not a number) cannot be compared with anything
    assert op().check(gold_row("x", gold)) == Reject("gold unreadable", detail)


def test_unreadable_numeric_gold():
    assert op(kind="number").check(gold_row(3, "n/a")) == Reject("gold unreadable", "gold 'n/a'")


def test_null_answer_reason_comes_from_the_row_or_a_default():
    assert op().check(gold_row(None, 3)) == Reject("no answer", "answer is null")
    assert op().check(gold_row(None, 3, answer_reason="no answer cue")) == Reject("no answer", "no answer cue")
    assert op().check(gold_row(None, 3, answer_reason="")) == Reject("no answer", "answer is null")


def test_gold_checked_before_answer():
    assert op().check(gold_row(None, None)) == Reject("gold unreadable", "gold None")


# -- how answers compare --------------------------------------------------------------------------

def test_auto_compares_as_numbers_for_math_rows_or_when_a_side_is_a_number():
    # both strings: text comparison, "12" is not "12.0" ...
    assert op().check(gold_row("12", "12.0")) == Reject("wrong answer", "answer '12', gold '12.0'")
    # ... unless the row is a math row, or one side is a number
    assert op().check(gold_row("12", "12.0", kind="math")) is None
    assert op().check(gold_row("1,000", 1000)) is None
    assert op().check(gold_row(1000, "1,000")) is None
    assert op().check(gold_row(450, "( 10.0 * 45.0 )")) is None
    assert op().check(gold_row(12, "about 12 apples")) is None  # a number read out of the text


def test_explicit_kind_decides_numeric_comparison_regardless_of_row_kind():
    assert op(kind="number").check(gold_row("12", "12.0")) is None
    assert op(kind="number").check(gold_row("12", "12.0", kind="nli")) is None
    # a non-number kind compares text even for a math row and numeric-looking strings
    assert op(kind="label", labels=["a"]).check(gold_row("12", "12.0", kind="math")) == \
        Reject("wrong answer", "answer '12', gold '12.0'")


def test_text_comparison_ignores_case_spacing_and_punctuation():
    assert op().check(gold_row("  Wooded_Area. ", "wooded area")) is None
    assert op().check(gold_row("Hello,World", "hello world")) is None
    assert op().check(gold_row("helloworld", "hello world")) == Reject(
        "wrong answer", "answer 'helloworld', gold 'hello world'")


def test_booleans_are_not_numbers():
    # True would equal 1 as a number; it is compared as the text "true"
    assert op(kind="label", labels=["true"]).check(gold_row(True, "True")) is None
    assert op().check(gold_row(True, 1)) == Reject("wrong answer", "answer True, gold 1")
    # compared as numbers (a sample is a number), a boolean is unreadable
    assert op(mode="majority").check({"answers": [True, "true", 1]}) == Reject(
        "low agreement", "majority 1 has 33% of 3 samples")
    r = {"answers": [True, "true", 2]}
    assert op(mode="majority", kind="label", labels=["x"]).check(r) is None
    assert r["consistency"] == {"answer": True, "majority": True, "agreement": 0.6667}


def test_non_numeric_mode_rounds_numbers_to_six_decimals():
    r = {"answers": [0.1 + 0.2, 0.3, 4]}
    assert op(mode="majority", kind="label", labels=["x"]).check(r) is None
    assert r["consistency"] == {"answer": 0.1 + 0.2, "majority": 0.1 + 0.2, "agreement": 0.6667}
    # different numbers stay different
    assert op(mode="majority", kind="label", labels=["x"]).check({"answers": [3, 4, 5]}) == Reject(
        "low agreement", "majority 3 has 33% of 3 samples")


# -- answers parsed from completions --------------------------------------------------------------

def test_completion_that_is_not_text():
    assert op().check({"completion": 42, "gold": 42}) == Reject("no answer", "completion is not text")


def test_completion_parse_failure_reason():
    assert op().check({"completion": "", "gold": 3}) == Reject("no answer", "empty text")
    assert op().check({"completion": "no idea\nat all", "gold": 3}) == Reject("no answer", "no answer cue")


def test_choice_completion_returns_the_option_text():
    row = {"kind": "choice", "choices": ["cat", "dog", "cow"], "completion": "The answer is (b).", "gold": "Dog"}
    assert op().check(row) is None
    assert row["consistency"] == {"answer": "dog", "gold": "Dog"}
    # options that are not strings are read as their text
    row = {"kind": "choice", "choices": [10, 20], "completion": "The answer is (b).", "gold": "20"}
    assert op().check(row) is None and row["consistency"]["answer"] == "20"


def test_choice_without_options_names_the_choices_field():
    with pytest.raises(FieldProblem) as ei:
        op().check({"kind": "choice", "completion": "The answer is (b).", "gold": "dog"})
    assert (ei.value.field, ei.value.problem) == ("choices", "missing (kind choice needs the options)")
    with pytest.raises(FieldProblem) as ei:
        op(kind="choice", choices_field="options").check(
            {"completion": "The answer is (b).", "gold": "dog", "options": "dog"})
    assert ei.value.field == "options"


def test_nli_rows_use_the_nli_labels_and_their_synonyms():
    row = {"kind": "nli", "completion": "The answer is yes.", "gold": "entailment"}
    assert op().check(row) is None and row["consistency"]["answer"] == "entailment"
    row = {"kind": "nli", "completion": "So the answer is: maybe", "gold": "neutral"}
    assert op().check(row) is None
    # configured labels equal to the NLI labels get the synonyms too
    row = {"completion": "The answer is no.", "gold": "contradiction"}
    assert op(kind="label", labels=["entailment", "neutral", "contradiction"]).check(row) is None


def test_configured_labels_without_synonyms():
    cfg = {"labels": ["positive", "negative"]}
    row = {"kind": "classification", "completion": "The answer is Negative.", "gold": "negative"}
    assert op(**cfg).check(row) is None and row["consistency"]["answer"] == "negative"
    # "yes" is an NLI synonym, not one of these labels
    assert op(**cfg).check({"kind": "classification", "completion": "The answer is yes.", "gold": "positive"}) == \
        Reject("no answer", "no label matched")
    # configured labels win over the NLI default for an nli row
    row = {"kind": "nli", "completion": "The answer is positive.", "gold": "positive"}
    assert op(**cfg).check(row) is None


def test_label_kind_without_labels_is_a_field_problem():
    for o, row in [(op(), {"kind": "classification", "completion": "The answer is a.", "gold": "a"}),
                   (op(kind="label"), {"kind": "math", "completion": "The answer is a.", "gold": "a"})]:
        with pytest.raises(FieldProblem) as ei:
            o.check(row)
        assert (ei.value.field, ei.value.problem) == ("labels", "not configured (kind label needs 'labels')")


def test_unknown_or_missing_row_kind_parses_numbers():
    assert op().check({"completion": "The answer is 7.", "gold": 7}) is None
    assert op().check({"kind": "poetry", "completion": "The answer is 7.", "gold": "7"}) is None
    # an explicit kind is not overridden by the row's kind
    assert op(kind="number").check({"kind": "choice", "completion": "The answer is 7.", "gold": 7}) is None


def test_hedged_answer_kept_unless_drop_hedged():
    row = {"kind": "math", "completion": "The answer is 12 or 13.", "gold": 12}
    assert op().check(dict(row)) is None
    assert op(drop_hedged=True).check(dict(row)) == Reject("no answer", "hedged answer")


# -- gold mode: agreement of the samples ----------------------------------------------------------

def test_gold_agreement_annotation_and_threshold():
    o = op(min_agreement=0.5)
    row = gold_row(450, 450, answers=[450, 450.0000001, "450", 12, None, 13])
    assert o.check(row) is None
    assert row["consistency"] == {"answer": 450, "gold": 450, "agreement": 0.5}
    assert o.check(gold_row(450, 450, answers=[450, 12, 13])) == Reject(
        "low agreement", "33% of 3 samples give gold 450")
    assert o.report() == {"agreement_histogram": {"0.3": 1, "0.5": 1}}


def test_gold_agreement_without_threshold_only_annotates():
    row = gold_row(5, 5, answers=[5, 6, 7])
    assert op().check(row) is None
    assert row["consistency"] == {"answer": 5, "gold": 5, "agreement": 0.3333}


def test_gold_agreement_threshold_is_met_within_1e9():
    # 1 of 4 samples agree (0.25): a minimum 1e-9 above is still met, 3e-9 above is not
    row = gold_row(1, 1, answers=[1, 2, 3, 4])
    assert op(min_agreement=0.25).check(dict(row)) is None
    assert op(min_agreement=0.250000001).check(dict(row)) is None
    assert op(min_agreement=0.250000003).check(dict(row)) == Reject("low agreement", "25% of 4 samples give gold 1")
    # no sample agrees: min 1e-9 is met, 3e-9 is not
    row = gold_row(1, 1, answers=[2, 3])
    assert op(min_agreement=1e-9).check(dict(row)) is None
    assert op(min_agreement=3e-9).check(dict(row)) == Reject("low agreement", "0% of 2 samples give gold 1")


def test_gold_agreement_from_the_rows_agreement_field():
    # no samples: the row's own "agreement" number is checked against min_agreement
    assert op(min_agreement=0.6).check(gold_row(1, 1, agreement=0.6)) is None
    assert op(min_agreement=0.6).check(gold_row(1, 1, agreement=0.59)) == Reject("low agreement", "agreement 59%")
    assert op(min_agreement=0.6).check(gold_row(1, 1, agreement=0.5999999995)) is None  # within 1e-9
    # not a number, or no threshold: ignored
    assert op(min_agreement=0.6).check(gold_row(1, 1, agreement="0.1")) is None
    assert op(min_agreement=0.6).check(gold_row(1, 1, agreement=True)) is None
    row = gold_row(1, 1, agreement=0.1)
    assert op().check(row) is None
    assert row["consistency"] == {"answer": 1, "gold": 1}
    # an empty samples list counts as no samples
    assert op(min_agreement=0.6).check(gold_row(1, 1, answers=[], agreement=0.2)) == Reject(
        "low agreement", "agreement 20%")


def test_samples_sources_in_order():
    # answers list first, then samples[].answer, then parsed completions
    row = gold_row(3, 3, answers=[3, 4], samples=[{"answer": 3}], completions=["The answer is 3."])
    assert op().check(row) is None and row["consistency"]["agreement"] == 0.5
    row = gold_row(3, 3, answers="3", samples=[{"answer": 3}, {"answer": 4}, {"answer": 4}],
                   completions=["The answer is 3."])
    assert op().check(row) is None and row["consistency"]["agreement"] == 0.3333
    # samples that are not all objects (or empty) are skipped for completions
    row = gold_row(3, 3, samples=[{"answer": 3}, "x"], completions=["The answer is 3.", "The answer is 5.",
                                                                     "no", "The answer is 3."])
    assert op().check(row) is None and row["consistency"]["agreement"] == 0.5
    row = gold_row(3, 3, samples=[], completions=["The answer is 3."])
    assert op().check(row) is None and row["consistency"]["agreement"] == 1.0
    # nothing usable: no agreement
    row = gold_row(3, 3, samples=["x"], completions="The answer is 3.")
    assert op().check(row) is None and row["consistency"] == {"answer": 3, "gold": 3}


def test_custom_field_names():
    o = op(answer_field="pred", gold_field="label", answers_field="preds", min_agreement=0.5)
    row = {"pred": "b", "label": "B", "preds": ["b", "a", "a"]}
    assert o.check(row) == Reject("low agreement", "33% of 3 samples give gold 'B'")
    o = op(mode="majority", samples_field="runs", completion_field="text")
    row = {"text": "The answer is 4.", "runs": [{"answer": 4}, {"answer": 4}, {"answer": 5}]}
    assert o.check(row) is None
    assert row["consistency"] == {"answer": 4.0, "majority": 4, "agreement": 0.6667}
    o = op(mode="majority", completions_field="outs")
    row = {"outs": ["The answer is 8.", "The answer is 8.", "The answer is 9."]}
    assert o.check(row) is None and row["consistency"]["majority"] == 8.0


# -- majority mode --------------------------------------------------------------------------------

def test_majority_annotation_and_ties_go_to_the_first_seen():
    row = {"answers": ["7", 5, 7.0, 5]}
    assert op(mode="majority").check(row) is None
    # numeric (a sample is a number): "7" and 7.0 agree; tie 2-2 -> the first seen, as written in the samples
    assert row["consistency"] == {"answer": "7", "majority": "7", "agreement": 0.5}
    # text tie 2-2 ("b"/"B" and "a"/"A."): "b" is seen first
    assert op(mode="majority", kind="choice").check({"answers": [None, "b", "a", "A.", "B"]}) == Reject(
        "low agreement", "majority 'b' has 40% of 5 samples")
    row = {"answers": [None, "b", "a", "A.", "B"]}
    assert op(mode="majority", kind="choice", min_agreement=0.4).check(row) is None
    assert row["consistency"] == {"answer": "b", "majority": "b", "agreement": 0.4}


def test_majority_default_threshold_is_one_half():
    assert op(mode="majority").check({"answers": [1, 1, 2, 3]}) is None
    assert op(mode="majority").check({"answers": [1, 1, 2, 3, 4]}) == Reject(
        "low agreement", "majority 1 has 40% of 5 samples")
    assert op(mode="majority", min_agreement=0.4).check({"answers": [1, 1, 2, 3, 4]}) is None


def test_majority_threshold_is_met_within_1e9():
    row = {"answers": ["a", "b", "c", "d"]}
    assert op(mode="majority", kind="label", labels=["a"], min_agreement=0.250000001).check(dict(row)) is None
    assert op(mode="majority", kind="label", labels=["a"], min_agreement=0.250000003).check(dict(row)) == Reject(
        "low agreement", "majority 'a' has 25% of 4 samples")


def test_majority_numeric_kinds():
    # kind number: numeric strings agree as numbers
    row = {"answers": ["12", "12.0", "7"]}
    assert op(mode="majority", kind="number").check(row) is None
    assert row["consistency"] == {"answer": "12", "majority": "12", "agreement": 0.6667}
    # auto: a math row compares as numbers too
    row = {"kind": "math", "answers": ["12", "12.0", "7"]}
    assert op(mode="majority").check(row) is None and row["consistency"]["agreement"] == 0.6667
    # auto, all strings, not math: as text
    assert op(mode="majority").check({"answers": ["12", "12.0", "7"]}) == Reject(
        "low agreement", "majority '12' has 33% of 3 samples")
    # kind label: as text even when a sample is a number
    assert op(mode="majority", kind="label", labels=["x"]).check({"answers": ["12", "12.0", 12]}) == Reject(
        "low agreement", "majority '12' has 33% of 3 samples")


def test_majority_unreadable_samples_count_in_the_share():
    row = {"answers": [3, None, None, 3]}
    assert op(mode="majority").check(row) is None and row["consistency"]["agreement"] == 0.5
    assert op(mode="majority").check({"answers": [None, "!!", None]}) == Reject(
        "no answer", "none of 3 samples has a readable answer")


def test_majority_with_the_rows_own_answer():
    assert op(mode="majority").check({"answer": 7, "answers": [5, 5, 7]}) == Reject(
        "disagrees with majority", "answer 7, majority 5")
    row = {"answer": "5.0", "answers": [5, 5, 7]}
    assert op(mode="majority").check(row) is None
    assert row["consistency"] == {"answer": "5.0", "majority": 5, "agreement": 0.6667}
    # own answer unreadable while samples exist
    assert op(mode="majority").check({"answer": None, "answers": [5, 5, 7]}) == Reject(
        "no answer", "the row's own answer could not be read")
    assert op(mode="majority").check({"completion": "hmm\nhmm", "answers": [5, 5]}) == Reject(
        "no answer", "the row's own answer could not be read")


def test_majority_own_answer_alone():
    # no samples: the row's answer is its own majority
    row = {"answer": "7"}
    assert op(mode="majority").check(row) is None
    assert row["consistency"] == {"answer": "7", "majority": "7", "agreement": 1.0}
    row = {"completion": "The answer is 9."}
    assert op(mode="majority").check(row) is None
    assert row["consistency"] == {"answer": 9.0, "majority": 9.0, "agreement": 1.0}
    assert op(mode="majority").check({"answer": None, "answer_reason": "no answer cue"}) == Reject(
        "no answer", "no answer cue")
    assert op(mode="majority").check({"completion": ""}) == Reject("no answer", "empty text")


def test_majority_without_any_answer_field_is_a_field_problem():
    with pytest.raises(FieldProblem) as ei:
        op(mode="majority").check({"id": "r", "samples": []})
    assert (ei.value.field, ei.value.problem) == ("answers", "missing")
    with pytest.raises(FieldProblem) as ei:
        op(mode="majority", answers_field="votes").check({"id": "r"})
    assert ei.value.field == "votes"


def test_majority_from_completions():
    row = {"completions": ["The answer is 3.", "The answer is 3", "The answer is 4.", 17]}
    assert op(mode="majority").check(row) is None
    assert row["consistency"] == {"answer": 3.0, "majority": 3.0, "agreement": 0.5}


# -- report ---------------------------------------------------------------------------------------

def test_report_histogram_counts_each_row():
    o = op(mode="majority")
    assert o.report() == {}
    for answers in ([1, 1, 2], [1, 1, 2], [1, 1, 1], [1, 2, 3, 4]):
        o.check({"answers": answers})
    assert o.report() == {"agreement_histogram": {"0.2": 1, "0.7": 2, "1.0": 1}}


def test_report_empty_when_no_row_had_samples():
    o = op()
    o.check(gold_row(1, 1))
    o.check(gold_row(1, 2, answers=[1]))  # wrong answer: rejected before the agreement is counted
    assert o.report() == {}


def test_keys_round_numbers_to_six_decimals():
    # 1e-7 apart: one answer (rounded to 6 decimals), as numbers and as labels; 1e-5 apart: two
    for cfg in ({}, {"kind": "number"}, {"kind": "label", "labels": ["x"]}):
        row = {"answers": [1.0000001, 1.0, 2]}
        assert op(mode="majority", **cfg).check(row) is None, cfg
        assert row["consistency"] == {"answer": 1.0000001, "majority": 1.0000001, "agreement": 0.6667}
        assert op(mode="majority", **cfg).check({"answers": [1.00001, 1.0, 2]}) == Reject(
            "low agreement", "majority 1.00001 has 33% of 3 samples"), cfg


def test_gold_histogram_counts_rows_per_bucket():
    o = op()
    for answers in ([1, 1, 2], [1, 1, 3], [1, 2, 3, 4, 5], [1]):
        assert o.check(gold_row(1, 1, answers=answers)) is None
    assert o.report() == {"agreement_histogram": {"0.2": 1, "0.7": 2, "1.0": 1}}


def test_rows_agreement_threshold_is_met_within_1e9():
    assert op(min_agreement=0.250000001).check(gold_row(1, 1, agreement=0.25)) is None
    assert op(min_agreement=0.250000003).check(gold_row(1, 1, agreement=0.25)) == Reject(
        "low agreement", "agreement 25%")


def test_majority_is_the_most_common_not_the_first_readable():
    row = {"answers": [None, 7, 5, 5, "x"]}
    assert op(mode="majority", min_agreement=0.4).check(row) is None
    assert row["consistency"] == {"answer": 5, "majority": 5, "agreement": 0.4}
    row = {"answers": ["b", "a", "A"]}
    assert op(mode="majority").check(row) is None
    assert row["consistency"] == {"answer": "a", "majority": "a", "agreement": 0.6667}


def test_commas_in_numeric_text_are_removed_before_reading():
    # "12,5" reads as 125 (commas are dropped), not as 12
    assert op().check(gold_row(125, "12,5")) is None
    assert op().check(gold_row(12, "12,5")) == Reject("wrong answer", "answer 12, gold '12,5'")


def test_streaming_run_turns_field_problems_into_rejects_when_lenient():
    import asyncio

    async def go(strict: bool):
        o = Consistency(ConsistencyConfig(), RunContext(strict=strict, source="in.jsonl"))

        async def src():
            yield gold_row(1, 1)
            yield {"id": "g", "answer": 1}
            yield gold_row(2, 1)
        return [rej async for _, rej in o.run(src())]

    assert asyncio.run(go(False)) == [None, Reject("field 'gold' missing"), Reject("wrong answer", "answer 2, gold 1")]
    from synthkd.jsonl_io import InputError
    with pytest.raises(InputError) as ei:
        asyncio.run(go(True))
    assert ei.value.problems == [("in.jsonl: row id 'g': field 'gold': missing (needed by operator 'consistency'; "
                                  "use --lenient to reject such rows instead)")]


@pytest.mark.parametrize("gold", ["yes", "Yes", "true", True])
def test_boolean_kind_reads_yes_no_against_any_gold_spelling(gold) -> None:
    # issue 14: a yes/no task (StrategyQA-style) parses "the answer is yes" / "True." alike
    row = {"completion": "Birds can fly over rivers. So the answer is yes.", "gold": gold}
    assert op(kind="boolean").check(row) is None
    wrong = {"completion": "Birds cannot swim there. So the answer is False.", "gold": gold}
    assert isinstance(op(kind="boolean").check(wrong), Reject)
