"""Small shared test data."""

from __future__ import annotations

from typing import Any

from aigp_otel_bridge.merkle import leaf_hash


def two_leaves() -> list[dict[str, Any]]:
    """The leaves of a Merkle tree over ``policy.a`` (content "A") and ``prompt.b`` (content "B")."""
    return [
        {"resource_type": kind, "resource_name": name, "hash": leaf_hash(kind, name, content)}
        for kind, name, content in (("policy", "policy.a", "A"), ("prompt", "prompt.b", "B"))
    ]
