"""What the ``generate.*`` stages share beyond :mod:`synthkd.stages.base` (whose ``check_budget`` and
``funnel_counts`` they use): resolving a config's file options against the pipeline's directory."""

from __future__ import annotations

import dataclasses
from typing import Any

from synthkd.stages.base import StageContext


def resolved(ctx: StageContext, cfg: Any, files: tuple[str, ...] = (), templates: tuple[str, ...] = ()) -> Any:
    """``cfg`` with its file options (``files``) and ``.j2`` template options (``templates``) taken
    relative to the pipeline file's directory, as every path in a pipeline is."""
    changes: dict[str, Any] = {}
    for name in files:
        v = getattr(cfg, name)
        if v is not None:
            changes[name] = ctx.resolve(str(v))
    for name in templates:
        v = getattr(cfg, name)
        if v is not None and str(v).endswith(".j2"):
            changes[name] = str(ctx.resolve(str(v)))
    return dataclasses.replace(cfg, **changes) if changes else cfg
