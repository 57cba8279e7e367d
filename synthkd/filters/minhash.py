"""MinHash signatures computed in numpy batches, and a compact banding (LSH) index for streaming dedup.

Why not ``datasketch.MinHash`` + ``datasketch.MinHashLSH`` row by row (measured on this project's
2-core machine, 50-word rows, 128 permutations; see ``benchmarks/clean_throughput.py``):

* one ``MinHash`` per row costs ~120 µs (object, SHA-1 per shingle, a small numpy call) and one
  ``MinHashLSH.insert`` ~60 µs more, plus a query: ~4 minutes for a million rows before any I/O,
  over the 3-minute budget;
* ``MinHashLSH`` (dict storage) keeps, per key, its band hashes as ``bytes`` objects plus a set
  entry per band: ~3 KB a row (tracemalloc, 20,000 rows), i.e. ~3 GB for a million rows.

So this module keeps **the same math** and changes only the execution:

* signatures: datasketch 2.x's default ``affine32`` scheme — each 32-bit shingle hash goes through
  the MurmurHash3 finalizer, then ``a*h + b mod 2^32`` for each of ``num_perm`` permutations whose
  ``(a, b)`` equal ``datasketch.MinHash(num_perm, seed).permutations``; the signature is the
  minimum per permutation.  Computed for a whole batch at once (a ``num_perm × shingles`` uint32
  matrix and ``np.minimum.reduceat``).  ``tests/test_filters_dedup.py`` checks that the values are
  identical to ``datasketch.MinHash(...).update_batch(...)`` on the same shingles.
* index: banding as in MinHashLSH (``bands × rows`` of the signature, a pair is a candidate when any
  band is equal), but each band key is folded to 32 bits and stored with the row number in one
  ``uint64`` (``key << 32 | row``), in sorted runs that are merged as they grow (a log-structured
  merge; ``np.sort(kind="stable")`` merges two sorted runs in linear time).  8 bytes per row and
  band: 112 MB for a million rows at 14 bands.  Lookups are ``np.searchsorted`` over the batch.
* verification: every candidate pair is checked against the threshold with an estimate of its
  Jaccard similarity from *b-bit* sketches (4 bits of a hash of each minimum, 64 bytes a row at
  128 permutations; Li & König 2010: ``J ≈ (match − 2⁻⁴)/(1 − 2⁻⁴)``, whose standard error at
  J = 0.85 is 0.033 against 0.032 for full values), so band-key collisions and the S-curve's false
  positives do not drop rows.  Texts are never kept: ~180 bytes a kept row in all.

Bands and rows are chosen for recall (see :func:`choose_bands`): candidates are verified, so a
false candidate costs a comparison, while a missed candidate is a duplicate kept.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MAX32 = np.uint32(0xFFFFFFFF)
_M32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
# odd 64-bit multipliers: position weights of an n-gram and of a band's values (fixed, so keys are stable)
_NGRAM_K = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
    dtype=np.uint64,
)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch applies it before the affine permutations)."""
    s1, m1, s2, m2, s3 = _M32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


class WordHasher:
    """64-bit hash of a word (blake2b, so it is the same in every process), cached."""

    def __init__(self, max_cache: int = 200_000) -> None:
        self._cache: dict[str, int] = {}
        self._max = max_cache

    def __call__(self, ws: Sequence[str]) -> list[int]:
        cache = self._cache
        out = [cache.get(w) for w in ws]
        if None in out:
            if len(cache) > self._max:
                cache.clear()
            for i, w in enumerate(ws):
                if out[i] is None:
                    h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                    cache[w] = h
                    out[i] = h
        return out  # type: ignore[return-value]


