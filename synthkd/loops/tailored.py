"""Tailored multi-round distillation (Tailored Learning, Ren et al. 2023; LLM2LLM, Lee et al. 2024).

Why: a student learns most from the examples *it* gets wrong.  After an initial distillation round, each
round lets the current student answer the training pool, sends every mistake to the teacher together
with the student's wrong solution and the gold answer, and trains the student further on the teacher's
corrected rationales.  The wrong/corrected pairs are also written as self-reflection preference pairs
(rejected = the student's wrong output, chosen = the teacher's correction) for DPO.

Three optional extensions follow the papers more closely:

* ``samples = k > 1``: the student answers each pool question greedily and ``k - 1`` more times by
  sampling; a question is a mistake when any answer is wrong, and *every* distinct wrong answer
  becomes the rejected side of a self-reflection pair (Tailored Learning samples several rationales);
* ``similar = m > 0``: the teacher also writes ``m`` new exercises aimed at the same weakness, which
  are solved independently and filtered before training (LLM2LLM / Lion,
  :mod:`synthkd.methods.similar_exercises`);
* ``dpo``: learn from the mistakes by preference optimisation: ``"each"`` — every round is SFT on the
  corrections then DPO on that round's pairs (SFT-then-DPO); ``"final"`` — after the last round, DPO
  from the best round's student on all rounds' pairs (the self-reflection step), evaluated on its own.

Layout of a run directory ``OUT``::

    OUT/round_0/model/              student trained on the initial distilled rows
    OUT/round_0/heldout_eval/       its held-out evaluation (metrics.json, mistakes.jsonl, ...)
    OUT/round_<r>/pool_eval/        the previous student on the training pool (greedy; sample_<s>/ for k > 1)
    OUT/round_<r>/mistakes.jsonl    this round's input: pool questions with at least one wrong answer
    OUT/round_<r>/new_rows.jsonl    teacher corrections that reach the gold answer (+ .rejects.jsonl: dropped, with why)
    OUT/round_<r>/exercises.jsonl   new similar exercises that passed the checks (+ .rejects.jsonl)
    OUT/round_<r>/similar_rows.jsonl  exercises whose independent solution reaches their answer (+ .rejects.jsonl)
    OUT/round_<r>/pairs.jsonl       {id, prompt, chosen, rejected} (train.export's preference input format)
    OUT/round_<r>/train.jsonl       what this round trained on (accumulated or this round's rows only)
    OUT/round_<r>/model/            the student after this round (model_sft/ + model/ with dpo="each")
    OUT/round_<r>/metrics.json      written last: its presence marks the round finished
    OUT/reflection/                 dpo="final": model/, heldout_eval/, metrics.json
    OUT/rounds.json, OUT/accuracy.png

Resume = rerun: a round with ``metrics.json`` is never touched again (no eval, no teacher call, no
training); a round that crashed is resumed -- its pool mistakes are read back from disk (so the teacher
prompts are identical and come from the request cache), rows already written are not asked again, and
a model whose ``synthkd_train.json`` exists is not retrained.  A spent budget stops the loop between
two requests; everything paid for is on disk or in the cache, and a rerun with a higher budget goes on
from there.

Mistakes are judged against ``pool_gold_field``: the gold answer, or — for a pool without gold —
the teacher's own answer (point the field at it, e.g. ``answer`` of the rationale rows).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from synthkd.answers import numbers_equal, parse_off_loop, read_answer
from synthkd.jsonl_io import InputError, iter_jsonl
from synthkd.methods.runner import rejects_path_for, write_rows
from synthkd.methods.similar_exercises import (
    count_result,
    count_row,
    generate_exercises,
    normalize_question,
    similar_request,
    solve_exercises,
)
from synthkd.methods.task_kinds import split_rationale
from synthkd.options import opt, register_feature
from synthkd.reasoning import reasoning_field
from synthkd.row_source import as_path, source_kind
from synthkd.teachers.base import BudgetExceeded, Teacher, TeacherRequest, TeacherResult
from synthkd.teachers.jobs import Job, aiter_any, stream_jobs
from synthkd.templates import PromptTemplate, load_template
from synthkd.train.common import TrainSettings
from synthkd.train.export import DEFAULT_ANSWER_TEMPLATE, TRACE_FREE_MODES, answer_text, rationale_target, write_jsonl

log = logging.getLogger(__name__)

__all__ = ["TailorConfig", "TailorOptions", "correction_rows", "pairs_from_rows", "plot_rounds", "run_tailored"]

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
    from_base: bool = False         # each round trains from the base student (LLM2LLM), not further
    pool_gold_field: str = "answer"
    heldout_gold_field: str = "gold"
    template: str | Path = "tailored/correct"
    max_tokens: int | None = 256    # teacher completion limit
    temperature: float | None = None
    chat: bool = True
    eval_batch_size: int = 32
    max_new_tokens: int | None = None
    settings: TrainSettings = field(default_factory=TrainSettings)
    # k answers per pool question: greedy + (k - 1) sampled at sample_temperature
    samples: int = 1
    sample_temperature: float = 0.8
    # at most this many mistakes per round go to the teacher (a seeded random sample, kept in pool order):
    # a cost cap.  Random, not the first ones: those would be the rows the student already trained on.
    max_mistakes: int | None = None
    # LLM2LLM / Lion: m new exercises per mistake, solved independently and filtered
    similar: int = 0
    similar_template: str | Path = "tailored/similar"
    # self-reflection by DPO: "off", "each" (SFT then DPO every round) or "final" (after the loop)
    dpo: str = "off"
    dpo_beta: float = 0.1
    dpo_loss_type: list[str] = field(default_factory=lambda: ["sigmoid", "sft"])
    dpo_learning_rate: float | None = None  # None: the SFT learning rate / 20 (DPO needs a gentler step)
    dpo_epochs: float = 1.0
    dpo_settings: TrainSettings | None = None  # full control from Python; overrides the two above


DPO_MODES = ("off", "each", "final")


@dataclass(kw_only=True)
class TailorConfig(TrainSettings):
    """Every option of the tailored loop, flat, declared once: ``synthkd tailor``'s flags, the ``tailor``
    stage's keys and the Python API (``TailorConfig(...).to_options()`` -> :class:`TailorOptions`).
    The trainer settings are :class:`~synthkd.train.common.TrainSettings`'; two differ in the loop."""

    # the loop's own defaults for two trainer settings: a correction without a usable answer is skipped
    # (counted), not a stop; the student generation batch also sets the trainer's eval batch
    skip_invalid: bool = opt(True, help="Skip rows without a usable answer (counted) instead of stopping.")
    eval_batch_size: int = opt(32, help="Student generation batch (pool and held-out).", ge=1)
    student: str = opt(help="Base student (Hub name or path) for round 0.", flags=("-s",),
                       stage=False)  # a stage may name 'tiny' or an earlier train stage: declared in the stage
    pool: Path = opt(help="Training pool jsonl: id, question, gold answer.", stage=False)  # a stage's input
    initial: Path = opt(help="Initial distilled rows (input, rationale, answer) for round 0.",
                        stage=False)  # a stage may name an earlier stage: declared in the stage
    heldout: Path | None = opt(None, help="Held-out jsonl (required): id, question, gold.",
                               stage=False)  # relative to the pipeline: declared in the stage
    output: Path = opt(help="Run directory (round_<r>/..., rounds.json, accuracy.png).", flags=("-o",),
                       aliases=("--out",), stage=False)  # a stage writes runs/<name>/<stage>
    rounds: int = opt(3, help="Tailored rounds after round 0.", flags=("-R",), ge=0)
    patience: int = opt(1, help="Stop after this many rounds without held-out gain.", ge=1)
    mode: str = opt("rationale", help="SFT mode: label, rationale, multitask.", choices=TRACE_FREE_MODES)
    accumulate: bool = opt(True, help="Train each round on all rows so far (--no-accumulate or --replace: on its "
                                      "new rows only).", flags=(" /--replace",))
    from_base: bool = opt(False, help="Train each round from the base student on all rows so far (LLM2LLM; a "
                                      "round's model then owes nothing to the earlier rounds' training) instead "
                                      "of further from the previous round's model.")
    pool_gold_field: str = opt("answer", help="Pool field with the gold answer (or the teacher's, for a pool "
                                              "without gold) that mistakes are judged against.")
    heldout_gold_field: str = opt("gold", help="Held-out field with the gold answer.")
    template: str | Path = opt("tailored/correct", help="Correction prompt template (a name or a .j2 file).",
                               cli_type=str)
    max_tokens: int | None = opt(256, help="Teacher completion limit.", ge=1)
    temperature: float | None = opt(None, help="Teacher sampling temperature (default: the teacher's).", ge=0)
    chat: bool = opt(True, help="Send the teacher chat messages (else a plain completion prompt).")
    max_new_tokens: int | None = opt(None, help="Student answer length (default: from its training record).", ge=1)
    samples: int = opt(1, help="Student answers per pool question (greedy + k-1 sampled); any wrong one is a "
                               "mistake.", flags=("-k",), ge=1)
    sample_temperature: float = opt(0.8, help="Temperature of the sampled student answers (--samples > 1).", ge=0)
    max_mistakes: int | None = opt(None, help="At most this many mistakes per round go to the teacher (cost cap).",
                                   ge=1)
    similar: int = opt(0, help="LLM2LLM: new exercises per mistake, solved and filtered (0: off).", ge=0)
    similar_template: str | Path = opt("tailored/similar", help="Similar-exercises prompt template.", cli_type=str)
    dpo: str = opt("off", help="Self-reflection DPO: off, each (SFT then DPO every round), final (after the loop).",
                   choices=DPO_MODES)
    dpo_beta: float = opt(0.1, help="DPO beta of the self-reflection step.", gt=0)
    dpo_loss_type: list[str] = opt(default_factory=lambda: ["sigmoid", "sft"],
                                   help="DPO loss(es) of the self-reflection step; repeat to combine.")
    dpo_learning_rate: float | None = opt(None, help="DPO learning rate (default: the SFT one / 20).",
                                          aliases=("--dpo-lr",), gt=0)
    dpo_epochs: float = opt(1.0, help="DPO epochs of the self-reflection step.", gt=0)

    def to_options(self) -> TailorOptions:
        return TailorOptions(
            student=self.student, pool=Path(self.pool), initial=Path(self.initial),
            heldout=Path(self.heldout) if self.heldout is not None else None, out=Path(self.output),
            rounds=self.rounds, patience=self.patience, mode=self.mode, accumulate=self.accumulate,
            from_base=self.from_base,
            pool_gold_field=self.pool_gold_field, heldout_gold_field=self.heldout_gold_field,
            template=self.template, max_tokens=self.max_tokens, temperature=self.temperature, chat=self.chat,
            eval_batch_size=self.eval_batch_size, max_new_tokens=self.max_new_tokens,
            settings=self.train_settings(), samples=self.samples, sample_temperature=self.sample_temperature,
            max_mistakes=self.max_mistakes, similar=self.similar, similar_template=self.similar_template,
            dpo=self.dpo, dpo_beta=self.dpo_beta, dpo_loss_type=list(self.dpo_loss_type),
            dpo_learning_rate=self.dpo_learning_rate, dpo_epochs=self.dpo_epochs)


