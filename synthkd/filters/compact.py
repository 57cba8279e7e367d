"""Compact per-row memory for the streaming dedup operators: ids as packed bytes, 64-bit hashes in
sorted numpy runs.

Why: a million Python ``str`` ids in a list cost ~60 MB and a million-entry ``dict[int, str]`` ~130
MB; packed as JSON bytes with an offset array they cost ~15 MB, and a sorted ``uint64`` array costs
8 bytes a hash.  This is what lets dedup over 10^6 rows stay well below the size of their text.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np
import orjson


class IdStore:
    """Append-only list of row ids (any JSON value), stored as concatenated JSON bytes."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("Q")

    def __len__(self) -> int:
        return len(self._ends)

    def append(self, row_id: Any) -> int:
        self._blob += orjson.dumps(row_id)
        self._ends.append(len(self._blob))
        return len(self._ends) - 1

    def __getitem__(self, i: int) -> Any:
        start = self._ends[i - 1] if i else 0
        return orjson.loads(bytes(self._blob[start : self._ends[i]]))

    @property
    def nbytes(self) -> int:
        return len(self._blob) + self._ends.itemsize * len(self._ends)


class HashRuns:
    """A set of 64-bit hashes, each with a 32-bit value (e.g. an IdStore index), in sorted runs merged
    as they grow (log-structured: a merge of two sorted runs is one linear timsort pass)."""

    def __init__(self) -> None:
        self.keys: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.size = 0

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in zip(self.keys, self.vals))

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """The value stored for each hash, or -1."""
        out = np.full(hashes.size, -1, dtype=np.int64)
        for k, v in zip(self.keys, self.vals):
            pos = np.searchsorted(k, hashes)
            pos_c = np.minimum(pos, k.size - 1)
            hit = (k[pos_c] == hashes) & (out < 0)
            out[hit] = v[pos_c[hit]]
        return out

    def add(self, hashes: np.ndarray, values: np.ndarray) -> None:
        if hashes.size == 0:
            return
        order = np.argsort(hashes, kind="stable")
        self.keys.append(hashes[order])
        self.vals.append(values.astype(np.uint32)[order])
        self.size += hashes.size
        while len(self.keys) >= 2 and self.keys[-2].size <= 2 * self.keys[-1].size:
            k2, v2 = self.keys.pop(), self.vals.pop()
            k1, v1 = self.keys.pop(), self.vals.pop()
            k = np.concatenate([k1, k2])
            del k1, k2
            order = np.argsort(k, kind="stable")
            self.keys.append(k[order])
            del k
            v = np.concatenate([v1, v2])
            del v1, v2
            self.vals.append(v[order])
