"""DPO with each reference-model option, and SFT followed by DPO, on preference rows built from real SVAMP rows."""

from __future__ import annotations

import json
import math

import pytest

# a [train] module (torch at module level): skipped whole where the extra is not installed
torch = pytest.importorskip("torch")

from synthkd.jsonl_io import InputError
from synthkd.train.dpo import DPOOptions, run_dpo
from synthkd.train.student import TRAIN_RECORD, load_student
from train_fixtures import *  # noqa: F401,F403
from train_fixtures import TRAIN_ROWS, quiet_settings, read_rows

pytestmark = pytest.mark.train  # trains DPO students

LN2 = math.log(2)


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    """chosen = the gold number, rejected = a wrong one (the teacher's when it was wrong, else gold + 7)."""
    path = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    with open(path, "w") as f:
        for r in read_rows(TRAIN_ROWS)[:32]:
            gold = int(r["gold"]) if float(r["gold"]).is_integer() else r["gold"]
            wrong = r["answer"] if r["answer"] is not None and r["answer"] != r["gold"] else gold + 7
            wrong = int(wrong) if float(wrong).is_integer() else wrong
            f.write(json.dumps({"id": r["id"], "question": r["input"], "chosen": str(gold), "rejected": str(wrong)}) + "\n")
    return path


def _dpo(student, prefs, out, **kw):
    settings = quiet_settings(max_steps=kw.pop("steps", 8), logging_steps=1, learning_rate=kw.pop("lr", 3e-3),
                              lora=kw.pop("lora", False), lora_r=4, lora_alpha=8)
    return run_dpo(DPOOptions(student=str(student), input=prefs, output=out, settings=settings, **kw))


def test_implicit_reference_is_a_frozen_copy(label_student, prefs, tmp_path):
    rec = _dpo(label_student, prefs, tmp_path / "imp", beta=0.1)
    m = rec["metrics"]
    assert m["train_loss_first"] == pytest.approx(LN2, abs=1e-4)  # policy == reference at step 0
    assert m["train_loss_last"] < LN2 - 0.02 and m["rewards/margins_last"] > 0
    assert rec["reference"]["mode"] == "implicit" and str(label_student) in rec["reference"]["model"]
    assert rec["training"]["beta"] == 0.1 and rec["training"]["loss_type"] == ["sigmoid"]
    before, after = load_student(label_student).model.state_dict(), load_student(tmp_path / "imp").model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    data = json.loads((tmp_path / "imp" / "data" / "train.jsonl").read_text().splitlines()[0])
    assert data["prompt"][0]["role"] == "user" and data["chosen"][0]["role"] == "assistant"


def test_explicit_reference_model(label_student, tiny_student, prefs, tmp_path):
    """A reference that differs from the policy gives a non-zero implicit reward at step 0."""
    rec = _dpo(label_student, prefs, tmp_path / "exp", ref="explicit", ref_model=str(tiny_student), steps=4,
               loss_type=["ipo"], beta=0.5)
    assert abs(rec["metrics"]["train_loss_first"] - LN2) > 0.01
    assert rec["reference"] == {"mode": "explicit", "model": str(tiny_student)}
    assert rec["training"]["loss_type"] == ["ipo"] and rec["training"]["beta"] == 0.5


def test_lora_reference_is_the_policy_with_adapters_disabled(label_student, prefs, tmp_path):
    rec = _dpo(label_student, prefs, tmp_path / "lora", ref="lora", lr=2e-2)
    m = rec["metrics"]
    assert m["train_loss_first"] == pytest.approx(LN2, abs=1e-4)  # fresh adapter (B = 0): policy == reference
    assert m["train_loss_last"] < LN2 and rec["training"]["lora"] is True
    assert rec["reference"]["model"] == "policy with adapters disabled"
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").exists()
    base = load_student(label_student).model.state_dict()
    merged = load_student(tmp_path / "lora").model.state_dict()
    assert any(not torch.equal(base[k], merged[k]) for k in base)  # the merged adapter changed the model
    assert all(torch.equal(base[k], merged[k]) for k in base if "norm" in k)  # ...only where LoRA sits


def test_sft_then_dpo(tiny_student, prefs, tmp_path):
    out = tmp_path / "both"
    rec = run_dpo(DPOOptions(student=str(tiny_student), input=prefs, output=out, sft_input=TRAIN_ROWS, sft_mode="multitask",
                             settings=quiet_settings(max_steps=5, logging_steps=1)))
    assert (out / "sft" / TRAIN_RECORD).exists() and rec["policy_start"] == str(out / "sft")
    assert rec["sft_stage"]["mode"] == "multitask" and rec["sft_stage"]["metrics"]["global_steps"] == 5
    assert str(out / "sft") in rec["reference"]["model"]  # the reference is the SFT model, not the raw student
    assert rec["metrics"]["train_loss_first"] == pytest.approx(LN2, abs=1e-4)
    # the multitask student's inference prefix reaches the DPO prompts and the final record
    first = json.loads((out / "data" / "train.jsonl").read_text().splitlines()[0])
    assert first["prompt"][0]["content"].startswith("predict: ") and rec["inference_prefix"] == "predict: "
    assert load_student(out).inference_prefix == "predict: "


def test_bad_preference_rows_and_options(label_student, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: fields 'chosen' and 'rejected'"):
        _dpo(tmp_path / "no-student", bad, tmp_path / "x")  # the rows are checked before the student is loaded
    with pytest.raises(InputError, match="--ref explicit needs --ref-model"):
        _dpo(label_student, bad, tmp_path / "y", ref="explicit")


def test_config_with_student_tiny_builds_one_and_runs(prefs, tmp_path):
    # the flat DPOConfig is the Python API too: student "tiny" is built from the rows' texts next to the
    # output (as `synthkd train dpo --student tiny` does), DPO's own defaults apply unless given
    from synthkd.train.dpo import DPOConfig

    cfg = DPOConfig(student="tiny", input=prefs, output=tmp_path / "d", max_steps=1, batch_size=4, max_length=128,
                    learning_rate=1e-3, save_steps=0, logging_steps=1)
    assert DPOConfig(student="x", input=prefs, output=tmp_path).epochs == 1.0
    rec = run_dpo(cfg)
    assert rec["metrics"]["global_steps"] == 1
    assert (tmp_path / "d.tiny-student" / "config.json").exists() and (tmp_path / "d" / TRAIN_RECORD).exists()