register_feature("tailor", TailorConfig, command=("tailor",), stage="tailor")


@dataclass
class Templates:
    correct: PromptTemplate
    similar: PromptTemplate | None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a file the loop wrote (none yet: empty); a broken line is an error naming file:line."""
    p = as_path(path)  # the user's pool/held-out may be any source (a SourcePath keeps its column map)
    return [row for _, row in iter_jsonl(p)] if p.exists() or source_kind(p) in ("hf", "dir") else []


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves a half-written "finished" marker


def check_options(opts: TailorOptions) -> Templates:
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
    if opts.samples < 1:
        problems.append(f"--samples must be >= 1, got {opts.samples}")
    if opts.samples > 1 and opts.sample_temperature <= 0:
        problems.append("--samples > 1 draws distinct answers: --sample-temperature must be above 0")
    if opts.similar < 0:
        problems.append(f"--similar must be >= 0, got {opts.similar}")
    if opts.from_base and not opts.accumulate:
        problems.append("--from-base retrains each round from the base student, so it needs every row so far: "
                        "drop --replace (or --from-base)")
    if opts.max_mistakes is not None and opts.max_mistakes < 1:
        problems.append(f"--max-mistakes must be >= 1, got {opts.max_mistakes}")
    if opts.dpo not in DPO_MODES:
        problems.append(f"--dpo: unknown mode {opts.dpo!r} (choose from {', '.join(DPO_MODES)})")
    if opts.dpo_beta <= 0:
        problems.append(f"--dpo-beta must be > 0, got {opts.dpo_beta}")
    if problems:
        raise InputError(problems)
    tpl = load_template(opts.template)
    tpl.check({"question", "student_rationale", "answer"}, where="tailored correction")
    similar = None
    if opts.similar:
        similar = load_template(opts.similar_template)
        similar.check({"question", "student_rationale", "answer", "m"}, where="tailored similar exercises")
    return Templates(tpl, similar)


# --------------------------------------------------------------------------------------------------
# teacher corrections (pure apart from the teacher)
# --------------------------------------------------------------------------------------------------


def _question(row: dict[str, Any]) -> str:
    for k in ("question", "input", "prompt", "text"):
        if isinstance(row.get(k), str) and row[k].strip():
            return row[k]
    raise InputError([f"mistake row {row.get('id')!r}: no question/input field"])


def mistake_variables(mistake: dict[str, Any]) -> dict[str, str]:
    """The template variables of a mistake: the question, the student's wrong output and the gold answer."""
    answer = answer_text(mistake.get("gold_answer"))
    if answer is None:  # evaluate only reports rows with a usable gold answer as mistakes
        raise InputError([f"mistake row {mistake.get('id')!r}: no usable gold_answer"])
    return {"question": _question(mistake), "answer": answer,
            "student_rationale": (mistake.get("student_output") or "").strip() or "(no answer)"}


