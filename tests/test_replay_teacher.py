"""ReplayTeacher: answers from real recorded PaLM-540B completions, matched inside rendered prompts."""

from __future__ import annotations

import asyncio
import json

import pytest

from synthkd.jsonl_io import InputError
from synthkd.teachers import TeacherFatalError, TeacherRequest
from synthkd.teachers.factory import TeacherSpec, make_teacher
from synthkd.teachers.replay import ReplayTeacher


def _svamp_records(n=30):
    """Real SVAMP questions and PaLM-540B completions (fixture copied from ../shared/data)."""
    from pathlib import Path

    fx = Path(__file__).parent / "fixtures" / "recorded" / "svamp_test_head100"
    comps = json.loads((fx / "completions.json").read_text())
    gold = [json.loads(line) for line in (fx / "gold.jsonl").read_text().splitlines() if line.strip()]
    return list(zip([g["input"] for g in gold], comps))[:n]


def _fields(rec):
    return rec


def _run(teacher, reqs):
    async def go():
        async def gen():
            for r in reqs:
                yield r

        return [r async for r in teacher.stream(gen())]

    return asyncio.run(go())


def test_replay_matches_target_question_not_demos(tmp_path):
    recs = _svamp_records()
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps({"question": _fields(r)[0], "completion": _fields(r)[1]}) + "\n" for r in recs))
    t = make_teacher(TeacherSpec(teacher=f"replay:{path}"))
    assert isinstance(t, ReplayTeacher)
    reqs = []
    for i in range(1, len(recs)):
        demo_q, demo_c = _fields(recs[i - 1])  # a demonstration that is itself a recorded question
        q, _ = _fields(recs[i])
        prompt = f"Q: {demo_q}\nA: {demo_c}\n\nQ: {q}\nA:"
        reqs.append(TeacherRequest(key=str(i), messages=[{"role": "user", "content": prompt}]))
    got = {r.key: r.text for r in _run(t, reqs)}
    assert got == {str(i): _fields(recs[i])[1] for i in range(1, len(recs))}


def test_replay_unmatched_prompt_is_an_error(tmp_path):
    path = tmp_path / "rec.jsonl"
    path.write_text(json.dumps({"question": "How many apples are left?", "completion": "3"}) + "\n")
    t = ReplayTeacher.from_jsonl(path)
    with pytest.raises(TeacherFatalError, match="no recorded output matches"):
        _run(t, [TeacherRequest(key="x", prompt="Something else entirely")])
    lenient = ReplayTeacher.from_jsonl(path, strict=False)
    res = _run(lenient, [TeacherRequest(key="x", prompt="Something else"),
                         TeacherRequest(key="y", prompt="Q: how many   APPLES are left?")])
    assert res[0].error and res[0].text is None and res[1].text == "3"


def test_replay_bad_file(tmp_path):
    path = tmp_path / "rec.jsonl"
    path.write_text('{"question": "q"}\n')
    with pytest.raises(InputError, match="rec.jsonl:1: field 'completion'"):
        ReplayTeacher.from_jsonl(path)
    with pytest.raises(InputError, match="not found"):
        ReplayTeacher.from_jsonl(tmp_path / "nope.jsonl")
