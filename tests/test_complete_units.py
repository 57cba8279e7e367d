"""``synthkd complete`` run in-process against the real loopback test server: the exit code and the exact
last lines for each way a run ends (done, rows rejected, budget, a fatal teacher error with and without
rows already written, an output that cannot be written, SIGTERM), the rejects file, resume by skipping
ids, and the pure helpers (the output row, the option checks, the fatal-stop message)."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import prompt_of, read_jsonl, write_prompts
from synthkd.complete import (
    CompleteConfig,
    _kept_after_fatal,
    _output_row,
    _rejects_path,
    _validate_options,
    _write_summary,
    run_complete,
)
from synthkd.errors import ExitCode
from synthkd.testing.server import FaultConfig, expected_text

KEY = "sk-Qz7Wm2Xp9Lk4Rt6Yv1Nb8Hc3Jd5Fg0Sa"
WRONG_KEY = "sk-Vb3Nq8Lw1Zx6Tp4Kr9Md2Hj7Fs5Gc0Ya"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))

    def text(self, level: int = logging.INFO) -> list[str]:
        return [m for lv, m in self.lines if lv >= level]


@pytest.fixture
def said():
    """What synthkd says (its logger, whatever an earlier test did to propagation)."""
    logger = logging.getLogger("synthkd")
    h = _Lines()
    old = logger.level
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    try:
        yield h
    finally:
        logger.removeHandler(h)
        logger.setLevel(old)


def _cfg(tmp_path: Path, srv=None, **kw) -> CompleteConfig:
    base = dict(teacher="test-model", input=tmp_path / "in.jsonl", output=tmp_path / "out.jsonl",
                cache=tmp_path / "c.sqlite", progress=False, max_retries=0, concurrency=4)
    if srv is not None:
        base["base_url"] = srv.base_url
    base.update(kw)
    return CompleteConfig(**base)


def _completions(srv) -> int:
    st = srv.stats()
    return st["by_endpoint"]["/v1/chat/completions"] + st["by_endpoint"]["/v1/completions"]


# ------------------------------------------------------------------------------------------- pure parts
def test_validate_options_needs_a_temperature_for_several_samples(tmp_path):
    assert _validate_options(_cfg(tmp_path)) == []
    assert _validate_options(_cfg(tmp_path, samples=2)) == [
        "--samples > 1 draws distinct samples: set --temperature above 0"]
    assert _validate_options(_cfg(tmp_path, samples=2, temperature=0.0)) == [
        "--samples > 1 draws distinct samples: set --temperature above 0"]
    assert _validate_options(_cfg(tmp_path, samples=2, temperature=0.5)) == []
    assert _validate_options(_cfg(tmp_path, samples=1, temperature=0.0)) == []


def test_rejects_path_defaults_beside_the_output(tmp_path):
    assert _rejects_path(_cfg(tmp_path)) == tmp_path / "out.rejects.jsonl"
    assert _rejects_path(_cfg(tmp_path, rejects=tmp_path / "r.jsonl")) == tmp_path / "r.jsonl"


def _result(text, *, pt=3, ct=4, cost=0.5, cached=False, model="served-model", finish="stop"):
    return SimpleNamespace(text=text, finish_reason=finish, usage=SimpleNamespace(prompt_tokens=pt, completion_tokens=ct),
                           cost_usd=cost, cached=cached, model=model)


def test_output_row_of_one_sample():
    row = {"id": "a", "prompt": "p", "topic": "t"}
    out = _output_row(row, [_result("hi", cached=True)], "asked-model")
    assert out == {"id": "a", "prompt": "p", "topic": "t", "completion": "hi", "finish_reason": "stop",
                   "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                   "cost_usd": 0.5, "cached": True, "model": "served-model"}
    assert row == {"id": "a", "prompt": "p", "topic": "t"}  # the input row is not changed
    assert _output_row(row, [_result("hi", model="")], "asked-model")["model"] == "asked-model"
    assert _output_row(row, [_result("hi", model=None)], "asked-model")["model"] == "asked-model"


def test_output_row_of_several_samples():
    out = _output_row({"id": 1}, [_result("a", pt=1, ct=2, cost=0.1, cached=True),
                                  _result("b", pt=10, ct=20, cost=0.2, cached=False, finish="length")], "m")
    assert out == {"id": 1, "completions": ["a", "b"], "finish_reason": ["stop", "length"],
                   "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33},
                   "cost_usd": round(0.1 + 0.2, 10), "cached": False, "model": "served-model"}
    assert out["cost_usd"] == 0.3
    both_cached = _output_row({"id": 1}, [_result("a", cached=True), _result("b", cached=True)], "m")
    assert both_cached["cached"] is True
    unknown = _output_row({"id": 1}, [_result("a", cost=0.1), _result("b", cost=None)], "m")
    assert unknown["cost_usd"] is None  # one unknown price: the row's cost is unknown, not understated


def _teacher_with(cache):
    return SimpleNamespace(cache=cache)


def test_kept_after_fatal_says_what_is_really_kept(tmp_path):
    o = _cfg(tmp_path)
    head = f"stopped: the 7 rows in {tmp_path / 'out.jsonl'} are kept (each whole); "
    assert _kept_after_fatal(o, _teacher_with(None), 7) == (
        head + "with --no-cache, an answer not yet in a row is not kept: rerun the same command to resume")
    broken = SimpleNamespace(path=tmp_path / "c.sqlite", write_error=OSError("disk full"))
    assert _kept_after_fatal(o, _teacher_with(broken), 7) == (
        head + f"the cache {tmp_path / 'c.sqlite'} could not be written, so an answer not yet in a row is not kept "
        "and a rerun asks for it again: make room for the cache, then rerun the same command to resume")
    fine = SimpleNamespace(path=tmp_path / "c.sqlite", write_error=None)
    assert _kept_after_fatal(o, _teacher_with(fine), 0) == (
        f"stopped: the 0 rows in {tmp_path / 'out.jsonl'} are kept (each whole); every answer received is in the "
        f"cache {tmp_path / 'c.sqlite'}: rerun the same command to resume (nothing is paid twice)")


def test_write_summary_that_cannot_be_written_is_exit_2_with_one_line(tmp_path, said):
    assert _write_summary(_cfg(tmp_path), {"x": 1}) is ExitCode.OK  # no --summary-json: nothing written
    target = tmp_path / "gone" / "s.json"
    code = _write_summary(_cfg(tmp_path, summary_json=target), {"x": 1})
    assert code is ExitCode.BAD_INPUT
    assert said.text() == [f"error: {target}: cannot write: No such file or directory; the run itself is over and "
                           "its rows are kept (see the line above)"]
    ok = tmp_path / "s.json"
    assert _write_summary(_cfg(tmp_path, summary_json=ok), {"x": 1}) is ExitCode.OK
    assert json.loads(ok.read_text()) == {"x": 1}


# ----------------------------------------------------------------------------------- whole runs, in-process
def test_done_writes_every_row_then_a_rerun_skips_them(tmp_path, make_server, said):
    srv = make_server()
    rows = write_prompts(tmp_path / "in.jsonl", 5)
    summary = tmp_path / "s.json"
    assert run_complete(_cfg(tmp_path, srv, summary_json=summary)) is ExitCode.OK
    got = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert sorted(got) == [f"q{i}" for i in range(5)]
    for r in rows:
        assert got[r["id"]]["completion"] == expected_text(prompt_of(r), 0)
        assert got[r["id"]]["cached"] is False and got[r["id"]]["topic"] == "math"
    last = said.text()[-1]
    assert last.startswith(f"done: 5 rows written to {tmp_path / 'out.jsonl'} (0 from cache, 0 already there), 0 rejected; ")
    assert " -> " not in last and re.search(r"; \d+\.\ds$", last)
    s = json.loads(summary.read_text())
    assert {k: s[k] for k in ("exit_code", "stopped", "rows_written", "rows_rejected", "rows_from_cache",
                              "rows_already_done", "rows_not_started", "requests_sent")} == {
        "exit_code": 0, "stopped": None, "rows_written": 5, "rows_rejected": 0, "rows_from_cache": 0,
        "rows_already_done": 0, "rows_not_started": 0, "requests_sent": 5}
    assert "error" not in s
    # the whole documented key set of --summary-json (a renamed key breaks whoever reads it)
    assert set(s) == {"exit_code", "stopped", "rows_written", "rows_rejected", "rows_from_cache",
                      "rows_already_done", "rows_not_started", "requests_sent", "requests_batched", "retries", "rate_limited",
                      "timeouts", "prompt_tokens", "completion_tokens", "cost_usd", "elapsed_s",
                      "first_request_to_last_result_s"}
    assert (s["retries"], s["rate_limited"], s["timeouts"], s["requests_batched"]) == (0, 0, 0, 0)
    assert not (tmp_path / "out.rejects.jsonl").exists() or read_jsonl(tmp_path / "out.rejects.jsonl") == []
    # two more prompts: the rerun sends only those, and says how many were already there
    write_prompts(tmp_path / "in.jsonl", 7)
    assert run_complete(_cfg(tmp_path, srv, summary_json=summary)) is ExitCode.OK
    assert _completions(srv) == 7
    assert said.text()[-1].startswith(
        f"done: 2 rows written to {tmp_path / 'out.jsonl'} (0 from cache, 5 already there), 0 rejected; ")
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 7
    assert json.loads(summary.read_text())["rows_already_done"] == 5
    # a fresh output with the same cache: every answer from the cache, no request
    assert run_complete(_cfg(tmp_path, srv, output=tmp_path / "out2.jsonl")) is ExitCode.OK
    assert _completions(srv) == 7
    assert said.text()[-1].startswith(
        f"done: 7 rows written to {tmp_path / 'out2.jsonl'} (7 from cache, 0 already there), 0 rejected; ")
    assert all(r["cached"] for r in read_jsonl(tmp_path / "out2.jsonl"))


def _failing(ids: set[str]):
    def responder(endpoint, body):
        text = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        if any(text.startswith(f"Question {i[1:]}:") for i in ids):
            raise ValueError("boom")  # a 500 for good
        return "fine"
    return responder


def test_rejected_rows_exit_1_and_go_to_the_rejects_file_until_redone(tmp_path, make_server, said):
    failing = {"q2"}
    srv = make_server(responder=lambda e, b: _failing(failing)(e, b))
    write_prompts(tmp_path / "in.jsonl", 4)
    summary = tmp_path / "s.json"
    code = run_complete(_cfg(tmp_path, srv, no_cache=True, cache=None, summary_json=summary))
    assert code is ExitCode.REJECTED and code == 1
    rej = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert len(rej) == 1
    [r] = rej
    assert (r["id"], r["line"], r["attempts"]) == ("q2", 3, 1)
    assert r["errors"] == [r["error"]] and "HTTP 500" in r["error"]
    assert sorted(x["id"] for x in read_jsonl(tmp_path / "out.jsonl")) == ["q0", "q1", "q3"]
    assert said.text()[-1].startswith(f"done: 3 rows written to {tmp_path / 'out.jsonl'} (0 from cache, 0 already "
                                      f"there), 1 rejected -> {tmp_path / 'out.rejects.jsonl'}; ")
    s = json.loads(summary.read_text())
    assert (s["exit_code"], s["stopped"], s["rows_written"], s["rows_rejected"], s["rows_not_started"]) == (1, None, 3, 1, 0)
    # fails again: still exactly one entry for it
    assert run_complete(_cfg(tmp_path, srv, no_cache=True, cache=None)) is ExitCode.REJECTED
    assert [x["id"] for x in read_jsonl(tmp_path / "out.rejects.jsonl")] == ["q2"]
    # fixed: the rerun writes the row and the old entry goes
    failing.clear()
    assert run_complete(_cfg(tmp_path, srv, no_cache=True, cache=None)) is ExitCode.OK
    assert read_jsonl(tmp_path / "out.rejects.jsonl") == []
    assert sorted(x["id"] for x in read_jsonl(tmp_path / "out.jsonl")) == ["q0", "q1", "q2", "q3"]
    assert said.text()[-1].startswith(f"done: 1 rows written to {tmp_path / 'out.jsonl'} (0 from cache, 3 already "
                                      "there), 0 rejected; ")


def test_samples_are_one_row_with_a_list_per_id(tmp_path, make_server):
    srv = make_server()
    rows = write_prompts(tmp_path / "in.jsonl", 2)
    assert run_complete(_cfg(tmp_path, srv, samples=3, temperature=0.8)) is ExitCode.OK
    got = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    for r in rows:
        assert got[r["id"]]["completions"] == [expected_text(prompt_of(r), 0.8, s) for s in range(3)]
        assert got[r["id"]]["finish_reason"] == ["stop"] * 3
    assert _completions(srv) == 2  # one request with n=3 per row


def test_a_row_counts_as_from_cache_only_when_every_sample_was(tmp_path, make_server, said):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 2)
    assert run_complete(_cfg(tmp_path, srv, samples=2, temperature=0.8)) is ExitCode.OK
    # 3 samples into a new output: samples 0 and 1 come from the cache, sample 2 is new
    assert run_complete(_cfg(tmp_path, srv, samples=3, temperature=0.8, output=tmp_path / "o3.jsonl")) is ExitCode.OK
    assert _completions(srv) == 2 + 2  # one n=2 request per row, then one request for each third sample
    assert said.text()[-1].startswith(f"done: 2 rows written to {tmp_path / 'o3.jsonl'} (0 from cache, 0 already there)")
    assert [r["cached"] for r in read_jsonl(tmp_path / "o3.jsonl")] == [False, False]
    assert run_complete(_cfg(tmp_path, srv, samples=3, temperature=0.8, output=tmp_path / "o4.jsonl")) is ExitCode.OK
    assert said.text()[-1].startswith(f"done: 2 rows written to {tmp_path / 'o4.jsonl'} (2 from cache, 0 already there)")


def test_bad_options_are_exit_2_before_any_request(tmp_path, make_server, said):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 2)
    assert run_complete(_cfg(tmp_path, srv, samples=2)) is ExitCode.BAD_INPUT
    assert said.text() == ["error: --samples > 1 draws distinct samples: set --temperature above 0"]
    assert srv.stats()["requests_total"] == 0 and not (tmp_path / "out.jsonl").exists()


def test_budget_stop_is_exit_3_with_the_rerun_hint(tmp_path, make_server, said):
    srv = make_server(FaultConfig(latency_ms=5))
    write_prompts(tmp_path / "in.jsonl", 40)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"test-model": {"input": 1000.0, "output": 1000.0}}))
    summary = tmp_path / "s.json"
    code = run_complete(_cfg(tmp_path, srv, prices=prices, max_cost=0.2, concurrency=1, summary_json=summary))
    assert code is ExitCode.BUDGET and code == 3
    part = read_jsonl(tmp_path / "out.jsonl")
    assert 0 < len(part) < 40
    last = said.text()[-1]
    m = re.fullmatch(r"budget reached: \$(\d+\.\d{4}) spent of --max-cost \$0\.2; (\d+) rows not started\. "
                     r"Rerun with a larger --max-cost to finish \(nothing is paid twice\)\.", last)
    assert m, last
    assert int(m.group(2)) == 40 - len(part)
    assert float(m.group(1)) == pytest.approx(sum(r["cost_usd"] for r in part), abs=1e-4)
    s = json.loads(summary.read_text())
    assert (s["exit_code"], s["stopped"], s["rows_written"], s["rows_not_started"]) == (3, "budget", len(part), 40 - len(part))
    assert "error" not in s
    # a larger budget finishes; nothing is paid twice
    assert run_complete(_cfg(tmp_path, srv, prices=prices, max_cost=100.0)) is ExitCode.OK
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 40 and _completions(srv) == 40


def _half_done(tmp_path: Path, srv, n_done: int) -> None:
    """Complete the first ``n_done`` prompts with the right key (their rows are in the output)."""
    full = (tmp_path / "in.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "in.jsonl").write_text("".join(full[:n_done]))
    assert run_complete(_cfg(tmp_path, srv, api_key=KEY)) is ExitCode.OK
    (tmp_path / "in.jsonl").write_text("".join(full))


def test_fatal_teacher_stop_with_rows_already_written_keeps_them(tmp_path, make_server, said):
    srv = make_server(FaultConfig(api_key=KEY))
    write_prompts(tmp_path / "in.jsonl", 6)
    _half_done(tmp_path, srv, 3)
    summary = tmp_path / "s.json"
    code = run_complete(_cfg(tmp_path, srv, api_key=WRONG_KEY, summary_json=summary))
    assert code is ExitCode.TEACHER and code == 4
    out = tmp_path / "out.jsonl"
    lines = said.text(logging.ERROR)
    assert len(lines) == 2 and lines[0].startswith("error: ") and "refused the API key" in lines[0]
    assert lines[1] == (f"stopped: the 3 rows in {out} are kept (each whole); every answer received is in the "
                        f"cache {tmp_path / 'c.sqlite'}: rerun the same command to resume (nothing is paid twice)")
    assert len(read_jsonl(out)) == 3
    s = json.loads(summary.read_text())
    assert (s["exit_code"], s["stopped"], s["rows_written"], s["rows_already_done"], s["rows_not_started"]) == (
        4, "teacher", 0, 3, 3)
    assert "refused the API key" in s["error"] and WRONG_KEY[:8] not in summary.read_text()


def test_fatal_teacher_stop_without_cache_and_without_rows(tmp_path, make_server, said):
    srv = make_server(FaultConfig(api_key=KEY))
    write_prompts(tmp_path / "in.jsonl", 4)
    code = run_complete(_cfg(tmp_path, srv, api_key=WRONG_KEY, no_cache=True, cache=None))
    assert code is ExitCode.TEACHER
    assert said.text(logging.ERROR)[-1] == (
        f"stopped: the 0 rows in {tmp_path / 'out.jsonl'} are kept (each whole); with --no-cache, an answer not yet "
        "in a row is not kept: rerun the same command to resume")
    assert _completions(srv) == 0 and read_jsonl(tmp_path / "out.rejects.jsonl") == []


def _with_file_size_limit(limit: int, fn):
    """Run ``fn`` with writes past ``limit`` bytes failing (EFBIG), as on a full disk; the limit is restored."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
        return fn()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def _padded_output(tmp_path: Path, n_done: int) -> int:
    """An output already holding ``n_done`` rows, padded to ~1 MB (so the output, not the small cache or a
    log, is the file that reaches the size limit); returns its size."""
    pad = "x" * (1_000_000 // n_done)
    (tmp_path / "out.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "completion": pad}) + "\n"
                                                for i in range(n_done)))
    return (tmp_path / "out.jsonl").stat().st_size


