"""The ready pipelines in batch mode (``teacher: {batch: true}``) against the Batch API emulator: their
data stages write the same rows as online for the same deterministic teacher, multi-step methods
(PromptMix generate -> relabel, the rounds of generate.tasks, the relabel and label-conflict clean
operators) advancing one batch per step.

The pipelines are run as shipped up to their last data stage (training a student changes nothing
about batch mode and is covered by tests/test_ready_pipelines.py and tests/test_intent_pipeline.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from conftest import REPO, cli_env, read_jsonl, synthkd_cmd
from synthkd.testing.banking77_responder import Banking77Responder
from synthkd.testing.server import FaultConfig, TestServer

BATCH = ["--set", "teacher.batch=true", "--set", "teacher.wait=true", "--set", "teacher.batch_poll=0.05"]


def _trimmed(name: str, tmp_path: Path, keep: list[str]) -> Path:
    """The ready pipeline with only its stages in ``keep``."""
    cfg = yaml.safe_load((REPO / "pipelines" / name).read_text())
    cfg["stages"] = [s for s in cfg["stages"] if s["name"] in keep]
    cfg["teacher"].pop("max_cost", None)
    # paths in a pipeline are relative to its file (../data/...): the same layout, the data linked
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    if not (tmp_path / "data").exists():
        (tmp_path / "data").symlink_to(REPO / "data")
    path = tmp_path / "pipelines" / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _run(pipeline: Path, runs: Path, cache: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    args = ["run", str(pipeline), "--set", f"run_dir={runs}", "--set", f"teacher.cache={cache}", *extra]
    return subprocess.run(synthkd_cmd(*args), cwd=REPO, env=cli_env(OPENAI_BASE_URL=url, SYNTHKD_TEACHER="gpt-4o-mini"),
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def _content(path: Path) -> list[str]:
    """The rows of a stage output without how each was paid for (cached, cost), in a stable order."""
    out = []
    for row in read_jsonl(path):
        out.append(json.dumps({k: v for k, v in row.items() if "cost" not in k and "cached" not in k}, sort_keys=True))
    return sorted(out)


def _compare(online_dir: Path, batch_dir: Path, stages: list[str]) -> dict[str, int]:
    sizes = {}
    for st in stages:
        a, b = _content(online_dir / f"{st}.jsonl"), _content(batch_dir / f"{st}.jsonl")
        assert a == b, f"stage {st}: batch rows differ from online rows"
        sizes[st] = len(a)
    return sizes


def test_svamp_step_by_step_in_batch_mode_equals_online(tmp_path):
    stages = ["rationales", "clean"]
    pipe = _trimmed("svamp_step_by_step.yaml", tmp_path, stages)
    with TestServer(FaultConfig()) as online_srv:
        res = _run(pipe, tmp_path / "online", tmp_path / "online.sqlite", online_srv.base_url)
        assert res.returncode == 0, res.stderr[-3000:]
    with TestServer(FaultConfig(batch_seconds=0.3)) as srv:
        args = ("--set", "teacher.batch=true", "--set", "teacher.batch_poll=0.05", "--set", "teacher.batch_max_requests=300")
        res = _run(pipe, tmp_path / "batch", tmp_path / "batch.sqlite", srv.base_url, *args, "--set", "teacher.wait=false")
        assert res.returncode == 5, res.stderr[-3000:]  # submitted; the stage stays resumable
        m = json.loads((tmp_path / "batch" / "svamp-step-by-step" / "manifest.json").read_text())
        assert m["stages"]["rationales"]["status"] == "batch submitted"
        res = _run(pipe, tmp_path / "batch", tmp_path / "batch.sqlite", srv.base_url, *args, "--set", "teacher.wait=true")
        assert res.returncode == 0, res.stderr[-3000:]
        b = srv.stats()["batch"]
        online_calls = srv.stats()["by_endpoint"].get("/v1/chat/completions", 0)
    sizes = _compare(tmp_path / "online" / "svamp-step-by-step", tmp_path / "batch" / "svamp-step-by-step", stages)
    assert sizes["rationales"] == 800
    assert b["requests_submitted"] == 800 and b["batches_created"] == 3 and not b["resubmitted_ids"]
    assert online_calls == 0  # everything went through the batches
    m = json.loads((tmp_path / "batch" / "svamp-step-by-step" / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in m["stages"].values())


def test_intent_pipeline_in_batch_mode_equals_online_step_by_step(tmp_path):
    stages = ["tasks", "relabel_tasks", "promptmix", "merge", "clean"]
    pipe = _trimmed("intent_from_prompts.yaml", tmp_path, stages)
    small = ["--set", "stages.tasks.options.per_label=5", "--set", "stages.tasks.options.batch_size=6",
             "--set", "stages.promptmix.options.per_label=2", "--set", "stages.promptmix.options.examples_per_call=2"]
    with TestServer(FaultConfig(), responder=Banking77Responder.from_dir()) as online_srv:
        res = _run(pipe, tmp_path / "online", tmp_path / "online.sqlite", online_srv.base_url, *small)
        assert res.returncode == 0, res.stderr[-3000:]
        online_sent = online_srv.stats()["by_endpoint"].get("/v1/chat/completions", 0)
    with TestServer(FaultConfig(batch_seconds=0.3), responder=Banking77Responder.from_dir()) as srv:
        res = _run(pipe, tmp_path / "batch", tmp_path / "batch.sqlite", srv.base_url, *small, *BATCH)
        assert res.returncode == 0, res.stderr[-3000:]
        b = srv.stats()["batch"]
        direct = srv.stats()["by_endpoint"].get("/v1/chat/completions", 0)
    sizes = _compare(tmp_path / "online" / "intent-from-prompts", tmp_path / "batch" / "intent-from-prompts", stages)
    assert sizes["tasks"] > 0 and sizes["relabel_tasks"] > 0 and sizes["clean"] > 0
    assert direct == 0 and b["requests_submitted"] == online_sent and not b["resubmitted_ids"]
    # PromptMix generates, then relabels what it generated: at least two batches for that stage alone
    assert b["batches_created"] >= 3


def test_clean_judge_in_batch_mode_equals_online(tmp_path):
    from test_filters_teacher import judge_responder, judge_rows

    rows = judge_rows()
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def clean(srv: TestServer, name: str, *extra: str) -> subprocess.CompletedProcess:
        args = ["clean", "judge", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / f"{name}.jsonl"),
                "--teacher", "test-model", "--base-url", srv.base_url, "--threshold", "6", *extra]
        return subprocess.run(synthkd_cmd(*args), env=cli_env(SYNTHKD_CACHE=str(tmp_path / f"{name}.sqlite")),
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    with TestServer(FaultConfig(), responder=judge_responder) as srv:
        assert clean(srv, "online").returncode == 0
    with TestServer(FaultConfig(batch_seconds=0.3), responder=judge_responder) as srv:
        res = clean(srv, "batch", "--batch", "--wait", "--batch-poll", "0.05")
        assert res.returncode == 0, res.stderr[-2000:]
        b = srv.stats()["batch"]
    for name in ("", ".rejects"):
        assert _content(tmp_path / f"batch{name}.jsonl") == _content(tmp_path / f"online{name}.jsonl")
    assert read_jsonl(tmp_path / "batch.jsonl") and read_jsonl(tmp_path / "batch.rejects.jsonl")
    assert b["requests_submitted"] == 60 and b["batches_created"] == 1


def test_generate_tasks_rounds_with_no_wait_reruns_equal_online(tmp_path):
    """``synthkd generate tasks`` (rounds of requests that depend on earlier answers, a JobFeed) in batch
    mode with --no-wait: each rerun collects the last round's batch and submits the next (exit 5), until
    the job is done (exit 0) with the rows of an online run; nothing is submitted twice."""
    import sys
    import time

    sys.path.insert(0, str(REPO / "tests" / "fixtures" / "tasks"))
    from tasks_responders import BankingResponder, load_banking

    spec = REPO / "tests" / "fixtures" / "tasks" / "banking77_spec.yaml"

    def gen(srv: TestServer, name: str, *extra: str) -> subprocess.CompletedProcess:
        args = ["generate", "tasks", "--spec", str(spec), "-o", str(tmp_path / f"{name}.jsonl"), "-n", "10",
                "--batch-size", "5", "-m", "test-model", "--base-url", srv.base_url,
                "--cache", str(tmp_path / f"{name}.sqlite"), *extra]
        return subprocess.run(synthkd_cmd(*args), env=cli_env(), capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)

    with TestServer(FaultConfig(), responder=BankingResponder(load_banking())) as srv:
        assert gen(srv, "online").returncode == 0
    codes = []
    with TestServer(FaultConfig(batch_seconds=0.2), responder=BankingResponder(load_banking())) as srv:
        for _ in range(12):
            res = gen(srv, "batch", "--batch", "--no-wait")
            codes.append(res.returncode)
            if res.returncode != 5:
                break
            assert "rerun the same command to collect" in res.stderr
            deadline = time.monotonic() + 60
            while srv.stats()["batch"]["live_batches"]:
                assert time.monotonic() < deadline, "the batch did not end"
                time.sleep(0.05)
        b = srv.stats()["batch"]
    assert codes[-1] == 0 and codes[0] == 5 and len(codes) >= 3, codes  # at least two rounds of batches
    assert _content(tmp_path / "batch.jsonl") == _content(tmp_path / "online.jsonl")
    assert len(read_jsonl(tmp_path / "batch.jsonl")) == 50
    assert not b["resubmitted_ids"] and b["batches_created"] == len(codes) - 1


def test_star_rationalization_is_a_second_batch_step_and_equals_online(tmp_path):
    """generate.rationales with STaR rationalization: the rows the teacher got wrong are asked again with
    the gold answer, a second step that exists only once the first step's answers are in the cache."""
    pipe = _trimmed("svamp_step_by_step.yaml", tmp_path, ["rationales"])
    star = ["--set", "stages.rationales.options.rationalize=true"]
    with TestServer(FaultConfig()) as online_srv:
        res = _run(pipe, tmp_path / "online", tmp_path / "online.sqlite", online_srv.base_url, *star)
        assert res.returncode == 0, res.stderr[-3000:]
        online_sent = online_srv.stats()["by_endpoint"].get("/v1/chat/completions", 0)
    with TestServer(FaultConfig(batch_seconds=0.3)) as srv:
        res = _run(pipe, tmp_path / "batch", tmp_path / "batch.sqlite", srv.base_url, *star, *BATCH,
                   "--set", "teacher.batch_max_requests=500")
        assert res.returncode == 0, res.stderr[-3000:]
        b = srv.stats()["batch"]
    rows = read_jsonl(tmp_path / "batch" / "svamp-step-by-step" / "rationales.jsonl")
    assert _compare(tmp_path / "online" / "svamp-step-by-step", tmp_path / "batch" / "svamp-step-by-step",
                    ["rationales"])["rationales"] == 800
    rationalized = sum(bool(r.get("rationalized")) for r in rows)
    assert rationalized > 0 and online_sent == 800 + rationalized
    assert b["requests_submitted"] == online_sent and not b["resubmitted_ids"]
    assert b["batches_created"] == 2 + -(-rationalized // 500)  # step 1: 500 + 300; step 2: the wrong ones
