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
from synthkd.options import FEATURES, cli_fields, config_command, default_of, flag_of, meta_of, opt, stage_fields, stage_model
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


FEATURE_NAMES = sorted(FEATURES)


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


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_cli_defaults_equal_the_config_defaults(name):
    feat = FEATURES[name]
    if feat.command is None:
        pytest.skip(f"{name} has no CLI command (stage only)")
    cmd = _click_command(feat.command)
    params = {p.name: p for p in cmd.params}
    for f in cli_fields(feat.config):
        assert f.name in params, f"{name}: {flag_of(f.name)} is not an option of synthkd {' '.join(feat.command)}"
        p = params[f.name]
        want = default_of(f)
        if want is MISSING or p.required:
            continue  # required on the CLI: no default to compare
        assert _same(p.default, want), f"{name}: {flag_of(f.name)} defaults to {p.default!r}, the config to {want!r}"
        assert (p.help or "").startswith(meta_of(f).help[:20]), f"{name}: {flag_of(f.name)} help differs"


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_stage_defaults_equal_the_config_defaults(name):
    feat = FEATURES[name]
    if feat.stage is None:
        pytest.skip(f"{name} has no pipeline stage (CLI only)")
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


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_cli_and_stage_agree_on_shared_fields(name):
    """The drift the issue measured (max_length 1024 vs 512, tailor epochs 1.0 vs 3.0): compared
    directly between the two surfaces, field by field."""
    feat = FEATURES[name]
    if feat.command is None or feat.stage is None:
        pytest.skip("one surface only")
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
