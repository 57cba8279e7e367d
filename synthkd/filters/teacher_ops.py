"""What the two teacher operators (judge, relabel) share: giving outcomes back in input order.

Teacher answers arrive in completion order; the chain's contract is one outcome per row in input
order (so outputs are reproducible and "first row wins" operators downstream behave the same on a
rerun).  :class:`InOrder` holds finished outcomes until every earlier row is finished; its size is
bounded by the rows in flight plus those finished behind a slow one.
"""

from __future__ import annotations

from typing import Any, Iterator

from synthkd.filters.base import Outcome


class InOrder:
    def __init__(self) -> None:
        self._done: dict[int, Outcome] = {}
        self._next = 0
        self._count = 0

    def take(self) -> int:
        """A position for the next row read."""
        self._count += 1
        return self._count - 1

    def put(self, pos: int, row: dict[str, Any], reject: Any) -> None:
        self._done[pos] = (row, reject)

    def ready(self) -> Iterator[Outcome]:
        while self._next in self._done:
            yield self._done.pop(self._next)
            self._next += 1

    def finished(self) -> bool:
        return not self._done and self._next == self._count
