"""Reasoning traces as data: the replay teacher returns a recorded trace, method rows keep it, and
``generate rationales --rationale-source`` takes the rationale from it.

The reasoning teacher is a ReplayTeacher over ``fixtures/reasoning/svamp_r1_style.jsonl`` (R1-style
traces written by hand for the first five SVAMP test questions; see that folder's README).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import read_jsonl, run_cli
from synthkd.data_tools.rationales_replay import convert
from synthkd.jsonl_io import InputError
from synthkd.methods.rationales import NO_TRACE, generate_rationales
from synthkd.teachers import TeacherRequest
from synthkd.teachers.base import Teacher
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
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


# ------------------------------------------------------------------ the other methods' rows


class Tracing(Teacher):
    """A reasoning teacher made of any teacher: each answer gets its own trace ``trace <n>`` (and 5
    reasoning tokens), as a client that splits ``reasoning_content`` off the answer returns it.
    ``log[trace]`` is (prompt, answer text) of the result that carried it; a prompt containing ``skip``
    gets no trace (a teacher that returned none)."""

    def __init__(self, inner: Teacher, skip: str | None = None) -> None:
        super().__init__(inner.model, price=inner.price)
        self.inner, self.skip = inner, skip
        self.stats = inner.stats
        self.log: dict[str, tuple[str, str]] = {}

    def cache_key(self, req):
        return self.inner.cache_key(req)

    async def stream(self, requests):
        async for res in self.inner.stream(requests):
            prompt = "\n".join(m["content"] for m in res.request.messages or []) or res.request.prompt or ""
            if res.ok and not (self.skip and self.skip in prompt):
                res.reasoning = f"trace {len(self.log)}"
                res.usage.reasoning_tokens = 5
                self.log[res.reasoning] = (prompt, res.text)
            yield res

    async def aclose(self):
        await self.inner.aclose()


def _traced(srv, fn, skip=None):
    """(rows, the Tracing teacher) of ``fn(teacher)`` over the server."""
    async def go():
        t = Tracing(OpenAICompatibleTeacher("test-model", base_url=srv.base_url, concurrency=8), skip)
        try:
            return await fn(t), t
        finally:
            await t.aclose()

    return asyncio.run(go())


def test_task_dataset_rows_keep_the_trace_of_their_request(make_server):
    sys.path.insert(0, str(FX / "tasks"))
    from tasks_responders import BankingResponder, load_banking

    from synthkd.methods.label_tasks import LabelTaskConfig, generate_label_examples, load_task_spec, plan_label_tasks

    srv = make_server(responder=BankingResponder(load_banking()))
    plan = plan_label_tasks(load_task_spec(FX / "tasks" / "banking77_spec.yaml"), LabelTaskConfig(per_label=3,
                                                                                                   batch_size=5))

    async def fn(t):
        return [r async for r in generate_label_examples(t, plan)]

    rows, t = _traced(srv, fn)
    kept = [r for r in rows if "reject_reason" not in r]
    assert kept and all(r["reasoning"] in t.log for r in rows)
    # the trace of the very answer the row's text was read from
    assert all(r["text"] in t.log[r["reasoning"]][1] for r in kept)
    assert len({r["reasoning"] for r in kept}) > 1
    assert all(r["request_usage"]["reasoning_tokens"] == 5 for r in kept)


def test_self_instruct_rows_keep_the_trace_of_their_instances(make_server):
    sys.path.insert(0, str(FX / "tasks"))
    from tasks_responders import SelfInstructResponder, load_user_oriented

    from synthkd.methods.self_instruct import (
        SelfInstructConfig,
        generate_self_instruct,
        load_seed_tasks,
        plan_self_instruct,
    )

    srv = make_server(responder=SelfInstructResponder(load_user_oriented()))
    plan = plan_self_instruct(load_seed_tasks(FX / "tasks" / "seed_tasks.jsonl"),
                              SelfInstructConfig(num_instructions=4, requests_per_round=2))

    async def fn(t):
        return [r async for r in generate_self_instruct(t, plan)]

    rows, t = _traced(srv, fn)
    kept = [r for r in rows if "reject_reason" not in r]
    assert kept and all(r["reasoning"] in t.log for r in kept)
    for r in kept:  # the trace of the instances' answer (its prompt shows the instruction), not the generation's
        prompt, answer = t.log[r["reasoning"]]
        assert r["instruction"] in prompt and not prompt.startswith("Come up with a series of tasks")
        assert all(x["output"] in answer for x in r["instances"])
    gen_rejects = [r for r in rows if "reject_reason" in r and str(r["id"]).startswith("gen/")]
    assert gen_rejects and all(t.log[r["reasoning"]][0].startswith("Come up with") for r in gen_rejects)


def test_promptmix_rows_keep_the_generation_and_the_relabel_traces(make_server):
    sys.path.insert(0, str(FX / "promptmix"))
    from scripted_teacher import from_pool_file

    from synthkd.labels import LabelSpace
    from synthkd.methods.promptmix import PromptMixConfig, promptmix

    pm = FX / "promptmix"
    srv = make_server(responder=from_pool_file(pm / "banking77_8_pool.jsonl", [pm / "banking77_8_test.jsonl"]))
    space = LabelSpace.from_file(pm / "banking77_8.yaml")
    cfg = PromptMixConfig(per_label=2, examples_per_call=2, group_size=4, relabel_candidates=3)

    async def fn(t):
        return [r async for r in promptmix(space, t, cfg)]

    rows, t = _traced(srv, fn)
    relabeled = [r for r in rows if "relabeled_label" in r]
    assert relabeled
    for r in relabeled:
        gen_prompt, gen_answer = t.log[r["reasoning"]]
        assert r["text"] in gen_answer  # the generation's trace
        rel_prompt, rel_answer = t.log[r["relabel_reasoning"]]
        assert r["text"] in rel_prompt and rel_answer == r["relabel_raw"]  # the relabel call's trace


def test_relabel_rows_keep_the_trace(make_server):
    sys.path.insert(0, str(FX / "promptmix"))
    from scripted_teacher import from_pool_file

    from synthkd.labels import LabelSpace, RelabelConfig

    pm = FX / "promptmix"
    responder = from_pool_file(pm / "banking77_8_pool.jsonl", [pm / "banking77_8_test.jsonl"])
    srv = make_server(responder=responder)
    space = LabelSpace.from_file(pm / "banking77_8.yaml")
    rows_in = [{"id": f"r{i}", "text": r["text"]} for i, r in enumerate(read_jsonl(pm / "banking77_8_test.jsonl")[:3])]
    cfg = RelabelConfig(labels=pm / "banking77_8.yaml")

    async def fn(t):
        return [r async for r in cfg.run(rows_in, t, space)]

    rows, t = _traced(srv, fn, skip=rows_in[2]["text"])
    rows = sorted(rows, key=lambda r: r["id"])
    for r in rows[:2]:
        prompt, answer = t.log[r["relabel_reasoning"]]
        assert r["text"] in prompt and answer == r["relabel_raw"]
    assert "relabel_reasoning" not in rows[2]  # no trace returned: no field


def test_tailored_correction_rows_keep_the_trace():
    from synthkd.loops.tailored import correction_row
    from synthkd.teachers.base import TeacherResult, Usage
    from synthkd.templates import load_template

    tpl = load_template("tailored/correct")
    mistake = {"id": "m1", "input": "2 + 3?", "question": "2 + 3?", "gold_answer": 5, "student_output": "6"}
    req = TeacherRequest.user("m1#r1", "p")
    ok = TeacherResult(req, "2 + 3 = 5. The answer is 5.", usage=Usage(3, 9, reasoning_tokens=4),
                       reasoning="add two and three")
    row = correction_row(mistake, ok, 1, tpl)
    assert row["rationale"] == "2 + 3 = 5." and row["reasoning"] == "add two and three"
    wrong = TeacherResult(req, "The answer is 6.", reasoning="hmm, six")
    assert correction_row(mistake, wrong, 1, tpl)["reasoning"] == "hmm, six"
    plain = correction_row(mistake, TeacherResult(req, "2 + 3 = 5. The answer is 5."), 1, tpl)
    assert "reasoning" not in plain


def test_teacher_vs_student_preferences_keep_both_traces(tmp_path):
    from synthkd.methods.preferences import plan_teacher_student

    q = _svamp_inputs(1)[0]
    student_rec = tmp_path / "student.jsonl"
    student_rec.write_text(json.dumps({"question": q["question"], "completion": "10 + 45 = 55. The answer is 55.",
                                       "reasoning": "maybe add them"}) + "\n")
    plan = plan_teacher_student([q], kind="math")

    async def go():
        return [r async for r in plan.run(ReplayTeacher.from_jsonl(R1), ReplayTeacher.from_jsonl(student_rec))]

    (row,) = asyncio.run(go())
    assert "reject_reason" not in row, row
    assert row["chosen_reasoning"] == RECORDED[0]["reasoning"] and row["rejected_reasoning"] == "maybe add them"
    assert row["chosen"].startswith("They planted 10 seeds")


# ------------------------------------------------------------------ synthkd complete rows


def _res(text, reasoning=None, rt=0):
    return SimpleNamespace(text=text, finish_reason="stop", reasoning=reasoning, cost_usd=0.0, cached=False, model="m",
                           usage=SimpleNamespace(prompt_tokens=2, completion_tokens=10, reasoning_tokens=rt))


def test_complete_rows_keep_the_trace_and_reasoning_tokens():
    from synthkd.complete import _output_row

    out = _output_row({"id": "a", "prompt": "p"}, [_res("42", "six times seven", 6)], "m")
    assert out["completion"] == "42" and out["reasoning"] == "six times seven"
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 10, "total_tokens": 12, "reasoning_tokens": 6}
    several = _output_row({"id": "b"}, [_res("1", "t1", 3), _res("2", None, 0)], "m")
    assert several["reasonings"] == ["t1", None] and "reasoning" not in several
    assert several["usage"]["reasoning_tokens"] == 3
    hidden = _output_row({"id": "c"}, [_res("x", None, 7)], "m")  # o-series: tokens billed, no trace returned
    assert "reasoning" not in hidden and hidden["usage"]["reasoning_tokens"] == 7
    plain = _output_row({"id": "d"}, [_res("x")], "m")
    assert "reasoning" not in plain and "reasoning_tokens" not in plain["usage"]


def test_complete_cli_over_a_replayed_reasoning_teacher(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"Q: {r['question']}\nA:"}) + "\n"
                               for i, r in enumerate(RECORDED)))
    out = tmp_path / "out.jsonl"
    res = run_cli("complete", "-i", str(prompts), "-o", str(out), "--teacher", f"replay:{R1}")
    assert res.returncode == 0, res.stderr
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert rows[0]["reasoning"] == RECORDED[0]["reasoning"] and rows[0]["completion"] == RECORDED[0]["completion"]
    assert rows[0]["usage"]["reasoning_tokens"] == 41
    assert "reasoning" not in rows[4] and "reasoning_tokens" not in rows[4]["usage"]


def test_relabel_operator_records_the_trace_in_its_info():
    from synthkd.filters.relabel import Relabel as RelabelOp
    from synthkd.filters.relabel import RelabelConfig as RelabelOpConfig
    from synthkd.labels import Relabel

    op = RelabelOp(RelabelOpConfig(label_space="x.yaml"), None)

    def rel(reasoning):
        return Relabel(label="a", raw="a", candidates=["a", "b"], reason=None, votes={}, reasoning=reasoning)

    row: dict = {"id": 1, "text": "t", "label": "a"}
    assert op._decide(row, rel("because a")) is None
    assert row["relabel"]["reasoning"] == "because a" and row["relabel"]["action"] == "kept"
    row2: dict = {"id": 2, "text": "t", "label": "a"}
    op._decide(row2, rel(None))
    assert "reasoning" not in row2["relabel"]


def test_eval_reads_a_think_students_answer_after_its_trace():
    from synthkd.train.evaluate import default_max_new_tokens, predicted_value

    think = "<think>\nThe answer is 7? Let me check again.\n</think>\n\n12"
    assert predicted_value(think, "number") == (12, None)
    assert predicted_value(think.replace("</think>", "</thought>"), "number")[0] != 12  # what stripping prevents
    assert predicted_value("the answer is 7", "number")[0] == 7  # no think block: unchanged
    assert default_max_new_tokens({"mode": "think"}) == 512
