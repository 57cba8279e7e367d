"""Push a run's datasets and students to the Hugging Face Hub with a card that records provenance.

Why a card: a distilled dataset is only reusable if its reader knows the teacher, the prompts, the
filters that shaped it and what it cost; the card is written from the run manifest so it cannot drift
from what actually happened.

What is uploaded is decided by :func:`dataset_files` / :func:`student_files` (pure functions, tested
file by file); the upload is one ``HfApi.create_commit`` of exactly those files.  Nothing uploaded
carries a credential (the manifest's config is the redacted, unexpanded one) or an absolute local path
(rewritten relative to the run directory, the working directory or ``~``).
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
from pathlib import Path
from typing import Any

from synthkd.errors import HubError, InputError, UnknownStageError  # noqa: F401 (re-exported: their home was here)

#: files of a student directory that are not uploaded (training leftovers, the tailored loop's rounds)
STUDENT_IGNORE = ["checkpoints/*", "data/*", "*.bin", "round_*/*", "reflection/*", "model/*", "base-student/*",
                  ".*", "*/.*"]
#: text files of a student directory rewritten without absolute paths before upload
_STUDENT_TEXT = ("README.md", "synthkd_train.json")


def dataset_card(run_dir: Path, stage: str, manifest: dict[str, Any] | None = None) -> str:
    """A dataset card (YAML front matter + Markdown) for one stage's rows."""
    from synthkd.config import redact_secrets

    manifest = manifest or json.loads((Path(run_dir) / "manifest.json").read_text())
    stages = manifest.get("stages", {})
    st = stages.get(stage)
    if st is None:
        raise UnknownStageError(f"{run_dir}: no stage {stage!r} in the manifest")
    cfg = manifest.get("config", {})
    # the model that answered (recorded by the stage), not the config's possibly ${VAR} spelling
    teacher = ((st.get("teacher") or {}).get("model")
               or next(((s.get("teacher") or {}).get("model") for s in stages.values() if (s.get("teacher") or {}).get("model")), None)
               or (cfg.get("teacher") or {}).get("model"))
    lines = ["---", "tags: [synthkd, distillation, synthetic]", f"pretty_name: {manifest.get('name')} / {stage}", "---", "",
             f"# {manifest.get('name')} — `{stage}`", "",
             f"Made with [synthkd](https://pypi.org/project/synthkd/) {manifest.get('versions', {}).get('synthkd', '')}.", "",
             "## Provenance", "", f"- teacher: `{teacher}`"]
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
    stage_cfg = next((x for x in cfg.get("stages", []) if isinstance(x, dict) and x.get("name") == stage), {})
    lines += ["", "## Stage configuration", "", "```json", json.dumps(redact_secrets(stage_cfg), indent=2), "```", ""]
    return "\n".join(lines)


#: the directory part of an absolute POSIX path (not of a URL, a ratio or a relative path)
_ABS_DIRS = re.compile(r"(?<![\w.~:/-])/(?:[^\s/`'\"|()\[\]<>{},]+/)+")


def relative_paths(text: str, run_dir: Path) -> str:
    """``text`` with no absolute local path (they name users and machines): paths under the run
    directory's parent, the working directory or home become relative; any other absolute path
    keeps only its file name."""
    run_dir = Path(run_dir).resolve()
    for prefix, repl in ((run_dir.parent, ""), (Path.cwd().resolve(), ""), (Path.home().resolve(), "~/")):
        if str(prefix) not in ("/", ""):
            text = text.replace(str(prefix) + os.sep, repl)
    return _ABS_DIRS.sub("", text)


