"""Prompt templates are untrusted files: sandboxed rendering and a clear rule for what counts as a template."""

from __future__ import annotations

import json

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
