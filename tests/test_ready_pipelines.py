"""The ready pipelines in pipelines/ run end to end offline on small slices (overrides keep them fast)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import REPO, cli_env, synthkd_cmd, write_prompts


@pytest.mark.train
def test_svamp_step_by_step_pipeline_offline(tmp_path):
    runs = tmp_path / "runs"
    small = ["--set", f"run_dir={runs}",
             "--set", "stages.student.options.epochs=1",
             "--set", "stages.student.options.tiny={hidden_size: 64, layers: 2, heads: 4, vocab_size: 600}",
             "--set", "stages.eval.options.limit=30",
             "--set", f"teacher.cache={tmp_path / 'cache.sqlite'}"]
    cmd = synthkd_cmd("run", "pipelines/svamp_step_by_step.yaml", *small)
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = runs / "svamp-step-by-step"
    st = json.loads((run / "manifest.json").read_text())["stages"]
    assert [s["status"] for s in st.values()] == ["done"] * 4
    assert st["rationales"]["counts"]["rows_out"] == 800
    assert st["rationales"]["counts"]["teacher_scores"]["correct"] == 595  # the PaLM answers equal to gold (594 before the cue-less fallback read "So Jake has 16 - 7 = 9 peaches.")
    clean = st["clean"]["counts"]
    assert clean["rows_in"] == clean["rows_out"] + clean["rejected"] and clean["dropped"]["consistency: wrong answer"] == 179  # 178 before the fallback read "x = 1.423..." (a wrong answer, no longer "no answer")
    assert st["eval"]["counts"]["metrics"]["rows"] == 30
    for f in ("report.md", "report.html", "plots/funnel.png", "plots/loss.png", "clean.funnel.md", "student/log_history.json"):
        assert (run / f).exists(), f
    again = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stderr.count("unchanged since its last run: skipped") == 4


def test_estimate_over_budget_needs_yes(tmp_path, make_server):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 50)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"test-model": {"input": 100.0, "output": 100.0}}))
    (tmp_path / "p.yaml").write_text(
        f"name: b\nteacher: {{model: test-model, base_url: '{srv.base_url}', max_cost: 0.01, prices: prices.json}}\n"
        "stages:\n  - {name: a, kind: complete, input: in.jsonl}\n")
    res = subprocess.run(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and "exceeds max_cost $0.01" in res.stderr and "--yes" in res.stderr
    assert srv.stats()["requests_total"] == 0
    res = subprocess.run(synthkd_cmd("run", "p.yaml", "--yes"), cwd=tmp_path, env=cli_env(), capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)
    assert res.returncode == 3 and "budget reached" in res.stderr  # ran, and stopped at the budget, resumable
