"""Build a Teacher from what a user typed: a model name (OpenAI-compatible API), ``replay:FILE``,
``local:PATH`` (a local transformers model, once training support is installed) or ``simulated:TASK``
(a simulated teacher on an in-process loopback server, see :mod:`synthkd.teachers.simulated_teacher`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from synthkd.options import opt, register_feature
from synthkd.teachers.base import Teacher, TeacherConfigError
from synthkd.teachers.cache import RequestCache
from synthkd.teachers.families import DEFAULT_REASONING_BUDGET


def default_cache_path() -> Path:
    """The one default request cache of every command and pipeline (``cache`` unset): ``$SYNTHKD_CACHE``,
    else ``$XDG_CACHE_HOME/synthkd/teacher-cache.sqlite`` (``~/.cache`` without XDG).  One default, so
    what a command paid for is free to a pipeline asking the same requests, and the other way round."""
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

    teacher: str = opt(help="Model name (OpenAI-compatible API), anthropic:MODEL (Anthropic Messages API), "
                            "replay:RECORDED.jsonl, local:PATH, or simulated:arithmetic (offline).",
                       flags=("--model", "-m"))
    provider: str = opt("auto", help="API dialect: auto (anthropic: prefix -> Anthropic, else OpenAI-compatible), "
                                     "openai, or anthropic (Messages API; key $ANTHROPIC_API_KEY).",
                        choices=("auto", "openai", "anthropic"))
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
                                        "~/.cache/synthkd/teacher-cache.sqlite, for commands and pipelines alike).")
    no_cache: bool = opt(False, help="Do not read or write the request cache.", flags=("--no-cache",), stage=False)
    max_cost: float | None = opt(None, help="Stop sending new requests once this many USD are spent (resumable).", gt=0)
    prices: Path | None = opt(None, help="JSON/YAML price table {model: {input, output}} in USD per 1M tokens.")
    families: Path | None = opt(None, help="JSON/YAML model-family table {model-prefix: family} added to the "
                                           "built-in one (how requests are shaped: see README, Reasoning teachers).")
    reasoning_effort: str | None = opt(None, help="reasoning_effort sent with every request (OpenAI o-series/GPT-5, "
                                                  "DeepSeek, Gemini: e.g. low|medium|high); passed as given, the "
                                                  "provider decides.")
    reasoning_budget: int | None = opt(None, help="Output tokens a reasoning model may spend on reasoning, added to "
                                                  "each request's max_tokens (it counts its reasoning in it). Default "
                                                  f"{DEFAULT_REASONING_BUDGET} for the reasoning families (o-series, "
                                                  "GPT-5, deepseek-reasoner), 0 for others: set it for a reasoning "
                                                  "model the family table does not know (e.g. Qwen3 on vLLM).", ge=0)
    thinking_budget: int | None = opt(None, help="Anthropic extended thinking: budget_tokens per request (>= 1024); "
                                                 "the trace becomes the rows' reasoning field.", ge=1024)
    extra_body: dict[str, Any] = opt(default_factory=dict, help="Provider-specific request fields passed through "
                                     "as given, KEY=VALUE (VALUE read as JSON when it parses, else a string); "
                                     "repeat for several.  YAML: extra_body: {KEY: VALUE}.", flags=("--param",),
                                     cli_type=Optional[list[str]], cli_parse=lambda v: parse_params(v), metavar="KEY=VALUE")
    adaptive_timeout: bool = opt(True, help="Cut hung attempts at 8x the observed p95 latency.",
                                 flags=("--adaptive-timeout/--fixed-timeout",))
    structured: str = opt("auto", help="Structured outputs for the answers methods parse (lists, scores, labels): "
                                       "auto = a strict JSON schema where the model's family takes one (OpenAI, "
                                       "Gemini, Anthropic as a forced tool), falling back to text once on a 400; "
                                       "on = always (vLLM, SGLang, Ollama), no fallback; off = text only.",
                          choices=("auto", "on", "off"))
    reask: int = opt(2, help="Re-asks of a structured answer that is invalid JSON or does not match its schema "
                             "(each one paid, counted in the cost, the budget and the summary).", ge=0)
    batch: bool = opt(False, help="Send the requests through the provider's Batch API (OpenAI Batch API, Anthropic "
                                  "Message Batches) at its batch price (half the online price), instead of one by "
                                  "one: same requests, cache and budget; see README, Batch mode.",
                      flags=("--batch/--online",))
    wait: bool | None = opt(None, help="Batch mode: wait for the batches (polling, with progress) and go on; "
                                       "--no-wait submits, exits 5, and a rerun of the same command collects. "
                                       "Default: wait on a terminal.")
    batch_retries: int = opt(2, help="Batch mode: times a request that failed or expired in a batch is resubmitted "
                                     "before its error goes to the rejects.", ge=0)
    batch_poll: float = opt(30.0, help="Batch mode: seconds between polls of a live batch.", gt=0)
    batch_max_requests: int | None = opt(None, help="Batch mode: requests per batch at most (default the provider's limit: "
                                            "OpenAI 50,000 requests / 200 MB, Anthropic 100,000 / 256 MB).", ge=1)
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


def parse_params(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``--param KEY=VALUE`` (repeated) as a dict; VALUE is JSON when it parses (numbers, true, objects)."""
    import json

    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TeacherConfigError(f"--param {item!r}: expected KEY=VALUE")
        if key in out:
            raise TeacherConfigError(f"--param {key} is given twice")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def make_teacher(spec: TeacherSpec) -> Teacher:
    """The Teacher for ``spec.teacher``; raises TeacherConfigError/InputError on bad settings.  With
    ``spec.batch`` the teacher sends through the provider's Batch API (:mod:`synthkd.teachers.batch`)."""
    teacher = _make_teacher(spec)
    if spec.batch:
        from synthkd.teachers.batch.engine import attach_batch

        attach_batch(teacher, spec)
    return teacher


