"""One declaration per setting: a feature's options are a dataclass, and the CLI command, the YAML
stage and the Python API are all generated from it.

Why: a setting typed three times (a typer option, a pydantic field, a dataclass field) drifts — one
default changes and the others do not (``max_length`` was 1024 on the CLI and 512 in a pipeline).
Here each field is declared once with :func:`opt` (default, help text, bounds, CLI flags), the way
TRL declares ``SFTConfig`` once and both ``trl sft`` and ``--config x.yaml`` parse into it:

* :func:`typer_params` / :func:`config_command` turn the dataclass into typer options (``--max-length``
  for ``max_length``; old spellings stay as hidden aliases for one release);
* :func:`stage_model` turns it into the pydantic model a pipeline stage validates its YAML options
  with (``extra="forbid"``, the same bounds, old YAML keys accepted as aliases);
* the Python API is the dataclass itself.

``tests/test_options_drift.py`` checks, for every feature in :data:`FEATURES`, that the CLI defaults
equal the stage defaults equal the dataclass defaults, and that every field has help text.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import MISSING
from pathlib import Path
from types import GenericAlias
from typing import Annotated, Any, Callable, Literal, Optional, Union

__all__ = [
    "opt", "typer_params", "config_command", "stage_model", "from_cli", "check_bounds", "Feature",
    "FEATURES", "register_feature", "help_of", "cli_fields", "stage_fields", "from_stage", "comma_list",
    "option_group", "group_from_cli", "pydantic_typer_params", "pydantic_cli_values",
]

_META = "synthkd"  # the key of our entry in a dataclass field's metadata


@dataclasses.dataclass(frozen=True)
class OptMeta:
    help: str
    flags: tuple[str, ...] = ()  # extra CLI names shown in help, e.g. ("-i",); for a bool, a long name
    #                               here is its whole spelling: ("--strict/--lenient",), ("--no-cache",)
    aliases: tuple[str, ...] = ()  # old CLI spellings, accepted but hidden (one release)
    yaml_aliases: tuple[str, ...] = ()  # old YAML keys, accepted
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    cli: bool = True  # offered as a CLI option
    stage: bool = True  # offered as a YAML stage option
    cli_type: Any = None  # the type typer parses (a str for a comma list...), converted by cli_parse
    cli_parse: Callable[[Any], Any] | None = None
    metavar: str | None = None


def opt(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, flags: tuple[str, ...] = (),
        aliases: tuple[str, ...] = (), yaml_aliases: tuple[str, ...] = (), ge: float | None = None,
        gt: float | None = None, le: float | None = None, lt: float | None = None,
        choices: tuple[Any, ...] | None = None, cli: bool = True, stage: bool = True, cli_type: Any = None,
        cli_parse: Callable[[Any], Any] | None = None, metavar: str | None = None) -> Any:
    """A dataclass field that carries its help text, bounds and CLI spellings (see module docstring)."""
    meta = {_META: OptMeta(help=help, flags=tuple(flags), aliases=tuple(aliases), yaml_aliases=tuple(yaml_aliases),
                           ge=ge, gt=gt, le=le, lt=lt, choices=tuple(choices) if choices else None, cli=cli,
                           stage=stage, cli_type=cli_type, cli_parse=cli_parse, metavar=metavar)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def meta_of(f: dataclasses.Field) -> OptMeta:
    m = f.metadata.get(_META)
    if m is None:
        raise TypeError(f"field {f.name!r} is not declared with synthkd.options.opt(): it has no help text")
    return m


def help_of(f: dataclasses.Field) -> str:
    m = f.metadata.get(_META)
    return m.help if m is not None else ""


def default_of(f: dataclasses.Field) -> Any:
    """The field's default value (a fresh one from its factory), or MISSING when it is required."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def _fields(cls: type, surface: str, exclude: typing.Iterable[str] = ()) -> list[dataclasses.Field]:
    skip = set(exclude)
    return [f for f in dataclasses.fields(cls)
            if f.init and f.name not in skip and getattr(meta_of(f), surface)]


def cli_fields(cls: type, exclude: typing.Iterable[str] = ()) -> list[dataclasses.Field]:
    return _fields(cls, "cli", exclude)


