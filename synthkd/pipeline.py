"""Run a pipeline's stages in order into ``runs/<name>/``, resumably, skipping what is already done.

The run directory is the source of truth:
  manifest.json          config + hash, versions, per-stage status, counts, tokens, cost, timings
  <stage>.jsonl          the stage's rows, append-only (a rerun resumes from what is there)
  <stage>.rejects.jsonl  rows the stage dropped, with reasons

A stage is *skipped* when its fingerprint — its own config, the teacher config, and the content hashes
of its inputs — equals the one recorded for a finished run of it and its outputs still exist.  A stage
that was interrupted (status "running") with the same fingerprint is *resumed*: its output is kept, the
stage skips ids already written and gets every answer it already paid for from the request cache.  A
stage whose fingerprint changed starts over (its old output is moved to ``<stage>.jsonl.prev``,
never silently mixed with the new one).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import BaseModel, ValidationError

import synthkd
from synthkd.config import ConfigError, PipelineConfig, StageConfig, TeacherConfig, stage_line
from synthkd.teachers.base import Teacher
from synthkd.jsonl_io import InputError
from synthkd.teachers.factory import TeacherSpec, make_teacher
from synthkd.templates import TemplateError


def counts_line(counts: dict[str, Any], limit: int = 400) -> str:
    """A stage's counts for the log: whole when short; else nested parts shortened (the manifest has all)."""
    full = json.dumps(counts, default=str)
    if len(full) <= limit:
        return full
    short: dict[str, Any] = {}
    for k, v in counts.items():
        if isinstance(v, list):
            short[k] = f"[{len(v)} items]"
        elif isinstance(v, dict) and len(json.dumps(v, default=str)) > 120:
            short[k] = "{...}"
        else:
            short[k] = v
    return json.dumps(short, default=str) + " (all counts in manifest.json)"


# ----------------------------------------------------------------------------- stage registry
@dataclass
class Estimate:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                        self.completion_tokens + other.completion_tokens)


@dataclass
class StageContext:
    pipeline: PipelineConfig
    stage: StageConfig
    index: int
    run_dir: Path
    inputs: dict[str, Path]
    output: Path
    base_dir: Path
    _teacher: Teacher | None = None
    _progress: Any = None
    teacher_config: TeacherConfig | None = None
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    @property
    def input(self) -> Path:
        if "input" not in self.inputs:
            raise ConfigError(f"{stage_line(self.pipeline, self.index)}: stage {self.stage.name!r} needs an 'input'")
        return self.inputs["input"]

    def teacher(self) -> Teacher:
        """The stage's teacher, built on first use (a stage that needs none never builds one)."""
        if self._teacher is None:
            tc = self.teacher_config
            if tc is None:
                raise ConfigError(f"{stage_line(self.pipeline, self.index)}: stage {self.stage.name!r} needs a 'teacher'")
            self._teacher = make_teacher(teacher_spec_from(tc, self.base_dir, self.run_dir))
            stats = getattr(self._teacher, "stats", None)
            if stats is not None and hasattr(stats, "attempts"):
                from synthkd.progress import ProgressReporter

                # a bar on a terminal (requests done, tok/s, cost, retries, errors); silent otherwise
                self._progress = ProgressReporter(stats, total=None, desc=self.stage.name)
                self._progress.start()
        return self._teacher

    def resolve(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p)


class Stage(Protocol):
    options_model: type[BaseModel]

    async def run(self, ctx: StageContext, options: Any) -> dict[str, Any]:
        """Do the work, write ``ctx.output``; return counts for the manifest."""

    def estimate(self, ctx: StageContext, options: Any) -> Estimate | None:
        """Teacher calls and tokens this stage would spend (None: no teacher)."""


STAGES: dict[str, Stage] = {}


