"""``synthkd demo``: the whole loop offline, in minutes, through the real HTTP path.

It starts two simulated teachers on 127.0.0.1 (:mod:`synthkd.testing.simulated`: arithmetic word
problems with known answers; the teacher writes step-by-step rationales, slips on some, and adds
formatting noise) — one careful, one noisy — then runs an ordinary pipeline (written to
``runs/demo/pipeline.yaml`` so it can be read and rerun) that generates rationales, filters the noisy
ones for consistency, trains tiny students from scratch on CPU and evaluates them on held-out problems.
It prints two comparisons, both at equal data (every student trains on the same number of rows, a
seeded sample by id): label-only distillation vs rationale vs multitask step-by-step on the careful
teacher's rows; and with the noisy teacher, its rows unfiltered vs those its consistency filter keeps
(both in rationale mode; the noisy teacher answers more problems, so that its filtered rows fill the
sample too).

Sized so the effects show (issue 16): each answer takes two arithmetic steps, which a 0.8M-parameter
student trained from scratch rarely computes in one go (label-only: 4-8%) but learns step by step
from 1,250 rows and 10 epochs (rationale: 48-65% over seeds 0-2).  ``--seeds 0,1,2`` runs it per seed
and adds mean ± standard error.  Reproducible: the simulated teachers answer from (seed, question)
alone, rows are trained on in id order, and torch runs on a fixed number of threads
(:func:`fixed_torch_threads`), so concurrency, server errors and machine load change nothing.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from synthkd.testing.simulated import SimulatedResponder, make_problems
from synthkd.train.export import write_jsonl


def run_spec(spec: dict[str, Any], run_dir: Path, base: Path) -> dict[str, Any]:
    """Write the pipeline a demo built to ``run_dir/pipeline.yaml`` (readable, rerunnable) and run it;
    returns the manifest."""
    from synthkd.config import PipelineConfig
    from synthkd.pipeline import run_pipeline

    run_dir.mkdir(parents=True, exist_ok=True)
    # the runner writes into <run_dir>/<name>: both come from ``run_dir`` itself, so each seed of
    # `--seeds` runs in its own runs/<demo>_seed<s> (with the demo's fixed name, every seed ran in
    # runs/<demo> over the previous one).  The parent is written out absolute: paths in a pipeline file
    # are relative to the file, and `synthkd run runs/<name>/pipeline.yaml` must rerun into this directory.
    spec = {**spec, "name": run_dir.name, "run_dir": str(Path(base, run_dir).resolve().parent)}
    (run_dir / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    cfg = PipelineConfig.model_validate(spec)
    cfg._source = run_dir / "pipeline.yaml"
    return asyncio.run(run_pipeline(cfg, base_dir=base)).manifest


def stage_accuracy(stages: dict[str, Any], name: str) -> str:
    """An eval stage's accuracy as a table cell ("-" when it did not run)."""
    m = (stages.get(name, {}).get("counts") or {}).get("metrics") or {}
    a = m.get("accuracy")
    return "-" if a is None else f"{100 * a:.1f}%"


#: The tiny students' shape: big enough to learn the arithmetic steps from a few thousand rows on CPU.
TINY = {"hidden_size": 128, "layers": 2, "heads": 4, "vocab_size": 600}


def teacher_model_name(role: str, responder: SimulatedResponder) -> str:
    """``simulated-<role>`` plus every knob that changes an answer: the request cache is keyed by model
    name, so a rerun with another ``--error-rate`` never gets the previous setting's cached answers."""
    return (f"simulated-{role}?error_rate={responder.error_rate:g}&noise_rate={responder.noise_rate:g}"
            f"&salt={responder.salt}" + ("" if responder.similar_kind == "template" else
                                         f"&similar={responder.similar_kind}"))