def stage_fields(cls: type, exclude: typing.Iterable[str] = ()) -> list[dataclasses.Field]:
    return _fields(cls, "stage", exclude)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_names(name: str, flags: typing.Sequence[str], is_bool: bool) -> list[str]:
    """The CLI names of a field: ``--max-length`` plus ``flags``; a bool gets ``--x/--no-x`` unless
    ``flags`` spells it out (``--strict/--lenient``, or ``--no-cache`` for an on-switch alone)."""
    if is_bool:
        if any(f.startswith("--") for f in flags):
            return list(flags)
        return [f"{flag_of(name)}/--no-{name.replace('_', '-')}", *flags]
    return [flag_of(name), *flags]


# --------------------------------------------------------------------------------------------------
# bounds: one check for the CLI (pydantic enforces the same bounds for YAML)
# --------------------------------------------------------------------------------------------------

def _bound_problems(name: str, value: Any, m: OptMeta) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    out = []
    if m.choices is not None and value not in m.choices:
        out.append(f"{name} must be one of {', '.join(map(str, m.choices))}, got {value!r}")
    if isinstance(value, (int, float)):
        for bound, test, word in ((m.ge, lambda v, b: v >= b, ">="), (m.gt, lambda v, b: v > b, ">"),
                                  (m.le, lambda v, b: v <= b, "<="), (m.lt, lambda v, b: v < b, "<")):
            if bound is not None and not test(value, bound):
                out.append(f"{name} must be {word} {bound:g}, got {value:g}")
    return out


def check_bounds(cfg: Any, *, style: str = "cli", exclude: typing.Iterable[str] = ()) -> list[str]:
    """Problems with the declared bounds/choices of a config object (names as ``--flag`` or ``key``)."""
    problems: list[str] = []
    for f in dataclasses.fields(cfg):
        m = f.metadata.get(_META)
        if m is None or f.name in set(exclude):
            continue
        name = flag_of(f.name) if style == "cli" else f.name
        problems += _bound_problems(name, getattr(cfg, f.name), m)
    return problems


# --------------------------------------------------------------------------------------------------
# dataclass -> typer
# --------------------------------------------------------------------------------------------------

def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _typer_type(tp: Any) -> Any:
    """A type typer can parse, for a field annotation."""
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if origin is Literal:
        base: Any = str
    elif origin in (list, tuple) and typing.get_args(inner) and typing.get_args(inner)[0] in (str, int, float, Path):
        base = GenericAlias(list, (typing.get_args(inner)[0],))  # list[X] for an X known only at runtime
    elif inner in (str, int, float, bool, Path):
        base = inner
    else:
        raise TypeError(f"no CLI type for {tp!r}: give the field a cli_type and cli_parse")
    return Optional[base] if optional else base


def typer_params(cls: type, *, exclude: typing.Iterable[str] = (), required: typing.Iterable[str] = (),
                 panel: str | None = None) -> list[inspect.Parameter]:
    """Keyword-only typer parameters for the dataclass's CLI fields (plus hidden ones for old spellings).

    ``required``: fields that have a default for the Python API but must be given on the CLI."""
    import typer

    hints = typing.get_type_hints(cls)
    must = set(required)
    params: list[inspect.Parameter] = []
    for f in cli_fields(cls, exclude):
        m = meta_of(f)
        tp = m.cli_type if m.cli_type is not None else _typer_type(hints[f.name])
        default = default_of(f)
        req = default is MISSING or f.name in must
        inner, _ = _unwrap_optional(tp)
        names = option_names(f.name, m.flags, inner is bool)
        help_text = m.help
        if m.choices and "one of" not in help_text:
            help_text += " (one of: " + ", ".join(map(str, m.choices)) + ")"
        late = req and bool(m.aliases)  # required, but under either spelling: checked by from_cli
        if late:
            help_text += " [required]"
            tp = Optional[inner]
        option = typer.Option(*names, help=help_text, rich_help_panel=panel, metavar=m.metavar,
                              show_default=not req and default is not None)
        param_default = ... if req else (default if not isinstance(default, list) else list(default))
        if isinstance(default, dict):  # a mapping parsed from repeated KEY=VALUE options: none given = empty
            param_default = []
        if req:
            param_default = None if late else inspect.Parameter.empty
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=param_default, annotation=Annotated[tp, option]))
        for alias in m.aliases:  # old spelling: same value, hidden from --help
            alias_tp = Optional[inner] if inner is not bool else Optional[bool]
            params.append(inspect.Parameter(_alias_param(f.name, alias), inspect.Parameter.KEYWORD_ONLY,
                                            default=None,
                                            annotation=Annotated[alias_tp, typer.Option(alias, hidden=True)]))
    # required parameters first: typer wants no particular order, inspect.Signature does
    return sorted(params, key=lambda p: p.default is not inspect.Parameter.empty)


