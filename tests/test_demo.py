"""The offline demo end to end, shrunk: simulated teachers over HTTP -> rationales -> filter -> tiny students."""

from __future__ import annotations

import json

import pytest

from conftest import eval_accuracy
from synthkd.answers import numbers_equal
from synthkd.demo import run_demo

pytestmark = pytest.mark.train  # the demo trains five tiny students


def test_demo_runs_the_whole_loop_offline(tmp_path):
    out = run_demo(n_train=48, n_test=12, epochs=1, error_rate=0.1, noisy_error_rate=0.5, base_dir=tmp_path)
    run = tmp_path / "runs" / "demo"
    man = json.loads((run / "manifest.json").read_text())
    st = man["stages"]
    assert all(s["status"] == "done" for s in st.values()), {k: s["status"] for k, s in st.items()}
    careful = st["rationales"]["counts"]["teacher_scores"]["accuracy"]
    noisy = st["noisy_rationales"]["counts"]["teacher_scores"]["accuracy"]
    assert noisy < careful  # two different teachers (not one answered from the other's cache)
    assert st["noisy_filtered"]["counts"]["rows_out"] < st["noisy_filtered"]["counts"]["rows_in"] == 48
    for name in ("label", "rationale", "multitask", "noisy_unfiltered", "noisy_filtered"):
        m = st[f"eval_{name}"]["counts"]["metrics"]
        assert m["rows"] == 12 and m["accuracy"] == eval_accuracy(run / f"eval_{name}", numbers_equal)
    assert st["sft_label"]["counts"]["rows_in"] == st["sft_multitask"]["counts"]["rows_in"]  # equal data
    table = out["table"]
    assert table.count("\n| ") == 5 and "multitask, noisy teacher, consistency filter" in table
    assert (run / "report.md").exists() and (run / "plots" / "loss.png").exists()
    assert (run / "pipeline.yaml").exists()  # the pipeline it ran, readable and rerunnable
