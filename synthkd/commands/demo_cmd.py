"""``synthkd demo``: the offline end-to-end demo (simulated teachers on 127.0.0.1 -> rationales ->
filter -> tiny students -> table; or, with ``--tailored``, tailored rounds vs one-shot distillation)."""

from __future__ import annotations

from typing import Optional

import typer


def demo_command(
    n_train: int = typer.Option(600, "--train", help="Training problems."),
    n_test: int = typer.Option(200, "--test", help="Held-out problems."),
    error_rate: float = typer.Option(0.1, "--error-rate", help="Share of the careful teacher's answers with a slip."),
    noisy_error_rate: float = typer.Option(0.4, "--noisy-error-rate", help="Same, for the noisy teacher."),
    noise_rate: float = typer.Option(0.1, "--noise-rate", help="Share of answers with formatting noise."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Training epochs of each tiny student "
                                           "(default 4; 10 with --tailored)."),
    seed: int = typer.Option(0, "--seed"),
    tailored: bool = typer.Option(False, "--tailored", help="Tailored rounds + DPO self-reflection vs one-shot "
                                  "distillation at equal teacher calls (instead of the formats/filter comparison)."),
    rounds: int = typer.Option(3, "--rounds", help="--tailored: tailored rounds after round 0."),
) -> None:
    """Offline end-to-end demo: simulated teachers on 127.0.0.1 -> rationales -> filter -> tiny students -> table."""
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):  # trainer logs to stderr: stdout gets the table only
        if tailored:
            from synthkd.demo_tailored import run_tailored_demo

            out = run_tailored_demo(rounds=rounds, error_rate=error_rate, noise_rate=noise_rate, seed=seed,
                                    epochs=epochs or 10.0)
            where = f"; accuracy per round: {out['plot']}"
        else:
            from synthkd.demo import run_demo

            out = run_demo(n_train=n_train, n_test=n_test, error_rate=error_rate, noisy_error_rate=noisy_error_rate,
                           noise_rate=noise_rate, epochs=epochs or 4.0, seed=seed)
            where = " (report.md inside)"
    print(out["table"])
    print(f"\nwall time {out['wall_s']:.0f} s; run directory {out['run_dir']}{where}")
