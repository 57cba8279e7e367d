"""``synthkd train sft|dpo|export`` and ``synthkd eval``: train a student on generated rows and score it.

Heavy imports (torch, transformers, trl) happen inside the commands, so ``synthkd --help`` stays fast
and the rest of synthkd works without the ``[train]`` extra.  Exit codes: 0 done; 2 bad input (a row,
a field, a flag, a student directory without a tokenizer), reported before any model is loaded when
the problem is in the data.  Under ``accelerate launch`` only the main process writes the model, the
card and the summary.

Also runnable without the top-level CLI: ``python -m synthkd.commands.train train sft ...`` and
``python -m synthkd.commands.train eval ...`` (the same commands, the same flags).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from synthkd.commands.common import exit_on_error, shared_options
from synthkd.errors import ExitCode
from synthkd.log import setup_cli_logging

train_app = typer.Typer(help="Train a student on generated rows (TRL SFT / DPO), or export them as TRL datasets.",
                        no_args_is_help=True)


#: named, not __name__: run as ``python -m synthkd.commands.train`` this module is ``__main__``
log = logging.getLogger("synthkd.commands.train")


def _quiet() -> None:
    """Keep stderr for our summary: no per-map progress bars, no tokenizers fork warnings."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except ImportError:
        pass


def _guard(job: Callable[[], int]) -> None:
    """Run a job; bad input -> one clear message and exit 2; the training extra missing -> exit 2 too
    (the one rule of :func:`synthkd.errors.exit_code_for`)."""
    setup_cli_logging()  # also under `python -m synthkd.commands.train` and accelerate launch
    with exit_on_error(
        interrupted="interrupted: checkpoints written so far are kept; rerun with --resume to continue",
        hints={ImportError: "training needs the extra: pip install torch==2.13.0 'synthkd[train]'"},
    ):
        code = job()
    raise typer.Exit(code)


def _check_paths(inputs: dict[str, Path | None], output_dir: tuple[str, Path | None]) -> None:
    """Refuse unusable paths before any model is loaded (exit 2 through :func:`_guard`): missing inputs,
    an output directory with a file in its way, one that cannot be made or written in, or an output
    naming an input -- the shared :func:`synthkd.jsonl_io.check_paths`, as every other command uses."""
    from synthkd.jsonl_io import check_paths

    check_paths(inputs, out_dirs=dict([output_dir]))


def _main_process() -> bool:
    try:
        from synthkd.train.common import is_main_process

        return is_main_process()
    except ImportError:
        return True


# --------------------------------------------------------------------------------------------------
# shared options
# --------------------------------------------------------------------------------------------------

