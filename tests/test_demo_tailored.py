"""``synthkd demo --tailored`` shrunk: round 0, tailored rounds with new exercises, DPO, equal-budget one-shot."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from conftest import read_jsonl
from synthkd.demo_tailored import run_tailored_demo

pytestmark = pytest.mark.train  # the demo trains tiny students


def test_tailored_demo_compares_at_equal_teacher_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHKD_CACHE", str(tmp_path / "cache.sqlite"))
    out = run_tailored_demo(n_pool=80, n_initial=16, n_dev=12, n_test=12, rounds=2, max_mistakes=8, similar=2,
                            epochs=2, lr=5e-3, batch_size=8, latency_ms=0,
                            tiny={"hidden_size": 64, "layers": 1, "heads": 2, "vocab_size": 400}, base_dir=tmp_path)
    run = tmp_path / "runs" / "demo_tailored"
    st = json.loads((run / "manifest.json").read_text())["stages"]
    assert all(s["status"] == "done" for s in st.values()), {k: s["status"] for k, s in st.items()}
    rounds = st["tailor"]["counts"]["rounds"]
    assert [h["round"] for h in rounds] == [0, 1, 2]
    for h in rounds[1:]:
        assert h["corrections"] > 0 and h["similar_rows"] > 0
        # audit mutant 17: more mistakes than --max-mistakes 8, and the 8 kept are the seeded sample of them
        # (training seed 0, round r), in pool order, not the first 8
        rdir = run / "tailor" / f"round_{h['round']}"
        found = [str(m["id"]) for m in read_jsonl(rdir / "pool_eval" / "mistakes.jsonl")]
        assert h["mistakes_found"] == len(found) > 8 and h["mistakes"] == 8
        keep = sorted(random.Random(f"0:{h['round']}").sample(range(len(found)), 8))
        assert [m["id"] for m in read_jsonl(rdir / "mistakes.jsonl")] == [found[i] for i in keep] != found[:8]
    # the one-shot arm got exactly the teacher calls the tailored arm made (initial rationales + every round)
    tailored_calls = 16 + sum(h["teacher_requests"] for h in rounds)
    assert st["rationales_equal"]["counts"]["rows_in"] == min(80, tailored_calls)
    # ... and exactly the optimiser steps of the tailored rounds (not its epochs: it has more rows)
    round_steps = [json.loads((run / "tailor" / f"round_{h['round']}" / "model" / "synthkd_train.json").read_text())
                   ["metrics"]["global_steps"] for h in rounds]
    assert all(n > 0 for n in round_steps)
    # every round trained from the base student (from_base): the best round's model owes its training to
    # its own run alone, and that run's steps are the one-shot arm's
    students = {json.loads((run / "tailor" / f"round_{h['round']}" / "model" / "synthkd_train.json").read_text())
                ["student"] for h in rounds}
    assert len(students) == 1 and students.pop().endswith("base-student")
    best = st["tailor"]["counts"]["best_round"]
    assert st["sft_equal"]["counts"]["train_metrics"]["global_steps"] == round_steps[best]
    assert f"{round_steps[best]} optimiser steps" in out["table"]
    for name in ("eval_round_0", "eval_round_1", "eval_round_2", "eval_dpo", "eval_equal"):
        assert st[name]["counts"]["metrics"]["rows"] == 12
    table = out["table"]
    assert table.count("\n| ") == 5, table  # round 0, 2 rounds, DPO, one-shot at equal calls
    assert "DPO self-reflection" in table and "one-shot at equal teacher calls" in table
    assert (run / "tailor" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "report.md").read_text().count("Tailored rounds") >= 1


def _run_signature(base, **kw):
    """What a shrunk tailored demo produced: its table, every student's weights, every eval's and
    round's rows (ids and contents, sorted where the file is written in completion order)."""
    out = run_tailored_demo(n_pool=80, n_initial=16, n_dev=12, n_test=12, rounds=2, max_mistakes=8, similar=2,
                            epochs=2, lr=5e-3, batch_size=8, latency_ms=5,
                            tiny={"hidden_size": 64, "layers": 1, "heads": 2, "vocab_size": 400},
                            base_dir=base, **kw)
    run = base / "runs" / "demo_tailored"
    weights = {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(run.rglob("model.safetensors"))}
    rows = {}
    for p in sorted(run.rglob("*.jsonl")):
        if "ledger" in p.name or ".hf_cache" in p.parts or "data" in p.relative_to(run).parts[:1]:
            continue  # the ledger records attempts (500s included): it differs by design
        drop = ("cached", "usage", "latency_s")
        rows[str(p.relative_to(run))] = sorted(
            json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True) for r in read_jsonl(p))
    return out["table"], weights, rows


def test_tailored_demo_gives_one_result_whatever_the_concurrency_and_server_errors(tmp_path, monkeypatch):
    """Issue 16: every random choice of the simulated teacher and of the loop is a function of the seed
    and the request's content, so arrival order (concurrency 16 vs 2) and retried 500s (0% vs 30% of
    requests) change nothing: not the table, not one student's weights, not one written row."""
    monkeypatch.setenv("SYNTHKD_CACHE", str(tmp_path / "a.sqlite"))
    a = _run_signature(tmp_path / "a", concurrency=16, server_error_rate=0.0)
    monkeypatch.setenv("SYNTHKD_CACHE", str(tmp_path / "b.sqlite"))
    b = _run_signature(tmp_path / "b", concurrency=2, server_error_rate=0.3)
    for run, retried in ((tmp_path / "a", False), (tmp_path / "b", True)):
        ledger = read_jsonl(run / "runs" / "demo_tailored" / "tailor.ledger.jsonl")
        sent, answered = sum("sent" in x for x in ledger), sum("answer" in x for x in ledger)
        assert (sent > answered) is retried, (run, sent, answered)  # b's 500s were retried, a had none
    assert len(a[1]) >= 5  # round 0, 2 rounds, DPO, one-shot: every student compared
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert a[2].keys() == b[2].keys()
    for name in a[2]:
        assert a[2][name] == b[2][name], name


def test_tailored_steps_count_what_is_behind_the_best_rounds_model(tmp_path):
    """The one-shot arm's optimiser steps: the best round's own run when rounds train from the base
    student, every run up to the best round when each round trains further (later rounds not counted)."""
    from synthkd.demo_tailored import tailored_steps

    for r, n in enumerate((100, 200, 300, 400)):
        d = tmp_path / f"round_{r}" / "model"
        d.mkdir(parents=True)
        (d / "synthkd_train.json").write_text(json.dumps({"metrics": {"global_steps": n}}))
    stage = {"counts": {"best_round": 2, "rounds": [{"round": r, "status": "trained"} for r in range(4)]}}
    assert tailored_steps(tmp_path, stage, from_base=True) == 300
    assert tailored_steps(tmp_path, stage, from_base=False) == 100 + 200 + 300
    stage["counts"]["rounds"][1]["status"] = "no_new_rows"  # a round that trained nothing adds nothing
    assert tailored_steps(tmp_path, stage, from_base=False) == 100 + 300