def _params(opts: TailorOptions) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if opts.max_tokens is not None:
        params["max_tokens"] = opts.max_tokens
    if opts.temperature is not None:
        params["temperature"] = opts.temperature
    return params


def correction_request(mistake: dict[str, Any], r: int, tpl: PromptTemplate, opts: TailorOptions) -> TeacherRequest:
    return TeacherRequest.user(f"{mistake['id']}#r{r}#correct", tpl.render(**mistake_variables(mistake)),
                               chat=opts.chat, params=_params(opts), meta={"stage": "tailored-correct", "round": r})


def correction_row(mistake: dict[str, Any], res: TeacherResult, r: int, tpl: PromptTemplate) -> dict[str, Any]:
    """One new training row from the teacher's correction, or a reject (``reject_reason``) saying why not."""
    new_id = f"{mistake['id']}#r{r}"
    base = {"id": new_id, "source_id": mistake["id"], "round": r}
    if not res.ok:
        return {**base, "reject_reason": f"teacher error: {res.error}"}
    # the reading evaluation applies to the student's answers, with the question as evaluation has it
    asked = next((mistake[k] for k in ("question", "input", "prompt", "text") if isinstance(mistake.get(k), str)), None)
    ex = read_answer(res.text, "number", question=asked)
    gold = mistake.get("gold_answer")
    usage = {"prompt_tokens": res.usage.prompt_tokens, "completion_tokens": res.usage.completion_tokens}
    trace = reasoning_field(res)  # the teacher's reasoning trace beside ``text``, when it returned one
    if ex.value is None:
        return {**base, "reject_reason": f"no answer in the teacher's correction: {ex.reason}", "text": res.text,
                **trace, "usage": usage, "cost_usd": res.cost_usd}
    if not numbers_equal(ex.value, gold):
        return {**base, "reject_reason": f"the teacher's correction does not reach the gold answer "
                                         f"({answer_text(ex.value)} != {answer_text(gold)})",
                "text": res.text, **trace, "usage": usage, "cost_usd": res.cost_usd}
    rationale = split_rationale(res.text)
    return {
        **base, "input": _question(mistake), "rationale": rationale, "answer": answer_text(gold),
        "gold": mistake.get("gold_answer"), "student_output": mistake.get("student_output"),
        "student_answer": mistake.get("student_answer"), "mistake": mistake.get("mistake"),
        "wrong_outputs": mistake.get("wrong_outputs") or [mistake.get("student_output") or ""],
        "text": res.text, **trace, **tpl.provenance(), "teacher": res.model, "usage": usage, "cost_usd": res.cost_usd,
        "cached": res.cached,
    }


