"""The tailored multi-round loop end to end: a tiny student, the simulated arithmetic teacher behind the
real loopback server and the real HTTP client (with its request cache), two rounds, resume, errors."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from conftest import eval_accuracy, read_jsonl
from synthkd.answers import extract_answer, numbers_equal
from synthkd.jsonl_io import InputError
from synthkd.loops.tailored import TailorOptions, run_tailored
from synthkd.methods.rationales import plan_rationales
from synthkd.teachers.cache import RequestCache
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.server import FaultConfig
from synthkd.testing.simulated import SimulatedResponder, make_problems
from synthkd.train.common import TrainSettings
from synthkd.train.export import build_preference_examples, rationale_target

PROBLEMS = make_problems(52, seed=3)
POOL, HELDOUT = PROBLEMS[:36], PROBLEMS[36:]
STUBBORN = {p.question for p in POOL[:4]}  # the teacher never gets these right when correcting


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _responder():
    sim = SimulatedResponder(PROBLEMS, error_rate=0.0, noise_rate=0.2, salt="tailor")

    def respond(endpoint: str, body: dict) -> str:
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", [])) or str(body.get("prompt", ""))
        p = sim.find(prompt)
        if p is not None and p.question in STUBBORN and "got it wrong" in prompt:
            return p.rationale(0, 2)[0] + f" The answer is {p.answer + 2}."
        return sim(endpoint, body)

    return respond


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from synthkd.train.tiny import build_tiny_student

    base = tmp_path_factory.mktemp("tailor")
    texts = [p.question for p in PROBLEMS] + [p.rationale()[0] for p in PROBLEMS] + ["So the answer is 0123456789."]
    student = build_tiny_student(texts, base / "student", vocab_size=400, hidden_size=64, layers=1, heads=2)
    pool = _write(base / "pool.jsonl", [{"id": p.id, "question": p.question, "answer": p.answer} for p in POOL])
    heldout = _write(base / "heldout.jsonl", [{"id": p.id, "question": p.question, "gold": p.answer} for p in HELDOUT])
    return base, student, pool, heldout


def _opts(base: Path, student: Path, pool: Path, heldout: Path | None, initial: Path, **kw) -> TailorOptions:
    settings = TrainSettings(epochs=3, learning_rate=5e-3, batch_size=4, max_length=160, logging_steps=5,
                             save_steps=10_000, skip_invalid=True)
    return TailorOptions(student=str(student), pool=pool, initial=initial, heldout=heldout, out=base / "run",
                         rounds=2, patience=5, eval_batch_size=64, max_new_tokens=40, settings=settings, **kw)


def _teacher(srv, base: Path) -> OpenAICompatibleTeacher:
    return OpenAICompatibleTeacher("simulated", base_url=srv.base_url, concurrency=8,
                                   cache=RequestCache(base / "cache.sqlite"), max_retries=1, preflight=False)


@pytest.mark.train
def test_tailored_loop_two_rounds_then_resume(setup, make_server):
    base, student, pool, heldout = setup
    srv = make_server(FaultConfig(), responder=_responder())
    # initial distilled rows: the rationale method on the first 16 pool problems
    plan = plan_rationales([{"id": p.id, "question": p.question, "answer": p.answer} for p in POOL[:16]],
                           kind="math", n_demos=0, max_tokens=128)

    async def initial_rows() -> list[dict]:
        t = _teacher(srv, base)
        try:
            return [r async for r in plan.run(t)]
        finally:
            await t.aclose()

    initial = _write(base / "initial.jsonl", asyncio.run(initial_rows()))
    opts = _opts(base, student, pool, heldout, initial)
    messages: list[str] = []

    async def loop() -> dict:
        t = _teacher(srv, base)
        try:
            return await run_tailored(opts, t, say=messages.append)
        finally:
            await t.aclose()

    srv.reset_stats()
    result = asyncio.run(loop())
    run = base / "run"
    rounds = json.loads((run / "rounds.json").read_text())
    assert rounds == json.loads(json.dumps(result, default=str))
    assert [h["round"] for h in rounds["rounds"]] == [0, 1, 2], messages
    for h in rounds["rounds"]:
        for k in ("accuracy", "mistakes", "new_rows", "prompt_tokens", "completion_tokens", "cost_usd"):
            assert k in h, (k, h)
        assert h["accuracy"] == eval_accuracy(run / f"round_{h['round']}" / "heldout_eval", numbers_equal)
    assert "finished the 2 round(s)" in rounds["stopped"]
    assert (run / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sent = srv.stats()["requests_total"]
    asked = 0
    for r in (1, 2):
        rdir = run / f"round_{r}"
        mistakes = read_jsonl(rdir / "mistakes.jsonl")
        h = rounds["rounds"][r]
        assert h["mistakes"] == len(mistakes) > 0
        mistake_ids = {m["id"] for m in mistakes}
        new_rows = read_jsonl(rdir / "new_rows.jsonl")
        rejects = read_jsonl(rdir / "new_rows.rejects.jsonl")
        # every new row and every reject traces back to one of this round's mistakes, and nothing else
        assert {x["source_id"] for x in new_rows} | {x["source_id"] for x in rejects} == mistake_ids
        assert all(x["id"] == f"{x['source_id']}#r{r}" and x["round"] == r for x in new_rows + rejects)
        assert h["new_rows"] == len(new_rows) > 0 and h["rejected"] == len(rejects)
        # the stubborn problems the student got wrong were dropped, with the reason
        stubborn_ids = {p.id for p in POOL if p.question in STUBBORN} & mistake_ids
        assert stubborn_ids and stubborn_ids <= {x["source_id"] for x in rejects}
        assert all("does not reach the gold answer" in x["reject_reason"] for x in rejects
                   if x["source_id"] in stubborn_ids)
        assert all(x["reject_reason"] for x in rejects)  # the rest: noisy endings with no answer cue
        gold = {p.id: p.answer for p in POOL}
        for x in new_rows:
            assert numbers_equal(float(x["answer"]), gold[x["source_id"]])
        pairs = read_jsonl(rdir / "pairs.jsonl")
        assert pairs and len(pairs) <= len(new_rows)
        for pr in pairs:
            assert pr["chosen"].strip() != pr["rejected"].strip()
            assert numbers_equal(extract_answer(pr["chosen"], "number").value, gold[pr["source_id"]])
            assert pr["prompt"] == next(p.question for p in POOL if p.id == pr["source_id"])
        assert len(build_preference_examples(rdir / "pairs.jsonl")[0]) == len(pairs)
        assert (rdir / "model" / "synthkd_train.json").exists()
        asked += h["teacher_requests"]
        # accumulate (default): this round trained on the initial rows plus every round's new rows so far
        assert h["train_rows"] == 16 + sum(rounds["rounds"][q]["new_rows"] for q in range(1, r + 1))
        so_far = [x["id"] for x in read_jsonl(initial)] + [
            x["id"] for q in range(1, r + 1) for x in read_jsonl(run / f"round_{q}" / "new_rows.jsonl")]
        assert [x["id"] for x in read_jsonl(rdir / "train.jsonl")] == so_far  # the rows, not only their count
    assert sent == asked  # the loop sent exactly its corrections

    # rerun of a finished loop: nothing retrained, no teacher request at all
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("round_*/model/model.safetensors")}
    assert len(stamps) == 3
    srv.reset_stats()
    again = asyncio.run(loop())
    assert srv.stats()["requests_total"] == 0
    assert {p: p.stat().st_mtime_ns for p in run.glob("round_*/model/model.safetensors")} == stamps
    assert [h["accuracy"] for h in again["rounds"]] == [h["accuracy"] for h in rounds["rounds"]]
    assert sum("finished before" in m for m in messages) == 3

    # a crash in round 2 after its corrections: the rerun resumes round 2 without retraining rounds 0-1 and
    # without new teacher traffic (corrections are on disk; nothing is asked again)
    (run / "round_2" / "metrics.json").unlink()
    import shutil

    shutil.rmtree(run / "round_2" / "model")
    srv.reset_stats()
    resumed = asyncio.run(loop())
    assert srv.stats()["requests_total"] <= len(read_jsonl(run / "round_2" / "new_rows.rejects.jsonl"))
    assert resumed["rounds"][2]["new_rows"] == rounds["rounds"][2]["new_rows"]
    assert (run / "round_2" / "model" / "synthkd_train.json").exists()
    for q in (0, 1):
        p = run / f"round_{q}" / "model" / "model.safetensors"
        assert p.stat().st_mtime_ns == stamps[p]


@pytest.mark.train
def test_no_heldout_is_a_clear_error_before_anything(setup, make_server, tmp_path):
    _base, student, pool, _ = setup
    srv = make_server(FaultConfig(), responder=_responder())
    initial = _write(tmp_path / "initial.jsonl", [{"id": "a", "input": "q", "rationale": "r", "answer": "1"}])
    opts = _opts(tmp_path, student, pool, None, initial)

    async def go() -> None:
        t = _teacher(srv, tmp_path)
        try:
            await run_tailored(opts, t)
        finally:
            await t.aclose()

    with pytest.raises(InputError, match="held-out set is required"):
        asyncio.run(go())
    assert srv.stats()["requests_total"] == 0
    assert not (tmp_path / "run" / "round_0").exists()


@pytest.mark.train
def test_cli_no_heldout_exits_2_with_the_reason(setup, tmp_path):
    import typer
    from typer.testing import CliRunner

    from synthkd.commands.tailor import tailor_command

    _base, student, pool, _ = setup
    app = typer.Typer()
    app.command("tailor")(tailor_command)
    app.command("other")(lambda: None)  # two commands: "tailor" stays a subcommand, as in synthkd's app
    initial = _write(tmp_path / "initial.jsonl", [{"id": "a", "input": "q", "rationale": "r", "answer": "1"}])
    res = CliRunner().invoke(app, ["tailor", "--student", str(student), "--pool", str(pool), "--initial",
                                   str(initial), "--out", str(tmp_path / "run"), "--teacher", "simulated",
                                   "--base-url", "http://127.0.0.1:9/v1"])
    assert res.exit_code == 2, res.output
    assert "held-out set is required" in res.output
    assert not (tmp_path / "run").exists()


def _sloppy_responder():
    """The simulated teacher with slips (15%) in its answers and in its new exercises' intended answers."""
    return SimulatedResponder(PROBLEMS, error_rate=0.15, noise_rate=0.1, salt="tailor-llm2llm")