def _alias_param(field: str, alias: str) -> str:
    return f"_alias__{field}__{alias.lstrip('-').replace('-', '_')}"


def from_cli(cls: type, values: dict[str, Any], *, exclude: typing.Iterable[str] = (),
             required: typing.Iterable[str] = (), **extra: Any) -> Any:
    """Build the config from typer's keyword values: old spellings folded in, CLI strings parsed,
    bounds checked (an :class:`~synthkd.errors.InputError` naming each bad flag).

    A required option that has an old spelling is optional to typer (either spelling may give it):
    its absence is reported here."""
    from synthkd.jsonl_io import InputError

    values = dict(values)
    must = set(required)
    problems: list[str] = []
    for f in cli_fields(cls, exclude):
        m = meta_of(f)
        for alias in m.aliases:
            v = values.pop(_alias_param(f.name, alias), None)
            if v is None:
                continue
            if values.get(f.name) not in (None, default_of(f)):
                problems.append(f"give {flag_of(f.name)} or its old spelling {alias}, not both ({flag_of(f.name)}: {m.help})")
            values[f.name] = v
        if m.aliases and (default_of(f) is MISSING or f.name in must) and values.get(f.name) is None:
            problems.append(f"missing option {flag_of(f.name)}")
            values.pop(f.name, None)
        if m.cli_parse is not None and f.name in values and values[f.name] is not None:
            values[f.name] = m.cli_parse(values[f.name])
        if isinstance(values.get(f.name), list) and isinstance(default_of(f), tuple):
            values[f.name] = tuple(values[f.name])
    if problems and any(default_of(f) is MISSING and f.name not in values for f in dataclasses.fields(cls)
                        if f.init and f.name not in extra):
        raise InputError(problems)  # a required option missing: no config to check the rest of
    cfg = cls(**{k: v for k, v in values.items() if not k.startswith("_alias__")}, **extra)
    problems += check_bounds(cfg, style="cli", exclude=exclude)
    if problems:
        raise InputError(problems)
    return cfg


def group_from_cli(cls: type, values: dict[str, Any], *, exclude: typing.Iterable[str] = ()) -> dict[str, Any]:
    """:func:`from_cli` for an option group (some of ``cls``'s fields; the others are given elsewhere,
    so no config is built): the values as field name -> value, old spellings folded in, CLI strings
    parsed, bounds checked (an InputError naming each bad flag)."""
    from synthkd.jsonl_io import InputError

    values = dict(values)
    problems: list[str] = []
    for f in cli_fields(cls, exclude):
        m = meta_of(f)
        for alias in m.aliases:
            v = values.pop(_alias_param(f.name, alias), None)
            if v is not None:
                if values.get(f.name) not in (None, default_of(f)):
                    problems.append(f"give {flag_of(f.name)} or its old spelling {alias}, not both ({flag_of(f.name)}: {m.help})")
                values[f.name] = v
        if m.cli_parse is not None and values.get(f.name) is not None:
            values[f.name] = m.cli_parse(values[f.name])
        if f.name in values:
            problems += _bound_problems(flag_of(f.name), values[f.name], m)
    if problems:
        raise InputError(problems)
    return values


