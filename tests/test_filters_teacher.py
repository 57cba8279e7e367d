"""The teacher operators (judge, relabel) through the real loopback server and the real
OpenAI-compatible teacher: scripted responders answer from the prompt, the test recomputes what
each row should get independently and checks the operator's decisions, order and accounting."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli
from synthkd.filters.chain import CleanPaths, clean_file
from synthkd.filters.op_config import parse_ops
from synthkd.scores import parse_score
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.server import FaultConfig, prompt_text_of

FIX = Path(__file__).resolve().parent / "fixtures" / "filters"
SPACE = FIX / "banking77_5_space.yaml"


def clean(tmp_path: Path, rows: list[dict], ops: list[dict], srv, **kw):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = CleanPaths(tmp_path / "out.jsonl", tmp_path / "rej.jsonl", tmp_path / "f.json", tmp_path / "f.md")
    factory = lambda: OpenAICompatibleTeacher("test-model", base_url=srv.base_url, concurrency=8, max_retries=3)  # noqa: E731
    funnel = asyncio.run(clean_file(inp, parse_ops(ops), paths, progress=False, teacher_factory=factory, **kw))
    return funnel, read_jsonl(paths.output), read_jsonl(paths.rejects)


# ------------------------------------------------------------------ judge


def true_score(output: str) -> int | None:
    """The scripted judge's opinion: longer answers score higher; refusals score 2; 'TBD' is unscorable."""
    if "TBD" in output:
        return None
    if re.search(r"(?i)as an ai|i do not feel comfortable|i'm sorry, but", output):
        return 2
    return min(10, 3 + len(output.split()) // 40)


def judge_responder(endpoint: str, body: dict) -> str:
    prompt = prompt_text_of(body)
    out = re.search(r"Response:\n<<<\n(.*)\n>>>", prompt, re.S).group(1)
    n = true_score(out)
    if n is None:
        return "I cannot tell how good this is."
    style = len(out) % 3
    return [f"The response is relevant and mostly complete.\nScore: {n}",
            f"On a scale of 1-10 I would give it {n}/10.",
            f"Clear enough.\n\n**Score:** {n}"][style]


def judge_rows() -> list[dict]:
    rows = read_jsonl(FIX / "alpaca_eval_outputs_slice.jsonl")[:60]
    rows[5]["completion"] = "TBD"
    return [{"id": r["id"], "input": r["instruction"], "completion": r["completion"]} for r in rows]


def test_parse_score_forms():
    assert parse_score("Score: 7") == (7.0, None)
    assert parse_score("On a 1-10 scale it is decent. Score: 8/10") == (8.0, None)
    assert parse_score("I'd rate it 6 out of 10.") == (6.0, None)
    assert parse_score("**Score:** 9") == (9.0, None)
    assert parse_score("Rating: 4") == (4.0, None)
    assert parse_score("5") == (5.0, None)
    assert parse_score("Score: 12")[0] is None and parse_score("no number here")[0] is None


def test_judge_threshold_through_the_test_server(tmp_path, make_server):
    srv = make_server(FaultConfig(latency_ms=5, latency_jitter_ms=5), responder=judge_responder)
    rows = judge_rows()
    funnel, out, rej = clean(tmp_path, rows, [{"op": "judge", "threshold": 6}], srv)
    expected = [r["id"] for r in rows if (true_score(r["completion"]) or 0) >= 6]
    assert [r["id"] for r in out] == expected  # input order, despite completion order
    assert all(r["judge"]["score"] == true_score(r["completion"]) for r in out)
    assert all(r["judge"]["template"] == "judge/score" for r in out)
    reasons = Counter(r["reject_reason"] for r in rej)
    assert reasons["unparsed score"] == 1 and reasons["below threshold"] == len(rows) - len(expected) - 1
    assert srv.stats()["by_endpoint"]["/v1/chat/completions"] == 60
    extra = funnel.stages[1].extra
    assert extra["unparsed"] == 1 and sum(extra["score_histogram"].values()) == 59


def test_judge_top_fraction(tmp_path, make_server):
    srv = make_server(FaultConfig(latency_ms=2), responder=judge_responder)
    rows = judge_rows()
    _, out, rej = clean(tmp_path, rows, [{"op": "judge", "top_fraction": 0.25}], srv)
    scored = [(true_score(r["completion"]), i) for i, r in enumerate(rows) if true_score(r["completion"]) is not None]
    k = math.ceil(0.25 * len(scored))
    top = sorted(scored, key=lambda t: (-t[0], t[1]))[:k]
    assert [r["id"] for r in out] == [rows[i]["id"] for i in sorted(i for _, i in top)]
    assert len(out) + len(rej) == 60
    assert {r["reject_reason"] for r in rej} == {"below top fraction", "unparsed score"}


def test_judge_via_cli_and_rerun_from_cache(tmp_path, make_server):
    srv = make_server(FaultConfig(latency_ms=2), responder=judge_responder)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in judge_rows()[30:50]))  # item 39 is a refusal
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- op: refusal\n- op: judge\n  threshold: 5\n")
    args = ["clean", "run", "--input", str(inp), "--config", str(cfg), "--output", str(tmp_path / "o.jsonl"),
            "--teacher", "test-model", "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite")]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    sent = srv.stats()["by_endpoint"]["/v1/chat/completions"]
    refused = len(read_jsonl(tmp_path / "o.rejects.jsonl"))
    assert 0 < sent < 20
    res2 = run_cli(*args)
    assert res2.returncode == 0 and srv.stats()["by_endpoint"]["/v1/chat/completions"] == sent  # all cached
    assert len(read_jsonl(tmp_path / "o.rejects.jsonl")) == refused
    report = json.loads((tmp_path / "o.funnel.json").read_text())
    assert report["stages"][2]["details"]["cached_calls"] == sent
    # a judge with no teacher is a clear error before anything is read
    res3 = run_cli("clean", "run", "--input", str(inp), "--config", str(cfg), "--output", str(tmp_path / "x.jsonl"))
    assert res3.returncode == 2 and "need a teacher" in res3.stderr


