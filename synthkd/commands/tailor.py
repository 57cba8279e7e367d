"""``synthkd tailor``: the tailored multi-round distillation loop (see :mod:`synthkd.methods.tailored`).

Register in ``synthkd/cli.py`` with::

    from synthkd.commands.tailor import tailor_command
    app.command("tailor")(tailor_command)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from synthkd.commands.common import (
    TeacherOpt, make_teacher, run_job, teacher_spec, with_connection_options,
)
from synthkd.errors import ExitCode

log = logging.getLogger(__name__)


@with_connection_options(concurrency=16)
def tailor_command(
    student: Annotated[str, typer.Option("--student", help="Base student (Hub name or path) for round 0.")],
    pool: Annotated[Path, typer.Option("--pool", help="Training pool jsonl: id, question, gold answer.")],
    initial: Annotated[Path, typer.Option("--initial", help="Initial distilled rows (input, rationale, answer) for round 0.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (round_<r>/..., rounds.json, accuracy.png).")],
    teacher: TeacherOpt,
    heldout: Annotated[Path | None, typer.Option("--heldout", help="Held-out jsonl (required): id, question, gold.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", "-R", help="Tailored rounds after round 0.")] = 3,
    patience: Annotated[int, typer.Option("--patience", help="Stop after this many rounds without held-out gain.")] = 1,
    mode: Annotated[str, typer.Option("--mode", help="SFT mode: label, rationale, multitask.")] = "rationale",
    replace: Annotated[bool, typer.Option("--replace", help="Train each round on its new rows only (default: accumulate).")] = False,
    pool_gold_field: Annotated[str, typer.Option("--pool-gold-field")] = "answer",
    heldout_gold_field: Annotated[str, typer.Option("--heldout-gold-field")] = "gold",
    template: Annotated[str, typer.Option("--template", help="Correction prompt template.")] = "tailored/correct",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Teacher completion limit.")] = 256,
    epochs: Annotated[float, typer.Option("--epochs")] = 1.0,
    learning_rate: Annotated[float, typer.Option("--lr", "--learning-rate")] = 2e-5,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    max_length: Annotated[int, typer.Option("--max-length")] = 512,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    eval_batch_size: Annotated[int, typer.Option("--eval-batch-size", help="Student generation batch (pool and held-out).")] = 32,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Student answer length (default: from its training record).")] = None,
    samples: Annotated[int, typer.Option("--samples", "-k", help="Student answers per pool question (greedy + k-1 sampled); any wrong one is a mistake.")] = 1,
    sample_temperature: Annotated[float, typer.Option("--sample-temperature")] = 0.8,
    max_mistakes: Annotated[int | None, typer.Option("--max-mistakes", help="At most this many mistakes per round go to the teacher (cost cap).")] = None,
    similar: Annotated[int, typer.Option("--similar", help="LLM2LLM: new exercises per mistake, solved and filtered (0: off).")] = 0,
    similar_template: Annotated[str, typer.Option("--similar-template")] = "tailored/similar",
    dpo: Annotated[str, typer.Option("--dpo", help="Self-reflection DPO: off, each (SFT then DPO every round), final (after the loop).")] = "off",
    dpo_beta: Annotated[float, typer.Option("--dpo-beta")] = 0.1,
    dpo_lr: Annotated[float | None, typer.Option("--dpo-lr", help="DPO learning rate (default: the SFT one / 20).")] = None,
    dpo_epochs: Annotated[float, typer.Option("--dpo-epochs")] = 1.0,
    conn: Optional[dict] = None,  # the connection options (with_connection_options)
) -> None:
    """Train, find the student's mistakes on the pool, have the teacher correct them, train further; repeat."""
    from synthkd.jsonl_io import check_paths
    from synthkd.methods.tailored import TailorOptions, run_tailored
    from synthkd.train.common import TrainSettings

    async def job() -> int:
        check_paths({"--pool": pool, "--initial": initial, "--heldout": heldout},
                    cache=None if conn["no_cache"] else conn["cache"])
        settings = TrainSettings(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                                 max_length=max_length, seed=seed, skip_invalid=True)
        opts = TailorOptions(
            student=student, pool=pool, initial=initial, heldout=heldout, out=out, rounds=rounds, patience=patience,
            mode=mode, accumulate=not replace, pool_gold_field=pool_gold_field,
            heldout_gold_field=heldout_gold_field, template=template, max_tokens=max_tokens,
            eval_batch_size=eval_batch_size, max_new_tokens=max_new_tokens, settings=settings, samples=samples, sample_temperature=sample_temperature, max_mistakes=max_mistakes,
            similar=similar, similar_template=similar_template, dpo=dpo, dpo_beta=dpo_beta,
            dpo_learning_rate=dpo_lr, dpo_epochs=dpo_epochs,
        )
        from synthkd.methods.tailored import check_options

        check_options(opts)  # before the teacher is built: a missing held-out set costs nothing
        t = make_teacher(teacher_spec(teacher, **conn))
        try:
            result = await run_tailored(opts, t, say=log.info)
        finally:
            await t.aclose()
        accs = ", ".join(f"r{h['round']} {h['accuracy']:.4f}" for h in result["rounds"] if h.get("accuracy") is not None)
        if result.get("reflection"):
            accs += f", after DPO self-reflection {result['reflection']['accuracy']:.4f}"
        log.info(f"tailor: held-out accuracy per round: {accs}; best round {result['best_round']}; "
            f"{out / 'rounds.json'}, {out / 'accuracy.png'}")
        return ExitCode.BUDGET if result["budget_exhausted"] else ExitCode.OK

    run_job(job, sigterm=False)  # training blocks the loop: SIGTERM keeps its default
