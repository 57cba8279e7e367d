"""``synthkd demo --tailored`` shrunk: round 0, tailored rounds with new exercises, DPO, equal-budget one-shot."""

from __future__ import annotations

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
    for name in ("eval_round_0", "eval_round_1", "eval_round_2", "eval_dpo", "eval_equal"):
        assert st[name]["counts"]["metrics"]["rows"] == 12
    table = out["table"]
    assert table.count("\n| ") == 5, table  # round 0, 2 rounds, DPO, one-shot at equal calls
    assert "DPO self-reflection" in table and "one-shot at equal teacher calls" in table
    assert (run / "tailor" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "report.md").read_text().count("Tailored rounds") >= 1
