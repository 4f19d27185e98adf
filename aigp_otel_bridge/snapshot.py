"""Lineage snapshots: pre-execution lineage hashed as an AIGP ``lineage`` resource.

OpenLineage is passive: it reports after the fact. An agent that wants its *inputs' lineage*
to be part of what it proves before acting snapshots that lineage, hashes it as a ``lineage``
resource and puts the leaf into its Merkle governance proof. The snapshot must serialise the
same way every time, or the hash proves nothing, hence sorted keys and no optional whitespace.

Example::

    from openlineage.client.event_v2 import Dataset
    from aigp_otel_bridge.snapshot import lineage_snapshot

    snapshot = lineage_snapshot(
        [Dataset(namespace="s3://finco", name="quotes/2026-01-02")], name="lineage.pre-trade"
    )
    instrumentor.multi_resource_governance_proof(
        [("policy", "policy.trading-limits", policy_text), snapshot.resource]
    )
    # keep snapshot.content next to the proof: it is what reproduces snapshot.leaf_hash
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import attr
from openlineage.client.serde import Serde

from aigp_otel_bridge.merkle import flat_hash, leaf_hash

LINEAGE_RESOURCE_TYPE = "lineage"


@dataclass(frozen=True)
class LineageSnapshot:
    """A serialised lineage snapshot and the hashes that commit to it."""

    name: str
    """The lineage resource's name (an AGRN such as ``lineage.pre-trade`` is recommended)."""
    content: str
    """The exact text that was hashed; keep it, re-serialising elsewhere may differ."""
    leaf_hash: str
    """The spec-8.8.2 leaf: SHA-256 of ``lineage:<name>:<content>``."""
    content_hash: str
    """SHA-256 of the content alone, the governance hash of a single-resource record."""

    @property
    def resource(self) -> tuple[str, str, str]:
        """``(type, name, content)``, the shape ``multi_resource_governance_proof`` takes."""
        return (LINEAGE_RESOURCE_TYPE, self.name, self.content)


def _plain(item: object) -> Any:
    """An OpenLineage object (attrs class) or a mapping as JSON-ready data.

    Both go through the client's ``Serde``, which drops ``None`` values, so that a dict and the
    object it describes commit to the same text.
    """
    if attr.has(type(item)):
        return Serde.to_dict(item)
    if isinstance(item, Mapping):
        return Serde.remove_nulls_and_enums(dict(item))
    raise TypeError(
        f"a lineage snapshot takes OpenLineage datasets or events (or dicts), got {type(item).__name__}"
    )


def serialise(snapshot: object) -> str:
    """Deterministic JSON text: sorted keys, no optional whitespace, UTF-8 characters kept as is.

    A single dataset or event serialises as an object; an iterable of them as an array, in
    the order given (order is part of what is committed to).
    """
    if isinstance(snapshot, (str, bytes)):
        raise TypeError("a lineage snapshot takes OpenLineage datasets or events, not text")
    if attr.has(type(snapshot)) or isinstance(snapshot, Mapping):
        data = _plain(snapshot)
    elif isinstance(snapshot, Iterable):
        data = [_plain(item) for item in snapshot]
    else:
        kind = type(snapshot).__name__
        raise TypeError(f"a lineage snapshot takes OpenLineage datasets or events (or dicts), got {kind}")
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"the lineage snapshot is not JSON-serialisable: {error}") from None


def lineage_snapshot(snapshot: object, *, name: str) -> LineageSnapshot:
    """Serialise OpenLineage datasets or events and hash them as the ``lineage`` resource ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError("a lineage snapshot needs a non-empty resource name")
    content = serialise(snapshot)
    return LineageSnapshot(
        name=name,
        content=content,
        leaf_hash=leaf_hash(LINEAGE_RESOURCE_TYPE, name, content),
        content_hash=flat_hash(content),
    )
