"""No drift between a feature's three surfaces: for every feature in ``synthkd.options.FEATURES``, the
CLI option defaults equal the pipeline stage's defaults equal the config dataclass's defaults, every
field has help text, and every field meant for a surface is on it.  Also unit tests of the adapters
(``synthkd/options.py``) on a small config: old spellings, bounds, choices, required fields."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING
from pathlib import Path
from typing import Optional

import click
import pytest
import typer
from typer.testing import CliRunner

import synthkd.cli  # noqa: F401  (registers every command and, through them, every feature)
import synthkd.stages  # noqa: F401  (registers every stage)
from synthkd.options import (
    FEATURES,
    cli_fields,
    config_command,
    default_of,
    flag_of,
    meta_of,
    opt,
    stage_fields,
    stage_model,
)
from synthkd.stages.base import STAGES


def _click_command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = typer.main.get_command(synthkd.cli.app)
    for part in path:
        # duck-typed: typer >= 0.2x builds its groups on a vendored click (typer._click), not click.Group
        assert isinstance(getattr(cmd, "commands", None), dict), f"{part!r}: {cmd.name} has no subcommands"
        cmd = cmd.commands[part]
    return cmd


def _same(a: object, b: object) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, Path) or isinstance(b, Path):
        return str(a) == str(b)
    return a == b


def _cli_default(f, p) -> object:
    """The value a CLI option's default becomes in the config (repeated KEY=VALUE options -> a mapping)."""
    if meta_of(f).cli_parse is not None and isinstance(default_of(f), dict):
        return meta_of(f).cli_parse(p.default)
    return p.default


FEATURE_NAMES = sorted(FEATURES)
WITH_COMMAND = [n for n in FEATURE_NAMES if FEATURES[n].command is not None]
WITH_STAGE = [n for n in FEATURE_NAMES if FEATURES[n].stage is not None]
WITH_BOTH = [n for n in WITH_COMMAND if n in WITH_STAGE]


def test_the_features_are_declared():
    # every command that takes options from a config, and every stage kind, is a feature: a feature
    # missing from the registry would escape this test
    assert {"train.sft", "train.dpo", "eval", "tailor", "train.export", "generate.rationales", "generate.tasks",
            "generate.self-instruct", "generate.promptmix", "generate.relabel", "generate.preferences"} <= set(FEATURES)
    stages_covered = {f.stage for f in FEATURES.values() if f.stage}
    assert stages_covered <= set(STAGES)


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_every_field_has_help(name):
    for f in dataclasses.fields(FEATURES[name].config):
        if not f.init:
            continue
        assert meta_of(f).help.strip(), f"{name}: field {f.name} has no help text"


@pytest.mark.parametrize("name", WITH_COMMAND)
def test_cli_defaults_equal_the_config_defaults(name):
    feat = FEATURES[name]
    cmd = _click_command(feat.command)
    params = {p.name: p for p in cmd.params}
    for f in cli_fields(feat.config):
        assert f.name in params, f"{name}: {flag_of(f.name)} is not an option of synthkd {' '.join(feat.command)}"
        p = params[f.name]
        want = default_of(f)
        if want is MISSING or p.required:
            continue  # required on the CLI: no default to compare
        assert _same(_cli_default(f, p), want), f"{name}: {flag_of(f.name)} defaults to {p.default!r}, the config to {want!r}"
        assert (p.help or "").startswith(meta_of(f).help[:20]), f"{name}: {flag_of(f.name)} help differs"


@pytest.mark.parametrize("name", WITH_STAGE)
def test_stage_defaults_equal_the_config_defaults(name):
    feat = FEATURES[name]
    model = STAGES[feat.stage].options_model
    for f in stage_fields(feat.config):
        assert f.name in model.model_fields, f"{name}: {f.name} is not an option of stage {feat.stage}"
        mf = model.model_fields[f.name]
        want = default_of(f)
        if mf.is_required():
            continue
        got = mf.get_default(call_default_factory=True)
        assert _same(got, want), f"{name}: stage option {f.name} defaults to {got!r}, the config to {want!r}"
        assert mf.description == meta_of(f).help


