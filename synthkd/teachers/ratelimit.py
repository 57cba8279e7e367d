"""Client-side RPM/TPM limiting that keeps a run just under the provider's limits.

Why pacing rather than a burst-then-wait bucket: providers enforce limits over short windows, so a
client that fires its whole per-minute allowance at once collects 429s.  Requests are spaced at
60/RPM seconds from the first one on (no slow start: full capacity immediately), with a small burst
tolerance so event-loop jitter does not make the run fall behind.  Tokens are charged up front from an
estimate and corrected when the server reports ``usage``.  When the server still says 429, or its
``x-ratelimit-remaining-*`` headers reach zero, every sender pauses until the advertised reset and the
pace is lowered a little, then recovers as requests succeed.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from typing import Mapping

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """Parse OpenAI-style reset durations: '20ms', '1.5s', '6m0s', '1h2m3s'; a bare number is seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def seconds_until(stamp: str | None) -> float | None:
    """Seconds from now until an RFC 3339 time (Anthropic's ``-reset`` headers); None if unreadable."""
    if not stamp:
        return None
    try:
        when = datetime.datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait, from ``retry-after-ms``, ``retry-after`` or the rate-limit resets."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return max(0.0, float(ra))
        except ValueError:
            pass  # an HTTP date: rare for APIs; fall through
    parsed = [
        parse_duration(headers.get("x-ratelimit-reset-requests")),
        parse_duration(headers.get("x-ratelimit-reset-tokens")),
    ]
    resets = [r for r in parsed if r is not None]
    return max(resets) if resets else None


class _Pacer:
    """GCRA pacing: one unit every ``interval`` seconds, with ``burst`` units of tolerance."""

    def __init__(self, per_minute: float, burst: float) -> None:
        self.configured = per_minute
        self.rate = per_minute / 60.0  # units per second
        self.burst = max(1.0, burst)
        self.tat = 0.0  # theoretical arrival time of the next unit (monotonic clock)

    def delay_for(self, units: float, now: float) -> float:
        """Seconds to wait before ``units`` may go; reserves them."""
        increment = units / self.rate
        tolerance = (self.burst - 1.0) / self.rate if self.burst > 1 else 0.0
        tat = max(self.tat, now)
        allowed_at = tat - tolerance
        self.tat = tat + increment
        return max(0.0, allowed_at - now)

    def refund(self, units: float) -> None:
        self.tat -= units / self.rate

    def slow_down(self, factor: float = 0.9, floor_fraction: float = 0.25) -> None:
        self.rate = max(self.configured / 60.0 * floor_fraction, self.rate * factor)

    def recover(self, step: float = 0.01) -> None:
        if self.rate < self.configured / 60.0:
            self.rate = min(self.configured / 60.0, self.rate * (1.0 + step))


class RateLimiter:
    """Shared by all concurrent senders of one Teacher."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self._rpm = _Pacer(rpm, burst=max(1.0, rpm / 120.0)) if rpm else None  # ≤ 0.5 s of burst
        self._tpm = _Pacer(tpm, burst=max(1.0, tpm / 120.0)) if tpm else None  # ≤ 0.5 s of tokens
        self._paused_until = 0.0
        self.rate_limited = 0  # 429s seen

    @property
    def active(self) -> bool:
        return bool(self._rpm or self._tpm)

    async def acquire(self, est_tokens: int) -> None:
        loop_time = time.monotonic
        while True:
            now = loop_time()
            if self._paused_until > now:
                await asyncio.sleep(self._paused_until - now)
                continue
            delay = self.reserve(est_tokens, now)
            if delay > 0:
                await asyncio.sleep(delay)
            return

    def reserve(self, est_tokens: int, now: float) -> float:
        """Reserve the next slot for one request of ``est_tokens``; seconds from ``now`` until it may go.

        Pure arithmetic on the ``now`` it is given (no clock, no sleep, pauses are ``acquire``'s job), so
        the pacing can be checked exactly with a made-up clock.
        """
        delay = 0.0
        if self._rpm:
            delay = max(delay, self._rpm.delay_for(1, now))
        if self._tpm:
            delay = max(delay, self._tpm.delay_for(est_tokens, now))
        return delay

    def correct_tokens(self, estimated: int, actual: int) -> None:
        """Give back (or charge) the difference between the estimate and the reported usage."""
        if self._tpm and estimated != actual:
            self._tpm.refund(estimated - actual)

    def on_success(self, headers: Mapping[str, str] | None = None) -> None:
        if self._rpm:
            self._rpm.recover()
        if self._tpm:
            self._tpm.recover()
        if headers:
            self._respect_headers(headers)

    def _respect_headers(self, headers: Mapping[str, str]) -> None:
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is not None and remaining.strip() in {"0", "0.0"}:
                reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    self.pause(reset)
        # Anthropic: the same idea, with the reset as an RFC 3339 time (a token bucket: it overstates
        # the wait, which is the safe side)
        for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
            remaining = headers.get(f"anthropic-ratelimit-{kind}-remaining")
            if remaining is not None and remaining.strip() in {"0", "0.0"}:
                reset = seconds_until(headers.get(f"anthropic-ratelimit-{kind}-reset"))
                if reset:
                    self.pause(min(reset, 60.0))

    def on_rate_limited(self, retry_after: float | None) -> None:
        self.rate_limited += 1
        if self._rpm:
            self._rpm.slow_down()
        if self._tpm:
            self._tpm.slow_down()
        self.pause(retry_after if retry_after is not None else 1.0)

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
