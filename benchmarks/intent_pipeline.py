"""The ready intent pipeline (``pipelines/intent_from_prompts.yaml``) on real Banking77 data with a teacher
that mislabels: what relabelling + conflict handling buy, what an out-of-scope class buys, and whether
the dataset is byte-identical across runs and after a SIGKILL + resume (issue 18).

The teacher is the scripted :class:`synthkd.testing.banking77_responder.Banking77Responder` behind the
real loopback :class:`~synthkd.testing.server.TestServer`, answering with real Banking77 *train*
utterances of the pipeline's 8 intents (``/work/shared/data/banking77/train.csv``, seed rows excluded):

* task generation: ``--task-wrong-rate`` (default 10%) of the items written "for L" are texts of
  another intent, drawn from a 10-text subset per intent, so the same texts recur under several labels
  (and PromptMix, drawing from the whole pools, writes some of them under their true label);
* as a classifier (relabel, PromptMix's relabel, conflict resolution) it answers a wrong class for
  ``--classify-wrong-rate`` (default 3%) of texts — a teacher reading a text is more often right than
  the label it was told to write, but not always.

Variants (each a fresh run directory and cache; stages and options otherwise those of the ready file):

* ``without``: the pipeline as it was before issue 18 — no ``relabel_tasks`` stage, no
  ``label_conflicts`` op (dedup keeps the first copy of a text, whatever its label), PromptMix pairs
  by description;
* ``conflicts``: ``without`` plus the ``label_conflicts`` op (policy relabel: the teacher classifies only
  the texts that carry two labels) — the cheap half;
* ``with``: the ready pipeline (task rows relabelled by the teacher, conflicts resolved by the teacher,
  PromptMix pairs the intents the teacher confused while relabelling);
* ``oos``: ``with`` plus an ``out_of_scope`` class in the label file (generated with its own prompt; the
  scripted teacher answers it with utterances of 12 *other* Banking77 intents and TREC questions), and
  the eval set grows by ``--oos-test`` NLU++ **hotel** utterances (another domain: never a training
  label or a training text), scored as out-of-scope (in-scope accuracy, OOS recall: CLINC150's metrics);
  also with ``abstain_below`` thresholds on the student's answer probability.
* determinism: the data stages (tasks .. clean) of ``with`` run twice, and once killed (SIGKILL) while
  the tasks stage is writing and rerun; ``clean.jsonl`` (the training set) and ``tasks.jsonl``'s
  (id, label, text) are compared byte for byte.

Usage (CPU; training three tiny students takes a few minutes on a shared 2-core machine)::

    python benchmarks/intent_pipeline.py [--data-dir PATH] [--out DIR] [--skip-train]

The data folder defaults to ``$SYNTHKD_SHARED_DATA`` or else ``../shared/data`` next to the repo.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "intent_from_prompts.yaml"
SPEC = REPO / "data" / "banking77" / "task_spec.yaml"
TEST = REPO / "data" / "banking77" / "test.jsonl"
OOS_TRAIN_INTENTS = 12


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    env = os.environ.get("SYNTHKD_SHARED_DATA")
    return Path(env).resolve() if env else (REPO / ".." / "shared" / "data").resolve()


def load(data: Path, n_oos_test: int) -> dict[str, Any]:
    need = [data / "banking77" / "train.csv", data / "nlupp" / "hotels", data / "trec" / "TREC.train"]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        sys.exit(f"intent_pipeline: shared data missing ({', '.join(missing)}); give --data-dir or set "
                 "SYNTHKD_SHARED_DATA (see ../shared/data/README.md)")
    spec = yaml.safe_load(SPEC.read_text())
    intents = list(spec["labels"])
    seeds = {lab: set(spec["seed_examples"][lab]) for lab in intents}
    by: dict[str, list[str]] = {}
    with open(data / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by.setdefault(row["category"], []).append(row["text"])
    pools = {lab: [t for t in by[lab] if t not in seeds[lab]] for lab in intents}
    others = sorted(lab for lab in by if lab not in intents)[:: max(1, len(by) // OOS_TRAIN_INTENTS)][:OOS_TRAIN_INTENTS]
    trec = [line.split(" ", 1)[1].strip() for line in
            (data / "trec" / "TREC.train").read_text(encoding="latin-1").splitlines()[:300] if " " in line]
    oos_train = [t for lab in others for t in by[lab][:25]] + trec
    hotels: list[str] = []
    for fold in sorted((data / "nlupp" / "hotels").glob("fold*.json"), key=lambda p: int(p.stem[4:])):
        for ex in json.loads(fold.read_text()):
            if ex["text"] not in hotels:
                hotels.append(ex["text"])
    return {"intents": intents, "pools": pools, "oos_train": oos_train, "oos_intents": others,
            "hotels": hotels[:n_oos_test]}


def pipeline_yaml(out: Path, name: str, *, variant: str, labels: Path, test: Path, data_only: bool = False,
                  sizes: dict[str, Any]) -> Path:
    cfg = yaml.safe_load(PIPELINE.read_text())
    cfg["teacher"]["cache"] = str(out / name / "teacher-cache.sqlite")
    stages = []
    for st in cfg["stages"]:
        o = st.get("options", {})
        if "labels" in o:
            o["labels"] = str(labels)
        for op in o.get("ops", []):
            if "labels" in op:
                op["labels"] = str(labels)
        if st["name"] == "tasks":
            o["per_label"] = sizes["per_label"]
        if st["name"] == "promptmix":
            o["per_label"] = sizes["promptmix_per_label"]
        if st["name"] == "eval":
            st["input"] = str(test)
        if variant in ("without", "conflicts"):
            if st["name"] == "relabel_tasks":
                continue
            if st["name"] == "merge":
                st["inputs"]["tasks"] = "tasks"
            if st["name"] == "promptmix":
                o.pop("confusion", None)  # no relabel data: PromptMix pairs by description, as before
            if st["name"] == "clean" and variant == "without":
                o["ops"] = [op for op in o["ops"] if op["op"] != "label_conflicts"]
        if data_only and st["name"] in ("train", "eval"):
            continue
        stages.append(st)
    cfg["stages"] = stages
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(path: Path, out: Path, name: str, url: str, *, kill_after_rows: int | None = None) -> tuple[float, int]:
    env = {**os.environ, "OPENAI_BASE_URL": url, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("OPENAI_API_KEY", None)
    cmd = [sys.executable, "-m", "synthkd.cli", "run", str(path), "--set", f"run_dir={out / name}"]
    t0 = time.time()
    if kill_after_rows is None:
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"{name}: exit {res.returncode}\n{res.stderr[-3000:]}")
        return time.time() - t0, 0
    tasks = out / name / "intent-from-prompts" / "tasks.jsonl"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if tasks.exists() and tasks.read_bytes().count(b"\n") >= kill_after_rows:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    left = tasks.read_bytes().count(b"\n") if tasks.exists() else 0
    return time.time() - t0, left


def manifest(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / name / "intent-from-prompts" / "manifest.json").read_text())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def abstain_table(student: Path, labels: Path, test: Path, what: str, thresholds=(0.5, 0.7, 0.9)) -> None:
    """In-scope accuracy and OOS recall of ``student`` on ``test`` with ``abstain_below`` thresholds (the
    out-of-scope class is ``out_of_scope``, in the label file or not)."""
    from synthkd.train.evaluate import EvalConfig, run_eval

    for thr in thresholds:
        rep = run_eval(EvalConfig(student=str(student), input=test, kind="label", input_field="text",
                                  gold_field="label", labels=[str(labels)], out_of_scope="out_of_scope",
                                  abstain_below=thr, batch_size=64))
        m = rep["metrics"]
        print(f"  {what}, abstain_below {thr}: in-scope accuracy {m['in_scope_accuracy']:.3f}, OOS recall "
              f"{m['oos_recall']:.3f}, abstained {m['abstained_below_threshold']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="shared data folder (default: $SYNTHKD_SHARED_DATA or ../shared/data)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--task-wrong-rate", type=float, default=0.10)
    ap.add_argument("--classify-wrong-rate", type=float, default=0.03)
    ap.add_argument("--per-label", type=int, default=40, help="generate.tasks per_label (ready file: 40)")
    ap.add_argument("--promptmix-per-label", type=int, default=20, help="PromptMix per_label (ready file: 20)")
    ap.add_argument("--oos-test", type=int, default=160, help="NLU++ hotel utterances added to the eval set")
    ap.add_argument("--skip-train", action="store_true", help="only the determinism checks")
    args = ap.parse_args(argv)

    from synthkd.testing.banking77_responder import Banking77Responder
    from synthkd.testing.server import FaultConfig, TestServer

    d = load(data_dir(args.data_dir), args.oos_test)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="intent-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"per_label": args.per_label, "promptmix_per_label": args.promptmix_per_label}
    spec = yaml.safe_load(SPEC.read_text())
    spec_oos = {**spec, "out_of_scope": {
        "description": "The message is not about any of these intents: another banking need, another "
                       "service, or something else entirely.",
        "examples": d["oos_train"][:3]}}
    labels_oos = out / "labels_oos.yaml"
    labels_oos.write_text(yaml.safe_dump(spec_oos, sort_keys=False))
    test_rows = [json.loads(line) for line in TEST.read_text().splitlines() if line.strip()]
    test_oos = out / "test_oos.jsonl"
    test_oos.write_text("".join(json.dumps(r) + "\n" for r in test_rows + [
        {"id": f"hotel{i}", "text": t, "label": "hotel_request"} for i, t in enumerate(d["hotels"])]))

    def teacher(oos: bool = False) -> Any:
        pools = dict(d["pools"])
        if oos:
            pools["out_of_scope"] = d["oos_train"][3:]
        seeds = {lab: list(spec["seed_examples"][lab]) for lab in d["intents"]}
        return Banking77Responder(pools, seeds, wrong_rate=args.classify_wrong_rate,
                                  task_wrong_rate=args.task_wrong_rate)

    print(f"intents: {len(d['intents'])} ({', '.join(d['intents'])}); teacher pools: "
          f"{sum(len(p) for p in d['pools'].values())} real train utterances; task mislabel rate "
          f"{args.task_wrong_rate:.0%} (texts shared across labels), classifier error rate {args.classify_wrong_rate:.0%}")
    print(f"sizes: tasks per_label {args.per_label}, PromptMix per_label {args.promptmix_per_label}; eval: "
          f"{len(test_rows)} real Banking77 test rows (+{len(d['hotels'])} NLU++ hotel rows as out-of-scope in 'oos')")
    print(f"out-of-scope training pool (scripted teacher's answers to the OOS prompt): {len(d['oos_train']) - 3} texts "
          f"= 25 train utterances of each of {len(d['oos_intents'])} other Banking77 intents + 300 TREC questions")
    print(f"work folder: {out}\n")

    # ---------------------------------------------------------------- determinism
    srv = TestServer(FaultConfig(latency_ms=15, latency_jitter_ms=15, seed=1), responder=teacher()).start()
    try:
        shas, rows_of = {}, {}
        for name in ("det_a", "det_b"):
            p = pipeline_yaml(out, name, variant="with", labels=SPEC, test=TEST, data_only=True, sizes=sizes)
            secs, _ = run(p, out, name, srv.base_url)
            rd = out / name / "intent-from-prompts"
            shas[name] = sha(rd / "clean.jsonl")
            rows_of[name] = [(r["id"], r["label"], r["text"]) for r in map(json.loads, (rd / "tasks.jsonl").read_text().splitlines())]
            n_clean = len((rd / "clean.jsonl").read_text().splitlines())
            print(f"{name}: data stages in {secs:.1f} s; clean.jsonl sha256 {shas[name]} ({n_clean} rows)")
        slow = TestServer(FaultConfig(latency_ms=60, latency_jitter_ms=60, seed=2), responder=teacher()).start()
        try:
            p = pipeline_yaml(out, "det_kill", variant="with", labels=SPEC, test=TEST, data_only=True, sizes=sizes)
            _, left = run(p, out, "det_kill", slow.base_url, kill_after_rows=args.per_label * 2)
            print(f"det_kill: SIGKILL with {left} rows in tasks.jsonl; rerun:")
            secs, _ = run(p, out, "det_kill", slow.base_url)
        finally:
            slow.stop()
        rd = out / "det_kill" / "intent-from-prompts"
        shas["det_kill"] = sha(rd / "clean.jsonl")
        rows_of["det_kill"] = [(r["id"], r["label"], r["text"]) for r in map(json.loads, (rd / "tasks.jsonl").read_text().splitlines())]
        print(f"det_kill: resumed in {secs:.1f} s; clean.jsonl sha256 {shas['det_kill']}")
        same = len(set(shas.values())) == 1
        same_tasks = rows_of["det_a"] == rows_of["det_b"] == rows_of["det_kill"]
        print(f"dataset byte-identical on two runs and after SIGKILL + resume: {same}; tasks.jsonl (id, label, text) "
              f"in file order identical: {same_tasks} ({len(rows_of['det_a'])} rows)\n")
    finally:
        srv.stop()
    if args.skip_train:
        return 0 if same and same_tasks else 1

    # ---------------------------------------------------------------- accuracy with / without, OOS
    results = {}
    intent_of = {t: lab for lab, texts in d["pools"].items() for t in texts}
    for variant in ("without", "conflicts", "with", "oos"):
        t = teacher(oos=variant == "oos")
        srv = TestServer(FaultConfig(), responder=t).start()
        try:
            p = pipeline_yaml(out, variant, variant=variant, labels=labels_oos if variant == "oos" else SPEC,
                              test=test_oos if variant == "oos" else TEST, sizes=sizes)
            secs, _ = run(p, out, variant, srv.base_url)
        finally:
            srv.stop()
        m = manifest(out, variant)["stages"]
        ev = m["eval"]["counts"]["metrics"]
        rows = [json.loads(x) for x in (out / variant / "intent-from-prompts" / "clean.jsonl").read_text().splitlines()]
        wrong = sum(1 for r in rows if r["text"] in intent_of and intent_of[r["text"]] != r["label"])
        results[variant] = ev
        print(f"{variant}: {secs:.0f} s; training rows {len(rows)} ({wrong} whose label is not the text's real "
              f"Banking77 intent); teacher calls {dict(t.calls)}")
        print("  stage rows in -> out: " + ", ".join(
            f"{n} {c['counts'].get('rows_in')}->{c['counts'].get('rows_out')}" for n, c in m.items()
            if n not in ("train", "eval")))
        print(f"  eval: accuracy {ev['accuracy']:.3f} on {ev['rows']} rows, macro-F1 {ev.get('macro_f1', 0):.3f}")
        if "oos_recall" in ev:
            print(f"  in-scope accuracy {ev['in_scope_accuracy']:.3f} ({ev['in_scope_rows']} rows), OOS recall "
                  f"{ev['oos_recall']:.3f} ({ev['oos_rows']} hotel rows), OOS precision {ev['oos_precision']}")
        funnel = json.loads((out / variant / "intent-from-prompts" / "clean.funnel.json").read_text())
        for st in funnel.get("stages", []):
            if st.get("dropped") or st.get("details", {}).get("conflicting_texts"):
                extra = st.get("details", {})
                note = (f" (conflicting texts {extra['conflicting_texts']}, outcomes {extra['outcomes']})"
                        if "conflicting_texts" in extra else "")
                print(f"  clean {st['name']}: {st['rows_in']} -> {st['rows_out']}, {st['reasons']}{note}")
        pm = [json.loads(x) for x in (out / variant / "intent-from-prompts" / "promptmix.jsonl").read_text().splitlines()]
        print(f"  PromptMix pair_by: {dict(Counter(r.get('pair_by') for r in pm))}")
    # abstention alone (the 'with' student, no out-of-scope class in training) vs the out-of-scope class
    abstain_table(out / "with" / "intent-from-prompts" / "train", SPEC, test_oos, "with, abstention only")
    abstain_table(out / "oos" / "intent-from-prompts" / "train", labels_oos, test_oos, "oos")
    for v in ("conflicts", "with"):
        delta = results[v]["accuracy"] - results["without"]["accuracy"]
        print(f"{v} vs without: {100 * delta:+.1f} points of student accuracy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
