"""Pipeline stages for students: ``train.sft``, ``train.dpo`` and ``eval`` (need the ``[train]`` extra).

``train.sft`` trains a student (a local path or hub id, or ``tiny`` — a small Llama built from scratch
on the stage's own training texts, for offline runs and the demo) in one of the three modes (label,
rationale, multitask step-by-step) and writes it to ``runs/<name>/<stage>/``; its loss history feeds
the report's training curve.  ``eval`` scores a trained student on a held-out file and records the
metrics in the manifest (and the mistakes as rows, the input of the tailored loop).

``train.dpo`` runs :func:`synthkd.train.dpo.train_dpo` from an earlier train stage's model (or a
path / hub id), with the reference-model options of ``synthkd train dpo``, and records the loss
history like ``train.sft`` (the report draws the training curve from it).

Each stage's options are generated from its feature's config (``SFTConfig``, ``DPOConfig``,
``EvalConfig``: the same fields, defaults, bounds and help as ``synthkd train sft|dpo`` and
``synthkd eval``; see :mod:`synthkd.options`); only what is a stage's own (``tiny:``, a student named by
stage) is declared here.

Note on reruns: the pipeline fingerprints a stage by its options and *input files*; the student model
named by stage is not an input file, so a retrained student is picked up only with ``--from``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from synthkd.jsonl_io import InputError
from synthkd.options import stage_model
from synthkd.stages.base import StageContext, register_stage
from synthkd.train.dpo import DPOConfig
from synthkd.train.evaluate import EvalConfig
from synthkd.train.sft import SFTConfig, TinyStudentShape


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


#: The ``tiny:`` block of a stage whose student is ``tiny`` (the same fields, defaults and bounds as the
#: Python API's :class:`~synthkd.train.sft.TinyStudentShape`; a typo is an unknown key).
TinyStudent = stage_model(TinyStudentShape, name="TinyStudent")


def tiny_shape(o: Any) -> TinyStudentShape:
    return TinyStudentShape(**o.tiny.model_dump())


def feature_config(cls: type, ctx: StageContext, o: BaseModel, **given: Any) -> Any:
    """The feature config (``SFTConfig``...) from a stage's options: every key of ``o`` that is a field of
    ``cls``, a relative ``provenance`` (and a ``tokenizer`` directory) resolved against the pipeline's
    directory, then ``given``."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in o.model_dump().items() if k in names and k != "tiny"}
    if kw.get("provenance") is not None:
        kw["provenance"] = ctx.resolve(str(kw["provenance"]))
    tok = kw.get("tokenizer")
    if isinstance(tok, str) and tok and not Path(tok).is_absolute() and ctx.resolve(tok).exists():
        kw["tokenizer"] = str(ctx.resolve(tok))  # a tokenizer directory next to the pipeline; a hub id stays
    labels = kw.get("labels")
    if isinstance(labels, list) and len(labels) == 1 and Path(str(labels[0])).suffix.lower() in (".yaml", ".yml", ".json"):
        kw["labels"] = [str(ctx.resolve(str(labels[0])))]  # eval's label file, as every path in a pipeline
    elif isinstance(labels, str):
        kw["labels"] = [str(ctx.resolve(labels))] if Path(labels).suffix.lower() in (".yaml", ".yml", ".json") \
            else [x.strip() for x in labels.split(",") if x.strip()]
    kw.update(given)
    return cls(**kw)


#: Why train stages are not resumed (see ``synthkd.pipeline``): they write no intermediate checkpoints
#: (``save_steps=0``), so a killed or disk-full attempt leaves nothing worth resuming, only a torn model
#: directory.  The runner moves it aside (``<stage>.prev``) and the stage trains from scratch, from the
#: same rows in id order and the same seed: the result equals an uninterrupted run's.
TRAIN_STAGE_RESUMABLE = False


TRAIN_KINDS = ("train.sft", "train.dpo", "tailor")


def earlier_train_stage(ctx: StageContext, name: str) -> bool:
    """Whether ``name`` is a train stage before this one (a later one would not exist yet)."""
    return any(s.name == name and s.kind in TRAIN_KINDS for s in ctx.pipeline.stages[: ctx.index])


def later_or_untrained_stage(ctx: StageContext, name: str) -> str | None:
    for i, s in enumerate(ctx.pipeline.stages):
        if s.name == name and not (i < ctx.index and s.kind in TRAIN_KINDS):
            where = "a later stage" if i >= ctx.index else f"a {s.kind!r} stage, not a train stage"
            return f"{name!r} is {where}: name an earlier train.sft / train.dpo stage, a model directory or a model"
    return None


def resolve_model_dir(ctx: StageContext, name: str) -> str:
    """An earlier train stage's model directory, an existing directory (relative to the pipeline's base),
    or ``name`` unchanged (a hub id)."""
    if earlier_train_stage(ctx, name):
        return str(ctx.run_dir / name)
    p = ctx.resolve(name)
    return str(p) if p.exists() else name


# ----------------------------------------------------------------------------- train.sft
class _SFTStageBase(_Opts):
    tiny: TinyStudent = Field(default_factory=TinyStudent, description="with student 'tiny': its shape")  # type: ignore[valid-type]