def _make_teacher(spec: TeacherSpec) -> Teacher:
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
    if name.startswith("anthropic:") or spec.provider == "anthropic":
        from synthkd.teachers.anthropic import AnthropicTeacher

        return AnthropicTeacher(name.removeprefix("anthropic:"), base_url=spec.base_url, api_key=spec.api_key,
                                thinking_budget=spec.thinking_budget, reasoning_effort=spec.reasoning_effort,
                                reasoning_budget=spec.reasoning_budget, **client_options(spec))
    if spec.thinking_budget is not None:
        raise TeacherConfigError("--thinking-budget is for Anthropic teachers (anthropic:MODEL); OpenAI-style "
                                 "reasoning models take --reasoning-effort")
    from synthkd.teachers.openai_compat import OpenAICompatibleTeacher

    return OpenAICompatibleTeacher(name, base_url=spec.base_url, api_key=spec.api_key,
                                   reasoning_effort=spec.reasoning_effort, reasoning_budget=spec.reasoning_budget,
                                   **client_options(spec))


def client_options(spec: TeacherSpec) -> dict[str, Any]:
    """The :class:`OpenAICompatibleTeacher` keyword arguments a spec sets, endpoint and key aside
    (concurrency, rate limits, timeouts, retries, cache, prices, budget, default sampling parameters)."""
    from synthkd.teachers.families import FamilyTable
    from synthkd.teachers.pricing import PriceTable

    return {
        "concurrency": spec.concurrency, "rpm": spec.rpm, "tpm": spec.tpm, "timeout_s": spec.timeout,
        "max_retries": spec.max_retries, "adaptive_timeout": spec.adaptive_timeout,
        "cache": None if spec.no_cache else RequestCache(spec.cache or default_cache_path()),
        "prices": PriceTable.default(spec.prices), "max_cost": spec.max_cost, "default_params": spec.default_params,
        "families": FamilyTable.default(spec.families), "extra_body": spec.extra_body,
        "structured": spec.structured, "reask": spec.reask,
    }
