"""Decontamination: drop rows whose input shares a long word n-gram (13 by default, as in the GPT-3
and Llama reports) with an item of an evaluation set, or (optionally) is a MinHash near-duplicate of one.

Why both checks: a long shared n-gram catches copies and partial copies (an eval question pasted
into a longer prompt); the near-duplicate check catches light rewrites (numbers changed, words
swapped) that break every 13-gram.  Texts are compared in the normalised word form of
:mod:`synthkd.filters.text` (case, Unicode form and punctuation ignored).  A text shorter than the
n-gram size counts as one n-gram of all its words (so a short eval question matches a row that is
that same question, not any row containing it).

The eval set is small and read whole at start-up; an empty one is an error (a decontamination that
checks against nothing would silently pass everything).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from synthkd.errors import ConfigError
from synthkd.filters.base import BatchOperator, OpConfig, Reject
from synthkd.filters.text import FieldProblem, clip, text_of, words
from synthkd.jsonl_io import MAX_REPORTED_ERRORS, InputError
from synthkd.row_source import iter_rows, source_kind


class DecontaminateConfig(OpConfig):
    op: str = "decontaminate"
    eval_file: Path = Field(..., description="The evaluation set: .jsonl, a .json list (of objects or strings), .txt (one item per line), or any table synthkd reads (.csv, .tsv, .parquet, a datasets directory, hf:org/name:split).")
    fields: list[str] = Field(["input"], description="Row fields checked (joined).")
    eval_fields: list[str] | None = Field(None, description="Eval item fields (default: the same as fields).")
    eval_id_field: str = Field("id", description="Eval item id field for reports (default: its position).")
    ngram: int = Field(13, ge=1, le=64, description="N-gram size in words.")
    near_dup_threshold: float | None = Field(None, gt=0, le=1, description="Also drop rows whose MinHash Jaccard with an eval item reaches this (off when unset).")
    near_dup_ngram: int = Field(1, ge=1, le=8, description="Shingle size of the near-duplicate check.")


def _read_eval(path: Path) -> list[tuple[int, Any]]:
    """(line or position, item) pairs; items are dicts or strings.  CSV/TSV, Parquet, a dataset directory
    or an ``hf:`` data set are read by synthkd's row reader (:mod:`synthkd.row_source`: ids from positions
    where there is no id column)."""
    if source_kind(path) not in ("jsonl", "json"):
        return list(iter_rows(path))
    if not path.is_file():
        raise ConfigError(f"{path}: evaluation set not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # some ".json" files are jsonl (e.g. distilling-step-by-step's)
        if isinstance(data, list):
            return list(enumerate(data, 1))
        if data is not None:
            raise InputError([f"{path}: expected a JSON list of items"])
    out = []
    for i, ln in enumerate(text.splitlines(), 1):
        if ln.strip():
            try:
                out.append((i, json.loads(ln)))
            except json.JSONDecodeError as exc:
                raise InputError([f"{path}:{i}: not valid JSON ({exc})"]) from None
    return out


class Decontaminate(BatchOperator):
    op = "decontaminate"
    Config = DecontaminateConfig
    summary = "Drop rows that share a long n-gram with (or are near duplicates of) an evaluation-set item."

    def __init__(self, config: DecontaminateConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.grams: dict[int, int] = {}  # n-gram hash -> eval item number
        self.eval_ids: list[Any] = []
        self.eval_previews: list[str] = []
        self.near: Any = None  # a NearDupIndex once setup() ran with near_dup_threshold
        self.hit_items: set[int] = set()
        self.batch_size = 1024

    def needs(self) -> list[tuple[str, ...]]:
        return [(f,) for f in self.cfg.fields]

    def _grams(self, ws: list[str]) -> list[tuple[int, int]]:
        """(hash, start word) of each n-gram."""
        n = self.cfg.ngram
        if len(ws) < n:
            return [(hash(tuple(ws)), 0)] if ws else []
        return [(hash(tuple(ws[i:i + n])), i) for i in range(len(ws) - n + 1)]

    async def setup(self) -> None:
        c = self.cfg
        fields = c.eval_fields or c.fields
        items = _read_eval(c.eval_file)
        problems: list[str] = []
        word_lists: list[list[str]] = []
        for pos, item in items:
            if len(problems) >= MAX_REPORTED_ERRORS:  # checked before each item: a run of bad items stops too
                break
            if isinstance(item, str):
                text = item
            elif isinstance(item, dict):
                try:
                    text = "\n".join(text_of(item, f) for f in fields)
                except FieldProblem as exc:
                    problems.append(f"{c.eval_file}:{pos}: {exc}")
                    continue
                pos = item.get(c.eval_id_field, pos)
            else:
                problems.append(f"{c.eval_file}:{pos}: expected an object or a string")
                continue
            ws = words(text)
            if not ws:
                continue
            k = len(self.eval_ids)
            self.eval_ids.append(pos)
            self.eval_previews.append(clip(text, 80))
            for h, _ in self._grams(ws):
                self.grams.setdefault(h, k)
            word_lists.append(ws)
        if problems:
            raise InputError(problems)
        if not self.eval_ids:
            raise ConfigError(f"{c.eval_file}: the evaluation set has no items with text in {fields} — "
                              "nothing to decontaminate against")
        if c.near_dup_threshold is not None:
            from synthkd.filters.minhash import NearDupIndex

            self.near = NearDupIndex(c.near_dup_threshold, ngram=c.near_dup_ngram)
            for i in range(0, len(word_lists), 4096):
                self.near.add(word_lists[i:i + 4096])

    def check_batch(self, rows: list[dict[str, Any]]) -> list[Reject | None]:
        out: list[Reject | None] = [None] * len(rows)
        todo: list[int] = []
        wl: list[list[str]] = []
        n = self.cfg.ngram
        for i, row in enumerate(rows):
            try:
                ws = words("\n".join(self.text(row, f) for f in self.cfg.fields))
            except FieldProblem as exc:
                out[i] = self.field_problem(row, exc)
                continue
            for h, start in self._grams(ws):
                k = self.grams.get(h)
                if k is not None:
                    self.hit_items.add(k)
                    gram = " ".join(ws[start:start + n])
                    out[i] = Reject(f"shares {n}-gram with eval set",
                                    f"{clip(gram, 100)!r} (eval item {self.eval_ids[k]!r})")
                    break
            else:
                todo.append(i)
                wl.append(ws)
        if self.near is not None and todo:
            for i, m in zip(todo, self.near.query(wl)):
                if m.item >= 0:
                    self.hit_items.add(m.item)
                    out[i] = Reject("near duplicate of eval item",
                                    f"J≈{m.jaccard:.2f} with eval item {self.eval_ids[m.item]!r}: “{self.eval_previews[m.item]}”")
        return out

    def report(self) -> dict[str, Any]:
        return {"eval_file": str(self.cfg.eval_file), "eval_items": len(self.eval_ids),
                "eval_items_matched": len(self.hit_items), "ngram": self.cfg.ngram,
                "near_dup_threshold": self.cfg.near_dup_threshold}
