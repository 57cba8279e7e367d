"""Reasoning traces as data: the replay teacher returns a recorded trace, method rows keep it, and
``generate rationales --rationale-source`` takes the rationale from it.

The reasoning teacher is a ReplayTeacher over ``fixtures/reasoning/svamp_r1_style.jsonl`` (R1-style
traces written by hand for the first five SVAMP test questions; see that folder's README).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli
from synthkd.data_tools.rationales_replay import convert
from synthkd.jsonl_io import InputError
from synthkd.methods.rationales import NO_TRACE, generate_rationales
from synthkd.teachers import TeacherRequest
from synthkd.teachers.replay import ReplayTeacher

FX = Path(__file__).parent / "fixtures"
R1 = FX / "reasoning" / "svamp_r1_style.jsonl"
RECORDED = [json.loads(line) for line in R1.read_text(encoding="utf-8").splitlines()]


def _svamp_inputs(n: int = 5) -> list[dict]:
    rec = FX / "recorded" / "svamp_test_head100"
    raw = [json.loads(line) for line in (rec / "gold.jsonl").read_text().splitlines() if line.strip()]
    comps = json.loads((rec / "completions.json").read_text())
    inputs, _ = convert("svamp", "test", raw[:n], comps[:n])
    return inputs


def _stream(teacher, reqs):
    async def go():
        async def gen():
            for r in reqs:
                yield r

        return [r async for r in teacher.stream(gen())]

    return asyncio.run(go())


def _rationales(rows, teacher, **kw) -> list[dict]:
    async def go():
        return [r async for r in generate_rationales(rows, teacher, kind="math", n_demos=0, **kw)]

    out = asyncio.run(go())
    return sorted(out, key=lambda r: r["id"])


# ------------------------------------------------------------------ ReplayTeacher


def test_replay_returns_the_recorded_trace_and_its_tokens():
    t = ReplayTeacher.from_jsonl(R1)
    reqs = [TeacherRequest.user(str(i), f"Q: {r['question']}\nA:") for i, r in enumerate(RECORDED)]
    got = {r.key: r for r in _stream(t, reqs)}
    first = got["0"]
    assert first.text == RECORDED[0]["completion"]
    assert first.reasoning == RECORDED[0]["reasoning"]
    assert first.usage.reasoning_tokens == 41  # the recorded count
    assert first.usage.completion_tokens == len(first.text.split()) + 41  # the trace is part of the output
    fourth = got["3"]  # a trace without a recorded count: its words
    assert fourth.usage.reasoning_tokens == len(RECORDED[3]["reasoning"].split())
    last = got["4"]  # no trace recorded
    assert last.reasoning is None and last.usage.reasoning_tokens == 0
    assert last.usage.completion_tokens == len(last.text.split())
    assert t.stats.completion_tokens == sum(r.usage.completion_tokens for r in got.values())


def test_replay_reasonings_per_sample_and_bad_shapes(tmp_path):
    p = tmp_path / "rec.jsonl"
    p.write_text(json.dumps({"question": "What is two plus two?", "completions": ["4", "5"],
                             "reasonings": ["2 + 2 = 4", None], "reasoning_tokens": [7, 0]}) + "\n")
    t = ReplayTeacher.from_jsonl(p)
    req = TeacherRequest.user("k", "Q: What is two plus two?")
    res = _stream(t, [req, req.sample(1)])
    by = {r.request.sample_index: r for r in res}
    assert (by[0].reasoning, by[0].usage.reasoning_tokens) == ("2 + 2 = 4", 7)
    assert (by[1].reasoning, by[1].usage.reasoning_tokens) == (None, 0)

    p.write_text(json.dumps({"question": "q?", "completions": ["4", "5"], "reasoning": "one"}) + "\n")
    with pytest.raises(InputError, match=r"rec.jsonl:1: field 'reasoning': one trace for 2 completions"):
        ReplayTeacher.from_jsonl(p)
    p.write_text(json.dumps({"question": "q?", "completion": "4", "reasoning_tokens": -1}) + "\n")
    with pytest.raises(InputError, match="reasoning_tokens"):
        ReplayTeacher.from_jsonl(p)


# ------------------------------------------------------------------ rationales


def test_rationale_source_reasoning_takes_the_trace_and_reads_the_answer_from_the_text():
    rows = _rationales(_svamp_inputs(4), ReplayTeacher.from_jsonl(R1), rationale_source="reasoning")
    assert [r["id"] for r in rows] == [f"svamp-test-{i}" for i in range(4)]
    for r, rec in zip(rows, RECORDED):
        assert r["rationale"] == rec["reasoning"]
        assert r["reasoning"] == rec["reasoning"]
        assert r["samples"][0]["reasoning"] == rec["reasoning"]
        assert r["samples"][0]["text"] == rec["completion"]
    assert [r["answer"] for r in rows] == [450, 1, 22, 2]
    assert all(r["correct"] for r in rows)
    assert rows[0]["usage"]["reasoning_tokens"] == 41
    assert rows[0]["usage"]["completion_tokens"] == 41 + len(RECORDED[0]["completion"].split())


def test_rationale_source_text_keeps_todays_rationale_and_the_trace_beside_it():
    rows = _rationales(_svamp_inputs(5), ReplayTeacher.from_jsonl(R1))  # default: text
    assert rows[0]["rationale"] == "They planted 10 seeds in each of the 45 flower beds, so 10 * 45 = 450 seeds."
    assert rows[0]["reasoning"] == RECORDED[0]["reasoning"]
    # a result without a trace: no reasoning field at all (rows of plain teachers are unchanged)
    assert "reasoning" not in rows[4] and "reasoning" not in rows[4]["samples"][0]
    assert "reasoning_tokens" not in rows[4]["usage"]
    assert rows[4]["answer"] == 3 and rows[4]["correct"]


def test_rationale_source_both_joins_trace_then_text_rationale():
    rows = _rationales(_svamp_inputs(1), ReplayTeacher.from_jsonl(R1), rationale_source="both")
    assert rows[0]["rationale"] == (RECORDED[0]["reasoning"] + "\n\n"
                                    "They planted 10 seeds in each of the 45 flower beds, so 10 * 45 = 450 seeds.")


@pytest.mark.parametrize("source", ["reasoning", "both"])
def test_no_trace_under_reasoning_source_is_a_reject_row(source):
    rows = _rationales(_svamp_inputs(5), ReplayTeacher.from_jsonl(R1), rationale_source=source)
    assert "reject_reason" not in rows[0]
    assert rows[4]["id"] == "svamp-test-4"
    assert rows[4]["reject_reason"] == NO_TRACE
    assert "use --rationale-source text" in rows[4]["reject_reason"]


def test_self_consistency_votes_on_the_answer_text_not_the_trace(tmp_path):
    q = _svamp_inputs(1)[0]
    p = tmp_path / "rec.jsonl"
    # three samples: the traces all end on 450, but the answer texts say 450, 451, 450
    p.write_text(json.dumps({"question": q["question"], "completions": [
        "The answer is 450.", "The answer is 451.", "The answer is 450."],
        "reasonings": ["think A: 450", "think B: 450", "think C: 450"]}) + "\n")
    rows = _rationales([q], ReplayTeacher.from_jsonl(p), rationale_source="reasoning", samples=3, temperature=0.7)
    r = rows[0]
    assert r["answer"] == 450 and r["agreement"] == round(2 / 3, 6)
    assert r["votes"] == [{"answer": 450, "count": 2}, {"answer": 451, "count": 1}]
    assert r["rationale"] == "think A: 450" and r["reasoning"] == "think A: 450"
    assert [s["reasoning"] for s in r["samples"]] == ["think A: 450", "think B: 450", "think C: 450"]


def test_rationalization_keeps_both_traces(tmp_path):
    q = _svamp_inputs(1)[0]
    p = tmp_path / "rec.jsonl"
    # first attempt wrong (451), the hinted retry right (450); matched by the question in both prompts
    p.write_text(json.dumps({"question": q["question"], "completions": ["The answer is 451.", "The answer is 450."],
                             "reasonings": ["wrong trace", "right trace"]}) + "\n")
    t = ReplayTeacher.from_jsonl(p)
    # the rationalize request is sample 0 of a different key: replay answers it with sample 0, so
    # give the rationalization its own recording keyed by the hinted prompt instead
    t2 = ReplayTeacher([(q["question"], [r]) for r in t.match_recorded(q["question"])[1:]])
    rows = _rationales([q], _Seq([t, t2]), rationale_source="reasoning", rationalize=True)
    r = rows[0]
    assert r["rationalized"] and r["rationalization"]["reached_gold"]
    assert r["first_attempt"]["reasoning"] == "wrong trace" and r["first_attempt"]["rationale"] == "wrong trace"
    assert r["rationalization"]["reasoning"] == "right trace"
    assert r["reasoning"] == "right trace" and r["rationale"] == "right trace"


class _Seq(ReplayTeacher):
    """First-attempt requests to the first teacher, rationalizations to the second."""

    def __init__(self, teachers):  # noqa: D107
        self.__dict__.update(teachers[0].__dict__)
        self._teachers = teachers

    async def stream(self, requests):
        async for req in requests:
            t = self._teachers[1 if req.meta.get("stage") == "rationalize" else 0]

            async def one(r=req):
                yield r

            async for res in t.stream(one()):
                yield res


def test_cli_rationale_source_reasoning_over_replay(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in _svamp_inputs(5)))
    out = tmp_path / "out.jsonl"
    res = run_cli("generate", "rationales", "-i", str(inp), "-o", str(out), "--kind", "math", "--n-demos", "0",
                  "--teacher", f"replay:{R1}", "--rationale-source", "reasoning")
    assert res.returncode == 1, res.stderr  # one row rejected: no trace
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert rows["svamp-test-0"]["rationale"] == RECORDED[0]["reasoning"]
    rejects = [r for p in tmp_path.glob("*reject*") for r in read_jsonl(p)]
    assert [r["id"] for r in rejects] == ["svamp-test-4"] and rejects[0]["reject_reason"] == NO_TRACE
    bad = run_cli("generate", "rationales", "-i", str(inp), "-o", str(tmp_path / "o2.jsonl"), "--kind", "math",
                  "--teacher", f"replay:{R1}", "--rationale-source", "trace")
    assert bad.returncode == 2 and "rationale-source" in bad.stderr
