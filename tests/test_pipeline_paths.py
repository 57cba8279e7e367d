"""Paths in a pipeline resolve against the pipeline file's directory, never the working directory
(issue 18, item 6): stage inputs, option files, clean operators' files, run_dir, the teacher's cache and
prices, ``replay:`` models — through the real CLI against the real loopback server, run from elsewhere."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import REPO, cli_env, read_jsonl, synthkd_cmd, write_prompts
from synthkd.config import load_pipeline
from synthkd.pipeline import plan


def _project(root: Path, url: str, data_ref: str = "data/in.jsonl") -> Path:
    """A pipeline in ``root/proj`` whose every path is relative to it."""
    proj = root / "proj"
    (proj / "data").mkdir(parents=True)
    write_prompts(proj / "data" / "in.jsonl", 6)
    (proj / "data" / "eval.jsonl").write_text(json.dumps({"id": "e0", "prompt": "something else entirely"}) + "\n")
    (proj / "prices.json").write_text(json.dumps({"test-model": {"input": 1.0, "output": 2.0}}))
    p = proj / "p.yaml"
    p.write_text(f"""name: rel
run_dir: out
teacher:
  model: test-model
  base_url: {url}
  concurrency: 4
  cache: cache/teacher.sqlite
  prices: prices.json
stages:
  - name: gen
    kind: complete
    input: {data_ref}
  - name: clean
    kind: clean
    input: gen
    options:
      ops:
        - {{op: decontaminate, fields: [prompt], eval_file: data/eval.jsonl, eval_fields: [prompt]}}
""")
    return p


def test_run_from_another_directory_resolves_every_path_against_the_pipeline_file(tmp_path, make_server):
    srv = make_server()
    p = _project(tmp_path, srv.base_url)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run(synthkd_cmd("run", str(p)), cwd=elsewhere, env=cli_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "proj" / "out" / "rel"
    assert len(read_jsonl(run_dir / "gen.jsonl")) == 6 and len(read_jsonl(run_dir / "clean.jsonl")) == 6
    assert (tmp_path / "proj" / "cache" / "teacher.sqlite").is_file()  # the teacher's cache, next to the pipeline
    man = json.loads((run_dir / "manifest.json").read_text())
    assert man["stages"]["gen"]["teacher"]["cost_usd"] > 0  # prices.json next to the pipeline was read
    funnel = json.loads((run_dir / "clean.funnel.json").read_text())
    assert "data/eval.jsonl" in json.dumps(funnel) or "eval.jsonl" in json.dumps(funnel)
    assert list(elsewhere.iterdir()) == []  # nothing was written where the command was started


def test_the_same_pipeline_plans_the_same_from_any_directory(tmp_path, make_server, monkeypatch):
    srv = make_server()
    p = _project(tmp_path, srv.base_url, data_ref="./data/in.jsonl")
    dirs = []
    for cwd in (tmp_path, tmp_path / "proj", tmp_path / "proj" / "data"):
        monkeypatch.chdir(cwd)
        planned = plan(load_pipeline(p.relative_to(tmp_path) if cwd == tmp_path else p))
        dirs.append((planned[0].ctx.run_dir, planned[0].ctx.inputs["input"].resolve()))
    assert len(set(dirs)) == 1
    assert dirs[0] == ((tmp_path / "proj" / "out" / "rel").resolve(), (tmp_path / "proj" / "data" / "in.jsonl").resolve())


def test_an_absolute_path_from_the_environment_stays_absolute(tmp_path, make_server):
    srv = make_server()
    p = _project(tmp_path, srv.base_url, data_ref="${DATA_DIR}/in.jsonl")
    other = tmp_path / "other-data"
    other.mkdir()
    write_prompts(other / "in.jsonl", 3)
    res = subprocess.run(synthkd_cmd("run", str(p)), cwd=tmp_path, env=cli_env(DATA_DIR=str(other)),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(tmp_path / "proj" / "out" / "rel" / "gen.jsonl")) == 3  # other-data/, not proj/data/


def test_a_missing_relative_input_is_named_with_the_path_it_was_looked_for_at(tmp_path, make_server):
    srv = make_server()
    p = _project(tmp_path, srv.base_url, data_ref="data/nope.jsonl")
    res = subprocess.run(synthkd_cmd("validate", str(p)), cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
    assert res.returncode == 2
    assert f"'data/nope.jsonl' is neither an earlier stage nor an existing file ({tmp_path / 'proj' / 'data' / 'nope.jsonl'})" \
        in res.stderr, res.stderr


def test_ready_pipelines_validate_from_another_directory(tmp_path):
    for name in ("intent_from_prompts", "svamp_step_by_step"):
        res = subprocess.run(synthkd_cmd("validate", str(REPO / "pipelines" / f"{name}.yaml")), cwd=tmp_path,
                             env=cli_env(), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        # run_dir ../runs: the repository's runs/, whatever the working directory
        assert f"run directory {REPO / 'runs'}" in res.stdout, res.stdout
    assert not (tmp_path / "runs").exists()