async def correction_rows(mistakes: list[dict[str, Any]], teacher: Teacher, r: int, tpl: PromptTemplate,
                          opts: TailorOptions, skip_ids: set[str], tally: Counter) -> AsyncIterator[dict[str, Any]]:
    """Ask the teacher to correct every mistake not yet corrected; rows out in completion order."""
    jobs = [Job(m, [correction_request(m, r, tpl, opts)]) for m in mistakes if f"{m['id']}#r{r}" not in skip_ids]
    async for job in stream_jobs(teacher, jobs):
        res: TeacherResult = job.results[0]  # type: ignore[assignment]
        count_result(tally, res)
        yield await parse_off_loop(len(res.text or ""), correction_row, job.item, res, r, tpl)


def pairs_from_rows(rows: list[dict[str, Any]], answer_template: str = DEFAULT_ANSWER_TEMPLATE) -> list[dict[str, Any]]:
    """Self-reflection pairs: prompt = the question, chosen = the teacher's correction, rejected = each
    distinct wrong output of the student on it (one with greedy answers, up to k with ``samples = k``)."""
    out = []
    for row in sorted(rows, key=lambda x: str(x["id"])):
        if "student_output" not in row:
            continue  # a similar exercise: the student never answered it, there is no rejected side
        chosen = rationale_target(row["rationale"], row["answer"], answer_template)
        wrong = row.get("wrong_outputs") or [row.get("student_output") or ""]
        distinct = list(dict.fromkeys(w.strip() for w in wrong if w and w.strip() and w.strip() != chosen.strip()))
        for j, rejected in enumerate(distinct):
            out.append({"id": row["id"] if j == 0 else f"{row['id']}#p{j}", "source_id": row["source_id"],
                        "round": row["round"], "prompt": row["input"], "chosen": chosen, "rejected": rejected,
                        "gold": row.get("gold")})
    return out


# --------------------------------------------------------------------------------------------------
# training and evaluation (one function each, so the loop reads as the algorithm)
# --------------------------------------------------------------------------------------------------


def _train(opts: TailorOptions, base: str, rows_path: Path, out: Path) -> None:
    from synthkd.train.sft import SFTOptions, train_sft

    if (out / TRAIN_RECORD).exists():
        return  # trained before a crash: never retrain
    train_sft(SFTOptions(student=base, input=rows_path, output=out, mode=opts.mode, settings=opts.settings))


def _dpo_settings(opts: TailorOptions) -> TrainSettings:
    from dataclasses import replace

    if opts.dpo_settings is not None:
        return opts.dpo_settings
    lr = opts.dpo_learning_rate if opts.dpo_learning_rate is not None else opts.settings.learning_rate / 20
    return replace(opts.settings, epochs=opts.dpo_epochs, learning_rate=lr)


