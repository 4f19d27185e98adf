"""Aggregation: a run's records become one ``RunSummary`` (bridge contract, sections 4 and 5).

Pure functions, shared by the correlation worker, the builder API and ``verify``, so all give
the same proof for the same records. Record order changes nothing but ``first_agent_id``: the
contract's fallback agentId is the first record's (section 5), so it is the agent id of the first
record, in the order given, that has one (correlation keeps a run's records in arrival order).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.merkle import EMPTY_SHA256, merkle_root
from aigp_otel_bridge.run_inputs import Observed, Overflow
from aigp_otel_bridge.stages.extract import GovernanceRecord, ResourceRef


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
    """The agent id of the first record (in the order given) that has one: order-dependent by
    the contract's definition of the fallback agentId."""
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


class _ResourceEvidence:
    """What a run's records say about one resource: every version, leaf hash and content hash
    they name, and whether any of them was denied."""

    __slots__ = ("contents", "denied", "leaves", "versions")

    def __init__(self) -> None:
        self.versions: set[int] = set()
        self.leaves: set[str] = set()
        self.contents: set[str] = set()
        self.denied = False

    def add(self, ref: ResourceRef, denied: bool) -> None:
        if denied:
            self.denied = True
        if ref.version is not None:
            self.versions.add(ref.version)
        if ref.leaf_hash is not None:
            self.leaves.add(ref.leaf_hash)
        if ref.content_hash is not None:
            self.contents.add(ref.content_hash)

    def summary(self, resource_type: str, name: str, provider: str | None) -> ResourceSummary:
        versions = self.versions
        return ResourceSummary(
            type=resource_type,
            name=name,
            version=max(versions) if versions else None,
            observed_versions=tuple(sorted(versions)) if len(versions) > 1 else (),
            leaf_hashes=tuple(sorted(self.leaves)),
            content_hashes=tuple(sorted(self.contents)),
            denied=self.denied,
            provider=provider,
        )


def _summarise_resources(
    records: Iterable[GovernanceRecord], max_inputs: int, observed: Iterable[Observed] = ()
) -> tuple[tuple[ResourceSummary, ...], int]:
    """The run's inputs, sorted by (type, name), at most ``max_inputs`` of them; and how many
    were left out past that bound."""
    evidence: dict[tuple[str, str], _ResourceEvidence] = {}
    for record in records:
        for ref in record.resources:
            key = (ref.type, ref.name)
            known = evidence.get(key)
            if known is None:
                known = evidence[key] = _ResourceEvidence()
            known.add(ref, record.denied)
    providers: dict[tuple[str, str], str] = {}
    observed_only: set[tuple[str, str]] = set()
    for resource_type, name, provider in observed:
        key = (resource_type, name)
        if key not in evidence:
            observed_only.add(key)
        if provider:
            providers.setdefault(key, provider)
    keys = sorted(evidence.keys() | observed_only)
    summaries = tuple(
        ResourceSummary(type=key[0], name=key[1], governed=False, provider=providers.get(key))
        if key in observed_only
        else evidence[key].summary(key[0], key[1], providers.get(key))
        for key in keys[:max_inputs]
    )
    return summaries, max(0, len(keys) - max_inputs)


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
    records = tuple(records)
    overflow = overflow or _NO_OVERFLOW
    speaking: dict[str, GovernanceRecord] = {}
    """Per governance hash, the record that speaks for it (``_record_order``)."""
    for record in records:
        digest = record.governance_hash
        if digest is not None:
            known = speaking.get(digest)
            if known is None or _record_order(record) < _record_order(known):
                speaking[digest] = record
    denied = overflow.denied + sum(record.denied for record in records)
    invalid = overflow.invalid + sum(record.invalid for record in records)
    top_rank = max(
        (sc.CLASSIFICATION_RANK[r.classification] for r in records if r.classification is not None),
        default=overflow.classification_rank,
    )
    agents = [record.agent_id for record in records if record.agent_id is not None]
    times = [record.time_ns for record in records if record.time_ns is not None]
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
        classification=_CLASSIFICATION_BY_RANK.get(max(top_rank, overflow.classification_rank)),
        event_count=len(records) + overflow.count,
        denied_count=denied,
        agent_ids=tuple(sorted(set(agents))),
        first_agent_id=agents[0] if agents else None,
        resources=resources,
        latest_time_ns=max(times, default=None),
        earliest_time_ns=min(times, default=None),
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
