"""Self-Instruct: the pool filter (exact ROUGE-L, fast), the paper's instruction filters and parsers,
the bootstrap loop on the real 175 seed tasks through the loopback server with a scripted teacher that
answers with real Self-Instruct instructions and instances, and the CLI's rerun / SIGKILL resume."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from conftest import cli_env, read_jsonl, run_cli, sigkill_after_first_row, synthkd_cmd
from synthkd.jsonl_io import InputError
from synthkd.methods.self_instruct import (
    BAD_KEYWORDS,
    SelfInstructConfig,
    generate_self_instruct,
    instruction_filter,
    load_seed_tasks,
    parse_instances,
    parse_instructions,
    plan_self_instruct,
)
from synthkd.near_dup_pool import NearDupPool, rouge_l_f
from synthkd.teachers.cache import RequestCache
from synthkd.teachers.jobs import MethodStats
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.server import FaultConfig, TestServer

FIX = Path(__file__).resolve().parent / "fixtures" / "tasks"
sys.path.insert(0, str(FIX))
from tasks_responders import SelfInstructResponder, load_banking, load_user_oriented  # noqa: E402

SEEDS = FIX / "seed_tasks.jsonl"
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _real_texts() -> list[str]:
    seeds = [json.loads(x)["instruction"] for x in SEEDS.read_text().splitlines()]
    uo = [t["instruction"] for t in load_user_oriented()]
    banking = [t for texts in load_banking().values() for t in texts]
    return seeds + uo + banking


# ------------------------------------------------------------------------------------------ pool filter

def test_rouge_l_equals_rouge_score_on_real_texts():
    texts = _real_texts()
    rng = random.Random(0)
    for _ in range(1500):
        a, b = rng.sample(texts, 2)
        assert rouge_l_f(a, b) == pytest.approx(SCORER.score(a, b)["rougeL"].fmeasure, abs=1e-12)
    a = texts[0]
    assert rouge_l_f(a, a) == 1.0 and rouge_l_f(a, "") == 0.0


def test_pool_prefilter_loses_nothing_against_brute_force():
    texts = _real_texts()
    rng = random.Random(1)
    sample = rng.sample(texts, 260)
    # planted near-copies so there is something to find
    sample += [t + " please" for t in sample[:20]] + [t.upper() for t in sample[20:30]]
    rng.shuffle(sample)
    pool, kept = NearDupPool(0.7), []
    for i, t in enumerate(sample):
        brute = max((SCORER.score(k, t)["rougeL"].fmeasure for k in kept), default=0.0)
        hit = pool.find(t)
        assert (hit is not None) == (brute > 0.7), (t, brute, hit)
        if hit is not None:
            assert hit.score == pytest.approx(brute)
        else:
            pool.add(t, str(i))
            kept.append(t)
    assert len(kept) < len(sample) - 25


def test_pool_is_fast_for_thousands_of_items():
    real = _real_texts()  # 175 seeds + 80 user-oriented instructions + 315 Banking77 texts
    rng = random.Random(2)
    mixed = [f"{a} {b}" for a, b in (rng.sample(real, 2) for _ in range(2600))]  # long, overlapping texts
    texts = real + mixed + [t + " please" for t in mixed[:400]]
    pool = NearDupPool(0.7)
    t0 = time.perf_counter()
    for i, t in enumerate(texts):
        if pool.find(t) is None:
            pool.add(t, str(i))
    elapsed = time.perf_counter() - t0
    print(f"pool: {len(texts)} checks, {len(pool)} kept, {elapsed:.2f}s, {pool.stats.as_dict()}")
    assert len(texts) > 3500 and len(pool) > 1000
    # all pairs would be ~2.5 million ROUGE-L computations (~3 minutes with rouge-score); the prefix
    # filter and the bag bound leave fewer exact LCS computations than there are checks
    assert pool.stats.lcs_computed < len(texts)
    assert elapsed < 8.0


# ------------------------------------------------------------------------------------------ filters and parsing

@pytest.mark.parametrize("inst, reason", [
    ("Draw a picture of a cat.", "bad_keyword"),
    ("Go to the store and buy milk for me.", "bad_keyword"),
    ("Create a flowchart of the process.", "bad_keyword"),
    ("Summarize the attached file in one line.", "bad_keyword"),
    ("Write a program that sorts a list of numbers.", "write_a_program"),
    ("Tell a joke.", "too_short"),  # the paper drops 3 words or fewer
    ("Tell me a joke.", None),
    ("\"Quote\" this sentence in a formal style please.", "starts_with_punctuation"),
    ("Écris un poème sur la mer et le vent.", "non_ascii_start"),
    (" ".join(["word"] * 151), "too_long"),
    ("Update the user profile description to sound more professional.", None),  # 'file' only inside a word
    ("Explain the mapping between the two lists of numbers.", None),
])
def test_instruction_filter_follows_the_paper(inst, reason):
    got = instruction_filter(inst)
    assert (got.split(":")[0] if got else None) == reason
    assert {"image", "graph", "picture", "file", "map", "draw", "plot", "go to", "video", "audio", "music",
            "flowchart", "diagram"} <= set(BAD_KEYWORDS)


def test_parse_instructions_paper_continuation_and_chat_style():
    paper = "Suggest a name for a bakery.\n10. Classify the tweet's sentiment.\n11 . Translate the sentence."
    assert parse_instructions(paper, 9)[:2] == ["Suggest a name for a bakery.", "Classify the tweet's sentiment."]
    chat = ("Sure! Here are more tasks:\n\n9. Instruction: write a limerick about rain.\nInput: none\n"
            "10) Rank the following cities by population.\n\n11. Find the odd one out.")
    assert parse_instructions(chat, 9) == ["Write a limerick about rain.", "Rank the following cities by population.",
                                          "Find the odd one out."]


def test_parse_instances_input_first_output_first_and_run_on():
    text = ("Example 1\nInput: 2 + 2\nOutput: 4\n\nExample 2\nInput: 3 * 3\nOutput: 9\n\n"
            "Task: Something else entirely\nExample 1\nOutput: nope")
    assert parse_instances(text, False) == [("2 + 2", "4"), ("3 * 3", "9")]
    assert parse_instances("Output: Paris is the capital.", False) == [("", "Paris is the capital.")]
    assert parse_instances("Just an answer with no labels.", False) == [("", "Just an answer with no labels.")]
    clf = "Class label: Positive\nInput: I love it.\nClass label: Negative\nInput: Awful,\nreally awful.\nClass label: Neutral"
    assert parse_instances(clf, True) == [("I love it.", "Positive"), ("Awful,\nreally awful.", "Negative"), ("", "Neutral")]


def test_bad_seed_file_is_named_by_line_and_field(tmp_path):
    lines = SEEDS.read_text().splitlines()[:4]
    bad = json.loads(lines[2])
    bad["is_classification"] = "no"
    lines[2] = json.dumps(bad)
    lines.append(json.dumps({**json.loads(lines[0]), "id": "x", "instances": [{"input": "", "output": ""}]}))
    lines.append(lines[1])
    p = tmp_path / "seeds.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as exc:
        load_seed_tasks(p)
    msg = str(exc.value)
    assert f"{p}:3: field 'is_classification'" in msg
    assert f"{p}:5: field 'instances[0].output': missing or empty" in msg
    assert f"{p}:6: field 'id': duplicate id 'seed_task_1' (first on line 2)" in msg


# ------------------------------------------------------------------------------------------ the loop

def _run_api(srv: TestServer, config: SelfInstructConfig, max_retries: int = 6,
             cache: Path | None = None) -> tuple[list[dict], MethodStats]:
    async def go():
        t = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, concurrency=8, max_retries=max_retries,
                                    cache=RequestCache(cache) if cache else None)
        st = MethodStats()
        try:
            plan = plan_self_instruct(load_seed_tasks(SEEDS), config)
            rows = [r async for r in generate_self_instruct(t, plan, stats=st)]
        finally:
            await t.aclose()
        return rows, st

    return asyncio.run(go())


def test_bootstrap_from_the_175_seeds(make_server):
    responder = SelfInstructResponder(load_user_oriented())
    srv = make_server(responder=responder)
    N = 30
    rows, st = _run_api(srv, SelfInstructConfig(num_instructions=N, requests_per_round=3))
    kept = [r for r in rows if "reject_reason" not in r]
    assert sorted(r["id"] for r in kept) == sorted(f"si-{k}" for k in range(N))
    assert all(r["instances"] and all(x["output"] for x in r["instances"]) for r in kept)
    # independent oracle: no kept instruction is within ROUGE-L 0.7 of a seed or of another kept one
    seeds = [s.instruction for s in load_seed_tasks(SEEDS)]
    insts = [r["instruction"] for r in kept]
    for i, a in enumerate(insts):
        assert all(SCORER.score(a, b)["rougeL"].fmeasure <= 0.7 for b in insts[i + 1:] + seeds), a
        assert instruction_filter(a) is None
    drops = Counter(r["reject_reason"].split(":")[0] for r in rows if "reject_reason" in r)
    assert {k: v for k, v in st.drops.items() if not k.startswith("instance_")} == drops
    assert drops["bad_keyword"] >= 3 and drops["seed_copy"] + drops["near_duplicate"] >= 3, drops
    # classification tasks got output-first instance prompts, the others input-first
    gen_prompts = [p for p in responder.prompts if p.startswith("Come up with a series of tasks")]
    inst_prompts = {p.rsplit("Task:", 1)[1].strip(): p for p in responder.prompts
                    if p.startswith(("Given the classification", "Come up with examples"))}
    clf = [r for r in kept if r["is_classification"]]
    assert clf and len(clf) < len(kept)
    for r in kept:
        assert inst_prompts[r["instruction"]].startswith("Given the classification" if r["is_classification"] else "Come up")
        assert r["template"] == ("self_instruct/instances_output_first" if r["is_classification"]
                                 else "self_instruct/instances_input_first")
    # few-shot pool: 8 instructions; from round 1 on, 2 of them generated ones (round 0 is the first 3 prompts)
    norm = {i.rstrip(":") for i in insts}
    shown = [re.findall(r"^\d+\. (.+)$", p, re.M) for p in gen_prompts]
    assert len(shown) > 3 and all(len(s) == 8 for s in shown)
    assert [sum(x in norm for x in s) for s in shown] == [0, 0, 0] + [2] * (len(shown) - 3)
    rounds = {r["round"] for r in kept}
    assert len(rounds) >= 2 and st.requests == srv.stats()["by_endpoint"]["/v1/chat/completions"]


def test_failed_generation_stops_growth_and_rerun_continues_the_same_run(tmp_path, make_server):
    config = SelfInstructConfig(num_instructions=30, requests_per_round=3)
    ref, _ = _run_api(make_server(responder=SelfInstructResponder(load_user_oriented())), config)
    ref_kept = {r["id"]: r["instruction"] for r in ref if "reject_reason" not in r}
    responder = SelfInstructResponder(load_user_oriented(), fail_generation_after=4)
    srv = make_server(responder=responder)
    rows, st = _run_api(srv, config, max_retries=0, cache=tmp_path / "c.sqlite")
    kept = {r["id"]: r["instruction"] for r in rows if "reject_reason" not in r}
    assert "instructions" in st.short and "failed" in st.short["instructions"]
    assert 0 < len(kept) < 30 and all(r["instances"] for r in rows if "reject_reason" not in r)
    assert any(r["reject_reason"].startswith("teacher_error") for r in rows if "reject_reason" in r)
    # what was kept is a prefix of the failure-free run (same ids, same instructions) ...
    assert all(ref_kept[k] == v for k, v in kept.items())
    # ... and the rerun, with the teacher healthy again, finishes exactly that run
    responder.fail_generation_after = None
    rows, st = _run_api(srv, config, cache=tmp_path / "c.sqlite")
    assert {r["id"]: r["instruction"] for r in rows if "reject_reason" not in r} == ref_kept and not st.short
    assert st.cached > 0


# ------------------------------------------------------------------------------------------ the CLI

def _args(tmp_path: Path, srv: TestServer, out: str = "out.jsonl", cache: str = "c.sqlite", *extra: str) -> list[str]:
    return ["generate", "self-instruct", "--seeds", str(SEEDS), "-o", str(tmp_path / out), "-n", "24",
            "--requests-per-round", "3", "-m", "test-model", "--base-url", srv.base_url,
            "--cache", str(tmp_path / cache), *extra]


def _chat(srv: TestServer) -> int:
    return srv.stats()["by_endpoint"]["/v1/chat/completions"]


def _rows(path: Path) -> list[tuple]:
    return sorted((r["id"], r["instruction"], json.dumps(r["instances"]), r["is_classification"]) for r in read_jsonl(path))


def test_cli_rerun_same_prompts_zero_requests(tmp_path, make_server):
    srv = make_server(FaultConfig(latency_ms=5, latency_jitter_ms=5), responder=SelfInstructResponder(load_user_oriented()))
    res = run_cli(*_args(tmp_path, srv, "out.jsonl", "c.sqlite", "--summary-json", str(tmp_path / "s.json")))
    assert res.returncode == 0, res.stderr
    assert re.search(r"self-instruct: 24 rows written .*24/24 instructions with instances.*bad_keyword \d+", res.stderr), res.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["kept"] == 24 and summary["requests_sent"] == _chat(srv) > 24
    out_bytes = (tmp_path / "out.jsonl").read_bytes()
    total = srv.stats()["requests_total"]
    res = run_cli(*_args(tmp_path, srv))
    assert res.returncode == 0, res.stderr
    assert srv.stats()["requests_total"] == total and (tmp_path / "out.jsonl").read_bytes() == out_bytes
    assert "0 rows written" in res.stderr and "24 already there" in res.stderr
    # a fresh cache, one request at a time: a different completion order issues the same prompts
    sent = _chat(srv)
    res = run_cli(*_args(tmp_path, srv, "serial.jsonl", "c2.sqlite", "-c", "1"))
    assert res.returncode == 0, res.stderr
    assert _chat(srv) == 2 * sent and _rows(tmp_path / "serial.jsonl") == _rows(tmp_path / "out.jsonl")


def test_cli_bad_seeds_exit_2_before_any_request(tmp_path, make_server):
    srv = make_server()
    p = tmp_path / "seeds.jsonl"
    p.write_text(SEEDS.read_text().splitlines()[0] + "\n{\"id\": \"x\", \"instruction\": \"\"}\n")
    res = run_cli(*_args(tmp_path, srv)[:3], str(p), *_args(tmp_path, srv)[4:])
    assert res.returncode == 2 and f"{p}:2: field 'instruction': missing or empty" in res.stderr, res.stderr
    assert srv.stats()["requests_total"] == 0


def test_cli_sigkill_then_rerun_pays_only_for_in_flight(tmp_path, make_server):
    concurrency = 4
    ref_srv = make_server(responder=SelfInstructResponder(load_user_oriented()))
    assert run_cli(*_args(tmp_path, ref_srv, "ref.jsonl", "ref.sqlite")).returncode == 0
    needed = _chat(ref_srv)
    srv = make_server(FaultConfig(latency_ms=60, latency_jitter_ms=40, seed=5),
                      responder=SelfInstructResponder(load_user_oriented()))
    args = synthkd_cmd(*_args(tmp_path, srv, "out.jsonl", "c.sqlite", "-c", str(concurrency)))
    proc = subprocess.Popen(args, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = sigkill_after_first_row(proc, tmp_path / "out.jsonl")
    assert 0 < partial < 24
    res = run_cli(*args[3:])
    assert res.returncode == 0, res.stderr
    ids = [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert len(ids) == len(set(ids)) == 24
    assert _rows(tmp_path / "out.jsonl") == _rows(tmp_path / "ref.jsonl")
    extra = _chat(srv) - needed
    assert 0 <= extra <= concurrency, f"{extra} requests paid twice"
