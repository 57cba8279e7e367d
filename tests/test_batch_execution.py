"""Batch mode end to end through the CLI, against the test server's Batch API emulator (real HTTP):
the same rows as online, --no-wait and the rerun that collects, expiry with partial results, item
failures resubmitted then rejected, the budget before submission, SIGKILL at random points, and
``synthkd batch status|cancel``."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import cli_env, read_jsonl, synthkd_cmd, write_prompts
from synthkd.testing.server import FaultConfig, TestServer

MODEL = "gpt-4o-mini"  # a priced model: the budget and the batch cost are checked
VOLATILE = ("cached", "cost_usd")  # how a row was paid for, not what it says


def _cmd(srv: TestServer, inp: Path, out: Path, *extra: str, model: str = MODEL) -> list[str]:
    return synthkd_cmd("complete", "-m", model, "--base-url", srv.base_url, "-i", str(inp), "-o", str(out),
                       "--batch-poll", "0.05", *extra)


def _run(cmd: list[str], cache: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=cli_env(SYNTHKD_CACHE=str(cache), ANTHROPIC_API_KEY="k", **env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _rows(path: Path) -> dict[str, dict]:
    rows = read_jsonl(path)
    by_id = {r["id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in rows}
    assert len(by_id) == len(rows), "an id was written twice"
    return by_id


def _batch(srv: TestServer) -> dict:
    return srv.stats()["batch"]


def _until(cond, what: str, timeout: float = 60.0) -> None:
    """Wait for a condition (a server counter, a batch's state) with a deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _provider_batch(srv: TestServer, batch_id: str) -> dict:
    """The batch as the emulator reports it over HTTP (GET /v1/batches/{id})."""
    with urllib.request.urlopen(f"{srv.base_url}/batches/{batch_id}") as r:
        return json.loads(r.read())


@pytest.mark.parametrize("flavor,model", [("openai", MODEL), ("anthropic", "anthropic:claude-haiku-4-5")])
def test_batch_rows_equal_online_rows_at_half_the_cost(tmp_path, flavor, model):
    write_prompts(tmp_path / "in.jsonl", 30, messages=True)
    with TestServer(FaultConfig(batch_seconds=0.3), flavor=flavor) as srv:
        online = _run(_cmd(srv, tmp_path / "in.jsonl", tmp_path / "online.jsonl", model=model),
                      tmp_path / "online-cache.sqlite")
        assert online.returncode == 0, online.stderr[-2000:]
        res = _run(_cmd(srv, tmp_path / "in.jsonl", tmp_path / "batch.jsonl", "--batch", "--wait",
                        "--batch-max-requests", "12", "--summary-json", str(tmp_path / "s.json"), model=model),
                   tmp_path / "batch-cache.sqlite")
        assert res.returncode == 0, res.stderr[-3000:]
        b = _batch(srv)
    assert _rows(tmp_path / "batch.jsonl") == _rows(tmp_path / "online.jsonl")
    assert b["batches_created"] == 3 and b["requests_submitted"] == 30 and not b["resubmitted_ids"]  # 12+12+6
    online_cost = sum(r["cost_usd"] for r in read_jsonl(tmp_path / "online.jsonl"))
    batch_cost = sum(r["cost_usd"] for r in read_jsonl(tmp_path / "batch.jsonl"))
    assert online_cost > 0 and batch_cost == pytest.approx(online_cost / 2)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["cost_usd"] == pytest.approx(online_cost / 2)
    assert summary["requests_batched"] == 30 and summary["rows_written"] == 30
    assert "30 in batches at batch prices" in res.stderr and "ETA" in res.stderr


def test_no_wait_exits_5_and_the_rerun_collects(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 25)
    cache = tmp_path / "cache.sqlite"
    with TestServer(FaultConfig(batch_seconds=8.0)) as srv:
        cmd = _cmd(srv, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--batch", "--no-wait",
                   "--summary-json", str(tmp_path / "s.json"))
        first = _run(cmd, cache)
        assert first.returncode == 5, first.stderr[-2000:]
        assert "rerun the same command to collect" in first.stderr
        s = json.loads((tmp_path / "s.json").read_text())
        assert s["exit_code"] == 5 and s["stopped"] == "batch" and s["rows_not_started"] == 25
        assert not read_jsonl(tmp_path / "out.jsonl")
        records = [json.loads(p.read_text()) for p in (tmp_path / "cache.sqlite.batches").glob("*.json")]
        assert [r["state"] for r in records] == ["submitted"] and records[0]["batch_id"]
        again = _run(cmd, cache)  # the batch is still running: nothing is submitted twice
        assert again.returncode == 5 and _batch(srv)["batches_created"] == 1
        status = _run(synthkd_cmd("batch", "status", str(cache)), cache)
        assert status.returncode == 0 and records[0]["batch_id"] in status.stdout and "submitted" in status.stdout
        _until(lambda: not _batch(srv)["live_batches"], "the batch to end")
        done = _run(cmd, cache)
        assert done.returncode == 0, done.stderr[-2000:]
        b = _batch(srv)
    assert len(_rows(tmp_path / "out.jsonl")) == 25
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["exit_code"] == 0 and s["stopped"] is None and s["rows_written"] == 25
    assert b["batches_created"] == 1 and b["requests_submitted"] == 25 and not b["resubmitted_ids"]


def test_expired_batch_keeps_its_done_share_and_resubmits_the_rest(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 40)
    cache = tmp_path / "cache.sqlite"
    with TestServer(FaultConfig(batch_seconds=0.5, batch_expire_after_share=0.3)) as srv:
        cmd = _cmd(srv, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--batch")
        first = _run([*cmd, "--no-wait"], cache)
        assert first.returncode == 5
        _until(lambda: not _batch(srv)["live_batches"], "the batch to expire")
        srv.configure(batch_expire_after_share=None)
        res = _run([*cmd, "--wait"], cache)
        assert res.returncode == 0, res.stderr[-3000:]
        b = _batch(srv)
    assert len(_rows(tmp_path / "out.jsonl")) == 40
    counts = b["submitted_by_custom_id"]
    assert len(counts) == 40
    assert sorted(counts.values()) == [1] * 12 + [2] * 28  # 30% kept, the rest submitted once more
    assert b["batches_created"] == 2 and b["items"]["expired"] == 28
    assert "expired: 12 answer(s) collected" in res.stderr


def test_failed_items_are_resubmitted_then_rejected_with_their_error(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 20)
    cache = tmp_path / "cache.sqlite"
    with TestServer(FaultConfig(batch_seconds=0.2, batch_failed_rate=0.25)) as srv:
        res = _run(_cmd(srv, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--batch", "--wait",
                        "--batch-retries", "1"), cache)
        b = _batch(srv)
    written = _rows(tmp_path / "out.jsonl")
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert len(written) + len(rejects) == 20 and rejects  # every row decided, each once
    assert res.returncode == 1
    assert all("HTTP 500" in r["error"] and "failed in 2 batch(es)" in r["error"] for r in rejects)
    counts = b["submitted_by_custom_id"]
    assert max(counts.values()) == 2 and sum(v == 2 for v in counts.values()) == 5  # the 5 failed, once more
    assert b["batches_created"] == 2


def test_budget_stops_before_anything_is_uploaded(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 50)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({MODEL: {"input": 100.0, "output": 100.0}}))
    with TestServer(FaultConfig(batch_seconds=0.2)) as srv:
        res = _run(_cmd(srv, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--batch", "--wait", "--prices",
                        str(prices), "--max-cost", "0.001", "--max-tokens", "100"), tmp_path / "cache.sqlite")
        b = _batch(srv)
    assert res.returncode == 3, res.stderr[-2000:]
    assert "budget reached" in res.stderr
    assert b["files_uploaded"] == 0 and b["batches_created"] == 0
    # a larger budget: submitted while the worst case fits, pass after pass (the answers' real cost, known
    # once collected, replaces their estimate), never past it; what was submitted is waited for and written
    with TestServer(FaultConfig(batch_seconds=0.2)) as srv:
        res = _run(_cmd(srv, tmp_path / "in.jsonl", tmp_path / "out2.jsonl", "--batch", "--wait", "--prices",
                        str(prices), "--max-cost", "0.02", "--max-tokens", "100"), tmp_path / "cache2.sqlite")
        b = _batch(srv)
    # each request: ~20 prompt tokens + 100 answer tokens at $50/M (batch) -> ~$0.006 upper estimate
    assert res.returncode == 3 and 3 <= b["requests_submitted"] < 50 and not b["resubmitted_ids"]
    rows = read_jsonl(tmp_path / "out2.jsonl")
    spent = sum(r["cost_usd"] for r in rows)
    assert len(rows) == b["requests_submitted"] and 0.02 - 0.0062 < spent <= 0.02
    assert b["batches_created"] >= 2 and "budget reached" in res.stderr


def _journal_states(jdir: Path, since: float = 0.0) -> tuple[list[str], bool]:
    """The records' states, and whether this run changed one (written after ``since``)."""
    out, changed = [], False
    for p in jdir.glob("*.json") if jdir.is_dir() else ():
        try:
            changed = changed or p.stat().st_mtime > since
            out.append(json.loads(p.read_text())["state"])
        except (OSError, ValueError):
            continue  # (records are replaced atomically; a vanished one is read next time)
    return out, changed


#: when to kill, read from the journal: while submitting (a batch not yet submitted), while polling (every
#: batch submitted, some maybe collected), while collecting (some collected, some not)
_PHASES = {
    "submit": lambda st: any(s in ("planned", "uploading", "uploaded", "submitting") for s in st),
    "poll": lambda st: "submitted" in st and not _PHASES["submit"](st),
    "collect": lambda st: "collected" in st and "submitted" in st and not _PHASES["submit"](st),
}


def test_sigkill_at_random_points_then_rerun_every_row_once_nothing_submitted_twice(tmp_path):
    """Ten SIGKILLs of one job (3,000 requests in 300 batches), each aimed at a phase read from the
    journal — submitting, polling, collecting — at a random moment of it, each followed by a rerun; then
    a last run to the end.  The emulator counts how often each request was submitted."""
    write_prompts(tmp_path / "in.jsonl", 3000)
    cache = tmp_path / "cache.sqlite"
    jdir = tmp_path / "cache.sqlite.batches"
    rng = random.Random(15)
    plan = ["submit", "submit", "submit", "poll", "poll", "collect", "collect", "collect", "collect", "collect"]
    hit = []
    with TestServer(FaultConfig(batch_seconds=4.0)) as srv:
        cmd = _cmd(srv, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--batch", "--wait",
                   "--batch-max-requests", "10")
        env = cli_env(SYNTHKD_CACHE=str(cache))
        for phase in plan:
            started = time.time()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            states, changed = _journal_states(jdir, started)
            # the phase, once this run is in it (it wrote the journal): not while it is still starting up
            while proc.poll() is None and time.monotonic() < deadline and not (changed and _PHASES[phase](states)):
                time.sleep(0.005)
                states, changed = _journal_states(jdir, started)
            time.sleep(rng.uniform(0, 0.1))  # a random moment of that phase
            assert proc.poll() is None, f"the job finished before kill {len(hit) + 1}"
            states, _ = _journal_states(jdir)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            hit.append((phase, {s: states.count(s) for s in sorted(set(states))}))
        res = _run(cmd, cache, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        b = _batch(srv)
    print("kills (phase aimed at, journal states when killed):", hit)
    rows = _rows(tmp_path / "out.jsonl")  # asserts each id once
    assert len(rows) == 3000
    assert b["resubmitted_ids"] == [] and b["requests_submitted"] == 3000 and len(b["submitted_by_custom_id"]) == 3000
    # the kills landed in every phase
    for phase in ("submit", "poll", "collect"):
        assert sum(_PHASES[phase](list(st)) for _, st in hit) >= 2, (phase, hit)


def test_batch_cancel_keeps_what_was_done(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 30)
    cache = tmp_path / "cache.sqlite"
    with TestServer(FaultConfig(batch_seconds=12.0)) as srv:
        cmd = _cmd(srv, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--batch")
        assert _run([*cmd, "--no-wait"], cache).returncode == 5
        [rec] = [json.loads(p.read_text()) for p in (tmp_path / "cache.sqlite.batches").glob("*.json")]
        _until(lambda: _provider_batch(srv, rec["batch_id"])["request_counts"]["completed"] >= 3,
               "the batch to answer a few requests")
        res = _run(synthkd_cmd("batch", "cancel", str(cache)), cache)
        assert res.returncode == 0 and "cancelled 1 batch(es)" in res.stderr
        done = _run([*cmd, "--wait"], cache)
        assert done.returncode == 0, done.stderr[-2000:]
        b = _batch(srv)
    assert len(_rows(tmp_path / "out.jsonl")) == 30
    kept = sum(1 for v in b["submitted_by_custom_id"].values() if v == 1)
    assert b["cancels"] == 1 and 0 < kept < 30 and b["items"]["cancelled"] == 30 - kept


@pytest.mark.parametrize("flavor,model", [("openai", MODEL), ("anthropic", "anthropic:claude-haiku-4-5")])
def test_a_kill_between_create_and_its_record_is_found_not_resubmitted(tmp_path, flavor, model):
    """The journal says ``submitting`` (the create call went out, its answer was never recorded): the
    rerun looks the batch up on the provider (OpenAI: metadata; Anthropic: time and size) and adopts it."""
    write_prompts(tmp_path / "in.jsonl", 15)
    cache = tmp_path / "cache.sqlite"
    with TestServer(FaultConfig(batch_seconds=0.5), flavor=flavor) as srv:
        cmd = _cmd(srv, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--batch", model=model)
        assert _run([*cmd, "--no-wait"], cache).returncode == 5
        [path] = list((tmp_path / "cache.sqlite.batches").glob("*.json"))
        rec = json.loads(path.read_text())
        provider_id = rec["batch_id"]
        rec.update(state="submitting", batch_id=None, status=None, submitted_at=None)
        path.write_text(json.dumps(rec))  # as if killed right after the create call
        res = _run([*cmd, "--wait"], cache)
        assert res.returncode == 0, res.stderr[-2000:]
        b = _batch(srv)
    assert f"found on the provider as {provider_id}" in res.stderr
    assert b["batches_created"] == 1 and not b["resubmitted_ids"]
    assert len(_rows(tmp_path / "out.jsonl")) == 15
    assert json.loads(path.read_text())["state"] == "collected"


def test_validate_shows_online_and_batch_cost(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 40)
    (tmp_path / "p.yaml").write_text(
        f"name: b\nteacher: {{model: {MODEL}, max_tokens: 200, batch: true}}\n"
        "stages:\n  - {name: a, kind: complete, input: in.jsonl}\n")
    res = subprocess.run(synthkd_cmd("validate", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    header = next(line for line in res.stdout.splitlines() if line.startswith("| stage"))
    assert "| cost (USD, at max tokens) | batch cost (USD, at max tokens) |" in header
    total = next(line for line in res.stdout.splitlines() if line.startswith("| **total**"))
    online, batch = (float(x) for x in total.strip("| ").split("|")[-2:])
    assert online > 0 and batch == pytest.approx(online / 2, abs=1e-4)


@pytest.mark.parametrize("flavor,model", [("openai", MODEL), ("anthropic", "anthropic:claude-haiku-4-5")])
def test_lost_replies_and_5xx_of_the_batch_endpoints_never_submit_twice(tmp_path, flavor, model):
    """A create call answered 500 after it created the batch (a lost reply) is looked up, not sent again;
    a 500 before acting, or on a poll or a download, is retried."""
    write_prompts(tmp_path / "in.jsonl", 60)
    faults = FaultConfig(batch_seconds=0.3, batch_error_rate=0.2, batch_lost_reply_rate=0.3, seed=3)
    with TestServer(faults, flavor=flavor) as srv:
        res = _run(_cmd(srv, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--batch", "--wait",
                        "--batch-max-requests", "10", model=model), tmp_path / "cache.sqlite")
        assert res.returncode == 0, res.stderr[-3000:]
        b = _batch(srv)
        lost = b["http_errors"]["lost_reply"]
    assert len(_rows(tmp_path / "out.jsonl")) == 60
    assert lost > 0 and b["batches_created"] == 6 and b["requests_submitted"] == 60 and not b["resubmitted_ids"]
