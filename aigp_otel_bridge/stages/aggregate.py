"""Aggregation: a run's records become one ``RunSummary`` (bridge contract, sections 4 and 5).

Pure functions, shared by the correlation worker, the builder API and ``verify``, so all give
the same proof for the same records. Record order never changes the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.memo import remember
from aigp_otel_bridge.merkle import EMPTY_SHA256, merkle_root
from aigp_otel_bridge.stages.correlate import Observed, Overflow
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


@dataclass(slots=True)
class RunSummary:
    """The aggregate proof of one run, before it is given an OpenLineage shape. Treated as
    immutable once built; not frozen, because a frozen dataclass sets each of its fields through
    ``object.__setattr__``, which costs three times as much (once per run)."""

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
    if len(hashes) > _ROOTS_KEY_MAX:
        return merkle_root(hashes), "merkle-sha256", len(hashes)
    digests = frozenset(hashes)
    root = _ROOTS.get(digests)
    if root is None:
        root = remember(_ROOTS, digests, merkle_root(digests), _ROOTS_MAX)
    return root, "merkle-sha256", len(hashes)


_ROOTS: dict[frozenset[str], str] = {}
"""Merkle roots by their set of hashes: runs of one agent govern the same content run after run."""
_ROOTS_MAX = 1024
_ROOTS_KEY_MAX = 64
"""Most hashes in a cached set, so that the cache stays small in bytes (large sets are rare)."""


def _summarise_resources(
    records: Iterable[GovernanceRecord], max_inputs: int, observed: Iterable[Observed] = ()
) -> tuple[tuple[ResourceSummary, ...], int]:
    # Most resources are named by one reference in a run: it stays ``(ref, denied)`` (no sets)
    # and its summary is shared by value (``_single``); a second one makes it a ``_Resource``.
    found: dict[tuple[str, str], tuple[ResourceRef, bool] | _Resource | None] = {}
    last_named: tuple[ResourceRef, ...] | None = None
    last_denied = False
    for record in records:
        named, denied = record.resources, record.denied
        if named is last_named and denied == last_denied:
            continue  # the same shared references again, alike denied: they would change nothing
        last_named, last_denied = named, denied
        for ref in named:
            key = (ref.type, ref.name)
            known = found.get(key)
            if known is None:
                found[key] = (ref, denied)
                continue
            if type(known) is tuple:
                if known[0] is ref:  # the same shared reference again: at most newly denied
                    if denied and not known[1]:
                        found[key] = (ref, True)
                    continue
                known = found[key] = _Resource.of(*known)
            known.add(ref, denied)  # type: ignore[union-attr]
    providers: dict[tuple[str, str], str] = {}
    for resource_type, name, provider in observed:
        key = (resource_type, name)
        found.setdefault(key, None)  # None: observed only, not governed
        if provider:
            providers.setdefault(key, provider)
    keys = sorted(found)
    summaries = tuple([_summary(key, found[key], providers.get(key)) for key in keys[:max_inputs]])
    return summaries, max(0, len(keys) - max_inputs)


class _Resource:
    """What several references of a run's records say about one resource."""

    __slots__ = ("contents", "denied", "leaves", "versions")

    def __init__(self) -> None:
        self.versions: set[int] = set()
        self.leaves: set[str] = set()
        self.contents: set[str] = set()
        self.denied = False

    @classmethod
    def of(cls, ref: ResourceRef, denied: bool) -> _Resource:
        resource = cls()
        resource.add(ref, denied)
        return resource

    def add(self, ref: ResourceRef, denied: bool) -> None:
        if denied:
            self.denied = True
        if ref.version is not None:
            self.versions.add(ref.version)
        if ref.leaf_hash is not None:
            self.leaves.add(ref.leaf_hash)
        if ref.content_hash is not None:
            self.contents.add(ref.content_hash)


_SINGLE: dict[tuple[object, ...], ResourceSummary] = {}
"""Keyed by plain values, not by the ``ResourceRef``: a dataclass hashes and compares in Python."""
_SINGLE_MAX = 4096


def _single(ref: ResourceRef, denied: bool, provider: str | None) -> ResourceSummary:
    """The summary of a resource named by one reference, one object per value: runs of one agent
    name the same resources (shared references, ``records._shared``) run after run."""
    key = (ref.type, ref.name, ref.version, ref.leaf_hash, ref.content_hash, denied, provider)
    summary = _SINGLE.get(key)
    if summary is None:
        leaf, content = ref.leaf_hash, ref.content_hash
        summary = remember(_SINGLE, key, ResourceSummary(
            ref.type, ref.name, ref.version, (),
            () if leaf is None else (leaf,), () if content is None else (content,),
            denied, True, provider,
        ), _SINGLE_MAX)
    return summary


_OBSERVED: dict[tuple[tuple[str, str], str | None], ResourceSummary] = {}


def _observed_only(key: tuple[str, str], provider: str | None) -> ResourceSummary:
    """The summary of a tool or model seen only on GenAI spans, one object per value (the same
    model serves run after run)."""
    summary = _OBSERVED.get((key, provider))
    if summary is None:
        summary = remember(
            _OBSERVED, (key, provider), ResourceSummary(key[0], key[1], governed=False, provider=provider),
            _SINGLE_MAX,
        )
    return summary


def _summary(
    key: tuple[str, str], resource: tuple[ResourceRef, bool] | _Resource | None, provider: str | None
) -> ResourceSummary:
    if resource is None:
        return _observed_only(key, provider)
    if type(resource) is tuple:
        return _single(resource[0], resource[1], provider)
    assert isinstance(resource, _Resource)
    versions, leaves, contents = resource.versions, resource.leaves, resource.contents
    return ResourceSummary(
        key[0],
        key[1],
        max(versions) if versions else None,
        tuple(sorted(versions)) if len(versions) > 1 else (),
        tuple(sorted(leaves)) if len(leaves) > 1 else tuple(leaves),
        tuple(sorted(contents)) if len(contents) > 1 else tuple(contents),
        resource.denied,
        True,
        provider,
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
    if not isinstance(records, tuple):  # iterated twice
        records = tuple(records)
    overflow = overflow or _NO_OVERFLOW
    speaking: dict[str, GovernanceRecord] = {}
    """Per governance hash, the record that speaks for it (``_record_order``)."""
    denied, invalid = overflow.denied, overflow.invalid
    classifications: set[str | None] = set()  # None among them: discarded once, after the loop
    agents: list[str] = []
    latest: int | None = None
    earliest: int | None = None
    for record in records:
        digest = record.governance_hash
        if digest is not None:
            known = speaking.setdefault(digest, record)
            if known is not record and (  # records with equal details speak alike: no order to compare
                (record.hash_type != known.hash_type or record.leaf_count != known.leaf_count)
                and _record_order(record) < _record_order(known)
            ):
                speaking[digest] = record
        denied += record.denied
        invalid += record.invalid
        classifications.add(record.classification)
        if record.agent_id is not None:
            agents.append(record.agent_id)
        time_ns = record.time_ns
        if time_ns is not None:
            if latest is None or time_ns > latest:
                latest = time_ns
            if earliest is None or time_ns < earliest:
                earliest = time_ns
    top_rank = max((sc.CLASSIFICATION_RANK[c] for c in classifications if c is not None), default=-1)
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
        latest_time_ns=latest,
        earliest_time_ns=earliest,
        invalid=invalid + inputs_left_out,
        ungoverned_count=[resource.governed for resource in resources].count(False),
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
