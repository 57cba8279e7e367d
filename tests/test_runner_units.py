"""The pipeline runner's resume, ledger and run-directory code, called in-process with exact values:
content hashes and fingerprints (what decides skip / resume / start over), the manifest, the run-dir
rules (ours or empty, one run at a time, ``.prev`` kept once), the teacher ledger and its totals, and
whole runs of ``run_pipeline`` (a merge stage offline; a complete stage against the loopback server)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import read_jsonl, write_prompts
from synthkd.config import ConfigError, load_pipeline
from synthkd.pipeline import (
    LOCK_NAME,
    Ledger,
    Manifest,
    RunDirError,
    RunLock,
    _fingerprint,
    _json_hash,
    _move_aside,
    _record_teacher,
    _refuse_unknown_outputs,
    _stage_paths,
    claim_run_dir,
    file_sha,
    ledger_path,
    ledger_totals,
    open_run_dir,
    plan,
    read_manifest,
    referenced_stages,
    run_pipeline,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------- file_sha
def test_file_sha_of_a_file_is_its_sha256(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"id": 1}\n')
    assert file_sha(p) == _sha(b'{"id": 1}\n')
    p.write_bytes(b"")
    assert file_sha(p) == _sha(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_file_sha_of_a_file_larger_than_its_read_chunk_covers_every_byte(tmp_path):
    p = tmp_path / "big.bin"
    data = bytes(range(256)) * (5 * 4096 + 3)  # ~5.2 MiB: several 1 MiB reads and a short last one
    p.write_bytes(data)
    assert file_sha(p) == _sha(data)
    p.write_bytes(data[:-1] + b"\x00")  # only the very last byte differs
    assert file_sha(p) == _sha(data[:-1] + b"\x00") != _sha(data)
    p.write_bytes(data[: 1 << 20])  # exactly one chunk
    assert file_sha(p) == _sha(data[: 1 << 20])


def test_file_sha_of_a_directory_hashes_each_file_with_its_relative_path(tmp_path):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "empty_dir").mkdir()
    (d / "b.txt").write_bytes(b"bee")
    (d / "sub" / "a.txt").write_bytes(b"ay")
    h = hashlib.sha256()
    for rel, data in (("b.txt", b"bee"), ("sub/a.txt", b"ay")):  # sorted paths; directories add nothing
        h.update(rel.encode())
        h.update(_sha(data).encode())
    assert file_sha(d) == h.hexdigest()
    before = file_sha(d)
    (d / "sub" / "a.txt").rename(d / "sub" / "c.txt")  # same bytes, another name: another model
    assert file_sha(d) != before
    (d / "sub" / "c.txt").rename(d / "sub" / "a.txt")
    assert file_sha(d) == before
    (d / "b.txt").write_bytes(b"bee!")
    assert file_sha(d) != before


def test_json_hash_is_the_sha256_of_sorted_json_and_ignores_key_order():
    obj = {"b": 1, "a": [1, {"y": 2, "x": Path("/p")}]}
    assert _json_hash(obj) == _sha(json.dumps(obj, sort_keys=True, default=str).encode())
    assert _json_hash(obj) == _json_hash({"a": [1, {"x": "/p", "y": 2}], "b": 1})
    assert _json_hash({"a": 1}) != _json_hash({"a": 2})


# -------------------------------------------------------------------------------------- read_manifest
def test_read_manifest_refuses_a_file_that_is_not_json_naming_it(tmp_path):
    p = tmp_path / "manifest.json"
    p.write_text('{"stages": {}')
    try:
        json.loads('{"stages": {}')
    except ValueError as exc:
        why = str(exc)
    with pytest.raises(RunDirError) as e:
        read_manifest(p)
    assert str(e.value) == (f"{p}: not a synthkd manifest (not valid JSON: {why}); "
                            "point run_dir at a new or empty directory")


def test_read_manifest_refuses_a_file_that_is_not_utf8(tmp_path):
    p = tmp_path / "manifest.json"
    p.write_bytes(b'{"name": "\xff"}')
    with pytest.raises(RunDirError) as e:
        read_manifest(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: not a synthkd manifest (not valid JSON: 'utf-8' codec can't decode byte 0xff")
    assert msg.endswith("); point run_dir at a new or empty directory")


@pytest.mark.parametrize("data", [
    [1, 2], "text", 3, None,
    {"user": "webapp manifest"},
    {"synthkd_run": 2, "stages": {}},  # only marker 1 is ours
    {"synthkd_run": True + 1, "stages": {}},
    {"synthkd_run": 1, "stages": []},  # stages must be a mapping
    {"synthkd_run": 1},
    {"name": "p", "config": {}, "config_hash": "h"},  # the old keys, but no stages
    {"name": "p", "config": {}, "stages": {}},  # an old manifest had all four keys
])
def test_read_manifest_refuses_what_synthkd_did_not_write(tmp_path, data):
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(data))
    with pytest.raises(RunDirError) as e:
        read_manifest(p)
    assert str(e.value) == (f"{p}: not a synthkd manifest (it was not written by synthkd); "
                            "point run_dir at a new or empty directory")


def test_read_manifest_accepts_the_marker_or_the_keys_an_older_synthkd_wrote(tmp_path):
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps({"synthkd_run": 1, "stages": {"a": {"status": "done"}}}))
    assert read_manifest(p) == {"synthkd_run": 1, "stages": {"a": {"status": "done"}}}
    old = {"name": "p", "config": {"x": 1}, "config_hash": "h", "stages": {}}
    p.write_text(json.dumps(old))
    assert read_manifest(p) == {**old, "synthkd_run": 1}  # marked as ours from now on
    assert json.loads(p.read_text()) == old  # reading never rewrites


# -------------------------------------------------------------------------------------------- Manifest
def test_manifest_new_save_load_round_trip(tmp_path):
    p = tmp_path / "manifest.json"
    m = Manifest(p)
    assert m.data == {"synthkd_run": 1, "stages": {}}
    assert not p.exists()  # nothing written before save
    rec = m.stage("a")
    assert rec == {} and m.stage("a") is rec  # one record per stage
    rec["status"] = "done"
    m.data["when"] = Path("/x")  # saved with default=str
    m.save()
    text = p.read_text()
    assert text == json.dumps({"synthkd_run": 1, "stages": {"a": {"status": "done"}}, "when": "/x"}, indent=2) + "\n"
    assert sorted(x.name for x in tmp_path.iterdir() if x.name != ".home") == ["manifest.json"]  # no temporary left
    again = Manifest(p)
    assert again.data == {"synthkd_run": 1, "stages": {"a": {"status": "done"}}, "when": "/x"}
    assert again.stage("a") == {"status": "done"}


def test_manifest_save_replaces_atomically_and_a_failed_save_keeps_the_old_one(tmp_path):
    p = tmp_path / "manifest.json"
    m = Manifest(p)
    m.save()
    ino = p.stat().st_ino
    m.stage("a")["status"] = "running"
    m.save()
    assert p.stat().st_ino != ino  # a new file renamed over the old one, never rewritten in place
    old = p.read_text()
    (tmp_path / "manifest.json.tmp").mkdir()  # the temporary file cannot be written
    m.stage("a")["status"] = "done"
    with pytest.raises(OSError) as e:
        m.save()
    assert e.value.filename == str(tmp_path / "manifest.json.tmp")
    assert p.read_text() == old


def test_manifest_records_what_synthkd_made_once_by_name(tmp_path):
    m = Manifest(tmp_path / "manifest.json")
    assert not m.made(tmp_path / "a.jsonl.prev")
    m.record_made(tmp_path / "a.jsonl.prev")
    m.record_made(tmp_path / "elsewhere" / "a.jsonl.prev")  # the same name: recorded once
    m.record_made(tmp_path / "a.prev")
    assert m.data["made_by_synthkd"] == ["a.jsonl.prev", "a.prev"]
    assert m.made(tmp_path / "a.jsonl.prev") and m.made(tmp_path / "a.prev")
    assert not m.made(tmp_path / "a.jsonl")


# ------------------------------------------------------------------------------ open_run_dir, claim_run_dir
def test_open_run_dir_creates_a_fresh_directory_with_its_parents(tmp_path):
    run = tmp_path / "runs" / "deep" / "p"
    assert open_run_dir(run, "p") == run.resolve()
    assert run.is_dir() and list(run.iterdir()) == []
    assert open_run_dir(run, "p") == run.resolve()  # empty: fine again
    (run / LOCK_NAME).write_text("")  # only our lock file: still "empty"
    assert open_run_dir(run, "p") == run.resolve()


def test_open_run_dir_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "p").write_text("x")
    with pytest.raises(RunDirError) as e:
        open_run_dir(tmp_path / "p", "p")
    assert str(e.value) == f"{(tmp_path / 'p').resolve()}: exists and is not a directory"
    assert (tmp_path / "p").read_text() == "x"


def test_open_run_dir_refuses_a_foreign_non_empty_directory(tmp_path):
    run = tmp_path / "p"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError) as e:
        open_run_dir(run, "p")
    assert str(e.value) == (f"{run.resolve()}: exists, is not empty and is not a synthkd run directory (no "
                            "manifest.json); synthkd will not move or overwrite files it did not make: choose a new run_dir")
    assert sorted(x.name for x in run.iterdir()) == ["notes.txt"]


def test_open_run_dir_accepts_its_own_pipeline_only(tmp_path):
    run = tmp_path / "p"
    run.mkdir()
    (run / "a.jsonl").write_text("")
    (run / "manifest.json").write_text(json.dumps({"synthkd_run": 1, "stages": {}}))  # no name yet: ours
    assert open_run_dir(run, "p") == run.resolve()
    (run / "manifest.json").write_text(json.dumps({"synthkd_run": 1, "name": "p", "stages": {}}))
    assert open_run_dir(run, "p") == run.resolve()
    with pytest.raises(RunDirError) as e:
        open_run_dir(run, "q")
    assert str(e.value) == f"{run.resolve()}: holds the run of pipeline 'p', not 'q'"
    (run / "manifest.json").write_text('{"user": 1}')
    with pytest.raises(RunDirError, match="it was not written by synthkd"):
        open_run_dir(run, "p")


@pytest.mark.parametrize("kind", ["symlink", "dangling", "dir"])
def test_open_run_dir_refuses_a_manifest_that_is_not_a_plain_file(tmp_path, kind):
    run = tmp_path / "p"
    run.mkdir()
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"synthkd_run": 1, "name": "p", "stages": {}}))
    if kind == "symlink":
        (run / "manifest.json").symlink_to(real)
    elif kind == "dangling":
        (run / "manifest.json").symlink_to(tmp_path / "gone.json")
    else:
        (run / "manifest.json").mkdir()
    with pytest.raises(RunDirError) as e:
        open_run_dir(run, "p")
    assert str(e.value) == f"{run.resolve() / 'manifest.json'}: not a synthkd manifest (not a plain file)"


def test_claim_run_dir_marks_a_fresh_directory_as_synthkds(tmp_path):
    run = tmp_path / "runs" / "demo"
    assert claim_run_dir(run, "demo") == run.resolve()
    assert json.loads((run / "manifest.json").read_text()) == {"synthkd_run": 1, "stages": {}, "name": "demo"}
    (run / "inputs.jsonl").write_text("{}\n")  # the caller's own inputs: the dir is still ours
    assert claim_run_dir(run, "demo") == run.resolve()
    with pytest.raises(RunDirError, match="holds the run of pipeline 'demo', not 'other'"):
        claim_run_dir(run, "other")


def test_claim_run_dir_leaves_an_existing_manifest_alone(tmp_path):
    run = tmp_path / "demo"
    run.mkdir()
    text = '{"synthkd_run": 1, "name": "demo", "stages": {"a": {"status": "done"}}}'  # not as save() writes it
    (run / "manifest.json").write_text(text)
    ino = (run / "manifest.json").stat().st_ino
    assert claim_run_dir(run, "demo") == run.resolve()
    assert (run / "manifest.json").read_text() == text and (run / "manifest.json").stat().st_ino == ino


def test_claim_run_dir_refuses_what_open_run_dir_refuses(tmp_path):
    run = tmp_path / "demo"
    run.mkdir()
    (run / "x.txt").write_text("x")
    with pytest.raises(RunDirError, match="is not a synthkd run directory"):
        claim_run_dir(run, "demo")
    assert not (run / "manifest.json").exists()


# ---------------------------------------------------------------------------------------------- RunLock
def test_run_lock_is_held_once_and_names_the_holder(tmp_path):
    run = tmp_path / "p"
    run.mkdir()
    lock = RunLock(run)
    assert lock.path == run.resolve() / LOCK_NAME
    with lock as held:
        assert held is lock
        assert (run / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunDirError) as e:
            RunLock(run).__enter__()
        assert str(e.value) == (f"{run.resolve()}: another synthkd run (pid {os.getpid()}) is using this run "
                                "directory; wait for it to finish")
        (run / LOCK_NAME).write_text("")  # a holder that wrote no pid (yet)
        with pytest.raises(RunDirError) as e:
            RunLock(run).__enter__()
        assert "another synthkd run (pid ?) is using this run directory" in str(e.value)
    assert (run / LOCK_NAME).exists() and (run / LOCK_NAME).read_text() == ""  # kept, emptied: the lock is the flock
    lock.__exit__()  # a second release is harmless
    with RunLock(run):
        assert (run / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_run_lock_refuses_a_lock_file_that_leads_outside_the_run_dir(tmp_path):
    run = tmp_path / "p"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match="outside the run directory"):
        RunLock(run)


# ------------------------------------------------------------------------------- the stage's paths, .prev
def test_stage_paths_are_output_rejects_and_directory(tmp_path):
    assert _stage_paths(tmp_path / "sft.jsonl") == [tmp_path / "sft.jsonl", tmp_path / "sft.rejects.jsonl",
                                                    tmp_path / "sft"]


def test_ledger_path_is_beside_the_output():
    assert ledger_path(Path("/r/p/gen.jsonl")) == Path("/r/p/gen.ledger.jsonl")
    assert ledger_path(Path("/r/p/gen")) == Path("/r/p/gen.ledger.jsonl")
    assert ledger_path(Path("/r/p/a.jsonl.b.jsonl")) == Path("/r/p/a.jsonl.b.ledger.jsonl")


@pytest.mark.parametrize("which", ["s.jsonl", "s.rejects.jsonl", "s"])
def test_a_stage_never_run_refuses_outputs_it_did_not_make(tmp_path, which):
    run = tmp_path / "p"
    run.mkdir()
    _refuse_unknown_outputs(run, run / "s.jsonl", "s")  # nothing there: fine
    if which == "s":
        (run / which).mkdir()
    else:
        (run / which).write_text("")
    with pytest.raises(RunDirError) as e:
        _refuse_unknown_outputs(run, run / "s.jsonl", "s")
    assert str(e.value) == (f"{run / which}: exists, but the manifest records no run of stage 's'; synthkd will not "
                            "append to, move or delete a file it did not make: move it away first")


def test_a_dangling_symlink_counts_as_an_unknown_output(tmp_path):
    run = tmp_path / "p"
    run.mkdir()
    (run / "s.rejects.jsonl").symlink_to(tmp_path / "gone")
    with pytest.raises(RunDirError, match="s.rejects.jsonl: exists, but the manifest records no run of stage 's'"):
        _refuse_unknown_outputs(run, run / "s.jsonl", "s")


def _run_with_manifest(tmp_path):
    run = (tmp_path / "p").resolve()
    run.mkdir()
    return run, Manifest(run / "manifest.json")


def test_move_aside_moves_each_output_to_prev_and_records_it(tmp_path):
    run, m = _run_with_manifest(tmp_path)
    (run / "s.jsonl").write_text("rows\n")
    (run / "s.rejects.jsonl").write_text("rejects\n")
    (run / "s").mkdir()
    (run / "s" / "w.bin").write_text("weights")
    _move_aside(run, run / "s.jsonl", m)
    assert not (run / "s.jsonl").exists() and not (run / "s.rejects.jsonl").exists() and not (run / "s").exists()
    assert (run / "s.jsonl.prev").read_text() == "rows\n"
    assert (run / "s.rejects.jsonl.prev").read_text() == "rejects\n"
    assert (run / "s.prev" / "w.bin").read_text() == "weights"
    assert m.data["made_by_synthkd"] == ["s.jsonl.prev", "s.rejects.jsonl.prev", "s.prev"]
    assert json.loads((run / "manifest.json").read_text())["made_by_synthkd"] == m.data["made_by_synthkd"]  # saved


def test_move_aside_replaces_an_older_prev_that_synthkd_made(tmp_path):
    run, m = _run_with_manifest(tmp_path)
    for gen in ("first", "second"):
        (run / "s.jsonl").write_text(f"{gen}\n")
        (run / "s").mkdir()
        (run / "s" / f"{gen}.bin").write_text(gen)
        _move_aside(run, run / "s.jsonl", m)
    assert (run / "s.jsonl.prev").read_text() == "second\n"  # kept once: the older .prev is gone
    assert sorted(x.name for x in (run / "s.prev").iterdir()) == ["second.bin"]
    assert m.data["made_by_synthkd"] == ["s.jsonl.prev", "s.prev"]


def test_move_aside_removes_a_prev_symlink_it_made_without_following_it(tmp_path):
    run, m = _run_with_manifest(tmp_path)
    target = run / "precious"  # (a link leading out of the run dir is refused before anything: see below)
    target.mkdir()
    (target / "keep.txt").write_text("k")
    (run / "s.prev").symlink_to(target)
    m.record_made(run / "s.prev")
    (run / "s").mkdir()
    _move_aside(run, run / "s.jsonl", m)
    assert (run / "s.prev").is_dir() and not (run / "s.prev").is_symlink()
    assert (target / "keep.txt").read_text() == "k"  # the link went, not what it pointed to


def test_move_aside_refuses_a_prev_it_did_not_make(tmp_path):
    run, m = _run_with_manifest(tmp_path)
    (run / "s.jsonl").write_text("new\n")
    (run / "s.jsonl.prev").write_text("a user's file\n")
    with pytest.raises(RunDirError) as e:
        _move_aside(run, run / "s.jsonl", m)
    assert str(e.value) == (f"{run / 's.jsonl.prev'}: exists and was not made by synthkd; move it away (synthkd will "
                            "not replace or delete it)")
    assert (run / "s.jsonl").read_text() == "new\n" and (run / "s.jsonl.prev").read_text() == "a user's file\n"
    assert "made_by_synthkd" not in m.data


def test_move_aside_skips_what_is_missing_and_a_stage_name_that_is_a_file_or_link(tmp_path):
    run, m = _run_with_manifest(tmp_path)
    _move_aside(run, run / "s.jsonl", m)  # nothing to move: nothing recorded
    assert "made_by_synthkd" not in m.data and not (run / "manifest.json").exists()
    (run / "s").write_text("a file named like the stage, not its directory")
    (run / "elsewhere").mkdir()
    (run / "t").symlink_to(run / "elsewhere")
    _move_aside(run, run / "s.jsonl", m)
    _move_aside(run, run / "t.jsonl", m)
    assert (run / "s").is_file() and (run / "t").is_symlink()
    assert not (run / "s.prev").exists() and not (run / "t.prev").exists()
    (run / "s.rejects.jsonl").write_text("r\n")  # only the rejects file: it alone moves
    _move_aside(run, run / "s.jsonl", m)
    assert m.data["made_by_synthkd"] == ["s.rejects.jsonl.prev"] and (run / "s.rejects.jsonl.prev").exists()


# ---------------------------------------------------------------------------------- the ledger, its totals
def test_ledger_lines_are_exact_and_a_second_attempt_appends(tmp_path):
    path = tmp_path / "s.ledger.jsonl"
    led = Ledger(path)
    pid, ns = led.attempt.split("-")
    assert pid == str(os.getpid()) and ns.isdigit()
    led.sent("k1")
    led.failed("k1")
    led.sent("k1")
    led.answered("k1", SimpleNamespace(prompt_tokens=12, completion_tokens=5), 0.25)
    led.answered("k2", SimpleNamespace(prompt_tokens=1.0, completion_tokens=2.0), None)
    from synthkd.teachers.stats import TeacherStats
    stats = TeacherStats(attempts=2, cached=1, prompt_tokens=12, completion_tokens=5, cost_usd=0.25)
    led.end(SimpleNamespace(stats=stats))  # no structured answers: no structured counters in the line
    led.close()
    led.close()  # harmless twice
    a = led.attempt
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [
        {"attempt": a, "sent": "k1"}, {"attempt": a, "failed": "k1"}, {"attempt": a, "sent": "k1"},
        {"attempt": a, "answer": "k1", "prompt_tokens": 12, "completion_tokens": 5, "cost_usd": 0.25},
        # no price known for the answer: null, never 0 (the totals then say the cost is unknown)
        {"attempt": a, "answer": "k2", "prompt_tokens": 1, "completion_tokens": 2, "cost_usd": None},
        {"attempt": a, "end": {"requests": 2, "cached_answers": 1, "prompt_tokens": 12, "completion_tokens": 5,
                               "cost_usd": 0.25, "price_known": True}},
    ]
    assert path.read_text().endswith("\n")
    size = path.stat().st_size
    led2 = Ledger(path)  # a whole last line: no blank line is added
    led2.sent("k3")
    led2.close()
    assert led2.attempt != a
    assert path.read_bytes()[size:] == f'{{"attempt": "{led2.attempt}", "sent": "k3"}}\n'.encode()


def test_ledger_totals_of_no_ledger_or_no_attempt_is_none(tmp_path):
    path = tmp_path / "s.ledger.jsonl"
    assert ledger_totals(path) is None
    path.write_text("")
    assert ledger_totals(path) is None
    path.write_text('{"attempt": "k", "sent"')  # a single torn line
    assert ledger_totals(path) is None


def _line(attempt, **kw):
    return json.dumps({"attempt": attempt, **kw}) + "\n"


def test_ledger_totals_exact_dict_for_killed_finished_and_cached_attempts(tmp_path):
    path = tmp_path / "s.ledger.jsonl"
    end_f = {"requests": 2, "cached_answers": 3, "prompt_tokens": 30, "completion_tokens": 6, "cost_usd": 0.3}
    path.write_text(
        # killed: A answered, B failed then in flight, C in flight and answered by f, D in flight, never answered
        _line("k", sent="A") + _line("k", answer="A", prompt_tokens=10, completion_tokens=4, cost_usd=0.1)
        + _line("k", sent="B") + _line("k", failed="B") + _line("k", sent="B")
        + _line("k", sent="C") + _line("k", sent="D") + "not json at all\n"
        # finished: B and C answered, exact counters agree with its lines
        + _line("f", sent="B") + _line("f", answer="B", prompt_tokens=20, completion_tokens=2, cost_usd=0.2)
        + _line("f", sent="C") + _line("f", answer="C", prompt_tokens=10, completion_tokens=4, cost_usd=0.1)
        + _line("f", end={**end_f, "prompt_tokens": 30, "completion_tokens": 6})
        # finished from the cache only: no sends, its counters are taken as they are
        + _line("c", end={"requests": 0, "cached_answers": 5, "prompt_tokens": 0, "completion_tokens": 0,
                          "cost_usd": 0.0}))
    t = ledger_totals(path)
    # k: sent A,B,B,C,D = 5 requests, answer A 10/4/0.1; in flight B (priced like f's B: 20/2/0.2), C (10/4/0.1),
    # D unknown.  f: 2 requests 30/6/0.3.  c: 5 cached.
    assert t == {
        "attempts": 3, "interrupted_attempts": 1,
        "requests": 5 + 2 + 0, "cached_answers": 3 + 5,
        "prompt_tokens": 10 + 20 + 10 + 30, "completion_tokens": 4 + 2 + 4 + 6,
        "cost_usd": round(0.1 + 0.2 + 0.1 + 0.3, 8),
        "estimated_unreceived": {"requests": 2, "prompt_tokens": 30, "completion_tokens": 6, "cost_usd": 0.3},
        "unknown_unreceived": 1, "journal_mismatch": 0,
    }


def test_ledger_totals_flags_a_finished_attempt_whose_counters_disagree(tmp_path):
    path = tmp_path / "s.ledger.jsonl"
    ok = {"requests": 1, "cached_answers": 0, "prompt_tokens": 3, "completion_tokens": 2, "cost_usd": 0.5}
    body = _line("a", sent="X") + _line("a", answer="X", prompt_tokens=3, completion_tokens=2, cost_usd=0.5)
    for field, bad in (("requests", 2), ("prompt_tokens", 4), ("completion_tokens", 1)):
        path.write_text(body + _line("a", end={**ok, field: bad}))
        t = ledger_totals(path)
        assert t["journal_mismatch"] == 1, field
        assert t[field] == bad  # the exact counters are what is counted
        assert t["interrupted_attempts"] == 0
    path.write_text(body + _line("a", end={**ok, "cost_usd": 9.0}))  # cost is not cross-checked
    t = ledger_totals(path)
    assert t["journal_mismatch"] == 0 and t["cost_usd"] == 9.0
    path.write_text(_line("a", end={**ok, "requests": 7}))  # no sends at all: nothing to disagree with
    assert ledger_totals(path)["journal_mismatch"] == 0


def test_ledger_totals_in_flight_send_adds_the_answer_of_another_attempt_and_a_cancelled_finished_one(tmp_path):
    # a finished attempt (an end line) whose send was never resolved (cancelled in flight) adds the same
    # request's answer from another attempt on top of its exact counters
    path = tmp_path / "s.ledger.jsonl"
    path.write_text(
        _line("a", sent="X") + _line("a", end={"requests": 1, "cached_answers": 0, "prompt_tokens": 0,
                                               "completion_tokens": 0, "cost_usd": 0.0})
        + _line("b", sent="X") + _line("b", answer="X", prompt_tokens=7, completion_tokens=3, cost_usd=0.125)
        + _line("b", sent="X") + _line("b", answer="X", prompt_tokens=7, completion_tokens=3, cost_usd=0.125))
    t = ledger_totals(path)
    assert t["interrupted_attempts"] == 1  # b has no end line
    # requests are not added again: a's exact counter already counts its cancelled send, b counts its sends
    assert (t["requests"], t["prompt_tokens"], t["completion_tokens"], t["cost_usd"]) == (1 + 2, 7 + 14, 3 + 6, 0.375)
    assert t["estimated_unreceived"] == {"requests": 1, "prompt_tokens": 7, "completion_tokens": 3, "cost_usd": 0.125}
    assert t["journal_mismatch"] == 0 and t["unknown_unreceived"] == 0


def test_ledger_totals_lines_without_an_attempt_are_one_attempt_and_an_answer_without_key_counts(tmp_path):
    path = tmp_path / "s.ledger.jsonl"
    path.write_text(json.dumps({"sent": "Y"}) + "\n" + json.dumps({"sent": "Y"}) + "\n"
                    + json.dumps({"answer": "Y", "prompt_tokens": 2, "completion_tokens": 1}) + "\n"
                    + json.dumps({"prompt_tokens": 5, "completion_tokens": 5, "cost_usd": None}) + "\n")
    t = ledger_totals(path)
    # one attempt "?": 2 sends (its requests), 1 answered (2/1, no cost); an answer line without a key still
    # counts its tokens; Y in flight once more: its tokens priced like its answer
    assert t["attempts"] == 1 and t["interrupted_attempts"] == 1
    # an answer line with "cost_usd": null was billed at an unknown price: the cost is unknown, not 0
    assert (t["requests"], t["prompt_tokens"], t["completion_tokens"], t["cost_usd"]) == (2, 2 + 5 + 2, 1 + 5 + 1, None)
    assert t["price_known"] is False
    assert t["estimated_unreceived"] == {"requests": 1, "prompt_tokens": 2, "completion_tokens": 1, "cost_usd": None}


def test_ledger_totals_rounds_cost_to_8_places(tmp_path):
    path = tmp_path / "s.ledger.jsonl"
    path.write_text("".join(_line("k", sent=f"K{i}") + _line("k", answer=f"K{i}", prompt_tokens=1, completion_tokens=1,
                                                              cost_usd=0.1) for i in range(3))
                    + _line("k", sent="Z") + _line("j", sent="Z")
                    + _line("j", answer="Z", prompt_tokens=1, completion_tokens=1, cost_usd=0.123456789))
    t = ledger_totals(path)
    assert t["cost_usd"] == round(0.1 * 3 + 0.123456789 * 2, 8) == 0.54691358
    assert t["estimated_unreceived"]["cost_usd"] == 0.12345679


def test_record_teacher_puts_the_ledger_totals_and_model_in_the_stage_record(tmp_path):
    out = tmp_path / "s.jsonl"
    rec: dict = {"status": "running"}
    _record_teacher(rec, out, SimpleNamespace(model="m1"))  # no ledger: no teacher was used
    assert rec == {"status": "running"}
    ledger_path(out).write_text(_line("a", sent="X") + _line("a", answer="X", prompt_tokens=1, completion_tokens=2,
                                                            cost_usd=0.5))
    totals = ledger_totals(ledger_path(out))
    _record_teacher(rec, out, SimpleNamespace(model="m1"))
    assert rec["teacher"] == {"model": "m1", **totals}
    _record_teacher(rec, out, None)  # a stage that did not open its teacher this time keeps the recorded model
    assert rec["teacher"] == {"model": "m1", **totals}
    rec2: dict = {}
    _record_teacher(rec2, out, None)
    assert rec2 == {"teacher": {"model": None, **totals}}


# ------------------------------------------------------------------------------ referenced_stages, fingerprint
def test_referenced_stages_finds_names_at_any_depth_and_nothing_else():
    names = {"sft", "gen", "other"}
    assert referenced_stages("sft", names) == {"sft"}
    assert referenced_stages("nope", names) == set()
    assert referenced_stages({"a": {"b": [1, {"c": ["x", "gen"]}]}, "d": "sft"}, names) == {"sft", "gen"}
    assert referenced_stages([["other"]], names) == {"other"}
    assert referenced_stages({}, names) == set() and referenced_stages([], names) == set()
    assert referenced_stages({"sft": 1}, names) == set()  # keys are not references
    assert referenced_stages(None, names) == set() and referenced_stages(3, names) == set()
    assert referenced_stages(("sft",), names) == set()  # only JSON values (lists) are walked


def _plan(tmp_path, teacher: str = "{model: test-model, base_url: 'http://127.0.0.1:9/v1'}", samples: int = 1,
          seed: int = 0, src: str = "in.jsonl"):
    (tmp_path / "p.yaml").write_text(
        f"name: p\nseed: {seed}\nteacher: {teacher}\n"
        f"stages:\n  - {{name: c, kind: complete, input: {src}, options: {{samples: {samples}}}}}\n")
    return plan(load_pipeline(tmp_path / "p.yaml"), tmp_path)[0]


def test_fingerprint_changes_with_what_changes_answers_and_not_otherwise(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 3)
    write_prompts(tmp_path / "in2.jsonl", 3)
    base = _fingerprint(_plan(tmp_path), {"input": "h1"})
    assert base == _fingerprint(_plan(tmp_path), {"input": "h1"})  # deterministic
    assert base == _fingerprint(_plan(tmp_path), {"input": "h1"}, {})  # no upstream == empty upstream
    # how the teacher is reached changes no answer: same fingerprint (a rerun resumes)
    for conn in ("concurrency: 3", "rpm: 100", "tpm: 1000", "timeout: 5", "max_retries: 1", "max_cost: 2.5",
                 "adaptive_timeout: false"):
        p = _plan(tmp_path, teacher=f"{{model: test-model, base_url: 'http://127.0.0.1:9/v1', {conn}}}")
        assert _fingerprint(p, {"input": "h1"}) == base, conn
    changed = {
        "inputs": _fingerprint(_plan(tmp_path), {"input": "h2"}),
        "upstream": _fingerprint(_plan(tmp_path), {"input": "h1"}, {"sft": "fp"}),
        "upstream fp": _fingerprint(_plan(tmp_path), {"input": "h1"}, {"sft": "fp2"}),
        "options": _fingerprint(_plan(tmp_path, samples=2), {"input": "h1"}),
        "seed": _fingerprint(_plan(tmp_path, seed=1), {"input": "h1"}),
        "model": _fingerprint(_plan(tmp_path, teacher="{model: other, base_url: 'http://127.0.0.1:9/v1'}"),
                              {"input": "h1"}),
        "temperature": _fingerprint(_plan(tmp_path, teacher="{model: test-model, base_url: 'http://127.0.0.1:9/v1', "
                                                             "temperature: 0.5}"), {"input": "h1"}),
        "stage input": _fingerprint(_plan(tmp_path, src="in2.jsonl"), {"input": "h1"}),
    }
    assert base not in changed.values()
    assert len(set(changed.values())) == len(changed)


def test_fingerprint_of_a_stage_without_teacher(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "p.yaml").write_text("name: p\nstages:\n  - {name: m, kind: merge, inputs: {t: in.jsonl}}\n")
    p = plan(load_pipeline(tmp_path / "p.yaml"), tmp_path)[0]
    assert p.ctx.teacher_config is None
    # an empty column map is left out of the stage's dump: runs made before `columns:` existed keep their
    # fingerprints (not rerun after an upgrade); a map that reads other columns is a different stage
    assert _fingerprint(p, {"t": "h"}) == _json_hash({
        "upstream": {}, "stage": p.cfg.model_dump(exclude={"teacher", "columns"}),
        "options": p.options.model_dump(mode="json"), "teacher": None, "inputs": {"t": "h"}, "seed": 0})
    p.cfg.columns = {"text": "utterance"}
    assert _fingerprint(p, {"t": "h"}) == _json_hash({
        "upstream": {}, "stage": p.cfg.model_dump(exclude={"teacher"}),
        "options": p.options.model_dump(mode="json"), "teacher": None, "inputs": {"t": "h"}, "seed": 0})


# --------------------------------------------------------------------------------- run_pipeline, in-process
def _merge_yaml(tmp_path: Path, stages: str = "  - {name: m, kind: merge, inputs: {t: in.jsonl}}\n") -> Path:
    p = tmp_path / "p.yaml"
    p.write_text("name: p\nstages:\n" + stages)
    return p


def _rows(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(n)))


def _run(tmp_path: Path, yaml: Path, **kw):
    said: list[str] = []
    res = asyncio.run(run_pipeline(load_pipeline(yaml), base_dir=tmp_path, log=said.append, **kw))
    return res, said


def test_run_pipeline_runs_skips_reruns_and_moves_aside(tmp_path):
    _rows(tmp_path / "in.jsonl", 3)
    yaml = _merge_yaml(tmp_path, "  - {name: m, kind: merge, inputs: {t: in.jsonl}}\n"
                                 "  - {name: n, kind: merge, inputs: {u: m}}\n")
    run = (tmp_path / "runs" / "p").resolve()
    res, said = _run(tmp_path, yaml)
    assert (res.run_dir, res.ran, res.skipped) == (run, ["m", "n"], [])
    assert said[0] == "[m] running (merge)" and said[2] == "[n] running (merge)"
    assert said[1].startswith("[m] done in ") and said[1].endswith(
        's: {"rows_in": 3, "rows_out": 3, "rejected": 0, "dropped": {}, "per_input": {"t": 3}}')
    man = json.loads((run / "manifest.json").read_text())
    assert man == res.manifest | {"versions": man["versions"]}
    assert man["synthkd_run"] == 1 and man["name"] == "p" and man["config"] == load_pipeline(yaml).recorded()
    assert man["config_hash"] == _json_hash(load_pipeline(yaml).model_dump(mode="json"))
    m, n = man["stages"]["m"], man["stages"]["n"]
    assert (m["status"], m["kind"], m["outputs"], m["counts"]["rows_out"]) == ("done", "merge", [str(run / "m.jsonl")], 3)
    assert n["status"] == "done" and "teacher" not in m  # no teacher, no ledger
    assert m["fingerprint"] != n["fingerprint"] and isinstance(m["seconds"], float)
    assert [r["id"] for r in read_jsonl(run / "n.jsonl")] == ["u:t:0", "u:t:1", "u:t:2"]
    assert (run / "report.md").exists() and (run / LOCK_NAME).read_text() == ""  # the lock released
    fps = (m["fingerprint"], n["fingerprint"])

    res, said = _run(tmp_path, yaml)  # nothing changed: both skipped
    assert (res.ran, res.skipped) == ([], ["m", "n"])
    assert said == ["[m] unchanged since its last run: skipped", "[n] unchanged since its last run: skipped"]

    res, said = _run(tmp_path, yaml, from_stage="n")  # --from: n re-runs, its old output moved aside
    assert (res.ran, res.skipped) == (["n"], ["m"])
    assert (run / "n.jsonl.prev").exists() and not (run / "m.jsonl.prev").exists()
    assert json.loads((run / "manifest.json").read_text())["made_by_synthkd"] == ["n.jsonl.prev"]

    _rows(tmp_path / "in.jsonl", 4)  # m's input changed: m re-runs, and n because m's output changed
    res, said = _run(tmp_path, yaml)
    assert res.ran == ["m", "n"]
    man = json.loads((run / "manifest.json").read_text())
    assert man["stages"]["m"]["fingerprint"] != fps[0] and man["stages"]["n"]["fingerprint"] != fps[1]
    assert len(read_jsonl(run / "m.jsonl.prev")) == 3 and len(read_jsonl(run / "m.jsonl")) == 4
    assert man["stages"]["n"]["counts"]["rows_out"] == 4


def test_run_pipeline_reruns_a_done_stage_whose_output_went_missing(tmp_path):
    _rows(tmp_path / "in.jsonl", 2)
    yaml = _merge_yaml(tmp_path)
    _run(tmp_path, yaml)
    run = tmp_path / "runs" / "p"
    (run / "m.jsonl").unlink()
    res, said = _run(tmp_path, yaml)
    assert res.ran == ["m"] and len(read_jsonl(run / "m.jsonl")) == 2
    assert not (run / "m.jsonl.prev").exists()  # same fingerprint: resumed in place, nothing moved


def test_run_pipeline_refuses_an_unknown_from_stage_and_a_foreign_output(tmp_path):
    _rows(tmp_path / "in.jsonl", 2)
    yaml = _merge_yaml(tmp_path)
    with pytest.raises(ConfigError) as e:
        _run(tmp_path, yaml, from_stage="zz")
    assert str(e.value) == "--from 'zz': no such stage (stages: m)"
    assert not (tmp_path / "runs").exists()  # refused before the run dir is made
    run = tmp_path / "runs" / "p"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"synthkd_run": 1, "name": "p", "stages": {}}))
    (run / "m.jsonl").write_text('{"id": "theirs"}\n')
    with pytest.raises(RunDirError, match="m.jsonl: exists, but the manifest records no run of stage 'm'"):
        _run(tmp_path, yaml)
    assert (run / "m.jsonl").read_text() == '{"id": "theirs"}\n'


def test_run_pipeline_records_a_failed_stage_and_keeps_the_run_dir_usable(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n[2]\n')  # the merge stops on line 2
    yaml = _merge_yaml(tmp_path)
    with pytest.raises(Exception, match=r"in.jsonl:2: expected a JSON object, got list"):
        _run(tmp_path, yaml)
    run = tmp_path / "runs" / "p"
    rec = json.loads((run / "manifest.json").read_text())["stages"]["m"]
    assert rec["status"] == "failed" and "seconds" in rec and "counts" not in rec
    _rows(tmp_path / "in.jsonl", 2)  # fixed: the stage starts over (fingerprint changed)
    res, _ = _run(tmp_path, yaml)
    assert res.ran == ["m"] and json.loads((run / "manifest.json").read_text())["stages"]["m"]["status"] == "done"


def test_run_pipeline_is_refused_while_another_run_holds_the_dir(tmp_path):
    _rows(tmp_path / "in.jsonl", 2)
    yaml = _merge_yaml(tmp_path)
    run = tmp_path / "runs" / "p"
    run.mkdir(parents=True)
    with RunLock(run):
        with pytest.raises(RunDirError, match=r"another synthkd run \(pid \d+\) is using this run directory"):
            _run(tmp_path, yaml)
    assert not (run / "manifest.json").exists()


def test_run_pipeline_complete_stage_resumes_and_records_its_ledger(tmp_path, make_server):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 6)
    yaml = tmp_path / "p.yaml"
    yaml.write_text(f"name: p\nteacher: {{model: test-model, base_url: '{srv.base_url}', concurrency: 2}}\n"
                    "stages:\n  - {name: c, kind: complete, input: in.jsonl}\n")
    run = tmp_path / "runs" / "p"
    res, said = _run(tmp_path, yaml)
    assert res.ran == ["c"]
    rec = json.loads((run / "manifest.json").read_text())["stages"]["c"]
    assert rec["counts"] == {"rows_in": 6, "rows_out": 6}
    t = rec["teacher"]
    assert t["model"] == "test-model"
    assert (t["attempts"], t["interrupted_attempts"], t["requests"], t["journal_mismatch"]) == (1, 0, 6, 0)
    assert t == {"model": "test-model", **ledger_totals(run / "c.ledger.jsonl")}
    # as if killed mid-stage: status "running", two rows lost; the rerun resumes (no .prev) and sends 2 requests
    man = json.loads((run / "manifest.json").read_text())
    man["stages"]["c"]["status"] = "running"
    (run / "manifest.json").write_text(json.dumps(man))
    lines = (run / "c.jsonl").read_bytes().splitlines(keepends=True)
    (run / "c.jsonl").write_bytes(b"".join(lines[:4]))
    sent = srv.stats()["by_endpoint"]["/v1/completions"]
    res, said = _run(tmp_path, yaml)
    assert res.ran == ["c"] and not (run / "c.jsonl.prev").exists()
    assert (run / "c.jsonl").read_bytes().startswith(b"".join(lines[:4]))
    assert sorted(r["id"] for r in read_jsonl(run / "c.jsonl")) == [f"q{i}" for i in range(6)]
    rec = json.loads((run / "manifest.json").read_text())["stages"]["c"]
    assert rec["counts"]["rows_out"] == 6  # counted in the file, not "written this time"
    assert rec["teacher"]["attempts"] == 2
    assert srv.stats()["by_endpoint"]["/v1/completions"] - sent <= 2


def test_a_ledger_that_cannot_be_written_names_its_file(tmp_path):
    # the teacher's stop message and the CLI's one line say where the disk was full: the ledger's path
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    led = Ledger(Path("/dev/full"))
    try:
        with pytest.raises(OSError) as e:
            led.sent("k1")
    finally:
        led.close()
    assert e.value.errno == errno.ENOSPC and e.value.filename == "/dev/full"
    assert led._fd == -1
    led.close()  # closing twice is harmless
