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
from typing import Any, Union

from synthkd.jsonl_io import InputError
from synthkd.options import opt, register_feature
from synthkd.row_source import as_path
from synthkd.train.common import (
    IdField,
    TrainSettings,
    latest_checkpoint,
    log_metrics,
    lora_config,
    main_process_first,
    on_gpu,
    precision,
    quantization_config,
    save_trained,
    settings_summary,
    trainer_args,
    world_size,
    write_record,
)
from synthkd.train.export import (
    DEFAULT_ANSWER_TEMPLATE,
    MODES,
    Fields,
    build_preference_examples,
    in_id_order,
    load_json_dataset,
    preference_record,
    read_rows,
    split_by_id,
    write_jsonl,
)
from synthkd.train.model_card import load_extra_provenance, rows_provenance
from synthkd.train.sft import TinyStudentShape, build_tiny_student_from, tiny_student_dir
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


# --------------------------------------------------------------------------------------------------
# the feature: ``synthkd train dpo`` and the ``train.dpo`` stage, declared once (see synthkd.options)
# --------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PreferenceRowFields(IdField):
    """Which fields of a preference row hold the prompt, the preferred and the dispreferred answer."""

    prompt_field: str | None = opt(None, help="Prompt field (default: first of prompt, input, question, text).")
    chosen_field: str = opt("chosen", help="Preferred answer field.")
    rejected_field: str = opt("rejected", help="Dispreferred answer field.")

    def preference_fields(self) -> Fields:
        return Fields(id=self.id_field, prompt=self.prompt_field, chosen=self.chosen_field,
                      rejected=self.rejected_field)


def _sft_stage_help(what: str) -> str:
    return f"{what} of the SFT stage (default: --{what.lower().replace(' ', '-')})."


@dataclass(kw_only=True)
class DPOConfig(TrainSettings, PreferenceRowFields):
    """Every option of a DPO run, flat: ``synthkd train dpo``'s flags, the ``train.dpo`` stage's keys and
    the Python API (``run_dpo(DPOConfig(student=..., input=..., output=...))``)."""

    # DPO's own defaults for two trainer settings (a pretrained policy moves little and slowly)
    epochs: float = opt(1.0, help="Training epochs.", ge=0)
    learning_rate: float = opt(5e-7, help="Peak learning rate (random-init tiny students need ~1e-4).",
                               aliases=("--lr",), yaml_aliases=("lr",), gt=0)
    student: str = opt(help="Student (the policy): a model directory, a Hub id (org/name), or 'tiny' (a small "
                            "random-init Llama built from the rows' texts into OUTPUT.tiny-student).", flags=("-s",),
                       stage=False)  # a stage may name an earlier train stage: declared in the stage
    input: Path = opt(help="Preference rows jsonl: {id, prompt|input|question, chosen, rejected}.", flags=("-i",),
                      stage=False)  # a stage's input is its ``input:``
    output: Path = opt(help="Output directory (model, checkpoints/, data/, README.md).", flags=("-o",),
                       stage=False)  # a stage writes runs/<name>/<stage>
    ref: str = opt("implicit", help="Reference model: implicit (frozen copy of the policy), explicit (--ref-model), "
                                    "lora (adapters disabled).", choices=REF_MODES)
    ref_model: str | None = opt(None, help="Reference model directory or Hub id (with --ref explicit).")
    beta: float = opt(0.1, help="DPO beta (higher: stay closer to the reference).", gt=0)
    loss_type: Union[str, list[str]] = opt(default_factory=lambda: ["sigmoid"], cli_type=list[str],
                                           help="DPO loss (sigmoid, ipo, hinge, robust, ...); repeat to combine.")
    precompute_ref: bool = opt(False, help="Compute reference log-probs once before training (saves memory).")
    eval_input: Path | None = opt(None, help="Eval preference rows.", stage=False)
    eval_fraction: float = opt(0.0, help="Hold out this fraction of rows (by id) as the eval split.", ge=0, lt=1)
    # SFT first, then DPO from the SFT model (CLI / Python; a pipeline has a train.sft stage for that)
    sft_input: Path | None = opt(None, help="Run SFT on these method rows first (into OUTPUT/sft), then DPO from it.",
                                 stage=False)
    sft_mode: str = opt("label", help="SFT mode of the first stage.", choices=MODES, stage=False)
    sft_epochs: float | None = opt(None, help=_sft_stage_help("Epochs"), stage=False)
    sft_learning_rate: float | None = opt(None, help=_sft_stage_help("Learning rate"), aliases=("--sft-lr",),
                                          gt=0, stage=False)
    sft_max_steps: int | None = opt(None, help=_sft_stage_help("Max steps"), stage=False)
    tiny: TinyStudentShape = opt(default_factory=TinyStudentShape, help="The tiny student's shape (student 'tiny').",
                                 cli=False,  # the CLI builds the default shape
                                 stage=False)  # the stage's ``tiny:`` block is a pydantic model (train_stages.py)

    def to_options(self) -> DPOOptions:
        """The trainer's options.  With ``student='tiny'`` the tiny student is built here first (into
        ``<output>.tiny-student``, from the preference rows' and the SFT rows' texts)."""
        student = self.student
        if student == "tiny":
            paths = [as_path(self.input)] + ([Path(self.sft_input)] if self.sft_input is not None else [])
            student = str(build_tiny_student_from(paths, tiny_student_dir(self.output), self.tiny,
                                                  extra_texts=(DEFAULT_ANSWER_TEMPLATE.format(answer="0123456789"),),
                                                  fields=self.preference_fields()))
        s = self.train_settings()
        sft_s = None
        if self.sft_input is not None:
            sft_s = replace(s, lora=False, qlora=False,
                            epochs=self.sft_epochs if self.sft_epochs is not None else s.epochs,
                            learning_rate=self.sft_learning_rate if self.sft_learning_rate is not None
                            else s.learning_rate,
                            max_steps=self.sft_max_steps if self.sft_max_steps is not None else s.max_steps)
        loss_type = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
        return DPOOptions(student=student, input=as_path(self.input), output=Path(self.output), ref=self.ref,
                          ref_model=self.ref_model, beta=self.beta, loss_type=loss_type,
                          precompute_ref_log_probs=self.precompute_ref, eval_input=self.eval_input,
                          eval_fraction=self.eval_fraction, sft_input=self.sft_input, sft_mode=self.sft_mode,
                          sft_settings=sft_s, fields=self.preference_fields(), settings=s)


register_feature("train.dpo", DPOConfig, command=("train", "dpo"), stage="train.dpo")


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


def run_dpo(opts: DPOOptions | DPOConfig) -> dict[str, Any]:
    """Optionally SFT, then DPO; returns the record written to ``OUT/synthkd_train.json``."""
    return train_dpo(opts)[0]


def train_dpo(opts: DPOOptions | DPOConfig) -> tuple[dict[str, Any], Any]:
    """Like :func:`run_dpo`, also returning the trainer (its log history feeds a pipeline's loss curve)."""
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    if isinstance(opts, DPOConfig):
        opts = opts.to_options()
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
    cfg = TRLDPOConfig(
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
