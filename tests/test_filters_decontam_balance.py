"""Decontamination of SVAMP train problems against the SVAMP test set (13-gram overlap computed
independently, plus the MinHash near-duplicate check), and label balancing on e-SNLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import clean_rows as clean
from conftest import run_cli
from synthkd.filters.op_config import ConfigError, parse_ops
from synthkd.jsonl_io import InputError

FIX = Path(__file__).resolve().parent / "fixtures" / "filters"
EVAL = FIX / "svamp_test.json"


def train_rows() -> list[dict]:
    return [{"id": f"train-{i}", **json.loads(x)} for i, x in enumerate((FIX / "svamp_train_head300.jsonl").read_text().splitlines())]


def grams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)} if len(w) >= n else {tuple(w)}


def test_decontaminate_svamp_train_against_svamp_test(tmp_path):
    rows = train_rows()
    test_grams = set().union(*(grams(json.loads(x)["input"]) for x in EVAL.read_text().splitlines()))
    expected = {r["id"] for r in rows if grams(r["input"]) & test_grams}
    funnel, out, rej = clean(tmp_path, rows, [{"op": "decontaminate", "eval_file": str(EVAL), "fields": ["input"]}])
    assert {r["id"] for r in rej} == expected
    assert len(expected) == 54  # SVAMP's variants of one problem land in both splits
    assert all(r["reject_reason"] == "shares 13-gram with eval set" for r in rej)
    assert re.search(r"\(eval item \d+\)$", rej[0]["reject_detail"])
    assert len(out) == 300 - 54
    assert funnel.stages[1].extra["eval_items"] == 200 and 0 < funnel.stages[1].extra["eval_items_matched"] <= 200


def test_decontaminate_near_duplicates_of_eval_items(tmp_path):
    rows = train_rows()
    # a light rewrite of eval items: numbers changed -> no 13-gram survives in short problems, MinHash sees it
    evals = [json.loads(x)["input"] for x in EVAL.read_text().splitlines()]
    rewritten = [{"id": f"rw-{i}", "input": re.sub(r"\d+", lambda m: str(int(m.group()) + 3), e)} for i, e in enumerate(evals[:20])]
    ops = [{"op": "decontaminate", "eval_file": str(EVAL), "ngram": 13, "near_dup_threshold": 0.7}]
    _, out, rej = clean(tmp_path, rows + rewritten, ops)
    reasons = Counter(r["reject_reason"] for r in rej)
    assert reasons["near duplicate of eval item"] > 0
    dropped = {r["id"] for r in rej}
    assert sum(1 for r in rewritten if r["id"] in dropped) >= 18  # nearly all rewrites are caught one way or another
    for r in rej:
        if r["reject_reason"] == "near duplicate of eval item":
            assert re.match(r"J≈0\.\d\d with eval item \d+: “", r["reject_detail"])


def test_empty_or_missing_eval_set_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="has no items"):
        clean(tmp_path, train_rows()[:3], [{"op": "decontaminate", "eval_file": str(tmp_path / "empty.jsonl")}])
    with pytest.raises(ConfigError, match="not found"):
        clean(tmp_path, train_rows()[:3], [{"op": "decontaminate", "eval_file": str(tmp_path / "nope.jsonl")}])
    inp = tmp_path / "in.jsonl"
    res = run_cli("clean", "decontaminate", "--input", str(inp), "--output", str(tmp_path / "o.jsonl"),
                  "--eval-file", str(tmp_path / "empty.jsonl"))
    assert res.returncode == 2 and "has no items" in res.stderr
    assert not (tmp_path / "o.jsonl").exists()


def esnli_rows() -> list[dict]:
    s1 = (FIX / "esnli_s1_test_head400.txt").read_text().splitlines()
    labels = (FIX / "esnli_labels_test_head400.txt").read_text().splitlines()
    return [{"id": i, "text": t, "label": lab} for i, (t, lab) in enumerate(zip(s1, labels))]


def test_balance_cap_equalise_and_random(tmp_path):
    rows = esnli_rows()
    before = Counter(r["label"] for r in rows)
    assert len(before) == 3
    _, out, rej = clean(tmp_path, rows, [{"op": "balance", "max_per_label": 100}])
    after = Counter(r["label"] for r in out)
    assert after == Counter({lab: min(100, n) for lab, n in before.items()})
    # the first 100 of each label stay
    firsts = [r["id"] for r in rows if sum(1 for q in rows[: r["id"] + 1] if q["label"] == r["label"]) <= 100]
    assert [r["id"] for r in out] == firsts
    assert all(r["reject_reason"] == "over label cap" for r in rej)

    d = tmp_path / "eq"
    d.mkdir()
    funnel, out, _ = clean(d, rows, [{"op": "balance", "equalize": True, "selection": "random", "seed": 1}])
    m = min(before.values())
    assert Counter(r["label"] for r in out) == Counter({lab: m for lab in before})
    ids1 = [r["id"] for r in out]
    assert ids1 == sorted(ids1)  # input order kept
    assert "| label | rows in | rows out |" in (d / "f.md").read_text()
    d2 = tmp_path / "eq2"
    d2.mkdir()
    _, out2, _ = clean(d2, list(reversed(rows)), [{"op": "balance", "equalize": True, "selection": "random", "seed": 1}])
    assert sorted(r["id"] for r in out2) == sorted(ids1)  # the choice depends on ids, not on file order
    d3 = tmp_path / "eq3"
    d3.mkdir()
    _, out3, _ = clean(d3, rows, [{"op": "balance", "equalize": True, "selection": "random", "seed": 2}])
    assert [r["id"] for r in out3] != ids1


def test_balance_needs_a_limit():
    with pytest.raises(ConfigError, match=r"\[0\] balance: give max_per_label, or equalize"):
        parse_ops([{"op": "balance"}], "c.yaml")


# audit mutant 12: an eval item shorter than the n-gram size is one n-gram of all its words, so a row that
# is that question is caught, case and punctuation aside (and a row merely containing it is not)
def test_decontaminate_short_eval_items(tmp_path):
    (tmp_path / "eval.jsonl").write_text(json.dumps({"id": "short-1", "input": "What is 7 times 8?"}) + "\n"
                                         + json.dumps({"id": "long-1", "input": json.loads(EVAL.read_text().splitlines()[0])["input"]}) + "\n")
    rows = [
        {"id": "same", "input": "What is 7 times 8?"},
        {"id": "case", "input": "what is 7 TIMES 8"},
        {"id": "other", "input": "What is 7 times 9?"},
        {"id": "inside", "input": "Quick one: what is 7 times 8? Show your work, please."},
    ]
    _, out, rej = clean(tmp_path, rows, [{"op": "decontaminate", "eval_file": str(tmp_path / "eval.jsonl")}])
    assert {r["id"]: r["reject_detail"] for r in rej} == {
        "same": "'what is 7 times 8' (eval item 'short-1')", "case": "'what is 7 times 8' (eval item 'short-1')"}
    assert [r["id"] for r in out] == ["other", "inside"]


# audit mutant 13: an eval file with its own field names (the README's `eval_fields: [question]`) and ids
def test_decontaminate_eval_fields_id_field_and_near_dup_ngram(tmp_path):
    evals = [json.loads(x)["input"] for x in EVAL.read_text().splitlines()]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"uid": f"q-{i}", "question": e}) + "\n"
                                                 for i, e in enumerate(evals)))
    shuffled = " ".join(reversed(evals[5].split()))  # the same words, no shared 2-gram in order
    rows = [{"id": "copy", "input": evals[7]}, {"id": "fresh", "input": "A brand new problem about 3 red kites."},
            {"id": "shuffled", "input": shuffled}]
    base = {"op": "decontaminate", "eval_file": str(tmp_path / "eval.jsonl"), "fields": ["input"],
            "eval_fields": ["question"], "eval_id_field": "uid"}
    for sub, extra, dropped in (("one", {}, {"copy"}),
                                ("w1", {"near_dup_threshold": 0.8, "near_dup_ngram": 1}, {"copy", "shuffled"}),
                                ("w2", {"near_dup_threshold": 0.8, "near_dup_ngram": 2}, {"copy"})):
        (tmp_path / sub).mkdir()
        _, out, rej = clean(tmp_path / sub, rows, [{**base, **extra}])
        assert {r["id"] for r in rej} == dropped, sub
        by = {r["id"]: r for r in rej}
        assert by["copy"]["reject_detail"].endswith("(eval item 'q-7')")
        if "shuffled" in by:
            assert re.match(r"J≈1\.00 with eval item 'q-5': “", by["shuffled"]["reject_detail"])
    # without eval_fields the eval items have no 'input': a clear error naming the file and line
    (tmp_path / "bad").mkdir()
    with pytest.raises(InputError, match=r"eval\.jsonl:1: .*input"):
        clean(tmp_path / "bad", rows, [{"op": "decontaminate", "eval_file": str(tmp_path / "eval.jsonl")}])


@pytest.mark.parametrize("ops", [{"max_per_label": 2}, {"equalize": True, "selection": "random"}])
def test_balance_reads_the_label_file(tmp_path, ops):
    """With the label file every feature reads, balance drops rows whose label is not in it (counted with
    their reason) and reports the file's labels that end with no row."""
    labels = tmp_path / "labels.yaml"
    labels.write_text("task: t\nlabels: [a, b, c]\nout_of_scope: anything else\n")
    rows = [{"id": i, "text": f"t{i}", "label": lab} for i, lab in enumerate(["a", "a", "a", "b", "b", "zz", "out_of_scope"])]
    funnel, out, rej = clean(tmp_path, rows, [{"op": "balance", "labels": str(labels), **ops}])
    assert "zz" not in {r["label"] for r in out}
    assert [r["reject_reason"] for r in rej if r["label"] == "zz"] == ["label not in label file"]
    rep = funnel.stages[1].extra
    assert rep["labels_without_rows"] == ["c"] and rep["labels_not_in_file"] == {"zz": 1}
    assert "Labels of the label file with no row: c" in (tmp_path / "f.md").read_text()


