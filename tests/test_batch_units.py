"""Batch mode, the parts without a server: splitting at the limits, the journal, batch prices, and the
parsing of real and reference result lines (tests/fixtures/batch/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from synthkd.teachers.batch.journal import BatchJournal, BatchRecord, journal_dir, key_id, request_key
from synthkd.teachers.batch.providers import parse_anthropic_line, parse_openai_line
from synthkd.teachers.batch.spool import BatchSpool, Limits, split_counts
from synthkd.teachers.pricing import Price, PriceTable

FIXTURES = Path(__file__).parent / "fixtures" / "batch" / "result_lines.jsonl"


def _lines(provider: str) -> list[dict]:
    return [d["line"] for d in map(json.loads, FIXTURES.read_text().splitlines()) if d["provider"] == provider]


# ------------------------------------------------------------------------------------------ splitting
def test_split_counts_respects_requests_and_bytes():
    assert split_counts([10] * 7, Limits(3, 10_000)) == [3, 3, 1]
    assert split_counts([40, 40, 40, 40], Limits(100, 100)) == [2, 2]  # 80 + 40 > 100
    assert split_counts([40, 60, 1], Limits(100, 100)) == [2, 1]  # exactly 100 fits
    assert split_counts([500, 1], Limits(100, 100)) == [1, 1]  # a line over the limit goes alone
    assert split_counts([], Limits(1, 1)) == []


def test_spool_splits_files_and_records_them_planned(tmp_path):
    j = BatchJournal(tmp_path / "c.sqlite")
    spool = BatchSpool(j, provider="openai", model="m", base_url="http://x/v1", limits=Limits(3, 10_000))
    for i in range(7):
        line = json.dumps({"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions", "body": {}}).encode() + b"\n"
        spool.add("/v1/chat/completions", line, 0.5)
    spool.add("/v1/completions", b'{"custom_id":"p0","method":"POST","url":"/v1/completions","body":{}}\n', 0.25)
    assert not j.records()  # nothing is a record before close(): a kill now leaves no half batch
    recs = spool.close()
    assert sorted(r.requests for r in recs) == [1, 1, 3, 3]
    assert {r.endpoint for r in recs} == {"/v1/chat/completions", "/v1/completions"}  # one endpoint per file
    assert all(r.state == "planned" for r in j.records()) and len(j.records()) == 4
    assert sum(r.est_cost_usd for r in recs) == pytest.approx(3.75)
    keys = sorted(k for r in recs for k in j.keys(r))
    assert keys == sorted([f"k{i}" for i in range(7)] + ["p0"])
    assert j.live_keys("openai", "http://x/v1") == {key_id(k) for k in keys}
    assert j.live_keys("anthropic", "http://x/v1") == set()


def test_spool_discard_leaves_nothing(tmp_path):
    j = BatchJournal(tmp_path / "c.sqlite")
    spool = BatchSpool(j, provider="openai", model="m", base_url="u", limits=Limits(2, 1000))
    for i in range(5):
        spool.add("/v1/completions", b'{"custom_id":"k%d"}\n' % i, None)
    spool.discard()
    assert [p.name for p in j.dir.iterdir() if not p.name.startswith(".")] == []


# ------------------------------------------------------------------------------------------ journal
def test_journal_saves_atomically_and_reads_states_and_failures(tmp_path):
    cache = tmp_path / "teacher-cache.sqlite"
    j = BatchJournal(cache)
    assert j.dir == journal_dir(cache) == tmp_path / "teacher-cache.sqlite.batches"
    rec = BatchRecord(id="b1", provider="openai", model="m", base_url="u", endpoint="/v1/completions",
                      requests=2, bytes=10)
    j.save(rec)
    assert not list(j.dir.glob("*.tmp*"))  # the temporary file was renamed
    rec.state, rec.batch_id = "submitted", "batch_abc"
    j.save(rec)
    assert j.load("b1").state == "submitted" and j.find("batch_abc").id == "b1"
    (j.dir / "broken.json").write_text("{not json")  # an unreadable record is skipped, not fatal, not deleted
    assert [r.id for r in j.records()] == ["b1"] and (j.dir / "broken.json").exists()
    rec.state, rec.failed = "collected", 2
    j.save(rec)
    j.failed_path("b1").write_text('{"key": "k1", "error": "HTTP 500: boom", "retry": true}\n'
                                   '{"key": "k2", "error": "HTTP 400: bad", "retry": false}\n')
    rec2 = BatchRecord(id="b2", provider="openai", model="m", base_url="u", endpoint="/v1/completions",
                       requests=1, bytes=5, state="collected", failed=1)
    j.save(rec2)
    j.failed_path("b2").write_text('{"key": "k1", "error": "batch: expired", "retry": true}\n')
    f = j.failures()
    assert f["k1"] == (2, "batch: expired", True) and f["k2"] == (1, "HTTP 400: bad", False)
    assert j.live_keys("openai", "u") == set()


def test_request_key_reads_custom_id_fast_or_in_full():
    assert request_key(b'{"custom_id":"abc","params":{}}\n') == "abc"
    assert request_key(b'{"params": {}, "custom_id": "xyz"}\n') == "xyz"


def test_journal_lock_is_exclusive(tmp_path):
    import fcntl

    j = BatchJournal(tmp_path / "c.sqlite")
    with j.locked():
        fd = os.open(j.dir / ".lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


# ------------------------------------------------------------------------------------------ prices
def test_batch_price_is_half_unless_the_table_says():
    p = Price(2.0, 8.0, cached_input_per_mtok=0.5)
    b = p.batch()
    assert (b.input_per_mtok, b.output_per_mtok, b.cached_input_per_mtok) == (1.0, 4.0, 0.25)
    assert b.cost(1_000_000, 1_000_000) == pytest.approx(p.cost(1_000_000, 1_000_000) / 2)


def test_batch_prices_from_a_table(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"m": {"input": 1, "output": 2, "batch_input": 0.4, "batch_output": 1.5}}))
    b = PriceTable.default(f).lookup("m").batch()
    assert (b.input_per_mtok, b.output_per_mtok) == (0.4, 1.5)


# ------------------------------------------------------------------------------------------ result lines
def test_openai_lines_recorded_and_reference():
    ok, bad_request, expired = _lines("openai")
    r = parse_openai_line(ok)
    assert r.key == "0" and r.error is None and r.body["object"] == "chat.completion"
    r = parse_openai_line(bad_request)  # an HTTP failure: status_code >= 400 and error null
    assert r.body is None and r.error.startswith("HTTP 400: Unsupported parameter") and not r.retry
    r = parse_openai_line(expired)
    assert r.body is None and "batch_expired" in r.error and r.retry
    r = parse_openai_line({"custom_id": "k", "response": {"status_code": 500, "body": {"error": {"message": "x"}}},
                           "error": None})
    assert r.retry and r.error.startswith("HTTP 500")


def test_anthropic_lines_recorded_and_reference():
    ok, errored, canceled, expired = _lines("anthropic")
    r = parse_anthropic_line(ok)
    assert r.key == "0" and r.body["type"] == "message" and r.body["content"][0]["type"] == "thinking"
    r = parse_anthropic_line(errored)
    assert r.body is None and "invalid_request_error" in r.error and not r.retry
    assert parse_anthropic_line(canceled).retry and parse_anthropic_line(expired).retry
    r = parse_anthropic_line({"custom_id": "k", "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": "overloaded_error", "message": "busy"}}}})
    assert r.retry


def test_recorded_replies_parse_with_the_teachers_own_parsers():
    """The bodies a batch returns are read by the same ``_parse_reply`` as online answers."""
    from synthkd.teachers.anthropic import AnthropicTeacher
    from synthkd.teachers.openai_compat import OpenAICompatibleTeacher

    o = OpenAICompatibleTeacher("gpt-3.5-turbo", base_url="http://127.0.0.1:9/v1", api_key="k", preflight=False)
    reply = o._parse_reply(parse_openai_line(_lines("openai")[0]).body, True, {})
    assert reply.choices[0].text and reply.usage.prompt_tokens > 0
    a = AnthropicTeacher("claude-3-7-sonnet", base_url="http://127.0.0.1:9", api_key="k", preflight=False)
    reply = a._parse_reply(parse_anthropic_line(_lines("anthropic")[0]).body, True, {"max_tokens": 8192})
    assert reply.choices[0].reasoning and reply.choices[0].text and reply.usage.completion_tokens > 0


def test_tidy_removes_what_a_dead_process_left_and_nothing_a_record_names(tmp_path):
    import subprocess
    import sys
    import time

    j = BatchJournal(tmp_path / "c.sqlite")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (j.dir / f"b1.jsonl.part{dead.pid}").write_text("x\n")  # a spool of a process that is gone
    (j.dir / f"b2.jsonl.part{os.getpid()}").write_text("x\n")  # ours, still being written
    old = j.dir / "b3.jsonl"  # renamed, its record never saved (killed in between), an hour ago
    old.write_text("x\n")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    (j.dir / "b4.jsonl").write_text("x\n")  # the same, but just now: maybe a live process's
    rec = BatchRecord(id="b5", provider="openai", model="m", base_url="u", endpoint="/v1/completions", requests=1,
                      bytes=2)
    j.save(rec)
    named = j.requests_path("b5")
    named.write_text("x\n")
    os.utime(named, (time.time() - 7200, time.time() - 7200))
    assert j.tidy() == 2
    assert sorted(p.name for p in j.dir.iterdir() if not p.name.startswith(".")) == [
        f"b2.jsonl.part{os.getpid()}", "b4.jsonl", "b5.json", "b5.jsonl"]
