"""The model card (README.md) and the provenance record of a trained student.

Why: a distilled student is only as trustworthy as its data.  The card says which teacher wrote the
rows, how many rows went in (and how many were skipped and why), what they cost, which prompt
templates and filters made them, how the student was trained, and what it scored — so a number in a
report can always be traced back to the run that produced it.

Provenance comes from the rows themselves (``model``/``teacher``, ``cost_usd``, ``template`` /
``template_sha``, ``filters``, ``method`` fields when present), from a ``<rows>.summary.json`` or
``<rows>.manifest.json`` next to the rows file when one exists, and from ``--provenance FILE``
(JSON or YAML, merged in as given).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

TEACHER_FIELDS = ("teacher", "model")
FILTER_FIELDS = ("filters", "filter", "passed_filters", "clean")
METHOD_FIELDS = ("method", "generator")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _counter_top(c: Counter, n: int = 10) -> dict[str, int]:
    return {str(k): v for k, v in c.most_common(n)}


def rows_provenance(path: str | Path, rows: Iterable[dict[str, Any]], *, skipped: int = 0) -> dict[str, Any]:
    """Teacher, cost, templates, filters and methods found in the rows used for training."""
    path = Path(path)
    teachers: Counter = Counter()
    templates: Counter = Counter()
    filters: Counter = Counter()
    methods: Counter = Counter()
    cost, cost_rows, n = 0.0, 0, 0
    for r in rows:
        n += 1
        for f in TEACHER_FIELDS:
            if isinstance(r.get(f), str):
                teachers[r[f]] += 1
                break
        c = r.get("cost_usd")
        if isinstance(c, (int, float)) and not isinstance(c, bool):
            cost += float(c)
            cost_rows += 1
        t = r.get("template")
        if isinstance(t, str):
            templates[f"{t}@{str(r.get('template_sha', ''))[:12]}" if r.get("template_sha") else t] += 1
        for f in FILTER_FIELDS:
            v = r.get(f)
            if isinstance(v, str):
                filters[v] += 1
            elif isinstance(v, list):
                for x in v:
                    filters[str(x)] += 1
            elif isinstance(v, dict):
                for k in v:
                    filters[str(k)] += 1
        for f in METHOD_FIELDS:
            if isinstance(r.get(f), str):
                methods[r[f]] += 1
                break
    prov: dict[str, Any] = {
        "rows_file": str(path),
        "rows_sha256": file_sha256(path) if path.exists() else None,
        "rows_used": n,
        "rows_skipped": skipped,
        "teachers": _counter_top(teachers),
        "teacher_cost_usd": round(cost, 6) if cost_rows else None,
        "rows_with_cost": cost_rows,
        "templates": _counter_top(templates),
        "filters": _counter_top(filters),
        "methods": _counter_top(methods),
    }
    for suffix in (".summary.json", ".manifest.json"):
        side = path.with_name(path.name.rsplit(".", 1)[0] + suffix)
        if side.exists():
            try:
                prov[f"sidecar{suffix[:-5]}"] = json.loads(side.read_text())
            except ValueError:
                prov[f"sidecar{suffix[:-5]}"] = f"{side}: not valid JSON"
    return prov


def load_extra_provenance(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    from synthkd.jsonl_io import InputError

    p = Path(path)
    if not p.exists():
        raise InputError([f"{p}: provenance file not found"])
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the same user error
        raise InputError([f"{p}: could not parse provenance ({exc})"]) from None
    if not isinstance(data, dict):
        raise InputError([f"{p}: provenance must be a mapping"])
    return data


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} ({x})" for k, x in v.items()) or "none recorded"
    if v is None:
        return "not recorded"
    return str(v)


def render_card(record: dict[str, Any]) -> str:
    """Markdown card with a small YAML header (model-index style tags)."""
    train = record.get("training", {})
    prov = record.get("data", {})
    metrics = record.get("metrics", {})
    evals = record.get("evaluations", [])
    lines = [
        "---",
        "library_name: transformers",
        "tags: [synthkd, distillation, trl, " + str(record.get("kind", "sft")) + "]",
        f"base_model: {record.get('student')}",
        "---",
        "",
        f"# {Path(str(record.get('output', 'student'))).name}",
        "",
        f"Student distilled with synthkd ({record.get('kind', 'sft').upper()}"
        + (f", mode `{record['mode']}`" if record.get("mode") else "") + f") from `{record.get('student')}`.",
        "",
        "## How to prompt it",
        "",
        f"* prompt format: {'the chat template of the tokenizer' if record.get('chat_template') else 'the plain format (`### Input:` / `### Response:`)'}",
        f"* inference prefix: `{record.get('inference_prefix', '')!s}`" if record.get("inference_prefix") else "* inference prefix: none",
        "* evaluate: `synthkd eval --student THIS_DIR --input TEST.jsonl --kind number|choice|label`",
        "",
        "## Data provenance",
        "",
        "| item | value |",
        "|---|---|",
    ]
    for key, label in (("rows_file", "rows file"), ("rows_sha256", "rows sha256"), ("rows_used", "rows used"),
                       ("rows_skipped", "rows skipped"), ("examples", "training examples"),
                       ("eval_examples", "eval examples"), ("teachers", "teacher(s)"),
                       ("teacher_cost_usd", "teacher cost (USD, sum of row costs)"), ("templates", "prompt templates"),
                       ("filters", "filters"), ("methods", "generation methods")):
        if key in prov:
            value = Path(str(prov[key])).name if key == "rows_file" and prov[key] else prov[key]
            lines.append(f"| {label} | {_fmt(value)} |")  # a file name, not a local path (the card is pushed)
    extra = {k: v for k, v in prov.items() if k.startswith("sidecar") or k == "extra"}
    for k, v in extra.items():
        lines.append(f"| {k} | `{json.dumps(v, default=str)[:400]}` |")
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    for k, v in train.items():
        lines.append(f"| {k} | {'default' if v is None else _fmt(v)} |")
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    for k, v in metrics.items():
        lines.append(f"| {k} | {_fmt(v)} |")
    for ev in evals:
        lines += ["", f"### Evaluation on `{Path(str(ev.get('input'))).name}`", "", ev.get("markdown", "")]
    lines.append("")
    return "\n".join(lines)


def write_card(out_dir: str | Path, record: dict[str, Any]) -> Path:
    p = Path(out_dir) / "README.md"
    p.write_text(render_card(record))
    return p
