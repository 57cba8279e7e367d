"""Build a Teacher from what a user typed: a model name (OpenAI-compatible API), ``replay:FILE``,
``local:PATH`` (a local transformers model, once training support is installed) or ``simulated:TASK``
(a simulated teacher on an in-process loopback server, see :mod:`synthkd.teachers.simulated_teacher`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from synthkd.options import opt, register_feature
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
    """How to reach a teacher: declared once, here.  ``synthkd complete``, every ``generate`` command,
    ``clean`` and ``tailor`` take these fields as CLI options (:func:`synthkd.commands.common.
    with_connection_options`), a pipeline's ``teacher:`` block as YAML keys (``teacher`` spelled
    ``model`` there; :class:`synthkd.config.TeacherConfig`), and the Python API as this dataclass."""

    teacher: str = opt(help="Model name (OpenAI-compatible API), replay:RECORDED.jsonl, local:PATH, or "
                            "simulated:arithmetic (offline).", flags=("--model", "-m"))
    base_url: str | None = opt(None, help="OpenAI-compatible base URL (default $OPENAI_BASE_URL or OpenAI).")
    api_key: str | None = opt(None, help="API key (default $OPENAI_API_KEY); never a CLI option or a YAML key, "
                                         "so that it stays out of shell history and run records.", cli=False, stage=False)
    concurrency: int = opt(32, help="Requests in flight at once.", flags=("-c",), ge=1)
    rpm: float | None = opt(None, help="Client-side requests-per-minute limit.", gt=0)
    tpm: float | None = opt(None, help="Client-side tokens-per-minute limit.", gt=0)
    timeout: float = opt(600.0, help="Hard per-attempt timeout in seconds (attempts adapt below it to observed "
                                     "latency).", gt=0)
    max_retries: int = opt(6, help="Retries per request for 5xx, timeouts, malformed bodies (429s get more).", ge=0)
    cache: Path | None = opt(None, help="SQLite request cache (default $SYNTHKD_CACHE or "
                                        "~/.cache/synthkd/teacher-cache.sqlite; in a pipeline RUN_DIR/teacher-cache.sqlite).")
    no_cache: bool = opt(False, help="Do not read or write the request cache.", flags=("--no-cache",), stage=False)
    max_cost: float | None = opt(None, help="Stop sending new requests once this many USD are spent (resumable).", gt=0)
    prices: Path | None = opt(None, help="JSON/YAML price table {model: {input, output}} in USD per 1M tokens.")
    adaptive_timeout: bool = opt(True, help="Cut hung attempts at 8x the observed p95 latency.",
                                 flags=("--adaptive-timeout/--fixed-timeout",))
    default_params: dict[str, Any] = opt(default_factory=dict, help="Sampling parameters sent with every request "
                                         "(temperature, max_tokens...).", cli=False, stage=False)


@dataclass(kw_only=True)
class SamplingParams:
    """The sampling parameters a job sends with every request, where the job has no say of its own:
    ``synthkd complete``'s options and a pipeline ``teacher:`` block's keys (into ``default_params``)."""

    temperature: float | None = opt(None, help="Sampling temperature (server default if unset).", ge=0)
    max_tokens: int | None = opt(None, help="max_tokens sent with each request.", ge=1)

    def sampling_params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(SamplingParams) if getattr(self, f.name) is not None}


#: The fields of TeacherSpec that say how to connect (all but the teacher's name and the sampling params).
CONNECTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TeacherSpec) if f.name not in ("teacher", "default_params"))


def spec_of(obj: Any, **override: Any) -> TeacherSpec:
    """The TeacherSpec part of a config that extends it (``synthkd complete``'s), as a plain TeacherSpec."""
    return TeacherSpec(**{**{f.name: getattr(obj, f.name) for f in fields(TeacherSpec)}, **override})


#: checked by tests/test_options_drift.py against ``synthkd complete``'s options (and, there, against every
#: teacher command and the pipeline's ``teacher:`` block)
register_feature("teacher", TeacherSpec, command=("complete",), stage=None)


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
        "max_retries": spec.max_retries, "adaptive_timeout": spec.adaptive_timeout,
        "cache": None if spec.no_cache else RequestCache(spec.cache or default_cache_path()),
        "prices": PriceTable.default(spec.prices), "max_cost": spec.max_cost, "default_params": spec.default_params,
    }
