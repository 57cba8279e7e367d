"""Shared fixtures: real loopback OpenAI-compatible servers and helpers to run the CLI for real.

The suite is hermetic: every test (and every CLI subprocess it starts, through ``cli_env()``) gets its
own HOME, XDG dirs, Hugging Face home, matplotlib config dir and teacher request cache inside its tmp
dir, and none of the user's SYNTHKD_* / OPENAI_* settings; the session-scoped fixtures (tiny students)
get the same inside the session's tmp dir.  A user's machine, a read-only HOME or a CI copy of the
repository without ``../shared`` beside it all run the same tests the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never reach a model hub: set before anything imports huggingface_hub / transformers / datasets.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import synthkd  # noqa: E402

# The suite tests *this* checkout: an editable install of another checkout (or a copy of the repo run
# with another copy's virtualenv) would otherwise be imported silently, and its code tested instead.
if Path(synthkd.__file__).resolve().parent != REPO / "synthkd":
    raise pytest.UsageError(f"synthkd was imported from {Path(synthkd.__file__).resolve().parent}, not from "
                            f"this checkout ({REPO}); run pytest from the repository root (pyproject.toml sets "
                            "pythonpath = [\".\"])")

from synthkd.testing.server import FaultConfig, TestServer, prompt_text_of  # noqa: E402
from train_fixtures import (  # noqa: F401  (session-scoped tiny students; torch is imported lazily)
    label_student,
    test_rows,
    tiny_student,
    tiny_student_plain,
    train_env,
    train_rows,
    varied_student,
)

# Settings of the user's environment that would change what the code under test does.
_UNSET = ("SYNTHKD_PRICES", "SYNTHKD_PROMPTS", "SYNTHKD_TEACHER", "SYNTHKD_STUDENT", "HF_HUB_CACHE",
          "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN", "HF_TOKEN_PATH")


def _hermetic_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Point every home/cache/config location the code, torch, HF and matplotlib read into ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    for var, sub in (("HOME", ""), ("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"),
                     ("XDG_DATA_HOME", ".local/share"), ("XDG_STATE_HOME", ".local/state"),
                     ("HF_HOME", ".cache/huggingface"), ("TORCH_HOME", ".cache/torch"),
                     ("TRITON_CACHE_DIR", ".cache/triton"), ("MPLCONFIGDIR", ".config/matplotlib"),
                     ("SYNTHKD_CACHE", ".cache/synthkd/teacher-cache.sqlite")):
        mp.setenv(var, str(home / sub) if sub else str(home))
    for var in [*_UNSET, *(k for k in os.environ if k.startswith("OPENAI_"))]:
        mp.delenv(var, raising=False)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_session(tmp_path_factory):
    """Session-scoped fixtures (tiny students, module set-ups) run with a home in the session tmp dir."""
    with pytest.MonkeyPatch.context() as mp:
        _hermetic_env(mp, tmp_path_factory.mktemp("session-home"))
        yield


@pytest.fixture(autouse=True)
def _hermetic(_hermetic_session, tmp_path, monkeypatch):
    """Each test: its own home, caches and request cache in its tmp dir (``tmp_path / ".home"``)."""
    _hermetic_env(monkeypatch, tmp_path / ".home")


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


def eval_accuracy(eval_dir: Path, same=None) -> float:
    """The accuracy an evaluation's written files give, recomputed: the rows of ``predictions.jsonl``
    whose ``student_answer`` equals ``gold_answer`` (``same``, default ``==``), over all rows.  Checks
    that each row's ``correct`` flag and ``mistakes.jsonl`` (the other rows, in order) agree."""
    same = same or (lambda a, b: a == b)
    preds = read_jsonl(Path(eval_dir) / "predictions.jsonl")
    assert preds, f"no predictions in {eval_dir}"
    right = [p["student_answer"] is not None and bool(same(p["student_answer"], p["gold_answer"])) for p in preds]
    assert [p["correct"] for p in preds] == right, eval_dir
    wrong = [p for p, ok in zip(preds, right) if not ok]
    mistakes = read_jsonl(Path(eval_dir) / "mistakes.jsonl")
    assert [(m.get("id"), m["student_output"]) for m in mistakes] == [(p.get("id"), p["student_output"]) for p in wrong]
    return sum(right) / len(preds)


def complete_rows(path: Path) -> int:
    """Rows of a JSONL file an interrupted writer left: whole lines that parse (a torn last line does not)."""
    if not path.exists():
        return 0
    n = 0
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            json.loads(line)
            n += 1
        except ValueError:
            pass
    return n


def sigkill_after_first_row(proc: subprocess.Popen, out: Path, *, timeout: float = 60) -> int:
    """SIGKILL a CLI run as soon as its first whole row is in ``out`` (polled, with a deadline); returns the
    whole rows left there.  Asserts the run was still going at the kill, so a resume test is never vacuous."""
    deadline = time.monotonic() + timeout
    try:
        while complete_rows(out) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before the kill"
        assert complete_rows(out) > 0, f"no row in {out} after {timeout} s"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    return complete_rows(out)


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: this checkout first on PYTHONPATH, the test's hermetic home and
    caches (inherited from os.environ, set by the autouse fixture), no API keys."""
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


# The session fixtures of train_fixtures.py build or train students (torch): a test that uses one is a
# `train` test even where its module does not say so, so `pytest -m "not train"` never needs torch.
_TRAIN_FIXTURES = frozenset({"tiny_student", "tiny_student_plain", "varied_student", "label_student", "train_env"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _TRAIN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.train)


def clean_rows(tmp_path: Path, rows: list[dict], ops: list[dict], **kw):
    """Run the cleaning chain (ops as in a YAML `ops:` list) over rows in tmp_path: (funnel, kept, rejects)."""
    import asyncio

    from synthkd.filters.chain import CleanPaths, clean_file
    from synthkd.filters.op_config import parse_ops

    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = CleanPaths(tmp_path / "out.jsonl", tmp_path / "rej.jsonl", tmp_path / "f.json", tmp_path / "f.md")
    funnel = asyncio.run(clean_file(inp, parse_ops(ops), paths, progress=False, **kw))
    return funnel, read_jsonl(paths.output), read_jsonl(paths.rejects)