def _train_dpo(opts: TailorOptions, base: Path, pairs_path: Path, out: Path) -> None:
    """DPO from ``base`` on self-reflection pairs (reference = frozen copy of ``base``)."""
    from synthkd.train.dpo import DPOOptions, train_dpo

    if (out / TRAIN_RECORD).exists():
        return
    train_dpo(DPOOptions(student=str(base), input=pairs_path, output=out, beta=opts.dpo_beta,
                         loss_type=list(opts.dpo_loss_type), settings=_dpo_settings(opts)))


def _evaluate(opts: TailorOptions, model: Path | Any, rows: Path, gold_field: str, out: Path, *,
              temperature: float = 0.0, seed: int = 0) -> dict[str, Any]:
    from synthkd.train.evaluate import EvalOptions, run_eval

    loaded = None if isinstance(model, (str, Path)) else model
    name = str(model) if loaded is None else str(loaded.source)
    return run_eval(EvalOptions(student=name, input=rows, kind="number", gold_field=gold_field,
                                batch_size=opts.eval_batch_size, max_new_tokens=opts.max_new_tokens, out_dir=out,
                                temperature=temperature, seed=seed), student=loaded)


def _heldout(opts: TailorOptions, model: Path, rdir: Path) -> dict[str, Any]:
    rep = _evaluate(opts, model, Path(opts.heldout), opts.heldout_gold_field, rdir / "heldout_eval")  # type: ignore[arg-type]
    m = rep["metrics"]
    return {"accuracy": m["accuracy"], "heldout_correct": m["correct"], "heldout_rows": m["rows"]}


