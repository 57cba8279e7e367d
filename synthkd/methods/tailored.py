"""Tailored multi-round distillation (Tailored Learning, Ren et al. 2023; LLM2LLM, Lee et al. 2024).

Why: a student learns most from the examples *it* gets wrong.  After an initial distillation round, each
round lets the current student answer the training pool, sends every mistake to the teacher together
with the student's wrong solution and the gold answer, and trains the student further on the teacher's
corrected rationales.  The wrong/corrected pairs are also written as self-reflection preference pairs
(rejected = the student's wrong output, chosen = the teacher's correction) for DPO.

Layout of a run directory ``OUT``::

    OUT/round_0/model/              student trained on the initial distilled rows
    OUT/round_0/heldout_eval/       its held-out evaluation (metrics.json, mistakes.jsonl, ...)
    OUT/round_<r>/pool_eval/        the previous student on the training pool; mistakes.jsonl = this round's input
    OUT/round_<r>/new_rows.jsonl    teacher corrections that reach the gold answer (+ .rejects.jsonl: dropped, with why)
    OUT/round_<r>/pairs.jsonl       {id, prompt, chosen, rejected} (train.export's preference input format)
    OUT/round_<r>/train.jsonl       what this round trained on (accumulated or this round's rows only)
    OUT/round_<r>/model/            the student after this round
    OUT/round_<r>/metrics.json      written last: its presence marks the round finished
    OUT/rounds.json, OUT/accuracy.png

Resume = rerun: a round with ``metrics.json`` is never touched again (no eval, no teacher call, no
training); a round that crashed is resumed -- its pool mistakes are read back from disk (so the teacher
prompts are identical and come from the request cache), corrections already in ``new_rows.jsonl`` are not
asked again, and a model whose ``synthkd_train.json`` exists is not retrained.

Not implemented yet: k sampled student answers per pool row (the student answers greedily) and the
"m new similar exercises" step of LLM2LLM.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkd.answers import extract_answer, numbers_equal
from synthkd.jsonl_io import InputError
from synthkd.methods.runner import rejects_path_for, write_rows
from synthkd.methods.tasks_spec import split_rationale
from synthkd.teachers.base import BudgetExceeded, Teacher, TeacherRequest, TeacherResult
from synthkd.teachers.grouping import Job, stream_jobs
from synthkd.templates import PromptTemplate, load_template
from synthkd.train.common import TrainSettings
from synthkd.train.export import DEFAULT_ANSWER_TEMPLATE, answer_text, rationale_target

__all__ = ["TailorOptions", "correction_rows", "pairs_from_rows", "plot_rounds", "run_tailored"]

FINISHED = "metrics.json"
TRAIN_RECORD = "synthkd_train.json"


@dataclass
class TailorOptions:
    student: str                    # the base student (name or path) round 0 starts from
    pool: Path                      # training pool: {id, question|input, <pool_gold_field>}
    initial: Path                   # initial distilled rows for round 0 ({input|question, rationale, answer})
    heldout: Path | None            # held-out set: {id, question|input, <heldout_gold_field>}
    out: Path
    rounds: int = 3                 # R tailored rounds after round 0
    patience: int = 1               # stop after this many rounds without a held-out improvement
    mode: str = "rationale"         # SFT mode (label / rationale / multitask)
    accumulate: bool = True         # train each round on all rows so far (else only this round's new rows)
    pool_gold_field: str = "answer"
    heldout_gold_field: str = "gold"
    template: str | Path = "tailored/correct"
    max_tokens: int | None = 256    # teacher completion limit
    temperature: float | None = None
    chat: bool = True
    eval_batch_size: int = 32
    max_new_tokens: int | None = None
    settings: TrainSettings = field(default_factory=TrainSettings)


def _say_default(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves a half-written "finished" marker


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r, default=str) + "\n" for r in rows)
    tmp.replace(path)


def check_options(opts: TailorOptions) -> PromptTemplate:
    """Everything that can be wrong before any training or teacher call."""
    problems = []
    if opts.heldout is None:
        problems.append("--heldout: a held-out set is required: the loop's stopping rule and its per-round "
                        "accuracy are measured on it (rows with the question and the gold answer)")
    elif not Path(opts.heldout).exists():
        problems.append(f"--heldout: {opts.heldout} does not exist")
    for name, p in (("--pool", opts.pool), ("--initial", opts.initial)):
        if not Path(p).exists():
            problems.append(f"{name}: {p} does not exist")
    if opts.rounds < 0:
        problems.append(f"--rounds must be >= 0, got {opts.rounds}")
    if opts.patience < 1:
        problems.append(f"--patience must be >= 1, got {opts.patience}")
    if problems:
        raise InputError(problems)
    tpl = load_template(opts.template)
    tpl.check({"question", "student_rationale", "answer"}, where="tailored correction")
    return tpl


# --------------------------------------------------------------------------------------------------
# teacher corrections (pure apart from the teacher)
# --------------------------------------------------------------------------------------------------


def _question(row: dict[str, Any]) -> str:
    for k in ("question", "input", "prompt", "text"):
        if isinstance(row.get(k), str) and row[k].strip():
            return row[k]
    raise InputError([f"mistake row {row.get('id')!r}: no question/input field"])


def correction_request(mistake: dict[str, Any], r: int, tpl: PromptTemplate, opts: TailorOptions) -> TeacherRequest:
    gold = answer_text(mistake.get("gold_answer"))
    prompt = tpl.render(question=_question(mistake), student_rationale=(mistake.get("student_output") or "").strip()
                        or "(no answer)", answer=gold)
    params: dict[str, Any] = {}
    if opts.max_tokens is not None:
        params["max_tokens"] = opts.max_tokens
    if opts.temperature is not None:
        params["temperature"] = opts.temperature
    key = f"{mistake['id']}#r{r}#correct"
    meta = {"stage": "tailored-correct", "round": r}
    if opts.chat:
        return TeacherRequest(key=key, messages=[{"role": "user", "content": prompt}], params=params, meta=meta)
    return TeacherRequest(key=key, prompt=prompt, params=params, meta=meta)


def correction_row(mistake: dict[str, Any], res: TeacherResult, r: int, tpl: PromptTemplate) -> dict[str, Any]:
    """One new training row from the teacher's correction, or a reject (``reject_reason``) saying why not."""
    new_id = f"{mistake['id']}#r{r}"
    base = {"id": new_id, "source_id": mistake["id"], "round": r}
    if not res.ok:
        return {**base, "reject_reason": f"teacher error: {res.error}"}
    ex = extract_answer(res.text, "number")
    gold = mistake.get("gold_answer")
    usage = {"prompt_tokens": res.usage.prompt_tokens, "completion_tokens": res.usage.completion_tokens}
    if ex.value is None:
        return {**base, "reject_reason": f"no answer in the teacher's correction: {ex.reason}", "text": res.text,
                "usage": usage, "cost_usd": res.cost_usd}
    if not numbers_equal(ex.value, gold):
        return {**base, "reject_reason": f"the teacher's correction does not reach the gold answer "
                                         f"({answer_text(ex.value)} != {answer_text(gold)})",
                "text": res.text, "usage": usage, "cost_usd": res.cost_usd}
    rationale = split_rationale(res.text)
    return {
        **base, "input": _question(mistake), "rationale": rationale, "answer": answer_text(gold),
        "gold": mistake.get("gold_answer"), "student_output": mistake.get("student_output"),
        "student_answer": mistake.get("student_answer"), "mistake": mistake.get("mistake"),
        "text": res.text, **tpl.provenance(), "teacher": res.model, "usage": usage, "cost_usd": res.cost_usd,
        "cached": res.cached,
    }


