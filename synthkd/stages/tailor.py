"""Pipeline stage ``tailor``: the tailored multi-round loop (:mod:`synthkd.loops.tailored`) as a stage.

Input: the training pool (rows with the question and the gold answer).  Options:

* ``initial``: the initial distilled rows round 0 trains on -- an earlier stage's name (its rows) or a
  file; ``heldout``: the held-out file (required; the stopping rule and per-round accuracy use it);
* ``student``: ``tiny`` (a small Llama built from the initial rows and the pool's questions, shaped by
  the ``tiny:`` block as in ``train.sft``), an earlier train stage, a model directory or a hub id;
* every other :class:`~synthkd.loops.tailored.TailorConfig` field: the loop's (``rounds``,
  ``patience``, ``mode``, ``accumulate``, ``template``, ``max_new_tokens``...) and the trainer's
  (:class:`~synthkd.train.common.TrainSettings`: ``epochs``, ``learning_rate``, ``batch_size``...).
  Why generated from that one declaration (:func:`synthkd.options.stage_model`) rather than listed: the
  loop grows options, and a new field must work in a pipeline and in ``synthkd tailor`` alike, with the
  same default, while a typo is still an "unknown key" naming its line.

Output: ``runs/<name>/<stage>/`` is the loop's directory (``round_<r>/``, ``rounds.json``,
``accuracy.png``); ``<stage>/model`` links to the best round's student, and the model's files are linked
at the top of ``<stage>/`` as well, so ``runs/<name>/<stage>`` loads as a model and a later ``eval``
stage can say ``student: <stage>``.  ``<stage>.jsonl`` holds the self-reflection pairs of all rounds
({prompt, chosen, rejected}; a ``train.dpo`` input).  The manifest gets the per-round metrics, the stop
reason and the best round; the stage's tokens and cost are the sums over the rounds.

Resume: an interrupted stage is called again on the same directory and the loop resumes per round
(finished rounds are never retrained; answered corrections come from disk and the request cache).
The held-out file and the initial rows are registered as inputs of the stage, so editing either
changes the fingerprint and the loop starts over (the old directory is moved to ``<stage>.prev``).
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from synthkd.config import ConfigError
from synthkd.jsonl_io import InputError, iter_jsonl
from synthkd.loops import tailored
from synthkd.loops.tailored import TailorConfig, TailorOptions
from synthkd.options import stage_fields, stage_model
from synthkd.stages.base import Estimate, StageContext, check_budget, register_stage
from synthkd.stages.train import TinyStudent, feature_config
from synthkd.teachers.base import BudgetExceeded

#: Stage kinds whose ``runs/<name>/<stage>`` directory is a model.
_MODEL_KINDS = ("train.sft", "train.dpo", "tailor")
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z-]*)")


class _Base(BaseModel):
    """The stage's own options (the rest is generated from TailorConfig)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    student: str = Field(description="'tiny', an earlier train stage, a model directory or a hub id")
    tiny: TinyStudent = Field(default_factory=TinyStudent, description="with student 'tiny': its shape")  # type: ignore[valid-type]
    initial: str | None = Field(None, description="an earlier stage's name (its rows) or a jsonl file")
    heldout: str | None = Field(None, description="held-out jsonl: id, question, gold (required)")


# Every TailorConfig stage field (the loop's and the trainer's, TrainSettings): the same defaults,
# bounds and help as ``synthkd tailor``.  Not here (TrainSettings' stage=False): save_steps -- a round is
# the unit of resume, so no intermediate checkpoints (0) -- save_total_limit and resume.
TailorStageOptions = stage_model(TailorConfig, name="TailorStageOptions", base=_Base)


def _mentions_path(tp: Any) -> bool:
    return tp is Path or any(_mentions_path(a) for a in typing.get_args(tp))


#: Template fields (a name, or a .j2 file next to the pipeline).
_PATH_FIELDS = {f.name for f in stage_fields(TailorConfig)
                if _mentions_path(typing.get_type_hints(TailorConfig)[f.name]) and f.name != "provenance"}


