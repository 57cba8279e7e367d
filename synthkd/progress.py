"""A progress bar for long teacher jobs that costs nothing per request.

Why a poller: updating a bar on every result would put terminal I/O on the hot path; instead a task
reads the teacher's counters twice a second.  When stderr is not a terminal (CI, nohup, a pipeline
log) the bar stays silent and only the final summary is printed.
"""

from __future__ import annotations

import asyncio
import sys
import time

from synthkd.teachers.stats import TeacherStats


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


class ProgressReporter:
    def __init__(self, stats: TeacherStats, total: int | None, *, enabled: bool | None = None, desc: str = "teacher"):
        self.stats = stats
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.desc = desc
        self._task: asyncio.Task[None] | None = None
        self._bar = None
        self._t0 = time.monotonic()

    def start(self) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, desc=self.desc, unit="req", file=sys.stderr, dynamic_ncols=True)
        self._task = asyncio.create_task(self._loop())

    def _refresh(self) -> None:
        if self._bar is None:
            return
        st = self.stats
        elapsed = max(1e-9, time.monotonic() - self._t0)
        self._bar.n = st.done
        self._bar.set_postfix_str(
            f"tok/s={_fmt_rate((st.prompt_tokens + st.completion_tokens) / elapsed)} "
            f"cost=${st.cost_usd:.4f} cached={st.cached} retries={st.retries} 429s={st.rate_limited} "
            f"errors={st.failed}",
            refresh=False,
        )
        self._bar.refresh()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._refresh()
        if self._bar is not None:
            self._bar.close()
