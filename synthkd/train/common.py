"""What SFT and DPO share: hyper-parameters, device/precision choices, LoRA/QLoRA, saving, the training record.

Why here: both trainers must agree on how a run is configured (CPU vs GPU, bf16 fallback, LoRA), how
the result is saved (a plain model directory that ``load_student`` and ``local:PATH`` can load), and
what is written next to it (``synthkd_train.json`` + the model card), so ``synthkd eval`` and the
tailored loop never need to know which trainer produced a student.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from synthkd.jsonl_io import InputError
from synthkd.options import opt
from synthkd.train.model_card import write_card
from synthkd.train.student import TRAIN_RECORD, resolve_bf16


@dataclass
class TrainSettings:
    """Hyper-parameters common to SFT and DPO, declared once: each field's help text, bounds and CLI
    spelling feed ``synthkd train sft|dpo``, ``synthkd tailor`` and the ``train.*`` / ``tailor`` pipeline
    stages (see :mod:`synthkd.options`).

    ``save_steps``, ``save_total_limit`` and ``resume`` are not stage options (``stage=False``): a pipeline
    stage writes no intermediate checkpoints (``save_steps=0``; a stage that was cut short is rerun from
    scratch, see ``synthkd.stages.train.TRAIN_STAGE_RESUMABLE``), so there is nothing to keep or
    resume from."""

    epochs: float = opt(3.0, help="Training epochs.", ge=0)
    max_steps: int = opt(-1, help="Stop after this many optimizer steps (overrides --epochs when > 0).")
    learning_rate: float = opt(2e-5, help="Peak learning rate (random-init tiny students need ~1e-3).",
                               aliases=("--lr",), yaml_aliases=("lr",), gt=0)
    batch_size: int = opt(8, help="Per-device batch size.", ge=1)
    eval_batch_size: int | None = opt(None, help="Per-device eval batch size (default: --batch-size).", ge=1)
    grad_accum: int = opt(1, help="Gradient accumulation steps.", ge=1)
    max_length: int = opt(1024, help="Max tokens per sequence (prompt + completion).", ge=8)
    bf16: bool | None = opt(None, help="bf16 mixed precision (default: on a GPU that supports it; on CPU it falls "
                                       "back to fp32 with a warning).")
    lora: bool = opt(False, help="Train a LoRA adapter (peft) instead of all weights.")
    qlora: bool = opt(False, help="QLoRA: 4-bit NF4 base + LoRA (CUDA + bitsandbytes).")
    lora_r: int = opt(16, help="LoRA rank.", ge=1)
    lora_alpha: int = opt(32, help="LoRA alpha.")
    lora_dropout: float = opt(0.05, help="LoRA dropout.", ge=0, lt=1)
    lora_targets: str = opt("all-linear", help="'all-linear' or comma-separated module names.")
    merge_lora: bool = opt(True, help="Also save the LoRA-merged model in OUTPUT (adapter in OUTPUT/adapter).")
    save_steps: int = opt(500, help="Checkpoint every N steps and at the end (OUTPUT/checkpoints); 0: no checkpoints.",
                          ge=0, stage=False)
    save_total_limit: int = opt(2, help="Keep at most N checkpoints.", stage=False)
    eval_steps: int | None = opt(None, help="Evaluate every N steps (the eval set is always scored at the end).")
    logging_steps: int = opt(10, help="Log every N steps.", ge=1)
    seed: int = opt(0, help="Random seed (also of the eval split).")
    resume: bool = opt(False, help="Resume from the latest checkpoint in OUTPUT/checkpoints.", stage=False)
    warmup_ratio: float = opt(0.0, help="Linear warm-up over this fraction of the steps.", ge=0, lt=1)
    scheduler: str = opt("linear", help="LR schedule (linear, cosine, constant, ...).")
    weight_decay: float = opt(0.0, help="AdamW weight decay.")
    gradient_checkpointing: bool = opt(False, help="Recompute activations to save memory.")
    trust_remote_code: bool = opt(False, help="Allow model/tokenizer code shipped with the student (off by default).")
    tokenizer: str | None = opt(None, help="Tokenizer directory or Hub id, if not next to the weights.")
    revision: str | None = opt(None, help="Hub revision of the student.")
    provenance: Path | None = opt(None, help="JSON/YAML with extra provenance for the model card.")
    skip_invalid: bool = opt(False, help="Skip bad rows (counted in the card) instead of stopping.")
    report_to: str = opt("none", help="Trainer loggers: none, tensorboard, wandb...")
    dataloader_workers: int = opt(0, help="Data loader worker processes.", ge=0)

    def train_settings(self) -> "TrainSettings":
        """The plain :class:`TrainSettings` part of a feature config that extends it (``SFTConfig``...)."""
        return TrainSettings(**{f.name: getattr(self, f.name) for f in fields(TrainSettings)})

    def check(self) -> None:
        problems = []
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.grad_accum < 1:
            problems.append(f"--grad-accum must be >= 1, got {self.grad_accum}")
        if self.learning_rate <= 0:
            problems.append(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.max_length < 8:
            problems.append(f"--max-length must be >= 8, got {self.max_length}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("give --epochs > 0 or --max-steps > 0")
        if problems:
            raise InputError(problems)


@dataclass(kw_only=True)
class IdField:
    """The row-id field option of the train/eval feature configs."""

    id_field: str = opt("id", help="Row id field.")


@dataclass(kw_only=True)
class InputField(IdField):
    """The row-id and input-text field options of the train/eval feature configs."""

    input_field: str | None = opt(None, help="Input text field (default: first of input, question, prompt, text).")


def on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def precision(settings: TrainSettings) -> bool:
    """Effective bf16 flag (bf16 on CPU -> fp32 with a warning, see ``student.resolve_bf16``)."""
    return resolve_bf16(settings.bf16)


def quantization_config(settings: TrainSettings) -> Any:
    """4-bit NF4 for QLoRA; a clear error where it cannot work (no CUDA, no bitsandbytes)."""
    if not settings.qlora:
        return None
    if not on_gpu():
        raise InputError(["--qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); use --lora on CPU"])
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InputError(["--qlora needs the bitsandbytes package: pip install bitsandbytes"]) from None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def lora_config(settings: TrainSettings) -> Any:
    if not (settings.lora or settings.qlora):
        return None
    from peft import LoraConfig

    targets: Any = settings.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def trainer_args(settings: TrainSettings, output_dir: Path, *, has_eval: bool, bf16: bool) -> dict[str, Any]:
    """TrainingArguments shared by SFTConfig and DPOConfig."""
    gpu = on_gpu()
    args: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size or settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        bf16=bf16,
        fp16=False,
        use_cpu=not gpu,
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if settings.save_steps > 0 else "no",
        save_steps=settings.save_steps if settings.save_steps > 0 else 500,
        save_total_limit=settings.save_total_limit,
        eval_strategy="steps" if (has_eval and settings.eval_steps) else "no",
        eval_steps=settings.eval_steps,
        seed=settings.seed,
        warmup_steps=settings.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=settings.scheduler,
        weight_decay=settings.weight_decay,
        report_to=settings.report_to,
        dataloader_num_workers=settings.dataloader_workers,
        disable_tqdm=True,
        remove_unused_columns=True,
        ddp_find_unused_parameters=False,  # every parameter of a causal LM (and of a LoRA adapter) gets a gradient
        max_length=settings.max_length,
    )
    # transformers >= 5.x renamed gradient_checkpointing to activation_checkpointing (the old name warns)
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    args[key] = settings.gradient_checkpointing
    return args


def dist_state() -> Any:
    """accelerate's process state.  ``cpu`` must be passed on a machine without CUDA, else a CPU run under
    ``accelerate launch`` (gloo) would see itself as one process and every rank would act as the main one."""
    from accelerate import PartialState

    return PartialState(cpu=not on_gpu())


@contextmanager
def main_process_first() -> Iterator[bool]:
    """Under ``accelerate launch`` the main process writes shared files first; yields ``is_main_process``."""
    state = dist_state()
    with state.main_process_first():
        yield state.is_main_process


def is_main_process() -> bool:
    return dist_state().is_main_process


def world_size() -> int:
    return int(dist_state().num_processes)


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest *complete* checkpoint under ``ckpt_dir`` (for ``--resume``), else None.

    transformers writes ``trainer_state.json`` last, after the weights, optimizer and RNG states, and
    not atomically: a checkpoint whose state file is missing or is not valid JSON was cut short (a kill
    or a full disk while saving) and is passed over for the one before it."""
    if not ckpt_dir.exists():
        return None
    cks = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                 key=lambda p: int(p.name.split("-")[-1]))
    for ck in reversed(cks):
        try:
            json.loads((ck / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return str(ck)
    return None


def save_trained(trainer: Any, tokenizer: Any, out: Path, settings: TrainSettings) -> dict[str, Any]:
    """Save the trained student so that ``load_student(out)`` works.

    Full fine-tuning: the model.  LoRA: the adapter under ``out/adapter`` and, by default, the merged
    model in ``out``.  QLoRA: the adapter in ``out`` (a 4-bit base cannot be merged losslessly);
    ``load_student`` loads base + adapter from there.
    """
    from accelerate.utils import is_peft_model

    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    info: dict[str, Any] = {"saved": "model"}
    if is_peft_model(model):
        trainer.save_model(str(out / "adapter"))
        info = {"saved": "adapter", "adapter_dir": str(out / "adapter")}
        if settings.merge_lora and not settings.qlora:
            if is_main_process():
                merged = trainer.accelerator.unwrap_model(model).merge_and_unload()
                merged.save_pretrained(str(out))
            info["saved"] = "merged model + adapter"
        elif is_main_process():
            import shutil

            for f in (out / "adapter").iterdir():
                shutil.copy2(f, out / f.name)
    else:
        trainer.save_model(str(out))
    if is_main_process():
        tokenizer.save_pretrained(str(out))
    return info


def log_metrics(trainer: Any) -> dict[str, Any]:
    """First/last logged training loss, final eval loss and the rest, from the trainer's log history."""
    hist = trainer.state.log_history
    train = [h for h in hist if "loss" in h and "eval_loss" not in h]
    m: dict[str, Any] = {}
    if train:
        m["train_loss_first"] = float(train[0]["loss"])
        m["train_loss_last"] = float(train[-1]["loss"])
    for h in hist:
        for k in ("train_loss", "train_runtime", "train_samples_per_second"):
            if k in h:
                m[k] = float(h[k])
    evals = [h for h in hist if "eval_loss" in h]
    if evals:
        for k, v in evals[-1].items():
            if k.startswith("eval_") and isinstance(v, (int, float)):
                m[k] = float(v)
    m["global_steps"] = int(trainer.state.global_step)
    for k in ("loss_predict", "loss_explain", "rewards/margins", "rewards/accuracies"):
        vals = [h[k] for h in train if k in h]
        if vals:
            m[f"{k}_first"] = float(vals[0])
            m[f"{k}_last"] = float(vals[-1])
    return m


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("synthkd", "torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def write_record(out: Path, record: dict[str, Any]) -> None:
    """``synthkd_train.json`` (read back by load_student / eval / the local teacher) and README.md."""
    if not is_main_process():
        return
    record = {**record, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions()}
    (out / TRAIN_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    write_card(out, record)


def settings_summary(settings: TrainSettings, **extra: Any) -> dict[str, Any]:
    d = {k: v for k, v in asdict(settings).items() if k not in ("provenance", "report_to", "tokenizer", "revision")}
    d.update(extra)
    return d


def warn_once(msg: str) -> None:
    warnings.warn(msg, stacklevel=3)


__all__ = ["TrainSettings", "IdField", "InputField", "field"]
