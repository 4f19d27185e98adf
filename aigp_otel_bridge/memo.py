"""Bounded memos: what the bridge remembers by value (what a span's attribute names say, a parsed
span event, a GenAI span's facts) to skip repeated work, never more than a fixed number of entries."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(dict[K, V]):
    """A dict of at most ``limit`` entries, filled only through ``remember``.

    A dict, so that a look-up (``get``, ``in``: the common case, on the hot path) costs what a
    dict's does. Past the limit it starts afresh: emptying rather than evicting one entry costs
    nothing on a hit, keeps the bound exact, and what it forgets comes back at the price of one
    fresh computation.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (emptying the memo first when it is full) and return it."""
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value

