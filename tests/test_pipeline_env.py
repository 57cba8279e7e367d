"""``${VAR}`` / ``${VAR:-default}`` anywhere in a pipeline YAML (issue 18, item 6): inside inline
``{...}`` mappings (a YAML parse error when it was expanded after parsing), in ``--set`` values, with
values holding YAML's special characters; a missing variable names the file, line and key; the
manifest records the reference, never the value."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import cli_env, read_jsonl, synthkd_cmd, write_prompts
from synthkd.config import ConfigError, load_pipeline


def test_a_variable_inside_an_inline_mapping_runs_and_is_recorded_unexpanded(tmp_path, make_server):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 4)
    (tmp_path / "p.yaml").write_text("""name: envt
teacher: {model: ${SKD_MODEL:-test-model}, base_url: ${SKD_URL}, concurrency: ${SKD_CONC:-3}}
stages:
  - {name: gen, kind: complete, input: in.jsonl, options: {samples: ${SKD_SAMPLES:-1}}}
""")
    res = subprocess.run(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(SKD_URL=srv.base_url),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(tmp_path / "runs/envt/gen.jsonl")) == 4
    assert srv.stats()["requests_total"] >= 4  # the URL from the environment was used
    man = json.loads((tmp_path / "runs/envt/manifest.json").read_text())
    assert man["config"]["teacher"]["base_url"] == "${SKD_URL}"  # the reference, not the value
    assert man["config"]["teacher"]["concurrency"] == "${SKD_CONC:-3}"
    assert srv.base_url not in (tmp_path / "runs/envt/manifest.json").read_text()


def test_values_with_yaml_syntax_stay_one_string(tmp_path, monkeypatch):
    # a value is put into the parsed string: ': ', '#', '{', newlines never change the YAML's structure
    value = "a: b # not a comment, {x: 1}\nsecond line"
    monkeypatch.setenv("SKD_DESC", value)
    (tmp_path / "p.yaml").write_text("name: x\ndescription: ${SKD_DESC}\nstages:\n"
                                     "  - {name: a, kind: complete, input: in.jsonl, options: {samples: 1}}\n"
                                     "# a comment naming ${SKD_NOT_SET_ANYWHERE} is never expanded\n")
    cfg = load_pipeline(tmp_path / "p.yaml")
    assert cfg.description == value
    assert cfg.recorded()["description"] == "${SKD_DESC}"


def test_defaults_and_partial_strings_in_flow_mappings(tmp_path, monkeypatch):
    monkeypatch.setenv("SKD_HOST", "127.0.0.1")
    monkeypatch.delenv("SKD_PORT", raising=False)
    (tmp_path / "p.yaml").write_text(
        "name: x\nteacher: {model: m, base_url: 'http://${SKD_HOST}:${SKD_PORT:-8765}/v1'}\n"
        "stages: [{name: a, kind: complete, input: in.jsonl}]\n")
    cfg = load_pipeline(tmp_path / "p.yaml")
    assert cfg.teacher is not None and cfg.teacher.base_url == "http://127.0.0.1:8765/v1"


def test_a_missing_variable_names_file_line_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv("SKD_MISSING", raising=False)
    (tmp_path / "p.yaml").write_text("name: x\nstages:\n  - name: a\n    kind: complete\n"
                                     "    input: in.jsonl\n    teacher: {model: m, base_url: ${SKD_MISSING}}\n")
    with pytest.raises(ConfigError) as exc:
        load_pipeline(tmp_path / "p.yaml")
    msg = str(exc.value)
    assert f"{tmp_path / 'p.yaml'}:6: stages[0].teacher.base_url: environment variable ${{SKD_MISSING}} is not set" in msg
    assert "${SKD_MISSING:-VALUE}" in msg  # and how to give a default


def test_set_values_expand_too(tmp_path, monkeypatch):
    monkeypatch.setenv("SKD_N", "3")
    (tmp_path / "p.yaml").write_text("name: x\nstages: [{name: a, kind: complete, input: in.jsonl}]\n")
    cfg = load_pipeline(tmp_path / "p.yaml", ["stages.a.options={samples: ${SKD_N}}"])
    assert cfg.stages[0].options == {"samples": "3"}
    assert cfg.recorded()["stages"][0]["options"] == {"samples": "${SKD_N}"}
    monkeypatch.delenv("SKD_N")
    with pytest.raises(ConfigError, match=r"--set stages.a.options: .*\$\{SKD_N\} is not set"):
        load_pipeline(tmp_path / "p.yaml", ["stages.a.options={samples: ${SKD_N}}"])


def test_validate_cli_accepts_an_inline_mapping_with_a_variable(tmp_path, make_server):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 2)
    (tmp_path / "p.yaml").write_text("name: x\nteacher: {model: test-model, base_url: ${SKD_URL}}\n"
                                     "stages: [{name: a, kind: complete, input: in.jsonl}]\n")
    res = subprocess.run(synthkd_cmd("validate", "p.yaml"), cwd=tmp_path, env=cli_env(SKD_URL=srv.base_url),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "| a | complete | 2 |" in res.stdout