StudentOpt = Annotated[str, typer.Option("--student", "-s", help="Student: a model directory or a Hub id (org/name).")]
OutputDirOpt = Annotated[Path, typer.Option("--output", "-o", help="Output directory (model, checkpoints/, data/, README.md).")]
IdFieldOpt = Annotated[str, typer.Option("--id-field", help="Row id field.")]
InputFieldOpt = Annotated[Optional[str], typer.Option("--input-field", help="Input text field (default: first of input, question, prompt, text).")]
EpochsOpt = Annotated[float, typer.Option("--epochs", help="Training epochs.")]
MaxStepsOpt = Annotated[int, typer.Option("--max-steps", help="Stop after this many optimizer steps (overrides --epochs when > 0).")]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (random-init tiny students need ~1e-3).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Per-device batch size.")]
GradAccOpt = Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.")]
MaxLenOpt = Annotated[int, typer.Option("--max-length", help="Max tokens per sequence (prompt + completion).")]
Bf16Opt = Annotated[Optional[bool], typer.Option("--bf16/--no-bf16", help="bf16 mixed precision (default: on a GPU that supports it; on CPU it falls back to fp32 with a warning).")]
LoraOpt = Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter (peft) instead of all weights.")]
QloraOpt = Annotated[bool, typer.Option("--qlora", help="QLoRA: 4-bit NF4 base + LoRA (CUDA + bitsandbytes).")]
LoraROpt = Annotated[int, typer.Option("--lora-r", help="LoRA rank.")]
LoraAlphaOpt = Annotated[int, typer.Option("--lora-alpha", help="LoRA alpha.")]
LoraDropoutOpt = Annotated[float, typer.Option("--lora-dropout", help="LoRA dropout.")]
LoraTargetsOpt = Annotated[str, typer.Option("--lora-targets", help="'all-linear' or comma-separated module names.")]
MergeOpt = Annotated[bool, typer.Option("--merge-lora/--no-merge-lora", help="Also save the LoRA-merged model in OUTPUT (adapter in OUTPUT/adapter).")]
SaveStepsOpt = Annotated[int, typer.Option("--save-steps", help="Checkpoint every N steps and at the end (OUTPUT/checkpoints); 0: no checkpoints.")]
SaveLimitOpt = Annotated[int, typer.Option("--save-total-limit", help="Keep at most N checkpoints.")]
EvalStepsOpt = Annotated[Optional[int], typer.Option("--eval-steps", help="Evaluate every N steps (the eval set is always scored at the end).")]
LogStepsOpt = Annotated[int, typer.Option("--logging-steps", help="Log every N steps.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (also of the eval split).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Resume from the latest checkpoint in OUTPUT/checkpoints.")]
WarmupOpt = Annotated[float, typer.Option("--warmup-ratio", help="Linear warm-up over this fraction of the steps.")]
SchedOpt = Annotated[str, typer.Option("--scheduler", help="LR schedule (linear, cosine, constant, ...).")]
WdOpt = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")]
GcOpt = Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations to save memory.")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model/tokenizer code shipped with the student (off by default).")]
TokOpt = Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer directory or Hub id, if not next to the weights.")]
RevOpt = Annotated[Optional[str], typer.Option("--revision", help="Hub revision of the student.")]
ProvOpt = Annotated[Optional[Path], typer.Option("--provenance", help="JSON/YAML with extra provenance for the model card.")]
SkipOpt = Annotated[bool, typer.Option("--skip-invalid", help="Skip bad rows (counted in the card) instead of stopping.")]
ReportOpt = Annotated[str, typer.Option("--report-to", help="Trainer loggers: none, tensorboard, wandb...")]
EvalFracOpt = Annotated[float, typer.Option("--eval-fraction", help="Hold out this fraction of rows (by id) as the eval split.")]


def _settings(**kw: Any) -> Any:
    from synthkd.train.common import TrainSettings

    return TrainSettings(**kw)


def _fields(id_field: str, input_field: str | None, rationale_field: str = "rationale", answer_field: str = "answer",
            prompt_field: str | None = None, chosen_field: str = "chosen", rejected_field: str = "rejected") -> Any:
    from synthkd.train.export import Fields

    return Fields(id=id_field, input=input_field, rationale=rationale_field, answer=answer_field,
                  prompt=prompt_field, chosen=chosen_field, rejected=rejected_field)


def _summary(record: dict[str, Any]) -> str:
    m = record["metrics"]
    d = record["data"]
    bits = [f"done: {record['kind']}" + (f" mode={record['mode']}" if record.get("mode") else ""),
            f"{d.get('rows_used')} rows -> {d.get('examples')} examples ({d.get('rows_skipped', 0)} skipped)"]
    if "train_loss_first" in m:
        bits.append(f"train loss {m['train_loss_first']:.3f} -> {m['train_loss_last']:.3f} in {m['global_steps']} steps")
    if "eval_loss" in m:
        bits.append(f"eval loss {m['eval_loss']:.3f}")
    bits.append(f"saved {record['output']} ({record['training'].get('saved')}) in {record['training']['wall_s']}s")
    return "; ".join(bits)


# --------------------------------------------------------------------------------------------------
# sft
# --------------------------------------------------------------------------------------------------


#: The trainer settings both ``train sft`` and ``train dpo`` take (name -> (option, default)); the
#: commands get them as one ``train`` dict (see :func:`synthkd.commands.common.shared_options`).
TRAIN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "epochs": (EpochsOpt, 3.0),
    "max_steps": (MaxStepsOpt, -1),
    "lr": (LrOpt, 2e-5),
    "batch_size": (BatchOpt, 8),
    "grad_accum": (GradAccOpt, 1),
    "max_length": (MaxLenOpt, 1024),
    "bf16": (Bf16Opt, None),
    "lora": (LoraOpt, False),
    "qlora": (QloraOpt, False),
    "lora_r": (LoraROpt, 16),
    "lora_alpha": (LoraAlphaOpt, 32),
    "lora_dropout": (LoraDropoutOpt, 0.05),
    "lora_targets": (LoraTargetsOpt, "all-linear"),
    "merge_lora": (MergeOpt, True),
    "save_steps": (SaveStepsOpt, 500),
    "save_total_limit": (SaveLimitOpt, 2),
    "eval_steps": (EvalStepsOpt, None),
    "logging_steps": (LogStepsOpt, 10),
    "seed": (SeedOpt, 0),
    "resume": (ResumeOpt, False),
    "warmup_ratio": (WarmupOpt, 0.0),
    "scheduler": (SchedOpt, "linear"),
    "weight_decay": (WdOpt, 0.0),
    "gradient_checkpointing": (GcOpt, False),
    "trust_remote_code": (TrustOpt, False),
    "tokenizer": (TokOpt, None),
    "revision": (RevOpt, None),
    "provenance": (ProvOpt, None),
    "skip_invalid": (SkipOpt, False),
    "report_to": (ReportOpt, "none"),
}


