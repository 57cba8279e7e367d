"""Prompt templates are untrusted files: sandboxed rendering and a clear rule for what counts as a template."""

from __future__ import annotations

import json
import os

import pytest

from synthkd.templates import TemplateError, load_template
from tests.conftest import run_cli

EVIL = {
    "globals": "Q: {{ query }} {{ cycler.__init__.__globals__.os.system('touch %s') }}\nA:",
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }} {{ query }} %s",
    "getitem": "{{ query }} {{ cycler['__init__']['__globals__']['os'].system('touch %s') }}",
    "attr_filter": "{{ query }} {{ (cycler|attr('__init__')) }} %s",
}


# F9 regression
@pytest.mark.parametrize("kind", sorted(EVIL))
def test_template_reaching_python_internals_is_refused_at_load(tmp_path, kind):
    marker = tmp_path / "pwned"
    tpl = tmp_path / "evil.j2"
    tpl.write_text(EVIL[kind] % marker)
    with pytest.raises(TemplateError, match=r"evil\.j2:1: unsafe template: attribute '_"):
        load_template(str(tpl)).render(query="q")
    assert not marker.exists()


# F9 regression
def test_template_reaching_internals_dynamically_fails_at_render_naming_the_file(tmp_path):
    # the attribute name is built at render time, so only the sandbox can see it
    marker = tmp_path / "pwned"
    tpl = tmp_path / "sneaky.j2"
    tpl.write_text("{{ query }} {{ cycler|attr('_' ~ '_init__') }}")
    t = load_template(str(tpl))
    with pytest.raises(TemplateError, match=r"sneaky\.j2.*unsafe template refused by the sandbox"):
        t.render(query="q")
    tpl.write_text("{{ query }} {{ (cycler|attr('_' ~ '_init__')|attr('_' ~ '_globals__')).os.system('touch %s') }}"
                   % marker)
    with pytest.raises(TemplateError, match="sneaky"):
        load_template(str(tpl)).render(query="q")
    with pytest.raises(TemplateError, match="unsafe"):  # the mutating methods are refused as well
        load_template(_write(tmp_path, "m.j2", "{{ demos.append(1) }}{{ demos }}")).render(demos=[])
    assert not marker.exists()


def _write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


# F9 regression
def test_only_template_files_are_templates(tmp_path):
    key = _write(tmp_path, "secret.key", "sk-THIS-IS-A-SECRET")
    with pytest.raises(TemplateError, match=r"secret\.key: not a template file: a template must end in \.j2"):
        load_template(key)
    with pytest.raises(TemplateError, match="not a template file"):
        load_template(_write(tmp_path, "notes.txt", "{{ query }}"))
    (tmp_path / "bin.j2").write_bytes(b"\xff\xfe{{ query }}")
    with pytest.raises(TemplateError, match=r"bin\.j2: not a template file: not UTF-8 text"):
        load_template(str(tmp_path / "bin.j2"))
    # the suffixes that are templates still work, by path and by name
    for suffix in (".j2", ".jinja", ".jinja2"):
        assert load_template(_write(tmp_path, "ok" + suffix, "Q: {{ query }}")).render(query="x") == "Q: x"
    assert load_template("rationale/cot_math").path.parent.name == "rationale"


# F9 regression
def test_template_names_cannot_leave_the_prompt_directories(tmp_path, monkeypatch):
    prompts, outside = tmp_path / "prompts", tmp_path / "outside"
    prompts.mkdir()
    outside.mkdir()
    (outside / "x.j2").write_text("{{ query }} outside")
    (prompts / "mine.j2").write_text("{{ query }} mine")
    (prompts / "link.j2").symlink_to(outside / "x.j2")
    monkeypatch.setenv("SYNTHKD_PROMPTS", str(prompts))
    monkeypatch.chdir(tmp_path / "outside")
    assert load_template("mine").render(query="q") == "q mine"
    with pytest.raises(TemplateError, match=r"lies outside the prompt directory"):
        load_template("link")
    with pytest.raises(TemplateError, match="not found"):
        load_template("../outside/y")


