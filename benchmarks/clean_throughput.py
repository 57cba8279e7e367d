"""Throughput, memory and accuracy of exact dedup + near-dup over a million ~50-word rows.

    python benchmarks/clean_throughput.py                    # 1,000,000 rows (default)
    python benchmarks/clean_throughput.py --rows 100000      # quicker
    python benchmarks/clean_throughput.py --keep-files DIR   # keep input/output/rejects/report

What it does:

1. **Data.**  Real sentences from ``../shared/data`` (SUBJ, e-SNLI premises and hypotheses, TREC,
   BANKING77, GSM8K questions split into sentences, Self-Instruct and AlpacaEval instructions) are
   deduplicated into a pool (sentences of 6+ words).  A *base* row strings random pool sentences
   together until it has at least 45 words, each sentence *mutated* on the way (every number
   replaced by a random one, each word replaced with probability 0.15 by a random pool word), so
   base rows are distinct.  Then, with a known share, *planted* rows are added, each a copy of an
   earlier base row placed after it:

   * exact duplicates (``--exact-share``, default 3%): the same text, half of them with only case
     and spacing changed (exact dedup normalises those);
   * near-duplicates (``--near-share``, default 10%): 1–3 word edits (``--max-edits``; replace a
     word, delete one, insert one, swap two neighbours; ≤ 6% of the words), and half of them also a
     case/punctuation change.

   The ground truth (``planted`` = exact/near, ``source`` = the copied row's id) rides in each row.
2. **Run.**  The real command, in a child process so its peak memory is its own:
   ``synthkd clean run --input IN --config CFG --output OUT`` with
   ``[{op: exact_dedup, fields: [text]}, {op: near_dup, field: text}]`` (default threshold).
3. **Score.**  From the rejects file: precision = dropped rows that were planted / dropped rows;
   recall = planted rows dropped / planted rows (by kind too).  Rows/s and wall time of the run, and
   peak RSS of the child (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``), are printed with the
   size of the input text for comparison (the run must not hold all of it at once).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the shared data folder: $SYNTHKD_SHARED_DATA, else ../shared/data next to the repository (as every benchmark)
DATA = Path(os.environ["SYNTHKD_SHARED_DATA"]) if os.environ.get("SYNTHKD_SHARED_DATA") else REPO.parent / "shared" / "data"
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_NUM = re.compile(r"^\d+([.,]\d+)?$")


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return path.read_text(encoding=encoding, errors="replace").splitlines()


class SharedDataMissing(SystemExit):
    """The shared data folder this benchmark reads is not there (a plain clone of the repo lacks it)."""


def sentence_pool(data: Path = DATA) -> list[str]:
    """Unique real sentences (6+ words) from several shared data sets."""
    if not (data / "esnli").is_dir():
        raise SharedDataMissing(
            f"clean_throughput: the shared data folder {data} is missing (this benchmark reads real sentences "
            "from $SYNTHKD_SHARED_DATA or ../shared/data next to the repository; see its README.md).  The tests "
            "use the small vendored "
            "pool in tests/fixtures/filters/ instead."
        )
    texts: list[str] = []
    texts += _lines(data / "subj" / "subj.objective", "cp1252") + _lines(data / "subj" / "subj.subjective", "cp1252")
    for split in ("test", "dev"):
        texts += _lines(data / "esnli" / f"s1.{split}") + _lines(data / "esnli" / f"s2.{split}")
    for name in ("TREC.train", "TREC.test"):
        texts += [ln.split(" ", 1)[1] for ln in _lines(data / "trec" / name, "latin-1") if " " in ln]
    with open(data / "banking77" / "train.csv", newline="") as f:
        texts += [r["text"] for r in csv.DictReader(f)]
    for ln in _lines(data / "gsm8k" / "train.jsonl"):
        texts += _SENT_SPLIT.split(json.loads(ln)["question"])
    for ln in _lines(data / "self_instruct" / "seed_tasks.jsonl"):
        texts += _SENT_SPLIT.split(json.loads(ln)["instruction"])
    for row in json.loads((data / "alpaca_eval" / "results" / "gpt4" / "model_outputs.json").read_text()):
        texts += _SENT_SPLIT.split(row["instruction"])
    seen: set[str] = set()
    pool: list[str] = []
    for t in texts:
        t = " ".join(t.split())
        key = t.lower()
        if 6 <= len(t.split()) <= 20 and key not in seen:
            seen.add(key)
            pool.append(t)
    return pool


class RowMaker:
    def __init__(self, pool: list[str], seed: int) -> None:
        self.pool = pool
        self.rng = random.Random(seed)
        self.vocab = sorted({w for s in pool[:20000] for w in s.split() if w.isalpha()})

    def _mutate_sentence(self, s: str) -> list[str]:
        rng = self.rng
        out = []
        for w in s.split():
            if _NUM.match(w):
                w = str(rng.randint(1, 999))
            elif rng.random() < 0.15:
                w = rng.choice(self.vocab)
            out.append(w)
        return out

    def base(self) -> str:
        ws: list[str] = []
        while len(ws) < 45:
            ws += self._mutate_sentence(self.rng.choice(self.pool))
        return " ".join(ws)

    def exact(self, text: str) -> str:
        if self.rng.random() < 0.5:
            return text
        ws = text.split()
        i = self.rng.randrange(len(ws))
        ws[i] = ws[i].upper() if ws[i].lower() == ws[i] else ws[i].lower()
        return "  ".join(ws) if self.rng.random() < 0.5 else " ".join(ws) + " "

    max_edits = 3

    def near(self, text: str) -> str:
        rng = self.rng
        ws = text.split()
        for _ in range(rng.randint(1, self.max_edits)):
            op = rng.choice(("replace", "delete", "insert", "swap"))
            i = rng.randrange(len(ws))
            if op == "replace":
                ws[i] = rng.choice(self.vocab)
            elif op == "delete" and len(ws) > 10:
                del ws[i]
            elif op == "insert":
                ws.insert(i, rng.choice(self.vocab))
            elif i + 1 < len(ws):
                ws[i], ws[i + 1] = ws[i + 1], ws[i]
        if rng.random() < 0.5:
            i = rng.randrange(len(ws))
            ws[i] = ws[i].capitalize() + rng.choice([",", ".", "!", ""])
        return " ".join(ws)


def generate(path: Path, n: int, exact_share: float, near_share: float, seed: int = 0,
             max_edits: int = 3, pool: list[str] | None = None) -> dict[str, int]:
    """Write ``n`` rows; return counts by kind.  Planted rows copy a base row from a window of recent
    base rows (so the generator's own memory stays bounded) and always come after it.  ``pool``: the
    real sentences to build rows from (default: :func:`sentence_pool` over the shared data)."""
    maker = RowMaker(sentence_pool() if pool is None else pool, seed)
    maker.max_edits = max_edits
    rng = maker.rng
    window: list[tuple[str, str]] = []
    counts = {"base": 0, "exact": 0, "near": 0}
    with open(path, "w") as f:
        for i in range(n):
            u = rng.random()
            if window and u < exact_share + near_share:
                src_id, src = window[rng.randrange(len(window))]
                kind = "exact" if u < exact_share else "near"
                text = maker.exact(src) if kind == "exact" else maker.near(src)
                row = {"id": f"r{i}", "text": text, "planted": kind, "source": src_id}
            else:
                kind = "base"
                text = maker.base()
                row = {"id": f"r{i}", "text": text, "planted": None}
                if len(window) < 50_000:
                    window.append((row["id"], text))
                else:
                    window[rng.randrange(len(window))] = (row["id"], text)
            counts[kind] += 1
            f.write(json.dumps(row) + "\n")
    return counts


def score(input_path: Path, rejects_path: Path) -> dict[str, float | int]:
    planted: dict[str, str] = {}
    with open(input_path) as f:
        for ln in f:
            r = json.loads(ln)
            if r["planted"]:
                planted[r["id"]] = r["planted"]
    dropped: dict[str, str] = {}
    with open(rejects_path) as f:
        for ln in f:
            r = json.loads(ln)
            dropped[r["id"]] = r["reject_op"]
    tp = sum(1 for i in dropped if i in planted)
    false_pos = [i for i in dropped if i not in planted]
    res: dict[str, float | int] = {
        "planted": len(planted), "dropped": len(dropped), "true_positives": tp,
        "precision": tp / len(dropped) if dropped else 1.0,
        "recall": tp / len(planted) if planted else 1.0,
    }
    for kind in ("exact", "near"):
        ids = [i for i, k in planted.items() if k == kind]
        res[f"recall_{kind}"] = sum(1 for i in ids if i in dropped) / max(1, len(ids))
        res[f"planted_{kind}"] = len(ids)
    res["dropped_by_exact_dedup"] = sum(1 for v in dropped.values() if v == "exact_dedup")
    res["dropped_by_near_dup"] = sum(1 for v in dropped.values() if v == "near_dup")
    res["unplanted_drops_true_jaccard"] = _true_jaccards(input_path, rejects_path, set(false_pos))
    return res


def _true_jaccards(input_path: Path, rejects_path: Path, ids: set[str]) -> list[float]:
    """Exact word-set Jaccard of each dropped-but-not-planted row with the row it was matched to: a
    high value means the generator made an accidental near-duplicate, not that the filter erred."""
    from synthkd.filters.text import words

    if not ids:
        return []
    other: dict[str, str] = {}
    with open(rejects_path) as f:
        for ln in f:
            r = json.loads(ln)
            if r["id"] in ids:
                m = re.search(r"id '([^']+)'", r.get("reject_detail") or "")
                if m:
                    other[r["id"]] = m.group(1)
    need = ids | set(other.values())
    texts: dict[str, set[str]] = {}
    with open(input_path) as f:
        for ln in f:
            r = json.loads(ln)
            if r["id"] in need:
                texts[r["id"]] = set(words(r["text"]))
    out = []
    for i, o in other.items():
        a, b = texts[i], texts[o]
        out.append(round(len(a & b) / len(a | b), 3))
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--exact-share", type=float, default=0.03)
    ap.add_argument("--near-share", type=float, default=0.10)
    ap.add_argument("--threshold", type=float, default=None, help="near_dup threshold (default: the operator's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-edits", type=int, default=3, help="word edits in a planted near-duplicate: 1..N")
    ap.add_argument("--keep-files", type=Path, default=None)
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="synthkd-clean-bench-") if args.keep_files is None else None
    work = Path(tmp.name) if tmp else args.keep_files
    work.mkdir(parents=True, exist_ok=True)
    inp, out, rej, cfg = work / "in.jsonl", work / "out.jsonl", work / "rejects.jsonl", work / "clean.json"
    t0 = time.perf_counter()
    counts = generate(inp, args.rows, args.exact_share, args.near_share, args.seed, args.max_edits)
    gen_s = time.perf_counter() - t0
    near = {"op": "near_dup", "field": "text"}
    if args.threshold is not None:
        near["threshold"] = args.threshold
    cfg.write_text(json.dumps([{"op": "exact_dedup", "fields": ["text"]}, near]))
    size_mb = inp.stat().st_size / 1e6
    print(f"generated {args.rows:,} rows ({counts}) in {gen_s:.1f} s; input {size_mb:,.0f} MB", flush=True)

    cmd = [sys.executable, "-m", "synthkd.cli", "clean", "run", "--input", str(inp), "--config", str(cfg),
           "--output", str(out), "--rejects", str(rej), "--report-dir", str(work / "report")]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return 1
    print(proc.stderr.strip())
    s = score(inp, rej)
    print(f"wall {wall:.1f} s  |  {args.rows / wall:,.0f} rows/s  |  peak RSS {peak_mb:,.0f} MB "
          f"(input text {size_mb:,.0f} MB)")
    print(f"precision {s['precision']:.4f}  recall {s['recall']:.4f}  "
          f"(exact {s['recall_exact']:.4f} of {s['planted_exact']:,}, near {s['recall_near']:.4f} of {s['planted_near']:,}; "
          f"dropped {s['dropped']:,}: exact_dedup {s['dropped_by_exact_dedup']:,}, near_dup {s['dropped_by_near_dup']:,})")
    fp = s["unplanted_drops_true_jaccard"]
    if fp:
        print(f"dropped but not planted: {len(fp)}; their exact word-set Jaccard with the matched row: "
              f"min {fp[0]:.3f}, median {fp[len(fp) // 2]:.3f}, max {fp[-1]:.3f}")
    print(json.dumps({"rows": args.rows, "wall_s": round(wall, 2), "rows_per_s": round(args.rows / wall),
                      "peak_rss_mb": round(peak_mb), "input_mb": round(size_mb), **s}))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