@train_app.command("sft")
@shared_options(TRAIN_OPTIONS, "train")
def sft_command(
    student: StudentOpt,
    input: Annotated[Path, typer.Option("--input", "-i", help="Method rows jsonl: {id, input|question, rationale, answer, ...}.")],
    output: OutputDirOpt,
    mode: Annotated[str, typer.Option("--mode", help="label (input -> answer), rationale (input -> rationale + answer), multitask (predict:/explain:, Distilling step-by-step).")] = "label",
    rationale_weight: Annotated[float, typer.Option("--rationale-weight", help="multitask: loss = (1-w) L_predict + w L_explain.")] = 0.5,
    answer_template: Annotated[str, typer.Option("--answer-template", help="rationale mode: sentence after the rationale.")] = "So the answer is {answer}.",
    id_field: IdFieldOpt = "id",
    input_field: InputFieldOpt = None,
    rationale_field: Annotated[str, typer.Option("--rationale-field", help="Rationale field.")] = "rationale",
    answer_field: Annotated[str, typer.Option("--answer-field", help="Answer field (the teacher's answer; 'gold' to train on gold labels).")] = "answer",
    eval_input: Annotated[Optional[Path], typer.Option("--eval-input", help="Eval rows jsonl (else --eval-fraction of the input).")] = None,
    eval_fraction: EvalFracOpt = 0.0,
    packing: Annotated[Optional[bool], typer.Option("--packing/--no-packing", help="Pack sequences, padding-free (default: on a GPU with flash-attn; never in multitask mode).")] = None,
    train: Optional[dict] = None,  # the trainer settings (TRAIN_OPTIONS)
) -> None:
    """Supervised fine-tuning (TRL SFTTrainer, completion-only loss) in label, rationale or multitask mode."""
    settings = {("learning_rate" if k == "lr" else k): v for k, v in (train or {}).items()}

    def job() -> int:
        _check_paths({"--input": input, "--eval-input": eval_input, "--provenance": settings.get("provenance")},
                     ("--output", output))
        _quiet()
        from synthkd.train.sft import SFTOptions, run_sft

        record = run_sft(SFTOptions(
            student=student, input=input, output=output, mode=mode, rationale_weight=rationale_weight,
            answer_template=answer_template,
            fields=_fields(id_field, input_field, rationale_field, answer_field),
            eval_input=eval_input, eval_fraction=eval_fraction, packing=packing, settings=_settings(**settings),
        ))
        if _main_process():
            log.info(_summary(record))
        return ExitCode.OK

    _guard(job)


# --------------------------------------------------------------------------------------------------
# dpo
# --------------------------------------------------------------------------------------------------


