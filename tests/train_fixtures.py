"""Session-scoped tiny students for the training tests, built offline once per test session.

To share them with every test module, tests/conftest.py gets::

    from train_fixtures import (  # noqa: F401
        tiny_student, tiny_student_plain, varied_student, label_student, train_rows, test_rows, train_env,
    )

Until then each test_train_*.py does ``from train_fixtures import *``.  Students are built under
pytest's session base temp directory and reused if already there, so importing the fixtures into
several modules still builds each student once.

torch runs single-threaded here: on a shared 2-core machine two OpenMP threads that wait on each
other were measured 20x slower than one thread for these tiny models.  Importing this module does
not import torch (so conftest.py stays cheap for the other tests).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by torch when it is first imported


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)

FIX = Path(__file__).parent / "fixtures" / "train"
TRAIN_ROWS = FIX / "svamp_train64.jsonl"
TEST_ROWS = FIX / "svamp_test32.jsonl"

__all__ = ["tiny_student", "tiny_student_plain", "varied_student", "label_student", "train_rows", "test_rows", "train_env"]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _texts() -> list[str]:
    texts = []
    for path in (TRAIN_ROWS, TEST_ROWS):
        for r in read_rows(path):
            texts += [r["input"], r["rationale"], str(r["answer"]), str(r["gold"])]
    texts += ["predict: explain: So the answer is", "positive negative neutral label", "0123456789 . , ( ) + - * /"]
    return texts


def _build(base: Path, name: str, build) -> Path:
    _one_thread()
    out = base / name
    if not (out / "config.json").exists():
        tmp = base / f"{name}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random Llama + byte-level BPE (800 tokens) with a chat template."""
    from synthkd.train.tiny import build_tiny_student

    return _build(tmp_path_factory.getbasetemp(), "tiny_student",
                  lambda d: build_tiny_student(_texts(), d, vocab_size=800, hidden_size=64, layers=2, heads=4))


@pytest.fixture(scope="session")
def tiny_student_plain(tmp_path_factory, tiny_student) -> Path:
    """The same student without a chat template (prompts use the plain format)."""

    def make(d: Path) -> None:
        shutil.copytree(tiny_student, d)
        (d / "chat_template.jinja").unlink(missing_ok=True)
        cfg = json.loads((d / "tokenizer_config.json").read_text())
        cfg.pop("chat_template", None)
        (d / "tokenizer_config.json").write_text(json.dumps(cfg))

    return _build(tmp_path_factory.getbasetemp(), "tiny_student_plain", make)


@pytest.fixture(scope="session")
def varied_student(tmp_path_factory, tiny_student) -> Path:
    """tiny_student re-initialised with large weights (std 0.3): untrained, but its greedy output differs
    from prompt to prompt, so batching and padding bugs change what it says."""

    def make(d: Path) -> None:
        import torch
        from transformers import AutoConfig, LlamaForCausalLM

        shutil.copytree(tiny_student, d)
        cfg = AutoConfig.from_pretrained(d)
        cfg.initializer_range = 0.3
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(d)

    return _build(tmp_path_factory.getbasetemp(), "varied_student", make)


def quiet_settings(**kw):
    """TrainSettings for fast CPU tests: few steps, high LR (random-init students), no checkpoints."""
    from synthkd.train.common import TrainSettings

    base = dict(max_steps=30, learning_rate=3e-3, batch_size=8, logging_steps=5, save_steps=10_000,
                max_length=256, skip_invalid=True)
    base.update(kw)
    return TrainSettings(**base)


@pytest.fixture(scope="session")
def label_student(tmp_path_factory, tiny_student) -> Path:
    """tiny_student after 60 label-mode SFT steps on the 64 SVAMP rows (shared by eval/DPO/teacher tests)."""
    from synthkd.train.sft import SFTOptions, run_sft

    def make(d: Path) -> None:
        run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=d, mode="label",
                           settings=quiet_settings(max_steps=60)))

    return _build(tmp_path_factory.getbasetemp(), "label_student", make)


@pytest.fixture(scope="session")
def train_rows() -> Path:
    return TRAIN_ROWS


@pytest.fixture(scope="session")
def test_rows() -> Path:
    return TEST_ROWS


@pytest.fixture
def train_env():
    """Environment for CLI subprocesses: ``cli_env()`` (repo on the path, hermetic home, no API keys) with
    one torch thread."""
    from conftest import cli_env  # conftest imports this module: import it when the fixture runs

    return cli_env(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
