"""The offline demo end to end, shrunk: simulated teachers over HTTP -> rationales -> filter -> tiny students."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import eval_accuracy
from synthkd.answers import numbers_equal
from synthkd.demo import STUDENTS, mean_se, run_demo, run_demo_seeds, seeds_table, teacher_model_name
from synthkd.testing.simulated import SimulatedResponder

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
    # equal data: every student trains on the same number of rows (40 = 5/6 of 48), the noisy teacher
    # answered more problems so that its filtered set fills the sample too
    assert st["noisy_filtered"]["counts"]["rows_in"] == st["noisy_unfiltered"]["counts"]["rows_in"] > 48
    n_rows = {st[f"sft_{name}"]["counts"]["rows_in"] for name in STUDENTS}
    assert n_rows == {40}, n_rows
    unfiltered = [json.loads(x) for x in (run / "noisy_unfiltered.jsonl").read_text().splitlines()]
    filtered = [json.loads(x) for x in (run / "noisy_filtered.jsonl").read_text().splitlines()]
    assert not any(r["correct"] is False for r in filtered) and any(r["correct"] is False for r in unfiltered)
    for name in ("label", "rationale", "multitask", "noisy_unfiltered", "noisy_filtered"):
        m = st[f"eval_{name}"]["counts"]["metrics"]
        assert m["rows"] == 12 and m["accuracy"] == eval_accuracy(run / f"eval_{name}", numbers_equal)
    assert st["sft_label"]["counts"]["rows_in"] == st["sft_multitask"]["counts"]["rows_in"]  # equal data
    table = out["table"]
    assert table.count("\n| ") == 5 and "the noisy one" in table and "rationale, noisy teacher, consistency filter" in table
    assert st["sft_noisy_filtered"]["counts"]["mode"] == st["sft_noisy_unfiltered"]["counts"]["mode"] == "rationale"
    assert set(out["accuracy"]) == set(STUDENTS)
    assert out["accuracy"]["label"] == st["eval_label"]["counts"]["metrics"]["accuracy"]
    assert (run / "report.md").exists() and (run / "plots" / "loss.png").exists()
    assert (run / "pipeline.yaml").exists()  # the pipeline it ran, readable and rerunnable


def test_teacher_model_names_carry_every_answer_changing_knob():
    """The request cache is keyed by model name: a rerun of the demo with another --error-rate (or seed)
    in the same run directory must not be served the previous setting's answers."""
    names = {teacher_model_name("careful", SimulatedResponder([], error_rate=e, noise_rate=n, salt=s))
             for e, n, s in ((0.1, 0.1, "careful0"), (0.2, 0.1, "careful0"), (0.1, 0.3, "careful0"),
                             (0.1, 0.1, "careful1"))}
    assert len(names) == 4


def test_seeds_table_gives_mean_and_standard_error_of_accuracies_and_effects():
    assert mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, (1.0 / 3) ** 0.5))
    assert mean_se([5.0]) == (5.0, 0.0)
    results = [{"seed": s, "accuracy": {"a": a, "b": b}} for s, a, b in ((0, 0.5, 0.25), (1, 0.7, 0.25), (2, 0.6, None))]
    table = seeds_table(results[:2], (("A", "a"), ("B", "b")), (("A − B", "a", "b"),))
    lines = table.splitlines()
    assert lines[0] == "| seed | A | B | A − B |"
    assert lines[2] == "| 0 | 50.0% | 25.0% | +25.0 |"
    assert lines[3] == "| 1 | 70.0% | 25.0% | +45.0 |"
    assert lines[4] == "| mean ± SE | 60.0 ± 10.0% | 25.0 ± 0.0% | +35.0 ± 10.0 |"
    # a missing accuracy is a "-", never averaged as if it were there
    assert seeds_table(results, (("B", "b"),), ()).splitlines()[-1] == "| mean ± SE | - |"


def test_each_seed_runs_in_its_own_run_directory(tmp_path):
    # --seeds: runs/demo_seed<s> holds that seed's whole run (stages, students, rerunnable pipeline.yaml);
    # nothing goes to runs/demo, where every seed used to run over the previous one
    out = run_demo_seeds([0, 1], n_train=48, n_test=12, epochs=1, latency_ms=0, base_dir=tmp_path)
    assert not (tmp_path / "runs" / "demo").exists()
    for seed in (0, 1):
        run = tmp_path / "runs" / f"demo_seed{seed}"
        man = json.loads((run / "manifest.json").read_text())
        assert man["name"] == f"demo_seed{seed}"
        assert man["stages"] and all(st["status"] == "done" for st in man["stages"].values())
        assert (run / "sft_rationale" / "model.safetensors").exists() and (run / "eval_rationale").is_dir()
        spec = yaml.safe_load((run / "pipeline.yaml").read_text())
        assert Path(spec["run_dir"], spec["name"]) == run.resolve()  # `synthkd run` on it reruns into it
    assert [r["run_dir"] for r in out["results"]] == [str(tmp_path / "runs" / f"demo_seed{s}") for s in (0, 1)]


def test_seeds_option_takes_distinct_integers():
    import typer

    from synthkd.commands.demo_cmd import _parse_seeds

    assert _parse_seeds("0,1,2", 7) == [0, 1, 2]
    assert _parse_seeds(None, 7) == [7]  # no --seeds: --seed alone
    for bad in ("0,x", "1,1", ","):
        with pytest.raises(typer.BadParameter):
            _parse_seeds(bad, 0)


def test_each_demo_refuses_the_other_demos_options_before_running(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from synthkd.cli import app

    monkeypatch.chdir(tmp_path)
    for args, named in ((["demo", "--initial", "50"], "--initial"), (["demo", "--max-mistakes", "5"], "--max-mistakes"),
                        (["demo", "--tailored", "--rows", "10"], "--rows")):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert named in res.stderr and "tailored" in res.stderr  # says which demo the option belongs to
        assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_a_rerun_from_the_request_cache_gives_the_same_table_and_students(tmp_path, monkeypatch):
    """The same seed twice on one request cache: the second run gets every answer from the cache (rows
    flagged cached), and still trains the same students bit for bit (the tiny students' tokenizers once
    counted the 'cached' flag among their texts)."""
    import hashlib

    monkeypatch.setenv("SYNTHKD_CACHE", str(tmp_path / "cache.sqlite"))
    kw = dict(n_train=48, n_test=12, epochs=1, error_rate=0.1, noisy_error_rate=0.5, latency_ms=0)
    first = run_demo(base_dir=tmp_path / "a", **kw)
    again = run_demo(base_dir=tmp_path / "b", **kw)
    rows = [json.loads(x) for x in (tmp_path / "b" / "runs" / "demo" / "rationales.jsonl").read_text().splitlines()]
    assert rows and all(r["cached"] for r in rows)  # the rerun paid for nothing
    assert first["accuracy"] == again["accuracy"]

    def weights(base):
        return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((base / "runs" / "demo").glob("sft_*/model.safetensors")) if "tiny" not in p.parent.name}

    assert len(weights(tmp_path / "a")) == 5 and weights(tmp_path / "a") == weights(tmp_path / "b")