@register_stage("tailor")
class TailorStage:
    options_model = TailorStageOptions

    # ------------------------------------------------------------------ resolution
    @staticmethod
    def _earlier(ctx: StageContext, name: str, kinds: tuple[str, ...] | None = None) -> bool:
        return any(s.name == name and (kinds is None or s.kind in kinds) for s in ctx.pipeline.stages[: ctx.index])

    def _initial_path(self, ctx: StageContext, o: Any) -> Path:
        if self._earlier(ctx, o.initial):
            return ctx.run_dir / f"{o.initial}.jsonl"
        return ctx.resolve(o.initial)

    def _student_name(self, ctx: StageContext, o: Any) -> str:
        if self._earlier(ctx, o.student, _MODEL_KINDS):
            return str(ctx.run_dir / o.student)
        p = ctx.resolve(o.student)
        return str(p) if p.exists() else o.student

    def _config(self, ctx: StageContext, o: Any, student: str) -> TailorConfig:
        given: dict[str, Any] = {}
        for n in _PATH_FIELDS:
            v = getattr(o, n)
            if isinstance(v, (str, Path)) and not Path(v).is_absolute() and ctx.resolve(str(v)).exists():
                given[n] = ctx.resolve(str(v))  # a file next to the pipeline (a template.j2); a name stays a name
        return feature_config(TailorConfig, ctx, o, student=student, pool=ctx.input,
                              initial=self._initial_path(ctx, o), heldout=ctx.resolve(o.heldout),
                              output=ctx.run_dir / ctx.stage.name,
                              save_steps=0,  # a round is the unit of resume: no intermediate checkpoints
                              **given)

    def _tailor_options(self, ctx: StageContext, o: Any, student: str) -> TailorOptions:
        return self._config(ctx, o, student).to_options()

    # ------------------------------------------------------------------ checks (before anything runs)
    def check(self, ctx: StageContext, o: Any) -> None:
        from synthkd.train.export import TRACE_FREE_MODES as MODES  # the loop writes rows without traces

        problems = []
        if not o.heldout:
            problems.append("heldout: a held-out set is required (a jsonl of rows with the question and the gold "
                            "answer): the loop's stopping rule and its per-round accuracy are measured on it")
        elif not ctx.resolve(o.heldout).is_file():
            problems.append(f"heldout: {ctx.resolve(o.heldout)} not found")
        if not o.initial:
            problems.append("initial: name the stage (or the file) whose rows round 0 trains on")
        elif not self._earlier(ctx, o.initial):
            if any(s.name == o.initial for s in ctx.pipeline.stages[ctx.index:]):
                problems.append(f"initial: {o.initial!r} is this or a later stage; name an earlier stage or a file")
            elif not ctx.resolve(o.initial).is_file():
                problems.append(f"initial: {o.initial!r} is neither an earlier stage nor an existing file")
        if any(s.name == o.student for s in ctx.pipeline.stages[ctx.index:]):
            problems.append(f"student: {o.student!r} is this or a later stage; name an earlier train stage, "
                            "'tiny', a model directory or a hub id")
        elif any(s.name == o.student and s.kind not in _MODEL_KINDS for s in ctx.pipeline.stages[: ctx.index]):
            problems.append(f"student: {o.student!r} is a {next(s.kind for s in ctx.pipeline.stages if s.name == o.student)!r} "
                            "stage, not a train stage")
        if o.mode not in MODES:
            problems.append(f"mode {o.mode!r}: use one of {', '.join(MODES)}")
        if problems:
            raise ConfigError("; ".join(problems))
        # the loop's own checks (every option it has, templates included); an initial file made by an
        # earlier stage does not exist yet, so the pool stands in for it here
        opts = self._tailor_options(ctx, o, o.student)
        if not Path(opts.initial).exists():
            opts.initial = ctx.input
        try:
            tailored.check_options(opts)
            opts.settings.check()
        except InputError as exc:  # the loop speaks in CLI flags (--sample-temperature); a pipeline in keys
            raise ConfigError("; ".join(_FLAG.sub(lambda m: m.group(1).replace("-", "_"), x) for x in exc.problems)) from None
        # the held-out file and the initial rows are inputs too: editing them changes the fingerprint
        ctx.inputs["heldout"] = ctx.resolve(o.heldout)
        ctx.inputs["initial"] = self._initial_path(ctx, o)

    # ------------------------------------------------------------------ run
    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        import asyncio

        out = ctx.run_dir / ctx.stage.name
        out.mkdir(parents=True, exist_ok=True)
        opts = self._tailor_options(ctx, o, o.student)
        tailored.check_options(opts)  # before any model is built or teacher called: a bad file costs nothing
        opts.student = await asyncio.to_thread(self._base_student, ctx, o, out)
        teacher = ctx.teacher()
        name = ctx.stage.name
        result = await tailored.run_tailored(opts, teacher, say=lambda m: ctx.log(f"[{name}] {m}"))
        model, made_by = _link_final_model(out, result)
        pairs = _write_pairs(out, result, ctx.output)
        if result.get("budget_exhausted"):  # the stage stays "running": a rerun with a larger budget resumes
            raise BudgetExceeded(f"[{name}] budget reached: {result.get('stopped')}")
        check_budget(ctx)
        return _counts(ctx, result, model, made_by, pairs, out)

    def _base_student(self, ctx: StageContext, o: Any, out: Path) -> str:
        if o.student != "tiny":
            return self._student_name(ctx, o)
        where = out / "base-student"  # inside the stage directory: moved aside with it when the options change
        if (where / "config.json").exists():
            return str(where)  # resumed: the same student round 0 started from
        from synthkd.train.export import DEFAULT_ANSWER_TEMPLATE
        from synthkd.train.sft import TinyStudentShape, build_tiny_student_from

        # the initial rows' content fields (not their provenance: see build_tiny_student_from) and the
        # pool's questions, which the student answers every round
        pool = [str(v) for _, row in iter_jsonl(ctx.input) for k in ("question", "input")
                if isinstance(v := row.get(k), str)]
        t = o.tiny
        shape = TinyStudentShape(vocab_size=t.vocab_size, hidden_size=t.hidden_size, layers=t.layers, heads=t.heads,
                                 seed=t.seed)
        return str(build_tiny_student_from([self._initial_path(ctx, o)], where, shape,
                                           extra_texts=(DEFAULT_ANSWER_TEMPLATE.format(answer="0123456789"), *pool)))

    # ------------------------------------------------------------------ estimate
    def estimate(self, ctx: StageContext, o: Any) -> Estimate:
        """An upper bound: every pool row a mistake in every round (capped by ``max_mistakes``) -- the real
        count is known only as the loop runs -- times the teacher calls one mistake costs."""
        from synthkd.jsonl_io import load_rows
        from synthkd.templates import load_template

        rows, _ = load_rows(ctx.input)
        opts = self._tailor_options(ctx, o, o.student)
        mistakes = len(rows) if opts.max_mistakes is None else min(len(rows), opts.max_mistakes)
        per_mistake = tailored.calls_per_mistake(opts)
        name = opts.template
        tpl = load_template(ctx.resolve(name) if isinstance(name, str) and name.endswith(".j2") else name)
        quoted = opts.max_new_tokens or 256  # the student's wrong solution is quoted in the correction prompt
        chars = 0
        for r in rows[:mistakes]:
            q = next((str(r[k]) for k in ("question", "input", "prompt", "text") if r.get(k)), "")
            chars += len(tpl.render(question=q, student_rationale="", answer=str(r.get(opts.pool_gold_field, ""))))
        calls = mistakes * opts.rounds * per_mistake
        ctx.log(f"[{ctx.stage.name}] estimate is an upper bound: mistakes are not known in advance, so every pool "
                f"row counts as a mistake in each round ({mistakes} x {opts.rounds} rounds x {per_mistake} "
                "teacher call(s) per mistake)")
        return Estimate(calls, (chars // 4 + mistakes * quoted) * opts.rounds * per_mistake,
                        calls * (opts.max_tokens or 256))


# ------------------------------------------------------------------------------------------------ helpers
def _final_model(out: Path, result: dict[str, Any]) -> tuple[Path | None, str | None]:
    """The student to hand on, and which step made it: the best round's (by held-out accuracy, the loop's
    own choice), or the DPO self-reflection model (``dpo: final``) when it scores at least as well."""
    cands: list[tuple[Any, str, str | None]] = []
    best = result.get("best_round")
    if best is not None:
        h: dict[str, Any] = next((h for h in result["rounds"] if h.get("round") == best), {})
        cands.append((result.get("best_accuracy"), f"round {best}",
                      result.get("best_model") or h.get("model") or str(out / f"round_{best}" / "model")))
    refl = result.get("reflection") or {}
    if refl.get("accuracy") is not None and refl.get("model") and (not cands or refl["accuracy"] >= (cands[0][0] or 0)):
        cands.insert(0, (refl["accuracy"], "dpo self-reflection", refl["model"]))
    for _, what, model in cands:
        if not model:
            continue
        p = Path(model)
        try:  # recorded absolute; re-rooted in this directory so a moved run directory still works
            p = out / p.resolve().relative_to(out.resolve())
        except ValueError:
            pass
        if (p / "config.json").exists():
            return p, what
    return None, None


def _symlink(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".tmp-link")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic: a reader never sees the link missing


def _link_final_model(out: Path, result: dict[str, Any]) -> tuple[Path | None, str | None]:
    """``out/model`` -> the final model (see :func:`_final_model`, returned with it), and its files linked
    at the top of ``out`` (relative links)."""
    model, made_by = _final_model(out, result)
    for old in out.iterdir():  # the links of an earlier best round
        if old.is_symlink():
            old.unlink()
    if model is None:
        return None, None
    _symlink(out / "model", os.path.relpath(model, out))
    for f in sorted(model.iterdir()):
        if f.is_file() and not (out / f.name).exists():
            _symlink(out / f.name, f"model/{f.name}")
    return model, made_by


def _write_pairs(out: Path, result: dict[str, Any], dest: Path) -> int:
    """All rounds' self-reflection pairs, in round order, as the stage's rows (a DPO input)."""
    rows: list[str] = []
    for h in result["rounds"]:
        f = out / f"round_{h['round']}" / "pairs.jsonl"
        if h.get("round") and f.exists():
            rows.extend(line for line in f.read_text().splitlines() if line.strip())
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in rows))
    os.replace(tmp, dest)
    return len(rows)