def build_pipeline(data: Path, careful: tuple[str, str], noisy: tuple[str, str], *, rows: int, epochs: float,
                   lr: float, batch_size: int, seed: int, tiny: dict[str, int] | None = None, concurrency: int = 16,
                   noisy_mode: str = "rationale") -> dict[str, Any]:
    """The demo's pipeline.  ``careful`` / ``noisy``: (model name, base URL) of the two teachers; ``rows``:
    the training rows of every student (a seeded sample by id, the same ids wherever the sets share them)."""
    train = {"student": "tiny", "epochs": epochs, "learning_rate": lr, "batch_size": batch_size,
             "max_length": 192, "seed": seed, "logging_steps": 20, "tiny": {**(tiny or TINY), "seed": seed}}
    ev = {"kind": "number", "gold_field": "gold", "input_field": "question", "batch_size": 64, "max_new_tokens": 64}
    teacher = lambda t: {"model": t[0], "base_url": t[1], "concurrency": concurrency}  # noqa: E731
    consistency = {"op": "consistency", "mode": "gold", "kind": "number"}
    sample = {"op": "sample", "n": rows, "seed": seed}
    stages: list[dict[str, Any]] = [
        {"name": "rationales", "kind": "generate.rationales", "input": str(data / "train.jsonl"),
         "teacher": teacher(careful), "options": {"kind": "math", "n_demos": 0, "max_tokens": 128}},
        # the careful teacher's rows go through the filter too: every mode then trains on the same right rows
        {"name": "filtered", "kind": "clean", "input": "rationales", "options": {"ops": [consistency, sample]}},
        # the noisy teacher answers more problems, so that what its filter keeps still fills the sample
        {"name": "noisy_rationales", "kind": "generate.rationales", "input": str(data / "noisy_train.jsonl"),
         "teacher": teacher(noisy), "options": {"kind": "math", "n_demos": 0, "max_tokens": 128}},
        # no filter: as many of the noisy teacher's rows, right or wrong
        {"name": "noisy_unfiltered", "kind": "clean", "input": "noisy_rationales", "options": {"ops": [sample]}},
        {"name": "noisy_filtered", "kind": "clean", "input": "noisy_rationales",
         "options": {"ops": [consistency, sample]}},
    ]
    for mode in ("label", "rationale", "multitask"):
        stages.append({"name": f"sft_{mode}", "kind": "train.sft", "input": "filtered", "options": {**train, "mode": mode}})
    # rows with no parsable answer cannot be trained on (the consistency filter drops them; here they are skipped)
    stages.append({"name": "sft_noisy_unfiltered", "kind": "train.sft", "input": "noisy_unfiltered",
                   "options": {**train, "mode": noisy_mode, "skip_invalid": True}})
    stages.append({"name": "sft_noisy_filtered", "kind": "train.sft", "input": "noisy_filtered",
                   "options": {**train, "mode": noisy_mode}})
    for name in STUDENTS:
        stages.append({"name": f"eval_{name}", "kind": "eval", "input": str(data / "test.jsonl"),
                       "options": {**ev, "student": f"sft_{name}"}})
    return {"name": "demo", "description": "synthkd offline demo", "run_dir": "runs", "seed": seed, "stages": stages}


def noisy_problems_needed(rows: int, noisy_error_rate: float, noise_rate: float) -> int:
    """Problems the noisy teacher answers so that, after its filter, ``rows`` right ones are left with
    room to spare: its expected keep rate (no slip, and no formatting noise that loses the answer,
    counted in full) less a margin of 4 binomial standard deviations."""
    import math

    keep = max(0.05, (1 - noisy_error_rate) * (1 - noise_rate / 2))
    n = rows / keep
    for _ in range(5):  # n * keep - 4 * sqrt(n * keep * (1 - keep)) >= rows
        n = (rows + 4 * math.sqrt(n * keep * (1 - keep))) / keep
    return math.ceil(n)


STUDENTS = ("label", "rationale", "multitask", "noisy_unfiltered", "noisy_filtered")