async def correction_rows(mistakes: list[dict[str, Any]], teacher: Teacher, r: int, tpl: PromptTemplate,
                          opts: TailorOptions, skip_ids: set[str], tally: Counter) -> AsyncIterator[dict[str, Any]]:
    """Ask the teacher to correct every mistake not yet corrected; rows out in completion order."""
    jobs = [Job(m, [correction_request(m, r, tpl, opts)]) for m in mistakes if f"{m['id']}#r{r}" not in skip_ids]
    async for job in stream_jobs(teacher, jobs):
        res: TeacherResult = job.results[0]  # type: ignore[assignment]
        tally["requests"] += 1
        tally["cached"] += bool(res.cached)
        if res.ok:
            tally["prompt_tokens"] += res.usage.prompt_tokens
            tally["completion_tokens"] += res.usage.completion_tokens
            if res.cost_usd is not None:
                tally["cost_micro_usd"] += round(res.cost_usd * 1e6)
        yield correction_row(job.item, res, r, tpl)


def pairs_from_rows(rows: list[dict[str, Any]], answer_template: str = DEFAULT_ANSWER_TEMPLATE) -> list[dict[str, Any]]:
    """Self-reflection pairs: prompt = the question, chosen = teacher's correction, rejected = the student's output."""
    out = []
    for row in sorted(rows, key=lambda x: str(x["id"])):
        chosen = rationale_target(row["rationale"], row["answer"], answer_template)
        rejected = (row.get("student_output") or "").strip()
        if not rejected or chosen.strip() == rejected:
            continue
        out.append({"id": row["id"], "source_id": row["source_id"], "round": row["round"], "prompt": row["input"],
                    "chosen": chosen, "rejected": rejected, "gold": row.get("gold")})
    return out


