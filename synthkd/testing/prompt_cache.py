"""Deterministic prompt-prefix caches, as OpenAI/DeepSeek and Anthropic report them in usage.

Why: a client's cost is wrong if it prices cached input as fresh input.  Real caching is
best-effort; here it is exact, so a test knows what the second identical request reports.

* :class:`AutoPrefixCache` -- OpenAI-style automatic caching: a prompt of at least ``min_tokens``
  tokens hits on its longest previously seen prefix, counted in steps of 128 tokens.
* :class:`BlockCache` -- Anthropic-style explicit caching: the prefix up to the last block that
  carries ``cache_control`` is written on first sight and read afterwards.

Tokens are the server's whitespace words (see ``server.count_tokens``).  Both caches are bounded.
"""

from __future__ import annotations

import hashlib

__all__ = ["AutoPrefixCache", "BlockCache", "CACHE_STEP"]

#: OpenAI reports cache hits in increments of 128 tokens.
CACHE_STEP = 128
_MAX_KEYS = 200_000


def _bounded_add(keys: dict[bytes, None], key: bytes) -> None:
    if len(keys) >= _MAX_KEYS:
        keys.pop(next(iter(keys)))
    keys[key] = None


class AutoPrefixCache:
    """Automatic prefix caching; :meth:`lookup_and_store` returns the cached token count."""

    def __init__(self) -> None:
        self._seen: dict[bytes, None] = {}

    def clear(self) -> None:
        self._seen.clear()

    def lookup_and_store(self, namespace: str, words: list[str], min_tokens: int) -> int:
        """Cached tokens for this prompt (a multiple of 128, 0 below ``min_tokens``); remembers it."""
        total = len(words)
        if total < max(min_tokens, CACHE_STEP):
            return 0
        hasher = hashlib.sha256(namespace.encode("utf-8", "surrogatepass") + b"\x1f")
        cached = 0
        done = 0
        boundary = CACHE_STEP
        while boundary <= total:
            for word in words[done:boundary]:
                hasher.update(word.encode("utf-8", "surrogatepass") + b"\x00")
            done = boundary
            if boundary >= min_tokens:
                key = hasher.copy().digest()
                if key in self._seen:
                    cached = boundary
                else:
                    _bounded_add(self._seen, key)
            boundary += CACHE_STEP
        return cached


class BlockCache:
    """Explicit (``cache_control``) caching: returns ``(cache_write, cache_read)`` token counts."""

    def __init__(self) -> None:
        self._seen: dict[bytes, None] = {}

    def clear(self) -> None:
        self._seen.clear()

    def lookup_and_store(self, namespace: str, prefix_texts: list[str], prefix_tokens: int) -> tuple[int, int]:
        if prefix_tokens <= 0:
            return 0, 0
        hasher = hashlib.sha256(namespace.encode("utf-8", "surrogatepass"))
        for text in prefix_texts:
            hasher.update(b"\x1e" + text.encode("utf-8", "surrogatepass"))
        key = hasher.digest()
        if key in self._seen:
            return 0, prefix_tokens
        _bounded_add(self._seen, key)
        return prefix_tokens, 0
