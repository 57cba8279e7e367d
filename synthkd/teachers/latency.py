"""Adaptive per-attempt deadlines, so a hung request costs seconds, not the full timeout.

Why: a hung connection otherwise holds a concurrency slot for the whole ``--timeout`` (often 10 min).
Once enough answers have been seen, an attempt's deadline becomes ``factor × p95`` of recent latencies
(never below ``floor_s``, never above the hard timeout), doubling on each retry of the same request so
an honestly slow answer (a long generation) still gets through.  Deadlines of attempts already running
are tightened by a watchdog as the estimate settles.
"""

from __future__ import annotations

from collections import deque


class LatencyTracker:
    def __init__(
        self,
        hard_timeout_s: float,
        *,
        factor: float = 8.0,
        floor_s: float = 3.0,
        min_samples: int = 20,
        window: int = 256,
    ) -> None:
        self.hard_timeout_s = hard_timeout_s
        self.factor = factor
        self.floor_s = floor_s
        self.min_samples = min_samples
        self._samples: deque[float] = deque(maxlen=window)
        self._p95: float | None = None
        self._since_update = 0

    def observe(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._since_update += 1
        # Re-sorting a 256-float window every 16 answers keeps this off the per-request hot path.
        if len(self._samples) >= self.min_samples and (self._p95 is None or self._since_update >= 16):
            ordered = sorted(self._samples)
            self._p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            self._since_update = 0

    @property
    def p95(self) -> float | None:
        return self._p95

    def deadline(self, attempt: int) -> float:
        """Seconds allowed for attempt number ``attempt`` (1-based) of a request."""
        if self._p95 is None:
            return self.hard_timeout_s
        adaptive = max(self.floor_s, self.factor * self._p95) * (2 ** (attempt - 1))
        return min(self.hard_timeout_s, adaptive)
