"""PromptMix: groups, α, plan, parsing of noisy generations, and `synthkd generate promptmix` end to end
through the real loopback server, with a scripted teacher that answers with real Banking77 texts
(tests/fixtures/promptmix/scripted_teacher.py)."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

from conftest import read_jsonl, run_cli
from synthkd.labels import LabelSpace, confusion_summary, norm_text
from synthkd.methods.promptmix import (
    PromptMixConfig,
    clean_item,
    draw_alpha,
    load_confusion,
    make_groups,
    parse_items,
    plan_calls,
    promptmix,
)
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.server import FaultConfig

FIX = Path(__file__).resolve().parent / "fixtures" / "promptmix"
sys.path.insert(0, str(FIX))
from scripted_teacher import from_pool_file, norm  # noqa: E402

B8 = FIX / "banking77_8.yaml"
NLUPP = FIX / "nlupp_banking.yaml"


def _space(p=B8) -> LabelSpace:
    return LabelSpace.from_file(p)


def _responder(**kw):
    return from_pool_file(FIX / "banking77_8_pool.jsonl", [FIX / "banking77_8_test.jsonl"], **kw)


def _requests(srv) -> int:
    return srv.stats()["by_endpoint"].get("/v1/chat/completions", 0)


# ------------------------------------------------------------------ planning


def test_alpha_in_range_beta_skewed_and_seeded():
    alphas = [draw_alpha(0, lab, c) for lab in _space().labels for c in range(250)]
    assert all(0.5 <= a < 1.0 for a in alphas)
    assert all(round(a, 2) == a for a in alphas)
    # Beta(2, 1) on [0.5, 1): mean 5/6 and 3/4 of draws above 0.75; uniform would give 0.75 and 1/2
    assert 0.81 < statistics.mean(alphas) < 0.86
    assert 0.70 < sum(a > 0.75 for a in alphas) / len(alphas) < 0.80
    assert draw_alpha(0, "card_arrival", 3) == draw_alpha(0, "card_arrival", 3)
    assert [draw_alpha(1, "x", c) for c in range(20)] != [draw_alpha(2, "x", c) for c in range(20)]
    flat = [draw_alpha(0, "x", c, (1.0, 1.0)) for c in range(2000)]
    assert statistics.mean(flat) < statistics.mean(alphas) - 0.05


def test_groups_partition_and_similarity():
    s = _space()
    g = make_groups(s, 4, "similar")
    assert sorted(x for grp in g for x in grp) == sorted(s.labels) and [len(x) for x in g] == [4, 4]
    ex = next(grp for grp in g if "exchange_rate" in grp)
    assert "card_payment_wrong_exchange_rate" in ex  # the two exchange-rate intents are lexically closest
    r1, r2 = make_groups(s, 3, "random", seed=1), make_groups(s, 3, "random", seed=2)
    assert r1 == make_groups(s, 3, "random", seed=1) and r1 != r2
    assert sorted(map(len, r1)) == [2, 3, 3]
    assert [len(x) for x in make_groups(s, 7, "similar")] == [8]  # a leftover singleton joins a group
    n = _space(NLUPP)
    g = make_groups(n, 5, "similar")
    assert sorted(x for grp in g for x in grp) == sorted(n.labels) and min(map(len, g)) >= 2


def test_plan_is_deterministic_and_follows_the_paper_prompt():
    s = _space()
    cfg = PromptMixConfig(per_label=10, examples_per_call=4, group_size=4)
    calls = plan_calls(s, cfg)
    assert calls == plan_calls(s, cfg)
    assert len(calls) == 8 * 3 and [c.m for c in calls[:3]] == [4, 4, 2]
    for c in calls:
        assert c.a != c.b and c.b in c.group and c.a in c.group
        assert f'belong {round(c.alpha * 100)}% to the class "{c.a}" and {100 - round(c.alpha * 100)}% to the class "{c.b}"' in c.prompt
        for lab in (c.a, c.b):  # descriptions and examples of both
            assert f"{lab}: {s.description(lab)}" in c.prompt
            assert all(f'Example: "{e}"' in c.prompt for e in s.examples[lab])
    partners = Counter(c.b for c in calls if c.a == "card_arrival")
    assert len(partners) == 3  # the partner cycles through the group
    other = plan_calls(s, PromptMixConfig(per_label=10, seed=5))
    assert [c.alpha for c in other] != [c.alpha for c in calls]


def test_pairs_by_the_teachers_confusion_when_relabel_rows_exist(tmp_path):
    """Relabel rows (the relabel op's ``relabel: {intended, teacher}``, or PromptMix's own intended/relabeled
    labels) say which classes the teacher confuses: those are grouped and paired first, whatever their
    descriptions; the rows say why (pair_by)."""
    s = _space()
    by_desc = make_groups(s, 4, "similar")
    assert not any({"exchange_rate", "card_arrival"} <= set(g) for g in by_desc)  # unlike by description
    rel = tmp_path / "relabelled.jsonl"
    rows = ([{"id": f"a{i}", "relabel": {"intended": "exchange_rate", "teacher": "card_arrival"}} for i in range(3)]
            + [{"id": "b", "intended_label": "card_arrival", "relabeled_label": "exchange_rate"},
               {"id": "c", "relabel": {"intended": "exchange_rate", "teacher": "exchange_rate"}},  # agreement: no signal
               {"id": "d", "relabel": {"intended": "nope", "teacher": "exchange_rate"}},       # unknown class
               {"id": "e", "intended_label": "card_linking", "relabeled_label": "activate_my_card"}])
    rel.write_text("".join(json.dumps(r) + "\n" for r in rows))
    conf = load_confusion(rel, s)
    assert conf == {("card_arrival", "exchange_rate"): 4, ("activate_my_card", "card_linking"): 1}
    groups = make_groups(s, 4, "similar", confusion=conf)
    assert any({"exchange_rate", "card_arrival"} <= set(g) for g in groups)
    assert any({"card_linking", "activate_my_card"} <= set(g) for g in groups)
    assert sorted(x for g in groups for x in g) == sorted(s.labels)
    cfg = PromptMixConfig(per_label=10, examples_per_call=4, group_size=4)
    calls = plan_calls(s, cfg, conf)
    first = {c.a: c for c in calls if c.call_index == 0}
    assert (first["exchange_rate"].b, first["exchange_rate"].pair_by) == ("card_arrival", "confusion")
    assert (first["card_arrival"].b, first["card_arrival"].pair_by) == ("exchange_rate", "confusion")
    assert {c.pair_by for c in calls if {c.a, c.b} == {"exchange_rate", "card_delivery_estimate"}} <= {"description"}
    assert {c.pair_by for c in plan_calls(s, cfg)} == {"description"}  # no relabel data
    assert {c.pair_by for c in plan_calls(s, PromptMixConfig(per_label=10, grouping="random"))} == {"random"}


# ------------------------------------------------------------------ parsing


def test_parse_items_strips_numbering_and_mix_annotations():
    text = (
        "Here are 6 examples:\n\n"
        "1. I am still waiting on my card? (70% card_arrival, 30% card_linking)\n"
        '2) "How do I link my new card?" [70% card arrival / 30% card linking]\n'
        "Example 3: When will it arrive - 80% card_arrival, 20% card_linking\n"
        "- **Where is my card** - 75% A, 25% B\n"
        "5. Is a 3% fee normal for this card?\n"
        "6. 80% card_arrival, 20% card_linking: Card not here yet\n"
        "7. one too many\n\nHope this helps!"
    )
    items = parse_items(text, 6, ("card_arrival", "card_linking"))
    assert items == ["I am still waiting on my card?", "How do I link my new card?", "When will it arrive",
                     "Where is my card", "Is a 3% fee normal for this card?", "Card not here yet"]
    assert parse_items("first line\nsecond line\nThe list:") == ["first line", "second line"]
    assert clean_item("3. 'Why (2%) fee?'") == "Why (2%) fee?"


# ------------------------------------------------------------------ end to end


def test_promptmix_method_through_server(make_server):
    responder = _responder()
    srv = make_server(FaultConfig(latency_ms=2), responder=responder)
    s = _space()
    cfg = PromptMixConfig(per_label=8, examples_per_call=4, group_size=4, relabel_candidates=3)

    async def go():
        t = OpenAICompatibleTeacher("test-model", base_url=srv.base_url, concurrency=8)
        try:
            return [r async for r in promptmix(s, t, cfg)]
        finally:
            await t.aclose()

    rows = asyncio.run(go())
    kept = [r for r in rows if "reject_reason" not in r]
    rejected = [r for r in rows if "reject_reason" in r]
    seeds = s.seed_texts()
    assert len(rows) == 64  # 8 classes x 8 items, every item accounted for
    assert {r["pair_by"] for r in rows if "text" in r} == {"description"}  # no relabel data: by description
    assert kept and all("%" not in r["text"] and not re.match(r"^\s*(\d|-|Example)", r["text"]) for r in kept)
    assert all(norm_text(r["text"]) not in seeds for r in kept)
    assert Counter(r["reject_reason"].split(":")[0] for r in rejected)["seed copy"] >= 1
    assert len({norm_text(r["text"]) for r in kept}) == len(kept)
    for r in kept:
        a, b = r["pair"]
        assert r["intended_label"] == a and 0.5 <= r["alpha"] < 1 and b in r["group"]
        assert a in r["relabel_candidates"] and b in r["relabel_candidates"] and len(r["relabel_candidates"]) <= 5
        assert r["label"] == r["relabeled_label"]  # policy overwrite
        assert r["template"]["template"] == "promptmix/generate" and r["relabel_template"]["template"] == "relabel/classify"
        assert r["teacher"] == "test-model"
    # generated texts are real Banking77 texts of class A or B; the responder answers their true class
    assert all(r["relabeled_label"] == responder.gold[norm(r["text"])] for r in kept)
    assert any(r["relabeled_label"] != r["intended_label"] for r in kept)  # the B share got relabeled
    assert _requests(srv) == 16 + len([r for r in rows if "relabeled_label" in r])


def _pm_args(tmp_path, srv, labels=B8, out="pm.jsonl", *extra):
    return ["generate", "promptmix", "--labels", str(labels), "--output", str(tmp_path / out), "--per-class", "6",
            "--teacher", "test-model", "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"),
            "--group-size", "4", "--examples-per-call", "3", *extra]


def test_cli_promptmix_summary_rerun_policies_and_bad_label_space(tmp_path, make_server):
    responder = _responder(unmappable_rate=0.05)
    srv = make_server(responder=responder)
    args = _pm_args(tmp_path, srv, B8, "pm.jsonl", "--summary-json", str(tmp_path / "s.json"))
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    out = read_jsonl(tmp_path / "pm.jsonl")
    rej = read_jsonl(tmp_path / "pm.rejects.jsonl")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["calls_planned"] == summary["calls_answered"] == 16 and summary["parsed"] == 48
    assert len(out) + len(rej) == 48 and summary["written"] == len(out) > 20
    relabeled = out + [r for r in rej if "relabeled_label" in r]
    expected = confusion_summary((r["intended_label"], r["relabeled_label"]) for r in relabeled)
    assert summary["confusion"] == expected
    assert f"agreement {100 * expected['agreement']:.1f}% ({expected['agree']}/{expected['compared']}" in res.stderr
    assert f"done: {len(out)} rows written" in res.stderr and "seed copy" in res.stderr
    assert any(r["reject_reason"].startswith("relabel failed: unmappable answer") for r in rej)
    sent = _requests(srv)

    # rerun: zero requests, zero rows added; a fresh output gets identical rows from the cache
    res = run_cli(*args)
    assert res.returncode == 0 and _requests(srv) == sent
    assert len(read_jsonl(tmp_path / "pm.jsonl")) == len(out) and "0 rows written" in res.stderr
    keep = run_cli(*_pm_args(tmp_path, srv, B8, "keep.jsonl", "--policy", "keep"))
    drop = run_cli(*_pm_args(tmp_path, srv, B8, "drop.jsonl", "--policy", "drop-disagreeing"))
    assert keep.returncode == 0 and drop.returncode == 0 and _requests(srv) == sent
    k, d = read_jsonl(tmp_path / "keep.jsonl"), read_jsonl(tmp_path / "drop.jsonl")
    assert sorted(r["id"] for r in k) == sorted(r["id"] for r in relabeled)  # keep writes unmappable rows too
    assert all(r["label"] == r["intended_label"] for r in k)
    assert all(r["label"] == r["intended_label"] == r["relabeled_label"] for r in d)
    assert len(d) == expected["agree"] < len(out)

    # a bad label space fails before any request
    (tmp_path / "bad.yaml").write_text("labels:\n  card_arrival: waiting for a card\nexamples:\n  card_arival: [hi]\n")
    res = run_cli(*_pm_args(tmp_path, srv, tmp_path / "bad.yaml", "bad.jsonl"))
    assert res.returncode == 2 and "bad.yaml:4: field 'examples.card_arival'" in res.stderr
    res = run_cli(*_pm_args(tmp_path, srv, B8, "bad.jsonl", "--policy", "sometimes"))
    assert res.returncode == 2 and "--policy must be one of" in res.stderr
    (tmp_path / "one.yaml").write_text("labels: [only_one]\n")
    res = run_cli(*_pm_args(tmp_path, srv, tmp_path / "one.yaml", "bad.jsonl"))
    assert res.returncode == 2 and "at least 2 classes" in res.stderr
    assert _requests(srv) == sent and not (tmp_path / "bad.jsonl").exists()


def test_cli_promptmix_generation_errors_exit_1_and_resume(tmp_path, make_server):
    srv = make_server(FaultConfig(error_rate=1.0), responder=_responder())
    args = _pm_args(tmp_path, srv, B8, "pm.jsonl", "--max-retries", "0", "--classes", "card_arrival,exchange_rate")
    res = run_cli(*args)
    assert res.returncode == 1, res.stderr
    rej = read_jsonl(tmp_path / "pm.rejects.jsonl")
    assert len(rej) == 4 and all(r["reject_reason"].startswith("teacher error") for r in rej)
    srv.configure(error_rate=0.0)
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    out = read_jsonl(tmp_path / "pm.jsonl")
    assert out and {r["intended_label"] for r in out} == {"card_arrival", "exchange_rate"}


def test_cli_promptmix_sigkill_then_rerun_pays_only_for_in_flight(tmp_path, make_server):
    """Kill the CLI as soon as its first row is written (relabel phase), rerun: same rows, at most `concurrency`
    extra calls."""
    import subprocess

    from conftest import cli_env, sigkill_after_first_row, synthkd_cmd

    full_srv = make_server(responder=_responder())
    ref = run_cli(*_pm_args(tmp_path, full_srv, B8, "ref.jsonl", "--cache", str(tmp_path / "ref.sqlite")))
    assert ref.returncode == 0, ref.stderr
    total = _requests(full_srv)
    rows = len(read_jsonl(tmp_path / "ref.jsonl"))

    srv = make_server(FaultConfig(latency_ms=30), responder=_responder())
    args = _pm_args(tmp_path, srv, B8, "pm.jsonl", "--concurrency", "4")
    proc = subprocess.Popen(synthkd_cmd(*args), env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = sigkill_after_first_row(proc, tmp_path / "pm.jsonl")  # in the relabel phase: rows are written
    assert 0 < partial < rows
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    got = {r["id"]: (r["text"], r["label"]) for r in read_jsonl(tmp_path / "pm.jsonl")}
    want = {r["id"]: (r["text"], r["label"]) for r in read_jsonl(tmp_path / "ref.jsonl")}
    assert got == want
    assert 0 <= _requests(srv) - total <= 4


def test_relabel_step_of_a_reasoning_teacher_gets_the_budget_the_user_gives(tmp_path, make_server):
    """o4-mini's max_completion_tokens covers its hidden reasoning: with no room to reason
    (--reasoning-budget 0) the relabel step's 32-token default is spent inside the reasoning (every row a
    truncated_in_reasoning reject); the reasoning families' default budget, or --relabel-max-tokens, fix it."""
    from synthkd.testing.banking77_responder import Banking77Responder

    labels = Path(__file__).resolve().parents[1] / "data" / "banking77" / "labels.yaml"
    srv = make_server(FaultConfig(), responder=Banking77Responder.from_dir(), flavor="openai-reasoning")
    base = ["generate", "promptmix", "--labels", str(labels), "--per-class", "2", "--group-size", "4",
            "--examples-per-call", "3", "-m", "o4-mini", "--base-url", srv.base_url, "--no-cache"]
    res = run_cli(*base, "-o", str(tmp_path / "tight.jsonl"), "--reasoning-budget", "0")
    rej = read_jsonl(tmp_path / "tight.rejects.jsonl")
    assert not (tmp_path / "tight.jsonl").exists() or read_jsonl(tmp_path / "tight.jsonl") == [], res.stderr
    assert any("truncated_in_reasoning" in r.get("relabel_reason", "") for r in rej)
    for name, extra in (("default", []), ("wide", ["--reasoning-budget", "0", "--relabel-max-tokens", "1024"])):
        res = run_cli(*base, "-o", str(tmp_path / f"{name}.jsonl"), *extra)
        assert res.returncode == 0, res.stderr
        out = read_jsonl(tmp_path / f"{name}.jsonl")
        assert out and all(r["relabeled_label"] for r in out)
        assert not [r for r in read_jsonl(tmp_path / f"{name}.rejects.jsonl")
                    if "teacher error" in str(r.get("relabel_reason"))]
    assert srv.stats()["by_outcome"]["bad_request"] == 0