@pytest.mark.train
def test_k_samples_similar_exercises_and_final_dpo(setup, make_server, tmp_path):
    from synthkd.testing.simulated import parse_problem

    base, student, pool, heldout = setup
    srv = make_server(FaultConfig(), responder=_sloppy_responder())
    initial = _write(tmp_path / "initial.jsonl", [
        {"id": p.id, "input": p.question, "rationale": p.rationale()[0], "answer": str(p.answer)} for p in POOL[:16]])
    opts = _opts(tmp_path, student, pool, heldout, initial, samples=2, similar=2, dpo="final")
    opts.rounds = 1

    async def loop() -> dict:
        t = _teacher(srv, tmp_path)
        try:
            return await run_tailored(opts, t, say=lambda m: None)
        finally:
            await t.aclose()

    result = asyncio.run(loop())
    rdir = tmp_path / "run" / "round_1"
    h = result["rounds"][1]
    mistakes = read_jsonl(rdir / "mistakes.jsonl")
    greedy_wrong = len(read_jsonl(rdir / "pool_eval" / "mistakes.jsonl"))
    sampled_wrong = len(read_jsonl(rdir / "pool_eval" / "sample_1" / "mistakes.jsonl"))
    # k = 2: a question is a mistake when either answer is wrong; every wrong answer is kept
    assert max(greedy_wrong, sampled_wrong) <= len(mistakes) == h["mistakes"] <= greedy_wrong + sampled_wrong
    assert all(m["samples"] == 2 and len(m["wrong_outputs"]) == 2 - m["samples_correct"] >= 1 for m in mistakes)
    assert "pool_sample_accuracy" in h
    mistake_ids = {m["id"] for m in mistakes}
    pool_questions = {normalize(p.question) for p in PROBLEMS}
    # new exercises: aimed at this round's mistakes, none a copy of a pool/held-out question, same kind of problem
    exercises = read_jsonl(rdir / "exercises.jsonl")
    ex_rejects = read_jsonl(rdir / "exercises.rejects.jsonl")
    assert exercises and {x["source_id"] for x in exercises + ex_rejects} <= mistake_ids
    assert all(normalize(x["question"]) not in pool_questions for x in exercises)
    by_q = {p.id: p for p in PROBLEMS}
    for x in exercises:
        parsed = parse_problem(x["question"])
        assert parsed is not None and parsed.template == by_q[x["source_id"]].template
    # kept only when the teacher's independent solution reaches the intended answer, which is then right
    solved = read_jsonl(rdir / "similar_rows.jsonl")
    solved_rejects = read_jsonl(rdir / "similar_rows.rejects.jsonl")
    assert solved and len(solved) + len(solved_rejects) == len(exercises)
    for x in solved:
        assert numbers_equal(x["answer"], parse_problem(x["input"]).answer)
    assert any("does not reach the exercise's answer" in x["reject_reason"] for x in solved_rejects)
    assert h["similar_rows"] == len(solved) and h["corrections"] == len(read_jsonl(rdir / "new_rows.jsonl"))
    assert h["train_rows"] == 16 + h["corrections"] + h["similar_rows"]
    # self-reflection pairs: chosen = the correction (right answer), rejected = each wrong student answer
    pairs = read_jsonl(rdir / "pairs.jsonl")
    gold = {p.id: p.answer for p in POOL}
    # audit mutant 15: one pair per distinct wrong output (k = 2) of each corrected mistake, not one per mistake
    by_id = {m["id"]: m for m in mistakes}
    per_mistake = []
    for row in read_jsonl(rdir / "new_rows.jsonl"):
        chosen = rationale_target(row["rationale"], row["answer"]).strip()
        per_mistake.append(len({w.strip() for w in by_id[row["source_id"]]["wrong_outputs"] if w.strip()} - {chosen}))
    assert max(per_mistake) == 2, per_mistake  # the case that tells "each wrong output" from "the first one"
    assert len(pairs) == sum(per_mistake) == h["pairs"]
    assert pairs and all(p["chosen"].strip() != p["rejected"].strip() for p in pairs)
    assert all(numbers_equal(extract_answer(p["chosen"], "number").value, gold[p["source_id"]]) for p in pairs)
    assert len({p["id"] for p in pairs}) == len(pairs)
    # the DPO step after the loop: from the best round's student, on all pairs, scored on the held-out set
    ref = result["reflection"]
    assert ref is not None and ref["pairs"] == len(pairs)
    assert ref["accuracy"] == eval_accuracy(tmp_path / "run" / "reflection" / "heldout_eval", numbers_equal)
    train_record = json.loads((tmp_path / "run" / "reflection" / "model" / "synthkd_train.json").read_text())
    assert train_record["kind"] == "dpo" and train_record["policy_start"] == result["best_model"]
    # every teacher request was a different prompt, each sent once
    assert set(srv.stats()["prompt_counts"].values()) == {1}
    assert srv.stats()["requests_total"] == h["teacher_requests"]


