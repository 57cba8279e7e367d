"""The near_dup operator on small hand-made batches: which rows are dropped and the exact reject text
(the matched row named by id, or by kept-row number without ``remember_ids``), rows without words,
bad fields (strict and lenient), the banding options passed through, the report's exact figures, and
the streaming run with its batch size."""

from __future__ import annotations

import asyncio
import json

import pytest

from synthkd.filters.base import Reject, RunContext
from synthkd.filters.minhash import choose_bands
from synthkd.filters.near_dup import NearDup, NearDupConfig
from synthkd.jsonl_io import InputError


def op(strict: bool = True, **cfg) -> NearDup:
    return NearDup(NearDupConfig(**cfg), RunContext(strict=strict))


def text(i: int, k: int = 12) -> str:
    return " ".join(f"t{i}w{j}" for j in range(k))


def run_all(o: NearDup, rows: list[dict]) -> list[Reject | None]:
    async def go():
        async def src():
            for r in rows:
                yield r
        return [rej async for _, rej in o.run(src())]
    return asyncio.run(go())


def test_needs_and_summary():
    assert op().needs() == [("text",)]
    assert op(field="input").needs() == [("input",)]


def test_duplicates_are_named_by_the_kept_rows_id():
    o = op()
    rows = [{"id": "a", "text": text(0)}, {"id": "b", "text": text(1)},
            {"id": "c", "text": text(0).upper() + "!"}, {"id": 7, "text": text(1)}, {"id": "d", "text": text(2)}]
    assert o.check_batch(rows) == [None, None, Reject("near duplicate", "J≈1.00 with id 'a'"),
                                   Reject("near duplicate", "J≈1.00 with id 'b'"), None]
    # next batch: against the kept rows of earlier batches
    assert o.check_batch([{"id": "e", "text": text(2)}, {"id": 9, "text": text(3)}, {"id": "f", "text": text(3)}]) == [
        Reject("near duplicate", "J≈1.00 with id 'd'"), None, Reject("near duplicate", "J≈1.00 with id 9")]


def test_without_remember_ids_the_detail_names_the_kept_row_number():
    o = op(remember_ids=False)
    rows = [{"id": "a", "text": text(0)}, {"id": "b", "text": text(1)}, {"id": "c", "text": text(1)}]
    assert o.check_batch(rows) == [None, None, Reject("near duplicate", "J≈1.00 with kept row #1")]
    assert len(o.ids) == 0
    assert o.check_batch([{"id": "x", "text": text(0)}]) == [Reject("near duplicate", "J≈1.00 with kept row #0")]


def test_rows_without_words_are_kept_not_indexed_and_counted():
    o = op()
    rows = [{"id": "empty", "text": "!!! ..."}, {"id": "a", "text": text(0)}, {"id": "blank", "text": ""},
            {"id": "b", "text": text(1)}, {"id": "again", "text": "?"}, {"id": "c", "text": text(1)}]
    assert o.check_batch(rows) == [None, None, None, None, None, Reject("near duplicate", "J≈1.00 with id 'b'")]
    rep = o.report()
    assert rep["rows_without_words"] == 3 and rep["indexed_rows"] == 2
    assert [o.ids[i] for i in range(len(o.ids))] == ["a", "b"]
    assert o.check_batch([{"id": "z", "text": "-"}]) == [None]
    assert o.report()["rows_without_words"] == 4


def test_fresh_operator_report():
    rep = op().report()
    assert rep["rows_without_words"] == 0 and rep["indexed_rows"] == 0


def test_partial_text_changes_and_the_threshold():
    base = " ".join(f"w{j}" for j in range(40))
    light = " ".join([f"w{j}" for j in range(38)] + ["x1", "x2"])  # J = 38/42 ≈ 0.90
    heavy = " ".join([f"w{j}" for j in range(20)] + [f"y{j}" for j in range(20)])  # J = 1/3
    o = op()
    out = o.check_batch([{"id": "base", "text": base}, {"id": "light", "text": light}, {"id": "heavy", "text": heavy}])
    assert out[0] is None and out[2] is None
    assert out[1].reason == "near duplicate" and out[1].detail.endswith(" with id 'base'")
    j = float(out[1].detail[2:6])
    assert 0.8 <= j < 1.0
    # at a threshold above that estimate the light edit is kept
    o = op(threshold=min(1.0, j + 0.02))
    assert o.check_batch([{"id": "base", "text": base}, {"id": "light", "text": light}]) == [None, None]


def test_field_problems_lenient_reject_and_the_batch_goes_on():
    o = op(strict=False)
    rows = [{"id": "a", "text": text(0)}, {"id": "nofield"}, {"id": "num", "text": 5},
            {"id": "b", "text": text(0)}, {"id": "c", "text": text(1)}]
    assert o.check_batch(rows) == [None, Reject("field 'text' missing"), Reject("field 'text' must be text, got int"),
                                   Reject("near duplicate", "J≈1.00 with id 'a'"), None]
    assert o.report()["indexed_rows"] == 2
    # a batch of only bad rows
    assert o.check_batch([{"id": "x", "text": None}]) == [Reject("field 'text' is null")]