@pytest.mark.parametrize("no_cache", [False, True])
def test_an_output_that_cannot_be_written_mid_run_is_exit_2_with_the_resume_hint(tmp_path, make_server, said, no_cache):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 6)
    size = _padded_output(tmp_path, 2)
    summary = tmp_path / "s.json"
    kw = dict(no_cache=True, cache=None) if no_cache else {}
    code = _with_file_size_limit(size + 10, lambda: run_complete(_cfg(tmp_path, srv, concurrency=1,
                                                                       summary_json=summary, **kw)))
    assert code is ExitCode.BAD_INPUT and code == 2
    out = tmp_path / "out.jsonl"
    assert (out).stat().st_size == size  # the failed row was taken back: the file ends with a whole line
    lines = said.text(logging.ERROR)
    assert lines[-2] == f"error: {out}: cannot write: disk full (File too large)"
    assert lines[-1] == (f"stopped: the 2 rows already in {out} are kept (each whole); free some space, then rerun "
                         "the same command to resume" + ("" if no_cache else " (answers already paid for come from the cache)"))
    s = json.loads(summary.read_text())
    assert (s["exit_code"], s["stopped"], s["rows_written"], s["rows_already_done"]) == (2, "output", 0, 2)
    assert s["error"] == f"{out}: cannot write: disk full (File too large)"
    # with room again the rerun finishes (the padded rows stay, the rest are added)
    assert run_complete(_cfg(tmp_path, srv, **kw)) is ExitCode.OK
    assert sorted(r["id"] for r in read_jsonl(out)) == [f"q{i}" for i in range(6)]


