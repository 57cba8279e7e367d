"""One name per setting across features (issue 18): ``labels`` is the label file in generate tasks,
PromptMix, relabel, the relabel / label_conflicts / balance ops and eval; ``per_label`` everywhere.  The old
spellings (``--spec`` / ``spec:``, ``--per-class`` / ``per_class:``, ``label_space:``) still parse, hidden."""

from __future__ import annotations

from pathlib import Path

import click
import typer

import synthkd.cli
from synthkd.filters.op_config import parse_ops
from synthkd.stages.base import STAGES
from synthkd.train.evaluate import EvalOptions, resolve_labels

SPEC = Path(__file__).resolve().parent / "fixtures" / "tasks" / "banking77_spec.yaml"


def _cmd(*path: str) -> click.Command:
    cmd: click.Command = typer.main.get_command(synthkd.cli.app)
    for part in path:
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    return cmd


def _visible(cmd: click.Command) -> set[str]:
    out: set[str] = set()
    for p in cmd.params:
        if not getattr(p, "hidden", False):
            out.update(o for o in p.opts if o.startswith("--"))
    return out


def _all(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}


def test_cli_spellings_new_visible_old_hidden():
    tasks, mix = _cmd("generate", "tasks"), _cmd("generate", "promptmix")
    assert {"--labels", "--per-label", "--only", "--batch-size"} <= _visible(tasks)
    assert "--spec" in _all(tasks) and "--spec" not in _visible(tasks)
    assert {"--labels", "--per-label", "--confusion"} <= _visible(mix)
    assert "--per-class" in _all(mix) and "--per-class" not in _visible(mix)
    assert {"--labels", "--out-of-scope", "--abstain-below"} <= _visible(_cmd("eval"))
    assert "--labels" in _visible(_cmd("generate", "relabel"))


def test_stage_keys_new_and_old():
    tasks = STAGES["generate.tasks"].options_model  # type: ignore[attr-defined]
    assert tasks.model_validate({"spec": "x.yaml", "per_label": 2}).labels == tasks.model_validate(
        {"labels": "x.yaml", "per_label": 2}).labels
    mix = STAGES["generate.promptmix"].options_model  # type: ignore[attr-defined]
    assert mix.model_validate({"labels": "x.yaml", "per_class": 3}).per_label == 3
    assert mix.model_validate({"labels": "x.yaml", "per_label": 3, "confusion": "relabel_tasks"}).confusion == "relabel_tasks"
    ev = STAGES["eval"].options_model  # type: ignore[attr-defined]
    assert ev.model_validate({"student": "s", "kind": "label", "labels": "data/labels.yaml"}).labels == "data/labels.yaml"
    assert ev.model_validate({"student": "s", "kind": "label", "labels": ["a", "b"]}).labels == ["a", "b"]
    for op in ("relabel", "label_conflicts", "balance"):
        extra = {"policy": "relabel"} if op == "label_conflicts" else {"max_per_label": 3} if op == "balance" else {}
        assert str(parse_ops([{"op": op, "labels": "l.yaml", **extra}])[0].labels) == "l.yaml"  # type: ignore[attr-defined]
    assert str(parse_ops([{"op": "relabel", "label_space": "old.yaml"}])[0].labels) == "old.yaml"  # type: ignore[attr-defined]


def test_eval_reads_the_label_file_a_comma_list_or_names():
    opts = EvalOptions(student="s", input=Path("x"), kind="label", labels=[str(SPEC)])
    resolve_labels(opts)
    assert opts.labels == ["card_arrival", "lost_or_stolen_card", "pin_blocked", "cancel_transfer", "age_limit"]
    assert opts.out_of_scope is None
    opts = EvalOptions(student="s", input=Path("x"), kind="label", labels=["a", "b"], out_of_scope="oos")
    resolve_labels(opts)
    assert opts.labels == ["a", "b", "oos"]