@train_app.command("dpo")
@shared_options(TRAIN_OPTIONS, "train", epochs=1.0, lr=5e-7)
def dpo_command(
    student: StudentOpt,
    input: Annotated[Path, typer.Option("--input", "-i", help="Preference rows jsonl: {id, prompt|input|question, chosen, rejected}.")],
    output: OutputDirOpt,
    ref: Annotated[str, typer.Option("--ref", help="Reference model: implicit (frozen copy of the policy), explicit (--ref-model), lora (adapters disabled).")] = "implicit",
    ref_model: Annotated[Optional[str], typer.Option("--ref-model", help="Reference model directory or Hub id (with --ref explicit).")] = None,
    beta: Annotated[float, typer.Option("--beta", help="DPO beta (higher: stay closer to the reference).")] = 0.1,
    loss_type: Annotated[list[str], typer.Option("--loss-type", help="DPO loss (sigmoid, ipo, hinge, robust, ...); repeat to combine.")] = ["sigmoid"],  # noqa: B006
    precompute_ref: Annotated[bool, typer.Option("--precompute-ref", help="Compute reference log-probs once before training (saves memory).")] = False,
    sft_input: Annotated[Optional[Path], typer.Option("--sft-input", help="Run SFT on these method rows first (into OUTPUT/sft), then DPO from it.")] = None,
    sft_mode: Annotated[str, typer.Option("--sft-mode", help="SFT mode of the first stage.")] = "label",
    sft_epochs: Annotated[Optional[float], typer.Option("--sft-epochs", help="Epochs of the SFT stage (default --epochs).")] = None,
    sft_lr: Annotated[Optional[float], typer.Option("--sft-lr", help="Learning rate of the SFT stage (default --lr).")] = None,
    sft_max_steps: Annotated[Optional[int], typer.Option("--sft-max-steps", help="Max steps of the SFT stage (default --max-steps).")] = None,
    id_field: IdFieldOpt = "id",
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field", help="Prompt field (default: first of prompt, input, question, text).")] = None,
    chosen_field: Annotated[str, typer.Option("--chosen-field", help="Preferred answer field.")] = "chosen",
    rejected_field: Annotated[str, typer.Option("--rejected-field", help="Dispreferred answer field.")] = "rejected",
    eval_input: Annotated[Optional[Path], typer.Option("--eval-input", help="Eval preference rows.")] = None,
    eval_fraction: EvalFracOpt = 0.0,
    train: Optional[dict] = None,  # the trainer settings (TRAIN_OPTIONS)
) -> None:
    """Direct preference optimisation (TRL DPOTrainer), optionally after an SFT stage."""
    settings = {("learning_rate" if k == "lr" else k): v for k, v in (train or {}).items()}

    def job() -> int:
        _check_paths({"--input": input, "--eval-input": eval_input, "--sft-input": sft_input,
                      "--provenance": settings.get("provenance")}, ("--output", output))
        _quiet()
        from synthkd.train.dpo import DPOOptions, run_dpo

        s = _settings(**settings)
        sft_s = None
        if sft_input is not None:
            sft_s = _settings(**{**settings, "lora": False, "qlora": False,
                                 "epochs": sft_epochs if sft_epochs is not None else settings["epochs"],
                                 "learning_rate": sft_lr if sft_lr is not None else settings["learning_rate"],
                                 "max_steps": sft_max_steps if sft_max_steps is not None else settings["max_steps"]})
        record = run_dpo(DPOOptions(
            student=student, input=input, output=output, ref=ref, ref_model=ref_model, beta=beta,
            loss_type=list(loss_type), precompute_ref_log_probs=precompute_ref, eval_input=eval_input,
            eval_fraction=eval_fraction, sft_input=sft_input, sft_mode=sft_mode, sft_settings=sft_s,
            fields=_fields(id_field, None, prompt_field=prompt_field, chosen_field=chosen_field,
                           rejected_field=rejected_field),
            settings=s,
        ))
        if _main_process():
            log.info(_summary(record))
        return ExitCode.OK

    _guard(job)


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------


