"""Pipeline stages for students: ``train.sft`` and ``eval`` (need the ``[train]`` extra).

``train.sft`` trains a student (a local path or hub id, or ``tiny`` — a small Llama built from scratch
on the stage's own training texts, for offline runs and the demo) in one of the three modes (label,
rationale, multitask step-by-step) and writes it to ``runs/<name>/<stage>/``; its loss history feeds
the report's training curve.  ``eval`` scores a trained student on a held-out file and records the
metrics in the manifest (and the mistakes as rows, the input of the tailored loop).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from synthkd.pipeline import StageContext, register_stage


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyStudent(_Opts):
    vocab_size: int = 800
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    seed: int = 0


#: Why train stages are not resumed (see ``synthkd.pipeline``): they write no intermediate checkpoints
#: (``save_steps=0``), so a killed or disk-full attempt leaves nothing worth resuming, only a torn model
#: directory.  The runner moves it aside (``<stage>.prev``) and the stage trains from scratch, from the
#: same rows in id order and the same seed: the result equals an uninterrupted run's.
TRAIN_STAGE_RESUMABLE = False


@register_stage("train.sft")
class SFTStage:
    resumable = TRAIN_STAGE_RESUMABLE
    class Options(_Opts):
        student: str = Field(description="a local model directory, a hub id, or 'tiny'")
        tiny: TinyStudent = Field(default_factory=TinyStudent)
        mode: str = "label"
        rationale_weight: float = Field(0.5, ge=0, le=1)
        input_field: Optional[str] = None
        rationale_field: str = "rationale"
        answer_field: str = "answer"
        epochs: float = 3.0
        max_steps: int = -1
        learning_rate: float = 2e-5
        batch_size: int = 8
        grad_accum: int = 1
        max_length: int = 512
        eval_fraction: float = 0.0
        lora: bool = False
        bf16: Optional[bool] = None
        seed: int = 0
        logging_steps: int = 10
        skip_invalid: bool = False  # rows without an answer/rationale are skipped (counted) instead of an error

    options_model = Options

    def check(self, ctx: StageContext, o: Options) -> None:
        from synthkd.train.export import MODES

        if o.mode not in MODES:
            raise ValueError(f"mode {o.mode!r}: use one of {', '.join(MODES)}")

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        return await asyncio.to_thread(self._run, ctx, o)

    def _run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.train.common import TrainSettings
        from synthkd.train.export import Fields
        from synthkd.train.sft import SFTOptions, train_sft

        out = ctx.run_dir / ctx.stage.name
        student = o.student
        if student == "tiny":
            student = str(self._tiny(ctx, o, out.parent / f"{ctx.stage.name}.tiny-student"))
        elif not Path(student).is_absolute() and (ctx.base_dir / student).exists():
            student = str(ctx.base_dir / student)
        settings = TrainSettings(epochs=o.epochs, max_steps=o.max_steps, learning_rate=o.learning_rate,
                                 batch_size=o.batch_size, grad_accum=o.grad_accum, max_length=o.max_length,
                                 lora=o.lora, bf16=o.bf16, seed=o.seed, logging_steps=o.logging_steps,
                                 skip_invalid=o.skip_invalid,
                                 save_steps=0)  # 0: no intermediate checkpoints (a stage reruns from the cache)
        fields = Fields(input=o.input_field, rationale=o.rationale_field, answer=o.answer_field)
        opts = SFTOptions(student=student, input=ctx.input, output=out, mode=o.mode, fields=fields,
                          rationale_weight=o.rationale_weight, eval_fraction=o.eval_fraction, settings=settings)
        record, trainer, _ = train_sft(opts)
        hist = out / "log_history.json"
        hist.write_text(json.dumps(trainer.state.log_history))
        rows = sum(1 for line in open(ctx.input, "rb") if line.strip())
        return {"rows_in": rows, "rows_used": (record.get("data") or {}).get("rows_used"), "mode": o.mode, "model_dir": str(out), "loss_history": str(hist),
                "train_metrics": record.get("metrics", {}), "_outputs": [out]}

    @staticmethod
    def _tiny(ctx: StageContext, o: Options, where: Path) -> Path:
        """A tiny random-init Llama whose tokenizer is trained on this stage's input texts (offline)."""
        from synthkd.train.tiny import build_tiny_student

        from synthkd.jsonl_io import iter_jsonl

        texts = []
        for _, row in iter_jsonl(ctx.input):  # the shared reader (a BOM accepted, bad lines named)
            texts.extend(str(v) for v in row.values() if isinstance(v, (str, int, float)))
        t = o.tiny
        return build_tiny_student(texts, where, vocab_size=t.vocab_size, hidden_size=t.hidden_size, layers=t.layers,
                                  heads=t.heads, seed=t.seed)

    def estimate(self, ctx: StageContext, o: Options) -> None:
        return None


@register_stage("eval")
class EvalStage:
    class Options(_Opts):
        student: str = Field(description="an earlier train stage's name, or a model directory")
        kind: str = "number"
        input_field: Optional[str] = None
        gold_field: str = "gold"
        teacher_field: Optional[str] = None
        choices_field: str = "choices"
        labels: Optional[list[str]] = None
        batch_size: int = 32
        max_new_tokens: Optional[int] = None
        limit: Optional[int] = None

    options_model = Options

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        return await asyncio.to_thread(self._run, ctx, o)

    def _run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        from synthkd.train.evaluate import EvalOptions, run_eval
        from synthkd.train.export import Fields

        model_dir = ctx.run_dir / o.student
        if not model_dir.exists():
            model_dir = ctx.resolve(o.student)
        out = ctx.run_dir / ctx.stage.name
        opts = EvalOptions(student=str(model_dir), input=ctx.input, kind=o.kind, fields=Fields(input=o.input_field),
                           gold_field=o.gold_field, teacher_field=o.teacher_field, choices_field=o.choices_field,
                           labels=o.labels, batch_size=o.batch_size, max_new_tokens=o.max_new_tokens,
                           limit=o.limit, out_dir=out)
        report = run_eval(opts)
        m = report["metrics"]
        metrics = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "teacher" in report:
            metrics["teacher_accuracy"] = report["teacher"].get("accuracy")
        return {"rows_in": metrics.get("rows"), "metrics": metrics, "mistakes": report["mistakes"],
                "warnings": report["warnings"], "student": str(model_dir), "_outputs": [out]}

    def estimate(self, ctx: StageContext, o: Options) -> None:
        return None
