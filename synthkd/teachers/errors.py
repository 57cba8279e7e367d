"""How a failed attempt is classified: retry it, fail the row, or stop the whole run.

One place decides, so every backend agrees: 429/5xx/timeouts/connection drops/malformed bodies are
transient (retry with backoff); other 4xx are the request's own fault (fail the row, no retry);
401/403 and an exhausted quota mean no further request can succeed (stop everything at once).
"""

from __future__ import annotations


class RetryableError(Exception):
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
    pass


class RequestRejected(Exception):
    """The server refused this request for good (400, 404, 422...): retrying cannot help."""


def scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    """Remove every secret from a message before it can reach a log, a reject file or the terminal."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text
