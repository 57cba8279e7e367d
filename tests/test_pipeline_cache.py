"""One default request cache for commands and pipelines (issue 18, item 6: a pipeline re-paid what the
CLI had bought): a pipeline run after ``synthkd complete`` / ``synthkd generate tasks`` of the same
requests sends zero new requests to the real loopback server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO, cli_env, read_jsonl, synthkd_cmd, write_prompts
from synthkd.teachers.factory import default_cache_path
from synthkd.testing.banking77_responder import Banking77Responder


def _completions(srv) -> int:
    by = srv.stats()["by_endpoint"]
    return by.get("/v1/chat/completions", 0) + by.get("/v1/completions", 0)


def _run(args, cwd, timeout=120):
    return subprocess.run(synthkd_cmd(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def test_a_pipeline_after_the_cli_sends_nothing_new(tmp_path, make_server):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 8)
    res = _run(["complete", "--teacher", "test-model", "--base-url", srv.base_url, "--input", "in.jsonl",
                "--output", "cli.jsonl"], tmp_path)
    assert res.returncode == 0, res.stderr
    paid = _completions(srv)
    assert paid == 8
    assert Path(os.environ["SYNTHKD_CACHE"]) == default_cache_path() and default_cache_path().is_file()
    (tmp_path / "p.yaml").write_text(f"""name: c
teacher: {{model: test-model, base_url: "{srv.base_url}"}}
stages:
  - {{name: gen, kind: complete, input: in.jsonl}}
""")
    res = _run(["run", "p.yaml"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert _completions(srv) == paid  # every answer came from the CLI's cache
    rows = read_jsonl(tmp_path / "runs/c/gen.jsonl")
    assert len(rows) == 8 and all(r["cached"] for r in rows)
    cli = {r["id"]: r["completion"] for r in read_jsonl(tmp_path / "cli.jsonl")}
    assert {r["id"]: r["completion"] for r in rows} == cli
    man = json.loads((tmp_path / "runs/c/manifest.json").read_text())
    assert man["stages"]["gen"]["teacher"]["requests"] == 0
    assert man["stages"]["gen"]["teacher"]["cached_answers"] == 8
    assert not (tmp_path / "runs" / "teacher-cache.sqlite").exists()  # no second, pipeline-only cache


def test_generate_tasks_cli_then_the_tasks_stage_pays_once(tmp_path, make_server):
    teacher = Banking77Responder.from_dir()
    srv = make_server(responder=teacher)
    spec = tmp_path / "task_spec.yaml"
    shutil.copy(REPO / "data" / "banking77" / "task_spec.yaml", spec)
    res = _run(["generate", "tasks", "--teacher", "test-model", "--base-url", srv.base_url, "--labels", str(spec),
                "--output", "cli.jsonl", "--per-label", "3", "--batch-size", "5", "--only", "card_arrival,age_limit"],
               tmp_path)
    assert res.returncode in (0, 1), res.stderr
    paid = _completions(srv)
    assert paid > 0
    (tmp_path / "p.yaml").write_text(f"""name: t
teacher: {{model: test-model, base_url: "{srv.base_url}"}}
stages:
  - name: tasks
    kind: generate.tasks
    options: {{labels: task_spec.yaml, per_label: 3, batch_size: 5, only: [card_arrival, age_limit]}}
""")
    res = _run(["run", "p.yaml"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert _completions(srv) == paid  # the pipeline got every answer from the CLI's cache
    strip = lambda rows: sorted((r["id"], r["text"], r["label"]) for r in rows)  # noqa: E731
    assert strip(read_jsonl(tmp_path / "runs/t/tasks.jsonl")) == strip(read_jsonl(tmp_path / "cli.jsonl"))
