"""The ``synthkd`` command: one entry point, a subcommand per job, ``--help`` on each.

Messages go to stderr through one logging handler (:func:`synthkd.log.setup_cli_logging`), set up when
a command starts: the text is the message alone; ``--quiet`` keeps warnings and errors only,
``--verbose`` adds the debug messages (the traceback of an error reported in one line, too).
"""

from __future__ import annotations

import logging

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


def _register_groups() -> None:
    """Every command lives in synthkd/commands/, one file each; the app only mounts them."""
    from synthkd.commands.complete_cmd import complete_command
    from synthkd.commands.demo_cmd import demo_command
    from synthkd.commands.export_cmd import export_command
    from synthkd.commands.init_cmd import init_command
    from synthkd.commands.serve_test import CONTEXT_SETTINGS, serve_test_command

    app.command("complete")(complete_command)
    app.command("serve-test", context_settings=CONTEXT_SETTINGS)(serve_test_command)
    app.command("demo")(demo_command)
    app.command("init")(init_command)
    app.command("export")(export_command)
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
    from synthkd.commands.batch_cmd import batch_app

    app.add_typer(batch_app, name="batch")


_register_groups()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