def normalize(q: str) -> str:
    from synthkd.methods.similar_exercises import normalize_question

    return normalize_question(q)


@pytest.mark.train
def test_budget_spent_mid_round_stops_cleanly_then_resumes_without_paying_twice(setup, make_server, tmp_path):
    from synthkd.teachers.pricing import PriceTable

    base, student, pool, heldout = setup
    srv = make_server(FaultConfig(), responder=_responder())
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"simulated": {"input": 1000.0, "output": 1000.0}}))  # $1 per 1k tokens
    initial = _write(tmp_path / "initial.jsonl", [
        {"id": p.id, "input": p.question, "rationale": p.rationale()[0], "answer": str(p.answer)} for p in POOL[:16]])
    opts = _opts(tmp_path, student, pool, heldout, initial)
    opts.rounds = 1

    async def loop(max_cost: float) -> dict:
        t = OpenAICompatibleTeacher("simulated", base_url=srv.base_url, concurrency=4, max_retries=1, preflight=False,
                                    cache=RequestCache(tmp_path / "cache.sqlite"), prices=PriceTable.default(prices),
                                    max_cost=max_cost)
        try:
            return await run_tailored(opts, t, say=lambda m: None)
        finally:
            await t.aclose()

    first = asyncio.run(loop(max_cost=1.0))  # ~4 corrections' worth
    run = tmp_path / "run"
    assert first["budget_exhausted"] and "budget is spent" in first["stopped"] and "rerun" in first["stopped"]
    assert [h["round"] for h in first["rounds"]] == [0]
    assert not (run / "round_1" / "metrics.json").exists() and not (run / "round_1" / "model").exists()
    mistakes = read_jsonl(run / "round_1" / "mistakes.jsonl")
    paid = read_jsonl(run / "round_1" / "new_rows.jsonl") + read_jsonl(run / "round_1" / "new_rows.rejects.jsonl")
    assert 0 < len(paid) < len(mistakes)  # stopped mid-round, with what was paid for on disk
    sent_first = srv.stats()["requests_total"]
    stamp = (run / "round_0" / "model" / "model.safetensors").stat().st_mtime_ns

    second = asyncio.run(loop(max_cost=1000.0))
    assert not second["budget_exhausted"] and [h["round"] for h in second["rounds"]] == [0, 1]
    assert second["rounds"][1]["mistakes"] == len(mistakes)
    # nothing asked twice: every prompt reached the server once over both runs
    stats = srv.stats()
    assert set(stats["prompt_counts"].values()) == {1} and stats["requests_total"] == len(mistakes)
    assert sent_first == len(paid)
    assert (run / "round_0" / "model" / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.train
def test_cli_sigkill_mid_round_resumes_without_retraining_or_repaying(setup, make_server, tmp_path):
    """``synthkd tailor`` killed (SIGKILL) while round 2's corrections are in flight, then rerun."""
    import signal
    import subprocess
    import time

    from conftest import cli_env, synthkd_cmd

    base, student, pool, heldout = setup
    srv = make_server(FaultConfig(latency_ms=120), responder=SimulatedResponder(PROBLEMS, error_rate=0.1, salt="kill"))
    initial = _write(tmp_path / "initial.jsonl", [
        {"id": p.id, "input": p.question, "rationale": p.rationale()[0], "answer": str(p.answer)} for p in POOL[:16]])
    run = tmp_path / "run"
    cmd = synthkd_cmd("tailor", "--student", str(student), "--pool", str(pool), "--initial", str(initial),
                      "--heldout", str(heldout), "--out", str(run), "--teacher", "simulated", "--base-url",
                      srv.base_url, "--cache", str(tmp_path / "cache.sqlite"), "--concurrency", "4",
                      "--rounds", "2", "--patience", "5", "--similar", "1", "--dpo", "each", "--epochs", "3",
                      "--lr", "5e-3", "--batch-size", "4", "--max-length", "160", "--eval-batch-size", "64",
                      "--max-new-tokens", "40")
    env = cli_env(OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = run / "round_2" / "new_rows.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if target.exists() and len(target.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the loop ended before round 2's corrections: " + (proc.stderr.read() or "")[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "round_2" / "metrics.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("round_[01]/model*/model.safetensors")}
    assert len(stamps) >= 2
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "round 0: finished before" in res.stderr and "round 1: finished before" in res.stderr
    rounds = json.loads((run / "rounds.json").read_text())["rounds"]
    assert [h["round"] for h in rounds] == [0, 1, 2]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished rounds were not retrained
    # dpo="each": round 2's model is DPO from its SFT model
    assert json.loads((run / "round_2" / "model" / "synthkd_train.json").read_text())["kind"] == "dpo"
    # only requests in flight at the kill (at most the concurrency, 4) could reach the server twice
    counts = srv.stats()["prompt_counts"].values()
    assert sum(c - 1 for c in counts) <= 4, sorted(counts)[-6:]


@pytest.mark.train
def test_a_student_with_no_mistakes_stops_the_loop_with_a_clear_message(setup, make_server, tmp_path):
    from synthkd.train.evaluate import EvalOptions, run_eval

    base, student, pool, heldout = setup
    srv = make_server(FaultConfig(), responder=_responder())
    initial = _write(tmp_path / "initial.jsonl", [
        {"id": p.id, "input": p.question, "rationale": p.rationale()[0], "answer": str(p.answer)} for p in POOL[:16]])
    opts = _opts(tmp_path, student, pool, heldout, initial)
    opts.rounds = 0

    async def loop() -> dict:
        t = _teacher(srv, tmp_path)
        try:
            return await run_tailored(opts, t, say=messages.append)
        finally:
            await t.aclose()

    messages: list[str] = []
    asyncio.run(loop())  # round 0 only
    # a pool whose "gold" is what the round-0 student answers: it gets every question right
    rep = run_eval(EvalOptions(student=str(tmp_path / "run" / "round_0" / "model"), input=pool, kind="number",
                               gold_field="answer", batch_size=64, max_new_tokens=40))
    answered = [p for p in rep["_predictions"] if p["student_answer"] is not None]
    assert answered
    opts.pool = _write(tmp_path / "easy_pool.jsonl", [
        {"id": p["id"], "question": p["question"], "answer": p["student_answer"]} for p in answered])
    opts.rounds = 2
    result = asyncio.run(loop())
    assert "makes no mistakes on the training pool" in result["stopped"] and result["stopped"] == messages[-1]
    assert [h["round"] for h in result["rounds"]] == [0, 1] and result["rounds"][1]["status"] == "no_mistakes"
    assert result["rounds"][1]["accuracy"] == result["rounds"][0]["accuracy"]  # the student is unchanged
    assert srv.stats()["requests_total"] == 0 and not (tmp_path / "run" / "round_2").exists()


def test_pairs_one_per_distinct_wrong_output():  # audit mutant 15
    """pairs_from_rows: every distinct wrong output (stripped, not equal to the correction) is one pair."""
    from synthkd.loops.tailored import pairs_from_rows

    chosen = rationale_target("3 + 4 = 7.", "7")
    two = {"id": "a#r1", "source_id": "a", "round": 1, "input": "qa", "rationale": "3 + 4 = 7.", "answer": "7",
           "student_output": "It is 8.", "wrong_outputs": ["It is 8.", " It is 9. ", "It is 8. ", chosen, " "]}
    one = {"id": "b#r1", "source_id": "b", "round": 1, "input": "qb", "rationale": "1 + 1 = 2.", "answer": "2",
           "student_output": "It is 3."}  # no wrong_outputs (greedy only): the student_output
    exercise = {"id": "c#r1#s0", "source_id": "c", "round": 1, "input": "qc", "rationale": "x", "answer": "1"}
    pairs = pairs_from_rows([one, exercise, two])
    assert [(p["id"], p["rejected"]) for p in pairs] == [("a#r1", "It is 8."), ("a#r1#p1", "It is 9."),
                                                         ("b#r1", "It is 3.")]
    assert all(p["chosen"] == chosen for p in pairs[:2])


def _fake_round(run: Path, r: int, accuracy: float) -> None:
    """A round as a finished run leaves it: only metrics.json (the loop never touches a finished round)."""
    d = run / f"round_{r}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"round": r, "status": "trained", "accuracy": accuracy,
                                                "mistakes": 3, "new_rows": 3, "teacher_requests": 0}))


