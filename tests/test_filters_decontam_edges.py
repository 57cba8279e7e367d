"""The decontaminate operator on small eval sets: every eval file format (.txt, .json list, .json that
is jsonl, .jsonl) and its errors, item ids (position or id field), short texts (shorter than the
n-gram), rows spanning several fields, the exact reject texts of both checks, the near-duplicate
index over more than one 4096-item chunk, bad rows (strict and lenient) and the exact report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from synthkd.filters.base import Reject, RunContext
from synthkd.filters.decontaminate import Decontaminate, DecontaminateConfig, _read_eval
from synthkd.filters.op_config import ConfigError
from synthkd.jsonl_io import InputError

LONG_Q = "a train leaves the station at nine and travels at sixty miles per hour toward the coast"  # 17 words


def make(tmp_path: Path, content: str, name: str = "eval.jsonl", strict: bool = True, **cfg) -> Decontaminate:
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    o = Decontaminate(DecontaminateConfig(eval_file=p, **cfg), RunContext(strict=strict))
    asyncio.run(o.setup())
    return o


def jl(*items) -> str:
    return "".join(json.dumps(x) + "\n" for x in items)


# -- reading the eval set -------------------------------------------------------------------------

def test_read_txt_numbers_non_blank_lines_from_one(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("first\n\n  \nsecond line\nthird\n")
    assert _read_eval(p) == [(1, "first"), (4, "second line"), (5, "third")]


def test_read_json_list_positions_from_one(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps([{"input": "a"}, "b", 3]))
    assert _read_eval(p) == [(1, {"input": "a"}), (2, "b"), (3, 3)]


def test_read_json_that_is_jsonl(tmp_path):
    p = tmp_path / "e.json"
    p.write_text('{"input": "a"}\n\n{"input": "b"}\n')
    assert _read_eval(p) == [(1, {"input": "a"}), (3, {"input": "b"})]


def test_read_json_not_a_list(tmp_path):
    p = tmp_path / "e.json"
    p.write_text('{"input": "a"}')
    with pytest.raises(InputError) as ei:
        _read_eval(p)
    assert ei.value.problems == [f"{p}: expected a JSON list of items"]


def test_read_jsonl_lines_and_bad_line(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text('\n{"input": "a"}\n"b"\n')
    assert _read_eval(p) == [(2, {"input": "a"}), (3, "b")]
    p.write_text('{"input": "a"}\n{oops\n')
    with pytest.raises(InputError) as ei:
        _read_eval(p)
    assert len(ei.value.problems) == 1
    assert ei.value.problems[0].startswith(f"{p}:2: not valid JSON (")


def test_missing_eval_file(tmp_path):
    with pytest.raises(ConfigError, match=r"eval\.jsonl: evaluation set not found$"):
        make_missing = Decontaminate(DecontaminateConfig(eval_file=tmp_path / "eval.jsonl"), RunContext())
        asyncio.run(make_missing.setup())


def test_eval_ids_are_line_or_position_or_the_id_field(tmp_path):
    row = {"id": "r", "input": "What is 7 times 8?"}
    o = make(tmp_path, "\nfoo bar\nwhat is 7 times 8\n", name="e.txt")
    assert o.check_batch([dict(row)]) == [Reject("shares 13-gram with eval set", "'what is 7 times 8' (eval item 3)")]
    o = make(tmp_path, json.dumps(["foo", {"input": "What is 7 times 8"}]), name="e.json")
    assert o.check_batch([dict(row)]) == [Reject("shares 13-gram with eval set", "'what is 7 times 8' (eval item 2)")]
    o = make(tmp_path, jl({"input": "foo"}, {"id": "q-8", "input": "what is 7 times 8"}))
    assert o.check_batch([dict(row)]) == [Reject("shares 13-gram with eval set", "'what is 7 times 8' (eval item 'q-8')")]
    o = make(tmp_path, jl({"input": "foo"}, {"uid": 88, "input": "what is 7 times 8"}), eval_id_field="uid")
    assert o.check_batch([dict(row)]) == [Reject("shares 13-gram with eval set", "'what is 7 times 8' (eval item 88)")]
    # an object without the id field: its line
    o = make(tmp_path, jl({"input": "foo"}, {"input": "what is 7 times 8"}))
    assert o.check_batch([dict(row)]) == [Reject("shares 13-gram with eval set", "'what is 7 times 8' (eval item 2)")]


def test_items_without_words_are_skipped_not_the_rest(tmp_path):
    o = make(tmp_path, jl({"id": 1, "input": "..."}, {"id": 2, "input": ""}, {"id": 3, "input": "seven eights"}))
    assert o.eval_ids == [3]
    assert o.check_batch([{"input": "Seven eights!"}]) == [
        Reject("shares 13-gram with eval set", "'seven eights' (eval item 3)")]
    assert o.report()["eval_items"] == 1


def test_bad_eval_items_are_all_listed(tmp_path):
    content = jl({"id": 1, "input": "ok"}, {"id": 2, "question": "x"}, 5, {"id": 4, "input": None}, ["l"])
    with pytest.raises(InputError) as ei:
        make(tmp_path, content)
    p = tmp_path / "eval.jsonl"
    assert ei.value.problems == [f"{p}:2: field 'input': missing", f"{p}:3: expected an object or a string",
                                 f"{p}:4: field 'input': is null", f"{p}:5: expected an object or a string"]


def test_bad_eval_items_stop_at_twenty(tmp_path):
    # regression: a run of bad items (the usual case: eval_fields not set for an eval file with other
    # field names) used to list every item, under a message saying it stopped after 20
    content = jl(*([{"q": "x"}] * 25 + [{"input": "fine"}]))
    with pytest.raises(InputError) as ei:
        make(tmp_path, content)
    p = tmp_path / "eval.jsonl"
    assert ei.value.problems == [f"{p}:{i}: field 'input': missing" for i in range(1, 21)]
    assert str(ei.value).endswith("(stopped after 20 problems)")


def test_bad_eval_items_mixed_with_good_ones_stop_at_twenty(tmp_path):
    content = jl(*([{"input": "fine"}, 7] * 22))
    with pytest.raises(InputError) as ei:
        make(tmp_path, content)
    p = tmp_path / "eval.jsonl"
    assert ei.value.problems == [f"{p}:{i}: expected an object or a string" for i in range(2, 41, 2)]
    assert str(ei.value).endswith("(stopped after 20 problems)")
    # 19 problems: all listed, no "stopped"
    with pytest.raises(InputError) as ei:
        make(tmp_path, jl(*([7] * 19), {"input": "fine"}))
    assert len(ei.value.problems) == 19 and "stopped" not in str(ei.value)


def test_empty_eval_set_message(tmp_path):
    for content in ("", jl({"input": "!!!"}, {"input": " "})):
        with pytest.raises(ConfigError) as ei:
            make(tmp_path, content)
        assert str(ei.value) == (f"{tmp_path / 'eval.jsonl'}: the evaluation set has no items with text in ['input'] — "
                                 "nothing to decontaminate against")
    with pytest.raises(ConfigError, match=r"no items with text in \['q', 'c'\] — nothing to decontaminate against$"):
        make(tmp_path, jl({"q": "!", "c": ""}), fields=["q", "c"])


# -- the n-gram check ---------------------------------------------------------------------------------

def test_ngram_detail_names_the_shared_ngram_and_defaults(tmp_path):
    o = make(tmp_path, jl({"id": "e1", "input": LONG_Q}))
    assert o.cfg.ngram == 13 and o.cfg.fields == ["input"] and o.cfg.near_dup_threshold is None
    assert o.near is None and o.batch_size == 1024
    # the first shared 13-gram of the row
    row = {"input": "Quick: " + LONG_Q.replace("train", "TRAIN") + ". How long?"}
    assert o.check_batch([row]) == [Reject(
        "shares 13-gram with eval set",
        "'a train leaves the station at nine and travels at sixty miles per' (eval item 'e1')")]
    # 12 shared words in a row are not enough
    assert o.check_batch([{"input": "x " + " ".join(LONG_Q.split()[:12]) + " y"}]) == [None]


def test_short_texts_are_one_ngram(tmp_path):
    o = make(tmp_path, jl({"id": "s", "input": "What is 7 times 8?"}), ngram=5)
    assert o.check_batch([{"input": "what is 7 times 8"}, {"input": "what is 7 times"},
                          {"input": "so what is 7 times 8"}, {"input": "is 7 times 8"}]) == [
        Reject("shares 5-gram with eval set", "'what is 7 times 8' (eval item 's')"), None,
        Reject("shares 5-gram with eval set", "'what is 7 times 8' (eval item 's')"), None]
    o = make(tmp_path, jl({"id": "s", "input": "seven eights"}), ngram=3)
    # shorter rows: only the same words, in order
    assert o.check_batch([{"input": "Seven, eights."}, {"input": "eights seven"}, {"input": "seven"},
                          {"input": ""}, {"input": "seven eights plus"}]) == [
        Reject("shares 3-gram with eval set", "'seven eights' (eval item 's')"), None, None, None, None]


def test_unicode_and_whitespace_normalisation(tmp_path):
    o = make(tmp_path, jl({"id": "u", "input": "Ｃafé\u00a0crème   BRÛLÉE"}), ngram=3)
    assert o.check_batch([{"input": "café\tcrème\n\nbrûlée"}]) == [
        Reject("shares 3-gram with eval set", "'café crème brûlée' (eval item 'u')")]


def test_long_ngram_is_clipped_to_100_chars_in_the_detail(tmp_path):
    ws = [f"{c * 11}" for c in "abcdefghijklm"]  # 13 words of 11 letters: 155 characters
    o = make(tmp_path, jl({"id": 1, "input": " ".join(ws)}))
    gram = " ".join(ws)
    assert o.check_batch([{"input": gram}]) == [
        Reject("shares 13-gram with eval set", f"{gram[:99] + '…'!r} (eval item 1)")]


def test_several_fields_are_joined(tmp_path):
    o = make(tmp_path, jl({"q": "what is", "c": "7 times 8"}), fields=["q", "c"])
    assert o.needs() == [("q",), ("c",)]
    assert o.check_batch([{"q": "What is", "c": "7 times 8?"}, {"q": "what is 7", "c": "times 8"},
                          {"q": "7 times 8", "c": "what is"}]) == [
        Reject("shares 13-gram with eval set", "'what is 7 times 8' (eval item 1)")] * 2 + [None]
    o = make(tmp_path, jl({"question": "what is 7 times 8"}), fields=["q", "c"], eval_fields=["question"])
    assert o.check_batch([{"q": "what is", "c": "7 times 8"}]) == [
        Reject("shares 13-gram with eval set", "'what is 7 times 8' (eval item 1)")]


def test_bad_rows_lenient_and_strict(tmp_path):
    o = make(tmp_path, jl({"input": "seven eights"}), strict=False)
    assert o.check_batch([{"id": "a"}, {"id": "b", "input": "seven eights"}, {"id": "c", "input": 3}]) == [
        Reject("field 'input' missing"), Reject("shares 13-gram with eval set", "'seven eights' (eval item 1)"),
        Reject("field 'input' must be text, got int")]
    o = make(tmp_path, jl({"input": "seven eights"}))
    with pytest.raises(InputError) as ei:
        o.check_batch([{"id": "ok", "input": "x"}, {"id": "bad", "inp": "x"}])
    assert ei.value.problems == [("input: row id 'bad': field 'input': missing (needed by operator 'decontaminate'; "
                                 "use --lenient to reject such rows instead)")]


# -- the near-duplicate check -----------------------------------------------------------------------

def item_words(i: int) -> list[str]:
    return [f"e{i}w{j}" for j in range(10)]


def test_near_duplicate_detail_and_preview(tmp_path):
    long_text = "Tom has " + " ".join(f"w{j}" for j in range(30)) + " apples."  # > 80 characters
    o = make(tmp_path, jl({"id": "first", "input": long_text}, {"id": "second", "input": " ".join(item_words(2))}),
             near_dup_threshold=0.7)
    assert o.near is not None and o.near.ngram == 1 and o.near.threshold == 0.7
    assert o.eval_previews == [long_text[:79] + "…", " ".join(item_words(2))]
    rewritten = " ".join(reversed(long_text.replace("w7 ", "").split()))  # no shared 13-gram; J = 33/34
    rows = [{"input": rewritten}, {"input": " ".join(reversed(item_words(2)))}, {"input": "nothing like it"}]
    out = o.check_batch(rows)
    assert out[0].reason == "near duplicate of eval item"
    assert out[0].detail.startswith("J≈0.9") or out[0].detail.startswith("J≈1.00")
    assert out[0].detail[6:] == f" with eval item 'first': “{long_text[:79]}…”"
    assert out[1] == Reject("near duplicate of eval item", f"J≈1.00 with eval item 'second': “{' '.join(item_words(2))}”")
    assert out[2] is None
    assert o.report() == {"eval_file": str(tmp_path / "eval.jsonl"), "eval_items": 2, "eval_items_matched": 2,
                          "ngram": 13, "near_dup_threshold": 0.7}


def test_near_duplicate_ngram_option(tmp_path):
    o = make(tmp_path, jl({"input": " ".join(item_words(0))}), near_dup_threshold=0.7, near_dup_ngram=2)
    assert o.near.ngram == 2
    assert o.check_batch([{"input": " ".join(reversed(item_words(0)))}]) == [None]


def test_near_duplicate_index_over_several_chunks(tmp_path):
    n = 4100  # the eval set goes into the index in chunks of 4096
    o = make(tmp_path, jl(*({"id": f"e{i}", "input": " ".join(item_words(i))} for i in range(n))),
             near_dup_threshold=0.7)
    assert o.near.store.size == n
    rows = []
    for i in (0, 4095, 4096, 4097, 4099):
        ws = item_words(i)
        rows.append({"input": " ".join(ws[:9] + ["changed"])})  # J = 9/11, no shared n-gram (10 words < 13)
    out = o.check_batch(rows)
    assert [r.reason for r in out] == ["near duplicate of eval item"] * 5
    assert [r.detail.split(" with eval item ")[1].split(":")[0] for r in out] == [
        "'e0'", "'e4095'", "'e4096'", "'e4097'", "'e4099'"]
    assert o.report()["eval_items_matched"] == 5


def test_report_counts_distinct_matched_items(tmp_path):
    o = make(tmp_path, jl({"id": "a", "input": "seven eights"}, {"id": "b", "input": "nine tens"},
                          {"id": "c", "input": "one two"}), ngram=2)
    assert o.report() == {"eval_file": str(tmp_path / "eval.jsonl"), "eval_items": 3, "eval_items_matched": 0,
                          "ngram": 2, "near_dup_threshold": None}
    o.check_batch([{"input": "seven eights"}, {"input": "x seven eights"}, {"input": "nine tens"}, {"input": "zero"}])
    assert o.report()["eval_items_matched"] == 2
