"""Shared fixtures: real loopback OpenAI-compatible servers and helpers to run the CLI for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never reach a model hub: set before anything imports huggingface_hub / transformers / datasets.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

from synthkd.testing.server import FaultConfig, TestServer, prompt_text_of
from train_fixtures import (  # noqa: F401  (session-scoped tiny students; torch is imported lazily)
    label_student,
    test_rows,
    tiny_student,
    tiny_student_plain,
    train_env,
    train_rows,
    varied_student,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_server():
    """Start TestServers with the given faults; all are stopped at the end of the test."""
    started: list[TestServer] = []

    def _make(config: FaultConfig | None = None, **kw) -> TestServer:
        srv = TestServer(config or FaultConfig(), **kw).start()
        started.append(srv)
        return srv

    yield _make
    for srv in started:
        srv.stop()


def write_prompts(path: Path, n: int, *, start: int = 0, messages: bool = False) -> list[dict]:
    rows = []
    with open(path, "w") as f:
        for i in range(start, start + n):
            text = f"Question {i}: what is {i} times {i % 7 + 2}? Think step by step."
            row = {"id": f"q{i}", "topic": "math"}
            if messages:
                row["messages"] = [{"role": "user", "content": text}]
            else:
                row["prompt"] = text
            rows.append(row)
            f.write(json.dumps(row) + "\n")
    return rows


def prompt_of(row: dict) -> str:
    """The text the test server's deterministic responder hashes for this row."""
    return prompt_text_of({k: row[k] for k in ("prompt", "messages") if k in row})


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def synthkd_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "synthkd.cli", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        synthkd_cmd(*args), env=env or cli_env(), capture_output=True, text=True, timeout=timeout
    )
