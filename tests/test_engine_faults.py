"""The teacher engine under faults that are not the server's: a cache that cannot be written, bad
credentials, unexpected errors inside a request, servers that echo the API key, an exhausted quota.

Every test talks to the real loopback test server; the failures are real ones (a SQLite page limit,
a file size limit set on the child process, real key-echoing bodies), nothing in the client is mocked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys

from conftest import cli_env, read_jsonl, run_cli, synthkd_cmd, write_prompts
from synthkd.teachers import TeacherFatalError, TeacherRequest
from synthkd.teachers.cache import RequestCache
from synthkd.teachers.errors import scrub, scrub_cut
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.server import FaultConfig

# Long, realistic-looking keys whose first 8 characters appear nowhere else.
KEY = "sk-Qz7Wm2Xp9Lk4Rt6Yv1Nb8Hc3Jd5Fg0Sa"
WRONG_KEY = "sk-Vb3Nq8Lw1Zx6Tp4Kr9Md2Hj7Fs5Gc0Ya"


def _completion_requests(srv) -> int:
    st = srv.stats()
    return st["by_endpoint"]["/v1/chat/completions"] + st["by_endpoint"]["/v1/completions"]


def _stream(teacher, reqs):
    """Run teacher.stream over reqs; returns (results, the exception that ended it or None)."""
    got = []

    async def go():
        async def gen():
            for r in reqs:
                yield r

        try:
            async for r in teacher.stream(gen()):
                got.append(r)
        finally:
            await teacher.aclose()

    try:
        asyncio.run(go())
    except Exception as exc:  # noqa: BLE001 - returned for the test to check
        return got, exc
    return got, None


def _no_lost_task_errors(caplog) -> None:
    lost = [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]
    assert not lost, lost[0].getMessage()


# ----------------------------------------------------------------------------------- F1: cache full


def _run_with_file_size_limit(args, limit: int = 200_000, env=None) -> subprocess.CompletedProcess:
    """Run the CLI in a child that may write files of at most ``limit`` bytes (RLIMIT_FSIZE, SIGXFSZ
    ignored so a write just fails): the cache's write-ahead log reaches 200 kB after a few dozen
    answers, while the output stays far below."""
    wrap = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); os.execv(sys.argv[1], sys.argv[1:])")
    return subprocess.run([sys.executable, "-c", wrap, *synthkd_cmd(*args)], env=env or cli_env(),
                          capture_output=True, text=True, timeout=120)


def test_cache_full_mid_run_stops_at_once_and_yields_every_paid_answer(make_server, tmp_path, caplog):  # F1 regression
    caplog.set_level(logging.ERROR)
    srv = make_server(FaultConfig(latency_ms=5))
    cache = RequestCache(tmp_path / "c.sqlite")
    # A real SQLite limit on this connection: the file may grow by 3 pages, then every write fails with
    # "database or disk is full", exactly as on a full disk.
    pages = cache._conn.execute("PRAGMA page_count").fetchone()[0]
    cache._conn.execute(f"PRAGMA max_page_count = {pages + 3}")
    teacher = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, api_key="k", concurrency=8, cache=cache)
    reqs = [TeacherRequest(key=str(i), prompt=f"question {i} " + "pad " * 200) for i in range(400)]
    results, exc = _stream(teacher, reqs)
    assert isinstance(exc, TeacherFatalError), exc
    assert "cannot write the request cache" in str(exc) and "database or disk is full" in str(exc)
    answered = srv.stats()["by_outcome"]["ok"] - 1  # less the preflight GET /models
    assert 0 < len(cache) < answered  # the cache did fill up mid-run
    # Every answer the server produced reached the caller; nothing was sent after the failure but the
    # requests already in flight (at most the concurrency).
    assert all(r.ok for r in results) and len({r.key for r in results}) == len(results) == answered
    assert _completion_requests(srv) == answered <= len(cache) + 1 + 8 < 100
    _no_lost_task_errors(caplog)


def test_complete_with_a_cache_that_cannot_grow_stops_with_one_message_and_writes_every_answer(
    make_server, tmp_path
):  # F1 regression, through the CLI
    srv = make_server(FaultConfig(latency_ms=5))
    rows = write_prompts(tmp_path / "in.jsonl", 300)
    args = ["complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
            "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"), "-c", "8"]
    res = _run_with_file_size_limit(args)
    assert res.returncode == 2, res.stderr  # an output (the cache) cannot be written: not 1 (rows rejected)
    assert res.stderr.count("cannot write the request cache") == 1, res.stderr
    assert "Traceback" not in res.stderr and "never retrieved" not in res.stderr
    written = read_jsonl(tmp_path / "out.jsonl")
    sent = _completion_requests(srv)
    assert len(written) == srv.stats()["by_outcome"]["ok"] - 1 == sent < 150  # every paid answer written; few sent
    # The rerun (with room again) pays only for the rows never answered: nothing is paid twice.
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "out.jsonl")) == sorted(r["id"] for r in rows)
    assert _completion_requests(srv) == 300


# ----------------------------------------------------------------- F13: credentials, unexpected errors


def test_key_with_a_control_character_is_one_config_error_before_any_request(make_server, tmp_path):  # F13 regression
    srv = make_server(FaultConfig(api_key=KEY))
    write_prompts(tmp_path / "in.jsonl", 20)
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
                  "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"),
                  env=cli_env(OPENAI_API_KEY=KEY + "\r"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("OPENAI_API_KEY contains a control character") == 1
    assert KEY[:8] not in res.stderr and "Traceback" not in res.stderr
    assert srv.stats()["requests_total"] == 0


def test_base_url_with_credentials_and_a_key_is_one_config_error(make_server, tmp_path):  # F13 regression
    srv = make_server(FaultConfig(api_key=KEY))
    write_prompts(tmp_path / "in.jsonl", 20)
    url = srv.base_url.replace("http://", "http://alice:hunter2-pw@")
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
                  "--base-url", url, "--cache", str(tmp_path / "c.sqlite"), env=cli_env(OPENAI_API_KEY=KEY))
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("base_url must not carry credentials") == 1
    assert "hunter2" not in res.stderr and KEY[:8] not in res.stderr
    assert srv.stats()["requests_total"] == 0


def test_unexpected_error_in_a_request_stops_the_stream_naming_it(make_server, caplog):  # F13 regression
    """Any exception a request task did not expect ends the run at once with its type and message."""
    caplog.set_level(logging.ERROR)
    srv = make_server()
    teacher = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, api_key=KEY, concurrency=1)
    # "user" is not part of the cache key, so only the request body fails to serialise: inside the task.
    reqs = [TeacherRequest(key="bad", prompt="p", params={"user": b"bytes are not JSON"})]
    reqs += [TeacherRequest(key=str(i), prompt=f"p{i}") for i in range(20)]
    results, exc = _stream(teacher, reqs)
    assert isinstance(exc, TeacherFatalError), exc
    assert "unexpected error in a request" in str(exc) and "TypeError" in str(exc)
    assert results == [] and _completion_requests(srv) == 0  # stopped at once: nothing else sent
    _no_lost_task_errors(caplog)


# ------------------------------------------------------------------------- F7 / mutant 21: key hygiene


def test_scrub_removes_keys_and_cut_off_key_prefixes():  # F7 regression
    text = f"a {KEY} b Bearer {KEY[:13]}"
    assert scrub(text, (KEY,)) == "a *** b Bearer ***"
    assert scrub(f"x{KEY[:8]}y", (KEY,)) == "x***y"  # 8 characters of a key are already a secret
    assert scrub(f"x{KEY[:7]}y", (KEY,)) == f"x{KEY[:7]}y"  # 7 are not (every key starts 'sk-')
    assert scrub(f"{KEY}{KEY}", (KEY, None)) == "******"
    assert scrub("short key abcd", ("abcd",)) == "short key ***"
    # Cut after scrubbing: the cut can never leave a piece of the key behind.
    body = "x" * 60 + f"Bearer {KEY} trailing"
    assert KEY[:8] not in scrub_cut(body, (KEY,), 80) and scrub_cut(body, (KEY,), 80).startswith("x" * 60)


def test_key_echoed_by_the_server_never_reaches_any_file_or_message(make_server, tmp_path):
    # F7 regression + audit mutant 21: error bodies and malformed 200 bodies repeat the key.
    srv = make_server(FaultConfig(api_key=KEY, echo_key=True, error_rate=0.3, malformed_rate=0.3, seed=5))
    write_prompts(tmp_path / "in.jsonl", 40)
    summary = tmp_path / "summary.json"
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
                  "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"), "--max-retries", "1", "-c", "8",
                  "--summary-json", str(summary), env=cli_env(OPENAI_API_KEY=KEY))
    assert res.returncode == 1, res.stderr  # some rows failed twice and were rejected
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    errors = [e for r in rejects for e in r["errors"]]
    # The rejects do quote the bodies that held the key: the test would see a leak.
    assert any("body is not JSON" in e for e in errors) and any("HTTP 500" in e for e in errors), errors
    assert any("***" in e for e in errors)
    assert summary.exists() and any(p.name.startswith("c.sqlite") for p in tmp_path.iterdir())
    # A second run with a wrong key: OpenAI-style 401 "Incorrect API key provided: sk-...".
    res2 = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out2.jsonl"), "-m",
                   "test-model", "--base-url", srv.base_url, "--cache", str(tmp_path / "c2.sqlite"),
                   env=cli_env(OPENAI_API_KEY=WRONG_KEY))
    assert res2.returncode == 4 and "refused the API key" in res2.stderr
    for secret in (KEY, WRONG_KEY):
        for piece in (secret, secret[:8]):
            for p in tmp_path.rglob("*"):
                if p.is_file():
                    assert piece.encode() not in p.read_bytes(), p
            for out in (res.stderr, res.stdout, res2.stderr, res2.stdout):
                assert piece not in out


# ------------------------------------------------------------------------------ mutant 22: quota


def test_exhausted_quota_stops_at_once_with_one_message(make_server, tmp_path):  # audit mutant 22
    srv = make_server(FaultConfig(latency_ms=5, quota_after=5))
    write_prompts(tmp_path / "in.jsonl", 100)
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
                  "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"), "-c", "4", timeout=60)
    assert res.returncode == 4, res.stderr
    assert res.stderr.count("quota exhausted (429 insufficient_quota)") == 1, res.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 4  # the answers before the quota ran out are kept
    assert read_jsonl(tmp_path / "out.rejects.jsonl") == []  # not the rows' fault
    assert _completion_requests(srv) <= 4 + 4  # no retries of a quota error, no new requests after it


# ------------------------------------------------------------------------------- F14: price file


def test_price_file_that_is_not_utf8_is_a_clear_error(make_server, tmp_path):  # F14 regression
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 3)
    prices = tmp_path / "prices.json"
    prices.write_bytes(b'{"test-model": {"input": 1, "output": 1}}\xff\n')
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
                  "--base-url", srv.base_url, "--no-cache", "--prices", str(prices))
    assert res.returncode == 2, res.stderr
    assert f"{prices}: price file is not UTF-8" in res.stderr and "Traceback" not in res.stderr
    assert srv.stats()["requests_total"] == 0
    json.loads(prices.read_bytes()[:-2])  # the file is otherwise valid: the encoding alone is reported


# ------------------------------------------- F13/F16: a setting found wrong before any request is exit 2


def _config_error(res, needle: str) -> None:
    """Exit 2, the reason once, and no "rerun to resume" (nothing was sent: there is nothing to resume)."""
    assert res.returncode == 2, res.stderr
    assert res.stderr.count(needle) == 1, res.stderr
    assert "resume" not in res.stderr and "nothing paid for" not in res.stderr, res.stderr
    assert "Traceback" not in res.stderr, res.stderr


def test_generate_commands_give_teacher_config_errors_exit_2_without_the_resume_hint(make_server, tmp_path):
    # F13 + F16 regression: run_job ended every such error with "nothing paid for is lost: rerun the
    # same command to resume" (exit 4), also for --teacher local:DIR that does not load and a bad key.
    srv = make_server(FaultConfig(api_key=KEY))
    (tmp_path / "in.jsonl").write_text('{"id": 1, "question": "1+1?", "answer": "2"}\n')
    args = ["generate", "rationales", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
            "--kind", "math", "--no-cache", "--n-demos", "0"]
    res = run_cli(*args, "-m", "test-model", "--base-url", srv.base_url, env=cli_env(OPENAI_API_KEY=KEY + "\r"))
    _config_error(res, "OPENAI_API_KEY contains a control character")
    res = run_cli(*args, "-m", f"local:{tmp_path / 'no-such-student'}")
    _config_error(res, "local teacher")
    res = run_cli(*args, "-m", "simulated:no-such-task")
    _config_error(res, "unknown simulated teacher task")
    assert srv.stats()["requests_total"] == 0 and not (tmp_path / "out.jsonl").exists()


def test_local_teacher_without_torch_is_one_line_exit_2(tmp_path):
    # without the [train] extra, --teacher local:DIR died with a ModuleNotFoundError traceback
    (tmp_path / "in.jsonl").write_text('{"id": 1, "question": "1+1?", "answer": "2"}\n')
    blocker = tmp_path / "no_torch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is not installed (test)')\n")
    env = cli_env()
    env["PYTHONPATH"] = f"{blocker.parent}{os.pathsep}{env['PYTHONPATH']}"
    res = run_cli("generate", "rationales", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                  "--kind", "math", "--no-cache", "--n-demos", "0", "-m", f"local:{tmp_path / 'student'}", env=env)
    _config_error(res, "needs the training extra")
    assert "pip install torch==2.13.0 'synthkd[train]'" in res.stderr


def test_pipeline_gives_teacher_config_errors_exit_2_without_the_resume_hint(make_server, tmp_path):
    # F13 regression through `synthkd run`: credentials in base_url with a key set were "rerun to resume", exit 4
    srv = make_server(FaultConfig(api_key=KEY))
    write_prompts(tmp_path / "in.jsonl", 5)
    url = srv.base_url.replace("http://", "http://alice:hunter2-pw@")
    (tmp_path / "p.yaml").write_text(
        f"name: cfg\nteacher: {{model: test-model, base_url: '{url}'}}\n"
        "stages:\n  - name: comp\n    kind: complete\n    input: in.jsonl\n")
    res = subprocess.run(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(OPENAI_API_KEY=KEY),
                         capture_output=True, text=True, timeout=120)
    _config_error(res, "base_url must not carry credentials")
    assert "hunter2" not in res.stderr and srv.stats()["requests_total"] == 0


# -------------------------------------- F1 follow-up: a fatal stop says what is really kept, in the summary too


def test_fatal_stop_on_a_full_cache_does_not_claim_the_answers_are_kept(make_server, tmp_path):
    # F1 regression (follow-up): `complete` printed "nothing paid for is lost (cache: answers kept)" when
    # the cache itself could not be written, and wrote no --summary-json at all on a fatal stop.
    srv = make_server(FaultConfig(latency_ms=5))
    write_prompts(tmp_path / "in.jsonl", 300)
    summary = tmp_path / "summary.json"
    res = _run_with_file_size_limit(["complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                                     "-m", "test-model", "--base-url", srv.base_url, "--cache",
                                     str(tmp_path / "c.sqlite"), "-c", "8", "--summary-json", str(summary)])
    assert res.returncode == 2, res.stderr
    assert "answers kept" not in res.stderr and "nothing paid for is lost" not in res.stderr, res.stderr
    written = len(read_jsonl(tmp_path / "out.jsonl"))
    assert f"the {written} rows in {tmp_path / 'out.jsonl'} are kept" in res.stderr, res.stderr
    assert f"the cache {tmp_path / 'c.sqlite'} could not be written" in res.stderr, res.stderr
    s = json.loads(summary.read_text())
    assert s["exit_code"] == 2 and s["stopped"] == "output" and "cannot write the request cache" in s["error"]
    assert s["rows_written"] == written and s["rows_not_started"] == 300 - written > 0


def test_fatal_stop_with_a_working_cache_says_so_and_writes_the_summary(make_server, tmp_path):
    # F1 regression (follow-up): the summary a script reads says why the run stopped
    srv = make_server(FaultConfig(api_key=KEY))
    write_prompts(tmp_path / "in.jsonl", 10)
    summary = tmp_path / "summary.json"
    res = run_cli("complete", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-m", "test-model",
                  "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"), "--summary-json", str(summary),
                  env=cli_env(OPENAI_API_KEY=WRONG_KEY))
    assert res.returncode == 4 and "refused the API key" in res.stderr, res.stderr
    assert f"every answer received is in the cache {tmp_path / 'c.sqlite'}" in res.stderr, res.stderr
    s = json.loads(summary.read_text())
    assert (s["exit_code"], s["stopped"], s["rows_written"], s["rows_not_started"]) == (4, "teacher", 0, 10)
    assert "refused the API key" in s["error"] and WRONG_KEY[:8] not in summary.read_text()


def test_pipeline_complete_stage_stopped_by_the_teacher_is_exit_4_not_rows_rejected(make_server, tmp_path):
    # F14 follow-up regression: a refused key in a `complete` stage came out of `synthkd run` as
    # "some rows failed for good" (StageFailed, exit 1: the code reserved for rejected rows)
    srv = make_server(FaultConfig(api_key=KEY))
    write_prompts(tmp_path / "in.jsonl", 5)
    (tmp_path / "p.yaml").write_text(
        f"name: key\nteacher: {{model: test-model, base_url: '{srv.base_url}'}}\n"
        "stages:\n  - name: comp\n    kind: complete\n    input: in.jsonl\n")
    res = subprocess.run(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(OPENAI_API_KEY=WRONG_KEY),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 4, res.stderr
    assert res.stderr.count("refused the API key") == 1 and "failed for good" not in res.stderr, res.stderr
    assert res.stderr.count("rerun the same command to resume") == 1 and "Traceback" not in res.stderr
