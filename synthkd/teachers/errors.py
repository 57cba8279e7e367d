"""How a failed attempt is classified: retry it, fail the row, or stop the whole run.

One place decides, so every backend agrees: 429/5xx/timeouts/connection drops/malformed bodies are
transient (retry with backoff); other 4xx are the request's own fault (fail the row, no retry);
401/403 and an exhausted quota mean no further request can succeed (stop everything at once).
"""

from __future__ import annotations

from synthkd.errors import SynthkdError


class RetryableError(SynthkdError):
    """A transient failure: the same request may succeed if sent again."""


class RateLimitedError(RetryableError):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(RetryableError):
    pass


class AttemptTimeout(RetryableError):
    pass


class ConnectionFailed(RetryableError):
    pass


class MalformedResponse(RetryableError):
    """A body the client cannot read.  ``billed`` is its usage when the body still said what it cost
    (a 200 with usage but no readable answer): the provider bills that attempt, so it is costed."""

    def __init__(self, message: str, billed: object | None = None) -> None:
        super().__init__(message)
        self.billed = billed


class Stopping(RetryableError):
    """The run is stopping (a fatal error elsewhere): this attempt is not sent, and not retried."""


class RequestRejected(SynthkdError):
    """The server refused this request for good (400, 404, 422...): retrying cannot help."""


class Reshape(RequestRejected):
    """A 400 "unsupported parameter/value" the request shaper learned from: the same request, re-sent
    once in the shape the model accepts, is expected to succeed (not a failed row)."""


# A key's prefix this long is still a secret: an error body cut short (by us or by a proxy) can end
# in the first part of the key, and for real keys (50-160 characters) that is most of it.
SECRET_PREFIX_MIN = 8


def scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    """Remove every secret, and any cut-off start of one (>= 8 characters), from a message.

    Call it on the whole text *before* shortening it: cutting first can leave a piece of the key that
    no longer matches the whole (F7).  The prefix rule also catches a key that someone else cut short.
    """
    for s in secrets:
        if not s or len(s) < 4:
            continue
        text = text.replace(s, "***")
        if len(s) <= SECRET_PREFIX_MIN:
            continue
        head = s[:SECRET_PREFIX_MIN]
        parts: list[str] = []
        i = 0
        while (j := text.find(head, i)) >= 0:
            k = j + SECRET_PREFIX_MIN
            while k < len(text) and k - j < len(s) and text[k] == s[k - j]:
                k += 1
            parts += [text[i:j], "***"]
            i = k
        text = "".join(parts) + text[i:]
    return text


def scrub_cut(text: str, secrets: tuple[str | None, ...], limit: int) -> str:
    """Scrub, then shorten to ``limit`` characters: the only safe order (see :func:`scrub`)."""
    text = scrub(text, secrets)
    return text if len(text) <= limit else text[:limit] + "..."