def test_sigterm_stops_with_130_keeps_the_rows_and_a_rerun_finishes(tmp_path, make_server, said):
    # the server's responder sends SIGTERM to this process while answering the 3rd request: by then the
    # run has installed its handler (requests are only sent after), so no sleep is needed to order them
    seen = []

    def responder(endpoint, body):
        seen.append(1)
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return "answer"

    srv = make_server(FaultConfig(latency_ms=20), responder=responder)
    write_prompts(tmp_path / "in.jsonl", 30)
    summary = tmp_path / "s.json"
    # start from the default, so "restored" is checked against a known handler (an earlier test may have
    # set another one); run_complete must put back whatever it found, also on a uvloop loop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = run_complete(_cfg(tmp_path, srv, concurrency=1, summary_json=summary))
    assert code is ExitCode.INTERRUPTED and code == 130
    out = tmp_path / "out.jsonl"
    assert said.text()[-1] == f"interrupted: rows written so far are kept in {out}; rerun the same command to resume"
    kept = read_jsonl(out)
    assert 0 < len(kept) < 30
    s = json.loads(summary.read_text())
    assert (s["exit_code"], s["stopped"], s["rows_written"]) == (130, "interrupted", len(kept))
    assert s["rows_not_started"] == 30 - len(kept) - s["rows_rejected"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler went with the run
    assert run_complete(_cfg(tmp_path, srv)) is ExitCode.OK
    got = read_jsonl(out)
    assert got[: len(kept)] == kept and sorted(r["id"] for r in got) == sorted(f"q{i}" for i in range(30))


def test_the_sigterm_handler_is_put_back_also_on_a_uvloop_loop(tmp_path, make_server):
    """`synthkd complete` installs uvloop; uvloop does not restore SIGTERM when its loop closes, so a
    library caller (or the next run in the same process) was left with a handler of a dead loop: SIGTERM
    then did nothing. The run puts back the handler it found."""
    import asyncio

    uvloop = pytest.importorskip("uvloop")  # the [fast] extra: installed by scripts/setup.sh and CI
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 3)
    before = asyncio.get_event_loop_policy()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        assert run_complete(_cfg(tmp_path, srv)) is ExitCode.OK
    finally:
        asyncio.set_event_loop_policy(before)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
