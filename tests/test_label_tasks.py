"""Labelled examples from a task spec: parsing of messy lists, spec validation before any request,
N per label with near-duplicates and seed copies dropped, varied attribute combos, and the CLI's
rerun / failure / SIGKILL-resume behaviour — all through the real loopback server, with a scripted
teacher that answers with real Banking77 texts (tests/fixtures/tasks/tasks_responders.py)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from conftest import cli_env, read_jsonl, run_cli, sigkill_after_first_row, synthkd_cmd
from synthkd.jsonl_io import InputError
from synthkd.methods.label_tasks import LabelTaskConfig, generate_label_examples, load_task_spec, plan_label_tasks
from synthkd.teacher_lists import parse_list_items
from synthkd.teachers.jobs import MethodStats
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.templates import TemplateError
from synthkd.testing.server import FaultConfig, TestServer

FIX = Path(__file__).resolve().parent / "fixtures" / "tasks"
sys.path.insert(0, str(FIX))
from tasks_responders import BankingResponder, load_banking  # noqa: E402

SPEC = FIX / "banking77_spec.yaml"
LABELS = ["card_arrival", "lost_or_stolen_card", "pin_blocked", "cancel_transfer", "age_limit"]
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


# ------------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize("text, expected", [
    ("Here are 4 messages:\n\n1. Where is my card?\n2) \"When will it arrive?\"\n(3) Example 3: it hasn't come\n"
     "#4. 'It's been a week'\n\nHope this helps!",
     ["Where is my card?", "When will it arrive?", "it hasn't come", "It's been a week"]),
    ('Example 1: "card not here yet"\nExample 2 - \u201cwhere is it\u201d\n**Example 3:** Is it shipped?',
     ["card not here yet", "where is it", "Is it shipped?"]),
    ('```json\n{"text": "card not here"}\n{"text": "where\'s the card"}\n```', ["card not here", "where's the card"]),
    ('["a b c", {"text": "d e f"}, {"example": "g h"}]', ["a b c", "d e f", "g h"]),
    ("Sure! Here you go:\nWhere is my card?\nWhen does it come?", ["Where is my card?", "When does it come?"]),
    ("1.\nWhere is my card\nand why is it late?\n2. 5.5% fee on transfers?\n3.Is it here", [
        "Where is my card and why is it late?", "5.5% fee on transfers?", "Is it here"]),
    ("- Lost my card (label: lost_or_stolen_card)\n* Which class: economy or business?\n\u2022 ok",
     ["Lost my card", "Which class: economy or business?", "ok"]),
    ("1. \n2.   \n3. real one", ["real one"]),
    ("", []),
])
def test_parse_list_items_strips_numbering_quotes_and_chatter(text, expected):
    assert parse_list_items(text) == expected


def test_parse_keeps_paper_style_leading_item_only_when_asked():
    text = "Write a poem about cats.\n10. Classify the sentiment.\n11) Translate to French."
    assert parse_list_items(text, leading_item=True)[0] == "Write a poem about cats."
    assert parse_list_items(text) == ["Classify the sentiment.", "Translate to French."]
    assert parse_list_items("Here are more tasks:\n9. A b c d", leading_item=True) == ["A b c d"]


# ------------------------------------------------------------------------------------------ spec errors

def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, needle", [
    ("labels: [a, b]\n", "field 'task': missing"),
    ("task: t\nlabels: []\n", "field 'labels': missing or empty"),
    ("task: t\nlabels: [a, b]\nseed_examples:\n  a: [x y z]\n  c: [u v w]\n", "spec.yaml:5: field 'seed_examples.c': unknown label 'c'"),
    ("task: t\nlabels: [a, b]\nseed_examples:\n  - {text: hi there, label: zz}\n", "spec.yaml:4: field 'seed_examples[0].label': unknown label 'zz'"),
    ("task: t\nlabels: [a, a]\n", "duplicate label 'a'"),
    ("task: t\nlabels: [a, b]\nattributes:\n  tone: []\n", "spec.yaml:4: field 'attributes.tone': must be a non-empty list"),
    ("task: t\nlabel: [a, b]\n", "field 'label': unknown field"),
    ("task: t\nlabels: [a, b]\nlabel_descriptions: {c: x}\n", "field 'label_descriptions.c': unknown label 'c'"),
    ("task: t\nlabels: [yes, b]\n", "label name must be a non-empty string"),
    ("task: [unclosed\n", "not valid YAML"),
])
def test_bad_spec_is_named_by_file_line_and_field(tmp_path, text, needle):
    with pytest.raises(InputError) as exc:
        load_task_spec(_write(tmp_path, "spec.yaml", text))
    assert needle in str(exc.value), str(exc.value)


def test_missing_descriptions_fail_only_for_templates_that_use_them(tmp_path):
    spec = load_task_spec(_write(tmp_path, "s.yaml", "task: t\nlabels:\n  a: first label\n  b:\n"))
    with pytest.raises(InputError, match=r"s.yaml:4: label 'b': field 'description': empty, but template 'tasks/examples'"):
        plan_label_tasks(spec, LabelTaskConfig(per_label=3))
    plan = plan_label_tasks(spec, LabelTaskConfig(per_label=3, template="tasks/examples_names"))
    assert "Label: b" in plan.request("b", 0).messages[0]["content"]
    tpl = _write(tmp_path, "t.j2", "{{ task_description }} {{ label }} {{ colour }}")
    with pytest.raises(TemplateError, match="colour"):
        plan_label_tasks(spec, LabelTaskConfig(per_label=3, template=str(tpl)))
    with pytest.raises(InputError, match="--only: unknown label"):
        plan_label_tasks(spec, LabelTaskConfig(per_label=3, template="tasks/examples_names", only=["zz"]))


def test_cli_bad_spec_exits_2_before_any_request(tmp_path, make_server):
    srv = make_server()
    bad = _write(tmp_path, "spec.json", json.dumps({
        "task": "t", "labels": {"a": "first", "b": "second"},
        "seed_examples": [{"text": "hello there you", "label": "a"}, {"text": "x y z", "label": "nope"}]}, indent=1))
    res = run_cli("generate", "tasks", "--spec", str(bad), "-o", str(tmp_path / "out.jsonl"), "-n", "3",
                  "-m", "test-model", "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"))
    assert res.returncode == 2, res.stderr
    assert "spec.json:" in res.stderr and "field 'seed_examples[1].label': unknown label 'nope'" in res.stderr
    assert srv.stats()["requests_total"] == 0
    assert not (tmp_path / "out.jsonl").exists()


# ------------------------------------------------------------------------------------------ the method

def _run_api(srv: TestServer, config: LabelTaskConfig, concurrency: int = 8) -> tuple[list[dict], MethodStats]:
    async def go():
        t = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, concurrency=concurrency)
        st = MethodStats()
        try:
            rows = [r async for r in generate_label_examples(t, plan_label_tasks(load_task_spec(SPEC), config), stats=st)]
        finally:
            await t.aclose()
        return rows, st

    return asyncio.run(go())


def test_n_per_label_near_dups_and_seed_copies_dropped_combos_vary(make_server):
    responder = BankingResponder(load_banking())
    srv = make_server(responder=responder)
    N = 12
    rows, st = _run_api(srv, LabelTaskConfig(per_label=N, batch_size=5))
    kept = [r for r in rows if "reject_reason" not in r]
    rejects = [r for r in rows if "reject_reason" in r]
    by_label = defaultdict(list)
    for r in kept:
        by_label[r["label"]].append(r)
    assert {lab: len(v) for lab, v in by_label.items()} == {lab: N for lab in LABELS}
    assert sorted(r["id"] for r in kept) == sorted(f"{lab}-{k}" for lab in LABELS for k in range(N))
    # independent oracle: rouge-score itself finds no kept pair above 0.7, and no kept text near a seed
    spec = load_task_spec(SPEC)
    seeds = [ex for lab in spec.labels for ex in lab.examples]
    texts = [r["text"] for r in kept]
    for i, a in enumerate(texts):
        assert all(SCORER.score(a, b)["rougeL"].fmeasure <= 0.7 for b in texts[i + 1:]), a
        assert all(SCORER.score(a, s)["rougeL"].fmeasure <= 0.7 for s in seeds), a
    reasons = Counter(r["reject_reason"].split(":")[0] for r in rejects)
    assert reasons == st.drops
    for reason in ("near_duplicate", "seed_copy", "too_short", "exact_duplicate"):
        assert reasons[reason] > 0, reasons
    # every planted seed copy (an exact seed text) was caught as a seed copy
    planted = [r for r in rejects if r.get("text") in seeds and not r["reject_reason"].startswith("surplus")]
    assert planted and all(r["reject_reason"].startswith("seed_copy") for r in planted)
    kept_text = {r["id"]: r["text"] for r in kept}
    for r in rejects:
        if r["reject_reason"].startswith("near_duplicate"):
            other = kept_text[r["reject_reason"].rsplit(" ", 1)[1]]
            assert SCORER.score(r["text"], other)["rougeL"].fmeasure > 0.7 and r["text"] != other
    # attribute combos: each label's requests ask for distinct (tone, length) combinations
    combos = defaultdict(list)
    for p in responder.prompts:
        label = re.search(r"^Label: (\S+)", p, re.M).group(1)
        combos[label].append((re.search(r"^- tone: (.+)$", p, re.M).group(1), re.search(r"^- length: (.+)$", p, re.M).group(1)))
    for label, cs in combos.items():
        assert len(cs) >= 3 and len(set(cs)) == len(cs), (label, cs)  # 12 combos > requests per label
    assert len({cs[0] for cs in combos.values()}) > 1  # the order is shuffled per label
    # provenance
    r0 = kept[0]
    assert r0["template"] == "tasks/examples" and len(r0["template_sha"]) == 12 and r0["teacher"] == "test-model"
    assert r0["request_usage"]["total_tokens"] > 0 and len(r0["request_cache_key"]) == 64
    assert set(r0["attributes"]) == {"tone", "length"}
    assert st.requests == srv.stats()["by_endpoint"]["/v1/chat/completions"] and not st.short


def test_label_that_keeps_repeating_itself_stops_at_the_request_cap(make_server):
    same = {lab: [texts[10]] * 3 for lab, texts in load_banking().items()}  # one real text, again and again
    srv = make_server(responder=BankingResponder(same, plant=False))
    rows, st = _run_api(srv, LabelTaskConfig(per_label=5, batch_size=3, max_requests_per_label=3))
    assert st.per_label == {lab: 1 for lab in LABELS}
    assert set(st.short) == set(LABELS) and "cap of 3 requests" in st.short["age_limit"]
    assert srv.stats()["by_endpoint"]["/v1/chat/completions"] == 3 * len(LABELS)
    assert Counter(r["reject_reason"].split(":")[0] for r in rows if "reject_reason" in r)["exact_duplicate"] == 3 * 3 * 5 - 5


# ------------------------------------------------------------------------------------------ the CLI

def _args(tmp_path: Path, srv: TestServer, out: str = "out.jsonl", cache: str = "c.sqlite", *extra: str) -> list[str]:
    return ["generate", "tasks", "--spec", str(SPEC), "-o", str(tmp_path / out), "-n", "10", "--batch-size", "5",
            "-m", "test-model", "--base-url", srv.base_url, "--cache", str(tmp_path / cache), "--max-retries", "0",
            *extra]


def _chat(srv: TestServer) -> int:
    return srv.stats()["by_endpoint"]["/v1/chat/completions"]


def _pairs(path: Path) -> list[tuple[str, str]]:
    return sorted((r["id"], r["text"]) for r in read_jsonl(path))


def test_cli_summary_rerun_sends_nothing_and_order_does_not_matter(tmp_path, make_server):
    srv = make_server(FaultConfig(latency_ms=5, latency_jitter_ms=5), responder=BankingResponder(load_banking()))
    res = run_cli(*_args(tmp_path, srv, "out.jsonl", "c.sqlite", "--summary-json", str(tmp_path / "s.json")))
    assert res.returncode == 0, res.stderr
    assert re.search(r"tasks: 50 rows written .*50/50 kept over 5 labels.*dropped \(.*near_duplicate \d+",
                     res.stderr), res.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["rows_written"] == 50 and summary["requests_sent"] == _chat(srv) and summary["drops"]["seed_copy"] > 0
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert len(rejects) == sum(summary["drops"].values()) and all(r["reject_reason"] for r in rejects)
    out_bytes = (tmp_path / "out.jsonl").read_bytes()
    sent, total = _chat(srv), srv.stats()["requests_total"]
    res = run_cli(*_args(tmp_path, srv))
    assert res.returncode == 0, res.stderr
    assert srv.stats()["requests_total"] == total  # nothing at all, not even the /models preflight
    assert (tmp_path / "out.jsonl").read_bytes() == out_bytes
    assert "0 rows written" in res.stderr and "50 already there" in res.stderr
    # a fresh cache, one request at a time: other completion order, same prompts, same rows
    res = run_cli(*_args(tmp_path, srv, "serial.jsonl", "c2.sqlite", "-c", "1"))
    assert res.returncode == 0, res.stderr
    assert _chat(srv) == 2 * sent
    assert _pairs(tmp_path / "serial.jsonl") == _pairs(tmp_path / "out.jsonl")


def test_cli_teacher_failure_stalls_one_label_then_rerun_completes(tmp_path, make_server):
    responder = BankingResponder(load_banking(), fail_label="pin_blocked")
    srv = make_server(responder=responder)
    res = run_cli(*_args(tmp_path, srv))
    assert res.returncode == 1, res.stderr
    assert "short: pin_blocked: 0/10: request pin_blocked/0 failed" in res.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert Counter(r["label"] for r in rows) == {lab: 10 for lab in LABELS if lab != "pin_blocked"}
    assert any(r["reject_reason"].startswith("teacher_error") for r in read_jsonl(tmp_path / "out.rejects.jsonl"))
    before = _chat(srv)
    responder.fail_label = None
    res = run_cli(*_args(tmp_path, srv))
    assert res.returncode == 0, res.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert Counter(r["label"] for r in rows) == {lab: 10 for lab in LABELS}
    pin_prompts = [p for p in responder.prompts[-(_chat(srv) - before):]]
    assert all("Label: pin_blocked" in p for p in pin_prompts)  # the other labels came from the cache


def test_cli_sigkill_then_rerun_pays_only_for_in_flight(tmp_path, make_server):
    concurrency = 4
    # the reference: one uninterrupted run
    ref_srv = make_server(responder=BankingResponder(load_banking()))
    assert run_cli(*_args(tmp_path, ref_srv, "ref.jsonl", "ref.sqlite")).returncode == 0
    needed = _chat(ref_srv)
    srv = make_server(FaultConfig(latency_ms=120, latency_jitter_ms=60, seed=3), responder=BankingResponder(load_banking()))
    args = synthkd_cmd(*_args(tmp_path, srv, "out.jsonl", "c.sqlite", "-c", str(concurrency)))
    proc = subprocess.Popen(args, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = sigkill_after_first_row(proc, tmp_path / "out.jsonl")
    assert 0 < partial < 50
    res = run_cli(*args[3:])
    assert res.returncode == 0, res.stderr
    ids = [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert len(ids) == len(set(ids)) == 50
    assert _pairs(tmp_path / "out.jsonl") == _pairs(tmp_path / "ref.jsonl")
    extra = _chat(srv) - needed
    assert 0 <= extra <= concurrency, f"{extra} requests paid twice"


def test_cli_budget_stop_exits_3_and_a_larger_budget_finishes_the_same_run(tmp_path, make_server):
    ref_srv = make_server(responder=BankingResponder(load_banking()))
    assert run_cli(*_args(tmp_path, ref_srv, "ref.jsonl", "ref.sqlite")).returncode == 0
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"test-model": {"input": 1.0, "output": 1.0}}))  # USD per 1M tokens
    srv = make_server(responder=BankingResponder(load_banking()))
    res = run_cli(*_args(tmp_path, srv, "out.jsonl", "c.sqlite", "-c", "2", "--prices", str(prices),
                         "--max-cost", "0.0015"))
    assert res.returncode == 3, res.stderr
    assert "budget reached" in res.stderr and "cost this run $0.00" in res.stderr
    first = _chat(srv)
    assert 0 < first < _chat(ref_srv)
    res = run_cli(*_args(tmp_path, srv, "out.jsonl", "c.sqlite", "--prices", str(prices), "--max-cost", "1"))
    assert res.returncode == 0, res.stderr
    assert _pairs(tmp_path / "out.jsonl") == _pairs(tmp_path / "ref.jsonl")
    assert _chat(srv) <= _chat(ref_srv) + 2  # at most the 2 in flight at the stop were paid twice


# ------------------------------------------------------------------------------------------ one label file

def test_per_label_2_asks_for_2_per_request_and_batch_size_still_wins():
    spec = load_task_spec(SPEC)
    assert "Write 2 new" in plan_label_tasks(spec, LabelTaskConfig(per_label=2)).request("age_limit", 0).messages[0]["content"]
    assert "Write 10 new" in plan_label_tasks(spec, LabelTaskConfig(per_label=40)).request("age_limit", 0).messages[0]["content"]
    assert "Write 5 new" in plan_label_tasks(spec, LabelTaskConfig(per_label=2, batch_size=5)).request("age_limit", 0).messages[0]["content"]


def test_out_of_scope_class_is_generated_with_its_own_prompt(tmp_path, make_server):
    """The label file's out_of_scope class: its requests use prompts/tasks/out_of_scope.j2 (the in-scope
    labels listed as what the texts must not be), its rows carry that template, and the label space read
    from the same file offers the class to the classifier."""
    from synthkd.labels import LabelSpace
    from synthkd.testing.banking77_responder import Banking77Responder

    banking = load_banking()
    spec_file = tmp_path / "labels.yaml"
    spec_file.write_text(SPEC.read_text() + "out_of_scope:\n  description: Anything else.\n"
                         "  examples: [Book me a table for two tonight.]\n")
    spec = load_task_spec(spec_file)
    assert spec.out_of_scope == "out_of_scope" and spec.label_names[-1] == "out_of_scope"
    space = LabelSpace.from_file(spec_file)
    assert space.out_of_scope == "out_of_scope" and space.in_scope == LABELS
    plan = plan_label_tasks(spec, LabelTaskConfig(per_label=6, batch_size=6))
    oos_prompt = plan.request("out_of_scope", 0).messages[0]["content"]
    assert "belong to NONE of the labels" in oos_prompt and all(f"- {lab}:" in oos_prompt for lab in LABELS)
    assert "NONE" not in plan.request("age_limit", 0).messages[0]["content"]
    other = [t for lab, texts in banking.items() for t in texts if lab == "card_arrival"]  # stand-ins
    pools = {lab: texts for lab, texts in banking.items() if lab != "card_arrival"}
    pools["out_of_scope"] = other
    srv = make_server(responder=Banking77Responder(pools, plant=False))

    async def go():
        t = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, concurrency=4)
        try:
            return [r async for r in generate_label_examples(t, plan_label_tasks(
                spec, LabelTaskConfig(per_label=6, batch_size=6, only=["age_limit", "out_of_scope"])))]
        finally:
            await t.aclose()

    rows = [r for r in asyncio.run(go()) if "reject_reason" not in r]
    oos = [r for r in rows if r["label"] == "out_of_scope"]
    assert len(oos) == 6 and all(r["template"] == "tasks/out_of_scope" for r in oos)
    assert all(" ".join(r["text"].split()) in {" ".join(t.split()) for t in other} for r in oos), [r["text"] for r in oos]
    assert {r["template"] for r in rows if r["label"] == "age_limit"} == {"tasks/examples"}
