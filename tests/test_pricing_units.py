"""Exact cost from reported usage, the price table (built-in, $SYNTHKD_PRICES, --prices) and its errors.

Costs are compared exactly (``==`` or a relative tolerance of 1e-12): a cost off by one part in a
million is still a wrong bill, and ``pytest.approx``'s default tolerance would not see it.
"""

from __future__ import annotations

import json

import pytest

from synthkd.teachers.pricing import Price, PriceTable, PriceTableError

TIGHT = {"rel": 1e-12, "abs": 0.0}


@pytest.fixture(autouse=True)
def _no_env_prices(monkeypatch):
    monkeypatch.delenv("SYNTHKD_PRICES", raising=False)


# ------------------------------------------------------------------------------ Price.cost


def test_cost_is_usd_per_million_tokens_for_input_and_output():
    p = Price(input_per_mtok=2.5, output_per_mtok=10.0)
    assert p.cost(1_000_000, 0) == 2.5
    assert p.cost(0, 1_000_000) == 10.0
    assert p.cost(1_000_000, 1_000_000) == 12.5
    assert p.cost(1000, 2000) == pytest.approx((1000 * 2.5 + 2000 * 10.0) / 1_000_000, **TIGHT)
    assert p.cost(1, 0) == pytest.approx(2.5e-6, **TIGHT)
    assert p.cost(0, 0) == 0.0


def test_cost_of_a_free_model_is_zero_not_unknown():
    assert Price(0, 0).cost(123_456, 654_321) == 0.0


def test_price_is_immutable():
    with pytest.raises(AttributeError):
        Price(1, 2).input_per_mtok = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------ PriceTable


def test_builtin_table_has_exact_list_prices():
    t = PriceTable.default()
    assert t.lookup("gpt-4o-mini") == Price(0.15, 0.60, 0.075)
    assert t.lookup("gpt-4o") == Price(2.50, 10.00, 1.25)
    assert t.lookup("claude-sonnet-4-5-20250929") == Price(3.00, 15.00, 0.30, 3.75)
    assert t.lookup("o3-mini-2025-01-31") == Price(1.10, 4.40, 0.55)
    assert t.lookup("o3-pro") == Price(20.0, 80.0)  # not o3's price by prefix
    assert t.lookup("deepseek-reasoner") == Price(0.28, 0.42, 0.028)
    assert t.lookup("gemini-2.5-flash-lite") == Price(0.10, 0.40, 0.025)
    assert t.cost("gpt-4o-mini", 2_000_000, 500_000) == pytest.approx(0.3 + 0.3, **TIGHT)
    assert t.lookup("_comment") is None  # the file's comment is not a model


def test_lookup_exact_then_longest_prefix_else_none():
    t = PriceTable({"m": Price(1, 1), "m-large": Price(5, 5), "other": Price(9, 9)})
    assert t.lookup("m") == Price(1, 1)
    assert t.lookup("m-large") == Price(5, 5)
    assert t.lookup("m-large-2024-01-01") == Price(5, 5)  # longest prefix, whatever the order
    assert t.lookup("m-small") == Price(1, 1)
    assert t.lookup("x-m") is None  # a prefix, not a substring
    assert t.lookup("oth") is None  # shorter than any name
    assert PriceTable().lookup("m") is None


def test_longest_prefix_does_not_depend_on_insertion_order():
    t = PriceTable({"m-large": Price(5, 5), "m": Price(1, 1)})
    assert t.lookup("m-large-v2") == Price(5, 5)


def test_cost_for_unknown_model_is_none_and_known_is_exact():
    t = PriceTable({"m": Price(3, 15)})
    assert t.cost("unknown", 10, 10) is None
    assert t.cost("m", 1_000_000, 100_000) == pytest.approx(3.0 + 1.5, **TIGHT)
    assert t.cost("m", 0, 0) == 0.0


def test_set_adds_or_replaces_a_price():
    t = PriceTable()
    t.set("local", 0.5, 2.0)
    assert t.lookup("local") == Price(0.5, 2.0)
    assert t.cost("local", 1_000_000, 1_000_000) == 2.5
    t.set("local", 0, 0)
    assert t.cost("local", 10, 10) == 0.0


def test_table_is_a_copy_of_the_mapping_given():
    prices = {"m": Price(1, 1)}
    t = PriceTable(prices)
    prices["n"] = Price(2, 2)
    assert t.lookup("n") is None


# ------------------------------------------------------------------------------ user price files


def test_user_json_file_adds_and_overrides_builtin_prices(tmp_path):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"gpt-4o": {"input": 1, "output": 2}, "llama-3-8b": {"input": "0.05", "output": 0.1},
                             "_note": "ignored"}))
    t = PriceTable.default(f)
    assert t.lookup("gpt-4o") == Price(1.0, 2.0)
    assert t.lookup("llama-3-8b") == Price(0.05, 0.1)  # numbers given as strings are accepted
    assert t.lookup("gpt-4o-mini") == Price(0.15, 0.60, 0.075)  # the rest of the built-in table stays
    assert t.lookup("_note") is None


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_user_yaml_file(tmp_path, suffix):
    f = tmp_path / f"prices{suffix}"
    f.write_text("local-model:\n  input: 0\n  output: 0.5\n")
    assert PriceTable.default(f).lookup("local-model") == Price(0.0, 0.5)


