"""The ``synthkd`` command: one entry point, a subcommand per job, ``--help`` on each.

Messages go to stderr through one logging handler (:func:`synthkd.log.setup_cli_logging`), set up when
a command starts: the text is the message alone; ``--quiet`` keeps warnings and errors only,
``--verbose`` adds the debug messages (the traceback of an error reported in one line, too).
"""

from __future__ import annotations

import logging
from typing import Optional

import typer

app = typer.Typer(
    help="synthkd: distil an API teacher into training data and a small local student.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also debug messages (an error's traceback)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr."),
) -> None:
    from synthkd.log import setup_cli_logging

    setup_cli_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def _use_uvloop() -> None:
    try:
        import uvloop

        uvloop.install() if hasattr(uvloop, "install") else None
    except ImportError:
        pass


def _complete_command() -> None:
    """``synthkd complete``: its options generated from :class:`synthkd.complete.CompleteConfig` (the
    teacher's from TeacherSpec, as on every command and in a pipeline's ``teacher:`` block)."""
    from synthkd.complete import CompleteConfig, run_complete
    from synthkd.options import config_command

    @app.command()
    @config_command(CompleteConfig)
    def complete(cfg: CompleteConfig) -> None:
        """Complete every prompt of a jsonl file with a teacher (API model, replay:, local: or simulated:).

        Exit codes: 0 every row done; 1 some rows rejected; 2 bad input; 3 budget reached;
        4 the teacher refused us (bad key, unreachable); 130 interrupted. Every non-zero run is resumable.
        """
        _use_uvloop()
        raise typer.Exit(run_complete(cfg))


_complete_command()


@app.command(
    "serve-test",
    # --help goes to the server's own parser, which knows the real options (F16); typer would list none.
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def serve_test(ctx: typer.Context) -> None:
    """Run the OpenAI-compatible fault-injecting test server (see `synthkd serve-test --help`)."""
    from synthkd.testing.server import main

    try:
        code = main(ctx.args, prog="synthkd serve-test")
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    raise typer.Exit(code or 0)


@app.command()
def demo(
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


def _register_groups() -> None:
    """Subcommand groups live in synthkd/commands/; `complete` stays here and imports nothing heavy."""
    from synthkd.commands.generate import generate_app, register_all

    register_all()
    app.add_typer(generate_app, name="generate")
    from synthkd.commands.pipeline_cmd import push, report, run, validate

    app.command("run")(run)
    app.command("validate")(validate)
    app.command("report")(report)
    app.command("push")(push)
    import importlib.util

    if importlib.util.find_spec("synthkd.commands.clean") is not None:
        from synthkd.commands.clean import clean_app

        app.add_typer(clean_app, name="clean")
    if importlib.util.find_spec("synthkd.commands.train") is not None:
        from synthkd.commands.train import eval_command, train_app

        app.add_typer(train_app, name="train")
        app.command("eval")(eval_command)
    from synthkd.commands.tailor import tailor_command

    app.command("tailor")(tailor_command)


_register_groups()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
