"""Answer consistency on real PaLM-540B rationales (SVAMP with gold equations, CommonsenseQA choices),
checked against an independent computation; majority / agreement rules on rationale-shaped rows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_rows as clean
from conftest import cli_env, read_jsonl, run_cli
from synthkd.answers import extract_answer, numbers_equal, safe_eval_arithmetic

FIX = Path(__file__).resolve().parent / "fixtures" / "filters"
RECORDED = Path(__file__).resolve().parent / "fixtures" / "recorded"


def svamp_palm_rows() -> list[dict]:
    gold = [json.loads(x) for x in (FIX / "svamp_test.json").read_text().splitlines()]
    comps = json.loads((FIX / "svamp_test_palm_CoT.json").read_text())
    assert len(gold) == len(comps) == 200
    return [{"id": f"svamp-test-{i}", "input": g["input"], "completion": c, "label": g["label"]}
            for i, (g, c) in enumerate(zip(gold, comps))]


def test_svamp_palm_keeps_exactly_the_rows_whose_answer_is_gold(tmp_path):
    rows = svamp_palm_rows()
    # independent: parse each completion, evaluate each gold equation, compare
    expected = [r["id"] for r in rows
                if numbers_equal(extract_answer(r["completion"], "number").value, safe_eval_arithmetic(r["label"]))]
    funnel, out, rej = clean(tmp_path, rows, [{"op": "consistency", "gold_field": "label", "kind": "number"}])
    assert [r["id"] for r in out] == expected
    assert len(expected) == 156  # PaLM-540B few-shot CoT on SVAMP test: 78% (the paper reports ~70-80%)
    assert len(out) + len(rej) == 200 and not funnel.check_accounting()
    reasons = {r["reject_reason"] for r in rej}
    assert reasons == {"wrong answer", "no answer"}
    no_answer = [r for r in rej if r["reject_reason"] == "no answer"]
    assert len(no_answer) == sum(extract_answer(r["completion"], "number").value is None for r in rows) == 5
    wrong = next(r for r in rej if r["reject_reason"] == "wrong answer")
    assert "gold '(" in wrong["reject_detail"]
    assert all(r["consistency"]["gold"] == r["label"] for r in out)
    st = funnel.stages[1]
    assert st.reasons["wrong answer"] == 39 and len(st.examples["wrong answer"]) == 3


def test_cqa_choice_answers_against_gold_option_text(tmp_path):
    gold = [json.loads(x) for x in (RECORDED / "cqa_test_head100" / "gold.jsonl").read_text().splitlines()]
    comps = json.loads((RECORDED / "cqa_test_head100" / "completions.json").read_text())
    rows = [{"id": g["id"], "choices": g["choices"], "completion": c, "gold": g["answer"]} for g, c in zip(gold, comps)]
    expected = []
    for r in rows:
        v = extract_answer(r["completion"], "choice", choices=r["choices"]).value
        if v is not None and r["choices"][v] == r["gold"]:
            expected.append(r["id"])
    _, out, rej = clean(tmp_path, rows, [{"op": "consistency", "kind": "choice"}])
    assert [r["id"] for r in out] == expected
    assert 60 <= len(expected) <= 90 and len(out) + len(rej) == 100


def _rationale_row(rid, answer, gold, sample_answers, kind="math"):
    return {"id": rid, "kind": kind, "input": "q", "answer": answer, "gold": gold,
            "samples": [{"answer": a, "rationale": "..."} for a in sample_answers]}


def test_rationale_rows_gold_mode_with_min_agreement(tmp_path):
    rows = [
        _rationale_row("ok", 450, 450, [450, 450, 450.0, 12]),  # 75% agree with gold
        _rationale_row("lucky", 450, "( 10.0 * 45.0 )", [450, 12, 13, None]),  # gold as an equation; 25%
        _rationale_row("wrong", 12, 450, [12, 12, 12, 12]),
        _rationale_row("none", None, 450, [None, None, None, None]),
        _rationale_row("text", "wooded area", "Wooded Area.", ["wooded area", "zoo"], kind="choice"),
    ]
    _, out, rej = clean(tmp_path, rows, [{"op": "consistency", "min_agreement": 0.5}])
    assert [r["id"] for r in out] == ["ok", "text"]
    by = {r["id"]: r for r in rej}
    assert by["lucky"]["reject_reason"] == "low agreement" and "25% of 4" in by["lucky"]["reject_detail"]
    assert by["wrong"]["reject_reason"] == "wrong answer"
    assert by["none"]["reject_reason"] == "no answer"
    assert out[0]["consistency"]["agreement"] == 0.75


def test_majority_mode_self_consistency(tmp_path):
    rows = [
        {"id": "a", "answers": [5, 5, 5, 7]},  # 75% majority, no own answer
        {"id": "b", "answers": [5, 7, 9, 11]},  # 25%
        {"id": "c", "answer": 7, "answers": [5, 5, 5, 7]},  # own answer is not the majority
        {"id": "d", "answer": 5.0, "answers": ["5", "5.00", 5, None]},
        {"id": "e", "completions": ["So the answer is 3.", "The answer is 3", "The answer is 4."]},
    ]
    _, out, rej = clean(tmp_path, rows, [{"op": "consistency", "mode": "majority", "min_agreement": 0.6}])
    assert [r["id"] for r in out] == ["a", "d", "e"]
    assert {r["id"]: r["reject_reason"] for r in rej} == {"b": "low agreement", "c": "disagrees with majority"}
    assert out[2]["consistency"]["majority"] == 3.0 and out[2]["consistency"]["agreement"] == pytest.approx(2 / 3, abs=1e-3)


def test_rows_from_generate_rationales_replayed_on_palm(tmp_path):
    """The real hand-off: `synthkd generate rationales` (replaying PaLM's SVAMP test completions) writes
    rows with answer/gold/samples; the consistency filter keeps exactly the independently correct ones."""
    layout = tmp_path / "data" / "svamp"
    (layout / "llm").mkdir(parents=True)
    shutil.copy(FIX / "svamp_test.json", layout / "svamp_test.json")
    shutil.copy(FIX / "svamp_test_palm_CoT.json", layout / "llm" / "test_CoT_0.json")
    conv = subprocess.run([sys.executable, "-m", "synthkd.data_tools.rationales_replay", "--dataset", "svamp", "--split",
                           "test", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=cli_env())  # the repo's synthkd, not another one
    assert conv.returncode == 0, conv.stderr
    gen = run_cli("generate", "rationales", "--input", str(tmp_path / "svamp_test.input.jsonl"), "--output",
                  str(tmp_path / "rat.jsonl"), "--kind", "math", "--n-demos", "0",
                  "--teacher", f"replay:{tmp_path / 'svamp_test.recorded.jsonl'}")
    assert gen.returncode == 0, gen.stderr
    (tmp_path / "c.yaml").write_text("- op: consistency\n")
    res = run_cli("clean", "run", "--input", str(tmp_path / "rat.jsonl"), "--config", str(tmp_path / "c.yaml"),
                  "--output", str(tmp_path / "clean.jsonl"))
    assert res.returncode == 0, res.stderr
    rows = svamp_palm_rows()
    expected = {i for i, r in enumerate(rows)
                if numbers_equal(extract_answer(r["completion"], "number").value, safe_eval_arithmetic(r["label"]))}
    kept = read_jsonl(tmp_path / "clean.jsonl")
    order = [r["id"] for r in read_jsonl(tmp_path / "svamp_test.input.jsonl")]
    assert {order.index(r["id"]) for r in kept} == expected and len(kept) == 156


# audit mutant 8: numbers compare with numbers_equal's defaults (rel_tol 1e-6, abs_tol 1e-9): a float
# printing difference passes, a near miss does not (a 2% tolerance would keep 1001 for 1000)
@pytest.mark.parametrize(
    ("answer", "gold", "kept"),
    [
        (1000, 1000, True),
        (1000.0000001, "1000", True),  # float noise: relative 1e-10
        (1001, 1000, False),  # 0.1% off
        (1000.01, 1000, False),  # 1e-5 off: above the 1e-6 relative tolerance
        (0.3333333333, "1/3", True),
        (0.333, "1/3", False),
        ("0.333", "( 1.0 / 3.0 )", False),
        (1e-10, 0, True),  # within abs_tol 1e-9
        (1e-7, 0, False),
        (-5, 5, False),
    ],
)
def test_numeric_gold_equality_is_tight(tmp_path, answer, gold, kept):
    rows = [{"id": "r", "kind": "math", "input": "q", "answer": answer, "gold": gold}]
    _, out, rej = clean(tmp_path, rows, [{"op": "consistency"}])
    assert (len(out), len(rej)) == ((1, 0) if kept else (0, 1)), (answer, gold)
    if not kept:
        assert rej[0]["reject_reason"] == "wrong answer"


# audit mutant 9: drop_hedged drops an answer that offers alternatives (with a reason) only when set
def test_drop_hedged_option(tmp_path):
    choices = ["aquarium", "lake", "sea", "river", "pond"]
    rows = [
        {"id": "hedged-choice", "kind": "choice", "choices": choices, "gold": "pond",
         "completion": "Fish live in water. So the answer is either (a) aquarium or (e) pond."},
        {"id": "hedged-number", "kind": "math", "gold": 15,
         "completion": "Either way. So the answer is (28 - 13) and (28 - 15)."},
        {"id": "plain", "kind": "math", "gold": 15, "completion": "28 - 13 = 15. So the answer is 15."},
    ]
    assert all(extract_answer(r["completion"], "number" if r["kind"] == "math" else "choice",
                              choices=r.get("choices")).hedged for r in rows[:2])
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    _, out, rej = clean(tmp_path / "off", rows, [{"op": "consistency"}])
    assert [r["id"] for r in out] == ["hedged-choice", "hedged-number", "plain"] and rej == []
    _, out, rej = clean(tmp_path / "on", rows, [{"op": "consistency", "drop_hedged": True}])
    assert [r["id"] for r in out] == ["plain"]
    assert {r["id"]: (r["reject_reason"], r["reject_detail"]) for r in rej} == {
        "hedged-choice": ("no answer", "hedged answer"), "hedged-number": ("no answer", "hedged answer")}