@register_stage("train.sft")
class SFTStage:
    resumable = TRAIN_STAGE_RESUMABLE
    Options = stage_model(SFTConfig, name="SFTStageOptions", base=_SFTStageBase)
    options_model = Options

    def check(self, ctx: StageContext, o: Any) -> None:
        from synthkd.train.export import MODES

        if o.mode not in MODES:
            raise ValueError(f"mode {o.mode!r}: use one of {', '.join(MODES)}")

    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._run, ctx, o)

    def _run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        from synthkd.train.sft import train_sft

        out = ctx.run_dir / ctx.stage.name
        student = o.student
        if student != "tiny" and not Path(student).is_absolute() and (ctx.base_dir / student).exists():
            student = str(ctx.base_dir / student)
        # 'tiny' is built by the config, into runs/<name>/<stage>.tiny-student (tiny_student_dir)
        cfg = feature_config(SFTConfig, ctx, o, student=student, input=ctx.input, output=out, tiny=tiny_shape(o),
                             save_steps=0)  # 0: no intermediate checkpoints (a stage reruns from the cache)
        record, trainer, _ = train_sft(cfg)
        hist = out / "log_history.json"
        hist.write_text(json.dumps(trainer.state.log_history))
        rows = sum(1 for line in open(ctx.input, "rb") if line.strip())
        return {"rows_in": rows, "rows_used": (record.get("data") or {}).get("rows_used"), "mode": o.mode, "model_dir": str(out), "loss_history": str(hist),
                "train_metrics": record.get("metrics", {}), "_outputs": [out]}

    def estimate(self, ctx: StageContext, o: Any) -> None:
        return None


# ----------------------------------------------------------------------------- train.dpo
class _DPOStageBase(_Opts):
    student: str = Field(description="an earlier train stage's name, a model directory, a hub id, or 'tiny'")
    tiny: TinyStudent = Field(default_factory=TinyStudent, description="with student 'tiny': its shape")  # type: ignore[valid-type]


@register_stage("train.dpo")
class DPOStage:
    resumable = TRAIN_STAGE_RESUMABLE  # an unfinished attempt's directory is moved aside: DPO starts over
    Options = stage_model(DPOConfig, name="DPOStageOptions", base=_DPOStageBase)
    options_model = Options

    def check(self, ctx: StageContext, o: Any) -> None:
        from synthkd.train.dpo import REF_MODES

        problems = []
        if o.ref not in REF_MODES:
            problems.append(f"ref {o.ref!r}: use one of {', '.join(REF_MODES)}")
        if (o.ref == "explicit") != bool(o.ref_model):
            problems.append("ref_model goes with ref: explicit (and ref: explicit needs ref_model)")
        for key, name in (("student", o.student), ("ref_model", o.ref_model)):
            if name and (why := later_or_untrained_stage(ctx, name)) is not None:
                problems.append(f"{key}: {why}")
        if problems:
            raise InputError(problems)

    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._run, ctx, o)

    def _run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        from synthkd.train.dpo import train_dpo

        out = ctx.run_dir / ctx.stage.name
        student = o.student if o.student == "tiny" else resolve_model_dir(ctx, o.student)
        cfg = feature_config(DPOConfig, ctx, o, student=student, input=ctx.input, output=out, tiny=tiny_shape(o),
                             ref_model=resolve_model_dir(ctx, o.ref_model) if o.ref_model else None,
                             save_steps=0)  # 0: no intermediate checkpoints (a stage reruns from the cache)
        opts = cfg.to_options()
        record, trainer = train_dpo(opts)
        hist = out / "log_history.json"
        hist.write_text(json.dumps(trainer.state.log_history))
        rows = sum(1 for line in open(ctx.input, "rb") if line.strip())
        return {"rows_in": rows, "rows_used": (record.get("data") or {}).get("rows_used"),
                "policy_start": record.get("policy_start"), "reference": record.get("reference"),
                "beta": o.beta, "loss_type": opts.loss_type, "model_dir": str(out), "loss_history": str(hist),
                "train_metrics": record.get("metrics", {}), "_outputs": [out]}

    def estimate(self, ctx: StageContext, o: Any) -> None:
        return None


# ----------------------------------------------------------------------------- eval
class _EvalStageBase(_Opts):
    student: str = Field(description="an earlier train stage's name, or a model directory")


@register_stage("eval")
class EvalStage:
    # labels: the label file (a path, as in every feature) or a list of names
    Options = stage_model(EvalConfig, name="EvalStageOptions", base=_EvalStageBase,
                          types={"labels": Optional[Union[str, list[str]]]})
    options_model = Options

    async def run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._run, ctx, o)

    def _run(self, ctx: StageContext, o: Any) -> dict[str, Any]:
        from synthkd.train.evaluate import run_eval

        model_dir = ctx.run_dir / o.student
        if not model_dir.exists():
            model_dir = ctx.resolve(o.student)
        out = ctx.run_dir / ctx.stage.name
        report = run_eval(feature_config(EvalConfig, ctx, o, student=str(model_dir), input=ctx.input, output=out))
        m = report["metrics"]
        metrics = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "teacher" in report:
            metrics["teacher_accuracy"] = report["teacher"].get("accuracy")
        return {"rows_in": metrics.get("rows"), "metrics": metrics, "mistakes": report["mistakes"],
                "warnings": report["warnings"], "student": str(model_dir), "_outputs": [out]}

    def estimate(self, ctx: StageContext, o: Any) -> None:
        return None
