"""Pipeline config validation, stage skipping, --from, and resume after SIGKILL (real server, real CLI)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import cli_env, read_jsonl, synthkd_cmd, write_prompts
from synthkd.config import ConfigError, load_pipeline
from synthkd.testing.server import FaultConfig


def _completion_requests(srv) -> int:
    st = srv.stats()
    return st["by_endpoint"]["/v1/chat/completions"] + st["by_endpoint"]["/v1/completions"]


def _pipeline(tmp: Path, url: str, extra: str = "") -> Path:
    p = tmp / "p.yaml"
    p.write_text(f"""name: t
teacher:
  model: test-model
  base_url: {url}
  concurrency: 4
stages:
  - name: first
    kind: complete
    input: in.jsonl
  - name: second
    kind: complete
    input: in.jsonl
    options:
      samples: 2
    teacher: {{model: test-model, base_url: "{url}", temperature: 0.7, concurrency: 4}}
{extra}""")
    return p


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: x\nteacher: {model: m, concurency: 3}\nstages:\n  - {name: a, kind: complete, input: in.jsonl}\n",
         "p.yaml:2: teacher.concurency: unknown key 'concurency' (did you mean 'concurrency'?)"),
        ("name: x\nstages:\n  - name: a\n    kind: complete\n    input: in.jsonl\n    options:\n      samples: many\n",
         "p.yaml:7: stages[0] (a).options.samples: Input should be a valid integer"),
        ("name: x\nstages:\n  - name: a\n    kind: teleport\n", "p.yaml:4: stages[0] (a).kind: unknown stage kind 'teleport'"),
        ("name: x\nstages:\n  - name: a\n    kind: complete\n    input: nowhere.jsonl\n",
         "p.yaml:5: stages[0] (a).input: 'nowhere.jsonl' is neither an earlier stage nor an existing file"),
        ("name: x\nstages: [\n", "p.yaml:3: not valid YAML"),
        ("name: x\nteacher: {model: '${NO_SUCH_VAR_SYNTHKD}'}\nstages:\n  - {name: a, kind: complete}\n",
         "environment variable ${NO_SUCH_VAR_SYNTHKD} is not set"),
    ],
)
def test_validate_errors_name_file_line_key(tmp_path, text, expected, make_server):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 3)
    (tmp_path / "p.yaml").write_text(text)
    res = subprocess.run(synthkd_cmd("validate", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
    assert res.returncode == 2
    assert expected in res.stderr, res.stderr
    assert srv.stats()["requests_total"] == 0


def test_set_override_and_env_default(tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text(
        "name: x\nteacher: {model: '${SYNTHKD_T_MODEL:-gpt-4o-mini}'}\nstages:\n  - {name: a, kind: complete}\n")
    cfg = load_pipeline(tmp_path / "p.yaml", ["teacher.concurrency=7", "stages.a.options.samples=3"])
    assert cfg.teacher.model == "gpt-4o-mini" and cfg.teacher.concurrency == 7
    assert cfg.stages[0].options == {"samples": 3}
    with pytest.raises(ConfigError, match="no list item 'zz'"):
        load_pipeline(tmp_path / "p.yaml", ["stages.zz.options.samples=3"])


def test_validate_estimates_calls(tmp_path, make_server):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 10)
    _pipeline(tmp_path, srv.base_url)
    res = subprocess.run(synthkd_cmd("validate", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "| first | complete | 10 |" in res.stdout and "| second | complete | 20 |" in res.stdout
    assert "| **total** | | 30 |" in res.stdout
    assert srv.stats()["requests_total"] == 0


def test_run_skips_unchanged_stages_and_from_reruns(tmp_path, make_server):
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 12)
    _pipeline(tmp_path, srv.base_url)
    run = lambda *a: subprocess.run(synthkd_cmd("run", "p.yaml", *a), cwd=tmp_path, env=cli_env(),  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    res = run()
    assert res.returncode == 0, res.stderr
    assert _completion_requests(srv) == 12 + 12  # stage 2's two samples per row go as one request (n=2)
    man = json.loads((tmp_path / "runs/t/manifest.json").read_text())
    assert man["stages"]["first"]["status"] == "done" and man["stages"]["second"]["counts"]["rows_out"] == 12
    assert man["config_hash"] and man["versions"]["synthkd"]
    res = run()
    assert "unchanged since its last run: skipped" in res.stderr and _completion_requests(srv) == 24
    res = run("--from", "second")
    assert res.returncode == 0 and "[first] unchanged" in res.stderr and "[second] running" in res.stderr
    assert _completion_requests(srv) == 24  # re-run from the cache: nothing paid twice
    assert len(read_jsonl(tmp_path / "runs/t/second.jsonl")) == 12
    # a changed option re-runs that stage only, with its stale output moved aside
    res = run("--set", "stages.second.options.samples=3")
    assert res.returncode == 0 and "[first] unchanged" in res.stderr
    assert _completion_requests(srv) == 24 + 12  # only the third sample of each row is new (one request each)
    assert all(len(r["completions"]) == 3 for r in read_jsonl(tmp_path / "runs/t/second.jsonl"))
    assert (tmp_path / "runs/t/second.jsonl.prev").exists()
    assert (tmp_path / "runs/t/report.md").exists() and (tmp_path / "runs/t/plots/funnel.png").exists()


def test_sigkill_mid_stage_resumes_without_paying_twice(tmp_path, make_server):
    # audit mutant 7: an interrupted stage must *resume* (keep its rows), not start over from the cache
    srv = make_server(FaultConfig(latency_ms=40))
    write_prompts(tmp_path / "in.jsonl", 200)
    _pipeline(tmp_path, srv.base_url)
    proc = subprocess.Popen(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while srv.stats()["by_outcome"]["ok"] < 260 and time.monotonic() < deadline:  # inside stage 2
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    man = json.loads((tmp_path / "runs/t/manifest.json").read_text())
    assert man["stages"]["first"]["status"] == "done" and man["stages"]["second"]["status"] == "running"
    partial = (tmp_path / "runs/t/second.jsonl").read_bytes()
    partial = partial[: partial.rfind(b"\n") + 1]  # whole rows only (a torn last line is cut on resume)
    before = partial.count(b"\n")
    assert 0 < before < 200
    res = subprocess.run(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "[first] unchanged" in res.stderr
    assert f"{before} already there" in res.stderr, res.stderr
    assert not (tmp_path / "runs/t/second.jsonl.prev").exists()
    final = (tmp_path / "runs/t/second.jsonl").read_bytes()
    assert final.startswith(partial)  # the rows of the killed attempt were kept, byte for byte
    rows = read_jsonl(tmp_path / "runs/t/second.jsonl")
    assert len(rows) == len({r["id"] for r in rows}) == 200
    extra = _completion_requests(srv) - 400  # 200 rows, then 200 with n=2
    assert 0 <= extra <= 4, f"{extra} requests paid twice"


def test_stage_naming_an_earlier_stage_reruns_when_that_stage_changes():
    """An option that names an earlier stage (``student: sft``) makes that stage's result an input."""
    from synthkd.pipeline import referenced_stages as _referenced_stages

    assert _referenced_stages({"student": "sft", "kind": "number", "x": ["a", {"y": "gen"}]},
                              {"sft", "gen", "other"}) == {"sft", "gen"}
    assert _referenced_stages({"kind": "number"}, {"sft"}) == set()