@pytest.mark.parametrize("name", WITH_BOTH)
def test_cli_and_stage_agree_on_shared_fields(name):
    """The drift the issue measured (max_length 1024 vs 512, tailor epochs 1.0 vs 3.0): compared
    directly between the two surfaces, field by field."""
    feat = FEATURES[name]
    params = {p.name: p for p in _click_command(feat.command).params}
    model = STAGES[feat.stage].options_model
    shared = [n for n in model.model_fields if n in params]
    assert shared, f"{name}: no option in common between the command and the stage"
    for n in shared:
        p, mf = params[n], model.model_fields[n]
        if p.required or mf.is_required():
            continue
        assert _same(p.default, mf.get_default(call_default_factory=True)), f"{name}: {n} differs"


# --------------------------------------------------------------------------------------------------
# the adapters themselves
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(kw_only=True)
class _Cfg:
    input: Path = opt(help="Input rows.", flags=("-i",), stage=False)
    epochs: float = opt(3.0, help="Epochs.", gt=0)
    learning_rate: float = opt(2e-5, help="Peak learning rate.", aliases=("--lr",), yaml_aliases=("lr",), gt=0)
    bf16: Optional[bool] = opt(None, help="bf16.")
    loss_type: list[str] = opt(default_factory=lambda: ["sigmoid"], help="Losses.")
    mode: str = opt("label", help="Mode.", choices=("label", "rationale"))


def _app(seen: list) -> typer.Typer:
    app = typer.Typer()

    @app.command("x")
    @config_command(_Cfg)
    def x(cfg: _Cfg) -> None:
        seen.append(cfg)

    @app.command("y")
    def y() -> None:  # a second command, so that "x" stays a subcommand
        pass

    return app


def test_cli_adapter_builds_the_config_and_takes_old_spellings():
    seen: list = []
    r = CliRunner().invoke(_app(seen), ["x", "-i", "rows.jsonl", "--lr", "0.1", "--loss-type", "a",
                                        "--loss-type", "b", "--no-bf16"])
    assert r.exit_code == 0, r.output
    assert seen == [_Cfg(input=Path("rows.jsonl"), learning_rate=0.1, loss_type=["a", "b"], bf16=False)]
    help_text = CliRunner().invoke(_app([]), ["x", "--help"]).output
    assert "--learning-rate" in help_text and "--lr" not in help_text  # the old spelling is hidden


def test_cli_adapter_refuses_bad_values_with_the_flag_named():
    seen: list = []
    r = CliRunner().invoke(_app(seen), ["x", "-i", "a", "--mode", "zz", "--epochs", "0"])
    assert r.exit_code == 2 and seen == []
    assert "--mode must be one of label, rationale" in r.output and "--epochs must be > 0" in r.output
    r = CliRunner().invoke(_app(seen), ["x", "-i", "a", "--lr", "0.1", "--learning-rate", "0.2"])
    assert r.exit_code == 2 and "not both" in r.output
    r = CliRunner().invoke(_app(seen), ["x"])
    assert r.exit_code == 2 and "--input" in r.output  # required


def test_stage_adapter_same_defaults_bounds_and_old_keys():
    model = stage_model(_Cfg)
    assert "input" not in model.model_fields  # stage=False
    o = model.model_validate({"lr": 0.5})
    assert o.learning_rate == 0.5 and o.epochs == 3.0 and o.loss_type == ["sigmoid"] and o.mode == "label"
    with pytest.raises(Exception) as e:
        model.model_validate({"epochs": 0, "mode": "q", "bogus": 1})
    text = str(e.value)
    assert "epochs" in text and "mode" in text and "bogus" in text
    with pytest.raises(TypeError):
        stage_model(_Cfg, defaults={"epochs": 1.0})  # a stage may not change a default


# --------------------------------------------------------------------------------------------------
# the teacher settings: declared once (TeacherSpec), offered by every teacher-using command and by a
# pipeline's ``teacher:`` block.  They had drifted: --timeout/--max-retries help differed between
# `complete` and `generate`, `tailor` defaulted --concurrency to 16 (its stage: 32), --adaptive-timeout
# was on `complete` only, `clean --teacher` did not mention local:/simulated:.
# --------------------------------------------------------------------------------------------------

