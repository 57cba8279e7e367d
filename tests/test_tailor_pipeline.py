"""The ``tailor`` stage through the real CLI: pipelines/tailored_rounds.yaml shrunk with --set (a 40-problem
pool, 16 held-out problems, a tiny student, 2 rounds), the simulated arithmetic teacher behind the real
loopback server.  Per-round metrics in the manifest and the report, a rerun that skips everything, a
SIGKILL in round 2 that resumes in round 2 without retraining or asking again, and a missing held-out
set refused before anything runs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, cli_env, eval_accuracy, read_jsonl, synthkd_cmd
from synthkd.answers import numbers_equal
from synthkd.testing.server import FaultConfig
from synthkd.testing.simulated import SimulatedResponder, make_problems

PIPELINE = REPO / "pipelines" / "tailored_rounds.yaml"
PROBLEMS = make_problems(56, seed=5)
POOL, HELDOUT = PROBLEMS[:40], PROBLEMS[40:]
STAGES = ["rationales", "clean", "tailor", "eval"]
ROUND_KEYS = ("round", "accuracy", "mistakes", "new_rows", "rejected", "pairs", "teacher_requests",
              "prompt_tokens", "completion_tokens", "cost_usd")


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _server(make_server):
    return make_server(FaultConfig(), responder=SimulatedResponder(PROBLEMS, error_rate=0.15, noise_rate=0.2,
                                                                   salt="tailor-pipeline"))


def _args(tmp: Path, url: str, *extra: str) -> list[str]:
    pool = _write(tmp / "pool.jsonl", [{"id": p.id, "question": p.question, "answer": p.answer} for p in POOL])
    first = _write(tmp / "first.jsonl", [{"id": p.id, "question": p.question, "answer": p.answer} for p in POOL[:16]])
    heldout = _write(tmp / "heldout.jsonl", [{"id": p.id, "question": p.question, "gold": p.answer} for p in HELDOUT])
    sets = [
        f"run_dir={tmp / 'runs'}",
        f"teacher={{model: simulated, base_url: '{url}', concurrency: 8, max_retries: 1}}",
        f"stages.rationales.input={first}",
        f"stages.tailor.input={pool}",
        f"stages.tailor.options.heldout={heldout}",
        "stages.tailor.options.rounds=2",
        "stages.tailor.options.patience=5",  # both rounds run, whatever the accuracy does
        "stages.tailor.options.tiny={hidden_size: 64, layers: 1, heads: 2, vocab_size: 400}",
        "stages.tailor.options.epochs=5",
        "stages.tailor.options.learning_rate=0.005",
        "stages.tailor.options.batch_size=4",
        "stages.tailor.options.max_length=160",
        "stages.tailor.options.max_new_tokens=40",
        f"stages.eval.input={heldout}",
        "stages.eval.options.max_new_tokens=40",
        *extra,
    ]
    return ["run", str(PIPELINE), *[a for s in sets for a in ("--set", s)]]


def _env() -> dict[str, str]:
    env = cli_env()
    for k in ("SYNTHKD_TEACHER", "SYNTHKD_STUDENT"):
        env.pop(k, None)
    return env


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(synthkd_cmd(*args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
                          check=False)


def _completions(srv) -> int:
    by = srv.stats()["by_endpoint"]
    return by["/v1/chat/completions"] + by["/v1/completions"]


def _model_stamps(run: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(run.glob("tailor/round_*/model/model.safetensors"))}


@pytest.mark.train
def test_tailor_stage_two_rounds_metrics_report_and_rerun_skips(tmp_path, make_server):
    srv = _server(make_server)
    args = _args(tmp_path, srv.base_url)
    first = _run(args)
    assert first.returncode == 0, first.stderr[-4000:]
    run = tmp_path / "runs" / "tailored-rounds"
    st = json.loads((run / "manifest.json").read_text())["stages"]
    assert list(st) == STAGES and all(st[n]["status"] == "done" for n in STAGES)

    c = st["tailor"]["counts"]
    rounds = c["rounds"]
    assert [h["round"] for h in rounds] == [0, 1, 2], c.get("stopped")
    assert c["stopped"] == "finished the 2 round(s) asked for"
    for h in rounds:
        assert all(k in h for k in ROUND_KEYS), h
        assert h["accuracy"] == eval_accuracy(run / "tailor" / f"round_{h['round']}" / "heldout_eval", numbers_equal)
    assert rounds[0]["new_rows"] == st["clean"]["counts"]["rows_out"]  # round 0 = the clean rationales
    for h in rounds[1:]:
        rdir = run / "tailor" / f"round_{h['round']}"
        assert h["mistakes"] == len(read_jsonl(rdir / "mistakes.jsonl")) > 0
        # the ready pipeline asks for corrections and 2 new exercises per mistake (LLM2LLM)
        corrections, similar = read_jsonl(rdir / "new_rows.jsonl"), read_jsonl(rdir / "similar_rows.jsonl")
        exercises = read_jsonl(rdir / "exercises.jsonl")
        assert h["corrections"] == len(corrections) > 0 and h["similar_rows"] == len(similar) > 0
        assert h["new_rows"] == len(corrections) + len(similar)
        assert h["rejected"] == sum(len(read_jsonl(rdir / f)) for f in (
            "new_rows.rejects.jsonl", "exercises.rejects.jsonl", "similar_rows.rejects.jsonl"))
        assert h["pairs"] == len(read_jsonl(rdir / "pairs.jsonl"))
        # per mistake: one correction and one request for new exercises; then one solution per exercise
        assert h["teacher_requests"] == 2 * h["mistakes"] + len(exercises)
        assert h["prompt_tokens"] > 0 and h["completion_tokens"] > 0
    # the stage's teacher totals are the rounds' sums, and agree with what the client counted (a round
    # counts an answer the request cache gave too: the same wrong answer to a question in two rounds)
    t = st["tailor"]["teacher"]
    assert c["teacher_requests"] == sum(h["teacher_requests"] for h in rounds) == t["requests"] + t["cached_answers"]
    assert c["prompt_tokens"] == sum(h["prompt_tokens"] for h in rounds) >= t["prompt_tokens"] > 0
    assert c["completion_tokens"] == sum(h["completion_tokens"] for h in rounds) >= t["completion_tokens"] > 0
    if t["cached_answers"] == 0:
        assert (c["prompt_tokens"], c["completion_tokens"]) == (t["prompt_tokens"], t["completion_tokens"])
    assert _completions(srv) == st["rationales"]["counts"]["rows_in"] + t["requests"]
    # the stage's rows: every round's self-reflection pairs
    pairs = read_jsonl(run / "tailor.jsonl")
    assert len(pairs) == c["pairs"] == sum(h["pairs"] for h in rounds) > 0
    assert all({"prompt", "chosen", "rejected"} <= set(p) for p in pairs)

    # the final model is the best round's (or the DPO step's when it does at least as well: dpo: final),
    # and `student: tailor` in eval scores exactly that model
    best = c["best_round"]
    assert c["best_accuracy"] == max(h["accuracy"] for h in rounds)
    refl = c["reflection"]
    assert refl is not None and refl["from_round"] == best and refl["pairs"] == c["pairs"]
    final = refl if refl["accuracy"] >= c["best_accuracy"] else None
    expected = run / "tailor" / ("reflection" if final else f"round_{best}") / "model"
    assert (run / "tailor" / "model").resolve() == expected.resolve()
    ev = st["eval"]["counts"]
    assert ev["student"] == str(run / "tailor") and ev["metrics"]["rows"] == len(HELDOUT)
    assert ev["metrics"]["accuracy"] == (final or c)["best_accuracy" if not final else "accuracy"]

    # the report: a per-round table (best round in bold) and the accuracy plot, in markdown and html
    md = (run / "report.md").read_text()
    assert "## Tailored rounds" in md and "| round | status | held-out acc |" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and line.split("|")[2].strip() in
             {"trained", "no_new_rows", "no_mistakes"}]
    assert len(table) == 4  # rounds 0-2 and the DPO step
    assert f"| **{best}** |" in md and f"stopped: {c['stopped']}" in md
    assert (run / "plots" / "tailor_tailor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plots/tailor_tailor.png" in md
    html = (run / "report.html").read_text()
    assert "Tailored rounds" in html and "plots/tailor_tailor.png" in html and "held-out acc" in html

    # a rerun with nothing changed skips every stage and sends nothing
    stamps = _model_stamps(run)
    srv.reset_stats()
    again = _run(args)
    assert again.returncode == 0, again.stderr[-4000:]
    for name in STAGES:
        assert f"[{name}] unchanged since its last run: skipped" in again.stderr
    assert srv.stats()["requests_total"] == 0
    assert _model_stamps(run) == stamps and len(stamps) == 3

    # changed options start the loop over in a fresh directory (the old one kept as tailor.prev), never
    # taking rounds made under other settings as done; eval, which names the stage, reruns too
    fewer = _run(_args(tmp_path, srv.base_url, "stages.tailor.options.rounds=1"))
    assert fewer.returncode == 0, fewer.stderr[-4000:]
    assert "[clean] unchanged" in fewer.stderr and "[tailor] running" in fewer.stderr and "[eval] running" in fewer.stderr
    assert "finished before" not in fewer.stderr
    assert (run / "tailor.prev" / "round_2" / "metrics.json").exists() and not (run / "tailor" / "round_2").exists()
    st = json.loads((run / "manifest.json").read_text())["stages"]
    assert [h["round"] for h in st["tailor"]["counts"]["rounds"]] == [0, 1]
    assert (run / "tailor" / "model" / "config.json").exists()


@pytest.mark.train
def test_sigkill_in_round_2_resumes_round_2_without_retraining_or_asking_again(tmp_path, make_server):
    srv = _server(make_server)
    args = _args(tmp_path, srv.base_url)
    run = tmp_path / "runs" / "tailored-rounds"
    r2 = run / "tailor" / "round_2"
    proc = subprocess.Popen(synthkd_cmd(*args), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        # train.jsonl is written after round 2's last teacher answer, right before its training
        while not ((r2 / "train.jsonl").exists() or (r2 / "model").exists()) and time.monotonic() < deadline:
            assert proc.poll() is None, "the pipeline ended before round 2 trained"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (r2 / "metrics.json").exists(), "killed too late: round 2 had finished"
    man = json.loads((run / "manifest.json").read_text())["stages"]
    assert man["clean"]["status"] == "done" and man["tailor"]["status"] == "running"
    stamps = _model_stamps(run)
    assert sorted(p.parent.parent.name for p in stamps) == ["round_0", "round_1"]
    asked = _completions(srv)
    srv.reset_stats()

    res = _run(args)
    assert res.returncode == 0, res.stderr[-4000:]
    assert _completions(srv) == 0  # round 2's corrections are on disk; nothing is asked again
    assert "[rationales] unchanged" in res.stderr and "[clean] unchanged" in res.stderr
    assert "[tailor] round 0: finished before" in res.stderr and "[tailor] round 1: finished before" in res.stderr
    assert "round 2: finished before" not in res.stderr  # round 2 was resumed, not skipped
    for p, t in stamps.items():  # rounds 0 and 1 not retrained
        assert p.stat().st_mtime_ns == t, p
    st = json.loads((run / "manifest.json").read_text())["stages"]
    assert all(st[n]["status"] == "done" for n in STAGES)
    rounds = st["tailor"]["counts"]["rounds"]
    assert [h["round"] for h in rounds] == [0, 1, 2] and (r2 / "metrics.json").exists()
    assert rounds[2]["corrections"] == len(read_jsonl(r2 / "new_rows.jsonl")) > 0
    # rows already on disk are not asked again (counted from their rows); the rest (dropped corrections, the
    # new-exercise replies, dropped solutions) are asked again and come from the request cache: every one of
    # round 2's calls was paid for before the kill, and its tokens still count
    calls = 2 * rounds[2]["mistakes"] + len(read_jsonl(r2 / "exercises.jsonl"))
    assert rounds[2]["teacher_requests"] == rounds[2]["teacher_requests_cached"] == calls
    assert rounds[2]["prompt_tokens"] > 0 and rounds[2]["completion_tokens"] > 0
    # before the kill: the initial rationales, round 1's calls and round 2's (some of which the cache answered
    # in the first run already: a prompt round 1 asked too, e.g. the same wrong answer to the same question)
    before_round_2 = st["rationales"]["counts"]["rows_in"] + rounds[1]["teacher_requests"] - rounds[1]["teacher_requests_cached"]
    assert before_round_2 < asked <= before_round_2 + calls
    assert (run / "tailor" / "model" / "config.json").exists()


def test_missing_heldout_is_a_config_error_naming_the_stage_before_anything_runs(tmp_path, make_server):
    srv = _server(make_server)
    res = _run(_args(tmp_path, srv.base_url, "stages.tailor.options.heldout=null"))
    assert res.returncode == 2, res.stderr[-3000:]
    lines = PIPELINE.read_text().splitlines()
    stage_at = next(i for i, line in enumerate(lines) if line.strip() == "- name: tailor")
    options_line = next(i for i in range(stage_at, len(lines)) if lines[i].strip() == "options:") + 1
    assert f"tailored_rounds.yaml:{options_line}: stages[2] (tailor): heldout: a held-out set is required" in res.stderr, \
        res.stderr
    assert srv.stats()["requests_total"] == 0
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written
