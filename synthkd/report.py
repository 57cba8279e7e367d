"""``report.md`` (+ ``report.html`` and PNG plots) for a run directory, written from its manifest.

Why from the manifest: the manifest is the run's ledger (counts, drops, tokens, cost, timings, metrics
per stage), so the report can be rebuilt at any time (``synthkd report RUN_DIR``) and never disagrees
with it.  Conventions a stage follows in the counts it returns:
  rows_in, rows_out          the funnel
  dropped: {reason: n}       why rows left (the rejects file holds the rows themselves)
  loss_history: FILE         json list of {"step", "loss", ...} written by a training stage
  metrics: {...}             evaluation results (accuracy, macro_f1, n, teacher_accuracy...)
  rounds: [{round, ...}]     per-round metrics of a multi-round stage (``tailor``), with ``stopped``,
                             ``best_round``, ``best_accuracy`` and optionally ``reflection`` next to it
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt_money(x: Any) -> str:
    return "-" if x is None else f"${x:.4f}"


def price_unknown(teacher: dict[str, Any] | None) -> bool:
    """Whether a stage's teacher totals (the manifest's ``teacher``) have no known price: its cost is
    "unknown" (as the CLI says), never ``$0.0000``."""
    if not teacher:
        return False
    return teacher.get("price_known") is False or bool(teacher.get("requests") and teacher.get("cost_usd", 0) is None)


def stage_cost(teacher: dict[str, Any] | None) -> str:
    """A stage's teacher cost for the report: ``$X``, ``unknown`` (no price for the model), or ``-``."""
    if not teacher:
        return "-"
    if price_unknown(teacher):
        return f"unknown (no price for {teacher.get('model')!r})"
    return _fmt_money(teacher.get("cost_usd") or 0.0)


def total_cost(stages: dict[str, Any]) -> tuple[float, list[str]]:
    """(the known cost summed over the stages, the stages whose cost is unknown)."""
    known, unknown = 0.0, []
    for name, s in stages.items():
        t = s.get("teacher") or {}
        if price_unknown(t):
            unknown.append(name)
        else:
            known += t.get("cost_usd") or 0.0
    return known, unknown


def total_cost_line(stages: dict[str, Any]) -> str:
    """``$X``, or ``unknown`` with the known part and the stages whose model has no price."""
    known, unknown = total_cost(stages)
    if not unknown:
        return f"**{_fmt_money(known)}**"
    priced = [n for n, s in stages.items() if s.get("teacher") and n not in unknown]
    others = f"; the other stages: {_fmt_money(known)}" if priced else ""
    return f"**unknown** (no price for the model of {', '.join(unknown)}{others}; give prices with teacher.prices)"


