"""Turn the published PaLM-540B chain-of-thought outputs of *Distilling step-by-step* into files that
``synthkd generate rationales --teacher replay:RECORDED`` runs on.

Why: those completions are real teacher outputs for real datasets (CQA, SVAMP, e-SNLI, ANLI-R1).
Replaying them exercises the whole method -- prompts, parsing, gold comparison, writing -- on real
data without an API, and the accuracy it reports must equal what :mod:`synthkd.answers` gives on the
same completions.

The data layout (``shared/data/distilling_step_by_step/``, see its README): ``<ds>/<ds>_<split>.json``
is jsonl, ``<ds>/llm/<split>_CoT_<n>.json`` are JSON lists of raw completions, row-aligned with it
when concatenated in ``n`` order.  For each dataset and split this writes:

* ``<ds>_<split>.input.jsonl``    -- rows with ``id`` and the method's default field names;
* ``<ds>_<split>.recorded.jsonl`` -- ``{question, completion}`` where ``question`` is exactly the text
  the built-in template inserts for the row (:meth:`TaskKind.query`), so the replay teacher finds it;
* optionally ``<ds>_<demo split>.demos.jsonl`` -- demonstrations: rows of another split whose PaLM
  answer is correct, with the PaLM rationale (answer sentence and continuation cut off).

Usage::

    python -m synthkd.data_tools.rationales_replay --dataset svamp --split test \\
        --data-dir ../shared/data --out data/dss [--demos-split train --n-demos 8] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from synthkd.answers import NLI_LABELS, safe_eval_arithmetic
from synthkd.methods.task_kinds import TaskKind, json_number, split_rationale

#: dataset -> task kind
DATASETS: dict[str, str] = {"svamp": "math", "cqa": "choice", "esnli": "nli", "anli1": "nli"}
_COT_RE = re.compile(r"_CoT_(\d+)\.json$")


def find_root(data_dir: str | Path) -> Path:
    """Accept ``shared/data`` or ``shared/data/distilling_step_by_step``."""
    d = Path(data_dir)
    return d / "distilling_step_by_step" if (d / "distilling_step_by_step").is_dir() else d


def load_split(data_dir: str | Path, dataset: str, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(raw rows, PaLM completions) of one split, checked to be row-aligned."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; one of {', '.join(DATASETS)}")
    root = find_root(data_dir) / dataset
    path = root / f"{dataset}_{split}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    files = sorted((root / "llm").glob(f"{split}_CoT_*.json"), key=lambda p: int(_COT_RE.search(p.name).group(1)))  # type: ignore[union-attr]
    if not files:
        raise FileNotFoundError(f"{root / 'llm'}: no {split}_CoT_*.json completions")
    completions: list[str] = []
    for f in files:
        completions += json.loads(f.read_text(encoding="utf-8"))
    if len(completions) != len(rows):
        raise ValueError(f"{path}: {len(rows)} rows but {len(completions)} completions in {root / 'llm'}")
    return rows, completions


def input_row(dataset: str, split: str, i: int, raw: dict[str, Any]) -> dict[str, Any]:
    """A raw dataset row in the method's default field names (question/choices/premise/hypothesis/answer)."""
    if dataset == "svamp":
        return {"id": f"svamp-{split}-{i}", "question": raw["input"],
                "answer": json_number(safe_eval_arithmetic(raw["label"])), "equation": raw["label"]}
    if dataset == "cqa":
        return {"id": raw["id"], "question": raw["question"], "choices": raw["choices"], "answer": raw["answer"],
                "human_explanation": raw.get("abstractive_explanation")}
    label = raw["label"]
    answer = NLI_LABELS[label] if isinstance(label, int) else label
    rid = raw.get("uid") or f"{dataset}-{split}-{i}"
    return {"id": rid, "premise": raw["premise"], "hypothesis": raw["hypothesis"], "answer": answer}


def convert(
    dataset: str, split: str, raw_rows: list[dict[str, Any]], completions: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(input rows, recorded {question, completion} rows) for one split."""
    spec = TaskKind(DATASETS[dataset])
    inputs = [input_row(dataset, split, i, r) for i, r in enumerate(raw_rows)]
    recorded = [{"question": spec.query(row), "completion": c} for row, c in zip(inputs, completions)]
    return inputs, recorded


def make_demos(
    dataset: str, split: str, raw_rows: list[dict[str, Any]], completions: list[str], n: int
) -> list[dict[str, Any]]:
    """The first ``n`` rows whose PaLM answer equals gold and whose rationale is non-empty, with that rationale."""
    spec = TaskKind(DATASETS[dataset])
    out = []
    for i, (raw, comp) in enumerate(zip(raw_rows, completions)):
        row = input_row(dataset, split, i, raw)
        ex = spec.parse(comp, row)
        rationale = split_rationale(comp)
        if rationale and not ex.hedged and spec.same(ex.value, spec.gold(row)):
            out.append({**row, "rationale": rationale})
            if len(out) == n:
                break
    return out


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ap.add_argument("--split", required=True, help="test / train / valid (what the dataset has)")
    ap.add_argument("--data-dir", required=True, help="shared/data or shared/data/distilling_step_by_step")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--limit", type=int, default=None, help="only the first N rows")
    ap.add_argument("--demos-split", default=None, help="also write demonstrations from this split's correct PaLM rationales")
    ap.add_argument("--n-demos", type=int, default=8, help="how many demonstrations to write")
    a = ap.parse_args(argv)
    try:
        raw, comps = load_split(a.data_dir, a.dataset, a.split)
        if a.limit is not None:
            raw, comps = raw[: a.limit], comps[: a.limit]
        inputs, recorded = convert(a.dataset, a.split, raw, comps)
        out = Path(a.out)
        in_path = out / f"{a.dataset}_{a.split}.input.jsonl"
        rec_path = out / f"{a.dataset}_{a.split}.recorded.jsonl"
        _write(in_path, inputs)
        _write(rec_path, recorded)
        print(f"wrote {len(inputs)} rows to {in_path} and {rec_path}")
        demos_arg = ""
        if a.demos_split:
            draw, dcomps = load_split(a.data_dir, a.dataset, a.demos_split)
            demos = make_demos(a.dataset, a.demos_split, draw, dcomps, a.n_demos)
            d_path = out / f"{a.dataset}_{a.demos_split}.demos.jsonl"
            _write(d_path, demos)
            print(f"wrote {len(demos)} demonstrations to {d_path}")
            demos_arg = f" --demos {d_path} --n-demos {min(4, len(demos))}"
        else:
            demos_arg = " --n-demos 0"
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run: synthkd generate rationales --kind {DATASETS[a.dataset]} --input {in_path} "
          f"--output {out / (a.dataset + '_' + a.split + '.rationales.jsonl')} --teacher replay:{rec_path}{demos_arg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