def register_stage(kind: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        STAGES[kind] = cls()
        return cls

    return deco


def _load_builtin_stages() -> None:
    import synthkd.stages  # noqa: F401  (registers every stage kind)


# ----------------------------------------------------------------------------- helpers
def teacher_spec_from(tc: TeacherConfig, base_dir: Path, run_dir: Path) -> TeacherSpec:
    def rel(p: str | None) -> Path | None:
        if p is None:
            return None
        q = Path(p)
        return q if q.is_absolute() else base_dir / q

    model = tc.model
    for prefix in ("replay:", "local:"):
        if model.startswith(prefix):
            model = prefix + str(rel(model[len(prefix):]))
    params = {k: v for k, v in {"temperature": tc.temperature, "max_tokens": tc.max_tokens}.items() if v is not None}
    return TeacherSpec(
        teacher=model, base_url=tc.base_url, concurrency=tc.concurrency, rpm=tc.rpm, tpm=tc.tpm,
        timeout=tc.timeout, max_retries=tc.max_retries, cache=rel(tc.cache) or run_dir.parent / "teacher-cache.sqlite",
        max_cost=tc.max_cost, prices=rel(tc.prices), default_params=params,
    )


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(file_sha(p).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {"synthkd": synthkd.__version__, "python": platform.python_version()}
    for mod in ("torch", "transformers", "trl", "datasets", "openai", "aiohttp"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            out[mod] = m.__version__
    return out


class Manifest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"stages": {}}

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, self.path)  # atomic: a crash never leaves a half-written manifest


# ----------------------------------------------------------------------------- the runner
@dataclass
class PlannedStage:
    index: int
    cfg: StageConfig
    impl: Stage
    options: Any
    ctx: StageContext
    estimate: Estimate | None = None


@dataclass
class RunResult:
    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def plan(cfg: PipelineConfig, base_dir: Path | None = None) -> list[PlannedStage]:
    """Validate every stage (kind, options, inputs) before anything runs or is paid for."""
    _load_builtin_stages()
    base_dir = base_dir or Path.cwd()
    run_dir = base_dir / cfg.run_dir / cfg.name
    outputs: dict[str, Path] = {}
    planned: list[PlannedStage] = []
    problems: list[str] = []
    for i, st in enumerate(cfg.stages):
        impl = STAGES.get(st.kind)
        if impl is None:
            problems.append(f"{stage_line(cfg, i, 'kind')}: stages[{i}].kind: unknown stage kind {st.kind!r} "
                            f"(known: {', '.join(sorted(STAGES))})")
            continue
        try:
            options = impl.options_model.model_validate(st.options)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ("options", *err["loc"])
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                path = f"stages[{i}]." + ".".join(str(x) for x in loc)
                problems.append(f"{stage_line(cfg, i, *loc)}: {path}: {msg}")
            continue
        inputs: dict[str, Path] = {}
        named = dict(st.inputs)
        if st.input is not None:
            named["input"] = st.input
        for key, ref in named.items():
            if ref in outputs:
                inputs[key] = outputs[ref]
            else:
                p = Path(ref) if Path(ref).is_absolute() else base_dir / ref
                if not p.exists():
                    where = stage_line(cfg, i, "input" if key == "input" else "inputs")
                    problems.append(f"{where}: stages[{i}].{'input' if key == 'input' else 'inputs.' + key}: "
                                    f"{ref!r} is neither an earlier stage nor an existing file")
                    continue
                inputs[key] = p
        output = run_dir / f"{st.name}.jsonl"
        outputs[st.name] = output
        ctx = StageContext(pipeline=cfg, stage=st, index=i, run_dir=run_dir, inputs=inputs, output=output,
                           base_dir=base_dir, teacher_config=st.teacher or cfg.teacher)
        check = getattr(impl, "check", None)
        if check is not None:  # stage-specific checks that need no input rows (files, templates, operators)
            try:
                check(ctx, options)
            except (ConfigError, InputError, TemplateError, ValueError) as exc:
                problems.append(f"{stage_line(cfg, i, 'options')}: stages[{i}] ({st.name}): {exc}")
                continue
        planned.append(PlannedStage(i, st, impl, options, ctx))
    if problems:
        raise ConfigError("invalid pipeline:\n  " + "\n  ".join(problems))
    return planned


def estimate_all(planned: list[PlannedStage]) -> Estimate:
    total = Estimate()
    for p in planned:
        try:
            p.estimate = p.impl.estimate(p.ctx, p.options)
        except FileNotFoundError:
            p.estimate = None  # input made by an earlier stage: known only after it runs
        if p.estimate:
            total = total + p.estimate
    return total


def _referenced_stages(value: Any, names: set[str]) -> set[str]:
    """Earlier stages an option names (e.g. ``student: sft``): their results are inputs too."""
    if isinstance(value, str):
        return {value} & names
    if isinstance(value, dict):
        return set().union(*(_referenced_stages(v, names) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_referenced_stages(v, names) for v in value)) if value else set()
    return set()


def _fingerprint(p: PlannedStage, input_hashes: dict[str, str], upstream: dict[str, str] | None = None) -> str:
    tc = p.ctx.teacher_config
    return _json_hash({
        "upstream": upstream or {},
        "stage": p.cfg.model_dump(exclude={"teacher"}),
        "options": p.options.model_dump(mode="json"),
        "teacher": tc.model_dump(exclude={"concurrency", "rpm", "tpm", "timeout", "max_retries", "max_cost"}) if tc else None,
        "inputs": input_hashes,
        "seed": p.ctx.pipeline.seed,
    })


async def run_pipeline(
    cfg: PipelineConfig, *, base_dir: Path | None = None, from_stage: str | None = None,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    planned = plan(cfg, base_dir)
    if from_stage is not None and from_stage not in {p.cfg.name for p in planned}:
        raise ConfigError(f"--from {from_stage!r}: no such stage (stages: {', '.join(p.cfg.name for p in planned)})")
    run_dir = planned[0].ctx.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(run_dir / "manifest.json")
    manifest.data.update(
        name=cfg.name, config=cfg.model_dump(mode="json"), config_hash=_json_hash(cfg.model_dump(mode="json")),
        versions=_versions(), updated=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    manifest.save()
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    result = RunResult(run_dir=run_dir)
    forcing = False
    for p in planned:
        name = p.cfg.name
        p.ctx.log = say
        forcing = forcing or (from_stage == name)
        input_hashes = {k: file_sha(v) for k, v in p.ctx.inputs.items()}
        earlier = {q.cfg.name for q in planned[: planned.index(p)]}
        upstream = {n: manifest.stage(n).get("fingerprint", "") for n in
                    sorted(_referenced_stages(p.options.model_dump(mode="json"), earlier))}
        fp = _fingerprint(p, input_hashes, upstream)
        rec = manifest.stage(name)
        outputs_exist = all(Path(o).exists() for o in rec.get("outputs", [str(p.ctx.output)]))
        if not forcing and rec.get("status") == "done" and rec.get("fingerprint") == fp and outputs_exist:
            say(f"[{name}] unchanged since its last run: skipped")
            result.skipped.append(name)
            continue
        if rec.get("fingerprint") != fp or forcing:
            _move_aside(p.ctx.output)
        say(f"[{name}] running ({p.cfg.kind})")
        rec.update(status="running", kind=p.cfg.kind, fingerprint=fp, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        manifest.save()
        t0 = time.monotonic()
        try:
            counts = await p.impl.run(p.ctx, p.options)
        finally:
            teacher = p.ctx._teacher
            if p.ctx._progress is not None:
                await p.ctx._progress.stop()
                p.ctx._progress = None
            if teacher is not None:
                _record_teacher(rec, teacher)
                await teacher.aclose()
                p.ctx._teacher = None
            rec["seconds"] = round(time.monotonic() - t0, 3)
            manifest.save()
        rec.update(status="done", counts=counts or {}, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   outputs=[str(o) for o in (counts or {}).pop("_outputs", [p.ctx.output])])
        manifest.save()
        result.ran.append(name)
        say(f"[{name}] done in {rec['seconds']:.1f}s: {counts_line(rec['counts'])}")
    manifest.data["versions"] = _versions()  # now including what the stages imported (torch, trl...)
    manifest.save()
    result.manifest = manifest.data
    from synthkd.report import write_report

    write_report(run_dir, manifest.data)
    return result


def _record_teacher(rec: dict[str, Any], teacher: Teacher) -> None:
    st = getattr(teacher, "stats", None)
    if st is None or not hasattr(st, "attempts"):
        return
    prev = rec.get("teacher", {})
    rec["teacher"] = {
        "model": teacher.model,
        "requests": prev.get("requests", 0) + st.attempts,
        "cached_answers": prev.get("cached_answers", 0) + st.cached,
        "prompt_tokens": prev.get("prompt_tokens", 0) + st.prompt_tokens,
        "completion_tokens": prev.get("completion_tokens", 0) + st.completion_tokens,
        "cost_usd": round(prev.get("cost_usd", 0.0) + st.cost_usd, 8),
    }


def _move_aside(output: Path) -> None:
    for p in (output, output.with_name(output.name.replace(".jsonl", ".rejects.jsonl"))):
        if p.exists():
            os.replace(p, p.with_name(p.name + ".prev"))  # the previous run's output, kept once
    # a stage's directory (runs/<name>/<stage>/: a model, an eval, the tailored loop's rounds) goes too:
    # a resuming stage (the tailored loop) would otherwise take results made under other settings as done
    d = output.with_name(output.name.removesuffix(".jsonl"))
    if d.is_dir() and not d.is_symlink():
        prev = d.with_name(d.name + ".prev")
        if prev.is_dir() and not prev.is_symlink():
            import shutil

            shutil.rmtree(prev)
        elif prev.exists() or prev.is_symlink():
            prev.unlink()
        os.replace(d, prev)
