"""``synthkd demo``: the offline end-to-end demo (simulated teachers on 127.0.0.1 -> rationales ->
filter -> tiny students -> table; or, with ``--tailored``, tailored rounds vs one-shot distillation).
``--seeds 0,1,2`` runs it once per seed and adds the per-seed table with mean ± standard error."""

from __future__ import annotations

from typing import Any, Optional

import typer


def _parse_seeds(text: str | None, seed: int) -> list[int]:
    if not text:
        return [seed]
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"--seeds takes comma-separated integers (e.g. 0,1,2), got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise typer.BadParameter(f"--seeds needs distinct integers (e.g. 0,1,2), got {text!r}")
    return seeds


def demo_command(
    n_train: Optional[int] = typer.Option(None, "--train", help="Training problems (with --tailored: the "
                                          "pool); default 1500 (--tailored: 6000)."),
    rows: Optional[int] = typer.Option(None, "--rows", help="Training rows of every student (a seeded sample of "
                                       "its teacher's rows); default 5/6 of --train.", min=1),
    n_test: int = typer.Option(200, "--test", help="Held-out problems."),
    error_rate: float = typer.Option(0.1, "--error-rate", help="Share of the careful teacher's answers with a slip."),
    noisy_error_rate: float = typer.Option(0.4, "--noisy-error-rate", help="Same, for the noisy teacher."),
    noise_rate: float = typer.Option(0.1, "--noise-rate", help="Share of answers with formatting noise."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Training epochs of each tiny student "
                                           "(default 10)."),
    seed: int = typer.Option(0, "--seed"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Run once per seed (comma-separated, e.g. 0,1,2) and "
                                        "print the per-seed table with mean ± standard error."),
    concurrency: int = typer.Option(16, "--concurrency", help="Teacher requests in flight (changes no result).",
                                    min=1),
    tailored: bool = typer.Option(False, "--tailored", help="Tailored rounds + DPO self-reflection vs one-shot "
                                  "distillation at equal teacher calls (instead of the formats/filter comparison)."),
    rounds: int = typer.Option(3, "--rounds", help="--tailored: tailored rounds after round 0."),
    initial: Optional[int] = typer.Option(None, "--initial", help="--tailored: pool problems with teacher "
                                          "rationales in round 0; default 1000.", min=1),
    max_mistakes: Optional[int] = typer.Option(None, "--max-mistakes", help="--tailored: student mistakes sent to "
                                               "the teacher for a correction each round; default 300.", min=1),
) -> None:
    """Offline end-to-end demo: simulated teachers on 127.0.0.1 -> rationales -> filter -> tiny students -> table."""
    import contextlib
    import sys

    seed_list = _parse_seeds(seeds, seed)
    if not tailored and (initial is not None or max_mistakes is not None):
        raise typer.BadParameter("--initial and --max-mistakes are the tailored demo's (add --tailored)",
                                 param_hint="--initial" if initial is not None else "--max-mistakes")
    if tailored and rows is not None:
        raise typer.BadParameter("--rows is the main demo's (every student's training rows); the tailored demo's "
                                 "training rows follow from its teacher calls", param_hint="--rows")
    with contextlib.redirect_stdout(sys.stderr):  # trainer logs to stderr: stdout gets the table only
        if tailored:
            from synthkd.demo_tailored import run_tailored_demo_seeds

            kw: dict[str, Any] = {} if n_train is None else {"n_pool": n_train}
            kw.update({k: v for k, v in (("n_initial", initial), ("max_mistakes", max_mistakes)) if v is not None})
            out = run_tailored_demo_seeds(seed_list, rounds=rounds, error_rate=error_rate, noise_rate=noise_rate,
                                          epochs=epochs or 10.0, concurrency=concurrency, n_test=n_test, **kw)
            where = "; accuracy per round: tailor/accuracy.png inside"
        else:
            from synthkd.demo import run_demo_seeds

            kw = {} if n_train is None else {"n_train": n_train}
            if rows is not None:
                kw["rows"] = rows
            if epochs is not None:
                kw["epochs"] = epochs
            out = run_demo_seeds(seed_list, n_test=n_test, error_rate=error_rate, noisy_error_rate=noisy_error_rate,
                                 noise_rate=noise_rate, concurrency=concurrency, **kw)
            where = " (report.md inside)"
    for r in out["results"]:
        if len(seed_list) > 1:
            print(f"\nseed {r['seed']}:")
        print(r["table"])
    if len(seed_list) > 1:
        print(f"\n{out['summary']}")
    dirs = ", ".join(r["run_dir"] for r in out["results"])
    print(f"\nwall time {out['wall_s']:.0f} s, CPU time {out['cpu_s']:.0f} s; run directory {dirs}{where}")
