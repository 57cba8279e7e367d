"""Supervised fine-tuning of a student on method rows with TRL's SFTTrainer, in three comparable modes.

* ``label``      standard distillation, input -> answer;
* ``rationale``  input -> rationale then "So the answer is X." (one completion);
* ``multitask``  Distilling step-by-step (Hsieh et al. 2023) for decoder-only students: ``predict: x`` ->
  answer and ``explain: x`` -> rationale, loss ``(1 - a) L_predict + a L_explain`` through per-example
  loss weights (``weighted.py``); at inference only ``predict:`` is used;
* ``think``      input -> ``<think>\n{reasoning}\n</think>\n\n{answer}``, a reasoning teacher's trace in the
  template of open reasoning students (DeepSeek-R1 distills, Qwen3); a row without a trace is an error.

Loss is on the completion only.  The student's chat template formats prompts when it has one; else the
plain format of ``student.plain_prompt``.  The exact training and eval sets are exported under
``OUT/data/`` and read back with ``datasets.load_dataset("json")``, so what was trained on can be
inspected and re-used.  The run writes the model (or LoRA adapter + merged model) to ``OUT``,
checkpoints to ``OUT/checkpoints``, ``synthkd_train.json`` (how to prompt it, for eval and
``local:OUT``) and a model card with the data's provenance and the metrics.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkd.jsonl_io import InputError, iter_jsonl
from synthkd.options import opt, register_feature
from synthkd.row_source import as_path
from synthkd.train.common import (
    InputField,
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
    EXPLAIN_PREFIX,
    MODES,
    PREDICT_PREFIX,
    Fields,
    build_sft_examples,
    in_id_order,
    inference_prefix,
    load_json_dataset,
    sft_record,
    split_by_id,
    task_weights,
    write_jsonl,
)
from synthkd.train.model_card import load_extra_provenance, rows_provenance
from synthkd.train.student import flash_attention_available, has_chat_template, load_student


@dataclass
class SFTOptions:
    student: str
    input: Path
    output: Path
    mode: str = "label"
    fields: Fields = field(default_factory=Fields)
    rationale_weight: float = 0.5
    answer_template: str = DEFAULT_ANSWER_TEMPLATE
    eval_input: Path | None = None
    eval_fraction: float = 0.0
    packing: bool | None = None  # None: on a GPU, except in multitask mode
    settings: TrainSettings = field(default_factory=TrainSettings)


# --------------------------------------------------------------------------------------------------
# the feature: ``synthkd train sft`` and the ``train.sft`` stage, declared once (see synthkd.options)
# --------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TinyStudentShape:
    """The shape of the student ``student='tiny'`` builds (:func:`synthkd.train.tiny.build_tiny_student`)."""

    vocab_size: int = opt(800, help="Tokenizer vocabulary (a byte-level BPE trained on the input's texts).", ge=1)
    hidden_size: int = opt(64, help="Hidden size.", ge=1)
    layers: int = opt(2, help="Decoder layers.", ge=1)
    heads: int = opt(4, help="Attention heads (dividing the hidden size).", ge=1)
    seed: int = opt(0, help="Initialisation seed.")


def tiny_student_dir(output: Path) -> Path:
    """Where ``student='tiny'`` builds the student for a run writing ``output``: its sibling
    ``<output>.tiny-student`` (the model trained from it goes to ``output`` itself)."""
    output = Path(output)
    return output.parent / f"{output.name}.tiny-student"


def build_tiny_student_from(paths: list[Path], where: Path, shape: TinyStudentShape | None = None,
                            extra_texts: tuple[str, ...] = (), fields: Fields | None = None) -> Path:
    """A tiny random-init Llama whose tokenizer is trained on the texts of the rows' content fields
    (``fields.text_names()``: input, rationale, answer, prompt, chosen, ...; string or number values),
    built offline into ``where``.

    Why only those fields: a row also carries its provenance (``cached``, the teacher, token counts),
    and ``cached`` is true on a rerun from the request cache where it was false on the first run -- a
    tokenizer trained on it was another tokenizer on the rerun, and so another student."""
    from synthkd.train.tiny import build_tiny_student

    names = (fields or Fields()).text_names()
    texts = list(extra_texts)
    for path in paths:
        for _, row in iter_jsonl(path):  # the shared reader (a BOM accepted, bad lines named)
            texts.extend(str(v) for k in names if isinstance(v := row.get(k), (str, int, float))
                         and not isinstance(v, bool))
    t = shape or TinyStudentShape()
    return build_tiny_student(texts, where, vocab_size=t.vocab_size, hidden_size=t.hidden_size, layers=t.layers,
                              heads=t.heads, seed=t.seed)


@dataclass(kw_only=True)
class SFTRowFields(InputField):
    """Which fields of a method row hold the rationale and the answer (and the id and input)."""

    rationale_field: str = opt("rationale", help="Rationale field.")
    answer_field: str = opt("answer", help="Answer field (the teacher's answer; 'gold' to train on gold labels).")
    reasoning_field: str = opt("reasoning", help="Reasoning trace field (think mode).")

    def row_fields(self) -> Fields:
        return Fields(id=self.id_field, input=self.input_field, rationale=self.rationale_field,
                      answer=self.answer_field, reasoning=self.reasoning_field)


@dataclass(kw_only=True)
class SFTTargets:
    """What an SFT example's completion is (shared by ``train sft`` and ``train export``)."""

    mode: str = opt("label", help="label (input -> answer), rationale (input -> rationale + answer), multitask "
                                  "(predict:/explain:, Distilling step-by-step), think (input -> <think> reasoning "
                                  "trace </think> answer; every row needs a trace).", choices=MODES)
    rationale_weight: float = opt(0.5, help="multitask: loss = (1-w) L_predict + w L_explain.", ge=0, le=1)
    answer_template: str = opt(DEFAULT_ANSWER_TEMPLATE, help="rationale mode: sentence after the rationale.")