def dataset_files(run_dir: str | Path, stage: str) -> dict[str, bytes | Path]:
    """``{path in repo: file or content}`` of a stage's dataset push: ``data.jsonl`` (the stage's rows),
    its rejects and funnel report when present, the run report, and the ``README.md`` card."""
    from synthkd.config import check_name

    run_dir = Path(run_dir)
    check_name(stage)  # a plain name: never a path out of the run directory
    rows = run_dir / f"{stage}.jsonl"
    if not rows.is_file():
        raise FileNotFoundError(f"{rows}: no such stage output")
    files: dict[str, bytes | Path] = {"data.jsonl": rows}
    for extra in (f"{stage}.rejects.jsonl", f"{stage}.funnel.md"):
        if (run_dir / extra).is_file():
            files[extra] = run_dir / extra
    if (run_dir / "report.md").is_file():
        files["report.md"] = relative_paths((run_dir / "report.md").read_text(encoding="utf-8"), run_dir).encode()
    files["README.md"] = relative_paths(dataset_card(run_dir, stage), run_dir).encode()
    return files


def student_files(run_dir: str | Path, stage: str) -> dict[str, bytes | Path]:
    """``{path in repo: file or content}`` of a student push: the trained model directory without
    checkpoints, training data or loop rounds; its card and training record without local paths."""
    from synthkd.config import check_name

    check_name(stage)
    folder = Path(run_dir) / stage
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a trained student (no config.json)")
    if not (folder / "README.md").exists():
        raise FileNotFoundError(f"{folder}: no model card (README.md) — was it written by synthkd train?")
    files: dict[str, bytes | Path] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or any(fnmatch.fnmatch(rel, pat) for pat in STUDENT_IGNORE):
            continue
        files[rel] = relative_paths(p.read_text(encoding="utf-8"), Path(run_dir)).encode() if rel in _STUDENT_TEXT else p
    return files


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What the hub client raises when the hub is offline, unreachable or refuses (OSError covers
    huggingface_hub's own errors and requests'; the HTTP library's base error covers the rest)."""
    errs: list[type[BaseException]] = [OSError]
    for mod in ("httpx2", "httpx"):
        try:
            errs.append(importlib.import_module(mod).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errs)


def _commit(files: dict[str, bytes | Path], repo_id: str, repo_type: str, message: str, *, private: bool,
            token: str | None, endpoint: str | None) -> str:
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
    except ImportError as exc:  # a setup problem, said in one line (exit 2), not a traceback
        raise InputError([f"synthkd push needs huggingface_hub ({exc}): pip install 'synthkd[train]'"]) from None

    api = HfApi(token=token, endpoint=endpoint)  # endpoint: a self-hosted hub, if any
    ops = [CommitOperationAdd(path_in_repo=k, path_or_fileobj=v if isinstance(v, bytes) else str(v))
           for k, v in files.items()]
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.create_commit(repo_id=repo_id, repo_type=repo_type, operations=ops, commit_message=message)
    except _transport_errors() as exc:
        where = endpoint or "the Hugging Face Hub"
        raise HubError(f"could not push to {repo_id} on {where}: {type(exc).__name__}: {exc}") from exc
    return str(getattr(info, "commit_url", info))


def push_stage_dataset(run_dir: str | Path, stage: str, repo_id: str, *, private: bool = True,
                       token: str | None = None, endpoint: str | None = None) -> str:
    """Upload ``<stage>.jsonl`` (+ rejects, funnel report) and a README card to a dataset repo."""
    files = dataset_files(run_dir, stage)
    return _commit(files, repo_id, "dataset", f"synthkd: {Path(run_dir).name}/{stage}", private=private,
                   token=token, endpoint=endpoint)


def push_student(run_dir: str | Path, stage: str, repo_id: str, *, private: bool = True,
                 token: str | None = None, endpoint: str | None = None) -> str:
    """Upload a trained student (``runs/<name>/<stage>/``: weights, tokenizer, and the model card that
    training wrote with its data provenance and metrics) to a model repo; checkpoints are left out."""
    files = student_files(run_dir, stage)
    return _commit(files, repo_id, "model", f"synthkd: {Path(run_dir).name}/{stage}", private=private,
                   token=token, endpoint=endpoint)
