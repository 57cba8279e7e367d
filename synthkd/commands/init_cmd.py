"""``synthkd init``: write a commented pipeline YAML for the user's own data (see :mod:`synthkd.init_pipeline`)."""

from __future__ import annotations

import typer

from synthkd.commands.common import exit_on_error
from synthkd.init_pipeline import InitConfig, write_pipeline
from synthkd.options import config_command


@config_command(InitConfig)
def init_command(cfg: InitConfig) -> None:
    """Write a pipeline for your data: teacher rationales (or answers) -> cleaning -> student -> eval.

    Asks nothing; the file is checked as `synthkd validate` checks it before it is written.
    Exit codes: 0 written; 2 bad input (a missing file, an unknown column, an existing output without --force).
    """
    with exit_on_error():
        path = write_pipeline(cfg)
    print(f"wrote {path}: next, `synthkd validate {path}` (cost estimate), `synthkd run {path} --limit 20` "
          f"(dry run), then `synthkd run {path}`")
    raise typer.Exit(0)