def run_demo(*, n_train: int = 1500, rows: int | None = None, n_test: int = 200, error_rate: float = 0.1,
             noisy_error_rate: float = 0.4, noise_rate: float = 0.1, epochs: float = 10.0, lr: float = 2e-3,
             batch_size: int = 16, seed: int = 0, tiny: dict[str, int] | None = None, noisy_mode: str = "rationale",
             concurrency: int = 16, latency_ms: int = 150, server_error_rate: float = 0.05,
             run_name: str = "demo", base_dir: Path | None = None) -> dict[str, Any]:
    """One demo run (one seed) in ``runs/<run_name>``; returns the table, the accuracies and the times.

    ``n_train``: problems the careful teacher answers; ``rows``: training rows of every student (default
    5/6 of ``n_train``: at the default 10% slips the careful teacher's filter keeps about 9/10, so the
    sample is full); the noisy teacher answers as many problems as its filter needs to fill ``rows``."""
    from synthkd.testing.server import FaultConfig, TestServer

    base = base_dir or Path.cwd()
    run_dir = base / "runs" / run_name
    data = run_dir / "data"
    from synthkd.pipeline import claim_run_dir

    claim_run_dir(run_dir, run_name)  # marked as synthkd's before the demo writes its inputs into it
    if rows is None:
        rows = max(1, round(n_train * 5 / 6))
    n_noisy = max(n_train, noisy_problems_needed(rows, noisy_error_rate, noise_rate))
    problems = make_problems(n_noisy + n_test, seed=seed)
    train, noisy_train, test = problems[:n_train], problems[:n_noisy], problems[n_noisy:]
    write_jsonl([{"id": p.id, "question": p.question, "answer": p.answer} for p in train], data / "train.jsonl")
    write_jsonl([{"id": p.id, "question": p.question, "answer": p.answer} for p in noisy_train],
                data / "noisy_train.jsonl")
    write_jsonl([{"id": p.id, "question": p.question, "gold": p.answer} for p in test], data / "test.jsonl")
    # the seed is in the salt: another seed is another teacher's slips, not only other problems
    careful = SimulatedResponder(problems, error_rate=error_rate, noise_rate=noise_rate, salt=f"careful{seed}")
    noisy = SimulatedResponder(problems, error_rate=noisy_error_rate, noise_rate=noise_rate, salt=f"noisy{seed}")
    t0, c0 = time.monotonic(), cpu_seconds()
    # latency as a real API would have it; the server's 500s exercise retries on the way (which requests
    # get one depends on arrival order; what a request finally gets does not)
    jitter = latency_ms * 2 // 3
    with TestServer(FaultConfig(latency_ms=latency_ms, latency_jitter_ms=jitter, error_rate=server_error_rate,
                                seed=seed), responder=careful) as s1, \
            TestServer(FaultConfig(latency_ms=latency_ms, latency_jitter_ms=jitter, error_rate=server_error_rate,
                                   seed=seed + 1), responder=noisy) as s2:
        spec = build_pipeline(data, (teacher_model_name("careful", careful), s1.base_url),
                              (teacher_model_name("noisy", noisy), s2.base_url), rows=rows, epochs=epochs, lr=lr,
                              batch_size=batch_size, seed=seed, tiny=tiny, concurrency=concurrency,
                              noisy_mode=noisy_mode)
        with fixed_torch_threads():
            stages = run_spec(spec, run_dir, base)["stages"]
    wall, cpu = time.monotonic() - t0, cpu_seconds() - c0
    table = demo_table(stages, error_rate, noisy_error_rate, noisy_mode)
    (run_dir / "demo_table.md").write_text(table + f"\n\nwall time {wall:.0f} s, CPU time {cpu:.0f} s\n")
    return {"table": table, "wall_s": wall, "cpu_s": cpu, "run_dir": str(run_dir), "seed": seed,
            "accuracy": {name: accuracy_of(stages, f"eval_{name}") for name in STUDENTS}}


#: torch threads while a demo trains and evaluates.  Why fixed: float sums split over another number of
#: threads round differently, and over thousands of steps that is another student; with the thread
#: count fixed (and not taken from the machine) a seed gives one table on any machine of the same kind.
#: Why one: these students are too small to gain much from a second thread, and on a busy machine a
#: two-thread step waits at every barrier for a descheduled thread (measured on a 2-core machine at
#: load 11: two threads did not finish 15 training steps in 120 s, one thread took 0.84 s a step).
DEMO_THREADS = 1


@contextmanager
def fixed_torch_threads(threads: int = DEMO_THREADS) -> Iterator[None]:
    """Fixed torch threads for the demo's duration (restored after).

    Why not also ``torch.use_deterministic_algorithms``: on CPU with a fixed thread count the kernels the
    demo uses already give the same bits on every run (the reproducibility test compares weights byte
    for byte), and the deterministic variants made TRL's chunked log-prob loss 2.3x slower (0.212 vs
    0.092 s a step for the demo's student, one thread) — the difference between a 15- and a 10-minute
    demo."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the demo trains in this process)."""
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def accuracy_of(stages: dict[str, Any], name: str) -> float | None:
    a = ((stages.get(name, {}).get("counts") or {}).get("metrics") or {}).get("accuracy")
    return None if a is None else float(a)


