"""RateLimiter, its pacer and the rate-limit header parsing, checked exactly.

Pacing is checked on a made-up clock through ``RateLimiter.reserve(est, now)`` (pure arithmetic): a
pacer that is a few percent off either collects 429s or leaves paid-for capacity unused.  Pauses are
checked against ``time.monotonic()`` read just before and after the call that sets them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from synthkd.teachers.ratelimit import RateLimiter, parse_duration, retry_after_seconds

EXACT = 1e-9


def _gaps(lim: RateLimiter, n: int, est: int = 1, start: float = 100.0) -> list[float]:
    """Times (from ``start``) at which n back-to-back senders may go, each waiting what it is told."""
    now, out = start, []
    for _ in range(n):
        now += lim.reserve(est, now)
        out.append(now - start)
    return out


# ------------------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("20ms", 0.02),
        ("1ms", 0.001),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("6m0s", 360.0),
        ("1h", 3600.0),
        ("1h2m3s", 3723.0),
        ("1m500ms", 60.5),
        ("0.5m", 30.0),
        ("7", 7.0),  # a bare number is seconds
        ("2.25", 2.25),
        ("  3s ", 3.0),
        (" 4 ", 4.0),
    ],
)
def test_parse_duration_every_documented_format(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, abs=EXACT)


@pytest.mark.parametrize("text", [None, "", "soon", "ms", "-"])
def test_parse_duration_gives_none_for_nothing_parseable(text):
    assert parse_duration(text) is None


# ------------------------------------------------------------------------- retry_after_seconds


def test_retry_after_ms_wins_over_retry_after_and_resets():
    h = {"retry-after-ms": "1500", "retry-after": "9", "x-ratelimit-reset-requests": "30s"}
    assert retry_after_seconds(h) == pytest.approx(1.5, abs=EXACT)


def test_retry_after_seconds_wins_over_resets():
    assert retry_after_seconds({"retry-after": "3", "x-ratelimit-reset-tokens": "30s"}) == 3.0
    assert retry_after_seconds({"retry-after": "0.25"}) == pytest.approx(0.25, abs=EXACT)


def test_negative_server_waits_are_zero_not_negative():
    assert retry_after_seconds({"retry-after-ms": "-500"}) == 0.0
    assert retry_after_seconds({"retry-after": "-2"}) == 0.0


def test_unparseable_retry_after_falls_through_to_the_next_source():
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0
    # An HTTP date (rare for APIs) is skipped: the rate-limit reset headers decide.
    h = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT", "x-ratelimit-reset-requests": "2s"}
    assert retry_after_seconds(h) == 2.0
    assert retry_after_seconds({"retry-after-ms": "", "retry-after": "", "x-ratelimit-reset-tokens": "1s"}) == 1.0


def test_resets_alone_give_the_later_of_requests_and_tokens():
    assert retry_after_seconds({"x-ratelimit-reset-tokens": "6m0s"}) == 360.0
    assert retry_after_seconds({"x-ratelimit-reset-requests": "120ms"}) == pytest.approx(0.12, abs=EXACT)
    both = {"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "1m"}
    assert retry_after_seconds(both) == 60.0
    both = {"x-ratelimit-reset-requests": "1m", "x-ratelimit-reset-tokens": "2s"}
    assert retry_after_seconds(both) == 60.0
    assert retry_after_seconds({"x-ratelimit-reset-requests": "junk", "x-ratelimit-reset-tokens": "5s"}) == 5.0
    assert retry_after_seconds({"x-ratelimit-reset-requests": "junk"}) is None
    assert retry_after_seconds({}) is None


# ------------------------------------------------------------------------- pacing on a made-up clock


def test_no_limits_means_inactive_and_no_wait():
    lim = RateLimiter()
    assert not lim.active
    assert [lim.reserve(10_000, 5.0) for _ in range(100)] == [0.0] * 100
    lim.correct_tokens(100, 5)  # nothing to correct, no error
    lim.on_success({"x-ratelimit-remaining-requests": "5"})


def test_either_limit_makes_it_active():
    assert RateLimiter(rpm=60).active and RateLimiter(tpm=1000).active
    assert not RateLimiter(rpm=0, tpm=0).active


def test_rpm_60_has_no_burst_one_request_per_second_from_the_first():
    # 60 RPM: burst max(1, 0.5) = 1, so no tolerance: exactly one request per second, the first at once.
    assert _gaps(RateLimiter(rpm=60), 4) == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=EXACT)


def test_rpm_1200_bursts_ten_then_paces_at_rpm_over_60_per_second():
    # 1200 RPM = 20/s (one per 50 ms), burst 1200/120 = 10 (half a second's worth).
    stamps = _gaps(RateLimiter(rpm=1200), 13)
    assert stamps == pytest.approx([0.0] * 10 + [0.05, 0.10, 0.15], abs=EXACT)


def test_rpm_240_bursts_two():
    # 240 RPM = 4/s, burst 2: two at once, then one per 250 ms.
    assert _gaps(RateLimiter(rpm=240), 4) == pytest.approx([0.0, 0.0, 0.25, 0.5], abs=EXACT)


def test_rpm_pacing_ignores_the_token_estimate():
    assert _gaps(RateLimiter(rpm=60), 3, est=1_000_000) == pytest.approx([0.0, 1.0, 2.0], abs=EXACT)


def test_idle_time_refills_capacity_but_never_beyond_the_burst():
    lim = RateLimiter(rpm=120)  # 2/s, burst 1
    assert lim.reserve(1, 0.0) == 0.0
    assert lim.reserve(1, 0.0) == pytest.approx(0.5, abs=EXACT)
    # Long idle: the next one goes at once, but the one after waits a full interval (no saved-up burst).
    assert lim.reserve(1, 60.0) == 0.0
    assert lim.reserve(1, 60.0) == pytest.approx(0.5, abs=EXACT)
    # Coming back part-way through an interval waits only the rest of it.
    assert lim.reserve(1, 60.8) == pytest.approx(0.2, abs=EXACT)


def test_tpm_charges_the_estimate_up_front():
    lim = RateLimiter(tpm=60)  # 1 token/s, burst max(1, 0.5) = 1: no tolerance
    assert lim.reserve(10, 0.0) == 0.0
    assert lim.reserve(10, 0.0) == pytest.approx(10.0, abs=EXACT)
    assert lim.reserve(1, 0.0) == pytest.approx(20.0, abs=EXACT)


def test_tpm_tolerance_is_half_a_second_of_tokens():
    lim = RateLimiter(tpm=12_000)  # 200 tokens/s, burst 100 tokens: a tolerance of 99 tokens (0.495 s)
    assert lim.reserve(300, 0.0) == 0.0  # from full capacity: 300 tokens reserved, the next unit at 1.5 s
    assert lim.reserve(1, 0.0) == pytest.approx(1.5 - 0.495, abs=EXACT)


def test_both_limits_wait_for_the_later_one():
    lim = RateLimiter(rpm=60, tpm=600)  # 1 request/s; 10 tokens/s with a tolerance of 4 tokens (0.4 s)
    assert lim.reserve(50, 0.0) == 0.0
    assert lim.reserve(50, 0.0) == pytest.approx(5.0 - 0.4, abs=EXACT)  # tokens decide: 50 / 10 per s
    lim2 = RateLimiter(rpm=60, tpm=600_000)
    assert lim2.reserve(50, 0.0) == 0.0
    assert lim2.reserve(50, 0.0) == pytest.approx(1.0, abs=EXACT)  # requests decide


def test_reported_usage_below_the_estimate_gives_tokens_back():
    lim = RateLimiter(tpm=60)  # 1 token/s
    lim.reserve(100, 0.0)
    lim.correct_tokens(100, 40)  # the server said 40: 60 tokens back
    assert lim.reserve(1, 0.0) == pytest.approx(40.0, abs=EXACT)


def test_reported_usage_above_the_estimate_charges_the_difference():
    lim = RateLimiter(tpm=60)
    lim.reserve(100, 0.0)
    lim.correct_tokens(100, 130)
    assert lim.reserve(1, 0.0) == pytest.approx(130.0, abs=EXACT)
    lim.correct_tokens(5, 5)  # exact estimate: nothing changes
    assert lim.reserve(1, 0.0) == pytest.approx(131.0, abs=EXACT)


# ------------------------------------------------------------------------- 429s: slow down, pause, recover


def test_a_429_lowers_the_pace_by_ten_percent():
    lim = RateLimiter(rpm=60)
    assert _gaps(lim, 2, start=0.0) == pytest.approx([0.0, 1.0], abs=EXACT)  # next slot at 2.0
    lim.on_rate_limited(0.0)
    # The slot already reserved stays; the one after it is 1/0.9 s later.
    assert lim.reserve(1, 0.0) == pytest.approx(2.0, abs=EXACT)
    assert lim.reserve(1, 0.0) == pytest.approx(2.0 + 1 / 0.9, abs=EXACT)


def test_tpm_slows_down_too():
    lim = RateLimiter(tpm=60)
    lim.on_rate_limited(0.0)
    lim.reserve(9, 0.0)
    assert lim.reserve(1, 0.0) == pytest.approx(9 / 0.9, abs=EXACT)


def test_repeated_429s_never_slow_below_a_quarter_of_the_limit():
    lim = RateLimiter(rpm=60, tpm=60)
    for _ in range(100):
        lim.on_rate_limited(0.0)
    assert lim.rate_limited == 100
    assert lim.reserve(1, 0.0) == 0.0
    assert lim.reserve(1, 0.0) == pytest.approx(4.0, abs=EXACT)  # 0.25 per second


def test_successes_recover_one_percent_each_up_to_the_configured_rate():
    lim = RateLimiter(rpm=60)
    lim.on_rate_limited(0.0)  # 0.9 per second
    lim.on_success()  # 0.909 per second
    lim.reserve(1, 0.0)
    assert lim.reserve(1, 0.0) == pytest.approx(1 / (0.9 * 1.01), abs=EXACT)
    for _ in range(50):
        lim.on_success()
    lim2 = RateLimiter(rpm=60)
    lim2.on_rate_limited(0.0)
    for _ in range(50):
        lim2.on_success()  # 0.9 * 1.01**50 > 1: capped at the configured rate, not above
    now = 1000.0
    lim2.reserve(1, now)
    assert lim2.reserve(1, now) == pytest.approx(1.0, abs=EXACT)


def test_success_at_full_rate_stays_at_full_rate():
    lim = RateLimiter(rpm=60, tpm=60)
    for _ in range(10):
        lim.on_success()
    assert lim.reserve(1, 0.0) == 0.0
    assert lim.reserve(1, 0.0) == pytest.approx(1.0, abs=EXACT)


def test_tpm_recovers_too():
    lim = RateLimiter(tpm=60)
    lim.on_rate_limited(0.0)
    lim.on_success()
    lim.reserve(10, 0.0)
    assert lim.reserve(1, 0.0) == pytest.approx(10 / (0.9 * 1.01), abs=EXACT)


def _paused_for(lim: RateLimiter, call) -> tuple[float, float]:
    """(lowest, highest) seconds from now the limiter may be paused for after ``call()``."""
    before = time.monotonic()
    call()
    after = time.monotonic()
    return lim._paused_until - after, lim._paused_until - before


def test_429_counts_and_pauses_for_the_servers_wait():
    lim = RateLimiter(rpm=600)
    lo, hi = _paused_for(lim, lambda: lim.on_rate_limited(7.5))
    assert lim.rate_limited == 1
    assert lo <= 7.5 <= hi
    lim.on_rate_limited(0.0)
    assert lim.rate_limited == 2


def test_429_without_a_wait_pauses_one_second():
    lim = RateLimiter()
    lo, hi = _paused_for(lim, lambda: lim.on_rate_limited(None))
    assert lo <= 1.0 <= hi and lim.rate_limited == 1


def test_429_with_a_zero_wait_does_not_pause():
    lim = RateLimiter()
    lo, hi = _paused_for(lim, lambda: lim.on_rate_limited(0.0))
    assert lo <= 0.0 <= hi


def test_a_shorter_pause_never_shortens_a_longer_one():
    lim = RateLimiter()
    lim.pause(30.0)
    lo, hi = _paused_for(lim, lambda: lim.pause(1.0))
    assert lo > 28.0
    lo, hi = _paused_for(lim, lambda: lim.pause(60.0))
    assert lo <= 60.0 <= hi


@pytest.mark.parametrize("kind", ["requests", "tokens"])
@pytest.mark.parametrize("zero", ["0", "0.0", " 0 "])
def test_remaining_zero_pauses_until_the_advertised_reset(kind, zero):
    lim = RateLimiter(rpm=60)
    headers = {f"x-ratelimit-remaining-{kind}": zero, f"x-ratelimit-reset-{kind}": "1m30s"}
    lo, hi = _paused_for(lim, lambda: lim.on_success(headers))
    assert lo <= 90.0 <= hi
    assert lim.rate_limited == 0  # not a 429


def test_remaining_headers_that_do_not_say_zero_do_not_pause():
    for headers in (
        {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "10s"},
        {"x-ratelimit-remaining-tokens": "250", "x-ratelimit-reset-tokens": "10s"},
        {"x-ratelimit-remaining-requests": "0"},  # no reset given: nothing to wait for
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "0s"},
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "later"},
        # a reset for the other kind does not apply
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-tokens": "10s"},
    ):
        lim = RateLimiter(rpm=60)
        lim.on_success(headers)
        assert lim._paused_until == 0.0, headers


def test_both_kinds_at_zero_pause_for_the_later_reset():
    lim = RateLimiter()
    headers = {
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "5s",
    }
    lo, hi = _paused_for(lim, lambda: lim.on_success(headers))
    assert lo <= 20.0 <= hi


# ------------------------------------------------------------------------- acquire (the only real waits)


def test_acquire_waits_out_a_pause_then_its_pacing_slot():
    async def go() -> tuple[float, float]:
        lim = RateLimiter(tpm=60_000)  # 1000 tokens/s, tolerance 499 tokens
        t0 = time.monotonic()
        await asyncio.wait_for(lim.acquire(600), 2)  # full capacity: at once
        first = time.monotonic() - t0
        await asyncio.wait_for(lim.acquire(1), 2)  # 600 tokens out: the next unit at 0.6 - 0.499 s
        second = time.monotonic() - t0
        lim.pause(0.05)
        t1 = time.monotonic()
        await asyncio.wait_for(lim.acquire(1), 2)
        paused = time.monotonic() - t1
        # After the pause the request still took its pacing slot: one per second at 60 RPM.
        slow = RateLimiter(rpm=60)
        slow.pause(0.02)
        await asyncio.wait_for(slow.acquire(1), 2)
        next_wait = slow.reserve(1, time.monotonic())
        return first, second, paused, next_wait

    first, second, paused, next_wait = asyncio.run(go())
    assert first < 0.05
    assert 0.09 <= second < 0.5
    assert 0.045 <= paused < 0.5
    assert 0.5 < next_wait <= 1.0
