"""synthkd.filters.minhash piece by piece, against independent pure-Python references: the MurmurHash3
finalizer, word and n-gram hashing (short rows, empty rows, row boundaries), datasketch's permutations
and signatures (chunked batches, empty rows), the banding choice (S-curve areas), band keys, the band
index (runs, merges, the candidate cap, the item's full 32 bits), the sketch store across chunks, the
4-bit sketches and Li & König's estimate, and NearDupIndex's validation, threshold boundary and
sequential semantics."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from datasketch import MinHash

from synthkd.filters import minhash as mh
from synthkd.filters.minhash import (
    BandIndex,
    Match,
    MinHasher,
    NearDupIndex,
    SketchStore,
    WordHasher,
    affine32_permutations,
    band_keys,
    bbit_jaccard,
    choose_bands,
    fmix32,
    ngram_hashes,
    sketch_of,
)

M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1


def ref_fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def ref_ngrams(rows: list[list[int]], n: int) -> tuple[list[int], list[int]]:
    K = [int(k) for k in mh._NGRAM_K]
    flat, counts = [], []
    for ws in rows:
        if not ws:
            counts.append(0)
            continue
        if n == 1:  # single words: the word hash's top 32 bits
            flat += [w >> 32 for w in ws]
            counts.append(len(ws))
            continue
        starts = range(len(ws) - n + 1) if len(ws) >= n else [0]
        width = min(n, len(ws))
        for s in starts:
            flat.append((sum(w * k for w, k in zip(ws[s:s + width], K)) & M64) >> 32)
        counts.append(len(starts))
    return flat, counts


def rand_words(rng: np.random.Generator, k: int) -> list[int]:
    return [int(x) for x in rng.integers(0, 2**63, k, dtype=np.uint64) * 2 + 1]  # high bits set


# -- hashing ------------------------------------------------------------------------------------------

def test_fmix32_is_murmur3s_finalizer():
    xs = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, M32, 123456789]
    got = fmix32(np.array(xs, dtype=np.uint32))
    assert got.dtype == np.uint32
    assert got.tolist() == [ref_fmix32(x) for x in xs]
    assert got.tolist()[:2] == [0, 0x514E28B7]  # MurmurHash3 fmix32(1), a published value


def test_word_hasher_is_blake2b_little_endian_and_cached():
    h = WordHasher()
    words = ["hello", "wörld", "", "hello", "日本"]
    expected = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in words]
    assert h(words) == expected
    assert h(words) == expected  # from the cache
    assert h(["x", "hello"]) == [int.from_bytes(hashlib.blake2b(b"x", digest_size=8).digest(), "little"), expected[0]]
    assert h([]) == []
    assert h._max == 200_000


def test_word_hasher_cache_is_cleared_once_it_holds_more_than_max():
    h = WordHasher(max_cache=2)
    for w, size in (("a", 1), ("b", 2), ("c", 3), ("a", 3), ("d", 1), ("e", 2)):
        out = h([w])
        assert out == [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")]
        assert len(h._cache) == size, w


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_ngram_hashes_match_the_reference(n):
    rng = np.random.default_rng(n)
    rows = [rand_words(rng, k) for k in (0, 1, 2, 3, 4, 5, 7, 8, 9, 0, 12, 1)]
    flat, counts = ngram_hashes(rows, n)
    ref_flat, ref_counts = ref_ngrams(rows, n)
    assert flat.dtype == np.uint32 and counts.dtype == np.int64
    assert flat.tolist() == ref_flat
    assert counts.tolist() == ref_counts


def test_ngram_hashes_order_matters_and_windows_stay_in_their_row():
    rng = np.random.default_rng(7)
    a, b, c = rand_words(rng, 3)
    f1, _ = ngram_hashes([[a, b, c]], 3)
    f2, _ = ngram_hashes([[c, b, a]], 3)
    assert f1.tolist() != f2.tolist()
    # two rows of 2 words with n=2: one shingle each, none across the boundary
    flat, counts = ngram_hashes([[a, b], [c, a]], 2)
    assert counts.tolist() == [1, 1] and flat.tolist() == ref_ngrams([[a, b], [c, a]], 2)[0]


def test_ngram_hashes_rows_all_shorter_than_n():
    rng = np.random.default_rng(3)
    rows = [rand_words(rng, 1), [], rand_words(rng, 2)]
    flat, counts = ngram_hashes(rows, 5)
    assert counts.tolist() == [1, 0, 1]
    assert flat.tolist() == ref_ngrams(rows, 5)[0]
    # a short row's shingle is all its words: the same as that row's n-gram at n = its length
    assert ngram_hashes([rows[2]], 5)[0].tolist() == ngram_hashes([rows[2]], 2)[0].tolist()


def test_ngram_hashes_no_words():
    flat, counts = ngram_hashes([[], []], 3)
    assert flat.size == 0 and flat.dtype == np.uint32
    assert counts.tolist() == [0, 0] and counts.dtype == np.int64
    flat, counts = ngram_hashes([], 1)
    assert flat.size == 0 and counts.size == 0


def test_ngram_size_bounds():
    assert ngram_hashes([[5]], 8)[1].tolist() == [1]
    for bad in (0, 9, -1):
        with pytest.raises(ValueError, match=r"^ngram must be between 1 and 8$"):
            ngram_hashes([[5]], bad)


# -- permutations and signatures ------------------------------------------------------------------------

@pytest.mark.parametrize(("num_perm", "seed"), [(128, 1), (16, 7), (2, 0)])
def test_permutations_are_datasketchs(num_perm, seed):
    a, b = affine32_permutations(num_perm, seed)
    ref = MinHash(num_perm=num_perm, seed=seed).permutations
    assert a.tolist() == ref[0].tolist() and b.tolist() == ref[1].tolist()
    assert all(x % 2 == 1 for x in a.tolist())


def test_minhasher_defaults_and_chunked_batches_equal_row_by_row():
    rng = np.random.default_rng(11)
    counts = np.array([3, 0, 1, 50, 2, 0], dtype=np.int64)
    sh = rng.integers(0, 2**32, int(counts.sum()), dtype=np.uint64).astype(np.uint32)
    mh_default = MinHasher()
    assert (mh_default.num_perm, mh_default.seed) == (128, 1)
    a, b = affine32_permutations(128, 1)
    assert mh_default.a.ravel().tolist() == a.tolist() and mh_default.b.ravel().tolist() == b.tolist()
    full = mh_default.signatures(sh, counts)
    assert full.shape == (6, 128) and full.dtype == np.uint32
    # row by row, by the definition: min over shingles of a*fmix32(s) + b mod 2^32
    ends = np.cumsum(counts)
    for r in range(6):
        seg = sh[ends[r] - counts[r]: ends[r]].tolist()
        if not seg:
            assert full[r].tolist() == [M32] * 128
        else:
            hs = [ref_fmix32(s) for s in seg]
            assert full[r].tolist() == [min((int(x) * h + int(y)) & M32 for h in hs) for x, y in zip(a, b)]
    # tiny chunks (a matrix per row, rows larger than a chunk) give the same signatures
    for chunk in (1, 128, 129, 300, 128 * 4):
        assert MinHasher(chunk_elems=chunk).signatures(sh, counts).tolist() == full.tolist(), chunk


def test_signatures_of_word_lists():
    nd = NearDupIndex()
    ws = ["the", "cat", "sat", "on", "the", "mat"]
    sigs, valid = nd.signatures([ws, []])
    assert valid.tolist() == [True, False]
    # single words: each word hash's top 32 bits, finalised, permuted, minimum per permutation
    shingles = [x >> 32 for x in WordHasher()(ws)]
    a, b = affine32_permutations(128, 1)
    hs = [ref_fmix32(s) for s in shingles]
    assert sigs[0].tolist() == [min((int(x) * q + int(y)) & M32 for q in hs) for x, y in zip(a, b)]
    assert sigs[1].tolist() == [M32] * 128


def test_signatures_of_no_shingles():
    out = MinHasher(16, 3).signatures(np.empty(0, dtype=np.uint32), np.zeros(3, dtype=np.int64))
    assert out.shape == (3, 16) and (out == M32).all()


def test_signature_is_deterministic_per_seed():
    sh, counts = np.array([1, 2, 3, 4], dtype=np.uint32), np.array([4], dtype=np.int64)
    s1 = MinHasher(32, 5).signatures(sh, counts)
    assert MinHasher(32, 5).signatures(sh, counts).tolist() == s1.tolist()
    assert MinHasher(32, 6).signatures(sh, counts).tolist() != s1.tolist()


# -- banding ---------------------------------------------------------------------------------------------

def test_fp_fn_areas_of_the_s_curve():
    # b = r = 1: p(x) = x, areas t^2/2 and (1-t)^2/2 (exact for the trapezoid rule)
    fp, fn = mh._fp_fn(0.5, 1, 1)
    assert fp == pytest.approx(0.125, abs=1e-12) and fn == pytest.approx(0.125, abs=1e-12)
    fp, fn = mh._fp_fn(0.25, 1, 1)
    assert fp == pytest.approx(0.03125, abs=1e-12) and fn == pytest.approx(0.28125, abs=1e-12)
    # b = r = 2: p = 2x^2 - x^4; integrals 1/12 - 1/160 and 8/15 - (1/2 - 1/12 + 1/160)
    fp, fn = mh._fp_fn(0.5, 2, 2)
    assert fp == pytest.approx(1 / 12 - 1 / 160, abs=2e-5)
    assert fn == pytest.approx(8 / 15 - (0.5 - 1 / 12 + 1 / 160), abs=2e-5)
    # a coarse grid: 11 points
    fp, fn = mh._fp_fn(0.5, 1, 1, steps=10)
    assert (fp, fn) == (pytest.approx(0.125), pytest.approx(0.125))


@pytest.mark.parametrize(("threshold", "num_perm", "fn_weight", "expected"), [
    (0.8, 128, 0.9, (14, 9)),
    (0.5, 128, 0.9, (32, 4)),
    (0.9, 128, 0.9, (8, 16)),
    (0.8, 128, 0.5, (9, 13)),
    (0.8, 16, 0.9, (4, 4)),
    (0.7, 64, 0.9, (12, 5)),
    (1.0, 16, 0.9, (1, 16)),
    (0.8, 2, 0.9, (2, 1)),
    (0.8, 1, 0.9, (1, 1)),
])
def test_choose_bands(threshold, num_perm, fn_weight, expected):
    assert choose_bands(threshold, num_perm, fn_weight) == expected


def test_choose_bands_minimises_the_weighted_error():
    xs = np.linspace(0, 1, 201)

    def err(t, b, r, w):
        p = 1 - (1 - xs**r) ** b
        lo, hi = xs <= t, xs >= t
        return (1 - w) * np.trapezoid(p[lo], xs[lo]) + w * np.trapezoid(1 - p[hi], xs[hi])

    for t, n in ((0.8, 32), (0.6, 24)):
        b, r = choose_bands(t, n)
        assert b * r <= n
        best = min(err(t, bb, rr, 0.9) for bb in range(1, n + 1) for rr in range(1, n // bb + 1))
        assert err(t, b, r, 0.9) == pytest.approx(best, abs=1e-12)
    assert choose_bands(0.8, 128) == choose_bands(0.8, 128, 0.9)


def test_band_keys_reference_and_bounds():
    rng = np.random.default_rng(5)
    sigs = rng.integers(0, 2**32, (3, 20), dtype=np.uint64).astype(np.uint32)
    keys = band_keys(sigs, 4, 5)
    assert keys.shape == (3, 4) and keys.dtype == np.uint32
    K = [int(k) for k in mh._BAND_K]
    for i in range(3):
        for j in range(4):
            vals = sigs[i, j * 5:(j + 1) * 5].tolist()
            assert int(keys[i, j]) == (sum(v * k for v, k in zip(vals, K)) & M64) >> 32
    # only the first bands*rows values are used
    other = sigs.copy()
    other[:, 18:] ^= 1
    assert band_keys(other, 3, 6).tolist() == band_keys(sigs, 3, 6).tolist()
    assert band_keys(rng.integers(0, 9, (1, 64), dtype=np.uint32), 1, 64).shape == (1, 1)
    with pytest.raises(ValueError, match=r"^at most 64 rows per band$"):
        band_keys(np.zeros((1, 130), dtype=np.uint32), 2, 65)


# -- the band index ----------------------------------------------------------------------------------

def brute_candidates(stored: list[tuple[list[int], int]], queries: np.ndarray) -> set[tuple[int, int]]:
    return {(q, it) for q, qk in enumerate(queries.tolist()) for k, it in stored
            if any(a == b for a, b in zip(qk, k))}


def test_band_index_candidates_across_runs_and_merges():
    rng = np.random.default_rng(9)
    idx = BandIndex(3)
    assert idx.nbytes == 0 and idx.size == 0 and idx.max_candidates == 32
    stored: list[tuple[list[int], int]] = []
    sizes = []
    item = 0
    for n in (2, 1, 6, 1, 1, 3, 0, 8, 2, 2, 1):
        keys = rng.integers(0, 6, (n, 3), dtype=np.uint32)
        items = np.arange(item, item + n, dtype=np.uint32)
        idx.add(keys, items)
        stored += [(k, i) for k, i in zip(keys.tolist(), items.tolist())]
        item += n
        sizes.append([run[0].size for run in idx.runs])
    assert idx.size == item == 27
    assert idx.nbytes == 27 * 3 * 8
    # log-structured: a run is merged into the one before while that one is at most twice its size
    assert sizes == [[2], [3], [9], [9, 1], [9, 2], [14], [14], [22], [22, 2], [22, 4], [22, 4, 1]]
    assert all((np.diff(c.astype(np.int64)) >= 0).all() for run in idx.runs for c in run)
    queries = rng.integers(0, 6, (7, 3), dtype=np.uint32)
    q, it = idx.candidates(queries)
    assert q.dtype == np.int64 and it.dtype == np.int64
    pairs = list(zip(q.tolist(), it.tolist()))
    assert pairs == sorted(set(pairs))  # unique, by query then item
    assert set(pairs) == brute_candidates(stored, queries)


def test_band_index_empty_results_are_integer_arrays():
    idx = BandIndex(2)
    q, it = idx.candidates(np.array([[1, 2]], dtype=np.uint32))
    assert q.dtype == np.int64 and it.dtype == np.int64 and q.size == it.size == 0
    idx.add(np.array([[5, 6]], dtype=np.uint32), np.array([0], dtype=np.uint32))
    q, it = idx.candidates(np.array([[1, 2]], dtype=np.uint32))
    assert q.dtype == np.int64 and it.dtype == np.int64 and q.size == it.size == 0
    idx.add(np.empty((0, 2), dtype=np.uint32), np.empty(0, dtype=np.uint32))
    assert idx.size == 1 and len(idx.runs) == 1


def test_band_index_item_uses_all_32_bits_and_keys_do_not_bleed():
    idx = BandIndex(1)
    idx.add(np.array([[5], [6], [4]], dtype=np.uint32), np.array([M32, 0, M32 - 1], dtype=np.uint32))
    q, it = idx.candidates(np.array([[5], [6], [4], [7]], dtype=np.uint32))
    assert list(zip(q.tolist(), it.tolist())) == [(0, M32), (1, 0), (2, M32 - 1)]
    # key 0 and the top key
    idx = BandIndex(1)
    idx.add(np.array([[0], [M32]], dtype=np.uint32), np.array([3, 4], dtype=np.uint32))
    q, it = idx.candidates(np.array([[M32], [0]], dtype=np.uint32))
    assert list(zip(q.tolist(), it.tolist())) == [(0, 4), (1, 3)]


def test_band_index_caps_candidates_per_key():
    idx = BandIndex(2, max_candidates=5)
    keys = np.array([[7, 100 + i] for i in range(9)], dtype=np.uint32)
    idx.add(keys, np.arange(9, dtype=np.uint32))
    q, it = idx.candidates(np.array([[7, 108], [7, 0]], dtype=np.uint32))
    # per band and run: the 5 smallest items with the key; band 2 adds item 8 for the first query
    assert list(zip(q.tolist(), it.tolist())) == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 8),
                                                  (1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
    default = BandIndex(1)
    default.add(np.full((40, 1), 3, dtype=np.uint32), np.arange(40, dtype=np.uint32))
    q, it = default.candidates(np.array([[3]], dtype=np.uint32))
    assert it.tolist() == list(range(32))


# -- sketches --------------------------------------------------------------------------------------------

def test_sketch_store_across_chunks():
    st = SketchStore(2)
    assert st.nbytes == 0
    csize = 1 << SketchStore.CHUNK_BITS
    assert csize == 16384
    first = np.arange(10, dtype=np.uint8).reshape(5, 2)
    assert st.add(first).tolist() == [0, 1, 2, 3, 4]
    big = (np.arange(2 * (csize + 3), dtype=np.int64) % 251).astype(np.uint8).reshape(csize + 3, 2)
    items = st.add(big)
    assert items.dtype == np.int64 and items.tolist() == list(range(5, 5 + csize + 3))
    assert st.size == csize + 8 and len(st.chunks) == 2
    assert st.nbytes == 2 * csize * 2
    got = st.get(np.array([0, 4, 5, csize - 1, csize, csize + 7, 2], dtype=np.int64))
    assert got.tolist() == [first[0].tolist(), first[4].tolist(), big[0].tolist(), big[csize - 6].tolist(),
                            big[csize - 5].tolist(), big[csize + 2].tolist(), first[2].tolist()]
    assert st.add(np.empty((0, 2), dtype=np.uint8)).tolist() == []


def test_sketch_of_reference():
    rng = np.random.default_rng(2)
    sigs = rng.integers(0, 2**32, (3, 8), dtype=np.uint64).astype(np.uint32)
    sk = sketch_of(sigs)
    assert sk.shape == (3, 4) and sk.dtype == np.uint8
    for i in range(3):
        v = [ref_fmix32(int(s) ^ (((j + 1) * 0x9E3779B9) & M32)) & 0xF for j, s in enumerate(sigs[i].tolist())]
        assert sk[i].tolist() == [v[2 * k] | (v[2 * k + 1] << 4) for k in range(4)]


def test_bbit_jaccard_formula():
    a = np.zeros((1, 4), dtype=np.uint8)  # 8 four-bit values
    c = 1 / 16
    for mism, b in ((0, [0, 0, 0, 0]), (1, [0x01, 0, 0, 0]), (2, [0x10, 0, 0, 0x02]), (4, [0x11, 0x0F, 0xF0, 0]),
                    (7, [0x11, 0x11, 0x11, 0x01])):
        want = ((8 - mism) / 8 - c) / (1 - c)
        assert bbit_jaccard(a, np.array([b], dtype=np.uint8)).tolist() == [pytest.approx(want, abs=1e-12)], b
    # below the chance level: clipped to 0
    assert bbit_jaccard(a, np.full((1, 4), 0x11, dtype=np.uint8)).tolist() == [0.0]
    # one sketch each (1-D): a scalar estimate
    one = bbit_jaccard(np.zeros(4, dtype=np.uint8), np.array([0x10, 0, 0, 0], dtype=np.uint8))
    assert one.shape == () and float(one) == pytest.approx((7 / 8 - c) / (1 - c))
    # rows at once
    got = bbit_jaccard(np.zeros((2, 4), dtype=np.uint8), np.array([[0, 0, 0, 0], [0x10, 0, 0, 0]], dtype=np.uint8))
    assert got.tolist() == [1.0, pytest.approx((7 / 8 - c) / (1 - c))]


def test_bbit_estimate_tracks_true_jaccard():
    # sets with known Jaccard; 128 permutations: 4 standard errors of Li & Koenig's estimator
    nd = NearDupIndex()
    base = [f"w{i}" for i in range(100)]
    for shared in (100, 90, 80, 60, 30):
        other = base[:shared] + [f"x{i}" for i in range(100 - shared)]
        j = shared / (200 - shared)
        sigs, _ = nd.signatures([base, other])
        sk = sketch_of(sigs)
        est = float(bbit_jaccard(sk[:1], sk[1:])[0])
        c = 1 / 16
        p = j + (1 - j) * c
        se = math.sqrt(p * (1 - p) / 128) / (1 - c)
        assert abs(est - j) <= 4 * se + 1e-9, (shared, est, j)
    sigs, _ = nd.signatures([base, list(reversed(base))])
    sk = sketch_of(sigs)
    assert float(bbit_jaccard(sk[:1], sk[1:])[0]) == 1.0


# -- NearDupIndex -------------------------------------------------------------------------------------

def test_near_dup_index_validation_messages():
    for bad in (0, -0.1, 1.01):
        with pytest.raises(ValueError, match=r"^threshold must be in \(0, 1\]$"):
            NearDupIndex(threshold=bad)
    NearDupIndex(threshold=1)
    with pytest.raises(ValueError, match=r"^num_perm must be even \(sketches pack two values a byte\)$"):
        NearDupIndex(num_perm=127)
    with pytest.raises(ValueError, match=r"^bands × rows \(20×7\) exceeds num_perm \(128\)$"):
        NearDupIndex(bands=20, rows=7)
    NearDupIndex(bands=16, rows=8)


def test_near_dup_index_defaults_and_partial_banding():
    nd = NearDupIndex()
    assert (nd.threshold, nd.ngram, nd.hasher.num_perm, nd.hasher.seed) == (0.8, 1, 128, 1)
    assert (nd.bands, nd.rows) == choose_bands(0.8, 128) == (14, 9)
    assert nd.store.width == 64 and nd.index.bands == 14
    assert (NearDupIndex(bands=4).bands, NearDupIndex(bands=4).rows) == (4, 9)
    assert (NearDupIndex(rows=3).bands, NearDupIndex(rows=3).rows) == (14, 3)
    nd = NearDupIndex(0.5, num_perm=32, ngram=2, seed=9, bands=2, rows=16)
    assert (nd.bands, nd.rows, nd.ngram, nd.hasher.seed, nd.store.width) == (2, 16, 2, 9, 16)
    assert nd.nbytes == 0
    nd.add([["a", "b"], ["c", "d"]])
    assert nd.nbytes == nd.index.nbytes + nd.store.nbytes == 2 * 2 * 8 + (1 << 14) * 16


def test_ngram_setting_changes_what_matches():
    doc = ["a", "b", "c", "d", "e", "f"]
    shuffled = ["f", "e", "d", "c", "b", "a"]
    for ngram, dup in ((1, True), (2, False)):
        nd = NearDupIndex(ngram=ngram)
        m, _ = nd.check_and_add([doc, shuffled])
        assert (m[1].item == 0) is dup, ngram


def test_seed_changes_the_signatures():
    ws = [["alpha", "beta", "gamma", "delta"]]
    assert NearDupIndex(seed=1).signatures(ws)[0].tolist() != NearDupIndex(seed=2).signatures(ws)[0].tolist()
    assert NearDupIndex(seed=2).signatures(ws)[0].tolist() == NearDupIndex(seed=2).signatures(ws)[0].tolist()


def words_of(i: int, k: int = 12) -> list[str]:
    return [f"t{i}w{j}" for j in range(k)]


def test_add_and_query():
    nd = NearDupIndex()
    items = nd.add([words_of(0), [], words_of(1)])
    assert items.dtype == np.int64 and items.tolist() == [0, -1, 1]
    assert nd.add([[]]).tolist() == [-1] and nd.store.size == 2
    res = nd.query([words_of(1), [], words_of(2), words_of(0)])
    assert res == [Match(1, 1.0), Match(-1, 0.0), Match(-1, 0.0), Match(0, 1.0)]
    assert nd.store.size == 2  # query does not index
    assert NearDupIndex().query([words_of(0)]) == [Match(-1, 0.0)]


def test_check_and_add_sequential_semantics():
    nd = NearDupIndex()
    m, items = nd.check_and_add([words_of(0), [], words_of(1), words_of(0), words_of(1), words_of(2)])
    assert m == [Match(-1, 0.0), Match(-1, 0.0), Match(-1, 0.0), Match(0, 1.0), Match(1, 1.0), Match(-1, 0.0)]
    assert items.tolist() == [0, -1, 1, -1, -1, 2]
    # the next batch: matches earlier batches (item numbers continue) and its own earlier rows
    m, items = nd.check_and_add([words_of(2), words_of(3), words_of(3), []])
    assert m == [Match(2, 1.0), Match(-1, 0.0), Match(3, 1.0), Match(-1, 0.0)]
    assert items.tolist() == [-1, 3, -1, -1]
    assert nd.store.size == 4 and nd.index.size == 4


def test_best_match_is_the_highest_then_the_earliest():
    base = [f"b{j}" for j in range(40)]
    near = base[:38] + ["z1", "z2"]  # J = 38/42 with base
    nd = NearDupIndex(threshold=0.5)
    nd.add([near, base, base])  # items 0 (near), 1 and 2 (exact copies)
    assert nd.query([base]) == [Match(1, 1.0)]
    m, items = NearDupIndex(threshold=0.5).check_and_add([near, base])
    assert m[1].item == 0 and 0.8 < m[1].jaccard < 1.0 and items.tolist() == [0, -1]


def test_threshold_is_inclusive():
    a = [f"b{j}" for j in range(40)]
    b = a[:34] + [f"z{j}" for j in range(6)]  # J = 34/46 ≈ 0.74
    sigs, _ = NearDupIndex().signatures([a, b])
    sk = sketch_of(sigs)
    est = float(bbit_jaccard(sk[:1], sk[1:])[0])
    assert 0.6 < est < 0.9
    above = math.nextafter(est, 2.0)
    # within a batch
    assert NearDupIndex(threshold=est).check_and_add([a, b])[0][1] == Match(0, est)
    assert NearDupIndex(threshold=above).check_and_add([a, b])[0][1] == Match(-1, 0.0)
    # against earlier batches, and in query
    for thr, want in ((est, Match(0, est)), (above, Match(-1, 0.0))):
        nd = NearDupIndex(threshold=thr)
        nd.check_and_add([a])
        assert nd.query([b]) == [want]
        assert nd.check_and_add([b])[0] == [want]
