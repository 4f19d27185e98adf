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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
    versions: dict[tuple[str, str], set[int]] = {}
    leaves: dict[tuple[str, str], set[str]] = {}
    contents: dict[tuple[str, str], set[str]] = {}
    denied: set[tuple[str, str]] = set()
    for record in records:
        for ref in record.resources:
            key = (ref.type, ref.name)
            versions.setdefault(key, set())
            if record.denied:
                denied.add(key)
            if ref.version is not None:
                versions[key].add(ref.version)
            if ref.leaf_hash is not None:
                leaves.setdefault(key, set()).add(ref.leaf_hash)
            if ref.content_hash is not None:
                contents.setdefault(key, set()).add(ref.content_hash)
    governed = set(versions)
    providers: dict[tuple[str, str], str | None] = {}
    for resource_type, name, provider in observed:
        versions.setdefault((resource_type, name), set())
        providers[(resource_type, name)] = providers.get((resource_type, name)) or provider
    keys = sorted(versions)
    summaries = tuple(
        ResourceSummary(
            type=key[0],
            name=key[1],
            version=max(versions[key]) if versions[key] else None,
            observed_versions=tuple(sorted(versions[key])) if len(versions[key]) > 1 else (),
            leaf_hashes=tuple(sorted(leaves.get(key, ()))),
            content_hashes=tuple(sorted(contents.get(key, ()))),
            denied=key in denied,
            governed=key in governed,
            provider=providers.get(key),
        )
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
    records = list(records)
    overflow = overflow or Overflow()
    hashes: dict[str, tuple[str | None, int | None]] = {}
    for record in sorted(records, key=_record_order):
        if record.governance_hash is not None:
            hashes.setdefault(record.governance_hash, (record.hash_type, record.leaf_count))
    for digest, details in overflow.hashes.items():
        hashes.setdefault(digest, details)
    governance_hash, hash_type, leaf_count = _aggregate_hash(hashes)

    denied = sum(record.denied for record in records) + overflow.denied
    ranks = [sc.CLASSIFICATION_RANK[r.classification] for r in records if r.classification is not None]
    top_rank = max([*ranks, overflow.classification_rank], default=-1)
    agent_ids = sorted({r.agent_id for r in records if r.agent_id is not None})
    first_agent = next((r.agent_id for r in records if r.agent_id is not None), None)
    times = [r.time_ns for r in records if r.time_ns is not None]
    resources, inputs_left_out = _summarise_resources(records, max_inputs, observed)
    return RunSummary(
        governance_hash=governance_hash,
        hash_type=hash_type,
        leaf_count=leaf_count,
        enforcement=sc.DENIED if denied else sc.ALLOWED,
        classification=_CLASSIFICATION_BY_RANK.get(top_rank),
        event_count=len(records) + overflow.count,
        denied_count=denied,
        agent_ids=tuple(agent_ids),
        first_agent_id=first_agent,
        resources=resources,
        latest_time_ns=max(times, default=None),
        earliest_time_ns=min(times, default=None),
        invalid=sum(r.invalid for r in records) + overflow.invalid + inputs_left_out,
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
