"""``synthkd eval``: accuracy / macro-F1 / per-label / mistakes / teacher comparison, on sets whose right
answers are known exactly (a student that memorised its rows, with some gold labels deliberately flipped)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction

import pytest

from synthkd.answers import numbers_equal
from synthkd.jsonl_io import InputError
from synthkd.train.common import TrainSettings
from synthkd.train.evaluate import EvalOptions, gold_value, run_eval, score
from synthkd.train.sft import SFTOptions, run_sft
from train_fixtures import *  # noqa: F401,F403
from train_fixtures import TEST_ROWS, read_rows

LABELS = ["positive", "negative", "neutral"]
ROWS = [("the apples were fresh and sweet", "positive"), ("the bus was late again", "negative"),
        ("the meeting is at noon", "neutral"), ("a lovely garden full of flowers", "positive"),
        ("the toy broke on the first day", "negative"), ("the shop sells pencils", "neutral"),
        ("she won the game and smiled", "positive"), ("the cake was burnt", "negative")]
FLIPPED = {"r1": "positive", "r2": "negative"}  # gold changed on two rows: the memorised answers become wrong


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def memorised(tmp_path_factory, tiny_student):
    """A student trained until it answers its 8 training rows exactly (checked below, greedy decoding)."""
    d = tmp_path_factory.mktemp("mem")
    rows = _write(d / "rows.jsonl", [{"id": f"r{i}", "input": t, "answer": lab} for i, (t, lab) in enumerate(ROWS)])
    run_sft(SFTOptions(student=str(tiny_student), input=rows, output=d / "student", mode="label",
                       settings=TrainSettings(max_steps=60, learning_rate=5e-3, batch_size=8, logging_steps=10,
                                              save_steps=10_000, max_length=128)))
    return d / "student"


def _eval_rows(tmp_path, flipped=None):
    flipped = flipped or {}
    return _write(tmp_path / "eval.jsonl", [
        {"id": f"r{i}", "text": t, "gold": flipped.get(f"r{i}", lab), "teacher": "So the answer is positive."}
        for i, (t, lab) in enumerate(ROWS)
    ])


@pytest.mark.train
def test_accuracy_on_a_set_with_known_answers(memorised, tmp_path):
    rep = run_eval(EvalOptions(student=str(memorised), input=_eval_rows(tmp_path), kind="label", labels=LABELS,
                               fields=_fields("text")))
    assert rep["metrics"]["accuracy"] == 1.0 and rep["metrics"]["macro_f1"] == 1.0 and rep["mistakes"] == 0
    assert rep["prompt"]["decoding"] == "greedy" and rep["prompt"]["max_new_tokens"] == 32  # label-mode default


@pytest.mark.train
def test_flipped_golds_give_the_expected_scores_mistakes_and_teacher_line(memorised, tmp_path):
    out = tmp_path / "out"
    rep = run_eval(EvalOptions(student=str(memorised), input=_eval_rows(tmp_path, FLIPPED), kind="label",
                               labels=LABELS, fields=_fields("text"), teacher_field="teacher", out_dir=out))
    m = rep["metrics"]
    assert (m["correct"], m["rows"], m["accuracy"]) == (6, 8, 0.75)
    # by hand: positive P=3/3 R=3/4, negative P=2/3 R=2/3, neutral P=1/2 R=1/1
    f1 = [Fraction(2 * 3, 3 + 4), Fraction(2, 3), Fraction(2, 3)]
    assert m["macro_f1"] == pytest.approx(float(sum(f1) / 3))
    assert m["per_label"]["positive"] == {"support": 4, "predicted": 3, "correct": 3, "precision": 1.0,
                                          "recall": 0.75, "f1": pytest.approx(6 / 7)}
    assert m["per_label"]["neutral"]["support"] == 1 and m["per_label"]["neutral"]["predicted"] == 2
    assert rep["teacher"]["accuracy"] == 0.5  # the teacher said "positive" everywhere; 4 golds are positive
    assert rep["comparison"] == ("student 75.0% vs teacher 50.0% on the same 8 rows "
                                 "(+25.0 points; student/teacher = 1.50)")
    mistakes = [json.loads(line) for line in (out / "mistakes.jsonl").read_text().splitlines()]
    assert {r["id"]: (r["gold_answer"], r["student_answer"], r["mistake"]) for r in mistakes} == {
        "r1": ("positive", "negative", "wrong answer"), "r2": ("negative", "neutral", "wrong answer")}
    assert mistakes[0]["text"] == ROWS[1][0] and mistakes[0]["student_output"] == "negative"  # the row, plus output
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["accuracy"] == 0.75 and len((out / "predictions.jsonl").read_text().splitlines()) == 8
    md = (out / "report.md").read_text()
    assert "| accuracy | 75.0% (6/8) |" in md and "| positive | 4 | 3 | 3 | 1.000 | 0.750 | 0.857 |" in md
    assert "| teacher accuracy (same rows) | 50.0% (4/8) |" in md
    # record_in_card rewrites the model's card and record: on a copy, so the module's shared student is
    # the same for every test whatever the order
    own = tmp_path / "memorised"
    shutil.copytree(memorised, own)
    shared_record = (memorised / "synthkd_train.json").read_bytes()
    run_eval(EvalOptions(student=str(own), input=_eval_rows(tmp_path, FLIPPED), kind="label", labels=LABELS,
                         fields=_fields("text"), record_in_card=True))
    card = (own / "README.md").read_text()
    assert "### Evaluation on" in card and "| accuracy | 75.0% (6/8) |" in card
    assert json.loads((own / "synthkd_train.json").read_text())["evaluations"][-1]["accuracy"] == 0.75
    assert (memorised / "synthkd_train.json").read_bytes() == shared_record


@pytest.mark.train
def test_labels_the_student_never_produces_are_reported_not_a_crash(memorised, tmp_path):
    rows = _write(tmp_path / "e.jsonl", [{"id": i, "input": t, "gold": "yes" if i % 2 else "no"} for i, (t, _) in enumerate(ROWS)])
    rep = run_eval(EvalOptions(student=str(memorised), input=rows, kind="label", labels=["yes", "no"]))
    assert rep["metrics"]["accuracy"] == 0.0 and rep["metrics"]["answered"] == 0
    assert "none of the 8 student outputs matched the labels ['yes', 'no']" in rep["warnings"][0]
    assert rep["metrics"]["no_answer_reasons"] == {"no label matched": 8}
    assert "> warning: none of the 8" in rep["markdown"]


@pytest.mark.train
def test_number_kind_on_svamp_with_equation_golds(label_student, tmp_path):
    rows = read_rows(TEST_ROWS)
    src = _write(tmp_path / "svamp.jsonl", [{**r, "gold": g["label"]} for r, g in
                                            zip(rows, [json.loads(x) for x in _gold_lines()])])
    rep = run_eval(EvalOptions(student=str(label_student), input=src, kind="number", teacher_field="answer"))
    m = rep["metrics"]
    # the accuracy recomputed from the predictions: a number answer equal to the equation gold's value
    right = [p["student_answer"] is not None and numbers_equal(p["student_answer"], r["gold"])
             for p, r in zip(rep["_predictions"], rows)]
    assert m["rows"] == 32 and m["accuracy"] == sum(right) / 32
    teacher_right = sum(abs(r["answer"] - r["gold"]) < 1e-6 for r in rows)  # equation golds parse to the same numbers
    assert rep["teacher"]["correct"] == teacher_right == 24
    preds = rep["_predictions"]
    assert sum(p["correct"] for p in preds) == m["correct"]
    assert all(p["gold_answer"] == pytest.approx(r["gold"]) for p, r in zip(preds, rows))


def _gold_lines():
    from pathlib import Path

    p = Path(__file__).parent / "fixtures" / "recorded" / "svamp_test_head100" / "gold.jsonl"
    return p.read_text().splitlines()[:32]


def test_score_and_gold_parsing_units():
    assert gold_value("( 84.0 / 2.0 )", "number") == (42.0, None)
    assert gold_value("1,200", "number") == (1200.0, None)
    assert gold_value("C", "choice", choices=["a", "b", "c"]) == (2, None)
    assert gold_value("wooded area", "choice", choices=["zoo", "wooded area"]) == (1, None)
    assert gold_value(1, "label", labels=["entailment", "neutral", "contradiction"]) == ("neutral", None)
    assert gold_value("maybe", "label", labels=["yes", "no"])[1] == "'maybe' is not one of the labels ['yes', 'no']"
    m = score([1.0, 2.0, 3.0, 4.0], [1.0, 2.0000000001, None, 5.0], "number", reasons=[None, None, "empty text", None])
    assert (m["correct"], m["answered"], m["no_answer_reasons"]) == (2, 3, {"empty text": 1})
    c = score([0, 1, 1, 2], [0, 1, 2, None], "choice")
    assert c["accuracy"] == 0.5 and set(c["per_label"]) == {"(a)", "(b)", "(c)"}
    assert c["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


@pytest.mark.train
def test_bad_eval_input(memorised, tmp_path):
    src = _write(tmp_path / "bad.jsonl", [{"id": 1, "input": "x"}, {"id": 2, "gold": "positive"},
                                          {"id": 3, "input": "y", "gold": "great"}])
    with pytest.raises(InputError) as ei:
        run_eval(EvalOptions(student=str(memorised), input=src, kind="label", labels=LABELS))
    msg = str(ei.value)
    assert f"{src}:1: field 'gold': the gold answer missing" in msg
    assert f"{src}:2: field 'input' / 'question' / 'prompt' / 'text': the input missing" in msg
    assert f"{src}:3: field 'gold': 'great' is not one of the labels" in msg
    with pytest.raises(InputError, match="--kind label needs --labels"):
        run_eval(EvalOptions(student=str(memorised), input=src, kind="label"))


@pytest.mark.train
def test_eval_cli(memorised, tmp_path, train_env):
    rows = _eval_rows(tmp_path, FLIPPED)
    cmd = [sys.executable, "-m", "synthkd.commands.train", "eval", "-s", str(memorised), "-i", str(rows),
           "--kind", "label", "--labels", ",".join(LABELS), "--input-field", "text", "--teacher-field", "teacher",
           "--out", str(tmp_path / "o"), "--batch-size", "3"]
    p = subprocess.run(cmd, env=train_env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| accuracy | 75.0% (6/8) |" in p.stdout
    assert "done: 8 rows, accuracy 75.0%, macro-F1 0.730, 2 mistakes" in p.stderr
    assert "student 75.0% vs teacher 50.0%" in p.stderr
    assert (tmp_path / "o" / "mistakes.jsonl").exists()


def _fields(input_name):
    from synthkd.train.export import Fields

    return Fields(input=input_name)


def test_boolean_kind_gold_and_student_answers_use_the_teacher_parser():
    # issue 14 point 4: a student's yes/no answer is read by the same extract_answer as the teacher's
    from synthkd.train.evaluate import KINDS, gold_value, predicted_value, same

    assert "boolean" in KINDS
    assert gold_value("Yes", "boolean") == (True, None) and gold_value(False, "boolean") == (False, None)
    assert gold_value("maybe", "boolean")[0] is None
    for text in ("So the answer is yes.", r"The answer is $\boxed{\text{yes}}$.", "**Final answer:** True"):
        v, _ = predicted_value(text, "boolean")
        assert same(v, True, "boolean"), text
    # a student trained on JSON answers, scored on a plain-text teacher format and back, is read alike
    assert predicted_value('{"reasoning": "3 + 4 = 7", "answer": "7"}', "number")[0] == 7.0
    assert predicted_value("3 + 4 = 7. So Ana ends up with 7 apples.", "number")[0] == 7.0


@pytest.mark.train
def test_out_of_scope_class_from_the_label_file_in_scope_accuracy_oos_recall_and_abstain(memorised, tmp_path):
    """The label file's out_of_scope class: gold outside the label list counts as out of scope (no error),
    metrics are CLINC150's (in-scope accuracy, out-of-scope recall), and abstain_below turns answers the
    student is unsure of into out-of-scope predictions."""
    labels = tmp_path / "labels.yaml"
    labels.write_text("task: sentiment of a sentence\nlabels:\n  positive: good things\n  negative: bad things\n"
                      "out_of_scope:\n  name: neutral\n  description: neither good nor bad\n")
    rows = [{"id": f"r{i}", "text": t, "gold": lab} for i, (t, lab) in enumerate(ROWS)]
    rows.append({"id": "x", "text": ROWS[2][0], "gold": "weather_report"})  # outside the list: out of scope
    inp = _write(tmp_path / "e.jsonl", rows)
    rep = run_eval(EvalOptions(student=str(memorised), input=inp, kind="label", labels=[str(labels)],
                               fields=_fields("text")))
    m = rep["metrics"]
    assert rep["labels"] == ["positive", "negative", "neutral"] and rep["out_of_scope"] == "neutral"
    assert (m["in_scope_rows"], m["oos_rows"]) == (6, 3)  # 2 neutral rows + the weather_report row
    assert m["in_scope_accuracy"] == 1.0 and m["oos_recall"] == 1.0 and m["oos_precision"] == 1.0
    assert "| in-scope accuracy | 100.0% (6 rows) |" in rep["markdown"]
    assert "| out-of-scope recall | 100.0% (3 rows) |" in rep["markdown"]
    # a threshold no answer reaches: everything abstains -> in-scope accuracy 0, recall 1
    rep = run_eval(EvalOptions(student=str(memorised), input=inp, kind="label", labels=[str(labels)],
                               fields=_fields("text"), abstain_below=1.0))
    assert rep["metrics"]["in_scope_accuracy"] == 0.0 and rep["metrics"]["oos_recall"] == 1.0
    assert rep["metrics"]["abstained_below_threshold"] == 9
    probs = [p["student_probability"] for p in rep["_predictions"]]
    assert all(0 < p < 1 for p in probs)
    # a threshold below every answer's probability: nothing abstains, same as without
    rep = run_eval(EvalOptions(student=str(memorised), input=inp, kind="label", labels=[str(labels)],
                               fields=_fields("text"), abstain_below=min(probs) / 2))
    assert rep["metrics"]["in_scope_accuracy"] == 1.0 and rep["metrics"]["abstained_below_threshold"] == 0
    # without an out-of-scope class a gold outside the labels is still an input error
    with pytest.raises(InputError, match="weather_report"):
        run_eval(EvalOptions(student=str(memorised), input=inp, kind="label", labels=LABELS, fields=_fields("text")))
