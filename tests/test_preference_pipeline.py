"""pipelines/preference_distillation.yaml end to end through the real CLI, shrunk with --set: the
simulated arithmetic teacher replayed from data/arithmetic/, SFT of a tiny student, teacher-vs-student
pairs where that student answers locally, DPO from the SFT model, eval — and a rerun that skips all."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, cli_env, eval_accuracy, read_jsonl, synthkd_cmd
from synthkd.answers import numbers_equal, strip_continuation

PIPELINE = REPO / "pipelines" / "preference_distillation.yaml"
DATA = REPO / "data" / "arithmetic"
STAGES = ["rationales", "clean", "student", "preferences", "dpo", "eval_sft", "eval"]


def _slice(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return dst


def _run(*args: str) -> subprocess.CompletedProcess:
    env = cli_env()
    for k in ("SYNTHKD_TEACHER", "SYNTHKD_STUDENT"):
        env.pop(k, None)
    return subprocess.run(synthkd_cmd(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def _small(tmp: Path) -> list[str]:
    train = _slice(DATA / "train.jsonl", tmp / "train.jsonl", 120)
    test = _slice(DATA / "test.jsonl", tmp / "test.jsonl", 40)
    sets = [
        f"run_dir={tmp / 'runs'}",
        f"stages.rationales.input={train}",
        f"stages.preferences.input={train}",
        f"stages.eval_sft.input={test}",
        f"stages.eval.input={test}",
        "stages.student.options.epochs=3",
        "stages.student.options.tiny={hidden_size: 64, layers: 1, heads: 2, vocab_size: 400}",
        "stages.preferences.options.max_tokens=64",
        "stages.dpo.options.max_length=160",
    ]
    return [a for s in sets for a in ("--set", s)]


@pytest.mark.train
def test_preference_pipeline_end_to_end_and_rerun_skips(tmp_path):
    args = ["run", str(PIPELINE), *_small(tmp_path)]
    first = _run(*args)
    assert first.returncode == 0, first.stderr[-4000:]
    run_dir = tmp_path / "runs" / "preference-distillation"
    m = json.loads((run_dir / "manifest.json").read_text())
    st = m["stages"]
    assert list(st) == STAGES
    assert all(st[n]["status"] == "done" for n in STAGES)

    # pairs: teacher right (its recorded completion), the SFT student wrong, every input row accounted for
    train = {r["id"]: r for r in read_jsonl(tmp_path / "train.jsonl")}
    recorded = {r["question"]: r["completion"] for r in read_jsonl(DATA / "train.recorded.jsonl")}
    pairs = read_jsonl(run_dir / "preferences.jsonl")
    rejects = read_jsonl(run_dir / "preferences.rejects.jsonl")
    pc = st["preferences"]["counts"]
    assert pc["pairs"] == len(pairs) > 0
    assert pc["rows_in"] == len(train) == len(pairs) + len(rejects)
    assert pc["models"]["student"]["model"] == f"local:{run_dir / 'student'}"
    assert pc["models"]["student"]["requests"] == len(train)
    assert all(r["reject_reason"].split(":")[0] in {"teacher wrong", "agree", "student empty"} for r in rejects)
    for p in pairs:
        src = train[p["source_id"]]
        assert p["id"] == f"{src['id']}#pair"
        assert p["prompt"] == src["question"]
        # the teacher's recorded text, with a run-on next exemplar ("Q: ...") cut off
        assert p["chosen"] == strip_continuation(recorded[src["question"]]).strip() and "\nQ:" not in p["chosen"]
        assert p["rejected"].strip() and p["rejected"] != p["chosen"]
        assert p["chosen_answer"] == src["answer"] != p["rejected_answer"]
        assert p["method"] == "teacher-vs-student"
    # the teacher's own slips never become a "chosen" side
    assert pc["dropped"].get("teacher wrong", 0) == sum(r["reject_reason"].startswith("teacher wrong") for r in rejects) > 0

    # DPO from the SFT model, loss history recorded like train.sft
    dc = st["dpo"]["counts"]
    assert dc["rows_in"] == dc["rows_used"] == len(pairs)
    assert dc["policy_start"] == str(run_dir / "student")
    assert dc["reference"]["mode"] == "implicit" and dc["loss_type"] == ["sigmoid", "sft"]
    hist = json.loads(Path(dc["loss_history"]).read_text())
    losses = [h["loss"] for h in hist if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    assert any("rewards/margins" in h for h in hist)  # a DPO log, not an SFT one
    rec = json.loads((run_dir / "dpo" / "synthkd_train.json").read_text())
    assert rec["kind"] == "dpo" and rec["data"]["rows_used"] == len(pairs)

    for name, model in (("eval_sft", "student"), ("eval", "dpo")):
        metrics = st[name]["counts"]["metrics"]
        assert metrics["rows"] == 40 and metrics["accuracy"] == eval_accuracy(run_dir / name, numbers_equal)
        assert st[name]["counts"]["student"] == str(run_dir / model)

    again = _run(*args)
    assert again.returncode == 0, again.stderr[-4000:]
    for name in STAGES:
        assert f"[{name}] unchanged since its last run: skipped" in again.stderr
    assert read_jsonl(run_dir / "preferences.jsonl") == pairs


def test_student_must_be_an_earlier_train_stage(tmp_path):
    r = _run("validate", str(PIPELINE), "--set", f"run_dir={tmp_path}", "--set", "stages.preferences.options.student=eval")
    assert r.returncode == 2, r.stderr  # a config error
    assert "preferences" in r.stderr and "'eval' is a later stage" in r.stderr, r.stderr
    r = _run("validate", str(PIPELINE), "--set", f"run_dir={tmp_path}", "--set", "stages.dpo.options.ref=explicit")
    assert r.returncode == 2 and "ref_model" in r.stderr, r.stderr
    assert not (tmp_path / "preference-distillation").exists()  # nothing ran