@dataclass(kw_only=True)
class SFTConfig(TrainSettings, SFTTargets, SFTRowFields):
    """Every option of an SFT run, flat: ``synthkd train sft``'s flags, the ``train.sft`` stage's keys and
    the Python API (``run_sft(SFTConfig(student=..., input=..., output=...))``)."""

    student: str = opt(help="Student: a model directory, a Hub id (org/name), or 'tiny' (a small random-init "
                            "Llama built from the input's texts into OUTPUT.tiny-student, for offline runs).",
                       flags=("-s",))
    input: Path = opt(help="Method rows jsonl: {id, input|question, rationale, answer, ...}.", flags=("-i",),
                      stage=False)  # a stage's input is its ``input:``
    output: Path = opt(help="Output directory (model, checkpoints/, data/, README.md).", flags=("-o",),
                       stage=False)  # a stage writes runs/<name>/<stage>
    eval_input: Path | None = opt(None, help="Eval rows jsonl (else --eval-fraction of the input).", stage=False)
    eval_fraction: float = opt(0.0, help="Hold out this fraction of rows (by id) as the eval split.", ge=0, lt=1)
    packing: bool | None = opt(None, help="Pack sequences, padding-free (default: on a GPU with flash-attn; never in "
                                          "multitask mode).")
    tiny: TinyStudentShape = opt(default_factory=TinyStudentShape, help="The tiny student's shape (student 'tiny').",
                                 cli=False,  # the CLI builds the default shape
                                 stage=False)  # the stage's ``tiny:`` block is a pydantic model (train_stages.py)

    def to_options(self) -> SFTOptions:
        """The trainer's options.  With ``student='tiny'`` the tiny student is built here first (into
        :func:`tiny_student_dir` of the output, from the input's texts)."""
        student = self.student
        if student == "tiny":
            template = self.answer_template.format(answer="0123456789")
            student = str(build_tiny_student_from([as_path(self.input)], tiny_student_dir(self.output), self.tiny,
                                                  extra_texts=(template, PREDICT_PREFIX, EXPLAIN_PREFIX),
                                                  fields=self.row_fields()))
        return SFTOptions(student=student, input=as_path(self.input), output=Path(self.output), mode=self.mode,
                          fields=self.row_fields(), rationale_weight=self.rationale_weight,
                          answer_template=self.answer_template, eval_input=self.eval_input,
                          eval_fraction=self.eval_fraction, packing=self.packing, settings=self.train_settings())


