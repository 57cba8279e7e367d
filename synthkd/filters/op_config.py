"""Operator registry and the cleaning config: a YAML/JSON list of ``{op: NAME, option: value, ...}``.

Why pydantic with ``extra="forbid"``: a misspelt option (``treshold: 0.9``) must stop the run with a
message naming the file, the list index and the key — a silently ignored option would quietly clean
the data with the default.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

#: A bad operator list is a ConfigError like any other (a pipeline's ``clean`` stage reports it so).
from synthkd.errors import ConfigError
from synthkd.filters.base import OpConfig, Operator, RunContext

#: One module per operator; each defines one Operator subclass (found by its ``op`` attribute).
_REGISTRY: dict[str, type[Operator]] = {}


def registry() -> dict[str, type[Operator]]:
    if not _REGISTRY:
        # every module of the package: a new operator is found where it is written (one place)
        import pkgutil

        import synthkd.filters as pkg

        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"synthkd.filters.{info.name}")
            for obj in vars(mod).values():
                if isinstance(obj, type) and issubclass(obj, Operator) and obj.__module__ == mod.__name__ \
                        and getattr(obj, "op", None):
                    _REGISTRY[obj.op] = obj
    return _REGISTRY


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc)


def validate_op(item: Any, where: str) -> OpConfig:
    """One config entry -> its validated Config; ``where`` prefixes every message (``file: [2]``)."""
    ops = registry()
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping like {{op: near_dup, ...}}, got {type(item).__name__}")
    name = item.get("op")
    if name is None:
        raise ConfigError(f"{where}: key 'op' missing (one of: {', '.join(sorted(ops))})")
    if name not in ops:
        raise ConfigError(f"{where}: unknown operator {name!r} (known: {', '.join(sorted(ops))})")
    cls = ops[name]
    try:
        return cls.Config.model_validate(item)
    except ValidationError as exc:
        known = ", ".join(k for k in cls.Config.model_fields if k != "op")
        msgs = []
        for err in exc.errors():
            loc = _fmt_loc(err["loc"])
            err["msg"] = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msgs.append(f"{where} {name}: unknown option {loc!r} (known options: {known})")
            elif loc:
                msgs.append(f"{where} {name}: option {loc!r}: {err['msg']}")
            else:
                msgs.append(f"{where} {name}: {err['msg']}")
        raise ConfigError("\n".join(msgs)) from None


def load_config(path: str | Path) -> list[OpConfig]:
    """Parse and validate a config file (YAML or JSON; a list, or a mapping with an ``ops`` list)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON: {exc}") from None
    if isinstance(data, dict) and set(data) == {"ops"}:
        data = data["ops"]
    return parse_ops(data, str(path))


def parse_ops(data: Any, source: str = "config") -> list[OpConfig]:
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{source}: expected a non-empty list of operators, like [{{op: exact_dedup, fields: [text]}}]")
    configs = [validate_op(item, f"{source}: [{i}]") for i, item in enumerate(data)]
    # unique labels: a repeated op gets "#2", "#3"... so the funnel and rejects tell them apart
    seen: dict[str, int] = {}
    for c in configs:
        label = c.name or c.op
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1 and c.name is None:
            c.name = f"{label}#{seen[label]}"
        elif seen[label] > 1:
            raise ConfigError(f"{source}: operator name {label!r} is used twice")
    return configs


def build(configs: list[OpConfig], ctx: RunContext) -> list[Operator]:
    ops = registry()
    return [ops[c.op](c, ctx) for c in configs]
