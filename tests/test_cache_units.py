"""The request cache: what its key covers (and what it must not), and the SQLite store.

A key that misses a part of the request serves a wrong answer from the cache; a key that changes
between versions (or with the API key, or a non-semantic option) makes users pay twice for answers
they already have.  Both are pinned here.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import pytest

from synthkd.errors import PathError
from synthkd.teachers.cache import RequestCache, request_cache_key

USER = {"role": "user", "content": "What is 2+2?"}


# ------------------------------------------------------------------------------ the key


def test_key_format_is_stable_across_versions():
    """sha256 over sorted-key compact JSON of a versioned payload: a change here invalidates every cache."""
    params = {"temperature": 0.0, "max_tokens": 64}
    key = request_cache_key("gpt-4o-mini", messages=[USER], params=params, sample_index=0)
    payload = {"v": 1, "model": "gpt-4o-mini", "messages": [USER], "prompt": None, "params": params, "sample": 0}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert key == expected == "6c34ccb1b88f29fa01243cb60a178be2e1c9d295d1cb4c15059ca7320fa3dd72"
    assert request_cache_key("gpt-4o-mini", prompt="What is 2+2?") == (
        "efde29eaf9aeacd7271dd19ee3d0f747f0b0913d97f9740ef1f0228e13300d79"
    )


def test_key_is_stable_for_the_same_request():
    a = request_cache_key("m", messages=[dict(USER)], params={"temperature": 0.5, "top_p": 0.9}, sample_index=2)
    b = request_cache_key("m", messages=[{"content": "What is 2+2?", "role": "user"}],
                          params={"top_p": 0.9, "temperature": 0.5}, sample_index=2)
    assert a == b  # neither message field order nor parameter order matters
    assert len(a) == 64 and int(a, 16) >= 0


def _key(model="m", messages=(USER,), prompt=None, sample=0, **params):
    return request_cache_key(model, messages=None if prompt is not None else [dict(m) for m in messages],
                             prompt=prompt, params={"temperature": 0.5, "max_tokens": 100, **params},
                             sample_index=sample)


def test_key_changes_with_every_part_that_changes_the_answer():
    base = _key()
    variants = {
        "model": _key(model="m2"),
        "content": _key(messages=[{"role": "user", "content": "What is 2+3?"}]),
        "role": _key(messages=[{"role": "assistant", "content": "What is 2+2?"}]),
        "system prompt": _key(messages=[{"role": "system", "content": "Be brief."}, USER]),
        "other system prompt": _key(messages=[{"role": "system", "content": "Be verbose."}, USER]),
        "earlier turns": _key(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                        USER]),
        "other earlier answer": _key(messages=[{"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "hey"}, USER]),
        "an extra message field": _key(messages=[{**USER, "name": "bob"}]),
        "temperature": _key(temperature=0.6),
        "max_tokens": _key(max_tokens=101),
        "top_p": _key(top_p=0.5),
        "seed": _key(seed=7),
        "stop": _key(stop=["\n"]),
        "sample index": _key(sample=1),
        "prompt": _key(prompt="What is 2+2?"),
        "other prompt": _key(prompt="What is 2+3?"),
        "empty prompt": _key(prompt=""),
    }
    keys = [base, *variants.values()]
    assert len(set(keys)) == len(keys), [name for name, k in variants.items() if keys.count(k) > 1]


@pytest.mark.parametrize("param", ["timeout", "stream", "user", "extra_headers"])
def test_options_that_do_not_change_the_answer_do_not_change_the_key(param):
    assert _key(**{param: "anything"}) == _key()


def test_unset_parameters_are_the_same_as_absent_ones():
    assert _key(seed=None, stop=None) == _key()
    assert request_cache_key("m", prompt="p", params=None) == request_cache_key("m", prompt="p", params={})
    assert request_cache_key("m", prompt="p") == request_cache_key("m", prompt="p", sample_index=0)
    assert _key(seed=0) != _key()  # 0 is a value, not "unset"


def test_messages_none_and_prompt_none_are_distinct_from_empty():
    assert request_cache_key("m", messages=[]) != request_cache_key("m")
    assert request_cache_key("m", prompt="") != request_cache_key("m")


# ------------------------------------------------------------------------------ the store


def test_put_get_roundtrip_and_replace(tmp_path):
    with RequestCache(tmp_path / "sub" / "dir" / "c.sqlite") as c:  # parent folders are created
        assert c.get("k") is None and len(c) == 0
        answer = {"text": "Grüße, 4 ✓", "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "cost_usd": 1.5e-6,
                  "finish_reason": "length", "model": "m-2024", "nested": [1, None, {"a": True}]}
        c.put("k", "m", answer)
        assert c.get("k") == answer and len(c) == 1
        c.put("k", "m", {"text": "newer"})
        assert c.get("k") == {"text": "newer"} and len(c) == 1
        c.put("k2", "m", {"text": "other"})
        assert len(c) == 2 and c.get("k") == {"text": "newer"} and c.get("k2") == {"text": "other"}
        assert c.write_error is None


def test_one_cache_is_shared_by_threads(tmp_path):
    import threading

    with RequestCache(tmp_path / "c.sqlite") as c:
        workers = [threading.Thread(target=c.put, args=(f"k{i}", "m", {"text": str(i)})) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(c) == 4 and c.get("k3") == {"text": "3"}


def test_rows_record_the_model_and_the_time(tmp_path):
    path = tmp_path / "c.sqlite"
    with RequestCache(path) as c:
        c.put("k", "gpt-x", {"text": "a"})
    row = sqlite3.connect(path).execute("SELECT key, model, created FROM responses").fetchone()
    assert row[0] == "k" and row[1] == "gpt-x" and row[2] > 1.6e9


def test_cache_uses_wal_so_processes_can_share_it(tmp_path):
    path = tmp_path / "c.sqlite"
    RequestCache(path).close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_answers_survive_reopening(tmp_path):
    path = tmp_path / "c.sqlite"
    with RequestCache(path) as c:
        c.put("k", "m", {"text": "kept"})
    with RequestCache(path) as c:
        assert c.get("k") == {"text": "kept"} and len(c) == 1


def test_closed_cache_refuses_and_a_failed_write_is_remembered(tmp_path):
    c = RequestCache(tmp_path / "c.sqlite")
    c.close()
    with pytest.raises(sqlite3.Error):
        c.get("k")
    with pytest.raises(sqlite3.Error) as first:
        c.put("k", "m", {"text": "x"})
    assert c.write_error is first.value
    with pytest.raises(sqlite3.Error):
        c.put("k2", "m", {"text": "y"})
    assert c.write_error is first.value  # the first error is the one reported


def test_a_directory_is_one_clear_path_error(tmp_path):
    with pytest.raises(PathError) as ei:
        RequestCache(tmp_path)
    assert str(ei.value) == f"{tmp_path}: is a directory, not a request cache file"


def test_a_file_that_is_not_a_database_is_one_clear_path_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("these are my notes, not a cache\n" * 50)
    with pytest.raises(PathError) as ei:
        RequestCache(f)
    assert str(ei.value) == f"{f}: cannot use it as the request cache (not a SQLite database (not a synthkd request cache))"
    assert f.read_text().startswith("these are my notes")  # left as it was


def test_a_parent_that_is_a_file_is_one_clear_path_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PathError) as ei:
        RequestCache(tmp_path / "file" / "c.sqlite")
    assert str(ei.value).startswith(f"{tmp_path / 'file' / 'c.sqlite'}: cannot use it as the request cache (")


def test_a_database_locked_by_another_process_past_the_timeout_is_one_clear_path_error(tmp_path):
    path = tmp_path / "c.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(PathError) as ei:
            RequestCache(path, timeout_s=0.05)
        assert "cannot use it as the request cache" in str(ei.value) and "locked" in str(ei.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with RequestCache(path, timeout_s=0.05) as c:  # free again: opens
        c.put("k", "m", {"text": "x"})
        assert c.get("k") == {"text": "x"}


def test_opening_waits_for_another_process_that_holds_the_lock_briefly(tmp_path):
    """Another process switching the fresh file to WAL holds a lock SQLite does not wait for: retried."""
    import threading

    path = tmp_path / "c.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.2, lambda: (other.execute("ROLLBACK"), other.close()))
    t0 = time.monotonic()
    release.start()
    try:
        with RequestCache(path, timeout_s=30) as c:
            waited = time.monotonic() - t0
            c.put("k", "m", {"text": "x"})
            assert c.get("k") == {"text": "x"}
    finally:
        release.join()
    assert waited < 1.0  # short retries (10 ms, doubling), not a long sleep