def pool_mistakes(opts: TailorOptions, model: Path, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The student answers the pool (greedy, plus k - 1 samples); returns (pool metrics, mistakes).

    A question is a mistake when any of its k answers is wrong; ``student_output`` is the first wrong
    answer (the greedy one when it is wrong) and ``wrong_outputs`` all of them, in sample order.
    """
    from synthkd.train.student import load_student

    student = load_student(str(model))
    runs = [_evaluate(opts, student, Path(opts.pool), opts.pool_gold_field, out)]
    for s in range(1, opts.samples):
        runs.append(_evaluate(opts, student, Path(opts.pool), opts.pool_gold_field, out / f"sample_{s}",
                              temperature=opts.sample_temperature, seed=s))
    metrics = dict(runs[0]["metrics"])
    if opts.samples > 1:
        total = sum(rep["metrics"]["correct"] for rep in runs)
        metrics["sample_accuracy"] = total / max(1, sum(rep["metrics"]["rows"] for rep in runs))
    mistakes = []
    for i, pred in enumerate(runs[0]["_predictions"]):
        if pred.get("id") is None:
            continue
        answers = [rep["_predictions"][i] for rep in runs]
        wrong = [a for a in answers if not a["correct"]]
        if not wrong:
            continue
        first = wrong[0]
        mistakes.append({**first, "id": str(pred["id"]), "mistake": first.get("mistake") or (
            "no answer" if first.get("student_answer") is None else "wrong answer"),
            "wrong_outputs": [a["student_output"] for a in wrong], "samples_correct": len(answers) - len(wrong),
            "samples": len(answers)})
    return metrics, mistakes


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
    n = len(_read_jsonl(as_path(opts.initial)))
    m = {"round": 0, "status": "trained", **_heldout(opts, rdir / "model", rdir), "mistakes": None,
         "new_rows": n, "corrections": 0, "similar_rows": 0, "rejected": 0, "pairs": 0, "train_rows": n,
         "teacher_requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
         "model": str(rdir / "model"), "wall_s": round(time.time() - t0, 2)}
    _write_json(rdir / FINISHED, m)
    return m


def _known_questions(opts: TailorOptions) -> dict[str, str]:
    """Normalized pool and held-out questions: a new exercise that copies one is dropped."""
    known: dict[str, str] = {}
    for label, path in (("pool", opts.pool), ("held-out", opts.heldout)):
        for row in _read_jsonl(as_path(path)):  # type: ignore[arg-type]
            try:
                known.setdefault(normalize_question(_question(row)), f"{label} {row.get('id')}")
            except InputError:
                continue
    return known


T = TypeVar("T")


async def _answered(teacher: Teacher, what: str, step: Callable[[], Awaitable[T]]) -> T:
    """Run one teacher step of a round until every answer it needs is there.  Online that is one run.  In
    batch mode (``--batch``) a run answers from the cache and defers the rest into provider batches; then
    the batches are waited for and collected (``--wait``) or the command exits 5 (``--no-wait``: a rerun
    resumes this round at this step), and the step runs again, answered from the cache.  A step whose
    output depends on every reply (the new exercises' repeat check) returns its result only from the
    run in which nothing was deferred; steps that append a row per answer skip the rows written before."""
    from synthkd.teachers.batch.passes import batch_waiting, wait_or_stop

    while True:
        result = await step()
        if not batch_waiting([teacher]):
            return result
        await wait_or_stop([teacher], what)


async def _similar(opts: TailorOptions, r: int, rdir: Path, mistakes: list[dict[str, Any]], teacher: Teacher,
                   tpl: PromptTemplate, tally: Counter, say: Callable[[str], None]) -> tuple[list, list]:
    """LLM2LLM step: new exercises per mistake -> checked -> solved independently -> kept when they agree."""
    ex_file, solved_file = rdir / "exercises.jsonl", rdir / "similar_rows.jsonl"
    params = _params(opts)
    reqs = [(str(mk["id"]), similar_request(str(mk["id"]), mistake_variables(mk), r, tpl, opts.similar,
                                            params=params, chat=opts.chat)) for mk in mistakes]
    known = _known_questions(opts)

    async def ask() -> tuple[list[dict[str, Any]], Counter]:
        pass_tally: Counter = Counter()  # only the run that got every reply is counted
        return await generate_exercises(reqs, teacher, r, opts.similar, known, pass_tally), pass_tally

    rows, ask_tally = await _answered(teacher, f"round {r}: new exercises", ask)
    tally.update(ask_tally)
    _check_budget(teacher, r, "new exercises")  # before writing: the repeat check needs every reply
    await write_rows(aiter_any(rows), ex_file)
    exercises = _read_jsonl(ex_file)
    done = {str(x["id"]): x for x in _read_jsonl(solved_file)}  # solved before an interruption
    say(f"round {r}: {len(exercises)} new exercises pass the checks ({sum(x['id'] not in done for x in exercises)} to solve)")

    solve_tally: Counter = Counter()

    async def solve() -> None:  # a later run (batch mode) skips what the one before wrote, counted from disk
        solve_tally.clear()
        await write_rows(solve_exercises(exercises, teacher, skip_ids=done, max_tokens=opts.max_tokens, chat=opts.chat,
                                         tally=solve_tally), solved_file)
        for path in (solved_file, rejects_path_for(solved_file)):
            for x in _read_jsonl(path):
                done.setdefault(str(x["id"]), x)

    await _answered(teacher, f"round {r}: solutions of the new exercises", solve)
    tally.update(solve_tally)
    _check_budget(teacher, r, "solutions of the new exercises")
    rejects = _read_jsonl(rejects_path_for(ex_file)) + _read_jsonl(rejects_path_for(solved_file))
    return _read_jsonl(solved_file), rejects


async def _round(opts: TailorOptions, r: int, teacher: Teacher, tpls: Templates,
                 say: Callable[[str], None]) -> dict[str, Any]:
    rdir = _round_dir(opts, r)
    rdir.mkdir(parents=True, exist_ok=True)
    prev = Path((_finished(opts, r - 1) or {}).get("model") or _round_dir(opts, r - 1) / "model")
    t0 = time.time()
    # 1. the current student on the training pool; mistakes are saved once so a resumed round asks the same prompts
    mistakes_file = rdir / "mistakes.jsonl"
    if mistakes_file.exists():
        mistakes = _read_jsonl(mistakes_file)
        pool_m = json.loads((rdir / "pool_metrics.json").read_text())
    else:
        pool_m, mistakes = pool_mistakes(opts, prev, rdir / "pool_eval")
        pool_m["mistakes_found"] = len(mistakes)
        if opts.max_mistakes is not None and len(mistakes) > opts.max_mistakes:
            import random

            keep = set(random.Random(f"{opts.settings.seed}:{r}").sample(range(len(mistakes)), opts.max_mistakes))
            mistakes = [mk for i, mk in enumerate(mistakes) if i in keep]
        _write_json(rdir / "pool_metrics.json", pool_m)
        write_jsonl(mistakes, mistakes_file)  # after pool_metrics: its presence means both are there
    base = {"round": r, "pool_accuracy": pool_m["accuracy"], "mistakes": len(mistakes),
            "mistakes_found": pool_m.get("mistakes_found", len(mistakes))}
    if opts.samples > 1:
        base["pool_sample_accuracy"] = pool_m.get("sample_accuracy")
    if not mistakes:
        prev_m = _finished(opts, r - 1) or {}
        m = {**base, "status": "no_mistakes", "accuracy": prev_m.get("accuracy"), "new_rows": 0, "corrections": 0,
             "similar_rows": 0, "rejected": 0, "pairs": 0, "teacher_requests": 0, "prompt_tokens": 0,
             "completion_tokens": 0, "cost_usd": 0.0, "model": str(prev), "wall_s": round(time.time() - t0, 2)}
        _write_json(rdir / FINISHED, m)
        return m
    # 2. teacher corrections (new_rows.jsonl is append-only: corrections already there are not asked again)
    new_file = rdir / "new_rows.jsonl"
    written_before = _read_jsonl(new_file)
    have = {str(x["id"]) for x in written_before}
    tally: Counter = Counter()
    for row in written_before:  # paid for in an interrupted run: counted from the row, not asked again
        count_row(tally, row, from_disk=True)
    todo = sum(1 for x in mistakes if f"{x['id']}#r{r}" not in have)
    say(f"round {r}: {len(mistakes)} mistakes on the pool ({todo} to correct)")

    seen = set(have)  # answered: a later run of the step (batch mode) asks only for what is still missing
    written = 0

    async def correct() -> None:
        nonlocal written
        counts = await write_rows(correction_rows(mistakes, teacher, r, tpls.correct, opts, seen, tally), new_file)
        written += counts.written
        for path in (new_file, rejects_path_for(new_file)):
            seen.update(str(x["id"]) for x in _read_jsonl(path))

    await _answered(teacher, f"round {r}: corrections", correct)
    _check_budget(teacher, r, "corrections")
    corrections = _read_jsonl(new_file)
    rejects = _read_jsonl(rejects_path_for(new_file))
    # 3. LLM2LLM: new exercises aimed at the same weaknesses
    similar_rows: list[dict[str, Any]] = []
    if opts.similar and tpls.similar is not None:
        similar_rows, sim_rejects = await _similar(opts, r, rdir, mistakes, teacher, tpls.similar, tally, say)
        rejects += sim_rejects
    new_rows = corrections + similar_rows
    # 4. self-reflection pairs
    pairs = pairs_from_rows(corrections)
    write_jsonl(pairs, rdir / "pairs.jsonl")
    # 5. train further on the new rows (accumulated with every earlier round's rows, or alone); from_base:
    # a fresh start from the base student on every row so far
    train_rows = list(new_rows)
    if opts.accumulate:
        earlier = [_round_rows(opts, q) for q in range(1, r)]
        train_rows = _read_jsonl(as_path(opts.initial)) + [x for rows in earlier for x in rows] + new_rows
    train_file = rdir / "train.jsonl"
    write_jsonl(train_rows, train_file)
    model = prev  # nothing usable came back: the student is unchanged
    if new_rows:
        sft_dir = rdir / ("model_sft" if opts.dpo == "each" and pairs else "model")
        _train(opts, str(opts.student) if opts.from_base else str(prev), train_file, sft_dir)
        model = sft_dir
        if opts.dpo == "each" and pairs:
            _train_dpo(opts, sft_dir, rdir / "pairs.jsonl", rdir / "model")
            model = rdir / "model"
    # 6. held-out evaluation
    m = {**base, "status": "trained" if new_rows else "no_new_rows", **_heldout(opts, model, rdir),
         "new_rows": len(new_rows), "corrections": len(corrections), "similar_rows": len(similar_rows),
         "rejected": len(rejects), "reject_reasons": dict(Counter(_reason_kind(x) for x in rejects)),
         "pairs": len(pairs), "train_rows": len(train_rows), "teacher_requests": tally["requests"],
         "teacher_requests_cached": tally["cached"], "prompt_tokens": tally["prompt_tokens"],
         "completion_tokens": tally["completion_tokens"], "cost_usd": tally["cost_micro_usd"] / 1e6,
         "written_this_run": written, "model": str(model), "wall_s": round(time.time() - t0, 2)}
    _write_json(rdir / FINISHED, m)
    return m


def _round_rows(opts: TailorOptions, r: int) -> list[dict[str, Any]]:
    rdir = _round_dir(opts, r)
    return _read_jsonl(rdir / "new_rows.jsonl") + _read_jsonl(rdir / "similar_rows.jsonl")


def _reason_kind(row: dict[str, Any]) -> str:
    return str(row["reject_reason"]).split(" (")[0].split(": ")[0]


def _reflection(opts: TailorOptions, history: list[dict[str, Any]], say: Callable[[str], None]) -> dict[str, Any] | None:
    """dpo="final": DPO from the best round's student on every round's self-reflection pairs."""
    out = Path(opts.out) / "reflection"
    if (out / FINISHED).exists():
        return json.loads((out / FINISHED).read_text())
    pairs = [p for h in history if h["round"] > 0 for p in _read_jsonl(_round_dir(opts, h["round"]) / "pairs.jsonl")]
    if not pairs:
        say("reflection: no self-reflection pairs (no corrected mistakes); DPO step skipped")
        return None
    best = _best_round(history)
    assert best is not None  # a round with pairs was scored
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(pairs, out / "pairs.jsonl")
    t0 = time.time()
    say(f"reflection: DPO from round {best['round']}'s student on {len(pairs)} self-reflection pairs")
    _train_dpo(opts, Path(best["model"]), out / "pairs.jsonl", out / "model")
    m = {"round": "dpo", "status": "trained", "from_round": best["round"], **_heldout(opts, out / "model", out),
         "pairs": len(pairs), "teacher_requests": 0, "model": str(out / "model"), "wall_s": round(time.time() - t0, 2)}
    _write_json(out / FINISHED, m)
    return m


def calls_per_mistake(opts: TailorOptions) -> int:
    """Teacher calls one mistake costs: its correction; with ``similar = m``, one request for the m new
    exercises and one independent solution of each (an upper bound: dropped exercises are not solved)."""
    return 1 + (1 + opts.similar if opts.similar else 0)


def _best_round(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The round with the best held-out accuracy (the earliest on a tie), or None before any score."""
    scored = [h for h in history if h.get("accuracy") is not None]
    return max(scored, key=lambda h: (h["accuracy"], -h["round"])) if scored else None


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


def plot_rounds(history: list[dict[str, Any]], path: Path, reflection: dict[str, Any] | None = None, *,
                best: Any = None, title: str = "tailored distillation") -> bool:
    """Held-out (and pool) accuracy per round as a PNG, the DPO step as a separate star; False when
    there is nothing to draw.  Used for ``OUT/accuracy.png`` and by the pipeline report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [h for h in history if isinstance(h.get("round"), int)]
    pts = [(h["round"], h["accuracy"]) for h in rounds if h.get("accuracy") is not None]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot([r for r, _ in pts], [100 * a for _, a in pts], marker="o", label="held-out")
    pool = [(h["round"], h["pool_accuracy"]) for h in rounds if h.get("pool_accuracy") is not None]
    if pool:  # round r's pool accuracy is the student *entering* round r
        ax.plot([r for r, _ in pool], [100 * a for _, a in pool], marker=".", linestyle="--", alpha=0.7,
                label="training pool (student entering the round)")
    ticks = [r for r, _ in pts]
    labels = [str(t) for t in ticks]
    for r, a in pts:
        if r == best:
            ax.annotate("best", (r, 100 * a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if reflection is not None and reflection.get("accuracy") is not None:
        x = ticks[-1] + 1
        ax.plot([x], [100 * reflection["accuracy"]], marker="*", markersize=12, linestyle="none",
                label=f"+ DPO self-reflection (from round {reflection.get('from_round')})")
        ticks.append(x)
        labels.append("DPO")
    ax.set_xticks(ticks, labels)
    ax.margins(y=0.15)  # room for the "best" label
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _check_budget(teacher: Teacher, r: int, what: str) -> None:
    """Requests a spent budget did not send yield nothing: stop before using a partial step."""
    if teacher.budget_exhausted:
        raise BudgetExceeded(f"spent during round {r}'s {what}")


async def run_tailored(opts: TailorOptions, teacher: Teacher, *, say: Callable[[str], None] = log.info
                       ) -> dict[str, Any]:
    """Run (or resume) the loop; returns ``rounds.json``'s content.

    ``{rounds: [per-round metrics], stopped, budget_exhausted, best_round, best_accuracy, reflection}``.
    """
    tpls = check_options(opts)
    opts.settings.check()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    stopped: str | None = None
    budget = False
    for r in range(opts.rounds + 1):
        done = _finished(opts, r)
        if done is not None:
            say(f"round {r}: finished before (accuracy {done.get('accuracy')}); skipped")
            m = done
        elif r == 0:
            m = _round0(opts)
        else:
            try:
                m = await _round(opts, r, teacher, tpls, say)
            except BudgetExceeded as exc:
                budget = True
                stopped = (f"round {r}: the teacher budget is spent ({exc}); everything paid for is kept "
                           "(rows on disk, answers in the request cache): rerun with a higher --max-cost to resume "
                           "this round")
                break
        history.append(m)
        if done is None:
            say(f"round {r}: held-out accuracy {m.get('accuracy')}, mistakes {m.get('mistakes')}, "
                f"new rows {m.get('new_rows')} ({m.get('corrections')} corrections, {m.get('similar_rows')} "
                f"new exercises), rejected {m.get('rejected')}")
        stopped = _stop_reason(history, opts)
        if stopped:
            break
    if stopped is None:
        stopped = f"finished the {opts.rounds} round(s) asked for"
    best = _best_round(history)
    reflection = _reflection(opts, history, say) if opts.dpo == "final" and not budget and history else None
    if reflection is not None:
        say(f"reflection: held-out accuracy after DPO {reflection['accuracy']} "
            f"(round {reflection['from_round']}: {next(h['accuracy'] for h in history if h['round'] == reflection['from_round'])})")
    result = {"rounds": history, "stopped": stopped, "budget_exhausted": budget,
              "best_round": best["round"] if best else None, "best_accuracy": best["accuracy"] if best else None,
              "best_model": best.get("model") if best else None, "reflection": reflection,
              "teacher_requests": sum(h.get("teacher_requests", 0) for h in history),
              "cost_usd": round(sum(h.get("cost_usd") or 0.0 for h in history), 6)}
    _write_json(out / "rounds.json", result)
    if history:
        plot_rounds(history, out / "accuracy.png", reflection, best=result["best_round"])
    say(stopped)
    return result