def _plots(run_dir: Path, stages: dict[str, Any]) -> dict[str, str]:
    """Funnel and loss-curve PNGs; returns {kind: relative path}. Skipped quietly without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    out: dict[str, str] = {}
    plots = _inside(run_dir, "plots")
    plots.mkdir(exist_ok=True)
    funnel = [(n, s["counts"].get("rows_in"), s["counts"].get("rows_out")) for n, s in stages.items()
              if isinstance(s.get("counts"), dict) and s["counts"].get("rows_out") is not None]
    if funnel:
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(funnel) + 2), 3))
        names = [f[0] for f in funnel]
        xs = range(len(funnel))
        ax.bar([x - 0.2 for x in xs], [f[1] or 0 for f in funnel], width=0.4, label="rows in", color="#9bb7d4")
        ax.bar([x + 0.2 for x in xs], [f[2] or 0 for f in funnel], width=0.4, label="rows out", color="#1f4e79")
        ax.set_xticks(list(xs), names, rotation=20, ha="right")
        ax.set_ylabel("rows")
        ax.set_title("funnel")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plots / "funnel.png", dpi=110)
        plt.close(fig)
        out["funnel"] = "plots/funnel.png"
    curves = []
    for name, s in stages.items():
        hist = (s.get("counts") or {}).get("loss_history")
        if hist and Path(hist).exists():
            pts = [h for h in json.loads(Path(hist).read_text()) if "loss" in h and "step" in h]
            if pts:
                curves.append((name, pts))
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for name, pts in curves:
            ax.plot([p["step"] for p in pts], [p["loss"] for p in pts], label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plots / "loss.png", dpi=110)
        plt.close(fig)
        out["loss"] = "plots/loss.png"
    return out


def _inside(run_dir: Path, rel: str) -> Path:
    """``run_dir/rel``, proven to lie inside the run directory (no symlink or name leads out of it)."""
    from synthkd.pipeline import inside_run_dir

    return inside_run_dir(run_dir, run_dir / rel)


def write_report(run_dir: Path, manifest: dict[str, Any] | None = None) -> Path:
    run_dir = Path(run_dir)
    if manifest is None:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    stages: dict[str, Any] = manifest.get("stages", {})
    plots = _plots(run_dir, stages)
    lines = [f"# Run `{manifest.get('name', run_dir.name)}`", ""]
    lines.append(f"config hash `{str(manifest.get('config_hash', ''))[:12]}` · updated {manifest.get('updated', '?')} · "
                 + ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()))
    lines += ["", "## Stages, tokens and cost", "",
              "| stage | kind | status | seconds | rows in | rows out | teacher requests | cached | tokens in | tokens out | cost |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in stages.items():
        c = s.get("counts") or {}
        t = s.get("teacher") or {}
        lines.append(f"| {name} | {s.get('kind', '')} | {s.get('status', '')} | {s.get('seconds', '-')} | "
                     f"{c.get('rows_in', '-')} | {c.get('rows_out', '-')} | {t.get('requests', '-')} | "
                     f"{t.get('cached_answers', '-')} | {t.get('prompt_tokens', '-')} | {t.get('completion_tokens', '-')} | "
                     f"{stage_cost(t)} |")
    lines += ["", f"Total teacher cost: {total_cost_line(stages)}", ""]
    lines += ["## Funnel", ""]
    if "funnel" in plots:
        lines += [f"![funnel]({plots['funnel']})", ""]
    for name, s in stages.items():
        dropped = (s.get("counts") or {}).get("dropped") or {}
        if dropped:
            lines.append(f"- **{name}** dropped " + ", ".join(f"{n} × {r}" for r, n in sorted(dropped.items(), key=lambda x: -x[1])))
    lines.append("")
    if "loss" in plots:
        lines += ["## Training", "", f"![loss]({plots['loss']})", ""]
    evals = [(n, s["counts"]["metrics"]) for n, s in stages.items() if isinstance((s.get("counts") or {}).get("metrics"), dict)]
    if evals:
        keys = sorted({k for _, m in evals for k, v in m.items() if isinstance(v, (int, float))})
        lines += ["## Evaluation", "", "| stage | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for n, m in evals:
            lines.append(f"| {n} | " + " | ".join(_fmt_metric(m.get(k)) for k in keys) + " |")
        lines.append("")
    lines += method_section(stages)
    lines += _rounds_section(run_dir, stages)
    md = "\n".join(lines)
    path = _inside(run_dir, "report.md")
    path.write_text(md + "\n")
    _write_html(run_dir, md)
    return path


#: (column header, per-round key) of the "Tailored rounds" table
_ROUND_COLUMNS = (("round", "round"), ("status", "status"), ("held-out acc", "accuracy"),
                  ("pool acc", "pool_accuracy"), ("mistakes", "mistakes"), ("new rows", "new_rows"),
                  ("rejected", "rejected"), ("pairs", "pairs"), ("train rows", "train_rows"),
                  ("teacher requests", "teacher_requests"), ("tokens in", "prompt_tokens"),
                  ("tokens out", "completion_tokens"), ("cost", "cost_usd"), ("seconds", "wall_s"))


def _rounds_section(run_dir: Path, stages: dict[str, Any]) -> list[str]:
    """"Tailored rounds": per stage with per-round metrics, a table (best round in bold) and the
    held-out accuracy per round as ``plots/tailor_<stage>.png``."""
    multi = [(n, s["counts"]) for n, s in stages.items() if isinstance((s.get("counts") or {}).get("rounds"), list)]
    if not multi:
        return []
    lines = ["## Tailored rounds", ""]
    for name, c in multi:
        unknown_price = price_unknown(stages[name].get("teacher"))
        rounds = [h for h in c["rounds"] if isinstance(h, dict)]
        best = c.get("best_round")
        lines += [f"### `{name}`", ""]
        summary = f"{len(rounds)} round(s) run; stopped: {c.get('stopped') or '-'}"
        if best is not None:
            summary += f"; best round **{best}** (held-out accuracy {_fmt_metric(c.get('best_accuracy'))})"
        if c.get("model_dir"):
            summary += f"; final model `{c['model_dir']}`" + (f" ({c['final_model']})" if c.get("final_model") else "")
        lines += [summary, ""]
        lines += ["| " + " | ".join(h for h, _ in _ROUND_COLUMNS) + " |", "|" + "---|" * len(_ROUND_COLUMNS)]
        lines += [_round_row(h, bold=h.get("round") == best and best is not None, unknown_price=unknown_price)
                  for h in rounds]
        refl = c.get("reflection")
        if isinstance(refl, dict) and refl.get("accuracy") is not None:
            lines.append(_round_row({k: v for k, v in refl.items() if k in ("status", "accuracy", "pairs",
                                                                            "teacher_requests", "wall_s")}
                                    | {"round": f"dpo (from round {refl.get('from_round')})"}))
        # the stage's totals are the rounds' sums (the stage adds them up once)
        cost = "cost unknown" if unknown_price else _fmt_money(c.get("cost_usd") or 0.0)
        lines += ["", f"Teacher over all rounds: {c.get('teacher_requests', 0)} requests, "
                      f"{c.get('prompt_tokens', 0)} tokens in, {c.get('completion_tokens', 0)} tokens out, "
                      f"{cost}.", ""]
        plot = _rounds_plot(run_dir, name, rounds, best, refl if isinstance(refl, dict) else None)
        if plot:
            lines += [f"![held-out accuracy per round]({plot})", ""]
    return lines


def _round_row(h: dict[str, Any], bold: bool = False, unknown_price: bool = False) -> str:
    """One line of the "Tailored rounds" table; missing values are "-"."""
    cells = []
    for _, key in _ROUND_COLUMNS:
        v = h.get(key)
        if key == "cost_usd" and unknown_price and h.get("teacher_requests"):
            cell = "unknown"
        elif key == "cost_usd" and v is not None:
            cell = _fmt_money(v)
        elif key == "wall_s" and isinstance(v, (int, float)):
            cell = f"{v:.1f}"
        else:
            cell = _fmt_metric(v)
        cells.append(f"**{cell}**" if key == "round" and bold else cell)
    return "| " + " | ".join(cells) + " |"


def _rounds_plot(run_dir: Path, name: str, rounds: list[dict[str, Any]], best: Any,
                 reflection: dict[str, Any] | None) -> str | None:
    """Held-out (and pool) accuracy per round, drawn from the manifest; None without matplotlib."""
    try:
        from synthkd.loops.tailored import plot_rounds
    except ImportError:
        return None
    _inside(run_dir, "plots").mkdir(exist_ok=True)
    rel = f"plots/tailor_{name}.png"
    _inside(run_dir, rel)
    drawn = plot_rounds(rounds, run_dir / rel, reflection, best=best, title=f"tailored rounds: {name}")
    return rel if drawn else None


#: keys of a method's metrics shown elsewhere in the report (the stage table) or too long for it
_METHOD_SKIP = {"confusion", "per_label_agreement", "prompt_tokens", "completion_tokens", "cost_usd",
                "dataset_cost_usd", "requests_sent", "requests_cached", "requests_failed", "requests"}


def _fmt_value(v: Any, limit: int = 12) -> str:
    """A metric value on one line: numbers as numbers, a mapping as ``k v, ...`` (the first ``limit``)."""
    if isinstance(v, dict):
        items = list(v.items())
        text = ", ".join(f"{k} {_fmt_value(x)}" for k, x in items[:limit])
        return (text + f", ... ({len(items)} in all)" if len(items) > limit else text) or "none"
    if isinstance(v, list):
        return f"{len(v)} items"
    return _fmt_metric(v)


def confusion_line(c: dict[str, Any]) -> str:
    """Intended vs relabeled agreement and the top confusions, as the CLI prints them."""
    if not c.get("rows"):
        return "intended vs relabeled: no rows"
    share = "n/a" if c.get("agreement") is None else f"{100 * c['agreement']:.1f}%"
    line = (f"intended vs relabeled: agreement **{share}** ({c.get('agree')}/{c.get('compared')} rows compared; "
            f"{c.get('unmapped')} unmappable)")
    top = c.get("top_confusions") or []
    if top:
        line += "; top confusions: " + "; ".join(f"{a} → {b}: {n}" for a, b, n in top[:5])
    return line


def method_section(stages: dict[str, Any]) -> list[str]:
    """"Method metrics": each generation stage's own metrics (``counts.method_metrics``, the same the
    ``synthkd generate`` command prints: see :mod:`synthkd.methods.metrics`), and the teacher's
    structured-output re-asks where answers were asked as JSON."""
    lines: list[str] = []
    for name, s in stages.items():
        m = (s.get("counts") or {}).get("method_metrics")
        t = s.get("teacher") or {}
        if not isinstance(m, dict) and not t.get("structured_answers"):
            continue
        lines += [f"### `{name}` ({s.get('kind', '')})", ""]
        if isinstance(m, dict):
            if isinstance(m.get("confusion"), dict):
                lines.append(f"- {confusion_line(m['confusion'])}")
            for k, v in m.items():
                if k in _METHOD_SKIP or v in (None, {}, []):
                    continue
                lines.append(f"- {k.replace('_', ' ')}: {_fmt_value(v)}")
        if t.get("structured_answers"):
            cost = "cost unknown" if price_unknown(t) else _fmt_money(t.get("reask_cost_usd") or 0.0)
            lines.append(f"- structured answers {t['structured_answers']}: re-asked {t.get('reasks', 0)} ({cost}), "
                         f"still invalid {t.get('structured_invalid', 0)}")
        lines.append("")
    return ["## Method metrics", "", *lines] if lines else []


def teacher_line(t: dict[str, Any] | None) -> str:
    """A stage's teacher totals on one line (the run log's, matching the report's table)."""
    if not t:
        return "no teacher requests"
    return (f"{t.get('requests', 0)} requests ({t.get('cached_answers', 0)} from cache), "
            f"tokens {t.get('prompt_tokens', 0)} in / {t.get('completion_tokens', 0)} out, cost {stage_cost(t)}")


def _fmt_metric(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _write_html(run_dir: Path, md: str) -> None:
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return
    body = MarkdownIt("commonmark").enable("table").render(md)
    _inside(run_dir, "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>synthkd report</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style>" + body
    )