# ------------------------------------------------------------------ relabel


def teacher_label(text: str) -> str | None:
    t = text.lower()
    if "exchange" in t or "rate" in t or "currenc" in t:
        return "exchange_rate"
    if "stolen" in t or "lost" in t or "missing" in t:
        return "lost_or_stolen_card"
    if "top up" in t or "top-up" in t or "topup" in t or "top-up" in t:
        return "top_up_failed"
    if "withdraw" in t or "atm" in t or "cash" in t:
        return "cash_withdrawal_charge"
    if "card" in t:
        return "card_arrival"
    return None


def relabel_responder(endpoint: str, body: dict) -> str:
    prompt = prompt_text_of(body)
    text = re.search(r'Text: "(.*)"\n\nWhich class', prompt, re.S).group(1)
    lab = teacher_label(text)
    if lab is None:
        return "I am not sure."
    return f"The class is {lab}." if len(text) % 2 else lab


@pytest.mark.parametrize("policy", ["drop", "overwrite", "keep"])
def test_relabel_policies_through_the_test_server(tmp_path, make_server, policy):
    srv = make_server(FaultConfig(latency_ms=3, latency_jitter_ms=3), responder=relabel_responder)
    rows = read_jsonl(FIX / "banking77_5_test40.jsonl")
    funnel, out, rej = clean(tmp_path, rows, [{"op": "relabel", "label_space": str(SPACE), "policy": policy}], srv)
    teacher = {r["id"]: teacher_label(r["text"]) for r in rows}
    unmapped = {i for i, t in teacher.items() if t is None}
    agree = {r["id"] for r in rows if teacher[r["id"]] == r["label"]}
    assert unmapped and agree and len(agree) < 40 - len(unmapped)  # the scripted teacher disagrees sometimes
    assert len(out) + len(rej) == 40
    by_reason = {}
    for r in rej:
        by_reason.setdefault(r["reject_reason"], set()).add(r["id"])
    assert by_reason.pop("teacher label unmapped") == unmapped
    if policy == "drop":
        assert [r["id"] for r in out] == [r["id"] for r in rows if r["id"] in agree]
        assert by_reason == {"label disagrees": {r["id"] for r in rows} - agree - unmapped}
    else:
        assert not by_reason and len(out) == 40 - len(unmapped)
    for r in out:
        info = r["relabel"]
        orig = next(x for x in rows if x["id"] == r["id"])
        assert info["intended"] == orig["label"] and info["teacher"] == teacher[r["id"]]
        assert r["label"] == (teacher[r["id"]] if policy == "overwrite" else orig["label"])
        assert info["action"] == ("overwritten" if policy == "overwrite" and not info["agree"] else "kept")
    conf = funnel.stages[1].extra["confusion"]
    assert conf["agree"] == len(agree) and conf["unmapped"] == len(unmapped)
    assert conf["compared"] == 40 - len(unmapped)
    md = (tmp_path / "f.md").read_text()
    assert "| intended \\ teacher |" in md and "agreement" in md
    assert srv.stats()["by_endpoint"]["/v1/chat/completions"] == 40


def test_relabel_strict_missing_text_is_an_error_before_any_request(tmp_path, make_server):
    srv = make_server(FaultConfig(), responder=relabel_responder)
    rows = read_jsonl(FIX / "banking77_5_test40.jsonl")[:5]
    del rows[3]["text"]
    from synthkd.jsonl_io import InputError

    with pytest.raises(InputError, match=r"in\.jsonl:4: row id 'b77-test-3': field 'text': missing \(needed by operator 'relabel'\)"):
        clean(tmp_path, rows, [{"op": "relabel", "label_space": str(SPACE)}], srv)
    assert srv.stats()["by_endpoint"].get("/v1/chat/completions", 0) == 0
    d = tmp_path / "lenient"
    d.mkdir()
    _, out, rej = clean(d, rows, [{"op": "relabel", "label_space": str(SPACE), "policy": "keep"}], srv, strict=False)
    assert [r["id"] for r in rej if r["reject_reason"] == "field 'text' missing"] == ["b77-test-3"]
    assert len(out) + len(rej) == 5