def test_sample_keeps_n_rows_by_id_whatever_the_file_order(tmp_path):
    rows = esnli_rows()
    ops = [{"op": "sample", "n": 150, "seed": 3}]
    funnel, out, rej = clean(tmp_path, rows, ops)
    assert len(out) == 150 and len(rej) == len(rows) - 150
    assert all(r["reject_reason"] == "over sample size" for r in rej)
    ids = [r["id"] for r in out]
    assert ids == sorted(ids)  # input order kept
    d = tmp_path / "rev"
    d.mkdir()
    _, out_rev, _ = clean(d, list(reversed(rows)), ops)  # generated rows come in arrival order
    assert sorted(r["id"] for r in out_rev) == ids
    # a subset sampled with the same seed keeps the same ids where it can: the filtered set's sample is
    # the full sample less what the filter dropped, topped up with the next-ranked rows
    sub = [r for r in rows if r["label"] != "neutral"]
    d2 = tmp_path / "sub"
    d2.mkdir()
    _, out_sub, _ = clean(d2, sub, ops)
    assert len(out_sub) == 150
    assert {i for i in ids if rows[i]["label"] != "neutral"} <= {r["id"] for r in out_sub}
    d3 = tmp_path / "seed"
    d3.mkdir()
    _, out_other, _ = clean(d3, rows, [{"op": "sample", "n": 150, "seed": 4}])
    assert [r["id"] for r in out_other] != ids


def test_sample_of_more_rows_than_there_are_keeps_all_and_says_so(tmp_path):
    rows = esnli_rows()[:40]
    funnel, out, rej = clean(tmp_path, rows, [{"op": "sample", "n": 50}])
    assert len(out) == 40 and not rej
    assert "40 rows came in: all kept, 10 short" in (tmp_path / "f.md").read_text()
    with pytest.raises(ConfigError, match=r"\[0\] sample: option 'n'"):
        parse_ops([{"op": "sample", "n": 0}], "c.yaml")