def config_command(cls: type, *, exclude: typing.Iterable[str] = (), required: typing.Iterable[str] = (),
                   extra: typing.Sequence[inspect.Parameter] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: a typer command whose options are ``cls``'s CLI fields; the function receives the
    built config as its first argument (and ``extra`` parameters by name).  Use it below ``@app.command``.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = typer_params(cls, exclude=exclude, required=required)
        extra_names = [p.name for p in extra]

        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            import sys

            import typer

            from synthkd.jsonl_io import InputError

            rest = {n: kw.pop(n) for n in extra_names if n in kw}
            try:
                cfg = from_cli(cls, kw, exclude=exclude, required=required)
            except InputError as exc:  # a bad flag value: one message, exit 2, before anything runs
                print(f"error: {exc}", file=sys.stderr, flush=True)
                raise typer.Exit(2) from None
            return fn(cfg, **rest)

        all_params = sorted([*params, *extra], key=lambda p: p.default is not inspect.Parameter.empty)
        command.__signature__ = inspect.Signature(all_params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in all_params}
        del command.__wrapped__  # typer must read our signature, not fn's (functools.wraps always sets it)
        return command

    return decorate


def option_group(cls: type, into: str, *, exclude: typing.Iterable[str] = (),
                 panel: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add ``cls``'s CLI fields (less ``exclude``) to a typer command as one option group
    (a teacher's connection...); the command declares ``<into>: Optional[dict] = None`` and receives the
    checked values there (:func:`group_from_cli`: old spellings folded in, bounds checked, exit 2
    naming the flag).  Use it below ``@app.command``.  The group's defaults are ``cls``'s: a command
    cannot change them (a shared option with a per-command default is drift)."""
    exclude = tuple(exclude)
    group = typer_params(cls, exclude=exclude, panel=panel)
    names = [p.name for p in group]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(f)
        if into not in sig.parameters:
            raise TypeError(f"{f.__name__} must take a {into!r} parameter to receive its option group")
        try:  # typer reads the annotations from the signature: resolve ``from __future__`` strings
            hints = typing.get_type_hints(f, include_extras=True)
        except (NameError, TypeError):
            hints = {}
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values() if p.name != into]
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{f.__name__}: {sorted(clash)} are options of the {cls.__name__} group already")

        @functools.wraps(f)
        def command(*args: Any, **kw: Any) -> Any:
            import sys

            import typer

            from synthkd.jsonl_io import InputError

            values = {n: kw.pop(n) for n in names if n in kw}
            try:
                checked = group_from_cli(cls, values, exclude=exclude)
            except InputError as exc:  # a bad flag value: one message, exit 2, before anything runs
                print(f"error: {exc}", file=sys.stderr, flush=True)
                raise typer.Exit(2) from None
            return f(*args, **kw, **{into: checked})

        params = [*own, *group]
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


# --------------------------------------------------------------------------------------------------
# dataclass -> pydantic (a pipeline stage's options)
# --------------------------------------------------------------------------------------------------

def _pydantic_type(tp: Any) -> Any:
    from pydantic import TypeAdapter

    try:
        TypeAdapter(tp)
    except Exception:  # noqa: BLE001  (a class pydantic has no schema for: taken as it is)
        return Any
    return tp


def stage_model(cls: type, *, name: str | None = None, exclude: typing.Iterable[str] = (),
                base: type | None = None, defaults: dict[str, Any] | None = None,
                types: dict[str, Any] | None = None) -> type:
    """The pydantic model of ``cls``'s stage fields: ``extra="forbid"``, the declared bounds, help as
    descriptions, old YAML keys accepted as aliases.  ``base`` adds stage-only fields (declared there).
    ``defaults`` is for a field that must be given in YAML although the Python API has a default
    (pass ``...``); any other value is refused: a stage may not change a default (no drift).
    ``types``: a field's YAML type where it differs from the Python one (a path kept as written, a
    ``str``, for the stage to resolve against the pipeline file)."""
    from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model

    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in stage_fields(cls, exclude):
        m = meta_of(f)
        default = default_of(f)
        if defaults and f.name in defaults:
            if defaults[f.name] is not ...:
                raise TypeError(f"{cls.__name__}.{f.name}: a stage may only make a field required, not change "
                                "its default")
            default = MISSING
        kw: dict[str, Any] = {"description": m.help}
        for b in ("ge", "gt", "le", "lt"):
            if getattr(m, b) is not None:
                kw[b] = getattr(m, b)
        if m.yaml_aliases:
            kw["validation_alias"] = AliasChoices(f.name, *m.yaml_aliases)
        if default is MISSING:
            fi = Field(..., **kw)
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            fi = Field(default_factory=f.default_factory, **kw)  # type: ignore[misc]
        else:
            fi = Field(default, **kw)
        tp = (types or {}).get(f.name, hints[f.name])
        if m.choices is not None:
            inner, optional = _unwrap_optional(tp)
            lit = typing.cast(Any, Literal)[m.choices]  # a Literal built at runtime from the field's choices
            tp = Optional[lit] if optional else lit
        fields[f.name] = (_pydantic_type(tp), fi)

    class _Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)

    return create_model(name or f"{cls.__name__}Stage", __base__=base or _Strict, **fields)  # type: ignore[call-overload]


def comma_list(text: str | list[str] | None) -> list[str] | None:
    """A ``--labels a,b,c`` string as a list (a list is kept); the ``cli_parse`` of list fields that the
    CLI takes as one comma-separated value."""
    if text is None or isinstance(text, list):
        return text
    return [x.strip() for x in text.split(",") if x.strip()]


def from_stage(cls: type, options: Any, **extra: Any) -> Any:
    """The config from a stage's validated options (a :func:`stage_model` instance): its fields that
    are ``cls``'s, plus ``extra`` (what the pipeline gives the stage: input, output...)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: getattr(options, k) for k in type(options).model_fields if k in names}
    return cls(**values, **extra)


# --------------------------------------------------------------------------------------------------
# pydantic model -> typer (a config that already is a pydantic model: a cleaning operator's Config)
# --------------------------------------------------------------------------------------------------

def _loose_cli_type(annotation: Any) -> tuple[Any, str]:
    """A type typer can parse for any annotation, and a note for the help text: what typer cannot
    parse directly (a union, a dict, a list of models) is taken as JSON text."""
    inner, _ = _unwrap_optional(annotation)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        return str, " (JSON)"
    if origin is Literal:
        return str, " (one of: " + ", ".join(str(a) for a in args) + ")"
    if origin is list:
        if args and args[0] in (str, int, float):
            return GenericAlias(list, (args[0],)), " (repeat the option for several)"  # list[X], X known at runtime
        return str, " (JSON list)"
    if origin is dict or inner is dict:
        return str, " (JSON object)"
    if inner in (str, int, float, bool, Path):
        return inner, ""
    return str, " (JSON)"


def pydantic_typer_params(model: type, *, exclude: typing.Iterable[str] = (),
                          panel: str | None = None) -> list[inspect.Parameter]:
    """Keyword-only typer parameters for a pydantic model's fields, each defaulting to None so that a
    field not given keeps the model's own default (shown in the help); the model validates the values
    (see :func:`pydantic_cli_values`).  Names, bool switches and help are made as for a dataclass."""
    import json

    import typer

    skip = set(exclude)
    params: list[inspect.Parameter] = []
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        if name in skip:
            continue
        tp, note = _loose_cli_type(info.annotation)
        if info.is_required():
            default_txt = " (required)"
        else:
            d = info.get_default(call_default_factory=True)
            d = "none" if d is None else json.dumps(d, default=str)
            default_txt = f" (default: {d if len(d) <= 60 else d[:57] + '...'})"
        option = typer.Option(*option_names(name, (), tp is bool), help=(info.description or "") + note + default_txt,
                              show_default=False, rich_help_panel=panel)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[tp], option]))
    return params


def pydantic_cli_values(model: type, values: dict[str, Any], *, exclude: typing.Iterable[str] = ()) -> dict[str, Any]:
    """The fields given on the CLI (None and an empty list mean "not given"), JSON text decoded where
    the field is JSON on the CLI (left as text when it is not JSON: the model then says what is wrong)."""
    import json

    skip = set(exclude)
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        v = values.get(name)
        if name in skip or v is None or v == []:
            continue
        if _loose_cli_type(info.annotation)[1].startswith(" (JSON") and isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        out[name] = v
    return out


# --------------------------------------------------------------------------------------------------
# the features: each config, its command and its stage kind (for the drift test and the docs)
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Feature:
    """A feature's single declaration: ``config`` (the dataclass), the CLI command path that exposes it
    (``("train", "sft")``) and the pipeline stage kind (``"train.sft"``), either may be None."""

    name: str
    config: type
    command: tuple[str, ...] | None
    stage: str | None


FEATURES: dict[str, Feature] = {}


def register_feature(name: str, config: type, *, command: tuple[str, ...] | None,
                     stage: str | None) -> Feature:
    feat = Feature(name, config, command, stage)
    FEATURES[name] = feat
    return feat
