"""Pipeline YAML: parsed with line numbers, `${ENV}` expanded, `--set` overrides applied, validated
with pydantic — and every error names the file, the key path and the line.

Why line numbers: a pipeline file is edited by hand and a typo ("concurency") must not cost a run.
PyYAML's node tree keeps each key's position; pydantic reports the key path of a bad value; joining
the two gives "pipeline.yaml:14: stages[2].options.samples: Input should be a valid integer".
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherConfig(_Strict):
    model: str = Field(description="model name, replay:FILE, local:PATH or simulated:arithmetic")
    base_url: str | None = None
    concurrency: int = Field(32, ge=1)
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    timeout: float = Field(600.0, gt=0)
    max_retries: int = Field(6, ge=0)
    max_cost: float | None = Field(None, gt=0)
    prices: str | None = None
    cache: str | None = None
    temperature: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)


class StageConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    input: str | None = None
    inputs: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    teacher: TeacherConfig | None = None  # overrides the pipeline's teacher for this stage


class PipelineConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    run_dir: str = "runs"
    seed: int = 0
    teacher: TeacherConfig | None = None
    stages: list[StageConfig] = Field(min_length=1)
    report: dict[str, Any] = Field(default_factory=dict)
    version: Literal[1] = 1
    _source: Path | None = PrivateAttr(None)
    _lines: dict = PrivateAttr(default_factory=dict)


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, where: str) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in strings; an unset variable without default is an error."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable ${{{name}}} is not set")

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _line_index(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Key path -> 1-based line, from PyYAML's composed node tree."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            lines[path + (key,)] = k.start_mark.line + 1
            lines.update({p: ln for p, ln in _line_index(v, path + (key,)).items() if p != path + (key,)})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            lines.update(_line_index(v, path + (i,)))
    return lines


def _fmt_path(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top)"


def _line_for(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """``stages.2.options.samples=4`` or ``teacher.model=gpt-4o-mini``; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY.PATH=VALUE")
    key, raw = assignment.split("=", 1)
    parts = key.split(".")
    value = yaml.safe_load(raw) if raw else ""
    cur: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            if part.isdigit() and int(part) < len(cur):
                idx: Any = int(part)
            else:  # address a stage by its name
                matches = [j for j, s in enumerate(cur) if isinstance(s, dict) and s.get("name") == part]
                if not matches:
                    raise ConfigError(f"--set {key}: no list item {part!r}")
                idx = matches[0]
            if last:
                cur[idx] = value
            else:
                cur = cur[idx]
        elif isinstance(cur, dict):
            if last:
                cur[part] = value
            else:
                cur = cur.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping or list")


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, expand, override and validate a pipeline file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: pipeline file not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a pipeline is a mapping with 'name', 'teacher' and 'stages'")
    lines = _line_index(node) if node is not None else {}
    for ov in overrides or []:
        apply_override(data, ov)
    data = expand_env(data, str(path))
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_for(lines, loc)
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{path}:{line if line else '?'}: {_fmt_path(loc)}: {msg}")
        raise ConfigError("invalid pipeline:\n  " + "\n  ".join(problems)) from None
    names = [s.name for s in cfg.stages]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: stage names must be unique; repeated: {', '.join(dup)}")
    cfg._source = path
    cfg._lines = lines
    return cfg


def stage_line(cfg: PipelineConfig, index: int, *keys: Any) -> str:
    """``file:line`` of a stage's key, for errors raised later by stage validation."""
    lines = getattr(cfg, "_lines", {})
    line = _line_for(lines, ("stages", index, *keys))
    return f"{getattr(cfg, '_source', 'pipeline')}:{line if line else '?'}"
