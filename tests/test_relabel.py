"""The shared relabel classifier: label-space files, answer mapping, candidate restriction, and
`synthkd generate relabel` end to end through the real loopback server with a scripted responder
that answers real Banking77 texts (tests/fixtures/promptmix/)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli
from synthkd.jsonl_io import InputError
from synthkd.labels import LabelSpace, classify, confusion_summary, map_answer, offered_classes
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.sampling import sample_seed
from synthkd.testing.server import FaultConfig

FIX = Path(__file__).resolve().parent / "fixtures" / "promptmix"
sys.path.insert(0, str(FIX))
from scripted_teacher import ScriptedTeacher, from_pool_file  # noqa: E402

B8 = FIX / "banking77_8.yaml"
TEST8 = FIX / "banking77_8_test.jsonl"


def _space() -> LabelSpace:
    return LabelSpace.from_file(B8)


def _requests(srv) -> int:
    return srv.stats()["by_endpoint"].get("/v1/chat/completions", 0)


def _run(coro):
    return asyncio.run(coro)


async def _classify_all(srv, rows, space, **kw):
    t = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, concurrency=8, max_retries=kw.pop("max_retries", 2))
    try:
        return [x async for x in classify(rows, t, space, **kw)]
    finally:
        await t.aclose()


# ------------------------------------------------------------------ label space files


def test_label_space_forms(tmp_path):
    s = _space()
    assert len(s.labels) == 8 and s.labels[0] == "card_arrival"
    assert s.description("exchange_rate").startswith("the customer asks which exchange rate")
    assert all(len(s.examples[lab]) == 3 for lab in s.labels)
    (tmp_path / "a.json").write_text(json.dumps({"labels": ["x", "y"], "descriptions": {"x": "about x"},
                                                 "examples": {"y": ["why?"]}}))
    a = LabelSpace.from_file(tmp_path / "a.json")
    assert a.labels == ["x", "y"] and a.descriptions == {"x": "about x"} and a.examples == {"y": ["why?"]}
    (tmp_path / "b.yaml").write_text("labels:\n  x: about x\n  y:\n")
    assert LabelSpace.from_file(tmp_path / "b.yaml").descriptions == {"x": "about x"}


@pytest.mark.parametrize("text, expect", [
    ("labels:\n  - a\n  - a\n", r"b\.yaml:1: field 'labels': duplicate class 'a'"),
    ("labels: [a, b]\nexamples:\n  a: [ok]\n  c: [x]\n", r"b\.yaml:4: field 'examples\.c': 'c' is not one of the labels"),
    ("labels: [a, b]\nexamples:\n  a:\n    - fine\n    - 3\n", r"b\.yaml:5: field 'examples\.a\[1\]': must be a non-empty string"),
    ("labls: [a]\n", r"b\.yaml:1: field 'labls': unknown field.*\n.*field 'labels': missing"),
    ("labels: [a, b\n", r"b\.yaml:\d+: not valid YAML"),
    ("labels:\n  a:\n    description: 5\n", r"b\.yaml:3: field 'labels\.a\.description': must be a string"),
])
def test_label_space_errors_name_file_line_field(tmp_path, text, expect):
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(InputError) as ei:
        LabelSpace.from_file(tmp_path / "b.yaml")
    assert re.search(expect, str(ei.value)), str(ei.value)


# ------------------------------------------------------------------ answer mapping


@pytest.mark.parametrize("raw, expect", [
    ("Intent: Card_Arrival.", "card_arrival"),
    ('"card arrival"', "card_arrival"),
    ("The answer is card_linking.", "card_linking"),
    ("CARD_NOT_WORKING", "card_not_working"),
    ("2", "card_linking"),                     # label number of the offered list
    ("Class: 3", "exchange_rate"),
    ("(1)", "card_arrival"),
    ("ExchangeRate", "exchange_rate"),
    ("lost_or_stolen_card", "lost_or_stolen_card"),  # a class of the space that was not offered
    ("I think it's card_linking, the customer wants to add a card.\nExtra words here.", "card_linking"),
])
def test_map_answer_is_robust(raw, expect):
    offered = ["card_arrival", "card_linking", "exchange_rate", "card_not_working"]
    label, reason = map_answer(raw, offered, _space().labels)
    assert (label, reason) == (expect, None)


@pytest.mark.parametrize("raw, why", [
    ("I am not sure which of these it is.", "unmappable answer: no label matched"),
    ("7", "unmappable answer: label number 7 out of range 1..4"),
    ("", "unmappable answer: empty answer"),
    ("card_arrival or card_linking, hard to say", None),  # starts with a label: that one
    ("Either card_linking or card_arrival", "unmappable answer: ambiguous"),
])
def test_map_answer_unmappable_gives_reason(raw, why):
    offered = ["card_arrival", "card_linking", "exchange_rate", "card_not_working"]
    label, reason = map_answer(raw, offered, _space().labels)
    if why is None:
        assert label == "card_arrival"
    else:
        assert label is None and reason.startswith(why)


# ------------------------------------------------------------------ candidate restriction


def test_lexical_candidates_find_gold_and_always_include_intended():
    s = _space()
    rows = read_jsonl(TEST8)
    hit3 = sum(r["label"] in s.index().top(r["text"], 3) for r in rows) / len(rows)
    assert hit3 >= 0.8, hit3  # TF-IDF over name+description+3 examples: real recall@3 on 80 test rows
    ex = next(r for r in rows if r["label"] == "exchange_rate")
    offered = offered_classes(ex["text"], s, 2, must=["activate_my_card"])
    assert "activate_my_card" in offered and "exchange_rate" in offered and len(offered) == 3
    assert offered == [lab for lab in s.labels if lab in offered]  # label-space order, not score order


# ------------------------------------------------------------------ classify through the server


def test_classify_real_rows_maps_noisy_answers(make_server):
    responder = from_pool_file(FIX / "banking77_8_pool.jsonl", [TEST8], wrong_rate=0.1, unmappable_rate=0.05)
    srv = make_server(FaultConfig(latency_ms=2), responder=responder)
    space = _space()
    rows = read_jsonl(TEST8)
    seed_text = space.examples["card_arrival"][0]
    rows.append({"id": "seed-row", "text": seed_text, "label": "card_arrival"})
    responder.gold[seed_text.lower()] = "card_arrival"
    # intended label deliberately far from the text for a few rows: it must still be offered
    for r in rows[::10]:
        r["intended_label"] = "card_payment_wrong_exchange_rate" if r["label"] != "card_payment_wrong_exchange_rate" else "card_arrival"
    got = _run(_classify_all(srv, rows, space, candidates=3, k_shot=2))
    assert len(got) == 81 and _requests(srv) == 81
    kinds = {c["text"]: c for c in responder.classified}
    n_wrong = n_unmappable = 0
    for row, rel in got:
        c = kinds[row["text"]]
        assert rel.candidates == c["offered"]
        assert row.get("intended_label", row["label"]) in rel.candidates
        assert 3 <= len(rel.candidates) <= 4
        if c["kind"] == "unmappable":
            n_unmappable += 1
            assert rel.label is None and rel.reason.startswith("unmappable answer")
        elif c["kind"] == "wrong":
            n_wrong += 1
            assert rel.label not in (None, row["label"]) and rel.reason is None
        else:
            assert rel.label == row["label"], (c["answer"], rel)
        assert rel.raw == c["answer"] and rel.template["template"] == "relabel/classify"
    assert n_unmappable >= 1 and n_wrong >= 3  # the noise really was exercised
    # k-shot prompts carry descriptions and examples, but never the row's own text as an example
    for c in responder.classified:
        assert all(f"{lab}: {space.description(lab)}" in c["prompt"] for lab in c["offered"])
        assert f'Example: "{c["text"]}"' not in c["prompt"] and c["prompt"].count("Example: ") >= 5
    seed_prompt = next(c["prompt"] for c in responder.classified if c["text"] == seed_text)
    assert f'Text: "{seed_text}"' in seed_prompt and space.examples["card_arrival"][1] in seed_prompt


def test_classify_samples_vote_and_teacher_errors(make_server):
    space = _space()
    rows = read_jsonl(TEST8)[:6]
    gold = {r["text"]: r["label"] for r in rows}

    def responder(endpoint, body):
        text = re.search(r'\nText: "(.*)"\n', body["messages"][0]["content"]).group(1)
        return "card_linking" if sample_seed(body) == 11 else f"Intent: {gold[text]}"

    srv = make_server(responder=responder)
    got = _run(_classify_all(srv, rows, space, samples=3, temperature=0.7, seed=10))
    assert _requests(srv) == 6  # 6 rows x 3 samples, one request (n=3) per row
    for row, rel in got:
        if row["label"] == "card_linking":
            assert rel.votes == {"card_linking": 3}
        else:
            assert rel.label == row["label"] and rel.votes == {row["label"]: 2, "card_linking": 1}
    bad = make_server(FaultConfig(error_rate=1.0))
    got = _run(_classify_all(bad, rows[:2], space, max_retries=0))
    assert all(rel.label is None and rel.reason.startswith("teacher error") and rel.teacher_error for _, rel in got)


def test_confusion_summary_counts():
    s = confusion_summary([("a", "a"), ("a", "b"), ("a", "b"), ("b", "b"), ("b", None), (None, "a"), ("c", "a")])
    assert s["rows"] == 7 and s["compared"] == 5 and s["agree"] == 2 and s["agreement"] == 0.4
    assert s["unmapped"] == 1 and s["no_intended"] == 1
    assert s["top_confusions"][0] == ["a", "b", 2] and ["c", "a", 1] in s["top_confusions"]
    assert s["per_label"]["a"] == {"n": 3, "agree": 1, "unmapped": 0, "agreement": round(1 / 3, 4)}


# ------------------------------------------------------------------ the CLI


def _relabel_args(tmp_path, srv, inp, labels=B8, out="out.jsonl", *extra):
    return ["generate", "relabel", "--input", str(inp), "--labels", str(labels), "--output", str(tmp_path / out),
            "--teacher", "test-model", "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"), *extra]


def test_cli_relabel_summary_rerun_and_bad_inputs(tmp_path, make_server):
    responder = from_pool_file(FIX / "banking77_8_pool.jsonl", [TEST8], wrong_rate=0.1, unmappable_rate=0.05)
    srv = make_server(responder=responder)
    args = _relabel_args(tmp_path, srv, TEST8, B8, "out.jsonl", "--candidates", "4", "--summary-json",
                         str(tmp_path / "s.json"))
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert len(out) == 80 and _requests(srv) == 80
    assert all({"relabeled_label", "relabel_raw", "relabel_reason"} <= set(r) for r in out)
    expected = confusion_summary((r["label"], r["relabeled_label"]) for r in out)
    agree = sum(r["label"] == r["relabeled_label"] for r in out)
    compared = sum(r["relabeled_label"] is not None for r in out)
    assert expected["agree"] == agree and 0.75 < agree / compared < 0.97
    assert f"agreement {100 * agree / compared:.1f}% ({agree}/{compared} rows compared" in res.stderr
    top = expected["top_confusions"][0]
    assert f"{top[0]} -> {top[1]}: {top[2]}" in res.stderr
    assert json.loads((tmp_path / "s.json").read_text())["confusion"] == expected
    unm = [r for r in out if r["relabeled_label"] is None]
    assert unm and all(r["relabel_reason"].startswith("unmappable answer") for r in unm)

    # rerun: nothing sent, nothing written twice; a fresh output is served from the cache
    assert run_cli(*args).returncode == 0
    args[args.index(str(tmp_path / "out.jsonl"))] = str(tmp_path / "out2.jsonl")
    res2 = run_cli(*args)
    assert res2.returncode == 0, res2.stderr
    assert _requests(srv) == 80 and len(read_jsonl(tmp_path / "out.jsonl")) == 80
    assert [r["relabeled_label"] for r in read_jsonl(tmp_path / "out2.jsonl")] != [] and \
        sorted(map(json.dumps, (dict(r, relabel_cached=None) for r in read_jsonl(tmp_path / "out2.jsonl")))) == \
        sorted(map(json.dumps, (dict(r, relabel_cached=None) for r in out)))

    # bad label space / bad input: exit 2 before any request
    (tmp_path / "bad.yaml").write_text("labels: [card_arrival]\nexamples:\n  nope: [x]\n")
    res = run_cli(*_relabel_args(tmp_path, srv, TEST8, tmp_path / "bad.yaml", "o3.jsonl"))
    assert res.returncode == 2 and "bad.yaml:3: field 'examples.nope'" in res.stderr
    rows = read_jsonl(TEST8)[:5]
    rows[3]["label"] = "not_a_class"
    del rows[1]["text"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_cli(*_relabel_args(tmp_path, srv, tmp_path / "in.jsonl", B8, "o4.jsonl"))
    assert res.returncode == 2
    assert "in.jsonl:2: field 'text'" in res.stderr and "in.jsonl:4: field 'label': 'not_a_class'" in res.stderr
    assert _requests(srv) == 80 and not (tmp_path / "o4.jsonl").exists()


def test_cli_relabel_teacher_errors_are_rejected_and_retried(tmp_path, make_server):
    rows = read_jsonl(TEST8)[:10]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    srv = make_server(FaultConfig(error_rate=1.0))
    args = _relabel_args(tmp_path, srv, tmp_path / "in.jsonl", B8, "out.jsonl", "--max-retries", "0")
    res = run_cli(*args)
    assert res.returncode == 1, res.stderr
    assert read_jsonl(tmp_path / "out.jsonl") == []
    rej = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert len(rej) == 10 and all(r["reject_reason"].startswith("teacher error") for r in rej)
    srv.configure(error_rate=0.0)
    srv.responder = ScriptedTeacher({}, {r["text"]: r["label"] for r in rows})
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert [r["relabeled_label"] for r in read_jsonl(tmp_path / "out.jsonl")] == [r["label"] for r in rows]
    assert "agreement 100.0% (10/10 rows compared" in res.stderr
