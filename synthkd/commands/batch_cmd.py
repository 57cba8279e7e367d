"""``synthkd batch status|cancel [RUN|CACHE]``: the batches a cache's journal holds, and cancelling them.

Why a command of its own: batch mode leaves jobs at the provider for hours, possibly from a process
that is gone (``--no-wait``, a crash).  The journal beside the request cache (see
:mod:`synthkd.teachers.batch.journal`) says what exists; ``status`` shows it (polling the provider for
the live ones unless ``--offline``), ``cancel`` cancels every live one (its finished requests are
still collected by the next run: nothing paid for is lost).

RUN is a pipeline run directory (``runs/NAME``: its teacher cache) and CACHE a request cache file;
without either, the default cache (``$SYNTHKD_CACHE`` or ``~/.cache/synthkd/teacher-cache.sqlite``).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from pathlib import Path
from typing import Optional

import typer

from synthkd.commands.common import exit_on_error

batch_app = typer.Typer(help="Show or cancel the provider batches of a request cache (batch mode, --batch).",
                        no_args_is_help=True)
log = logging.getLogger(__name__)

_PathArg = typer.Argument(None, help="A run directory (runs/NAME) or a request cache file (default: the default cache).")


def cache_of(path: Path | None) -> Path:
    """The request cache a RUN directory or CACHE path names (the default cache when None)."""
    from synthkd.errors import PathError
    from synthkd.teachers.factory import default_cache_path

    if path is None:
        return default_cache_path()
    if path.is_dir():
        manifest = path / "manifest.json"
        if manifest.is_file():
            cfg = json.loads(manifest.read_text()).get("config") or {}
            cache = (cfg.get("teacher") or {}).get("cache")
            if cache and Path(cache).is_absolute():
                return Path(cache)
        guess = path.parent / "teacher-cache.sqlite"
        if guess.exists():
            return guess
        raise PathError([f"{path}: a directory, but not a run directory with a teacher cache"])
    return path


def _executors(cache: Path) -> list:
    """One batch executor per (provider, base URL, model) with batches in the journal (keys from the
    environment, as for any run)."""
    from synthkd.teachers.batch.engine import BatchExecutor
    from synthkd.teachers.batch.journal import BatchJournal
    from synthkd.teachers.factory import TeacherSpec, make_teacher

    groups = {(r.provider, r.base_url, r.model) for r in BatchJournal(cache).records() if r.live}
    out = []
    for provider, base_url, model in sorted(groups):
        t = make_teacher(TeacherSpec(teacher=model, provider=provider, base_url=base_url, cache=cache))
        out.append(BatchExecutor(t, wait=False))  # type: ignore[arg-type]
    return out


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


@batch_app.command("status")
def status(path: Optional[Path] = _PathArg,
           offline: bool = typer.Option(False, "--offline", help="Only what the journal says; ask no provider.")) -> None:
    """The batches of a cache: state, requests done / failed, cost; the live ones polled first."""
    from synthkd.log import setup_cli_logging
    from synthkd.teachers.batch.journal import BatchJournal, journal_dir

    setup_cli_logging()
    with exit_on_error():
        cache = cache_of(path)
        if not journal_dir(cache).is_dir():
            typer.echo(f"no batches recorded for {cache}")
            return
        if not offline:
            asyncio.run(_refresh(cache))
        records = BatchJournal(cache).records()
    typer.echo(f"batches of {cache} ({sum(r.live for r in records)} live, {len(records)} in all)")
    typer.echo("| local id | provider batch | state | provider status | requests | done | failed | cost (USD) | created | made by |")
    typer.echo("|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        done = r.succeeded + r.failed if r.state == "collected" else _count(r, "done")
        failed = r.failed if r.state == "collected" else _count(r, "failed")
        cost = f"{r.cost_usd:.6f}" if r.state == "collected" else (
            f"<= {r.est_cost_usd:.6f}" if r.est_cost_usd is not None else "-")
        typer.echo(f"| {r.id} | {r.batch_id or '-'} | {r.state} | {r.status or '-'} | {r.requests} | {done} | {failed} "
                   f"| {cost} | {_when(r.created)} | {r.label or '-'} |")


def _count(rec, what: str) -> int:
    from synthkd.teachers.batch.engine import done_count, failed_count

    return done_count(rec) if what == "done" else failed_count(rec)


async def _refresh(cache: Path) -> None:
    for ex in _executors(cache):
        try:
            async with ex._locked():
                for rec in ex.journal.records():
                    if rec.state == "submitted" and rec.batch_id and ex._mine(rec):
                        st = await ex.api.get(rec.batch_id)
                        rec.status, rec.counts = st.status, st.counts
                        ex.journal.save(rec)
        finally:
            await ex.t.aclose()
            if ex.t.cache is not None:
                ex.t.cache.close()


@batch_app.command("cancel")
def cancel(path: Optional[Path] = _PathArg) -> None:
    """Cancel every live batch of a cache.  What they finished is kept: the next run collects it, and
    resubmits the rest."""
    from synthkd.log import setup_cli_logging

    setup_cli_logging()

    async def run() -> int:
        n = 0
        for ex in _executors(cache_of(path)):
            try:
                for rec in await ex.cancel_all():
                    log.info(f"{rec.id}: {rec.batch_id or 'never submitted'} -> {rec.status or rec.state}")
                    n += 1
            finally:
                await ex.t.aclose()
                if ex.t.cache is not None:
                    ex.t.cache.close()
        log.info(f"cancelled {n} batch(es)" if n else "no live batch to cancel")
        return 0

    with exit_on_error():
        asyncio.run(run())
