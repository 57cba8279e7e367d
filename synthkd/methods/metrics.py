"""Each generation method's own metrics, declared once: ``synthkd generate <method>`` (its
``--summary-json`` and the lines it prints) and the method's pipeline stage (``method_metrics`` in the
run manifest, shown by the report) read the same collector, so a figure the CLI shows is never missing
from a pipeline run (PromptMix's relabel agreement was CLI-only).

A collector sees every row the method yields (kept rows and rejects: :meth:`observe`), holds the
method's own counters (its stats object), and gives the metrics as a dict (:meth:`as_dict`) and as
lines for a terminal (:meth:`lines`).  The metrics per method:

* ``tasks`` (:class:`TasksMetrics`): the method's counters (kept, drops by reason, per label, short
  labels, requests, re-asks...) plus ``candidates``, ``dedup_dropped`` (seed copies, exact and near
  duplicates), ``keep_rate`` (kept / candidates not dropped as surplus) and ``items_per_request`` —
  the measured figures ``synthkd validate`` uses to estimate the requests a rerun needs;
* ``promptmix`` (:class:`PromptMixMetrics`): calls planned/answered/failed, items parsed/kept after
  dedup, drops, rows per label, the alpha spread, and ``relabel``: intended vs relabeled agreement
  with the top confusions;
* ``rationales``: :class:`synthkd.methods.rationales.RationaleTally` (answered, accuracy vs gold,
  self-consistency agreement, rationalizations...);
* ``relabel`` (:func:`relabel_metrics`): intended vs relabeled agreement over the whole output file;
* ``preferences`` (:class:`PreferencesMetrics`): pairs, rows without a pair by reason, requests per model.

The teacher's own counters (requests, tokens, cost, structured-output re-asks) are not repeated here:
the CLI prints them from the teacher's stats and the manifest records them per stage (``teacher``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from synthkd.methods.rationales import RationaleTally

__all__ = ["TasksMetrics", "PromptMixMetrics", "RationaleTally", "PreferencesMetrics", "relabel_metrics",
           "DEDUP_REASONS", "KEEP_RATE_PRIOR", "expected_task_requests"]

#: drop reasons that are dedup losses (a candidate repeating a seed example or an earlier candidate)
DEDUP_REASONS = ("seed_copy", "exact_duplicate", "near_duplicate", "duplicate", "seed copy")

#: The share of a task-generation request's items expected to be kept (not lost to dedup, too-short or
#: truncated items), before any run has measured it.  Why 0.5, not the method's own 0.8 first-wave
#: guess: a teacher asked for many examples of one label repeats itself — issue 18's 15-intent run
#: needed 149 requests where 75 were estimated at 0.8 (an effective rate near 0.4), and the scripted
#: Banking77 teacher of the ready intent pipeline keeps 0.46 (``benchmarks/pipeline_estimates.py``).
#: ``synthkd validate`` says when it uses this prior, and uses the measured ``keep_rate`` of the
#: stage's last run instead when there is one.
KEEP_RATE_PRIOR = 0.5


def _is_dedup(reason: str) -> bool:
    return any(reason.startswith(r) for r in DEDUP_REASONS) or "duplicate" in reason


@dataclass
class TasksMetrics:
    """``generate tasks`` (and ``self-instruct``): the method's :class:`~synthkd.teachers.jobs.MethodStats`
    plus the dedup figures derived from it."""

    stats: Any  # MethodStats
    batch_size: int | None = None

    def observe(self, row: dict[str, Any]) -> None:
        """Nothing to add per row: the method counts as it decides."""

    def as_dict(self) -> dict[str, Any]:
        st = self.stats
        d = st.as_dict()
        drops: dict[str, int] = dict(st.drops)
        candidates = st.kept + sum(n for r, n in drops.items() if r not in ("teacher_error", "unparseable_response",
                                                                            "invalid_structured_response"))
        surplus = sum(n for r, n in drops.items() if r.startswith("surplus"))
        dedup = sum(n for r, n in drops.items() if _is_dedup(r))
        answered = st.requests - st.failed
        d.update(candidates=candidates, dedup_dropped=dedup,
                 keep_rate=round(st.kept / (candidates - surplus), 4) if candidates - surplus > 0 else None,
                 items_per_request=round((candidates) / answered, 4) if answered > 0 else None)
        return d

    def lines(self) -> list[str]:
        d = self.as_dict()
        out = []
        if d["candidates"]:
            out.append(f"candidates {d['candidates']}: kept {d['kept']}, lost to dedup {d['dedup_dropped']}"
                       + (f" (keep rate {d['keep_rate']:.2f})" if d["keep_rate"] is not None else ""))
        out += [f"short: {what}: {why}" for what, why in sorted(self.stats.short.items())]
        return out


@dataclass
class PromptMixMetrics:
    """``generate promptmix``: the method's :class:`~synthkd.methods.promptmix.PromptMixStats`, the
    calls planned, and what the rows show (alpha spread, rows per label, intended vs relabeled)."""

    stats: Any  # PromptMixStats
    calls_planned: int = 0
    policy: str = ""
    pairs: list[tuple[str | None, str | None]] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    by_class: Counter = field(default_factory=Counter)

    def observe(self, row: dict[str, Any]) -> None:
        if "relabeled_label" in row and not str(row.get("reject_reason", "")).startswith("teacher error"):
            self.pairs.append((row["intended_label"], row["relabeled_label"]))
            self.alphas.append(row["alpha"])
        if "reject_reason" not in row:
            self.by_class[row["label"]] += 1

    def confusion(self) -> dict[str, Any]:
        from synthkd.labels import confusion_summary

        return confusion_summary(self.pairs)

    def as_dict(self) -> dict[str, Any]:
        s, a = self.stats, self.alphas
        return {"calls_planned": self.calls_planned, "calls_answered": s.calls, "failed_calls": s.failed_calls,
                "parsed": s.parsed, "kept": s.kept, "dropped": dict(s.dropped),
                "rows_per_label": dict(sorted(self.by_class.items())),
                "alpha_mean": round(sum(a) / len(a), 4) if a else None,
                "alpha_min": round(min(a), 4) if a else None, "alpha_max": round(max(a), 4) if a else None,
                "confusion": self.confusion()}

    def lines(self) -> list[str]:
        from synthkd.labels import format_confusion

        out = []
        a = self.alphas
        if a:
            out.append(f"alpha: mean {sum(a) / len(a):.3f}, min {min(a):.2f}, max {max(a):.2f}; "
                       f"rows per label ({self.policy}): " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_class.items())))
        out += format_confusion(self.confusion()).split("\n")
        return out


def relabel_metrics(output: Path, intended: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
    """``generate relabel``: intended vs relabeled over every row of the output file (this run's and
    earlier runs'), as :func:`synthkd.labels.confusion_summary`."""
    from synthkd.jsonl_io import iter_jsonl
    from synthkd.labels import confusion_summary

    if not Path(output).exists():
        return confusion_summary([])
    return confusion_summary((intended(r), r.get("relabeled_label")) for _, r in iter_jsonl(output))


@dataclass
class PreferencesMetrics:
    """``generate preferences``: pairs written, rows without a pair by reason, requests per model."""

    mode: str
    pairs: int = 0
    no_pair: Counter = field(default_factory=Counter)

    def observe(self, row: dict[str, Any]) -> None:
        if "reject_reason" in row:
            self.no_pair[str(row["reject_reason"]).split(":")[0]] += 1
        else:
            self.pairs += 1

    def as_dict(self, models: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"mode": self.mode, "pairs_this_run": self.pairs, "no_pair": dict(sorted(self.no_pair.items())),
                **({"models": models} if models else {})}

    def lines(self) -> list[str]:
        return []


def observed(rows: Any, metrics: Any) -> Any:
    """``rows`` (an async iterator) with every row shown to ``metrics.observe`` on its way out."""
    async def gen() -> Any:
        async for row in rows:
            metrics.observe(row)
            yield row

    return gen()


def expected_task_requests(per_label: int, batch_size: int, cap: int, kept_per_request: float,
                           first_wave_rate: float = 0.8) -> int:
    """Requests one label of ``generate tasks`` is expected to need when a request yields
    ``kept_per_request`` kept rows on average, following the method's own policy
    (:func:`synthkd.methods.label_tasks.generate_label_examples`): a first wave of
    ``ceil(N / (batch * 0.8))`` requests, then top-ups of ``ceil(deficit / (batch * measured yield))``
    until N are kept or the cap is reached."""
    kept_per_request = max(kept_per_request, 1e-6)
    issued = min(cap, math.ceil(per_label / (batch_size * first_wave_rate)))
    kept = issued * kept_per_request
    while kept < per_label - 1e-9 and issued < cap:
        more = min(cap - issued, math.ceil((per_label - kept) / kept_per_request - 1e-9))
        issued += more
        kept += more * kept_per_request
    return issued
