"""``synthkd complete``: every prompt of a jsonl file through a teacher (see :mod:`synthkd.complete`).

Its options are generated from :class:`synthkd.complete.CompleteConfig` (the teacher's from
TeacherSpec, as on every command and in a pipeline's ``teacher:`` block).
"""

from __future__ import annotations

import typer

from synthkd.complete import CompleteConfig, run_complete
from synthkd.options import config_command


def _use_uvloop() -> None:
    """uvloop when installed (the ``[fast]`` extra): a cheaper event loop for the engine's hot path."""
    try:
        import uvloop

        uvloop.install() if hasattr(uvloop, "install") else None
    except ImportError:
        pass


@config_command(CompleteConfig)
def complete_command(cfg: CompleteConfig) -> None:
    """Complete every prompt of a jsonl file with a teacher (API model, replay:, local: or simulated:).

    Exit codes: 0 every row done; 1 some rows rejected; 2 bad input; 3 budget reached;
    4 the teacher refused us (bad key, unreachable); 130 interrupted. Every non-zero run is resumable.
    """
    _use_uvloop()
    raise typer.Exit(run_complete(cfg))
