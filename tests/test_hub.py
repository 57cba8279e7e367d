"""Hub push: the card records provenance from the manifest; the upload goes as far as the hub client."""

from __future__ import annotations

import json

import pytest

from synthkd.hub import dataset_card, push_stage_dataset


def _run_dir(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "clean.jsonl").write_text('{"id": 1, "text": "a"}\n')
    manifest = {
        "name": "r1", "config_hash": "abc123", "versions": {"synthkd": "0.1.0"},
        "config": {"teacher": {"model": "gpt-4o-mini"}, "stages": [{"name": "gen", "kind": "generate.rationales"},
                                                                  {"name": "clean", "kind": "clean"}]},
        "stages": {
            "gen": {"kind": "generate.rationales", "counts": {"rows_in": 10, "rows_out": 10},
                    "teacher": {"cost_usd": 0.25}},
            "clean": {"kind": "clean", "counts": {"rows_in": 10, "rows_out": 7, "dropped": {"consistency: wrong answer": 3}}},
        },
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_card_records_teacher_cost_filters_and_config(tmp_path):
    card = dataset_card(_run_dir(tmp_path), "clean")
    assert "teacher: `gpt-4o-mini`" in card and "$0.2500" in card
    assert "| clean | clean | 10 | 7 | consistency: wrong answer 3 |" in card
    assert '"kind": "clean"' in card and card.startswith("---\ntags: [synthkd")
    with pytest.raises(KeyError, match="no stage 'nope'"):
        dataset_card(_run_dir(tmp_path / "x"), "nope")


def test_push_goes_as_far_as_the_hub_client(tmp_path):
    """The endpoint is a closed loopback port: the real client builds and sends its request there and fails."""
    run = _run_dir(tmp_path)
    with pytest.raises(Exception) as ei:
        push_stage_dataset(run, "clean", "someone/some-dataset", token="hf_fake", endpoint="http://127.0.0.1:9")
    text = (str(ei.value) + repr(ei.value.__cause__) + type(ei.value).__name__).lower()
    assert "127.0.0.1" in text or "offline" in text or "connect" in text
    with pytest.raises(FileNotFoundError, match="no such stage output"):
        push_stage_dataset(run, "gen", "someone/x", token="hf_fake")


def test_push_student_needs_a_trained_model_and_stops_at_the_hub(tmp_path):
    from synthkd.hub import push_student

    run = _run_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a trained student"):
        push_student(run, "clean", "someone/m", token="hf_fake")
    model = run / "student"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model card"):
        push_student(run, "student", "someone/m", token="hf_fake")
    (model / "README.md").write_text("# card\n")
    with pytest.raises(Exception) as ei:
        push_student(run, "student", "someone/m", token="hf_fake", endpoint="http://127.0.0.1:9")
    assert not isinstance(ei.value, FileNotFoundError)  # it got as far as the hub client
