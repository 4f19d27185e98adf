"""Bounded memos: what the bridge remembers by value (a verdict on attribute names, a parsed
span event, a Merkle root) to skip repeated work, never more than a fixed number of entries."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key`` and return it, emptying ``memo`` first when it holds ``limit``
    entries. Emptying rather than evicting one entry costs nothing on a hit (the common case),
    keeps the bound exact, and what it forgets comes back at the price of one fresh computation."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
