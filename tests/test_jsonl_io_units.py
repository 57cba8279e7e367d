"""The resume machinery of ``synthkd.jsonl_io``, called in-process with exact values: the torn-tail repair,
the index of ids already written, the append-only writers, the rejects tidy-up, atomic replaces and the
output lock.  A silent bug here loses (or duplicates) rows a user paid for, so every assertion pins an
exact byte string, count or message."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat

import numpy as np
import pytest

from synthkd.errors import InputError, OutputWriteError, PathError
from synthkd.jsonl_io import (
    AppendWriter,
    OutputLock,
    RejectsWriter,
    SortedIdSet,
    _entry_id,
    atomic_write_bytes,
    id_hash,
    index_output,
    repair_tail,
)


def _line(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# ------------------------------------------------------------------------------------------ repair_tail
def test_repair_tail_of_a_missing_or_empty_file_removes_nothing(tmp_path):
    assert repair_tail(tmp_path / "nope.jsonl") == 0
    assert not (tmp_path / "nope.jsonl").exists()
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert repair_tail(tmp_path / "empty.jsonl") == 0
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


def test_repair_tail_keeps_a_file_of_whole_lines_byte_for_byte(tmp_path):
    p = tmp_path / "o.jsonl"
    data = _line({"id": 1}) + _line({"id": 2}) + _line({"id": 3})
    p.write_bytes(data)
    assert repair_tail(p) == 0
    assert p.read_bytes() == data
    p.write_bytes(_line({"id": "only"}))  # a single whole line: nothing before it
    assert repair_tail(p) == 0 and p.read_bytes() == _line({"id": "only"})


def test_repair_tail_cuts_a_last_line_without_newline_and_returns_the_bytes_removed(tmp_path):
    p = tmp_path / "o.jsonl"
    whole = _line({"id": 1}) + _line({"id": 2})
    p.write_bytes(whole + b'{"id":3,"comp')
    assert repair_tail(p) == len(b'{"id":3,"comp')
    assert p.read_bytes() == whole
    # a last line that is valid JSON but lacks its newline is torn too (the newline is written with it)
    p.write_bytes(whole + b'{"id":3}')
    assert repair_tail(p) == 8 and p.read_bytes() == whole


def test_repair_tail_cuts_a_last_line_that_is_not_json_even_with_its_newline(tmp_path):
    p = tmp_path / "o.jsonl"
    whole = _line({"id": 1})
    p.write_bytes(whole + b'{"id":2,"x\n')
    assert repair_tail(p) == len(b'{"id":2,"x\n')
    assert p.read_bytes() == whole


def test_repair_tail_of_a_file_holding_only_a_torn_line_empties_it(tmp_path):
    p = tmp_path / "o.jsonl"
    p.write_bytes(b'{"id":1,"comple')
    assert repair_tail(p) == 15
    assert p.read_bytes() == b""
    p.write_bytes(b'{"id":1,"x\n')  # one line, newline-terminated but not JSON
    assert repair_tail(p) == 11 and p.read_bytes() == b""


def test_repair_tail_finds_the_start_of_a_last_line_longer_than_its_read_block(tmp_path):
    # the scan reads back in 64 KiB blocks: a torn row of 200 kB spans four of them
    p = tmp_path / "o.jsonl"
    head = _line({"id": 1}) + _line({"id": 2, "t": "y" * 70_000})
    torn = b'{"id":3,"t":"' + b"x" * 200_000
    p.write_bytes(head + torn)
    assert repair_tail(p) == len(torn)
    assert p.read_bytes() == head
    # and a whole last row that long is kept
    p.write_bytes(head + _line({"id": 3, "t": "x" * 200_000}))
    assert repair_tail(p) == 0 and p.stat().st_size == len(head) + len(_line({"id": 3, "t": "x" * 200_000}))
    # a torn row with no newline anywhere before it, longer than a block: the file is emptied
    p.write_bytes(torn)
    assert repair_tail(p) == len(torn) and p.read_bytes() == b""


def test_repair_tail_when_a_block_boundary_falls_right_after_a_newline(tmp_path):
    # the last newline of the file body is the first byte of the last 64 KiB block
    p = tmp_path / "o.jsonl"
    last = b'{"id":2,"t":"' + b"z" * ((1 << 16) - 1 - 13)  # torn: exactly 64 KiB - 1 bytes
    first = b'{"id":1}'
    p.write_bytes(first + b"\n" + last)
    assert len(last) + 1 == 1 << 16
    assert repair_tail(p) == len(last)
    assert p.read_bytes() == first + b"\n"


# ------------------------------------------------------------------------------ index_output, SortedIdSet
def test_index_output_of_a_missing_file_is_empty(tmp_path):
    done = index_output(tmp_path / "none.jsonl")
    assert len(done) == 0
    assert "a" not in done and 0 not in done
    assert not (tmp_path / "none.jsonl").exists()


def test_index_output_holds_exactly_the_ids_written_and_repairs_the_tail(tmp_path):
    p = tmp_path / "o.jsonl"
    whole = _line({"id": "a", "completion": "x"}) + b"\n" + _line({"id": 7}) + _line({"id": "b"})
    p.write_bytes(whole + b'{"id":"c","comp')  # c was torn by a crash: not done
    done = index_output(p)
    assert p.read_bytes() == whole  # the torn line is cut before anything is appended
    assert len(done) == 3
    assert "a" in done and "b" in done and 7 in done
    assert "c" not in done
    assert "7" not in done and 8 not in done  # 7 and "7" are different ids


def test_index_output_with_another_id_field(tmp_path):
    p = tmp_path / "o.jsonl"
    p.write_bytes(_line({"key": "k1", "id": "zzz"}) + _line({"key": "k2"}))
    done = index_output(p, id_field="key")
    assert len(done) == 2 and "k1" in done and "k2" in done and "zzz" not in done


@pytest.mark.parametrize("row", [{"completion": "x"}, ["id", 1], "id"])
def test_index_output_refuses_an_existing_row_without_an_id(tmp_path, row):
    p = tmp_path / "o.jsonl"
    p.write_bytes(_line({"id": 1}) + _line(row))
    with pytest.raises(InputError) as e:
        index_output(p)
    assert e.value.problems == [f"{p}:2: field 'id': missing in an existing output row"]
    with pytest.raises(InputError) as e:
        index_output(p, id_field="key")
    assert e.value.problems == [f"{p}:1: field 'key': missing in an existing output row"]


def test_sorted_id_set_membership_at_both_ends_and_beyond(tmp_path):
    ids = ["a", "b", 3, "zz", -5]
    hashes = np.array(sorted(id_hash(i) for i in ids), dtype=np.int64)
    s = SortedIdSet(hashes)
    assert len(s) == 5
    for i in ids:
        assert i in s
    for other in ("c", "3", 4, "", None):
        assert other not in s
    # an id whose hash is larger than every member (searchsorted returns the size) is not a member
    big = next(x for x in range(10_000) if id_hash(x) > int(hashes[-1]))
    small = next(x for x in range(10_000) if id_hash(x) < int(hashes[0]))
    assert big not in s and small not in s
    assert SortedIdSet(np.array([id_hash(big)], dtype=np.int64)).__contains__(big)
    empty = SortedIdSet(np.empty(0, dtype=np.int64))
    assert len(empty) == 0 and "a" not in empty


# ------------------------------------------------------------------------------------------ AppendWriter
def test_append_writer_appends_whole_lines_and_never_truncates(tmp_path):
    p = tmp_path / "sub" / "dir" / "o.jsonl"  # parent directories are made
    with AppendWriter(p) as w:
        w.write({"id": 1, "v": np.int64(5)})  # numpy values serialise
        w.write({"id": 2})
        assert w.count == 2
    assert p.read_bytes() == b'{"id":1,"v":5}\n{"id":2}\n'
    w = AppendWriter(p)  # a second writer appends: the rows already there stay
    try:
        assert w.count == 0
        w.write({"id": 3})
        assert w.count == 1
    finally:
        w.close()
    w.close()  # closing twice is harmless
    assert p.read_bytes() == b'{"id":1,"v":5}\n{"id":2}\n{"id":3}\n'


def test_append_writer_creates_its_file_with_mode_644(tmp_path):
    old = os.umask(0o022)
    try:
        with AppendWriter(tmp_path / "o.jsonl") as w:
            w.write({"id": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.jsonl").stat().st_mode) == 0o644


def test_append_writer_that_cannot_open_names_the_file(tmp_path):
    (tmp_path / "f").write_text("a file where a directory should be")
    with pytest.raises(OutputWriteError) as e:
        AppendWriter(tmp_path / "f" / "o.jsonl")
    assert e.value.path == tmp_path / "f" / "o.jsonl"
    assert str(e.value).startswith(f"{tmp_path / 'f' / 'o.jsonl'}: cannot write: ")


def test_append_writer_on_a_full_device_raises_disk_full_naming_the_file(tmp_path):
    w = AppendWriter("/dev/full")
    try:
        with pytest.raises(OutputWriteError) as e:
            w.write({"id": 1})
        assert e.value.disk_full and str(e.value) == "/dev/full: cannot write: disk full (No space left on device)"
        assert w.count == 0
    finally:
        w.close()


def test_a_row_cut_short_by_the_file_size_limit_is_taken_back(tmp_path):
    # RLIMIT_FSIZE makes the write partial, then EFBIG: the part written is truncated away again
    p = tmp_path / "o.jsonl"
    p.write_bytes(_line({"id": 1}))
    before = p.read_bytes()
    w = AppendWriter(p)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 10, old_limit[1]))
        with pytest.raises(OutputWriteError) as e:
            w.write({"id": 2, "text": "x" * 100})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
        w.close()
    assert e.value.disk_full and str(e.value).startswith(f"{p}: cannot write: disk full (")
    assert p.read_bytes() == before  # still ends with a whole line
    assert w.count == 0


# ----------------------------------------------------------------------------------------- RejectsWriter
def test_entry_id_reads_the_id_of_an_object_line_only():
    assert _entry_id(b'{"id": "a", "error": "x"}\n') == "a"
    assert _entry_id(b'{"id": 0}') == 0
    assert _entry_id(b'{"error": "x"}\n') is None
    assert _entry_id(b'["id", 1]\n') is None
    assert _entry_id(b'"id"\n') is None
    assert _entry_id(b"not json\n") is None
    assert _entry_id(b"\n") is None


def test_rejects_of_a_new_file_are_appended_and_left_alone(tmp_path):
    p = tmp_path / "r.jsonl"
    rej = RejectsWriter(p, SortedIdSet(np.array([id_hash("x")], dtype=np.int64)))
    rej.write({"id": "a", "error": "e1"})
    rej.redone("b")
    rej.close()
    assert p.read_bytes() == _line({"id": "a", "error": "e1"})


def test_rejects_entries_are_superseded_by_a_redo_a_new_rejection_or_a_done_id(tmp_path):
    p = tmp_path / "r.jsonl"
    old = (_line({"id": "A", "error": "old A"}) + _line({"id": "B", "error": "old B"}) + b"garbage line\n"
           + _line({"id": "C", "error": "old C"}) + _line(["not", "an", "object"]) + _line({"no_id": 1})
           + _line({"id": "D", "error": "old D"}) + _line({"id": 1, "error": "old int 1"}))
    p.write_bytes(old)
    done = SortedIdSet(np.array([id_hash("B")], dtype=np.int64))  # B is in the output already
    rej = RejectsWriter(p, done)
    rej.write({"id": "A", "error": "new A"})  # rejected again: the new entry replaces the old
    rej.redone("C")  # written to the output by this run
    rej.redone("1")  # "1" is not the id 1
    rej.redone(None)
    rej.close()
    assert p.read_bytes() == (b"garbage line\n" + _line(["not", "an", "object"]) + _line({"no_id": 1})
                              + _line({"id": "D", "error": "old D"}) + _line({"id": 1, "error": "old int 1"})
                              + _line({"id": "A", "error": "new A"}))


def test_rejects_without_anything_superseded_are_not_rewritten(tmp_path):
    p = tmp_path / "r.jsonl"
    old = _line({"id": "A", "error": "x"}) + _line({"id": "B", "error": "y"})
    p.write_bytes(old)
    ino = p.stat().st_ino
    rej = RejectsWriter(p)  # no done set, nothing redone
    rej.write({"id": "C", "error": "z"})
    rej.redone("Q")
    rej.close()
    assert p.read_bytes() == old + _line({"id": "C", "error": "z"})
    assert p.stat().st_ino == ino  # appended in place, never replaced
    # a done set that holds none of the old ids changes nothing either
    rej = RejectsWriter(p, SortedIdSet(np.array([id_hash("zz")], dtype=np.int64)))
    rej.close()
    assert p.read_bytes() == old + _line({"id": "C", "error": "z"}) and p.stat().st_ino == ino


def test_rejects_an_interrupted_attempt_keeps_old_entries_it_did_not_reach(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(_line({"id": "A", "error": "a"}) + _line({"id": "B", "error": "b"}))
    rej = RejectsWriter(p, SortedIdSet(np.empty(0, dtype=np.int64)))
    rej.redone("A")
    rej.close()
    assert p.read_bytes() == _line({"id": "B", "error": "b"})
    rej.close()  # a second close changes nothing more
    assert p.read_bytes() == _line({"id": "B", "error": "b"})


def test_rejects_a_torn_last_entry_is_cut_before_the_first_new_one(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(_line({"id": "A", "error": "a"}) + b'{"id": "B", "err')
    rej = RejectsWriter(p)
    rej.write({"id": "C", "error": "c"})
    rej.close()
    assert p.read_bytes() == _line({"id": "A", "error": "a"}) + _line({"id": "C", "error": "c"})


def test_rejects_tidy_up_of_a_file_removed_meanwhile_does_not_raise(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(_line({"id": "A", "error": "a"}) + _line({"id": "B", "error": "b"}))
    rej = RejectsWriter(p)
    rej.redone("A")
    p.unlink()  # the file went away under us (a user removed it): the tidy-up must not raise nor recreate it
    rej.close()
    assert not p.exists()


# ------------------------------------------------------------------------------------ atomic_write_bytes
def test_atomic_write_bytes_creates_with_mode_644_and_leaves_no_temporary_file(tmp_path):
    tmp_path = tmp_path / "w"  # (the test's own tmp dir holds its hermetic home too)
    tmp_path.mkdir()
    p = tmp_path / "s.json"
    old = os.umask(0o077)  # the mode is set explicitly, whatever the umask
    try:
        atomic_write_bytes(p, b"hello\n")
    finally:
        os.umask(old)
    assert p.read_bytes() == b"hello\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.json"]


def test_atomic_write_bytes_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    p = tmp_path / "s.json"
    p.write_bytes(b"old")
    os.chmod(p, 0o600)
    ino = p.stat().st_ino
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert p.stat().st_ino != ino  # replaced all at once, not rewritten in place


def test_atomic_write_bytes_through_a_symlink_replaces_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "t.json"
    target.write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(x.name for x in (tmp_path / "real").iterdir()) == ["t.json"]


def test_atomic_write_bytes_uses_a_hidden_temporary_file_beside_the_target(tmp_path, monkeypatch):
    # a kill between the write and the rename leaves ".<name>.XXXX.tmp" beside the file: recognisable and hidden
    seen = []
    real_replace = os.replace

    def watching_replace(src, dst):
        seen.append((os.path.dirname(src), os.path.basename(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    atomic_write_bytes(tmp_path / "s.json", b"x")
    [(where, name)] = seen
    assert where == str(tmp_path)
    assert name.startswith(".s.json.") and name.endswith(".tmp") and len(name) > len(".s.json..tmp")


def test_atomic_write_bytes_failure_names_the_path_and_leaves_the_old_content(tmp_path):
    tmp_path = tmp_path / "w"
    tmp_path.mkdir()
    with pytest.raises(OutputWriteError) as e:
        atomic_write_bytes(tmp_path / "missing" / "s.json", b"x")
    assert str(e.value) == f"{tmp_path / 'missing' / 's.json'}: cannot write: No such file or directory"
    # a directory in the way: the replace fails, the temporary file is removed, the directory stays
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("k")
    with pytest.raises(OutputWriteError) as e:
        atomic_write_bytes(tmp_path / "d", b"x")
    assert str(e.value).startswith(f"{tmp_path / 'd'}: cannot write: ")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d"]
    assert (tmp_path / "d" / "keep").read_text() == "k"


# ------------------------------------------------------------------------------------------ OutputLock
def test_output_lock_is_held_by_one_writer_and_says_who(tmp_path):
    tmp_path = tmp_path / "w"
    tmp_path.mkdir()
    out = tmp_path / "o.jsonl"
    lock = OutputLock(out)
    assert lock.path == tmp_path / "o.jsonl.lock"
    with lock as held:
        assert held is lock
        assert lock.path.read_text() == f"{os.getpid()}\n"
        second = OutputLock(out)
        with pytest.raises(PathError) as e:
            second.__enter__()
        assert e.value.problems == [f"{out}: another synthkd process is writing it (pid {os.getpid()}); "
                                    "wait for it to finish, or write to another file"]
        lock.path.write_text("not-a-pid")  # a holder we cannot name: no "(pid ...)"
        with pytest.raises(PathError) as e:
            OutputLock(out).__enter__()
        assert e.value.problems == [f"{out}: another synthkd process is writing it; "
                                    "wait for it to finish, or write to another file"]
    assert not lock.path.exists()  # removed on release
    with OutputLock(out):  # and free again
        pass
    assert sorted(x.name for x in tmp_path.iterdir()) == []


def test_output_lock_is_shared_by_two_names_of_one_file_and_makes_its_directory(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "o.jsonl").write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "real" / "o.jsonl")
    assert OutputLock(link).path == tmp_path / "real" / "o.jsonl.lock"
    with OutputLock(tmp_path / "real" / "o.jsonl"):
        with pytest.raises(PathError, match="another synthkd process is writing it"):
            OutputLock(link).__enter__()
    deep = tmp_path / "a" / "b" / "o.jsonl"
    with OutputLock(deep) as lk:
        assert lk.path.exists() and (tmp_path / "a" / "b").is_dir()


def test_output_lock_that_cannot_be_created_names_the_lock_file(tmp_path):
    (tmp_path / "f").write_text("a file")
    out = tmp_path / "f" / "o.jsonl"
    with pytest.raises(PathError) as e:
        OutputLock(out).__enter__()
    assert e.value.problems == [f"{out}: cannot create its lock file {tmp_path / 'f' / 'o.jsonl.lock'} "
                                "(File exists)"]
