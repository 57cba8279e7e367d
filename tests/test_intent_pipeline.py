"""pipelines/intent_from_prompts.yaml end to end through the real CLI, against the real loopback server
answering with the scripted Banking77 teacher (real Banking77 texts), shrunk with --set to run fast."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, cli_env, eval_accuracy, read_jsonl, synthkd_cmd
from synthkd.testing.banking77_responder import Banking77Responder
from synthkd.testing.server import FaultConfig, TestServer

PIPELINE = REPO / "pipelines" / "intent_from_prompts.yaml"
STAGES = ["tasks", "relabel_tasks", "promptmix", "merge", "clean", "train", "eval"]
TEST_ROWS = REPO / "data" / "banking77" / "test.jsonl"


def _completions(srv: TestServer) -> int:
    by = srv.stats()["by_endpoint"]
    return by.get("/v1/chat/completions", 0) + by.get("/v1/completions", 0)


def _small(run_dir: Path) -> list[str]:
    sets = [
        f"run_dir={run_dir}",
        "stages.tasks.options.per_label=5",
        "stages.tasks.options.batch_size=6",
        "stages.promptmix.options.per_label=2",
        "stages.promptmix.options.examples_per_call=2",
        "stages.train.options.epochs=1",
        "stages.train.options.tiny={hidden_size: 32, layers: 1, heads: 2, vocab_size: 300}",
        "stages.eval.options.batch_size=160",
    ]
    return [a for s in sets for a in ("--set", s)]


def _run(args: list[str], url: str) -> subprocess.CompletedProcess:
    return subprocess.run(synthkd_cmd(*args), cwd=REPO, env=cli_env(OPENAI_BASE_URL=url), capture_output=True,
                          text=True, timeout=120)


@pytest.mark.train
def test_intent_pipeline_runs_offline_and_reruns_for_free(tmp_path):
    teacher = Banking77Responder.from_dir()
    srv = TestServer(FaultConfig(), responder=teacher).start()
    try:
        args = ["run", str(PIPELINE), *_small(tmp_path / "runs")]
        first = _run(args, srv.base_url)
        assert first.returncode == 0, first.stderr[-3000:]
        sent = _completions(srv)
        assert teacher.calls["tasks"] > 0 and teacher.calls["promptmix"] > 0 and teacher.calls["classify"] > 0
        assert teacher.calls["other"] == 0  # every prompt of the pipeline is one the scripted teacher knows

        run_dir = tmp_path / "runs" / "intent-from-prompts"
        m = json.loads((run_dir / "manifest.json").read_text())
        assert [n for n in m["stages"]] == STAGES
        assert all(m["stages"][n]["status"] == "done" for n in STAGES)
        st = m["stages"]
        tasks = st["tasks"]["counts"]
        assert tasks["rows_out"] == 5 * 8 and tasks["short"] == {}
        assert set(tasks["per_label"].values()) == {5}
        # the planted trouble was caught by the method: near-copies, seed copies, too-short items
        assert tasks["dropped"].get("near_duplicate", 0) > 0 and tasks["dropped"].get("too_short", 0) > 0
        assert tasks["rows_in"] - tasks["rows_out"] == sum(tasks["dropped"].values())
        # every generated task row was relabelled by the teacher (one classify call each) before the merge
        assert st["relabel_tasks"]["counts"]["rows_in"] == 40
        assert st["merge"]["counts"]["per_input"] == {"tasks": st["relabel_tasks"]["counts"]["rows_out"],
                                                      "promptmix": st["promptmix"]["counts"]["rows_out"]}
        assert "label_conflicts" in (run_dir / "clean.funnel.md").read_text()
        labels = {r["label"] for r in read_jsonl(run_dir / "clean.jsonl")}
        assert len(labels) == 8
        assert (run_dir / "clean.funnel.md").exists() and (run_dir / "report.md").exists()
        metrics = st["eval"]["counts"]["metrics"]
        assert metrics["rows"] == len(read_jsonl(TEST_ROWS)) == 320
        assert metrics["accuracy"] == eval_accuracy(run_dir / "eval")

        again = _run(args, srv.base_url)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _completions(srv) == sent  # nothing asked again
        for name in STAGES:
            assert f"[{name}] unchanged since its last run: skipped" in again.stderr
    finally:
        srv.stop()


def test_bad_task_spec_fails_validation_before_any_request(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("task: intents\nlabels:\n  a: {description: x}\n  b: {descripton: y}\n")
    srv = TestServer(FaultConfig(), responder=Banking77Responder.from_dir()).start()
    try:
        r = _run(["run", str(PIPELINE), "--set", f"run_dir={tmp_path}/runs",
                  "--set", f"stages.tasks.options.labels={spec}"], srv.base_url)
        assert r.returncode == 2, r.stderr  # bad input, reported before anything runs
        assert str(spec) in r.stderr and "descripton" in r.stderr, r.stderr
        assert _completions(srv) == 0
    finally:
        srv.stop()


def test_scripted_teacher_is_deterministic_and_labels_real_texts():
    t = Banking77Responder.from_dir()
    body = {"messages": [{"role": "user", "content": "Intents.\nWrite 6 new examples\nLabel: pin_blocked\n"}], "seed": 3}
    assert t("/v1/chat/completions", body) == t("/v1/chat/completions", body)
    text = t.pools["age_limit"][0]
    prompt = f"Classes:\n1. age_limit: a\n2. pin_blocked: b\n\nText: \"{text}\"\n\nWhich class?"
    ans = t.classify(prompt, text)
    assert "age" in ans.lower() or ans.strip() in {"1", "Class: 1"}
    wrong = Banking77Responder.from_dir(wrong_rate=1.0)
    assert "pin" in wrong.classify(prompt, text).lower() or wrong.classify(prompt, text).strip() in {"2", "Class: 2"}