@pytest.mark.train
@pytest.mark.parametrize("patience, rounds_run, stop", [
    (1, [0, 1], "held-out accuracy has not improved for 1 round(s) (best 0.5000); stopping"),
    (2, [0, 1, 2], "held-out accuracy has not improved for 2 round(s) (best 0.5000); stopping"),
    (3, [0, 1, 2, 3], "finished the 3 round(s) asked for"),
], ids=["patience1", "patience2", "patience3"])
def test_patience_stops_after_that_many_rounds_without_a_heldout_gain(setup, make_server, tmp_path, patience,
                                                                      rounds_run, stop):  # audit mutant 18
    """Held-out accuracy 0.5, 0.4, 0.45, 0.7 per round (finished rounds on disk, so nothing trains): the
    loop stops as soon as the last ``patience`` rounds are no better than the best before them."""
    _base, student, pool, heldout = setup
    srv = make_server(FaultConfig(), responder=_responder())
    run = tmp_path / "run"
    for r, acc in enumerate([0.5, 0.4, 0.45, 0.7]):
        _fake_round(run, r, acc)
    initial = _write(tmp_path / "initial.jsonl", [{"id": "a", "input": "q", "rationale": "r", "answer": "1"}])
    opts = _opts(tmp_path, student, pool, heldout, initial)
    opts.rounds, opts.patience = 3, patience
    messages: list[str] = []

    async def loop() -> dict:
        t = _teacher(srv, tmp_path)
        try:
            return await run_tailored(opts, t, say=messages.append)
        finally:
            await t.aclose()

    result = asyncio.run(loop())
    assert [h["round"] for h in result["rounds"]] == rounds_run
    assert result["stopped"] == stop == messages[-1]
    assert json.loads((run / "rounds.json").read_text())["stopped"] == stop
    assert srv.stats()["requests_total"] == 0


