"""Push a run's datasets and students to the Hugging Face Hub with a card that records provenance.

Why a card: a distilled dataset is only reusable if its reader knows the teacher, the prompts, the
filters that shaped it and what it cost; the card is written from the run manifest so it cannot drift
from what actually happened.  The upload itself is `huggingface_hub.HfApi.upload_folder` (real code;
tests stop where a hub would be reached, with HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any


def dataset_card(run_dir: Path, stage: str, manifest: dict[str, Any] | None = None) -> str:
    """A dataset card (YAML front matter + Markdown) for one stage's rows."""
    manifest = manifest or json.loads((Path(run_dir) / "manifest.json").read_text())
    st = manifest.get("stages", {}).get(stage)
    if st is None:
        raise KeyError(f"{run_dir}: no stage {stage!r} in the manifest")
    cfg = manifest.get("config", {})
    teacher = (cfg.get("teacher") or {}).get("model")
    lines = ["---", "tags: [synthkd, distillation, synthetic]", f"pretty_name: {manifest.get('name')} / {stage}", "---", "",
             f"# {manifest.get('name')} — `{stage}`", "",
             f"Made with [synthkd](https://pypi.org/project/synthkd/) {manifest.get('versions', {}).get('synthkd', '')}.", "",
             "## Provenance", "", f"- teacher: `{teacher}`"]
    stages = manifest.get("stages", {})
    total_cost = sum((s.get("teacher") or {}).get("cost_usd") or 0.0 for s in stages.values())
    lines.append(f"- teacher cost of the whole run: ${total_cost:.4f}")
    lines.append(f"- config hash: `{manifest.get('config_hash', '')}`")
    lines += ["", "| stage | kind | rows in | rows out | dropped |", "|---|---|---|---|---|"]
    for name, s in stages.items():
        c = s.get("counts") or {}
        dropped = ", ".join(f"{r} {n}" for r, n in (c.get("dropped") or {}).items()) or "-"
        lines.append(f"| {name} | {s.get('kind')} | {c.get('rows_in', '-')} | {c.get('rows_out', '-')} | {dropped} |")
        if name == stage:
            break
    stage_cfg = next((x for x in cfg.get("stages", []) if x.get("name") == stage), {})
    lines += ["", "## Stage configuration", "", "```json", json.dumps(stage_cfg, indent=2), "```", ""]
    return "\n".join(lines)


def push_stage_dataset(run_dir: str | Path, stage: str, repo_id: str, *, private: bool = True,
                       token: str | None = None, endpoint: str | None = None) -> str:
    """Upload ``<stage>.jsonl`` (+ rejects, funnel report) and a README card to a dataset repo."""
    from huggingface_hub import HfApi

    run_dir = Path(run_dir)
    rows = run_dir / f"{stage}.jsonl"
    if not rows.exists():
        raise FileNotFoundError(f"{rows}: no such stage output")
    card = dataset_card(run_dir, stage)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(rows, folder / "data.jsonl")
        for extra in (f"{stage}.rejects.jsonl", f"{stage}.funnel.md", "report.md"):
            if (run_dir / extra).exists():
                shutil.copy(run_dir / extra, folder / extra)
        (folder / "README.md").write_text(card)
        api = HfApi(token=token, endpoint=endpoint)  # endpoint: a self-hosted hub, if any
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="dataset",
                                 commit_message=f"synthkd: {run_dir.name}/{stage}")
    return str(getattr(info, "commit_url", info))


def push_student(run_dir: str | Path, stage: str, repo_id: str, *, private: bool = True,
                 token: str | None = None, endpoint: str | None = None) -> str:
    """Upload a trained student (``runs/<name>/<stage>/``: weights, tokenizer, and the model card that
    training wrote with its data provenance and metrics) to a model repo; checkpoints are left out."""
    from huggingface_hub import HfApi

    folder = Path(run_dir) / stage
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a trained student (no config.json)")
    if not (folder / "README.md").exists():
        raise FileNotFoundError(f"{folder}: no model card (README.md) — was it written by synthkd train?")
    api = HfApi(token=token, endpoint=endpoint)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                             ignore_patterns=["checkpoints/*", "data/*", "*.bin", "round_*/*", "reflection/*", "model/*", "base-student/*"],  # tailor: the loop's rounds
                             commit_message=f"synthkd: {Path(run_dir).name}/{stage}")
    return str(getattr(info, "commit_url", info))