def test_env_file_is_read_and_the_explicit_file_wins_over_it(tmp_path, monkeypatch):
    env = tmp_path / "env.json"
    env.write_text(json.dumps({"a": {"input": 1, "output": 1}, "b": {"input": 1, "output": 1}}))
    cli = tmp_path / "cli.json"
    cli.write_text(json.dumps({"b": {"input": 2, "output": 2}}))
    monkeypatch.setenv("SYNTHKD_PRICES", str(env))
    t = PriceTable.default()
    assert t.lookup("a") == Price(1, 1) and t.lookup("b") == Price(1, 1)
    t = PriceTable.default(cli)
    assert t.lookup("a") == Price(1, 1) and t.lookup("b") == Price(2, 2)
    monkeypatch.setenv("SYNTHKD_PRICES", "")
    assert PriceTable.default().lookup("a") is None


def test_missing_file_is_named(tmp_path):
    f = tmp_path / "nope.json"
    with pytest.raises(PriceTableError) as ei:
        PriceTable.default(f)
    assert str(ei.value) == f"{f}: price file not found"


def test_unreadable_file_is_named(tmp_path):
    d = tmp_path / "dir.json"
    d.mkdir()
    with pytest.raises(PriceTableError) as ei:
        PriceTable.default(d)
    assert str(ei.value) == f"{d}: cannot read price file: Is a directory"  # the reason, not the errno dump


def test_non_utf8_file_is_named_with_the_byte(tmp_path):
    f = tmp_path / "p.json"
    f.write_bytes(b'{"m": 1}\xff')
    with pytest.raises(PriceTableError) as ei:
        PriceTable.default(f)
    assert str(ei.value).startswith(f"{f}: price file is not UTF-8 text (byte 8: ")


def test_unparseable_json_and_yaml_are_named(tmp_path):
    f = tmp_path / "p.json"
    f.write_text("m: {input: 1, output: 2}\n")  # YAML in a .json file
    with pytest.raises(PriceTableError, match=r"p\.json: cannot parse price file: "):
        PriceTable.default(f)
    g = tmp_path / "p.yaml"
    g.write_text("m: [unclosed\n")
    with pytest.raises(PriceTableError, match=r"p\.yaml: cannot parse price file: "):
        PriceTable.default(g)


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "{f}: expected a mapping of model name -> {{input, output}}"),
        ("just text", "{f}: expected a mapping of model name -> {{input, output}}"),
        ({"m": 3}, "{f}: model 'm': needs fields 'input' and 'output' (USD per 1M tokens)"),
        ({"m": {"input": 1}}, "{f}: model 'm': needs fields 'input' and 'output' (USD per 1M tokens)"),
        ({"m": {"output": 1}}, "{f}: model 'm': needs fields 'input' and 'output' (USD per 1M tokens)"),
        ({"m": {"input": "cheap", "output": 1}}, "{f}: model 'm': 'input' and 'output' must be numbers"),
        ({"m": {"input": 1, "output": None}}, "{f}: model 'm': 'input' and 'output' must be numbers"),
        ({"m": {"input": 1, "output": [2]}}, "{f}: model 'm': 'input' and 'output' must be numbers"),
    ],
)
def test_bad_entries_are_named_with_file_and_model(tmp_path, data, message):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(data))
    with pytest.raises(PriceTableError) as ei:
        PriceTable.default(f)
    assert str(ei.value) == message.format(f=f)


def test_extra_fields_are_allowed(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"m": {"input": 1, "output": 2, "cached_input": 0.5, "as_of": "2026-01-01",
                                   "notes": "x"}}))
    assert PriceTable.default(f).lookup("m") == Price(1, 2, 0.5)
    f.write_text(json.dumps({"m": {"input": 1, "output": 2, "cache_write": "dear"}}))
    with pytest.raises(PriceTableError, match="'cached_input', 'cache_write', 'batch_input' and 'batch_output' must be numbers"):
        PriceTable.default(f)


def test_cached_and_cache_write_tokens_are_priced_at_their_own_rates():
    p = Price(2.0, 8.0, cached_input_per_mtok=0.5, cache_write_per_mtok=2.5)
    # 1M prompt tokens of which 400k read from the cache and 100k written to it; 1M output tokens
    assert p.cost(1_000_000, 1_000_000, cached_tokens=400_000, cache_write_tokens=100_000) == pytest.approx(
        (500_000 * 2.0 + 400_000 * 0.5 + 100_000 * 2.5 + 1_000_000 * 8.0) / 1e6, **TIGHT)
    assert Price(2.0, 8.0).cost(1_000_000, 0, cached_tokens=400_000) == pytest.approx(2.0, **TIGHT)  # no rate: full
