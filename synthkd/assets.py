"""Files shipped inside the package: the prompt templates and the ``accelerate launch`` configs.

Why inside the package: ``pip install synthkd`` must give a tool whose generation methods find their
templates, so they live in ``synthkd/prompts`` (the repository's top-level ``prompts`` is a symlink to
it, kept only as the documented place to read and edit them) and ``synthkd/accelerate_configs``, are
declared as package data, and are found with :mod:`importlib.resources` rather than from a path relative
to the repository.

``python -m synthkd.assets accelerate ddp`` prints the path of a shipped accelerate config, for
``accelerate launch --config_file "$(python -m synthkd.assets accelerate ddp)" ...``; with no name it
lists them.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def package_dir(name: str) -> Path | None:
    """The shipped directory ``synthkd/<name>`` on disk, or None when the package is not on disk (zipped)."""
    root = resources.files("synthkd") / name
    return root if isinstance(root, Path) and root.is_dir() else None


def prompts_dir() -> Path | None:
    """The shipped prompt templates (``synthkd/prompts``)."""
    return package_dir("prompts")


def accelerate_configs() -> dict[str, Path]:
    """The shipped accelerate configs by name (``ddp``, ``fsdp``, ``deepspeed_zero2``, ``deepspeed_zero3``)."""
    d = package_dir("accelerate_configs")
    return {} if d is None else {p.stem: p for p in sorted(d.glob("*.yaml"))}


def accelerate_config(name: str) -> Path:
    """The path of a shipped accelerate config (``ddp`` or ``ddp.yaml``)."""
    configs = accelerate_configs()
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in configs:
        raise KeyError(f"no shipped accelerate config {name!r}; there are: {', '.join(configs) or 'none'}")
    return configs[stem]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("accelerate", "prompts"):
        print("usage: python -m synthkd.assets accelerate [NAME] | prompts", file=sys.stderr)
        return 2
    if args[0] == "prompts":
        d = prompts_dir()
        if d is None:
            print("the prompt templates are not on disk (zipped install)", file=sys.stderr)
            return 1
        print(d)
        return 0
    if len(args) == 1:
        for name, path in accelerate_configs().items():
            print(f"{name}\t{path}")
        return 0
    try:
        print(accelerate_config(args[1]))
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