# F9 regression: through the CLI, the evil template is refused before any request and runs nothing
def test_cli_refuses_evil_template_before_any_request(tmp_path, make_server):
    server = make_server()
    marker = tmp_path / "pwned_jinja"
    tpl = tmp_path / "evil.j2"
    tpl.write_text(EVIL["globals"] % marker)
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": 1, "question": "What is 2 + 3?", "answer": 5}) + "\n")
    r = run_cli("generate", "rationales", "--kind", "math", "--input", str(inp), "--output", str(tmp_path / "o.jsonl"),
                "--teacher", "test-model", "--base-url", server.base_url, "--template", str(tpl), "--n-demos", "0",
                "--cache", str(tmp_path / "c.sqlite"))
    assert r.returncode == 2, r.stderr
    assert "evil.j2:1: unsafe template" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists() and server.stats()["requests_total"] == 0


# ------------------------------------------------------------------ shipped templates (issue 12)


def test_shipped_templates_are_package_data_and_the_repo_prompts_link_cannot_diverge():
    import glob
    import tomllib
    from pathlib import Path

    from synthkd.assets import prompts_dir
    from tests.conftest import REPO

    shipped = prompts_dir()
    assert shipped is not None and shipped.resolve() == (REPO / "synthkd" / "prompts").resolve()
    # the documented top-level prompts/ is a relative symlink to the package's, not a second copy
    top = REPO / "prompts"
    assert top.is_symlink() and os.readlink(top) == os.path.join("synthkd", "prompts"), (
        "prompts/ must be the symlink prompts -> synthkd/prompts (the templates live in the package)")
    assert top.resolve() == shipped.resolve()
    # every template file is declared package data (expanded as setuptools does: glob, recursive) and loads
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["synthkd"]
    declared = {Path(f).resolve() for g in globs for f in glob.glob(str(REPO / "synthkd" / g), recursive=True)}
    files = sorted(p for p in shipped.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert len(files) >= 15
    for f in files:
        assert f.resolve() in declared, f"{f} is not package data in pyproject.toml"
        name = f.relative_to(shipped).with_suffix("").as_posix()
        assert load_template(name).path.resolve() == f.resolve()


def test_a_user_template_file_or_directory_is_used_before_the_shipped_ones(tmp_path, monkeypatch):
    from tests.conftest import REPO

    mine = tmp_path / "mine"
    (mine / "rationale").mkdir(parents=True)
    (mine / "rationale" / "cot_math.j2").write_text("Mine: {{ query }}")
    monkeypatch.chdir(tmp_path)
    # a .j2 path, relative to the cwd, is used as given
    assert load_template("mine/rationale/cot_math.j2").render(query="q") == "Mine: q"
    # $SYNTHKD_PROMPTS shadows a shipped name; the shipped one is found when it is unset
    monkeypatch.setenv("SYNTHKD_PROMPTS", str(mine))
    assert load_template("rationale/cot_math").render(query="q") == "Mine: q"
    monkeypatch.delenv("SYNTHKD_PROMPTS")
    shipped = load_template("rationale/cot_math")
    assert shipped.path.resolve() == REPO / "synthkd" / "prompts" / "rationale" / "cot_math.j2"
    assert "Answer the last question." in shipped.render(query="q", demos=[], hint=None)


def test_shipped_accelerate_configs_are_found_by_name(capsys):
    from synthkd.assets import accelerate_config, accelerate_configs, main
    from tests.conftest import REPO

    assert sorted(accelerate_configs()) == ["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"]
    ddp = accelerate_config("ddp.yaml")
    assert ddp == accelerate_config("ddp") and ddp.resolve() == REPO / "synthkd" / "accelerate_configs" / "ddp.yaml"
    with pytest.raises(KeyError, match="no shipped accelerate config 'zero9'"):
        accelerate_config("zero9")
    assert main(["accelerate", "fsdp"]) == 0 and capsys.readouterr().out.strip() == str(accelerate_config("fsdp"))
    assert main(["accelerate", "nope"]) == 1 and "there are: ddp, deepspeed_zero2" in capsys.readouterr().err
    assert main([]) == 2
