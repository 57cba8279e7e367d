"""Hub push: the card is built from a real run's manifest, the uploaded files are exactly the stage's
rows, rejects, funnel, report and card, and the push stops at the hub client with a typed error
(HF_HUB_OFFLINE=1 from conftest: nothing ever leaves the machine)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import cli_env, read_jsonl, synthkd_cmd
from synthkd.hub import HubError, dataset_card, dataset_files, push_stage_dataset, push_student

PRICE_IN, PRICE_OUT = 1000.0, 2000.0  # USD per 1M tokens: large enough to show in a $x.xxxx card


def _real_run(tmp_path: Path, make_server) -> tuple[Path, dict]:
    """Run a two-stage pipeline (teacher -> dedup) against the test server; (run dir, server stats)."""
    srv = make_server()
    with open(tmp_path / "in.jsonl", "w") as f:
        for i in range(8):  # q6 and q7 repeat the prompts of q0 and q1: the clean stage drops them
            f.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i % 6}: what is {i % 6} squared?"}) + "\n")
    (tmp_path / "prices.json").write_text(json.dumps({"test-model": {"input": PRICE_IN, "output": PRICE_OUT}}))
    (tmp_path / "p.yaml").write_text(
        f"name: r1\nteacher: {{model: test-model, base_url: '{srv.base_url}', concurrency: 1, prices: prices.json}}\n"
        "stages:\n  - {name: gen, kind: complete, input: in.jsonl}\n"
        "  - {name: clean, kind: clean, input: gen, options: {ops: [{op: exact_dedup, fields: [prompt]}]}}\n")
    res = subprocess.run(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return tmp_path / "runs" / "r1", srv.stats()


def test_card_records_teacher_cost_filters_and_config(tmp_path, make_server):
    # weak-test fix: the card is built from a real run's manifest, not a hand-written one
    run, stats = _real_run(tmp_path, make_server)
    manifest = json.loads((run / "manifest.json").read_text())
    assert stats["by_endpoint"]["/v1/completions"] == 6  # two prompts repeat: answered from the cache
    cost = (stats["usage"]["prompt_tokens"] * PRICE_IN + stats["usage"]["completion_tokens"] * PRICE_OUT) / 1e6
    assert manifest["stages"]["gen"]["teacher"]["cost_usd"] == pytest.approx(cost)
    card = dataset_card(run, "clean")
    assert card.startswith("---\ntags: [synthkd, distillation, synthetic]\npretty_name: r1 / clean\n---\n")
    assert "- teacher: `test-model`" in card and f"- teacher cost of the whole run: ${cost:.4f}" in card and cost > 0.01
    assert f"- config hash: `{manifest['config_hash']}`" in card
    assert "| gen | complete | 8 | 8 | - |" in card
    assert "| clean | clean | 8 | 6 | exact_dedup: exact duplicate 2 |" in card, card
    block = card.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == {"name": "clean", "kind": "clean", "input": "gen",
                                 "options": {"ops": [{"op": "exact_dedup", "fields": ["prompt"]}]}}
    with pytest.raises(KeyError, match="no stage 'nope' in the manifest"):
        dataset_card(run, "nope")


def test_dataset_push_files_are_the_stage_rows_rejects_funnel_report_and_card(tmp_path, make_server):
    # audit mutant 24: the stage's rows must be what is uploaded as data.jsonl
    run, _ = _real_run(tmp_path, make_server)
    files = dataset_files(run, "clean")
    assert sorted(files) == ["README.md", "clean.funnel.md", "clean.rejects.jsonl", "data.jsonl", "report.md"]
    assert files["data.jsonl"] == run / "clean.jsonl"
    assert [r["id"] for r in read_jsonl(files["data.jsonl"])] == [f"q{i}" for i in range(6)]
    assert [r["id"] for r in read_jsonl(files["clean.rejects.jsonl"])] == ["q6", "q7"]
    assert files["clean.funnel.md"] == run / "clean.funnel.md"
    assert files["report.md"] == (run / "report.md").read_bytes()  # nothing in it needed rewriting
    assert files["README.md"] == dataset_card(run, "clean").encode()
    gen = dataset_files(run, "gen")  # a stage without a funnel: rows, rejects (empty), report, card
    assert sorted(gen) == ["README.md", "data.jsonl", "gen.rejects.jsonl", "report.md"]
    assert gen["data.jsonl"].read_bytes() == (run / "gen.jsonl").read_bytes()
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such stage output"):
        dataset_files(run, "nope")
    with pytest.raises(ValueError, match=r"'\.\./r1/gen' is not a plain name"):
        dataset_files(run, "../r1/gen")


@pytest.mark.train  # huggingface_hub comes with the [train] extra
def test_push_stops_at_the_hub_client_with_a_typed_error(tmp_path, make_server):
    from huggingface_hub.errors import OfflineModeIsEnabled

    # weak-test fix: the exact error, not any Exception
    run, _ = _real_run(tmp_path, make_server)
    with pytest.raises(HubError) as ei:
        push_stage_dataset(run, "clean", "someone/some-dataset", token="hf_fake", endpoint="http://127.0.0.1:9")
    assert str(ei.value).startswith("could not push to someone/some-dataset on http://127.0.0.1:9: OfflineModeIsEnabled: ")
    assert isinstance(ei.value.__cause__, OfflineModeIsEnabled)
    res = subprocess.run(synthkd_cmd("push", str(run), "clean", "someone/x"), env=cli_env(HF_HUB_OFFLINE="1"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 4 and res.stderr.startswith("error: could not push to someone/x on the Hugging Face Hub")
    assert "Traceback" not in res.stderr


@pytest.mark.train  # huggingface_hub comes with the [train] extra
def test_push_student_needs_a_trained_model_and_stops_at_the_hub(tmp_path):
    from huggingface_hub.errors import OfflineModeIsEnabled

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="clean: not a trained student"):
        push_student(run, "clean", "someone/m", token="hf_fake")
    model = run / "student"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model card"):
        push_student(run, "student", "someone/m", token="hf_fake")
    (model / "README.md").write_text("# card\n")
    with pytest.raises(HubError) as ei:
        push_student(run, "student", "someone/m", token="hf_fake", endpoint="http://127.0.0.1:9")
    assert str(ei.value).startswith("could not push to someone/m on http://127.0.0.1:9: OfflineModeIsEnabled: ")
    assert isinstance(ei.value.__cause__, OfflineModeIsEnabled)
