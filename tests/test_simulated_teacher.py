"""The simulated arithmetic teacher: known ground truth, controlled slips and formatting noise."""

from __future__ import annotations

import asyncio

from synthkd.answers import extract_answer, safe_eval_arithmetic
from synthkd.teachers import TeacherRequest
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.simulated import SimulatedTeacher, make_problems


def test_problems_are_distinct_and_steps_compute_the_answer():
    ps = make_problems(300, seed=3)
    assert len({p.question for p in ps}) == 300
    for p in ps:
        for op, a, b, r in p.steps:
            assert safe_eval_arithmetic(f"{a} {op} {b}") == r
        assert p.steps[-1][3] == p.answer >= 0
    assert make_problems(5, seed=3) == ps[:5]


def test_error_rate_and_noise_through_the_real_http_path(make_server):
    ps = make_problems(400, seed=1)
    sim = SimulatedTeacher(ps, error_rate=0.25, noise_rate=0.0)
    srv = make_server(responder=sim)

    async def go():
        t = OpenAICompatibleTeacher("sim", base_url=srv.base_url, api_key="k", concurrency=16)

        async def reqs():
            for i, p in enumerate(ps):
                # a few-shot prompt: the demo question must not be the one answered
                content = f"Q: {ps[(i + 1) % len(ps)].question}\nA: ...\n\nQ: {p.question}\nA:"
                yield TeacherRequest(key=str(i), messages=[{"role": "user", "content": content}])

        out = {int(r.key): r.text async for r in t.stream(reqs())}
        await t.aclose()
        return out

    texts = asyncio.run(go())
    answers = [extract_answer(texts[i], "number").value for i in range(len(ps))]
    assert all(a is not None for a in answers)  # no noise: every answer parses
    wrong = sum(a != p.answer for a, p in zip(answers, ps))
    assert 0.17 * len(ps) <= wrong <= 0.33 * len(ps)
    assert sim.unmatched == 0


def test_same_seed_same_answer_and_hint_gives_gold():
    ps = make_problems(50, seed=2)
    sim = SimulatedTeacher(ps, error_rate=0.5, noise_rate=0.5)
    body = lambda q, **kw: {"messages": [{"role": "user", "content": q}], **kw}  # noqa: E731
    for p in ps:
        assert sim("/v1/chat/completions", body(p.question)) == sim("/v1/chat/completions", body(p.question))
        clean = SimulatedTeacher(ps, error_rate=0.5, noise_rate=0.0)
        hinted = clean("/v1/chat/completions", body(f"{p.question}\nThe correct answer is {p.answer}."))
        assert extract_answer(hinted, "number").value == p.answer
    samples = {sim("/v1/chat/completions", body(ps[0].question, temperature=1, seed=s)) for s in range(8)}
    assert len(samples) > 1
    assert sim("/v1/chat/completions", body("What is the capital of France?")).startswith("I am not sure")