def demo_table(stages: dict[str, Any], error_rate: float, noisy_error_rate: float, noisy_mode: str = "rationale") -> str:
    def acc(name: str) -> str:
        return stage_accuracy(stages, f"eval_{name}")

    def rows(stage: str) -> Any:
        return (stages.get(stage, {}).get("counts") or {}).get("rows_in", "-")

    teacher_acc = ((stages.get("rationales", {}).get("counts") or {}).get("teacher_scores") or {}).get("accuracy")
    noisy_acc = ((stages.get("noisy_rationales", {}).get("counts") or {}).get("teacher_scores") or {}).get("accuracy")
    def answered(stage: str) -> Any:
        return (stages.get(stage, {}).get("counts") or {}).get("rows_in", "-")

    lines = [
        "| comparison | training data | rows | student accuracy (held-out) |",
        "|---|---|---|---|",
        f"| label-only distillation (input → answer) | careful teacher ({error_rate:.0%} slips), filtered | {rows('sft_label')} | {acc('label')} |",
        f"| rationale (input → rationale + answer; reasons at inference) | same rows | {rows('sft_rationale')} | {acc('rationale')} |",
        f"| multitask step-by-step (predict: answer + explain: rationale; answer only at inference) | same rows | {rows('sft_multitask')} | {acc('multitask')} |",
        f"| {noisy_mode}, noisy teacher, no filter | noisy teacher ({noisy_error_rate:.0%} slips), right or wrong | {rows('sft_noisy_unfiltered')} | {acc('noisy_unfiltered')} |",
        f"| {noisy_mode}, noisy teacher, consistency filter | same teacher, wrong answers dropped | {rows('sft_noisy_filtered')} | {acc('noisy_filtered')} |",
    ]
    lines.append(f"\nevery student: a seeded sample (by id) of its rows; the careful teacher answered "
                 f"{answered('filtered')} problems, the noisy one {answered('noisy_filtered')}")
    if teacher_acc is not None and noisy_acc is not None:
        lines.append(f"teacher accuracy on the training problems: careful {100 * teacher_acc:.1f}%, "
                     f"noisy {100 * noisy_acc:.1f}%")
    return "\n".join(lines)


#: The effects the demo is built to show: (column, better arm, baseline arm).
EFFECTS = (("rationale − label", "rationale", "label"), ("multitask − label", "multitask", "label"),
           ("filtered − unfiltered", "noisy_filtered", "noisy_unfiltered"))


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n); 0 for one value)."""
    import math

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def seeds_table(results: list[dict[str, Any]], columns: tuple[tuple[str, str], ...],
                effects: tuple[tuple[str, str, str], ...]) -> str:
    """Per-seed accuracies (percent) and effects (points), then mean ± standard error over the seeds.

    ``columns``: (header, accuracy key); ``effects``: (header, better key, baseline key)."""
    head = ["seed", *(h for h, _ in columns), *(h for h, _, _ in effects)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(r: dict[str, Any], k: str) -> float | None:
        a = r["accuracy"].get(k)
        return None if a is None else 100 * a

    def fmt(v: float | None, signed: bool = False) -> str:
        return "-" if v is None else (f"{v:+.1f}" if signed else f"{v:.1f}%")

    for r in results:
        cells = [str(r["seed"]), *(fmt(pct(r, k)) for _, k in columns)]
        for _, a, b in effects:
            va, vb = pct(r, a), pct(r, b)
            cells.append(fmt(None if va is None or vb is None else va - vb, signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    if len(results) > 1:
        cells = ["mean ± SE"]
        for _, k in columns:
            vals = [v for r in results if (v := pct(r, k)) is not None]
            cells.append("-" if len(vals) < len(results) else "{:.1f} ± {:.1f}%".format(*mean_se(vals)))
        for _, a, b in effects:
            diffs = [va - vb for r in results if (va := pct(r, a)) is not None and (vb := pct(r, b)) is not None]
            cells.append("-" if len(diffs) < len(results) else "{:+.1f} ± {:.1f}".format(*mean_se(diffs)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DEMO_COLUMNS = (("label-only", "label"), ("rationale", "rationale"), ("multitask", "multitask"),
                ("noisy, no filter", "noisy_unfiltered"), ("noisy, filtered", "noisy_filtered"))


def run_seeds(run: Callable[..., dict[str, Any]], name: str, seeds: list[int], columns: Any, effects: Any,
              base_dir: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """``run`` once per seed (``runs/<name>`` for one seed, ``runs/<name>_seed<s>`` for several), then the
    per-seed table with the mean ± standard error of each accuracy and effect (both demos)."""
    results = [run(seed=s, run_name=name if len(seeds) == 1 else f"{name}_seed{s}", base_dir=base_dir, **kwargs)
               for s in seeds]
    return {"results": results, "summary": seeds_table(results, columns, effects),
            "wall_s": sum(r["wall_s"] for r in results), "cpu_s": sum(r["cpu_s"] for r in results)}


def run_demo_seeds(seeds: list[int], base_dir: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """The demo once per seed (``runs/demo`` for one seed, ``runs/demo_seed<s>`` for several)."""
    return run_seeds(run_demo, "demo", seeds, DEMO_COLUMNS, EFFECTS, base_dir, **kwargs)



