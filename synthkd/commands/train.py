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

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from synthkd.commands.common import INP_PARAM, bind_columns, exit_on_error, with_columns
from synthkd.errors import ExitCode
from synthkd.log import setup_cli_logging
from synthkd.options import config_command, opt, register_feature
from synthkd.train.dpo import DPOConfig, PreferenceRowFields
from synthkd.train.evaluate import EvalConfig
from synthkd.train.export import FORMATS
from synthkd.train.sft import SFTConfig, SFTRowFields, SFTTargets

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
# Each command's options are its feature config's fields (declared once, with the ``train.*`` / ``eval``
# stages' keys, in synthkd.train.sft / dpo / evaluate: see synthkd.options).


@train_app.command("sft")
@with_columns
@config_command(SFTConfig, extra=[INP_PARAM])
def sft_command(cfg: SFTConfig, inp: Optional[dict] = None) -> None:
    """Supervised fine-tuning (TRL SFTTrainer, completion-only loss) in label, rationale or multitask mode."""
    cfg = bind_columns(cfg, inp)

    def job() -> int:
        _check_paths({"--input": cfg.input, "--eval-input": cfg.eval_input, "--provenance": cfg.provenance},
                     ("--output", cfg.output))
        _quiet()
        from synthkd.train.sft import run_sft

        record = run_sft(cfg)
        if _main_process():
            log.info(_summary(record))
        return ExitCode.OK

    _guard(job)


# --------------------------------------------------------------------------------------------------
# dpo
# --------------------------------------------------------------------------------------------------


@train_app.command("dpo")
@with_columns
@config_command(DPOConfig, extra=[INP_PARAM])
def dpo_command(cfg: DPOConfig, inp: Optional[dict] = None) -> None:
    """Direct preference optimisation (TRL DPOTrainer), optionally after an SFT stage."""
    cfg = bind_columns(cfg, inp)

    def job() -> int:
        _check_paths({"--input": cfg.input, "--eval-input": cfg.eval_input, "--sft-input": cfg.sft_input,
                      "--provenance": cfg.provenance}, ("--output", cfg.output))
        _quiet()
        from synthkd.train.dpo import run_dpo

        record = run_dpo(cfg)
        if _main_process():
            log.info(_summary(record))
        return ExitCode.OK

    _guard(job)


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ExportConfig(SFTTargets, SFTRowFields, PreferenceRowFields):
    """``synthkd train export``'s options (CLI only: a pipeline trains, it does not export)."""

    input: Path = opt(help="Method rows (or preference rows) jsonl.", flags=("-i",))
    output: Path = opt(help="Output jsonl (datasets.load_dataset('json') reads it).", flags=("-o",))
    format: str = opt("conversational", help="prompt-completion, conversational, messages, or preference.",
                      flags=("-f",), choices=FORMATS)
    plain: bool = opt(False, help="preference: plain-format strings instead of chat messages.")
    skip_invalid: bool = opt(False, help="Skip bad rows (counted) instead of stopping.")


register_feature("train.export", ExportConfig, command=("train", "export"), stage=None)


@train_app.command("export")
@config_command(ExportConfig)
def export_command(cfg: ExportConfig) -> None:
    """Write rows as a TRL dataset file (no model needed)."""

    def job() -> int:
        from synthkd.jsonl_io import check_paths
        from synthkd.train.export import Fields, export_rows

        check_paths({"--input": cfg.input}, {"--output": cfg.output})
        fields = Fields(id=cfg.id_field, input=cfg.input_field, rationale=cfg.rationale_field,
                        answer=cfg.answer_field, reasoning=cfg.reasoning_field, prompt=cfg.prompt_field, chosen=cfg.chosen_field,
                        rejected=cfg.rejected_field)
        counts = export_rows(cfg.input, cfg.output, cfg.format, mode=cfg.mode, fields=fields,
                             rationale_weight=cfg.rationale_weight, answer_template=cfg.answer_template,
                             conversational=not cfg.plain, skip_invalid=cfg.skip_invalid)
        log.info(f"done: {cfg.output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return ExitCode.OK

    _guard(job)


# --------------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------------

_JSON_OUT = inspect.Parameter(
    "json_out", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option("--json", help="Print the metrics JSON instead of the Markdown table.")])


@with_columns
@config_command(EvalConfig, extra=[_JSON_OUT, INP_PARAM])
def eval_command(cfg: EvalConfig, json_out: bool = False, inp: Optional[dict] = None) -> None:
    """Score a student on held-out rows: accuracy (+ macro-F1, per-label), mistakes, teacher comparison."""
    cfg = bind_columns(cfg, inp)
    out = cfg.output

    def job() -> int:
        _check_paths({"--input": cfg.input}, ("--output", out))
        _quiet()
        from synthkd.train.evaluate import run_eval

        rep = run_eval(cfg)
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
