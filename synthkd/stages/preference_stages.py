"""Pipeline stage ``train.dpo``, and the helpers that name a student by an earlier train stage (also
used by ``generate.preferences``, in generate_preferences.py).

``train.dpo`` runs :func:`synthkd.train.dpo.train_dpo` from an earlier train stage's model (or a
path / hub id), with the reference-model options of ``synthkd train dpo``, and records the loss
history like ``train.sft`` (the report draws the training curve from it).

Note on reruns: the pipeline fingerprints a stage by its options and *input files*; the student model
named by stage is not an input file, so a retrained student is picked up only with ``--from`` (the same
holds for ``eval``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from synthkd.jsonl_io import InputError
from synthkd.pipeline import StageContext, register_stage
from synthkd.stages.train_stages import TRAIN_STAGE_RESUMABLE

TRAIN_KINDS = ("train.sft", "train.dpo", "tailor")


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _earlier_train_stage(ctx: StageContext, name: str) -> bool:
    """Whether ``name`` is a train stage before this one (a later one would not exist yet)."""
    return any(s.name == name and s.kind in TRAIN_KINDS for s in ctx.pipeline.stages[: ctx.index])


def _later_or_untrained_stage(ctx: StageContext, name: str) -> str | None:
    for i, s in enumerate(ctx.pipeline.stages):
        if s.name == name and not (i < ctx.index and s.kind in TRAIN_KINDS):
            where = "a later stage" if i >= ctx.index else f"a {s.kind!r} stage, not a train stage"
            return f"{name!r} is {where}: name an earlier train.sft / train.dpo stage, a model directory or a model"
    return None


def resolve_model_dir(ctx: StageContext, name: str) -> str:
    """An earlier train stage's model directory, an existing directory (relative to the pipeline's base),
    or ``name`` unchanged (a hub id)."""
    if _earlier_train_stage(ctx, name):
        return str(ctx.run_dir / name)
    p = ctx.resolve(name)
    return str(p) if p.exists() else name


# ----------------------------------------------------------------------------- train.dpo
@register_stage("train.dpo")
class DPOStage:
    resumable = TRAIN_STAGE_RESUMABLE  # an unfinished attempt's directory is moved aside: DPO starts over
    class Options(_Opts):
        student: str = Field(description="an earlier train stage's name, a model directory or a hub id")
        ref: str = "implicit"
        ref_model: Optional[str] = None  # with ref: explicit; a stage name or a model dir / hub id
        beta: float = Field(0.1, gt=0)
        loss_type: Union[str, list[str]] = "sigmoid"
        precompute_ref: bool = False
        prompt_field: Optional[str] = None
        chosen_field: str = "chosen"
        rejected_field: str = "rejected"
        epochs: float = 1.0
        max_steps: int = -1
        learning_rate: float = 5e-7
        batch_size: int = 8
        grad_accum: int = 1
        max_length: int = 1024
        eval_fraction: float = Field(0.0, ge=0, lt=1)
        lora: bool = False
        bf16: Optional[bool] = None
        seed: int = 0
        logging_steps: int = 10
        skip_invalid: bool = False

    options_model = Options

    def check(self, ctx: StageContext, o: Options) -> None:
        from synthkd.train.dpo import REF_MODES

        problems = []
        if o.ref not in REF_MODES:
            problems.append(f"ref {o.ref!r}: use one of {', '.join(REF_MODES)}")
        if (o.ref == "explicit") != bool(o.ref_model):
            problems.append("ref_model goes with ref: explicit (and ref: explicit needs ref_model)")
        for key, name in (("student", o.student), ("ref_model", o.ref_model)):
            if name and (why := _later_or_untrained_stage(ctx, name)) is not None:
                problems.append(f"{key}: {why}")
        if problems:
            raise InputError(problems)

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        return await asyncio.to_thread(self._run, ctx, o)

    def _run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.train.common import TrainSettings
        from synthkd.train.dpo import DPOOptions, train_dpo
        from synthkd.train.export import Fields

        out = ctx.run_dir / ctx.stage.name
        settings = TrainSettings(epochs=o.epochs, max_steps=o.max_steps, learning_rate=o.learning_rate,
                                 batch_size=o.batch_size, grad_accum=o.grad_accum, max_length=o.max_length,
                                 lora=o.lora, bf16=o.bf16, seed=o.seed, logging_steps=o.logging_steps,
                                 skip_invalid=o.skip_invalid, save_steps=0)
        loss_type = [o.loss_type] if isinstance(o.loss_type, str) else list(o.loss_type)
        opts = DPOOptions(student=resolve_model_dir(ctx, o.student), input=ctx.input, output=out, ref=o.ref,
                          ref_model=resolve_model_dir(ctx, o.ref_model) if o.ref_model else None, beta=o.beta,
                          loss_type=loss_type, precompute_ref_log_probs=o.precompute_ref,
                          eval_fraction=o.eval_fraction,
                          fields=Fields(prompt=o.prompt_field, chosen=o.chosen_field, rejected=o.rejected_field),
                          settings=settings)
        record, trainer = train_dpo(opts)
        hist = out / "log_history.json"
        hist.write_text(json.dumps(trainer.state.log_history))
        rows = sum(1 for line in open(ctx.input, "rb") if line.strip())
        return {"rows_in": rows, "rows_used": (record.get("data") or {}).get("rows_used"),
                "policy_start": record.get("policy_start"), "reference": record.get("reference"),
                "beta": o.beta, "loss_type": loss_type, "model_dir": str(out), "loss_history": str(hist),
                "train_metrics": record.get("metrics", {}), "_outputs": [out]}

    def estimate(self, ctx: StageContext, o: Options) -> None:
        return None