_ROUND_KEYS = ("round", "status", "accuracy", "pool_accuracy", "mistakes", "new_rows", "corrections", "similar_rows",
               "rejected", "pairs",
               "train_rows", "teacher_requests", "prompt_tokens", "completion_tokens", "cost_usd", "wall_s")


def _counts(ctx: StageContext, result: dict[str, Any], model: Path | None, made_by: str | None, pairs: int,
            out: Path) -> dict[str, Any]:
    rounds = []
    for h in result["rounds"]:
        # the brief's columns first (None where a round has none, e.g. round 0's mistakes), then the rest
        rounds.append({**{k: h.get(k) for k in _ROUND_KEYS}, **{k: v for k, v in h.items() if k not in _ROUND_KEYS}})

    def total(key: str) -> Any:
        return sum(h.get(key) or 0 for h in rounds)

    with open(ctx.input, "rb") as f:
        rows_in = sum(1 for line in f if line.strip())
    return {
        "rows_in": rows_in, "rounds": rounds, "stopped": result.get("stopped"),
        "best_round": result.get("best_round"), "best_accuracy": result.get("best_accuracy"),
        "teacher_requests": total("teacher_requests"), "prompt_tokens": total("prompt_tokens"),
        "completion_tokens": total("completion_tokens"), "cost_usd": round(total("cost_usd"), 8),
        # round 0's new_rows are the initial rows; the teacher's corrections and new exercises come after
        "new_rows": sum(h.get("new_rows") or 0 for h in rounds if h.get("round")),
        "pairs": pairs, "model_dir": str(model) if model else None, "final_model": made_by,
        "reflection": result.get("reflection"), "budget_exhausted": bool(result.get("budget_exhausted")),
        "plot": str(out / "accuracy.png"),
        "_outputs": [out, ctx.output],
    }


__all__ = ["TailorStage", "TailorStageOptions"]