from synthkd.config import TeacherConfig  # noqa: E402
from synthkd.jsonl_io import InputError  # noqa: E402
from synthkd.options import group_from_cli, option_group, pydantic_cli_values, pydantic_typer_params  # noqa: E402
from synthkd.teachers.factory import SamplingParams, TeacherSpec  # noqa: E402

TEACHER_COMMANDS = [("complete",), ("generate", "rationales"), ("generate", "preferences"), ("clean", "judge"),
                    ("clean", "run"), ("tailor",)]


def _bad_value(f: dataclasses.Field) -> object | None:
    """A value just outside the field's declared bound (None when it has none)."""
    m = meta_of(f)
    if m.ge is not None:
        return type(default_of(f) if default_of(f) is not None else 1.0)(m.ge - 1)
    if m.gt is not None:
        return m.gt
    return None


@pytest.mark.parametrize("command", TEACHER_COMMANDS, ids=" ".join)
def test_teacher_options_are_the_same_on_every_command(command):
    params = {p.name: p for p in _click_command(command).params}
    for f in cli_fields(TeacherSpec):
        p = params[f.name]
        assert flag_of(f.name) in p.opts, f"{command}: {f.name} is spelled {p.opts}"
        if f.name == "teacher":  # old spellings kept
            assert {"--model", "-m"} <= set(p.opts)
            continue
        assert _same(_cli_default(f, p), default_of(f)), f"{command}: {flag_of(f.name)} defaults to {p.default!r}"
        assert p.help.startswith(meta_of(f).help), f"{command}: {flag_of(f.name)} help differs"
    # the spellings the commands had: an on-switch alone, and a named off-switch
    assert params["no_cache"].opts == ["--no-cache"] and not params["no_cache"].secondary_opts
    assert params["concurrency"].opts == ["--concurrency", "-c"]
    assert params["adaptive_timeout"].secondary_opts == ["--fixed-timeout"]


def test_the_yaml_teacher_block_is_generated_from_the_same_declaration():
    yaml = TeacherConfig.model_fields
    spec_fields = stage_fields(TeacherSpec) + stage_fields(SamplingParams)
    # every key: a TeacherSpec or SamplingParams field (the teacher's name under its YAML key "model")
    assert set(yaml) == {"model" if f.name == "teacher" else f.name for f in spec_fields}
    for f in spec_fields:
        key = "model" if f.name == "teacher" else f.name
        mf = yaml[key]
        assert mf.description == meta_of(f).help, key
        if default_of(f) is MISSING:
            assert mf.is_required()
            continue
        assert _same(mf.get_default(call_default_factory=True), default_of(f)), key
        bad = _bad_value(f)
        if bad is not None:  # the same bound on both surfaces
            with pytest.raises(Exception, match=key):
                TeacherConfig.model_validate({"model": "x", key: bad})
            if f.name in {g.name for g in cli_fields(TeacherSpec)}:
                with pytest.raises(InputError, match=flag_of(f.name)):
                    group_from_cli(TeacherSpec, {f.name: bad}, exclude=("teacher",))
    # ``complete``'s sampling options are the YAML block's temperature/max_tokens
    params = {p.name: p for p in _click_command(("complete",)).params}
    for f in cli_fields(SamplingParams):
        assert _same(params[f.name].default, yaml[f.name].get_default()) and params[f.name].help == meta_of(f).help


def test_a_command_cannot_change_a_shared_teacher_default():
    from synthkd.commands.common import with_connection_options

    with pytest.raises(TypeError, match="concurrency"):
        with_connection_options(concurrency=16)


def test_a_bad_connection_option_is_refused_before_the_command_runs():
    r = CliRunner().invoke(synthkd.cli.app, ["clean", "judge", "-i", "in.jsonl", "-o", "out.jsonl", "-m", "x",
                                             "-c", "0", "--max-cost", "-1"])
    assert r.exit_code == 2
    assert "--concurrency must be >= 1, got 0" in r.output and "--max-cost must be > 0, got -1" in r.output


