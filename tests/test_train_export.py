"""Rows -> TRL dataset formats: every format reads back with datasets.load_dataset("json"); bad rows are
reported with file, line and field; the multitask weights are the documented ones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from synthkd.jsonl_io import InputError
from synthkd.train.export import (
    EXPLAIN_PREFIX,
    PREDICT_PREFIX,
    Fields,
    answer_text,
    build_preference_examples,
    build_sft_examples,
    export_rows,
    load_json_dataset,
    split_by_id,
    task_weights,
)
from train_fixtures import *  # noqa: F401,F403
from train_fixtures import TRAIN_ROWS, read_rows


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.train
@pytest.mark.parametrize("fmt", ["prompt-completion", "conversational", "messages"])
def test_each_sft_format_reads_back_with_load_dataset(tmp_path, fmt):
    out = tmp_path / f"{fmt}.jsonl"
    counts = export_rows(TRAIN_ROWS, out, fmt, mode="rationale", skip_invalid=True)
    ds = load_json_dataset(out)
    rows = read_rows(TRAIN_ROWS)
    usable = [r for r in rows if r["answer"] is not None]
    assert counts["examples_written"] == len(ds) == len(usable) == 63
    first = ds[0]
    if fmt == "prompt-completion":
        assert first["prompt"].startswith("### Input:\n" + usable[0]["input"])
        assert first["prompt"].endswith("### Response:\n")
        assert first["completion"] == usable[0]["rationale"] + "\nSo the answer is 42."
    elif fmt == "conversational":
        assert first["prompt"] == [{"role": "user", "content": usable[0]["input"]}]
        assert first["completion"][0]["role"] == "assistant"
        assert first["completion"][0]["content"].endswith("So the answer is 42.")
    else:
        assert [m["role"] for m in first["messages"]] == ["user", "assistant"]


@pytest.mark.train
def test_preference_format_standard_and_conversational(tmp_path):
    rows = [{"id": i, "question": f"What is {i} + 1?", "good": str(i + 1), "bad": str(i + 2)} for i in range(5)]
    src = _write(tmp_path / "prefs.jsonl", rows)
    f = Fields(prompt="question", chosen="good", rejected="bad")
    export_rows(src, tmp_path / "conv.jsonl", "preference", fields=f)
    export_rows(src, tmp_path / "plain.jsonl", "preference", fields=f, conversational=False)
    conv, plain = load_json_dataset(tmp_path / "conv.jsonl"), load_json_dataset(tmp_path / "plain.jsonl")
    assert conv[2]["prompt"] == [{"role": "user", "content": "What is 2 + 1?"}]
    assert conv[2]["chosen"] == [{"role": "assistant", "content": "3"}]
    assert conv[2]["rejected"] == [{"role": "assistant", "content": "4"}]
    assert plain[2]["prompt"].startswith("### Input:\nWhat is 2 + 1?") and plain[2]["chosen"] == "3"


def test_field_names_are_configurable(tmp_path):
    src = _write(tmp_path / "rows.jsonl", [{"uid": "a", "q": "Two plus two?", "why": "2 + 2 = 4.", "label": 4.0}])
    exs, skipped, used = build_sft_examples(src, "multitask",
                                            Fields(id="uid", input="q", rationale="why", answer="label"))
    assert [(e.id, e.task, e.prompt, e.completion) for e in exs] == [
        ("a", "predict", PREDICT_PREFIX + "Two plus two?", "4"),
        ("a", "explain", EXPLAIN_PREFIX + "Two plus two?", "2 + 2 = 4."),
    ]
    # `question` is one of the default input fallbacks, as rationale-method rows may use it
    src2 = _write(tmp_path / "rows2.jsonl", [{"id": 1, "question": "Q?", "answer": "yes"}])
    assert build_sft_examples(src2, "label")[0][0].prompt == "Q?"


@pytest.mark.train
def test_multitask_weights_follow_the_rationale_weight(tmp_path):
    assert task_weights(0.5) == {"predict": 1.0, "explain": 1.0}
    assert task_weights(0.3) == pytest.approx({"predict": 1.4, "explain": 0.6})
    assert task_weights(0.0) == {"predict": 2.0, "explain": 0.0}
    with pytest.raises(ValueError, match="rationale weight"):
        task_weights(1.5)
    exs, _, _ = build_sft_examples(TRAIN_ROWS, "multitask", rationale_weight=0.25, skip_invalid=True)
    assert {e.task: e.weight for e in exs} == {"predict": 1.5, "explain": 0.5}
    out = tmp_path / "mt.jsonl"
    export_rows(TRAIN_ROWS, out, "conversational", mode="multitask", rationale_weight=0.25, skip_invalid=True)
    ds = load_json_dataset(out)
    assert sorted(set(zip(ds["task"], ds["loss_weight"]))) == [("explain", 0.5), ("predict", 1.5)]


def test_bad_rows_name_file_line_and_field(tmp_path):
    src = _write(tmp_path / "bad.jsonl", [
        {"id": 1, "input": "ok", "rationale": "r", "answer": 3},
        {"id": 2, "rationale": "r", "answer": 3},                      # no input
        {"id": 3, "input": "x", "rationale": "  ", "answer": 3},       # empty rationale
        {"id": 4, "input": "x", "rationale": "r", "answer": None, "answer_reason": "no answer cue"},
        '["not", "an", "object"]',
        {"id": 1, "input": "dup", "rationale": "r", "answer": 1},      # duplicate id
        {"id": 7, "input": ["a list"], "rationale": "r", "answer": 1},  # wrong type
    ])
    with pytest.raises(InputError) as ei:
        build_sft_examples(src, "rationale")
    msg = str(ei.value)
    assert f"{src}:2: field 'input' / 'question' / 'prompt' / 'text': the input missing" in msg
    assert f"{src}:3: field 'rationale': the rationale is empty" in msg
    assert f"{src}:4: field 'answer': the answer is null (answer_reason: no answer cue)" in msg
    assert f"{src}:5: expected a JSON object, got list" in msg
    assert f"{src}:6: field 'id': duplicate id '1' (first on line 1)" in msg
    assert f"{src}:7: field 'input': the input must be a string, got list" in msg
    # label mode does not need a rationale: line 3 is fine there
    with pytest.raises(InputError) as ei:
        build_sft_examples(src, "label")
    assert ":3:" not in str(ei.value)


def test_empty_file_and_skip_invalid(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="no rows"):
        build_sft_examples(empty, "label")
    exs, skipped, used = build_sft_examples(TRAIN_ROWS, "label", skip_invalid=True)
    assert len(exs) == 63 and len(skipped) == 1 and "field 'answer'" in skipped[0]
    with pytest.raises(InputError, match=r"svamp_train64.jsonl:\d+: field 'answer'"):
        build_sft_examples(TRAIN_ROWS, "label")


def test_bad_preference_rows(tmp_path):
    src = _write(tmp_path / "p.jsonl", [
        {"prompt": "a", "chosen": "x", "rejected": "y"},
        {"prompt": "b", "chosen": "same", "rejected": "same"},
        {"prompt": "c", "chosen": "x"},
    ])
    with pytest.raises(InputError) as ei:
        build_preference_examples(src)
    assert f"{src}:2: fields 'chosen' and 'rejected': identical answers teach nothing" in str(ei.value)
    assert f"{src}:3: field 'rejected': the rejected answer missing" in str(ei.value)


def test_answer_text_and_split():
    assert (answer_text(42.0), answer_text(0.5), answer_text(" b "), answer_text(None), answer_text(True)) == \
        ("42", "0.5", "b", None, None)
    exs, _, _ = build_sft_examples(TRAIN_ROWS, "multitask", skip_invalid=True)
    train, held = split_by_id(exs, 0.25, seed=0)
    held_ids = {e.id for e in held}
    assert held_ids and not held_ids & {e.id for e in train}
    assert all(sum(e.id == i for e in held) == 2 for i in held_ids)  # both tasks of a row on one side
    assert split_by_id(exs, 0.25, seed=0)[1] == held  # deterministic


@pytest.mark.train
def test_export_cli(tmp_path, train_env):
    out = tmp_path / "x.jsonl"
    cmd = [sys.executable, "-m", "synthkd.commands.train", "train", "export", "-i", str(TRAIN_ROWS), "-o", str(out),
           "--format", "messages", "--mode", "label"]
    p = subprocess.run(cmd, env=train_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "field 'answer'" in p.stderr and not out.exists()
    p = subprocess.run(cmd + ["--skip-invalid"], env=train_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "examples_written 63" in p.stderr and len(load_json_dataset(out)) == 63
