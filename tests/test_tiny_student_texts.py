"""The tiny student's tokenizer is trained on what the student reads, never on a row's provenance.

Found running the demo twice: the same seed gave another table when the teacher's answers came from the
request cache, because each row's ``cached`` flag ("True"/"False") was among the texts the tokenizer's
BPE merges were counted on."""

from __future__ import annotations

import json

import pytest

from synthkd.train.sft import build_tiny_student_from

pytestmark = pytest.mark.train  # builds tokenizers and models with transformers


def _rows(cached: bool, latency: float) -> list[dict]:
    return [{"id": f"r{i}", "input": f"Tom has {i} pens and buys {i + 3} more. How many pens?",
             "rationale": f"{i} + {i + 3} = {2 * i + 3}.", "answer": 2 * i + 3, "cached": cached,
             "latency_s": latency * i, "teacher": "simulated-careful"} for i in range(60)]


def _merges(tmp_path, name: str, rows: list[dict]) -> list:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    where = build_tiny_student_from([path], tmp_path / name)
    return json.loads((where / "tokenizer.json").read_text())["model"]["merges"]


def test_a_rerun_from_the_cache_builds_the_same_tokenizer(tmp_path):
    first = _merges(tmp_path, "first", _rows(cached=False, latency=0.137))
    rerun = _merges(tmp_path, "rerun", _rows(cached=True, latency=0.0))
    assert first == rerun
    # ... and the tokenizer does follow the content: other rationales, other merges
    other = [{**r, "rationale": f"Adding them: {r['answer']} pens in all, Tom counts."} for r in _rows(False, 0.1)]
    assert _merges(tmp_path, "other", other) != first