register_feature("train.sft", SFTConfig, command=("train", "sft"), stage="train.sft")


def _packing(opts: SFTOptions, *, warn: bool = False) -> bool:
    """Packing (TRL best-fit-decreasing, padding-free): by default only where it pays, i.e. on a GPU with
    FlashAttention-2, whose varlen kernels attend within each packed example.  Without them the packed
    batch is one long sequence under a block-diagonal mask, so attention costs grow with the square of
    the whole batch (measured on CPU: 2.5x slower per token for a 2-layer student), hence a warning."""
    want = flash_attention_available() if opts.packing is None else opts.packing
    if want and opts.mode == "multitask":
        if opts.packing and warn:
            warnings.warn("multitask mode weights each example's loss, which packing would merge: packing turned off",
                          stacklevel=3)
        return False
    if want and warn and not flash_attention_available():
        warnings.warn("--packing without FlashAttention-2 (CUDA + flash_attn) attends over the whole packed batch "
                      "under a mask: slower than padding; pip install flash-attn or drop --packing", stacklevel=3)
    return bool(want)


def read_sft_rows(opts: SFTOptions) -> dict[str, Any]:
    """Validate and build every example (train and eval) before any model is loaded."""
    examples, skipped, used = build_sft_examples(
        opts.input, opts.mode, opts.fields, rationale_weight=opts.rationale_weight,
        answer_template=opts.answer_template, skip_invalid=opts.settings.skip_invalid,
    )
    if opts.eval_input is not None:
        eval_examples, _, _ = build_sft_examples(
            opts.eval_input, opts.mode, opts.fields, rationale_weight=opts.rationale_weight,
            answer_template=opts.answer_template, skip_invalid=opts.settings.skip_invalid,
        )
        train_examples = examples
    else:
        train_examples, eval_examples = split_by_id(examples, opts.eval_fraction, seed=opts.settings.seed)
    train_examples = in_id_order(train_examples)  # the same rows, in any order, make the same student
    return {"train": train_examples, "eval": eval_examples, "skipped": skipped, "used": used}


def prepare_sft_data(opts: SFTOptions, chat: bool, data_dir: Path, rows: dict[str, Any]) -> dict[str, Any]:
    """Export the train (and eval) examples in the student's format and read them back as datasets."""
    train_examples, eval_examples, skipped, used = rows["train"], rows["eval"], rows["skipped"], rows["used"]
    fmt = "conversational" if chat else "prompt-completion"
    train_path, eval_path = data_dir / "train.jsonl", data_dir / "eval.jsonl"
    with main_process_first() as main:
        if main:
            write_jsonl((sft_record(e, fmt) for e in train_examples), train_path)
            if eval_examples:
                write_jsonl((sft_record(e, fmt) for e in eval_examples), eval_path)
        train_ds = load_json_dataset(train_path)
        eval_ds = load_json_dataset(eval_path) if eval_examples else None
    prov = rows_provenance(opts.input, used, skipped=len(skipped))
    prov["examples"] = len(train_examples)
    prov["eval_examples"] = len(eval_examples)
    prov["skipped_problems"] = skipped[:20]
    return {"train": train_ds, "eval": eval_ds, "format": fmt, "provenance": prov,
            "train_file": str(train_path), "eval_file": str(eval_path) if eval_examples else None}