@pytest.mark.train
def test_max_mistakes_samples_seeded_and_replace_trains_on_this_rounds_rows_only(setup, make_server, tmp_path):
    """--max-mistakes 5: the kept mistakes are the seeded sample ``Random(f"{seed}:{round}")`` of the
    round's mistakes (in pool order), not the first 5; --replace (accumulate=False): each round trains on
    its own new rows only.  Two training steps per round: only the data selection is under test."""
    import random

    _base, student, pool, heldout = setup
    srv = make_server(FaultConfig(), responder=_responder())
    initial = _write(tmp_path / "initial.jsonl", [
        {"id": p.id, "input": p.question, "rationale": p.rationale()[0], "answer": str(p.answer)} for p in POOL[:16]])
    opts = _opts(tmp_path, student, pool, heldout, initial, max_mistakes=5, accumulate=False)
    opts.settings = TrainSettings(max_steps=2, learning_rate=5e-3, batch_size=4, max_length=160, logging_steps=1,
                                  save_steps=10_000, skip_invalid=True, seed=7)

    async def loop() -> dict:
        t = _teacher(srv, tmp_path)
        try:
            return await run_tailored(opts, t, say=lambda m: None)
        finally:
            await t.aclose()

    result = asyncio.run(loop())
    run = tmp_path / "run"
    assert [h["round"] for h in result["rounds"]] == [0, 1, 2], result["stopped"]
    initial_ids = {x["id"] for x in read_jsonl(initial)}
    earlier: set[str] = set()
    for h in result["rounds"][1:]:
        r = h["round"]
        rdir = run / f"round_{r}"
        # audit mutant 17: every pool mistake, in pool order, and the seeded sample of them that was kept
        found = [str(m["id"]) for m in read_jsonl(rdir / "pool_eval" / "mistakes.jsonl")]
        assert h["mistakes_found"] == len(found) > 5 and h["mistakes"] == 5
        keep = sorted(random.Random(f"7:{r}").sample(range(len(found)), 5))
        expected = [found[i] for i in keep]
        assert expected != found[:5]  # this seed tells a random sample from the first five
        assert [m["id"] for m in read_jsonl(rdir / "mistakes.jsonl")] == expected
        # audit mutant 19: --replace trains round r on round r's new rows, without the initial or earlier rows
        new_ids = [x["id"] for x in read_jsonl(rdir / "new_rows.jsonl")]
        trained = [x["id"] for x in read_jsonl(rdir / "train.jsonl")]
        assert new_ids and trained == new_ids and h["train_rows"] == len(new_ids)
        assert not set(trained) & (initial_ids | earlier)
        assert {x.split("#")[0] for x in trained} <= set(expected)
        earlier |= set(new_ids)


