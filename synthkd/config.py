"""Pipeline YAML: parsed with line numbers, `--set` overrides applied, `${ENV}` expanded, validated
with pydantic — and every error names the file, the key path and the line (an unknown key also the
known key it is probably a typo of).

Paths: every relative path in a pipeline (stage inputs, option files, ``run_dir``, the teacher's
``cache``/``prices``/``families``, ``replay:``/``local:`` models) is taken relative to the directory of
the pipeline file, never the working directory, so a pipeline runs the same from anywhere
(:attr:`PipelineConfig.base_dir`); an absolute path stays as it is.  ``${VAR}`` is expanded first, so
``${DATA}/x.jsonl`` with an absolute ``DATA`` is absolute.

Why line numbers: a pipeline file is edited by hand and a typo ("concurency") must not cost a run.
PyYAML's node tree keeps each key's position; pydantic reports the key path of a bad value; joining
the two gives "pipeline.yaml:14: stages[2].options.samples: Input should be a valid integer".
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from synthkd.errors import ConfigError  # noqa: F401 (re-exported: their home was here)
from synthkd.options import help_of, stage_model
from synthkd.row_source import InputOptions
from synthkd.teachers.factory import SamplingParams, TeacherSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: pipeline and stage names become file and directory names (``runs/<name>/<stage>.jsonl``): plain
#: identifiers only, so a name can never be ``.``/``..``, hidden, a path, or collide with the
#: ``<stage>.rejects.jsonl`` / ``<stage>.ledger.jsonl`` side files of another stage (no dots at all).
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def check_name(value: str) -> str:
    if not NAME_RE.match(value) or len(value) > 100:
        raise ValueError(f"{value!r} is not a plain name: use letters, digits, '_' and '-' (no '.', no '/', "
                         "not starting with '-'; at most 100 characters)")
    return value


class _TeacherName(_Strict):
    model: str = Field(description=help_of(next(f for f in fields(TeacherSpec) if f.name == "teacher")))


_TeacherBlock: Any = stage_model(
    SamplingParams, name="TeacherBlock",
    base=stage_model(TeacherSpec, name="TeacherConnection", exclude=("teacher",), base=_TeacherName,
                     types={"cache": str | None, "prices": str | None}),
)


class TeacherConfig(_TeacherBlock):
    """A pipeline's ``teacher:`` block (and a stage's override), generated from the one declaration of
    the teacher settings, :class:`synthkd.teachers.factory.TeacherSpec` (same names, defaults, bounds
    and help as the CLI's connection options), with the teacher's name under the key ``model`` and
    the sampling parameters ``temperature``/``max_tokens`` (:class:`~synthkd.teachers.factory.
    SamplingParams`).  Paths (``cache``, ``prices``) stay strings as written: they are resolved
    against the pipeline file (:func:`synthkd.pipeline.teacher_spec_from`)."""


#: a stage's ``columns:`` map, declared once with the CLI's ``--column`` (:class:`synthkd.row_source.InputOptions`)
_StageInput: Any = stage_model(InputOptions, name="StageInput", exclude=("limit",))


class StageConfig(_StageInput):
    name: str
    kind: str
    input: str | None = None
    inputs: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    teacher: TeacherConfig | None = None  # overrides the pipeline's teacher for this stage

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return check_name(v)


class PipelineConfig(_Strict):
    name: str
    description: str = ""
    run_dir: str = "runs"
    seed: int = 0
    teacher: TeacherConfig | None = None
    stages: list[StageConfig] = Field(min_length=1)
    report: dict[str, Any] = Field(default_factory=dict)
    version: Literal[1] = 1
    _source: Path | None = PrivateAttr(None)
    _lines: dict = PrivateAttr(default_factory=dict)
    _raw: dict | None = PrivateAttr(None)  # the config as written (``${VAR}`` unexpanded), for the manifest

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return check_name(v)

    @property
    def base_dir(self) -> Path:
        """The directory every relative path of the pipeline is taken against: the pipeline file's
        (the working directory for a config that was not read from a file)."""
        return self._source.resolve().parent if self._source is not None else Path.cwd()

    def recorded(self) -> dict[str, Any]:
        """The config as it may be written down (manifest, report, cards): ``${VAR}`` references left
        unexpanded (their values may be secrets) and credentials in URLs redacted."""
        raw = self._raw if self._raw is not None else self.model_dump(mode="json")
        return redact_secrets(raw)


def redact_url(value: str) -> str:
    """``http://user:pw@host/v1?key=sk`` -> ``http://***@host/v1?key=***``; other strings unchanged."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return "***"
    if not parts.scheme or not parts.netloc:
        return value
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(q.split("=", 1)[0] + "=***" if "=" in q else "***" for q in parts.query.split("&")) \
        if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, "***" if parts.fragment else ""))


