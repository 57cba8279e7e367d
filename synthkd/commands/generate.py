"""``synthkd generate <method>``: each generation method registers its command on ``generate_app``
from its own module (synthkd/commands/generate_*.py), imported below."""

from __future__ import annotations

import importlib
import pkgutil

import typer

generate_app = typer.Typer(help="Generate training data with a teacher.", no_args_is_help=True)


def register_all() -> None:
    import synthkd.commands as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("generate_"):
            importlib.import_module(f"synthkd.commands.{mod.name}")
