"""``synthkd tailor``: the tailored multi-round distillation loop (see :mod:`synthkd.loops.tailored`).

Its options are :class:`~synthkd.loops.tailored.TailorConfig`'s fields (declared once, with the
``tailor`` pipeline stage's keys; see :mod:`synthkd.options`), plus the teacher and its connection.

Register in ``synthkd/cli.py`` with::

    from synthkd.commands.tailor import tailor_command
    app.command("tailor")(tailor_command)
"""

from __future__ import annotations

import inspect
import logging
from typing import Optional

from synthkd.commands.common import (
    TeacherOpt,
    make_teacher,
    run_job,
    teacher_spec,
    with_connection_options,
)
from synthkd.errors import ExitCode
from synthkd.loops.tailored import TailorConfig
from synthkd.options import config_command

log = logging.getLogger(__name__)

_EXTRA = [inspect.Parameter("teacher", inspect.Parameter.KEYWORD_ONLY, annotation=TeacherOpt),
          # the connection options, filled in by with_connection_options
          inspect.Parameter("conn", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Optional[dict])]


@with_connection_options  # the shared default --concurrency 32, as the tailor pipeline stage has it (was 16 here: drift)
@config_command(TailorConfig, extra=_EXTRA)
def tailor_command(cfg: TailorConfig, teacher: str, conn: Optional[dict] = None) -> None:
    """Train, find the student's mistakes on the pool, have the teacher correct them, train further; repeat."""
    from synthkd.jsonl_io import check_paths
    from synthkd.loops.tailored import check_options, run_tailored

    conn = conn or {}
    out = cfg.output

    async def job() -> int:
        check_paths({"--pool": cfg.pool, "--initial": cfg.initial, "--heldout": cfg.heldout},
                    cache=None if conn.get("no_cache") else conn.get("cache"))
        opts = cfg.to_options()
        check_options(opts)  # before the teacher is built: a missing held-out set costs nothing
        t = make_teacher(teacher_spec(teacher, **conn))
        try:
            result = await run_tailored(opts, t, say=log.info)
        finally:
            await t.aclose()
        accs = ", ".join(f"r{h['round']} {h['accuracy']:.4f}" for h in result["rounds"] if h.get("accuracy") is not None)
        if result.get("reflection"):
            accs += f", after DPO self-reflection {result['reflection']['accuracy']:.4f}"
        log.info(f"tailor: held-out accuracy per round: {accs}; best round {result['best_round']}; "
            f"{out / 'rounds.json'}, {out / 'accuracy.png'}")
        return ExitCode.BUDGET if result["budget_exhausted"] else ExitCode.OK

    run_job(job, sigterm=False)  # training blocks the loop: SIGTERM keeps its default