def test_mistake_without_a_usable_gold_answer_is_an_input_error():
    from synthkd.loops.tailored import mistake_variables

    row = {"id": "m1", "question": "2+2?", "student_output": "5"}
    assert mistake_variables({**row, "gold_answer": 4.0})["answer"] == "4"
    with pytest.raises(InputError, match="no usable gold_answer"):
        mistake_variables({**row, "gold_answer": None})


@pytest.mark.train
def test_a_round_in_batch_mode_equals_the_online_round_step_by_step(setup, tmp_path):
    """Batch mode (issue 15): each teacher step of a round (corrections, new exercises, their solutions)
    goes out as provider batches, one step after the other; --no-wait stops with BatchSubmitted (exit 5)
    and the rerun resumes the round at that step.  The round's rows equal the online round's, no
    request is submitted twice, and the answers cost half."""
    from synthkd.errors import BatchSubmitted
    from synthkd.teachers.batch.engine import BatchExecutor
    from synthkd.testing.server import TestServer

    base, student, pool, heldout = setup
    initial = _write(tmp_path / "initial.jsonl", [
        {"id": p.id, "input": p.question, "rationale": p.rationale()[0], "answer": str(p.answer)} for p in POOL[:16]])

    def run(sub: str, srv, *, batch: bool, wait: bool = True) -> dict:
        opts = _opts(tmp_path / sub, student, pool, heldout, initial, similar=2)
        opts.rounds = 1

        async def loop() -> dict:
            t = _teacher(srv, tmp_path / sub)
            if batch:
                t.batch = BatchExecutor(t, wait=wait, poll_s=0.05)
            try:
                return await run_tailored(opts, t, say=lambda m: None)
            finally:
                await t.aclose()

        return asyncio.run(loop())

    def rows(sub: str, name: str) -> list[dict]:
        keep = ("id", "input", "question", "answer", "rationale", "text", "reject_reason", "source_id")
        out = read_jsonl(tmp_path / sub / "run" / "round_1" / name)
        return sorted(({k: r[k] for k in keep if k in r} for r in out), key=lambda r: str(r["id"]))

    with TestServer(FaultConfig(), responder=_sloppy_responder()) as online_srv:
        online = run("online", online_srv, batch=False)
    with TestServer(FaultConfig(batch_seconds=0.2), responder=_sloppy_responder()) as srv:
        with pytest.raises(BatchSubmitted):  # --no-wait: the corrections are submitted, the command stops
            run("batch", srv, batch=True, wait=False)
        assert srv.stats()["batch"]["batches_created"] == 1
        result = run("batch", srv, batch=True)  # the rerun waits, collects, and goes on step by step
        b = srv.stats()["batch"]
    assert online["rounds"][1]["corrections"] > 0 and online["rounds"][1]["similar_rows"] > 0
    for name in ("new_rows.jsonl", "exercises.jsonl", "similar_rows.jsonl", "new_rows.rejects.jsonl",
                 "similar_rows.rejects.jsonl"):
        assert rows("batch", name) == rows("online", name), name
    assert result["rounds"][1]["accuracy"] == online["rounds"][1]["accuracy"]
    assert b["batches_created"] == 3 and not b["resubmitted_ids"]  # corrections, exercises, solutions
    assert srv.stats()["by_endpoint"].get("/v1/chat/completions", 0) == 0  # nothing was sent online
    assert b["requests_submitted"] == online_srv.stats()["by_endpoint"]["/v1/chat/completions"]


def test_from_base_needs_the_accumulated_rows(tmp_path):
    """--from-base retrains every round from the base student, so a round trained on its new rows alone
    (--replace) would forget every earlier round: refused before any training or teacher call."""
    from synthkd.loops.tailored import check_options

    pool = _write(tmp_path / "pool.jsonl", [{"id": "p", "question": "q", "answer": "1"}])
    initial = _write(tmp_path / "initial.jsonl", [{"id": "a", "input": "q", "rationale": "r", "answer": "1"}])
    opts = _opts(tmp_path, tmp_path / "student", pool, pool, initial, from_base=True, accumulate=False)
    with pytest.raises(InputError, match="--from-base retrains each round from the base student"):
        check_options(opts)
    check_options(_opts(tmp_path, tmp_path / "student", pool, pool, initial, from_base=True))
