"""Aggregation: a run's records become one ``RunSummary`` (bridge contract, sections 4 and 5).

Pure functions, shared by the correlation worker, the builder API and ``verify``, so all give
the same proof for the same records. Record order never changes the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.correlate import Observed, Overflow
from aigp_otel_bridge.merkle import EMPTY_SHA256, merkle_root
from aigp_otel_bridge.records import GovernanceRecord


@dataclass(frozen=True, slots=True)
class ResourceSummary:
    """One governed resource of a run: one OpenLineage input dataset."""

    type: str
    name: str
    version: int | None = None
    observed_versions: tuple[int, ...] = ()
    leaf_hashes: tuple[str, ...] = ()
    content_hashes: tuple[str, ...] = ()
    denied: bool = False
    """Any record about this resource was denied."""
    governed: bool = True
    """Covered by at least one AIGP record (False: only observed on GenAI spans)."""
    provider: str | None = None
    """A model's provider, from its GenAI spans."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The aggregate proof of one run, before it is given an OpenLineage shape."""

    governance_hash: str
    hash_type: str
    leaf_count: int | None
    enforcement: str
    classification: str | None
    event_count: int
    denied_count: int
    agent_ids: tuple[str, ...]
    first_agent_id: str | None
    resources: tuple[ResourceSummary, ...]
    latest_time_ns: int | None
    earliest_time_ns: int | None
    invalid: int
    """Values left out as invalid, including resources past the inputs bound."""
    ungoverned_count: int = 0
    """Inputs observed without any AIGP record covering them."""


_CLASSIFICATION_BY_RANK = {rank: name for name, rank in sc.CLASSIFICATION_RANK.items()}
_NO_OVERFLOW = Overflow()
"""Read, never changed: a run with nothing past the per-run bound."""


def _aggregate_hash(
    hashes: dict[str, tuple[str | None, int | None]],
) -> tuple[str, str, int | None]:
    """The contract's section-4 rule: one hash stands for itself, several form a Merkle root."""
    if not hashes:
        return EMPTY_SHA256, "sha256", None
    if len(hashes) == 1:
        ((only, (hash_type, leaf_count)),) = hashes.items()
        if hash_type == "merkle-sha256":
            return only, hash_type, leaf_count
        return only, "sha256", 1
    return merkle_root(hashes), "merkle-sha256", len(hashes)


def _summarise_resources(
    records: Iterable[GovernanceRecord], max_inputs: int, observed: Iterable[Observed] = ()
) -> tuple[tuple[ResourceSummary, ...], int]:
    found: dict[tuple[str, str], _Resource] = {}
    for record in records:
        for ref in record.resources:
            key = (ref.type, ref.name)
            resource = found.get(key)
            if resource is None:
                resource = found[key] = _Resource()
            if record.denied:
                resource.denied = True
            if ref.version is not None:
                resource.versions.add(ref.version)
            if ref.leaf_hash is not None:
                resource.leaves.add(ref.leaf_hash)
            if ref.content_hash is not None:
                resource.contents.add(ref.content_hash)
    for resource_type, name, provider in observed:
        resource = found.get((resource_type, name))
        if resource is None:
            resource = found[(resource_type, name)] = _Resource(governed=False)
        resource.provider = resource.provider or provider
    keys = sorted(found)
    summaries = tuple(_summary(key, found[key]) for key in keys[:max_inputs])
    return summaries, max(0, len(keys) - max_inputs)


class _Resource:
    """What a run's records say about one resource, gathered before it becomes a summary."""

    __slots__ = ("contents", "denied", "governed", "leaves", "provider", "versions")

    def __init__(self, *, governed: bool = True) -> None:
        self.versions: set[int] = set()
        self.leaves: set[str] = set()
        self.contents: set[str] = set()
        self.denied = False
        self.governed = governed
        self.provider: str | None = None


def _summary(key: tuple[str, str], resource: _Resource) -> ResourceSummary:
    versions, leaves, contents = resource.versions, resource.leaves, resource.contents
    return ResourceSummary(
        key[0],
        key[1],
        max(versions) if versions else None,
        tuple(sorted(versions)) if len(versions) > 1 else (),
        tuple(sorted(leaves)) if len(leaves) > 1 else tuple(leaves),
        tuple(sorted(contents)) if len(contents) > 1 else tuple(contents),
        resource.denied,
        resource.governed,
        resource.provider,
    )


def aggregate(
    records: Iterable[GovernanceRecord],
    overflow: Overflow | None = None,
    *,
    max_inputs: int = 1000,
    observed: Iterable[Observed] = (),
) -> RunSummary:
    """Summarise a trace's records (plus those kept only as overflow) into its run's proof;
    ``observed``: tools and models seen on GenAI spans, inputs of their own when no record
    covers them (``governed: false``)."""
    records = list(records)
    overflow = overflow or _NO_OVERFLOW
    speaking: dict[str, GovernanceRecord] = {}
    """Per governance hash, the record that speaks for it (``_record_order``)."""
    denied, invalid, top_rank = overflow.denied, overflow.invalid, overflow.classification_rank
    agent_ids: set[str] = set()
    first_agent: str | None = None
    latest: int | None = None
    earliest: int | None = None
    for record in records:
        digest = record.governance_hash
        if digest is not None:
            known = speaking.get(digest)
            if known is None or _record_order(record) < _record_order(known):
                speaking[digest] = record
        denied += record.denied
        invalid += record.invalid
        if record.classification is not None:
            top_rank = max(top_rank, sc.CLASSIFICATION_RANK[record.classification])
        agent_id = record.agent_id
        if agent_id is not None:
            agent_ids.add(agent_id)
            if first_agent is None:
                first_agent = agent_id
        time_ns = record.time_ns
        if time_ns is not None:
            if latest is None or time_ns > latest:
                latest = time_ns
            if earliest is None or time_ns < earliest:
                earliest = time_ns
    hashes = {digest: (record.hash_type, record.leaf_count) for digest, record in speaking.items()}
    for digest, details in overflow.hashes.items():
        hashes.setdefault(digest, details)
    governance_hash, hash_type, leaf_count = _aggregate_hash(hashes)
    resources, inputs_left_out = _summarise_resources(records, max_inputs, observed)
    return RunSummary(
        governance_hash=governance_hash,
        hash_type=hash_type,
        leaf_count=leaf_count,
        enforcement=sc.DENIED if denied else sc.ALLOWED,
        classification=_CLASSIFICATION_BY_RANK.get(top_rank),
        event_count=len(records) + overflow.count,
        denied_count=denied,
        agent_ids=tuple(sorted(agent_ids)),
        first_agent_id=first_agent,
        resources=resources,
        latest_time_ns=latest,
        earliest_time_ns=earliest,
        invalid=invalid + inputs_left_out,
        ungoverned_count=sum(not resource.governed for resource in resources),
    )


def _record_order(record: GovernanceRecord) -> tuple[str, bool, int, str]:
    """The order in which records speak for a hash they share, whatever order they arrived in:
    ``merkle-sha256`` before ``sha256``, a known leaf count first, the largest one first."""
    return (
        record.hash_type or "~",
        record.leaf_count is None,
        -(record.leaf_count or 0),
        record.event_id or "",
    )
