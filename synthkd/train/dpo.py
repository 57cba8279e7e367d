"""Preference tuning of a student with TRL's DPOTrainer, optionally after an SFT stage.

Reference model, three ways (``--ref``):

* ``implicit``  no reference given: TRL loads a frozen copy of the policy from the same directory
  (so with ``--sft-input`` the reference is the *SFT* model, because the policy is loaded from there);
* ``explicit``  ``--ref-model PATH``: any student directory or Hub id;
* ``lora``      the policy is a LoRA adapter on the student and the reference is the same network with
  the adapters disabled (no second copy in memory).

Rows are ``{prompt|input|question, chosen, rejected}`` (field names configurable).  The prompt gets the
policy's inference prefix (``predict: `` for a multitask student) and its chat template or the plain
format, exactly as at inference.  ``beta`` and ``loss_type`` go to DPOConfig unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from synthkd.jsonl_io import InputError
from synthkd.train.common import (
    TrainSettings, latest_checkpoint, log_metrics, lora_config, main_process_first, on_gpu, precision,
    quantization_config, save_trained, settings_summary, trainer_args, world_size, write_record,
)
from synthkd.train.export import (
    Fields, build_preference_examples, in_id_order, load_json_dataset, preference_record, read_rows, split_by_id,
    write_jsonl,
)
from synthkd.train.model_card import load_extra_provenance, rows_provenance
from synthkd.train.student import has_chat_template, load_student, read_train_record

REF_MODES = ("implicit", "explicit", "lora")


@dataclass
class DPOOptions:
    student: str
    input: Path
    output: Path
    fields: Fields = field(default_factory=Fields)
    ref: str = "implicit"
    ref_model: str | None = None
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    precompute_ref_log_probs: bool = False
    eval_input: Path | None = None
    eval_fraction: float = 0.0
    # SFT first, then DPO from the SFT model
    sft_input: Path | None = None
    sft_mode: str = "label"
    sft_fields: Fields | None = None
    sft_settings: TrainSettings | None = None
    settings: TrainSettings = field(default_factory=TrainSettings)


def _check(opts: DPOOptions) -> None:
    problems = []
    if opts.ref not in REF_MODES:
        problems.append(f"--ref: unknown reference mode {opts.ref!r} (choose from {', '.join(REF_MODES)})")
    if opts.ref == "explicit" and not opts.ref_model:
        problems.append("--ref explicit needs --ref-model PATH")
    if opts.ref != "explicit" and opts.ref_model:
        problems.append(f"--ref-model is only used with --ref explicit (got --ref {opts.ref})")
    if opts.ref == "lora" and not (opts.settings.lora or opts.settings.qlora):
        opts.settings.lora = True
    if opts.ref != "lora" and (opts.settings.lora or opts.settings.qlora) and opts.ref == "implicit":
        opts.ref = "lora"  # a LoRA policy's natural reference is itself with adapters disabled
    if opts.beta <= 0:
        problems.append(f"--beta must be > 0, got {opts.beta}")
    if problems:
        raise InputError(problems)


def run_dpo(opts: DPOOptions) -> dict[str, Any]:
    """Optionally SFT, then DPO; returns the record written to ``OUT/synthkd_train.json``."""
    return train_dpo(opts)[0]


def train_dpo(opts: DPOOptions) -> tuple[dict[str, Any], Any]:
    """Like :func:`run_dpo`, also returning the trainer (its log history feeds a pipeline's loss curve)."""
    from trl import DPOConfig, DPOTrainer

    _check(opts)
    s = opts.settings
    s.check()
    out = Path(opts.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # Validate the preference rows (and the eval rows) before training or loading anything.
    examples, skipped = build_preference_examples(opts.input, opts.fields, skip_invalid=s.skip_invalid)
    eval_given = (build_preference_examples(opts.eval_input, opts.fields, skip_invalid=s.skip_invalid)[0]
                  if opts.eval_input is not None else None)
    extra = load_extra_provenance(s.provenance)
    sft_record = None
    policy_path = opts.student
    if opts.sft_input is not None:
        from synthkd.train.sft import SFTOptions, run_sft

        sft_settings = opts.sft_settings or replace(s, lora=False, qlora=False)
        sft_record = run_sft(SFTOptions(student=opts.student, input=opts.sft_input, output=out / "sft",
                                        mode=opts.sft_mode, fields=opts.sft_fields or Fields(),
                                        settings=sft_settings))
        policy_path = str(out / "sft")

    student = load_student(policy_path, tokenizer=s.tokenizer if sft_record is None else None, revision=s.revision,
                           trust_remote_code=s.trust_remote_code, bf16=precision(s) if s.qlora else False,
                           quantization_config=quantization_config(s), for_training=True)
    policy_record = read_train_record(policy_path) if student.source.kind == "local" else {}
    prefix = str(policy_record.get("inference_prefix") or "")
    chat = has_chat_template(student.tokenizer)

    if eval_given is not None:
        train_examples, eval_examples = examples, eval_given
    else:
        train_examples, eval_examples = split_by_id(examples, opts.eval_fraction, seed=s.seed)
    # Preference rows arrive in completion order (teacher and student answers racing, a resumed stage
    # appending what a killed one had not written): in id order the same pairs make the same student.
    train_examples, eval_examples = in_id_order(train_examples, natural=True), in_id_order(eval_examples, natural=True)
    data_dir = out / "data"
    with main_process_first() as main:
        if main:
            write_jsonl((preference_record(e, chat, prefix=prefix) for e in train_examples), data_dir / "train.jsonl")
            if eval_examples:
                write_jsonl((preference_record(e, chat, prefix=prefix) for e in eval_examples), data_dir / "eval.jsonl")
        train_ds = load_json_dataset(data_dir / "train.jsonl")
        eval_ds = load_json_dataset(data_dir / "eval.jsonl") if eval_examples else None

    ref_model = None
    if opts.ref == "explicit":
        ref_model = load_student(opts.ref_model, trust_remote_code=s.trust_remote_code, for_training=True).model  # type: ignore[arg-type]
        ref_model.eval()
    peft = lora_config(s)  # None unless --lora/--qlora; with --ref lora the reference is the adapter-less policy

    bf16 = precision(s)
    ckpt_dir = out / "checkpoints"
    cfg = DPOConfig(
        **trainer_args(s, ckpt_dir, has_eval=eval_ds is not None, bf16=bf16),
        beta=opts.beta,
        loss_type=list(opts.loss_type),
        precompute_ref_log_probs=opts.precompute_ref_log_probs,
    )
    trainer = DPOTrainer(model=student.model, ref_model=ref_model, args=cfg, train_dataset=train_ds,
                         eval_dataset=eval_ds, processing_class=student.tokenizer, peft_config=peft)
    resume = latest_checkpoint(ckpt_dir) if s.resume else None
    trainer.train(resume_from_checkpoint=resume)
    if eval_ds is not None:
        trainer.evaluate()
    metrics = log_metrics(trainer)
    saved = save_trained(trainer, student.tokenizer, out, s)

    prov = rows_provenance(opts.input, [r for _, r in read_rows(opts.input) if isinstance(r, dict)],
                           skipped=len(skipped))
    prov.update(rows_used=len(examples), examples=len(train_examples), eval_examples=len(eval_examples),
                train_file=str(data_dir / "train.jsonl"))
    if extra:
        prov["extra"] = extra
    record = {
        "kind": "dpo",
        "mode": policy_record.get("mode"),
        "student": opts.student,
        "policy_start": policy_path,
        "output": str(out),
        "inference_prefix": prefix,
        "chat_template": chat,
        "prompt_format": "chat template" if chat else "plain",
        "answer_template": policy_record.get("answer_template"),
        "reference": {"mode": opts.ref, "model": opts.ref_model if opts.ref == "explicit" else
                      ("policy with adapters disabled" if opts.ref == "lora" else f"frozen copy of {policy_path}")},
        "training": settings_summary(s, beta=opts.beta, loss_type=list(opts.loss_type), bf16=bf16,
                                     precompute_ref_log_probs=opts.precompute_ref_log_probs,
                                     device="cuda" if on_gpu() else "cpu", world_size=world_size(),
                                     resumed_from=resume,
                                     wall_s=round(time.time() - t0, 2), **saved),
        "data": prov,
        "metrics": metrics,
        "sft_stage": ({"output": str(out / "sft"), "mode": sft_record["mode"], "metrics": sft_record["metrics"],
                       "data": sft_record["data"]} if sft_record else None),
    }
    write_record(out, record)
    return record, trainer