# --------------------------------------------------------------------------------------------------
# training and evaluation (one function each, so the loop reads as the algorithm)
# --------------------------------------------------------------------------------------------------


def _train(opts: TailorOptions, base: str, rows_path: Path, out: Path) -> None:
    from synthkd.train.sft import SFTOptions, train_sft

    if (out / TRAIN_RECORD).exists():
        return  # trained before a crash: never retrain
    train_sft(SFTOptions(student=base, input=rows_path, output=out, mode=opts.mode, settings=opts.settings))


def _evaluate(opts: TailorOptions, model: Path, rows: Path, gold_field: str, out: Path) -> dict[str, Any]:
    from synthkd.train.evaluate import EvalOptions, run_eval

    return run_eval(EvalOptions(student=str(model), input=rows, kind="number", gold_field=gold_field,
                                batch_size=opts.eval_batch_size, max_new_tokens=opts.max_new_tokens, out_dir=out))


def _heldout(opts: TailorOptions, model: Path, rdir: Path) -> dict[str, Any]:
    rep = _evaluate(opts, model, Path(opts.heldout), opts.heldout_gold_field, rdir / "heldout_eval")  # type: ignore[arg-type]
    m = rep["metrics"]
    return {"accuracy": m["accuracy"], "heldout_correct": m["correct"], "heldout_rows": m["rows"]}


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------


def _round_dir(opts: TailorOptions, r: int) -> Path:
    return Path(opts.out) / f"round_{r}"


def _finished(opts: TailorOptions, r: int) -> dict[str, Any] | None:
    f = _round_dir(opts, r) / FINISHED
    return json.loads(f.read_text()) if f.exists() else None


def _round0(opts: TailorOptions) -> dict[str, Any]:
    rdir = _round_dir(opts, 0)
    rdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _train(opts, opts.student, Path(opts.initial), rdir / "model")
    m = {"round": 0, "status": "trained", **_heldout(opts, rdir / "model", rdir), "mistakes": None,
         "new_rows": len(_read_jsonl(Path(opts.initial))), "rejected": 0, "pairs": 0,
         "train_rows": len(_read_jsonl(Path(opts.initial))), "teacher_requests": 0, "prompt_tokens": 0,
         "completion_tokens": 0, "cost_usd": 0.0, "wall_s": round(time.time() - t0, 2)}
    _write_json(rdir / FINISHED, m)
    return m