def test_option_group_adapter_folds_old_spellings_and_checks_bounds():
    seen: list = []
    app = typer.Typer()

    @app.command("x")
    @option_group(_Cfg, "group", exclude=("input",))
    def x(name: str = typer.Option(..., "--name"), group: Optional[dict] = None) -> None:
        seen.append((name, group))

    @app.command("y")
    def y() -> None:
        pass

    r = CliRunner().invoke(app, ["x", "--name", "n", "--lr", "0.5", "--no-bf16"])
    assert r.exit_code == 0, r.output
    assert seen == [("n", {"epochs": 3.0, "learning_rate": 0.5, "bf16": False, "loss_type": ["sigmoid"],
                           "mode": "label"})]
    r = CliRunner().invoke(app, ["x", "--name", "n", "--epochs", "0", "--mode", "q"])
    assert r.exit_code == 2 and "--epochs must be > 0" in r.output and "--mode must be one of" in r.output
    assert len(seen) == 1


def test_pydantic_adapter_gives_only_what_was_given():
    from typing import Literal

    from pydantic import BaseModel, Field

    class Op(BaseModel):
        fields: list[str] = Field(["text"], description="Fields.")
        weights: dict[str, float] = Field(default_factory=dict, description="Weights.")
        normalize: Literal["none", "words"] = Field("none", description="How.")
        keep: bool = Field(False, description="Keep.")
        threshold: float = Field(description="Cut.")

    seen: list = []
    app = typer.Typer()

    def x(**kw) -> None:
        seen.append(pydantic_cli_values(Op, kw))

    import inspect

    x.__signature__ = inspect.Signature(pydantic_typer_params(Op))  # type: ignore[attr-defined]
    app.command("x")(x)
    app.command("y")(lambda: None)
    r = CliRunner().invoke(app, ["x", "--threshold", "0.5", "--fields", "a", "--fields", "b",
                                 "--weights", '{"a": 2}', "--keep"])
    assert r.exit_code == 0, r.output
    assert seen == [{"threshold": 0.5, "fields": ["a", "b"], "weights": {"a": 2}, "keep": True}]
    r = CliRunner().invoke(app, ["x", "--no-keep"])
    assert seen[-1] == {"keep": False}  # "required" is the model's to say (it names the field)
    help_text = CliRunner().invoke(app, ["x", "--help"]).output
    assert "(one of: none, words)" in help_text and "(JSON object)" in help_text and "(required)" in help_text


def test_the_http_client_defaults_are_the_teacher_spec_defaults():
    """The client class keeps its own keyword defaults (the Python API below the factory): they must be
    TeacherSpec's, or ``OpenAICompatibleTeacher(model)`` and ``make_teacher(TeacherSpec(model))`` differ."""
    import inspect

    from synthkd.teachers.openai_compat import OpenAICompatibleTeacher

    sig = inspect.signature(OpenAICompatibleTeacher.__init__).parameters
    spec = {f.name: default_of(f) for f in dataclasses.fields(TeacherSpec)}
    for client_name, spec_name in [("base_url", "base_url"), ("api_key", "api_key"), ("concurrency", "concurrency"),
                                   ("rpm", "rpm"), ("tpm", "tpm"), ("timeout_s", "timeout"),
                                   ("max_retries", "max_retries"), ("max_cost", "max_cost"),
                                   ("adaptive_timeout", "adaptive_timeout")]:
        assert sig[client_name].default == spec[spec_name], client_name


# --------------------------------------------------------------------------------------------------
# clean: each operator's Config (pydantic, the YAML `ops:` item) is its single declaration; the
# `synthkd clean <op>` command is generated from it
# --------------------------------------------------------------------------------------------------

def _clean_ops() -> list[str]:
    from synthkd.filters.op_config import registry

    return sorted(registry())


@pytest.mark.parametrize("op", _clean_ops())
def test_clean_operator_commands_follow_their_config(op):
    from synthkd.filters.op_config import registry

    cfg = registry()[op].Config
    params = {p.name: p for p in _click_command(("clean", op)).params}
    for name, field in cfg.model_fields.items():
        if name == "op":
            continue
        assert name in params, f"clean {op}: {name} is not an option"
        assert (field.description or "").strip(), f"clean {op}: {name} has no help text"
        # the command's own default is None: "not given", so the Config's default applies (one place)
        assert params[name].default in (None, []), f"clean {op}: --{name} has its own default {params[name].default!r}"
        assert (params[name].help or "").startswith(field.description.strip()[:20]), f"clean {op}: --{name} help differs"