@train_app.command("export")
def export_command(
    input: Annotated[Path, typer.Option("--input", "-i", help="Method rows (or preference rows) jsonl.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output jsonl (datasets.load_dataset('json') reads it).")],
    format: Annotated[str, typer.Option("--format", "-f", help="prompt-completion, conversational, messages, or preference.")] = "conversational",
    mode: Annotated[str, typer.Option("--mode", help="SFT mode: label, rationale or multitask.")] = "label",
    rationale_weight: Annotated[float, typer.Option("--rationale-weight", help="multitask: weight of the explain task.")] = 0.5,
    answer_template: Annotated[str, typer.Option("--answer-template", help="rationale mode: sentence after the rationale.")] = "So the answer is {answer}.",
    id_field: IdFieldOpt = "id",
    input_field: InputFieldOpt = None,
    rationale_field: Annotated[str, typer.Option("--rationale-field")] = "rationale",
    answer_field: Annotated[str, typer.Option("--answer-field")] = "answer",
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field")] = None,
    chosen_field: Annotated[str, typer.Option("--chosen-field")] = "chosen",
    rejected_field: Annotated[str, typer.Option("--rejected-field")] = "rejected",
    plain: Annotated[bool, typer.Option("--plain", help="preference: plain-format strings instead of chat messages.")] = False,
    skip_invalid: SkipOpt = False,
) -> None:
    """Write rows as a TRL dataset file (no model needed)."""

    def job() -> int:
        from synthkd.jsonl_io import check_paths
        from synthkd.train.export import export_rows

        check_paths({"--input": input}, {"--output": output})
        counts = export_rows(input, output, format, mode=mode,
                             fields=_fields(id_field, input_field, rationale_field, answer_field, prompt_field,
                                            chosen_field, rejected_field),
                             rationale_weight=rationale_weight, answer_template=answer_template,
                             conversational=not plain, skip_invalid=skip_invalid)
        log.info(f"done: {output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return ExitCode.OK

    _guard(job)


# --------------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------------


def eval_command(
    student: StudentOpt,
    input: Annotated[Path, typer.Option("--input", "-i", help="Held-out rows jsonl: {id, input|question, gold, [teacher answer], [choices]}.")],
    kind: Annotated[str, typer.Option("--kind", "-k", help="number, choice or label.")] = "number",
    labels: Annotated[Optional[str], typer.Option("--labels", help="label kind: comma-separated label set, or 'nli'.")] = None,
    gold_field: Annotated[str, typer.Option("--gold-field", help="Gold answer field.")] = "gold",
    teacher_field: Annotated[Optional[str], typer.Option("--teacher-field", help="Field with the teacher's answer on the same rows (adds the comparison line).")] = None,
    choices_field: Annotated[str, typer.Option("--choices-field", help="choice kind: field with the options.")] = "choices",
    id_field: IdFieldOpt = "id",
    input_field: InputFieldOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write metrics.json, report.md, predictions.jsonl, mistakes.jsonl here.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Generation batch size.")] = 32,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Default: 32 for label/multitask students, 256 for rationale ones.")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy (default).")] = 0.0,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N rows.")] = None,
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="Override the student's inference prefix (e.g. 'predict: ').")] = None,
    system: Annotated[Optional[str], typer.Option("--system", help="System message for every prompt.")] = None,
    bf16: Annotated[bool, typer.Option("--bf16/--no-bf16", help="Load the student in bf16 (falls back to fp32 on CPU).")] = False,
    tokenizer: TokOpt = None,
    trust_remote_code: TrustOpt = False,
    record_in_card: Annotated[bool, typer.Option("--record-in-card", help="Append the result to the student's model card.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics JSON instead of the Markdown table.")] = False,
) -> None:
    """Score a student on held-out rows: accuracy (+ macro-F1, per-label), mistakes, teacher comparison."""

    def job() -> int:
        _check_paths({"--input": input}, ("--out", out))
        _quiet()
        from synthkd.train.evaluate import EvalOptions, run_eval

        rep = run_eval(EvalOptions(
            student=student, input=input, kind=kind,
            labels=[x.strip() for x in labels.split(",") if x.strip()] if labels else None,
            gold_field=gold_field, teacher_field=teacher_field, choices_field=choices_field,
            fields=_fields(id_field, input_field), out_dir=out, batch_size=batch_size,
            max_new_tokens=max_new_tokens, temperature=temperature, limit=limit, prefix=prefix, system=system,
            bf16=bf16, tokenizer=tokenizer, trust_remote_code=trust_remote_code, record_in_card=record_in_card,
        ))
        m = rep["metrics"]
        if json_out:
            print(json.dumps({k: v for k, v in rep.items() if not k.startswith("_") and k != "markdown"},
                             indent=2, default=str))
        else:
            print(rep["markdown"], end="")
        line = (f"done: {m['rows']} rows, accuracy {100 * m['accuracy']:.1f}%"
                + (f", macro-F1 {m['macro_f1']:.3f}" if "macro_f1" in m else "")
                + f", {rep['mistakes']} mistakes" + (f" -> {out}/mistakes.jsonl" if out else ""))
        log.info(line)
        if rep.get("comparison"):
            log.info(rep["comparison"])
        for w in rep["warnings"]:
            log.warning(f"warning: {w}")
        return ExitCode.OK

    _guard(job)


def _standalone() -> typer.Typer:
    """The same commands as ``synthkd train ...`` / ``synthkd eval``, for ``python -m`` and accelerate launch."""
    app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    app.add_typer(train_app, name="train")
    app.command("eval")(eval_command)
    return app


if __name__ == "__main__":
    _standalone()()
