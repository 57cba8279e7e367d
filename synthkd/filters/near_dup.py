"""Near-duplicate removal with MinHash-LSH: drop a row whose estimated Jaccard similarity with an
earlier *kept* row reaches ``threshold``.

Shingles are word n-grams of the normalised text (NFKC, case-folded, punctuation dropped).  The
default is single words (``ngram: 1``) at ``threshold: 0.8``: on ~50-word rows a change of 1–3 words
keeps the word-set Jaccard above ~0.87, while it takes word 2-grams down to ~0.63 (measured on the
benchmark's planted duplicates), so n-grams would need a much lower threshold to see such
near-copies.  Use ``ngram: 3``–``5`` for long documents, where word order matters more than single
words.

Memory: no text is kept — per kept row a 64-byte sketch, 8 bytes per band and its packed id (see
:mod:`synthkd.filters.minhash` for the design and why it does not use datasketch's ``MinHashLSH``
storage).  Rows whose text has no word are kept and not indexed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from synthkd.filters.base import BatchOperator, OpConfig, Reject
from synthkd.filters.text import FieldProblem, words


class NearDupConfig(OpConfig):
    op: str = "near_dup"
    field: str = Field("text", description="The text field compared.")
    threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard similarity at or above which a row is a near duplicate.")
    ngram: int = Field(1, ge=1, le=8, description="Shingle size in words (1: word sets).")
    num_perm: int = Field(128, ge=16, le=1024, multiple_of=2, description="MinHash permutations (even).")
    bands: int | None = Field(None, ge=1, description="LSH bands (default: chosen for the threshold, favouring recall).")
    rows: int | None = Field(None, ge=1, description="Signature values per band (with bands).")
    seed: int = Field(1, description="MinHash permutation seed.")
    batch_size: int = Field(2048, ge=1, le=1 << 16, description="Rows hashed together (vectorised).")
    remember_ids: bool = Field(True, description="Keep kept rows' ids to name the matched row in rejects.")

    @model_validator(mode="after")
    def _bands_rows(self) -> "NearDupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both 'bands' and 'rows', or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:  # type: ignore[operator]
            raise ValueError(f"bands × rows must be at most num_perm ({self.num_perm})")
        return self


class NearDup(BatchOperator):
    op = "near_dup"
    Config = NearDupConfig
    summary = "Drop rows that are near duplicates (MinHash-LSH, Jaccard ≥ threshold) of an earlier kept row."

    def __init__(self, config: NearDupConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.batch_size = config.batch_size
        from synthkd.filters.minhash import NearDupIndex

        self.index = NearDupIndex(config.threshold, config.num_perm, config.ngram, config.seed,
                                  config.bands, config.rows)
        from synthkd.filters.compact import IdStore

        self.ids = IdStore()
        self.no_words = 0

    def needs(self) -> list[tuple[str, ...]]:
        return [(self.cfg.field,)]

    def check_batch(self, rows: list[dict[str, Any]]) -> list[Reject | None]:
        out: list[Reject | None] = [None] * len(rows)
        word_lists: list[list[str]] = []
        pos: list[int] = []
        for i, row in enumerate(rows):
            try:
                ws = words(self.text(row, self.cfg.field))
            except FieldProblem as exc:
                out[i] = self.field_problem(row, exc)
                continue
            if not ws:
                self.no_words += 1
            word_lists.append(ws)
            pos.append(i)
        if not word_lists:
            return out
        matches, items = self.index.check_and_add(word_lists)
        remember = self.cfg.remember_ids
        for j, (i, m) in enumerate(zip(pos, matches)):
            if m.item >= 0:
                other = f"id {self.ids[m.item]!r}" if remember else f"kept row #{m.item}"
                out[i] = Reject("near duplicate", f"J≈{m.jaccard:.2f} with {other}")
            elif remember and items[j] >= 0:
                self.ids.append(self.row_id(rows[i]))
        return out

    def report(self) -> dict[str, Any]:
        return {"indexed_rows": self.index.store.size, "bands": self.index.bands, "rows_per_band": self.index.rows,
                "index_and_sketches_mb": round(self.index.nbytes / 1e6, 1), "ids_mb": round(self.ids.nbytes / 1e6, 1),
                "rows_without_words": self.no_words}
