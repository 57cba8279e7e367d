"""Parsing and checking the teacher's new exercises (LLM2LLM step) — pure functions, no teacher."""

from __future__ import annotations

from synthkd.methods.similar_exercises import exercise_rows, normalize_question, parse_exercises, solved_row
from synthkd.teachers.base import TeacherRequest, TeacherResult, Usage

REPLY = """Here are two new exercises:

Exercise 1: Lena has 3 jars with 7 shells in each. Lena gives away 4 shells.
How many shells does Lena have now?
Answer: 17

**Exercise 2:** Omar had 12 cards. Then Omar bought 2 packs of cards with 5 cards in each. How many cards does Omar have in total?
**Answer:** 22
"""


def _result(text: str, ok: bool = True) -> TeacherResult:
    req = TeacherRequest(key="k", messages=[{"role": "user", "content": "x"}])
    return TeacherResult(request=req, text=text if ok else None, finish_reason="stop", usage=Usage(10, 20),
                         cost_usd=None, cached=False, model="m", attempts=1, error=None if ok else "boom")


def test_parse_numbered_blocks_multiline_and_bold():
    got = parse_exercises(REPLY)
    assert [g["index"] for g in got] == [1, 2]
    assert got[0]["question"] == ("Lena has 3 jars with 7 shells in each. Lena gives away 4 shells. "
                                  "How many shells does Lena have now?")
    assert got[0]["answer_text"] == "17"
    assert got[1]["question"].startswith("Omar had 12 cards.") and got[1]["answer_text"] == "22"


def test_parse_missing_answer_and_no_blocks():
    got = parse_exercises("Exercise 1: Tom has 2 coins. How many coins?\n\nExercise 2: Zoe has 4 plums.\nAnswer: 4")
    assert got[0]["answer_text"] is None and got[1]["answer_text"] == "4"
    assert parse_exercises("I cannot help with that.") == []


def test_rows_drop_copies_repeats_non_numbers_and_extras_with_reasons():
    text = ("Exercise 1: Tom has 2 coins. How many coins?\nAnswer: 2\n"
            "Exercise 2: tom has 2 coins how many coins\nAnswer: 2\n"          # repeat (normalized)
            "Exercise 3: Ava has 5 books. How many books?\nAnswer: a lot\n"   # not a number
            "Exercise 4: Mia has 9 pens. How many pens?\nAnswer: 9\n"         # copy of a held-out question
            "Exercise 5: Kai has 1 card. How many cards?\nAnswer: 1\n")       # beyond m
    known = {normalize_question("Mia has 9 pens. How many pens?"): "held-out h7"}
    seen: dict[str, str] = {}
    rows = exercise_rows("p3", 2, _result(text), 4, known, seen)
    by_id = {r["id"]: r for r in rows}
    assert by_id["p3#r2#x1"]["answer"] == 2 and "reject_reason" not in by_id["p3#r2#x1"]
    assert by_id["p3#r2#x2"]["reject_reason"] == "repeat of exercise p3#r2#x1"
    assert "not a number" in by_id["p3#r2#x3"]["reject_reason"]
    assert by_id["p3#r2#x4"]["reject_reason"] == "copy of an existing question (held-out h7)"
    assert "1 extra ignored" in by_id["p3#r2#x+"]["reject_reason"]
    assert all(r["source_id"] == "p3" and r["round"] == 2 for r in rows)
    # the round-wide repeat check spans replies: another mistake's identical exercise is a repeat too
    again = exercise_rows("p4", 2, _result("Exercise 1: Tom has 2 coins. How many coins?\nAnswer: 2"), 4, known, seen)
    assert again[0]["reject_reason"] == "repeat of exercise p3#r2#x1"
    assert "teacher error" in exercise_rows("p5", 2, _result("", ok=False), 4, known, seen)[0]["reject_reason"]
    assert "no exercise" in exercise_rows("p6", 2, _result("Sure!"), 4, known, seen)[0]["reject_reason"]


def test_solved_row_keeps_only_agreeing_solutions():
    ex = {"id": "p3#r2#x1", "source_id": "p3", "round": 2, "question": "Tom has 2 coins. How many coins?", "answer": 2}
    ok = solved_row(ex, {"id": ex["id"], "rationale": "Tom has 2 coins.", "answer": 2.0, "text": "t"})
    assert ok["answer"] == 2.0 and ok["input"] == ex["question"] and ok["origin"] == "similar"
    bad = solved_row(ex, {"id": ex["id"], "rationale": "r", "answer": 3, "text": "t"})
    assert bad["reject_reason"].startswith("the teacher's solution does not reach the exercise's answer (3 != 2)")
    none = solved_row(ex, {"id": ex["id"], "rationale": "r", "answer": None, "answer_reason": "no cue"})
    assert none["reject_reason"] == "no answer in the teacher's solution: no cue"
