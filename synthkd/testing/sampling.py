"""The seed a simulated model samples with, for one choice of a request.

Why: a client asks for k samples either as one request with ``n=k`` or as k requests (seeds
``seed + 0..k-1``, see :func:`synthkd.teachers.openai_compat.one_by_one`).  A simulated model must give
the same k samples either way, as sampling with those seeds would: choice ``i`` of an ``n > 1``
request samples with ``seed + i`` (``seed`` = 0 when the request has none), the server marking the
choice in the body it hands the responder (``choice_index``).
"""

from __future__ import annotations

from typing import Any


def sample_seed(body: dict[str, Any]) -> Any:
    """The seed of the choice this body asks for (the request's own for a one-sample request)."""
    seed = body.get("seed")
    n = body.get("n") or 1
    if isinstance(n, int) and n > 1:
        return (seed if isinstance(seed, int) else 0) + int(body.get("choice_index") or 0)
    return seed
