"""Build a Teacher from what a user typed: a model name (OpenAI-compatible API), ``replay:FILE``,
``local:PATH`` (a local transformers model, once training support is installed) or ``simulated:TASK``
(a simulated teacher on an in-process loopback server, see :mod:`synthkd.teachers.simulated_teacher`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkd.teachers.base import Teacher, TeacherConfigError
from synthkd.teachers.cache import RequestCache


def default_cache_path() -> Path:
    env = os.environ.get("SYNTHKD_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "synthkd" / "teacher-cache.sqlite"


@dataclass
class TeacherSpec:
    teacher: str
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 32
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 600.0
    max_retries: int = 6
    cache: Path | None = None
    no_cache: bool = False
    max_cost: float | None = None
    prices: Path | None = None
    default_params: dict[str, Any] = field(default_factory=dict)


def make_teacher(spec: TeacherSpec) -> Teacher:
    """The Teacher for ``spec.teacher``; raises TeacherConfigError/InputError on bad settings."""
    name = spec.teacher
    if name.startswith("replay:"):
        from synthkd.teachers.replay import ReplayTeacher

        return ReplayTeacher.from_jsonl(name[len("replay:"):])
    if name.startswith("simulated:"):
        from synthkd.teachers.simulated_teacher import make_simulated_teacher

        return make_simulated_teacher(spec)
    if name.startswith("local:"):
        try:
            from synthkd.teachers.local import LocalTeacher  # type: ignore[import-not-found]
        except ImportError:
            raise TeacherConfigError(
                "local teachers need the training extra: pip install torch==2.13.0 'synthkd[train]'"
            ) from None
        return LocalTeacher(name[len("local:"):], default_params=spec.default_params)
    from synthkd.teachers.openai_compat import OpenAICompatibleTeacher

    return OpenAICompatibleTeacher(name, base_url=spec.base_url, api_key=spec.api_key, **client_options(spec))


def client_options(spec: TeacherSpec) -> dict[str, Any]:
    """The :class:`OpenAICompatibleTeacher` keyword arguments a spec sets, endpoint and key aside
    (concurrency, rate limits, timeouts, retries, cache, prices, budget, default sampling parameters)."""
    from synthkd.teachers.pricing import PriceTable

    return {
        "concurrency": spec.concurrency, "rpm": spec.rpm, "tpm": spec.tpm, "timeout_s": spec.timeout,
        "max_retries": spec.max_retries,
        "cache": None if spec.no_cache else RequestCache(spec.cache or default_cache_path()),
        "prices": PriceTable.default(spec.prices), "max_cost": spec.max_cost, "default_params": spec.default_params,
    }