def redact_secrets(value: Any) -> Any:
    """A copy of a config tree with every URL's userinfo and query values redacted."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redact_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class EnvRef:
    """One ``${NAME}`` / ``${NAME:-default}`` written in a YAML text: where, and how it was spelt."""

    name: str
    default: str | None
    text: str  # as written, e.g. ``${OPENAI_BASE_URL:-http://127.0.0.1:8765/v1}``
    where: str  # ``file:line`` of the reference


@dataclass
class EnvRefs:
    """The ``${...}`` references of a YAML text, each replaced by a placeholder before parsing.

    Why placeholders and not expansion after parsing: ``{model: ${X}}`` is not valid YAML (``{`` and
    ``}`` are flow indicators), so a reference inside an inline mapping failed to parse.  Why not plain
    text substitution before parsing: a value holding ``: `` or ``#`` or a newline would change the
    YAML's structure (and a secret could be read as a key).  A placeholder is a plain word valid in
    every YAML context; after parsing, :meth:`expand` puts each variable's value into the *parsed*
    strings (so a value is always a string, whatever it holds) and :meth:`restore` puts the reference
    back as written (the config recorded in the manifest never holds a variable's value)."""

    token: str = field(default_factory=lambda: "skdenv" + secrets.token_hex(6))
    refs: list[EnvRef] = field(default_factory=list)

    def hide(self, text: str, where: str) -> str:
        """``text`` with each reference replaced by a placeholder (references in comments too: they are
        never looked at, as comments are dropped by the parser)."""
        while self.token in text:  # never a word the text already holds
            self.token = "skdenv" + secrets.token_hex(6)

        def sub(m: re.Match[str]) -> str:
            line = text.count("\n", 0, m.start()) + 1
            at = where if where.startswith("--set") else f"{where}:{line}"
            self.refs.append(EnvRef(m.group(1), m.group(2), m.group(0), at))
            return f"{self.token}x{len(self.refs) - 1}x"

        return _ENV_RE.sub(sub, text)

    def _sub(self, value: Any, fn: Any) -> Any:
        if isinstance(value, str):
            if self.token not in value:
                return value
            return re.sub(re.escape(self.token) + r"x(\d+)x", lambda m: fn(self.refs[int(m.group(1))]), value)
        if isinstance(value, dict):
            return {self._sub(k, fn): self._sub(v, fn) for k, v in value.items()}
        if isinstance(value, list):
            return [self._sub(v, fn) for v in value]
        return value

    def restore(self, value: Any) -> Any:
        """The parsed data with every reference as written (``${VAR}``), for the record."""
        return self._sub(value, lambda r: r.text)

    def expand(self, value: Any, path: tuple[Any, ...] = ()) -> Any:
        """The parsed data with every reference replaced by the variable's value (or its default); an
        unset variable without a default is a :class:`ConfigError` naming the file, line and key."""
        if isinstance(value, dict):
            return {self.expand(k, path): self.expand(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, path + (i,)) for i, v in enumerate(value)]

        def one(r: EnvRef) -> str:
            if r.name in os.environ:
                return os.environ[r.name]
            if r.default is not None:
                return r.default
            raise ConfigError(f"{r.where}: {_fmt_path(path)}: environment variable ${{{r.name}}} is not set "
                              f"(set it, or give a default: ${{{r.name}:-VALUE}})")

        return self._sub(value, one)


def expand_env(value: Any, where: str) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in the strings of parsed data (an API for data that
    was not read from a YAML text; a pipeline file goes through :class:`EnvRefs`)."""
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


def line_for(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def apply_override(data: dict[str, Any], assignment: str, env: EnvRefs | None = None) -> None:
    """``stages.2.options.samples=4`` or ``teacher.model=gpt-4o-mini``; the value is parsed as YAML
    (``${VAR}`` in it as in the file, through ``env``)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY.PATH=VALUE")
    key, raw = assignment.split("=", 1)
    parts = key.split(".")
    if env is not None:
        raw = env.hide(raw, f"--set {key}")
    value = safe_yaml(raw, f"--set {key}")[1] if raw else ""
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


#: deeper YAML than this is refused (a pipeline needs about 6 levels; PyYAML's composer and the
#: line index recurse, so thousands of levels would end in a RecursionError)
MAX_YAML_DEPTH = 64


def safe_yaml(text: str, where: str) -> tuple[yaml.Node | None, Any]:
    """(node tree, data) of a YAML text, refusing anchors/aliases and deep nesting up front.

    Why refuse aliases: nine nested aliases ("billion laughs") are cheap for ``safe_load`` (shared
    objects) but every walk over the tree — line index, ``${ENV}`` expansion, validation — expands
    them to 9**9 nodes.  A pipeline never needs them, so the one event pass below stops it in
    microseconds with bounded memory and names the line.
    """
    depth = 0
    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            line = ev.start_mark.line + 1 if ev.start_mark else "?"
            if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
                raise ConfigError(f"{where}:{line}: YAML anchors and aliases (&x / *x) are not allowed "
                                  "in a pipeline file: write the value out")
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise ConfigError(f"{where}:{line}: nested more than {MAX_YAML_DEPTH} levels deep")
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise ConfigError(f"{at}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return node, data


def _read_text(path: Path) -> str:
    """The file as UTF-8; a bad byte is a config error naming its line, not a UnicodeDecodeError."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def known_keys(model: Any) -> list[str]:
    """The YAML keys a pydantic model takes: its field names and their old spellings (aliases)."""
    from pydantic import AliasChoices

    keys: list[str] = []
    for name, info in getattr(model, "model_fields", {}).items():
        keys.append(name)
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            keys += [a for a in alias.choices if isinstance(a, str) and a != name]
    return keys


def unknown_key(key: Any, known: list[str]) -> str:
    """``unknown key 'concurency' (did you mean 'concurrency'?)``, or the known keys when none is close."""
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (known: {', '.join(sorted(known))})" if known else f"unknown key {key!r}"


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The pydantic model that holds the last key of ``loc`` (a validation error's location), or None."""
    import typing

    tp: Any = model
    for part in loc:
        if isinstance(part, int):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if args else None
        else:
            fields_ = getattr(tp, "model_fields", None)
            if not fields_ or part not in fields_:
                return None
            tp = fields_[part].annotation
        while typing.get_origin(tp) is not None and not hasattr(tp, "model_fields") \
                and typing.get_origin(tp) is not list:  # Optional[X] / X | None -> X
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                break
            tp = args[0]
    return tp if hasattr(tp, "model_fields") else None


def validation_problems(exc: ValidationError, model: Any, where: Any, prefix: tuple[Any, ...] = (),
                        shown: str = "") -> list[str]:
    """One ``file:line: key.path: message`` per pydantic error; an unknown key says which known key it
    is probably a typo of.  ``where(loc)`` gives ``file:line`` of a location (``prefix`` + the error's);
    ``shown`` replaces ``prefix`` in the key path shown (``stages[2] (gen).options``)."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            msg = unknown_key(loc[-1], known_keys(_model_at(model, loc[:-1])))
        else:
            msg = err["msg"].removeprefix("Value error, ")
        path = f"{shown}{_fmt_path(('x',) + loc)[1:]}" if shown else _fmt_path(prefix + loc)
        problems.append(f"{where(prefix + loc)}: {path}: {msg}")
    return problems


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, override, expand and validate a pipeline file.

    ``${VAR}`` / ``${VAR:-default}`` work anywhere a value is written (inline ``{...}`` mappings and
    ``--set`` values included): see :class:`EnvRefs`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: pipeline file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    env = EnvRefs()
    node, data = safe_yaml(env.hide(_read_text(path), str(path)), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a pipeline is a mapping with 'name', 'teacher' and 'stages'")
    lines = _line_index(node) if node is not None else {}
    for ov in overrides or []:
        apply_override(data, ov, env)
    raw = env.restore(data)
    data = env.expand(data)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        where = lambda loc: f"{path}:{line_for(lines, loc) or '?'}"  # noqa: E731
        raise ConfigError("invalid pipeline:\n  " + "\n  ".join(validation_problems(exc, PipelineConfig, where))) from None
    names = [s.name for s in cfg.stages]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: stage names must be unique; repeated: {', '.join(dup)}")
    cfg._source = path
    cfg._lines = lines
    cfg._raw = raw
    return cfg


def stage_line(cfg: PipelineConfig, index: int, *keys: Any) -> str:
    """``file:line`` of a stage's key, for errors raised later by stage validation."""
    lines = getattr(cfg, "_lines", {})
    line = line_for(lines, ("stages", index, *keys))
    return f"{getattr(cfg, '_source', 'pipeline')}:{line if line else '?'}"
