"""AIGP hashing (spec 8.8): flat hashes, Merkle leaves and the promote-odd Merkle root.

Pure functions on lowercase hex strings, so that anyone holding a trace's governance
hashes can recompute what the bridge emitted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from aigp_otel_bridge.semconv import SHA256_HEX

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def is_sha256_hex(value: object) -> bool:
    """True for exactly 64 lowercase hex characters, the only hash form AIGP facets accept."""
    return isinstance(value, str) and SHA256_HEX.fullmatch(value) is not None


def flat_hash(content: str) -> str:
    """SHA-256 of the UTF-8 content: the governance hash of a single resource."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def leaf_hash(resource_type: str, resource_name: str, content: str) -> str:
    """The spec-8.8.2 leaf: SHA-256 of ``type:name:content``; domain separation per resource."""
    return flat_hash(f"{resource_type}:{resource_name}:{content}")


def merkle_root(leaves: Iterable[str]) -> str:
    """The spec-8.8.3 root of leaf hashes: sorted, paired left to right, an odd last node promoted.

    Duplicates are kept as given; callers that want a set pass a set.
    """
    level = sorted(leaves)
    if not level:
        raise ValueError("a Merkle root needs at least one leaf")
    while len(level) > 1:
        paired = [
            hashlib.sha256((level[i] + level[i + 1]).encode("ascii")).hexdigest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]