def build_sft_trainer(opts: SFTOptions, student: Any, data: dict[str, Any], ckpt_dir: Path) -> Any:
    """The SFTTrainer (or its weighted subclass in multitask mode), ready to ``train()``."""
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    s = opts.settings
    bf16 = precision(s)
    packing = _packing(opts, warn=True)
    cfg = TRLSFTConfig(
        **trainer_args(s, ckpt_dir, has_eval=data["eval"] is not None, bf16=bf16),
        completion_only_loss=True,
        packing=packing,
        dataset_num_proc=None,
    )
    kwargs: dict[str, Any] = dict(model=student.model, args=cfg, train_dataset=data["train"],
                                  eval_dataset=data["eval"], processing_class=student.tokenizer,
                                  peft_config=lora_config(s))
    if opts.mode == "multitask":
        from synthkd.train.weighted import WeightedSFTTrainer, add_task_codes

        kwargs["train_dataset"] = add_task_codes(data["train"])
        if data["eval"] is not None:
            kwargs["eval_dataset"] = add_task_codes(data["eval"])
        return WeightedSFTTrainer(**kwargs)
    return SFTTrainer(**kwargs)


def run_sft(opts: SFTOptions | SFTConfig) -> dict[str, Any]:
    """Train; returns the record written to ``OUT/synthkd_train.json``."""
    return train_sft(opts)[0]


def train_sft(opts: SFTOptions | SFTConfig) -> tuple[dict[str, Any], Any, Any]:
    """Train; returns (record, trainer, student) so callers can keep using the trained model in memory."""
    if isinstance(opts, SFTConfig):
        opts = opts.to_options()
    if opts.mode not in MODES:
        raise InputError([f"--mode: unknown SFT mode {opts.mode!r} (choose from {', '.join(MODES)})"])
    if not 0.0 <= opts.eval_fraction < 1.0:
        raise InputError([f"--eval-fraction must be in [0, 1), got {opts.eval_fraction}"])
    task_weights(opts.rationale_weight)  # validates
    s = opts.settings
    s.check()
    rows = read_sft_rows(opts)  # bad rows fail here, before any model is loaded
    extra = load_extra_provenance(s.provenance)
    out = Path(opts.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    student = load_student(opts.student, tokenizer=s.tokenizer, revision=s.revision,
                           trust_remote_code=s.trust_remote_code, bf16=precision(s) if s.qlora else False,
                           quantization_config=quantization_config(s), for_training=True,
                           attn_implementation="flash_attention_2" if (_packing(opts) and flash_attention_available())
                           else None)
    chat = has_chat_template(student.tokenizer)
    data = prepare_sft_data(opts, chat, out / "data", rows)
    if extra:
        data["provenance"]["extra"] = extra
    ckpt_dir = out / "checkpoints"
    trainer = build_sft_trainer(opts, student, data, ckpt_dir)
    resume = latest_checkpoint(ckpt_dir) if s.resume else None
    trainer.train(resume_from_checkpoint=resume)
    if data["eval"] is not None:
        trainer.evaluate()
    metrics = log_metrics(trainer)
    saved = save_trained(trainer, student.tokenizer, out, s)
    record = {
        "kind": "sft",
        "mode": opts.mode,
        "student": str(student.source),
        "output": str(out),
        "inference_prefix": inference_prefix(opts.mode),
        "chat_template": chat,
        "prompt_format": "chat template" if chat else "plain",
        "answer_template": opts.answer_template,
        "fields": {"id": opts.fields.id, "input": list(opts.fields.input_names()), "rationale": opts.fields.rationale,
                   "answer": opts.fields.answer, **({"reasoning": opts.fields.reasoning} if opts.mode == "think" else {})},
        "rationale_weight": opts.rationale_weight if opts.mode == "multitask" else None,
        "task_weights": task_weights(opts.rationale_weight) if opts.mode == "multitask" else None,
        "weighting": ("per-example loss weights, loss = mean_i(w_i * l_i), l_i = token-mean NLL of example i"
                      if opts.mode == "multitask" else "token-mean NLL over completion tokens (TRL default)"),
        "training": settings_summary(s, mode=opts.mode, packing=_packing(opts), bf16=precision(s),
                                     device="cuda" if on_gpu() else "cpu", world_size=world_size(),
                                     resumed_from=resume, data_format=data["format"],
                                     wall_s=round(time.time() - t0, 2), **saved),
        "data": {**data["provenance"], "train_file": data["train_file"], "eval_file": data["eval_file"]},
        "metrics": metrics,
    }
    write_record(out, record)
    return record, trainer, student