def ngram_hashes(word_hashes: Sequence[Sequence[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of the word n-grams of each row -> (flat uint32 array, per-row counts).

    An n-gram's hash is ``(Σ w_i·K_i mod 2^64) >> 32`` over its word hashes (order matters).  A row
    with fewer than ``n`` (but at least one) words gets one shingle: all its words.
    """
    if not 1 <= n <= len(_NGRAM_K):
        raise ValueError(f"ngram must be between 1 and {len(_NGRAM_K)}")
    lengths = np.fromiter((len(w) for w in word_hashes), dtype=np.int64, count=len(word_hashes))
    total = int(lengths.sum())
    flat = np.fromiter(itertools.chain.from_iterable(word_hashes), dtype=np.uint64, count=total)
    nrows = len(word_hashes)
    if total == 0:
        return np.empty(0, dtype=np.uint32), np.zeros(nrows, dtype=np.int64)
    with np.errstate(over="ignore"):
        if n == 1:
            return (flat >> np.uint64(32)).astype(np.uint32), lengths
        m = total - n + 1
        row_of = np.repeat(np.arange(nrows), lengths)
        ends = np.cumsum(lengths)
        if m > 0:
            acc = flat[:m] * _NGRAM_K[0]
            for i in range(1, n):
                acc += flat[i : m + i] * _NGRAM_K[i]
            pos = np.arange(m)
            valid = ends[row_of[:m]] - pos >= n
            sh = acc[valid]
            sh_rows = row_of[:m][valid]
        else:
            sh = np.empty(0, dtype=np.uint64)
            sh_rows = np.empty(0, dtype=np.int64)
        short = np.flatnonzero((lengths > 0) & (lengths < n))
        if short.size:
            starts = ends - lengths
            extra = np.empty(short.size, dtype=np.uint64)
            for j, r in enumerate(short.tolist()):
                seg = flat[starts[r] : ends[r]]
                extra[j] = (seg * _NGRAM_K[: seg.size]).sum(dtype=np.uint64)
            sh = np.concatenate([sh, extra])
            sh_rows = np.concatenate([sh_rows, short])
            order = np.argsort(sh_rows, kind="stable")
            sh, sh_rows = sh[order], sh_rows[order]
        counts = np.bincount(sh_rows, minlength=nrows).astype(np.int64)
        return (sh >> np.uint64(32)).astype(np.uint32), counts


def affine32_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` of ``datasketch.MinHash(num_perm, seed)`` (scheme affine32), computed the same way
    (``RandomState(seed)``: odd ``a``, then ``b``) without importing datasketch, which pulls in scipy
    (~45 MB and half a second at start-up).  The tests check equality with datasketch's own."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


class MinHasher:
    """Batch MinHash signatures, bit-identical to ``datasketch.MinHash`` (scheme ``affine32``)."""

    def __init__(self, num_perm: int = 128, seed: int = 1, chunk_elems: int = 1 << 22) -> None:
        a, b = affine32_permutations(num_perm, seed)
        self.num_perm = num_perm
        self.seed = seed
        self.a = np.asarray(a, dtype=np.uint32)[:, None]
        self.b = np.asarray(b, dtype=np.uint32)[:, None]
        self._chunk = max(1, chunk_elems // num_perm)  # shingles per matrix

    def signatures(self, shingles: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(rows, num_perm) uint32; a row with no shingle gets all ``0xFFFFFFFF`` (datasketch's empty)."""
        nrows = counts.size
        out = np.full((nrows, self.num_perm), MAX32, dtype=np.uint32)
        if shingles.size == 0:
            return out
        h = fmix32(shingles.astype(np.uint32, copy=False))
        ends = np.cumsum(counts)
        starts = ends - counts
        r0 = 0
        with np.errstate(over="ignore"):
            while r0 < nrows:
                # rows r0..r1-1 whose shingles fit in one matrix (at least one row)
                lim = starts[r0] + self._chunk
                r1 = max(r0 + 1, int(np.searchsorted(ends, lim, side="right")))
                r1 = min(r1, nrows)
                s0, s1 = int(starts[r0]), int(ends[r1 - 1])
                if s1 > s0:
                    phv = self.a * h[s0:s1][None, :] + self.b
                    nz = np.flatnonzero(counts[r0:r1] > 0)
                    local = (starts[r0:r1][nz] - s0).astype(np.intp)
                    out[r0 + nz] = np.minimum.reduceat(phv, local, axis=1).T
                r0 = r1
        return out


def _fp_fn(threshold: float, b: int, r: int, steps: int = 200) -> tuple[float, float]:
    xs = np.linspace(0, 1, steps + 1)
    p = 1 - (1 - xs**r) ** b
    lo, hi = xs <= threshold, xs >= threshold
    return float(np.trapezoid(p[lo], xs[lo])), float(np.trapezoid(1 - p[hi], xs[hi]))


def choose_bands(threshold: float, num_perm: int, fn_weight: float = 0.9) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive/false-negative areas of the S-curve.

    Same criterion as ``datasketch.MinHashLSH`` but weighted towards recall (candidates are verified
    afterwards, so a false candidate only costs a comparison).  Among equally good settings the one
    with fewer bands wins (less index memory).
    """
    best: tuple[float, int, int] | None = None
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp, fn = _fp_fn(threshold, b, r)
            err = (1 - fn_weight) * fp + fn_weight * fn
            if best is None or err < best[0] - 1e-12:
                best = (err, b, r)
    assert best is not None
    return best[1], best[2]


_BAND_K = np.array([int(x) for x in np.random.default_rng(20240917).integers(1, 2**63, 64, dtype=np.uint64) * 2 + 1],
                   dtype=np.uint64)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint32 keys: each band's ``rows`` values hashed (multiply-shift) to 32 bits."""
    if rows > _BAND_K.size:
        raise ValueError(f"at most {_BAND_K.size} rows per band")
    s = sigs[:, : bands * rows].astype(np.uint64).reshape(sigs.shape[0], bands, rows)
    with np.errstate(over="ignore"):
        acc = (s * _BAND_K[:rows]).sum(axis=2, dtype=np.uint64)
    return (acc >> np.uint64(32)).astype(np.uint32)


class BandIndex:
    """Per band, sorted runs of ``key << 32 | item`` (uint64); log-structured merges keep runs few.

    Runs are kept band by band (a list of 1-D arrays per run) so a merge needs extra memory for one
    band at a time, not for the whole index.
    """

    def __init__(self, bands: int, max_candidates: int = 32) -> None:
        self.bands = bands
        self.runs: list[list[np.ndarray]] = []  # run -> band -> sorted uint64
        self.size = 0
        self.max_candidates = max_candidates

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for run in self.runs for a in run)

    def add(self, keys: np.ndarray, items: np.ndarray) -> None:
        if keys.shape[0] == 0:
            return
        it = items.astype(np.uint64)
        run = []
        for j in range(self.bands):
            col = (keys[:, j].astype(np.uint64) << np.uint64(32)) | it
            col.sort()
            run.append(col)
        self.runs.append(run)
        self.size += keys.shape[0]
        while len(self.runs) >= 2 and self.runs[-2][0].size <= 2 * self.runs[-1][0].size:
            b = self.runs.pop()
            a = self.runs.pop()
            merged = []
            for j in range(self.bands):
                col = np.concatenate([a[j], b[j]])
                a[j] = b[j] = None  # type: ignore[call-overload]
                col.sort(kind="stable")  # timsort: a linear merge of two sorted runs
                merged.append(col)
            self.runs.append(merged)

    def candidates(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, stored item) pairs sharing at least one band key (unique pairs)."""
        qs: list[np.ndarray] = []
        its: list[np.ndarray] = []
        lo_keys = keys.astype(np.uint64) << np.uint64(32)
        hi_keys = lo_keys | np.uint64(0xFFFFFFFF)
        for run in self.runs:
            for j in range(self.bands):
                col = run[j]
                lo = np.searchsorted(col, lo_keys[:, j], side="left")
                hi = np.searchsorted(col, hi_keys[:, j], side="right")
                cnt = np.minimum(hi - lo, self.max_candidates)
                hit = np.flatnonzero(cnt)
                if hit.size == 0:
                    continue
                c = cnt[hit]
                q = np.repeat(hit, c)
                first = np.repeat(lo[hit], c)
                within = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
                qs.append(q)
                its.append(col[first + within] & np.uint64(0xFFFFFFFF))
        if not qs:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        q = np.concatenate(qs).astype(np.int64)
        it = np.concatenate(its).astype(np.int64)
        pair = np.unique((q << 32) | it)
        return pair >> 32, pair & 0xFFFFFFFF


class SketchStore:
    """Packed b-bit sketches of indexed items, in fixed-size chunks (no copy on growth)."""

    CHUNK_BITS = 14

    def __init__(self, width: int) -> None:
        self.width = width  # bytes per item
        self.chunks: list[np.ndarray] = []
        self.size = 0

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    def add(self, sketches: np.ndarray) -> np.ndarray:
        """Store rows; return their item numbers."""
        n = sketches.shape[0]
        first = self.size
        done = 0
        csize = 1 << self.CHUNK_BITS
        while done < n:
            ci, off = divmod(self.size, csize)
            if ci == len(self.chunks):
                self.chunks.append(np.empty((csize, self.width), dtype=np.uint8))
            take = min(n - done, csize - off)
            self.chunks[ci][off : off + take] = sketches[done : done + take]
            done += take
            self.size += take
        return np.arange(first, first + n, dtype=np.int64)

    def get(self, items: np.ndarray) -> np.ndarray:
        out = np.empty((items.size, self.width), dtype=np.uint8)
        ci = items >> self.CHUNK_BITS
        off = items & ((1 << self.CHUNK_BITS) - 1)
        for c in np.unique(ci).tolist():
            m = ci == c
            out[m] = self.chunks[c][off[m]]
        return out


BBITS = 4  # bits kept per signature value for verification
_SALT = (np.arange(1, 4097, dtype=np.uint64) * np.uint64(0x9E3779B9) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def sketch_of(sigs: np.ndarray) -> np.ndarray:
    """4-bit sketches: 4 bits of a hash of each minimum, two per byte -> (n, num_perm / 2) uint8.

    The bits come from re-hashing the minimum (not its raw low bits, which the affine permutation
    leaves independent of ``a``), so a coincidence between two different minima has probability
    1/16 in every permutation independently — the b-bit minwise hashing assumption.
    """
    with np.errstate(over="ignore"):
        v = (fmix32(sigs ^ _SALT[: sigs.shape[1]][None, :]) & np.uint32(0xF)).astype(np.uint8)
    return v[:, 0::2] | (v[:, 1::2] << np.uint8(4))


def bbit_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard estimates from packed 4-bit sketches, row by row (Li & König 2010; clipped to [0, 1])."""
    z = a ^ b
    match = ((z & np.uint8(0xF)) == 0).sum(axis=-1) + ((z >> np.uint8(4)) == 0).sum(axis=-1)
    frac = match / (2 * a.shape[-1])
    c = 1 / (1 << BBITS)
    return np.clip((frac - c) / (1 - c), 0.0, 1.0)


@dataclass
class Match:
    item: int  # the matched indexed item (-1: none)
    jaccard: float


class NearDupIndex:
    """Streaming near-duplicate detection: ``check_and_add(batch)`` says, for each row of a batch in
    order, which earlier *kept* item it duplicates (estimated Jaccard ≥ threshold), and indexes the
    rows that are kept.  ``query(batch)`` only looks up (the eval-set check of decontamination)."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 1, seed: int = 1,
                 bands: int | None = None, rows: int | None = None) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        if num_perm % 2:
            raise ValueError("num_perm must be even (sketches pack two values a byte)")
        self.threshold = threshold
        self.ngram = ngram
        self.hasher = MinHasher(num_perm, seed)
        self.words = WordHasher()
        if bands is None or rows is None:
            b, r = choose_bands(threshold, num_perm)
            bands, rows = bands or b, rows or r
        if bands * rows > num_perm:
            raise ValueError(f"bands × rows ({bands}×{rows}) exceeds num_perm ({num_perm})")
        self.bands, self.rows = bands, rows
        self.index = BandIndex(bands)
        self.store = SketchStore(num_perm // 2)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.store.nbytes

    def signatures(self, word_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures, has_shingles) for a batch of word lists."""
        sh, counts = ngram_hashes([self.words(ws) for ws in word_lists], self.ngram)
        return self.hasher.signatures(sh, counts), counts > 0

    def _global_matches(self, keys: np.ndarray, sk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = keys.shape[0]
        best = np.full(n, -1, dtype=np.int64)
        best_j = np.zeros(n, dtype=np.float64)
        if self.index.size == 0:
            return best, best_j
        q, it = self.index.candidates(keys)
        if q.size == 0:
            return best, best_j
        j = bbit_jaccard(sk[q], self.store.get(it))
        ok = j >= self.threshold
        q, it, j = q[ok], it[ok], j[ok]
        if q.size:
            order = np.lexsort((it, -j, q))  # per row: highest J, then the earliest item
            q, it, j = q[order], it[order], j[order]
            firsts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
            best[q[firsts]] = it[firsts]
            best_j[q[firsts]] = j[firsts]
        return best, best_j

    def query(self, word_lists: Sequence[Sequence[str]]) -> list[Match]:
        sigs, valid = self.signatures(word_lists)
        keys = band_keys(sigs, self.bands, self.rows)
        best, best_j = self._global_matches(keys, sketch_of(sigs))
        best[~valid] = -1
        return [Match(int(b), float(j)) for b, j in zip(best.tolist(), best_j.tolist())]

    def add(self, word_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Index every row with at least one shingle (no dedup); return item numbers (-1: not indexed)."""
        sigs, valid = self.signatures(word_lists)
        items = np.full(len(word_lists), -1, dtype=np.int64)
        if valid.any():
            keys = band_keys(sigs[valid], self.bands, self.rows)
            it = self.store.add(sketch_of(sigs[valid]))
            self.index.add(keys, it.astype(np.uint32))
            items[valid] = it
        return items

    def check_and_add(self, word_lists: Sequence[Sequence[str]]) -> tuple[list[Match], np.ndarray]:
        """Sequential semantics over the batch: row i is a duplicate when it matches an item kept
        before it (earlier batches, or earlier rows of this batch).  Returns the matches and the item
        number given to each kept row (-1 for duplicates and for rows without any shingle)."""
        n = len(word_lists)
        sigs, valid = self.signatures(word_lists)
        keys = band_keys(sigs, self.bands, self.rows)
        sk = sketch_of(sigs)
        gbest, gj = self._global_matches(keys, sk)
        # within the batch: one dict from (band, key) to the first kept row of the batch with it
        comb = (keys.astype(np.uint64) | (np.arange(self.bands, dtype=np.uint64) << np.uint64(32))[None, :]).tolist()
        local: dict[int, int] = {}
        kept_rows: list[int] = []
        matches: list[Match] = []
        thr = self.threshold
        base = self.store.size
        item_of_row = np.full(n, -1, dtype=np.int64)
        gbest_l, gj_l, valid_l = gbest.tolist(), gj.tolist(), valid.tolist()
        for i in range(n):
            if not valid_l[i]:
                matches.append(Match(-1, 0.0))
                continue
            if gbest_l[i] >= 0:
                matches.append(Match(gbest_l[i], gj_l[i]))
                continue
            row_keys = comb[i]
            cands = {local[k] for k in row_keys if k in local}
            best, bj = -1, 0.0
            if cands:
                cl = sorted(cands)
                js = bbit_jaccard(sk[i][None, :], sk[cl]).tolist()
                for c, jv in zip(cl, js):
                    if jv >= thr and jv > bj:
                        best, bj = c, jv
            if best >= 0:
                matches.append(Match(int(item_of_row[best]), bj))
                continue
            item_of_row[i] = base + len(kept_rows)
            kept_rows.append(i)
            for k in row_keys:
                local.setdefault(k, i)
            matches.append(Match(-1, 0.0))
        if kept_rows:
            kr = np.asarray(kept_rows, dtype=np.int64)
            items = self.store.add(sk[kr])
            self.index.add(keys[kr], items.astype(np.uint32))
        return matches, item_of_row