def test_field_problems_strict_name_the_row():
    o = op(field="body")
    with pytest.raises(InputError) as ei:
        o.check_batch([{"id": "a", "body": text(0)}, {"id": "bad-row"}])
    assert ei.value.problems == [("input: row id 'bad-row': field 'body': missing (needed by operator 'near_dup'; "
                                 "use --lenient to reject such rows instead)")]


def test_banding_options_pass_through_to_the_index():
    o = op(bands=4, rows=8, num_perm=64, threshold=0.7, ngram=2, seed=3)
    idx = o.index
    assert (idx.bands, idx.rows, idx.threshold, idx.ngram, idx.hasher.num_perm, idx.hasher.seed) == (4, 8, 0.7, 2, 64, 3)
    rep = o.report()
    assert (rep["bands"], rep["rows_per_band"]) == (4, 8)
    d = op()
    assert (d.report()["bands"], d.report()["rows_per_band"]) == choose_bands(0.8, 128) == (14, 9)
    assert (d.index.ngram, d.index.hasher.seed, d.index.hasher.num_perm, d.batch_size) == (1, 1, 128, 2048)


def test_ngram_option_changes_what_is_a_duplicate():
    a = " ".join(f"w{j}" for j in range(30))
    b = " ".join(f"w{j}" for j in reversed(range(30)))  # same words, reversed
    assert op().check_batch([{"id": "a", "text": a}, {"id": "b", "text": b}])[1] == Reject(
        "near duplicate", "J≈1.00 with id 'a'")
    assert op(ngram=2).check_batch([{"id": "a", "text": a}, {"id": "b", "text": b}]) == [None, None]


def test_config_validation_messages():
    with pytest.raises(ValueError, match="give both 'bands' and 'rows', or neither"):
        NearDupConfig(bands=4)
    with pytest.raises(ValueError, match="give both 'bands' and 'rows', or neither"):
        NearDupConfig(rows=4)
    with pytest.raises(ValueError, match=r"bands × rows must be at most num_perm \(64\)"):
        NearDupConfig(bands=9, rows=8, num_perm=64)
    NearDupConfig(bands=8, rows=8, num_perm=64)


def test_report_exact_figures():
    o = op(num_perm=16, bands=2, rows=8)
    o.check_batch([{"id": "ab", "text": text(0)}, {"id": "c", "text": text(0)}, {"id": "d", "text": "..."},
                   {"id": "e", "text": text(1)}])
    rep = o.report()
    # 2 kept rows: sketches in one 16384-row chunk of 8 bytes (0.131 MB) + 2 bands x 2 rows x 8 bytes
    assert o.index.nbytes == (1 << 14) * 8 + 2 * 2 * 8
    assert json.dumps(rep) == json.dumps({"indexed_rows": 2, "bands": 2, "rows_per_band": 8,
                                          "index_and_sketches_mb": 0.1, "ids_mb": 0.0, "rows_without_words": 1})


def test_report_megabytes_round_to_one_decimal():
    o = op(num_perm=128)
    o.check_batch([{"id": "x" * 60000, "text": text(0)}])
    rep = o.report()
    # one 64-byte-wide chunk (1.048576 MB) + 14 bands x 8 bytes; ids: 60002 bytes of JSON + 8
    assert rep["index_and_sketches_mb"] == 1.0 and rep["ids_mb"] == 0.1
    assert json.dumps([rep["index_and_sketches_mb"], rep["ids_mb"]]) == "[1.0, 0.1]"


def test_streaming_run_uses_the_batch_size_and_keeps_order():
    rows = [{"id": i, "text": text(i % 4)} for i in range(11)]
    for bs in (1, 3, 2048):
        o = op(batch_size=bs)
        assert o.batch_size == bs
        out = run_all(o, [dict(r) for r in rows])
        assert out[:4] == [None] * 4
        assert out[4:] == [Reject("near duplicate", f"J≈1.00 with id {i % 4}") for i in range(4, 11)]


def test_report_megabytes_are_10_6_bytes():
    # 450,000 bytes are 0.45 MB, reported as 0.5 (a divisor even 1 byte larger gives 0.4)
    o = op(num_perm=54, bands=18, rows=3)
    o.check_batch([{"id": "x" * 449_990, "text": text(i)} for i in range(53)][:1]
                  + [{"id": None, "text": text(i)} for i in range(1, 53)])
    assert o.index.nbytes == 16384 * 27 + 8 * 18 * 53 == 450_000
    assert o.ids.nbytes == 449_992 + 4 * 52 + 8 * 53
    rep = o.report()
    assert rep["index_and_sketches_mb"] == 0.5
    o2 = op()
    o2.check_batch([{"id": "x" * 449_990, "text": text(0)}])
    assert o2.ids.nbytes == 450_000 and o2.report()["ids_mb"] == 0.5