async def _round(opts: TailorOptions, r: int, teacher: Teacher, tpl: PromptTemplate,
                 say: Callable[[str], None]) -> dict[str, Any]:
    rdir = _round_dir(opts, r)
    rdir.mkdir(parents=True, exist_ok=True)
    prev = _round_dir(opts, r - 1) / "model"
    t0 = time.time()
    # 1. the current student on the training pool; mistakes are saved once so a resumed round asks the same prompts
    mistakes_file = rdir / "mistakes.jsonl"
    if mistakes_file.exists():
        mistakes = _read_jsonl(mistakes_file)
        pool_m = json.loads((rdir / "pool_eval" / "metrics.json").read_text())["metrics"]
    else:
        rep = _evaluate(opts, prev, Path(opts.pool), opts.pool_gold_field, rdir / "pool_eval")
        pool_m = rep["metrics"]
        mistakes = [{**m, "id": str(m["id"])} for m in rep["_mistakes"] if m.get("id") is not None]
        _write_jsonl(mistakes_file, mistakes)
    base = {"round": r, "pool_accuracy": pool_m["accuracy"], "mistakes": len(mistakes)}
    if not mistakes:
        prev_m = _finished(opts, r - 1) or {}
        m = {**base, "status": "no_mistakes", "accuracy": prev_m.get("accuracy"), "new_rows": 0, "rejected": 0,
             "pairs": 0, "teacher_requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
             "wall_s": round(time.time() - t0, 2)}
        _write_json(rdir / FINISHED, m)
        return m
    # 2. teacher corrections (new_rows.jsonl is append-only: corrections already there are not asked again)
    new_file = rdir / "new_rows.jsonl"
    have = {str(x["id"]) for x in _read_jsonl(new_file)}
    tally: Counter = Counter()
    todo = sum(1 for x in mistakes if f"{x['id']}#r{r}" not in have)
    say(f"round {r}: {len(mistakes)} mistakes on the pool ({todo} to correct)")
    counts = await write_rows(correction_rows(mistakes, teacher, r, tpl, opts, have, tally), new_file)
    new_rows = _read_jsonl(new_file)
    rejects = _read_jsonl(rejects_path_for(new_file))
    # 3. self-reflection pairs
    pairs = pairs_from_rows(new_rows)
    _write_jsonl(rdir / "pairs.jsonl", pairs)
    # 4. train further on the new rows (accumulated with every earlier round's rows, or alone)
    train_rows = list(new_rows)
    if opts.accumulate:
        earlier = [_read_jsonl(_round_dir(opts, q) / "new_rows.jsonl") for q in range(1, r)]
        train_rows = _read_jsonl(Path(opts.initial)) + [x for rows in earlier for x in rows] + new_rows
    train_file = rdir / "train.jsonl"
    _write_jsonl(train_file, train_rows)
    if new_rows:
        _train(opts, str(prev), train_file, rdir / "model")
        model = rdir / "model"
    else:
        model = prev  # nothing usable came back: the student is unchanged
    # 5. held-out evaluation
    m = {**base, "status": "trained" if new_rows else "no_new_rows", **_heldout(opts, model, rdir),
         "new_rows": len(new_rows), "rejected": len(rejects),
         "reject_reasons": dict(Counter(str(x["reject_reason"]).split(" (")[0] for x in rejects)),
         "pairs": len(pairs), "train_rows": len(train_rows), "teacher_requests": tally["requests"],
         "teacher_requests_cached": tally["cached"], "prompt_tokens": tally["prompt_tokens"],
         "completion_tokens": tally["completion_tokens"], "cost_usd": tally["cost_micro_usd"] / 1e6,
         "written_this_run": counts.written, "model": str(model), "wall_s": round(time.time() - t0, 2)}
    _write_json(rdir / FINISHED, m)
    return m


def _stop_reason(history: list[dict[str, Any]], opts: TailorOptions) -> str | None:
    last = history[-1]
    if last.get("status") == "no_mistakes":
        return f"round {last['round']}: the student makes no mistakes on the training pool; nothing left to correct"
    accs = [h["accuracy"] for h in history if h.get("accuracy") is not None]
    if len(accs) > opts.patience:
        best_before = max(accs[: -opts.patience])
        if max(accs[-opts.patience:]) <= best_before:
            return (f"held-out accuracy has not improved for {opts.patience} round(s) "
                    f"(best {best_before:.4f}); stopping")
    return None


def plot_rounds(history: list[dict[str, Any]], path: Path) -> None:
    """Held-out accuracy per round as a PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(h["round"], h["accuracy"]) for h in history if h.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_xticks([p[0] for p in pts])
    ax.set_title("tailored distillation")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def run_tailored(opts: TailorOptions, teacher: Teacher, *, say: Callable[[str], None] = _say_default
                       ) -> dict[str, Any]:
    """Run (or resume) the loop; returns ``rounds.json``'s content ({rounds, stopped, best_round})."""
    tpl = check_options(opts)
    opts.settings.check()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    stopped: str | None = None
    for r in range(opts.rounds + 1):
        done = _finished(opts, r)
        if done is not None:
            say(f"round {r}: finished before (accuracy {done.get('accuracy')}); skipped")
            m = done
        elif r == 0:
            m = _round0(opts)
        else:
            try:
                m = await _round(opts, r, teacher, tpl, say)
            except BudgetExceeded as exc:
                stopped = (f"round {r}: the teacher budget is spent ({exc}); corrections so far are kept, "
                           "rerun with a higher --max-cost to resume this round")
                break
        history.append(m)
        if done is None:
            say(f"round {r}: held-out accuracy {m.get('accuracy')}, mistakes {m.get('mistakes')}, "
                f"new rows {m.get('new_rows')}, rejected {m.get('rejected')}")
        stopped = _stop_reason(history, opts)
        if stopped:
            break
    if stopped is None:
        stopped = f"finished the {opts.rounds} round(s) asked for"
    scored = [h for h in history if h.get("accuracy") is not None]
    best = max(scored, key=lambda h: (h["accuracy"], -h["round"])) if scored else None
    result = {"rounds": history, "stopped": stopped, "best_round": best["round"] if best else None,
              "best_accuracy": best["accuracy"] if best else None}
    _write_json(out / "rounds.json", result)
    if history:
        plot_rounds(history, out / "accuracy.png")
    say(stopped)
    return result
