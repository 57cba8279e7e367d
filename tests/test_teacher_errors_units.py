"""How an attempt's failure is classified (retry / fail the row / stop), and key scrubbing.

The HTTP statuses are classified by the client against the real test server (see
tests/test_openai_compat_units.py); here: the classes themselves and ``scrub`` / ``scrub_cut``.
"""

from __future__ import annotations

import pytest

from synthkd.errors import SynthkdError
from synthkd.teachers import errors as E
from synthkd.teachers.errors import SECRET_PREFIX_MIN, scrub, scrub_cut

OPENAI_KEY = "sk-Qz7Wm2Xp9Lk4Rt6Yv1Nb8Hc3Jd5Fg0Sa"
PROJECT_KEY = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0"
HF_TOKEN = "hf_ZyXwVuTsRqPoNmLkJiHgFeDcBa98765"


# ------------------------------------------------------------------------------ classes


@pytest.mark.parametrize("cls", [E.ServerError, E.AttemptTimeout, E.ConnectionFailed, E.MalformedResponse, E.Stopping])
def test_transient_failures_are_retryable(cls):
    exc = cls("x")
    assert isinstance(exc, E.RetryableError) and isinstance(exc, SynthkdError) and str(exc) == "x"


def test_a_rejected_request_is_not_retryable():
    exc = E.RequestRejected("HTTP 400: bad")
    assert not isinstance(exc, E.RetryableError) and isinstance(exc, SynthkdError)


def test_rate_limited_keeps_the_servers_wait():
    exc = E.RateLimitedError("429 rate limited: slow down", 2.5)
    assert isinstance(exc, E.RetryableError)
    assert exc.retry_after == 2.5 and str(exc) == "429 rate limited: slow down"
    assert E.RateLimitedError("429", None).retry_after is None
    assert E.RateLimitedError("429", 0.0).retry_after == 0.0


def test_errors_module_reexports_its_base_class():
    assert E.SynthkdError is SynthkdError
    assert SECRET_PREFIX_MIN == 8


# ------------------------------------------------------------------------------ scrub


@pytest.mark.parametrize("key", [OPENAI_KEY, PROJECT_KEY, HF_TOKEN])
def test_scrub_removes_keys_of_every_shape_wherever_they_appear(key):
    text = f'{{"error": "Incorrect API key provided: {key}"}} Authorization: Bearer {key}\n{key}'
    out = scrub(text, (key,))
    assert out == '{"error": "Incorrect API key provided: ***"} Authorization: Bearer ***\n***'
    assert key[:SECRET_PREFIX_MIN] not in out


def test_scrub_removes_a_cut_off_key_and_only_the_cut_off_part():
    cut = OPENAI_KEY[:20]
    assert scrub(f"key: {cut}… (truncated)", (OPENAI_KEY,)) == "key: ***… (truncated)"
    # 8 characters of the key are already a secret; what follows them and is not the key is kept.
    assert scrub(f"<{OPENAI_KEY[:8]}XYZ>", (OPENAI_KEY,)) == "<***XYZ>"
    assert scrub(f"<{OPENAI_KEY[:12]}!>", (OPENAI_KEY,)) == "<***!>"
    # 7 are not: every OpenAI key starts with "sk-", which is no secret.
    assert scrub(f"<{OPENAI_KEY[:7]}>", (OPENAI_KEY,)) == f"<{OPENAI_KEY[:7]}>"


def test_scrub_handles_several_prefixes_and_several_secrets():
    text = f"a {OPENAI_KEY[:9]} b {OPENAI_KEY[:30]} c {PROJECT_KEY} d {PROJECT_KEY[:10]}"
    assert scrub(text, (OPENAI_KEY, PROJECT_KEY)) == "a *** b *** c *** d ***"
    assert scrub(f"{OPENAI_KEY}{OPENAI_KEY}", (OPENAI_KEY,)) == "******"


def test_scrub_prefix_rule_needs_a_secret_longer_than_eight_characters():
    eight = "Abcd1234"
    assert scrub(f"x {eight} y", (eight,)) == "x *** y"  # the whole secret still goes
    assert scrub("x Abcd123 y", (eight,)) == "x Abcd123 y"  # a 7-character piece of it stays
    nine = "Abcd12345"
    assert scrub("x Abcd1234 y", (nine,)) == "x *** y"  # its first 8 are a secret


def test_scrub_finds_cut_off_keys_at_the_very_start_and_end_of_the_text():
    assert scrub(f"{OPENAI_KEY[:10]}!", (OPENAI_KEY,)) == "***!"
    assert scrub(f"tail {OPENAI_KEY[:20]}", (OPENAI_KEY,)) == "tail ***"
    assert scrub(OPENAI_KEY[:8], (OPENAI_KEY,)) == "***"


def test_scrub_checks_every_secret_whatever_comes_before_it():
    password = "hunter2-proxy-password"
    # The client's secrets are (API key, proxy password): either may be missing or short.
    assert scrub(f"u:{password}@host", (None, password)) == "u:***@host"
    assert scrub(f"u:{password}@host", ("", password)) == "u:***@host"
    assert scrub(f"k={OPENAI_KEY} short=Abcd1234", ("Abcd1234", OPENAI_KEY)) == "k=*** short=***"
    assert scrub(f"k={OPENAI_KEY[:12]} p={password[:9]}", (OPENAI_KEY, password)) == "k=*** p=***"


def test_scrub_ignores_missing_and_very_short_secrets():
    text = "the password is abc and the key is abcd"
    assert scrub(text, (None, "", "abc")) == text  # shorter than 4: would blank ordinary words
    assert scrub(text, ("abcd",)) == "the password is abc and the key is ***"
    assert scrub(text, ()) == text
    assert scrub("", (OPENAI_KEY,)) == ""


def test_scrub_keeps_text_without_secrets_intact():
    text = "sk- is how keys start; Bearer tokens go in headers; 12345678"
    assert scrub(text, (OPENAI_KEY, PROJECT_KEY)) == text


# ------------------------------------------------------------------------------ scrub_cut


def test_scrub_cut_keeps_text_up_to_the_limit_and_marks_a_cut():
    assert scrub_cut("abcdef", (), 6) == "abcdef"  # exactly the limit: untouched
    assert scrub_cut("abcdefg", (), 6) == "abcdef..."
    assert scrub_cut("abc", (), 6) == "abc"
    assert scrub_cut("", (), 0) == ""


def test_scrub_cut_scrubs_before_cutting():
    body = "x" * 10 + OPENAI_KEY + " tail"
    out = scrub_cut(body, (OPENAI_KEY,), 14)
    assert out == "x" * 10 + "*** ..."
    # Cut first, the cut would end in 8+ characters of the key that no longer match the whole.
    assert OPENAI_KEY[:8] not in scrub_cut(body, (OPENAI_KEY,), 20)
    # The limit counts the scrubbed text: a long key no longer pushes the tail out.
    assert scrub_cut(body, (OPENAI_KEY,), 100) == "x" * 10 + "*** tail"
