"""``synthkd serve-test``: the OpenAI-compatible fault-injecting test server, from the command line."""

from __future__ import annotations

import typer

#: --help goes to the server's own parser, which knows the real options (F16); typer would list none.
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def serve_test_command(ctx: typer.Context) -> None:
    """Run the OpenAI-compatible fault-injecting test server (see `synthkd serve-test --help`)."""
    from synthkd.testing.server import main

    try:
        code = main(ctx.args, prog="synthkd serve-test")
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    raise typer.Exit(code or 0)
