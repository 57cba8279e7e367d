"""Preference pairs for DPO (synthkd.methods.preferences + `synthkd generate preferences`).

One real loopback TestServer plays teacher, student and judge: the responder tells them apart by the
``model`` of the request.  The teacher answers SVAMP questions with the real recorded PaLM-540B
completions (it is wrong on 3 of the first 10), the student is scripted right or wrong per row.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from conftest import cli_env, read_jsonl, run_cli
from synthkd.data_tools.rationales_replay import convert
from synthkd.methods.preferences import judge_ranked_pairs, pair_id
from synthkd.methods.task_kinds import TaskKind
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.sampling import sample_seed
from synthkd.testing.server import prompt_text_of
from synthkd.train.export import build_preference_examples

REC = Path(__file__).parent / "fixtures" / "recorded" / "svamp_test_head100"
SPEC = TaskKind("math")


def _svamp(n: int) -> tuple[list[dict], dict[str, str]]:
    raw = [json.loads(x) for x in (REC / "gold.jsonl").read_text(encoding="utf-8").splitlines()[:n]]
    comps = json.loads((REC / "completions.json").read_text(encoding="utf-8"))[:n]
    rows, recorded = convert("svamp", "test", raw, comps)
    return rows, {r["question"]: r["completion"] for r in recorded}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class Roles:
    """Responder: teacher = recorded PaLM completion; student = right on ``student_right`` ids, else off by one;
    judge = the score table entry of the sample it is shown (or text without a score)."""

    def __init__(self, rows: list[dict], table: dict[str, str], student_right: set[str], scores: dict | None = None):
        self.rows, self.table, self.student_right, self.scores = rows, table, student_right, scores or {}
        self.by_model: dict[str, int] = {}

    def _row(self, text: str) -> dict:
        hits = [r for r in self.rows if r["question"].strip() in text]
        assert len(hits) == 1, text[-300:]
        return hits[0]

    def __call__(self, endpoint: str, body: dict):
        model = body["model"]
        self.by_model[model] = self.by_model.get(model, 0) + 1
        text = prompt_text_of(body)
        if model == "teacher-model":
            return self.table[self._row(text)["question"]]
        if model == "student-model":
            row = self._row(text)
            ans = row["answer"] if row["id"] in self.student_right else row["answer"] + 1
            return f"Let me add things up quickly. The answer is {ans}.\n\nQ: something else\nA: 3"
        if model == "sampler":
            return f"Reply {sample_seed(body)} to <{text}>"
        if model == "sampler2":
            return f"Other reply {sample_seed(body)} to <{text}>"
        if model == "judge-model":
            m = re.search(r"(Reply|Other reply) (\d+) to <([^>]*)>", text)
            score = self.scores[(m.group(3), m.group(1), int(m.group(2)))]
            return "I cannot tell." if score is None else f"Fine on a 1-10 scale.\nScore: {score}"
        raise AssertionError(model)


def _args(srv, tmp_path, inp, *extra):
    return ["generate", "preferences", "-i", str(inp), "-o", str(tmp_path / "out.jsonl"), "--teacher", "teacher-model",
            "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"), "--max-retries", "1", *extra]


def test_teacher_vs_student_pairs_counts_and_rerun(tmp_path, make_server):
    rows, table = _svamp(10)
    gold = {r["id"]: r["answer"] for r in rows}
    teacher_right = {r["id"] for r in rows if SPEC.same(SPEC.parse(table[r["question"]], r).value, SPEC.gold(r))}
    assert teacher_right == {f"svamp-test-{i}" for i in (0, 1, 3, 4, 6, 7, 8)}  # PaLM is wrong on 2, 5, 9
    student_right = {"svamp-test-0", "svamp-test-1", "svamp-test-2"}
    roles = Roles(rows, table, student_right)
    srv = make_server(responder=roles)
    inp = _write(tmp_path / "in.jsonl", rows)
    res = run_cli(*_args(srv, tmp_path, inp, "--mode", "student", "--student", "student-model", "--kind", "math",
                         "--summary-json", str(tmp_path / "s.json")), env=cli_env())
    assert res.returncode == 0, res.stderr
    assert roles.by_model == {"teacher-model": 10, "student-model": 10}

    out = read_jsonl(tmp_path / "out.jsonl")
    want_pairs = sorted(teacher_right - student_right)
    assert sorted(r["source_id"] for r in out) == want_pairs
    for r in out:
        assert r["id"] == pair_id(r["source_id"]) == f"{r['source_id']}#pair"
        assert r["chosen"] != r["rejected"] and r["chosen"] and r["rejected"]
        assert r["chosen_answer"] == gold[r["source_id"]] == r["gold"]
        assert r["rejected_answer"] == gold[r["source_id"]] + 1
        assert "\nQ:" not in r["rejected"] and "\nQ:" not in r["chosen"]  # run-on exemplars cut
        assert r["prompt"] == next(x["question"] for x in rows if x["id"] == r["source_id"]).strip()
        assert r["teacher"] == "teacher-model" and r["student"] == "student-model"
    rej = {r["source_id"]: r["reject_reason"] for r in read_jsonl(tmp_path / "out.rejects.jsonl")}
    assert {k for k, v in rej.items() if v.startswith("teacher wrong")} == {"svamp-test-2", "svamp-test-5", "svamp-test-9"}
    assert {k for k, v in rej.items() if v.startswith("agree")} == {"svamp-test-0", "svamp-test-1"}
    assert rej["svamp-test-5"] == "teacher wrong: answered 46, gold 21"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["pairs_written"] == 5 and summary["reject_reasons"] == {"teacher wrong": 3, "agree": 2}
    assert "5 pairs written" in res.stderr and "agree: 2" in res.stderr and "teacher wrong: 3" in res.stderr

    # the pairs load as DPO examples
    examples, problems = build_preference_examples(tmp_path / "out.jsonl")
    assert problems == [] and [e.id for e in examples] == [r["id"] for r in out]

    # rerun: nothing sent, nothing duplicated, the rejects are reproduced from the cache
    before = srv.stats()["requests_total"]
    res2 = run_cli(*_args(srv, tmp_path, inp, "--mode", "student", "--student", "student-model", "--kind", "math"))
    assert res2.returncode == 0, res2.stderr
    assert srv.stats()["requests_total"] == before
    assert read_jsonl(tmp_path / "out.jsonl") == out
    assert len(read_jsonl(tmp_path / "out.rejects.jsonl")) == 5
    assert "0 pairs written" in res2.stderr and "(5 already there)" in res2.stderr


def test_missing_gold_is_an_error_before_any_request(tmp_path, make_server):
    rows, table = _svamp(3)
    roles = Roles(rows, table, set())
    srv = make_server(responder=roles)
    bad = [rows[0], {k: v for k, v in rows[1].items() if k != "answer"}, rows[2]]
    inp = _write(tmp_path / "in.jsonl", bad)
    res = run_cli(*_args(srv, tmp_path, inp, "--mode", "student", "--student", "student-model", "--kind", "math"))
    assert res.returncode == 2, res.stderr
    assert f"{inp}:2: field 'answer': missing" in res.stderr
    # no student given / judge-mode rows without a prompt: also before any request
    res = run_cli(*_args(srv, tmp_path, inp, "--mode", "student", "--kind", "math"))
    assert res.returncode == 2 and "--student" in res.stderr
    inp2 = _write(tmp_path / "p.jsonl", [{"id": "a", "prompt": "hi"}, {"id": "b", "text": "no prompt"}])
    res = run_cli(*_args(srv, tmp_path, inp2, "--mode", "judge", "--judge", "judge-model"))
    assert res.returncode == 2 and f"{inp2}:2: field 'prompt / input / question': missing" in res.stderr
    assert srv.stats()["requests_total"] == 0 and roles.by_model == {}
    assert not (tmp_path / "out.jsonl").exists()


def _judge_setup():
    prompts = [{"id": "p0", "prompt": "Write a haiku about rain."}, {"id": "p1", "prompt": "Name a prime."},
               {"id": "p2", "prompt": "Say hello."}]
    scores = {}
    s0 = {("Reply", 0): 9, ("Reply", 1): 3, ("Reply", 2): 5, ("Other reply", 0): 6, ("Other reply", 1): 3,
          ("Other reply", 2): 4}
    s1 = {("Reply", 0): 7, ("Reply", 1): 6, ("Reply", 2): 7, ("Other reply", 0): 6, ("Other reply", 1): 7,
          ("Other reply", 2): 7}
    for (who, seed), v in s0.items():
        scores[("Write a haiku about rain.", who, seed)] = v
    for (who, seed), v in s1.items():
        scores[("Name a prime.", who, seed)] = v
    for who in ("Reply", "Other reply"):
        for seed in range(3):
            scores[("Say hello.", who, seed)] = 8 if seed == 0 and who == "Reply" else None
    return prompts, scores


def test_judge_ranked_margin_filter_and_rerun(tmp_path, make_server):
    prompts, scores = _judge_setup()
    roles = Roles([], {}, set(), scores)
    srv = make_server(responder=roles)
    inp = _write(tmp_path / "p.jsonl", prompts)
    args = _args(srv, tmp_path, inp, "--mode", "judge", "--teacher", "sampler", "--teacher2", "sampler2",
                 "--judge", "judge-model", "--samples", "3", "--temperature", "0.9", "--min-margin", "2",
                 "--summary-json", str(tmp_path / "s.json"))
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert roles.by_model == {"sampler": 9, "sampler2": 9, "judge-model": 18}
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == ["p0#pair"]
    p = out[0]
    assert p["chosen"] == "Reply 0 to <Write a haiku about rain.>" and p["chosen_score"] == 9
    # worst: score 3 twice (sampler seed 1, sampler2 seed 1): the later candidate is the rejected one
    assert p["rejected"] == "Other reply 1 to <Write a haiku about rain.>" and p["rejected_score"] == 3
    assert p["margin"] == 6 and p["chosen_model"] == "sampler" and p["rejected_model"] == "sampler2"
    assert len(p["candidates"]) == 6 and sorted(c["score"] for c in p["candidates"]) == [3, 3, 4, 5, 6, 9]
    assert p["prompt"] == "Write a haiku about rain." and p["judge"] == "judge-model"
    rej = {r["source_id"]: r["reject_reason"] for r in read_jsonl(tmp_path / "out.rejects.jsonl")}
    assert rej["p1"] == "margin: best 7 - worst 6 < 2"
    assert rej["p2"].startswith("too few scored: 1 distinct")
    assert json.loads((tmp_path / "s.json").read_text())["reject_reasons"] == {"margin": 1, "too few scored": 1}
    examples, _ = build_preference_examples(tmp_path / "out.jsonl")
    assert [(e.chosen, e.rejected) for e in examples] == [(p["chosen"], p["rejected"])]

    before = srv.stats()["requests_total"]
    res2 = run_cli(*args)
    assert res2.returncode == 0, res2.stderr
    assert srv.stats()["requests_total"] == before and read_jsonl(tmp_path / "out.jsonl") == out

    # a lower margin keeps p1 too (same answers, all from the cache: no request sent)
    res3 = run_cli(*[a if a != "2" else "1" for a in args])
    assert res3.returncode == 0, res3.stderr
    assert srv.stats()["requests_total"] == before
    got = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert set(got) == {"p0#pair", "p1#pair"} and got["p1#pair"]["margin"] == 1
    assert got["p1#pair"]["chosen"] == "Reply 0 to <Name a prime.>"  # ties for best: the earliest candidate


def test_judge_ranked_async_api_dedups_identical_samples(make_server):
    """Identical samples are judged once; a prompt with a single distinct sample gives no pair."""

    def responder(endpoint, body):
        text = prompt_text_of(body)
        if body["model"] == "judge-model":
            return "Score: 8" if "same-answer" in text else ("Score: 2" if "bad answer" in text else "Score: 9")
        if "echo" in text:
            return "same-answer"
        return "good answer" if sample_seed(body) == 0 else "bad answer"

    srv = make_server(responder=responder)
    rows = [{"id": 1, "input": "echo this"}, {"id": 2, "input": "answer this"}]

    async def go():
        s = OpenAICompatibleTeacher("sampler", base_url=srv.base_url, max_retries=0)
        j = OpenAICompatibleTeacher("judge-model", base_url=srv.base_url, max_retries=0)
        try:
            return [r async for r in judge_ranked_pairs(rows, [s], j, samples=4, temperature=1.0, min_margin=3)]
        finally:
            await s.aclose()
            await j.aclose()

    got = {r["id"]: r for r in asyncio.run(go())}
    assert got["1#pair"]["reject_reason"] == "too few distinct: 1 distinct non-empty sample(s)"
    assert got["2#pair"]["chosen"] == "good answer" and got["2#pair"]["rejected"] == "bad answer"
    assert got["2#pair"]["margin"] == 7
    sent = srv.stats()["by_endpoint"]
    assert sent["/v1/chat/completions"] == 2 + 2, sent  # 8 samples as 2 requests (n=4), then only 2 distinct texts judged


def test_ids_follow_the_one_id_rule_in_both_modes(tmp_path, make_server):
    # F16 regression (follow-up): preferences (and the task rows it reads) had their own id check, which
    # called an integer id beyond 64 bits "must be a non-empty string or an integer"
    rows, table = _svamp(2)
    roles = Roles(rows, table, set())
    srv = make_server(responder=roles)
    big = '{"id": 99999999999999999999999, "prompt": "too big", "question": "1+1?", "answer": 2}\n'
    inp = tmp_path / "big.jsonl"
    inp.write_text(json.dumps(rows[0]) + "\n" + big)
    for mode in (["--mode", "judge", "--judge", "judge-model"],
                 ["--mode", "student", "--student", "student-model", "--kind", "math"]):
        res = run_cli(*_args(srv, tmp_path, inp, *mode))
        assert res.returncode == 2, res.stderr
        assert f"{inp}:2: field 'id': integer id out of range" in res.stderr, (mode, res.stderr)
    assert srv.stats()["requests_total"] == 0 and not (tmp_path / "out.jsonl").exists()
