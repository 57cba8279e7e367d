"""``local:PATH``: a local transformers model (or a trained student) answers through the Teacher interface."""

from __future__ import annotations

import asyncio

import pytest

from synthkd.teachers import TeacherFatalError, TeacherRequest
from synthkd.teachers.factory import TeacherSpec, make_teacher
from synthkd.teachers.jobs import Job, stream_jobs
from synthkd.teachers.local import LocalTeacher
from synthkd.train.student import load_student
from train_fixtures import *  # noqa: F401,F403
from train_fixtures import TEST_ROWS, read_rows

pytestmark = pytest.mark.train  # a local student as the teacher


def _run(teacher, reqs):
    async def go():
        async def gen():
            for r in reqs:
                yield r

        return [r async for r in teacher.stream(gen())]

    return asyncio.run(go())


def test_local_teacher_answers_like_the_student_in_batches(varied_student):
    teacher = make_teacher(TeacherSpec(teacher=f"local:{varied_student}", default_params={"max_tokens": 10}))
    assert isinstance(teacher, LocalTeacher) and teacher.model == f"local:{varied_student}"
    rows = read_rows(TEST_ROWS)[:12]
    reqs = [TeacherRequest(key=r["id"], messages=[{"role": "user", "content": r["input"]}]) for r in rows]
    results = _run(teacher, reqs)
    assert sorted(r.key for r in results) == sorted(r["id"] for r in rows)
    assert teacher.batches < len(reqs)  # requests were generated together, not one by one
    st = load_student(varied_student)
    direct = st.generate([st.user_prompt(r["input"]) for r in rows], max_new_tokens=10)
    by_key = {r.key: r for r in results}
    for row, d in zip(rows, direct):
        res = by_key[row["id"]]
        assert res.ok and res.text == d.text and res.cost_usd == 0.0
        assert res.usage.completion_tokens == d.completion_tokens == 10 and res.finish_reason == "length"
        assert res.usage.prompt_tokens == d.prompt_tokens
    assert teacher.stats.done == 12 and teacher.stats.completion_tokens == 120


def test_jobs_prompts_params_and_stop(varied_student):
    st = load_student(varied_student)
    teacher = LocalTeacher.from_student(st, batch_size=4)
    q = read_rows(TEST_ROWS)[0]["input"]
    free = st.generate([st.user_prompt(q)], max_new_tokens=12)[0].text
    stop = free.split()[1]
    raw = "Question: how many apples?\nAnswer:"
    jobs = [
        Job("chat", [TeacherRequest(key="a", messages=[{"role": "user", "content": q}], params={"max_tokens": 12}),
                     TeacherRequest(key="b", messages=[{"role": "user", "content": q}],
                                    params={"max_tokens": 12, "stop": stop})]),
        Job("raw", [TeacherRequest(key="c", prompt=raw, params={"max_tokens": 3})]),
    ]

    async def go():
        return [j async for j in stream_jobs(teacher, jobs)]

    done = {j.item: j for j in asyncio.run(go())}
    a, b = done["chat"].results
    assert a.text == free and b.text == free[: free.index(stop)] and b.finish_reason == "stop"
    (c,) = done["raw"].results
    assert c.text == st.generate([raw], max_new_tokens=3, chat=False)[0].text  # a prompt is used as raw text
    assert c.usage.completion_tokens == 3


def test_trained_student_gets_its_inference_prefix(label_student, tmp_path):
    st = load_student(label_student)
    st.record = {**st.record, "inference_prefix": "predict: "}  # as a multitask student's record says
    teacher = LocalTeacher.from_student(st)
    req = TeacherRequest(key="k", messages=[{"role": "user", "content": "How many?"}])
    assert teacher.render(req) == "<|user|>\npredict: How many?\n<|assistant|>\n"
    assert LocalTeacher.from_student(st, apply_task_prefix=False).render(req) == "<|user|>\nHow many?\n<|assistant|>\n"
    (res,) = _run(teacher, [req])
    assert res.ok and res.finish_reason == "stop"  # the trained student ends its answer


def test_bad_local_path_is_fatal(tmp_path):
    with pytest.raises(TeacherFatalError, match="no such student directory"):
        make_teacher(TeacherSpec(teacher=f"local:{tmp_path / 'nope'}"))


def test_a_failing_request_stream_is_reraised(varied_student):
    teacher = LocalTeacher.from_student(load_student(varied_student))

    async def go():
        async def gen():
            yield TeacherRequest(key="x", prompt="hi", params={"max_tokens": 2})
            raise RuntimeError("the method broke")

        return [r async for r in teacher.stream(gen())]

    with pytest.raises(RuntimeError, match="the method broke"):
        asyncio.run(go())


def test_a_local_reasoning_model_has_its_inline_trace_split_off():
    """R1 distills and Qwen3 served locally write <think>...</think> into their text: the trace goes to
    ``reasoning``, the answer to ``text``; an unclosed <think> is a final truncated_in_reasoning row."""
    from types import SimpleNamespace

    t = object.__new__(LocalTeacher)
    t.model = "local:r1"
    req = TeacherRequest.user("k", "q")
    gen = SimpleNamespace(text="<think>\n7 x 6 = 42\n</think>\n\nThe answer is 42.", finish_reason="stop",
                          prompt_tokens=3, completion_tokens=12)
    r = t._result(req, gen, 0.1)
    assert (r.text, r.reasoning, r.error) == ("The answer is 42.", "7 x 6 = 42", None)
    gen.text, gen.finish_reason = "<think>\n7 x 6 is", "length"
    r = t._result(req, gen, 0.1)
    assert r.text is None and r.reasoning == "7 x 6 is" and r.error.startswith("truncated_in_reasoning")
    gen.text, gen.finish_reason = "Plain answer 42.", "stop"
    assert t._result(req, gen, 0.1).reasoning is None and t._result(req, gen, 0.1).text == "Plain answer 42."
