"""Format/length, refusal and language filters on real teacher outputs (GPT-3.5 and Claude-2 answers
from AlpacaEval, PaLM rationales for SVAMP)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import clean_rows as clean
from conftest import read_jsonl

FIX = Path(__file__).resolve().parent / "fixtures" / "filters"


def alpaca() -> list[dict]:
    return read_jsonl(FIX / "alpaca_eval_outputs_slice.jsonl")


def test_refusals_in_real_gpt35_and_claude2_outputs(tmp_path):
    rows = alpaca()
    funnel, out, rej = clean(tmp_path, rows, [{"op": "refusal"}])
    dropped = {r["id"] for r in rej}
    # real refusals / AI boilerplate, one per phrasing family
    for rid in ["gpt-3.5-turbo-0613:285",  # "As an AI language model, I don't have personal opinions"
                "gpt-3.5-turbo-0613:39",  # "As an AI, I don't have personal opinions"
                "gpt-3.5-turbo-0613:296",  # "I'm sorry, but I cannot assist with that question"
                "gpt-3.5-turbo-0613:720",  # "I'm sorry, but I can't provide the address"
                "claude-2:433",  # "I apologize, but I do not feel comfortable roleplaying"
                "claude-2:258",  # "I cannot recommend ways to deceive others"
                "claude-2:629"]:  # "I'm an AI assistant created by Anthropic"
        assert rid in dropped, rid
    # apologies and "can't" inside real content are not refusals
    for rid in ["gpt-3.5-turbo-0613:411",  # "I'm sorry to hear that your cat chewed on ..."
                "gpt-3.5-turbo-0613:629",  # a dialogue: "Oh, I'm sorry to hear that."
                "gpt-3.5-turbo-0613:422",  # "... develop a large language model that performs well"
                "claude-2:179"]:  # "I can't wait to see where it takes me next."
        assert rid not in dropped, rid
    assert len(dropped) == 39 and len(out) == len(rows) - 39
    assert all(r["reject_reason"] == "refusal" and r["reject_detail"] for r in rej)
    # the ordinary answers (items 0..59 of each model) are kept, except the two refusals among them
    ordinary = [r["id"] for r in rows if r["source_index"] < 60]
    assert sorted(set(ordinary) & dropped) == ["gpt-3.5-turbo-0613:39"]
    assert funnel.stages[1].examples["refusal"][0]["id"] == rej[0]["id"]


def test_wrong_language_in_real_outputs(tmp_path):
    rows = alpaca()
    _, out, rej = clean(tmp_path, rows, [{"op": "language", "expect": ["en"]}])
    assert sorted(r["id"] for r in rej) == ["claude-2:573", "claude-2:600", "gpt-3.5-turbo-0613:573"]
    assert all(r["reject_reason"] == "wrong language" and "looks like fr" in r["reject_detail"] for r in rej)
    # asking for French keeps the French answers and drops English ones
    d = tmp_path / "fr"
    d.mkdir()
    _, out_fr, _ = clean(d, rows, [{"op": "language", "expect": ["fr"]}])
    assert {"claude-2:573", "claude-2:600", "gpt-3.5-turbo-0613:573"} <= {r["id"] for r in out_fr}
    assert len(out_fr) < 10
    # script check: a Chinese answer to an English prompt, and a short text that is not judged
    d = tmp_path / "zh"
    d.mkdir()
    _, out_zh, rej_zh = clean(d, [{"id": 1, "completion": "这是一个很好的问题。我们可以从三个方面来回答它。"},
                                  {"id": 2, "completion": "OK"}], [{"op": "language"}])
    assert [r["id"] for r in out_zh] == [2] and "Han" in rej_zh[0]["reject_detail"]


def test_format_length_truncation_and_required_pattern(tmp_path):
    gold = [json.loads(x) for x in (FIX / "svamp_test.json").read_text().splitlines()]
    comps = json.loads((FIX / "svamp_test_palm_CoT.json").read_text())
    rows = [{"id": i, "input": g["input"], "completion": c, "finish_reason": "length" if i % 50 == 7 else "stop"}
            for i, (g, c) in enumerate(zip(gold, comps))]
    rows.append({"id": "empty", "completion": "  \n", "finish_reason": "stop"})
    ops = [{"op": "format", "require_pattern": r"(?i)the answer is", "min_words": 65, "max_words": 90}]
    funnel, out, rej = clean(tmp_path, rows, ops)
    by = {}
    for r in rej:
        by.setdefault(r["reject_reason"], set()).add(r["id"])
    assert by["empty"] == {"empty"}
    assert by["truncated"] == {7, 57, 107, 157}
    # independent: the same rules in order on the same texts
    short = {r["id"] for r in rows[:-1] if r["finish_reason"] == "stop" and len(r["completion"].split()) < 65}
    long_ = {r["id"] for r in rows[:-1] if r["finish_reason"] == "stop" and len(r["completion"].split()) > 90}
    nopat = {r["id"] for r in rows[:-1] if r["finish_reason"] == "stop" and 65 <= len(r["completion"].split()) <= 90
             and not re.search(r"(?i)the answer is", r["completion"])}
    assert by.get("too short", set()) == short and by.get("too long", set()) == long_
    assert by.get("required pattern missing", set()) == nopat
    assert len(out) == 201 - sum(len(v) for v in by.values()) and not funnel.check_accounting()
    assert short and long_  # PaLM's completions run 60-95 words (with their run-on continuations)


def test_chain_of_three_operators_accounts_every_row(tmp_path):
    rows = alpaca()
    ops = [{"op": "format", "min_words": 5}, {"op": "refusal"}, {"op": "language"}]
    funnel, out, rej = clean(tmp_path, rows, ops)
    assert funnel.rows_in == len(rows) == len(out) + len(rej)
    assert [s.name for s in funnel.stages] == ["input", "format", "refusal", "language"]
    for prev, nxt in zip(funnel.stages, funnel.stages[1:]):
        assert nxt.rows_in == prev.kept
    assert sum(s.dropped for s in funnel.stages) == len(rej)
    assert {r["reject_op"] for r in rej} <= {"format", "refusal", "language"}
    md = (tmp_path / "f.md").read_text()
    assert f"{len(rows)} rows in → {len(out)} rows out" in md and "| 2 | refusal |" in md
