"""Aggregation: a trace's records become one run summary (bridge contract, sections 4 and 5)."""

from __future__ import annotations

import dataclasses
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.merkle import EMPTY_SHA256, flat_hash, leaf_hash, merkle_root
from aigp_otel_bridge.run_inputs import Overflow
from aigp_otel_bridge.stages.aggregate import RunSummary, aggregate
from aigp_otel_bridge.stages.extract import (
    GovernanceRecord,
    ResourceRef,
    record_from_aigp_event,
    record_from_attributes,
)
from tests.factories import two_leaves

H1 = flat_hash("one")
H2 = flat_hash("two")
H3 = flat_hash("three")


def _record(**fields: object) -> GovernanceRecord:
    if fields.get("governance_hash") is not None:
        fields.setdefault("hash_type", "sha256")
    return GovernanceRecord(**fields)  # type: ignore[arg-type]


def _parent(left: str, right: str) -> str:
    return hashlib.sha256((left + right).encode("ascii")).hexdigest()


# --- governanceHash / hashType / leafCount (section 4 table) -------------------------------


def test_no_hash_gives_sha256_of_the_empty_string() -> None:
    summary = aggregate([_record(event_type="INJECT_DENIED", denied=True)])
    assert summary.governance_hash == EMPTY_SHA256 == hashlib.sha256(b"").hexdigest()
    assert summary.hash_type == "sha256"
    assert summary.leaf_count is None


def test_no_records_at_all_gives_the_empty_hash() -> None:
    summary = aggregate([])
    assert (summary.governance_hash, summary.hash_type, summary.leaf_count) == (EMPTY_SHA256, "sha256", None)
    assert summary.event_count == 0
    assert summary.enforcement == "allowed"


def test_one_sha256_hash_stands_for_itself_with_leaf_count_one() -> None:
    summary = aggregate([_record(governance_hash=H1, hash_type="sha256"), _record(event_type="X")])
    assert summary.governance_hash == H1
    assert summary.hash_type == "sha256"
    assert summary.leaf_count == 1


def test_one_merkle_hash_keeps_its_type_and_leaf_count() -> None:
    summary = aggregate([_record(governance_hash=H1, hash_type="merkle-sha256", leaf_count=4)])
    assert (summary.governance_hash, summary.hash_type, summary.leaf_count) == (H1, "merkle-sha256", 4)


def test_one_merkle_hash_with_unknown_leaf_count_omits_it() -> None:
    summary = aggregate([_record(governance_hash=H1, hash_type="merkle-sha256")])
    assert (summary.governance_hash, summary.hash_type, summary.leaf_count) == (H1, "merkle-sha256", None)


def test_one_merkle_hash_with_invalid_leaf_count_omits_it() -> None:
    record = record_from_attributes(
        {sc.GOVERNANCE_HASH: H1, sc.GOVERNANCE_HASH_TYPE: "merkle-sha256", sc.MERKLE_LEAF_COUNT: -3}
    )
    summary = aggregate([record])
    assert (summary.hash_type, summary.leaf_count) == ("merkle-sha256", None)


def test_one_merkle_hash_leaf_count_from_attribute_or_tree() -> None:
    from_span = record_from_attributes(
        {sc.GOVERNANCE_HASH: H1, sc.GOVERNANCE_HASH_TYPE: "merkle-sha256", sc.MERKLE_LEAF_COUNT: 3}
    )
    assert aggregate([from_span]).leaf_count == 3
    tree = {
        "algorithm": "sha256",
        "leaf_count": 2,
        "leaves": two_leaves(),
    }
    from_event = record_from_aigp_event(
        {"governance_hash": H1, "hash_type": "merkle-sha256", "governance_merkle_tree": tree}
    )
    assert aggregate([from_event]).leaf_count == 2


def test_one_hash_of_another_hash_type_is_reported_as_sha256() -> None:
    summary = aggregate([_record(governance_hash=H1, hash_type="sha384")])
    assert (summary.governance_hash, summary.hash_type, summary.leaf_count) == (H1, "sha256", 1)


def test_several_hashes_give_the_merkle_root_over_the_distinct_set() -> None:
    summary = aggregate(
        [
            _record(governance_hash=H3, hash_type="merkle-sha256", leaf_count=9),
            _record(governance_hash=H1),
            _record(governance_hash=H2),
        ]
    )
    first, second, third = sorted([H1, H2, H3])
    assert summary.governance_hash == _parent(_parent(first, second), third)
    assert summary.governance_hash == merkle_root({H1, H2, H3})
    assert summary.hash_type == "merkle-sha256"
    assert summary.leaf_count == 3


def test_duplicate_hashes_count_once() -> None:
    summary = aggregate(
        [_record(governance_hash=H1), _record(governance_hash=H2), _record(governance_hash=H1)]
    )
    assert summary.governance_hash == _parent(*sorted([H1, H2]))
    assert summary.leaf_count == 2
    assert summary.event_count == 3


def test_the_same_hash_on_every_record_is_a_single_hash() -> None:
    summary = aggregate([_record(governance_hash=H1) for _ in range(5)])
    assert (summary.governance_hash, summary.hash_type, summary.leaf_count) == (H1, "sha256", 1)


def test_malformed_hashes_are_left_out_and_counted() -> None:
    records = [
        record_from_attributes({sc.GOVERNANCE_HASH: H1.upper()}, event_name="aigp.inject.success"),
        record_from_attributes({sc.GOVERNANCE_HASH: H2}, event_name="aigp.inject.success"),
        record_from_attributes({sc.GOVERNANCE_HASH: H3[:63]}, event_name="aigp.inject.success"),
    ]
    summary = aggregate(records)
    assert (summary.governance_hash, summary.hash_type, summary.leaf_count) == (H2, "sha256", 1)
    assert summary.invalid == 2
    assert summary.event_count == 3


# --- enforcement, classification, counts, agents -------------------------------------------


def test_enforcement_is_denied_when_any_record_is_denied() -> None:
    records = [_record(event_type="INJECT_SUCCESS"), _record(event_type="TOOL_DENIED", denied=True)]
    summary = aggregate(records)
    assert summary.enforcement == "denied"
    assert summary.denied_count == 1
    assert summary.event_count == 2


def test_enforcement_is_allowed_when_no_record_is_denied() -> None:
    summary = aggregate([_record(event_type="INJECT_SUCCESS"), _record(event_type="PROMPT_USED")])
    assert summary.enforcement == "allowed"
    assert summary.denied_count == 0


def test_denied_count_counts_each_denied_record() -> None:
    records = [
        record_from_attributes({}, event_name="aigp.inject.denied"),
        record_from_attributes({}, event_name="aigp.policy.violation"),
        record_from_attributes({sc.ENFORCEMENT_RESULT: "allowed"}, event_name="aigp.inference.blocked"),
        record_from_attributes({}, event_name="aigp.inject.success"),
    ]
    summary = aggregate(records)
    assert (summary.event_count, summary.denied_count, summary.enforcement) == (4, 2, "denied")


def test_highest_classification_wins() -> None:
    records = [
        _record(classification="internal"),
        _record(classification="restricted"),
        _record(classification="public"),
        _record(),
    ]
    assert aggregate(records).classification == "restricted"
    assert aggregate(records[:1] + records[2:]).classification == "internal"


def test_classification_omitted_when_none_is_valid() -> None:
    records = [record_from_attributes({sc.DATA_CLASSIFICATION: "top-secret"}), _record()]
    summary = aggregate(records)
    assert summary.classification is None
    assert summary.invalid == 1


def test_agent_ids_are_sorted_and_distinct_and_the_first_is_kept() -> None:
    records = [
        _record(agent_id="agent.zeta"),
        _record(),
        _record(agent_id="agent.alpha"),
        _record(agent_id="agent.zeta"),
    ]
    summary = aggregate(records)
    assert summary.agent_ids == ("agent.alpha", "agent.zeta")
    assert summary.first_agent_id == "agent.zeta"


def test_times_span_the_records() -> None:
    summary = aggregate([_record(time_ns=30), _record(), _record(time_ns=10), _record(time_ns=20)])
    assert (summary.earliest_time_ns, summary.latest_time_ns) == (10, 30)
    assert aggregate([_record()]).latest_time_ns is None


# --- overflow -----------------------------------------------------------------------------


def test_overflow_records_still_enter_hash_enforcement_and_classification() -> None:
    overflow = Overflow()
    overflow.add(_record(governance_hash=H3, classification="restricted", denied=True, invalid=2))
    overflow.add(_record(governance_hash=H1))  # also a kept record's hash: counted once
    kept = [_record(governance_hash=H1, classification="internal"), _record(governance_hash=H2)]
    summary = aggregate(kept, overflow)
    assert summary.governance_hash == merkle_root({H1, H2, H3})
    assert summary.hash_type == "merkle-sha256"
    assert summary.leaf_count == 3
    assert summary.enforcement == "denied"
    assert summary.denied_count == 1
    assert summary.classification == "restricted"
    assert summary.event_count == 4
    assert summary.invalid == 2


def test_overflow_resources_do_not_become_inputs() -> None:
    overflow = Overflow()
    overflow.add(_record(resources=(ResourceRef("tool", "tool.late"),)))
    summary = aggregate([_record(resources=(ResourceRef("tool", "tool.early"),))], overflow)
    assert [r.name for r in summary.resources] == ["tool.early"]
    assert summary.event_count == 2


def test_only_overflow_hash_is_a_single_hash() -> None:
    overflow = Overflow()
    overflow.add(_record(governance_hash=H2, hash_type="merkle-sha256", leaf_count=7))
    summary = aggregate([], overflow)
    assert (summary.governance_hash, summary.hash_type, summary.leaf_count) == (H2, "merkle-sha256", 7)


# --- inputs (section 5) -------------------------------------------------------------------


def test_one_input_per_type_and_name_sorted() -> None:
    records = [
        _record(resources=(ResourceRef("tool", "tool.b"), ResourceRef("policy", "policy.z", 1))),
        _record(resources=(ResourceRef("tool", "tool.a"), ResourceRef("policy", "policy.z", 1))),
        _record(resources=(ResourceRef("prompt", "policy.z"),)),
    ]
    summary = aggregate(records)
    assert [(r.type, r.name) for r in summary.resources] == [
        ("policy", "policy.z"),
        ("prompt", "policy.z"),
        ("tool", "tool.a"),
        ("tool", "tool.b"),
    ]


def test_highest_version_and_observed_versions_when_several() -> None:
    records = [
        _record(resources=(ResourceRef("policy", "policy.a", 3),)),
        _record(resources=(ResourceRef("policy", "policy.a", 0),)),
        _record(resources=(ResourceRef("policy", "policy.a", 3), ResourceRef("prompt", "prompt.p", 2))),
        _record(resources=(ResourceRef("policy", "policy.a", None),)),
    ]
    policy, prompt = aggregate(records).resources
    assert (policy.version, policy.observed_versions) == (3, (0, 3))
    assert (prompt.version, prompt.observed_versions) == (2, ())


def test_version_zero_alone_is_a_version() -> None:
    (only,) = aggregate([_record(resources=(ResourceRef("policy", "policy.a", 0),))]).resources
    assert only.version == 0
    assert only.observed_versions == ()


def test_resource_without_any_version() -> None:
    (only,) = aggregate([_record(resources=(ResourceRef("tool", "tool.a"),))]).resources
    assert only.version is None
    assert only.observed_versions == ()


def test_leaf_and_content_hashes_are_collected_per_resource() -> None:
    leaf = leaf_hash("policy", "policy.a", "A")
    records = [
        _record(resources=(ResourceRef("policy", "policy.a", leaf_hash=leaf),)),
        _record(resources=(ResourceRef("policy", "policy.a", content_hash=H2),)),
        _record(resources=(ResourceRef("policy", "policy.a", content_hash=H1),)),
        _record(resources=(ResourceRef("policy", "policy.a", content_hash=H1),)),
    ]
    (only,) = aggregate(records).resources
    assert only.leaf_hashes == (leaf,)
    assert only.content_hashes == tuple(sorted([H1, H2]))


def test_content_hash_from_a_single_resource_record_reaches_the_input() -> None:
    record = record_from_attributes(
        {sc.GOVERNANCE_HASH: H1, sc.POLICY_NAME: "policy.a", sc.POLICY_VERSION: 2}
    )
    (only,) = aggregate([record]).resources
    assert (only.type, only.name, only.version) == ("policy", "policy.a", 2)
    assert only.content_hashes == (H1,)
    assert only.leaf_hashes == ()


def test_inputs_past_the_bound_are_counted() -> None:
    refs = tuple(ResourceRef("tool", f"tool.t{i}") for i in range(5))
    summary = aggregate([_record(resources=refs, invalid=1)], max_inputs=3)
    assert [r.name for r in summary.resources] == ["tool.t0", "tool.t1", "tool.t2"]
    assert summary.invalid == 1 + 2


def test_inputs_within_the_bound_cost_nothing() -> None:
    refs = tuple(ResourceRef("tool", f"tool.t{i}") for i in range(3))
    summary = aggregate([_record(resources=refs)], max_inputs=3)
    assert len(summary.resources) == 3
    assert summary.invalid == 0


# --- order independence -------------------------------------------------------------------

_HASHES = [None, H1, H2, H3]
_RESOURCES = [
    ResourceRef("policy", "policy.a", 1),
    ResourceRef("policy", "policy.a", 2),
    ResourceRef("prompt", "prompt.b", 0),
    ResourceRef("tool", "tool.c"),
    ResourceRef("policy", "policy.a", leaf_hash=leaf_hash("policy", "policy.a", "A")),
    ResourceRef("model", "model.m", content_hash=H3),
]


@st.composite
def _records(draw: st.DrawFn) -> GovernanceRecord:
    governance_hash = draw(st.sampled_from(_HASHES))
    hash_type = draw(st.sampled_from(["sha256", "merkle-sha256"])) if governance_hash else None
    return GovernanceRecord(
        event_id=draw(st.sampled_from([None, "e-1", "e-2", "e-3"])),
        event_type=draw(st.sampled_from([None, "INJECT_SUCCESS", "TOOL_DENIED"])),
        governance_hash=governance_hash,
        hash_type=hash_type,
        leaf_count=draw(st.sampled_from([None, 2, 5])) if hash_type == "merkle-sha256" else None,
        denied=draw(st.booleans()),
        classification=draw(st.sampled_from([None, *sc.CLASSIFICATION_RANK])),
        agent_id=draw(st.sampled_from([None, "agent.a", "agent.b"])),
        time_ns=draw(st.one_of(st.none(), st.integers(0, 10**18))),
        resources=tuple(draw(st.lists(st.sampled_from(_RESOURCES), max_size=3))),
        invalid=draw(st.integers(0, 2)),
    )


def _order_free(summary: RunSummary) -> RunSummary:
    # The first record's agent id is the contract's fallback agentId: by definition order-dependent.
    return dataclasses.replace(summary, first_agent_id=None)


def test_conflicting_leaf_counts_for_one_hash_do_not_depend_on_order() -> None:
    # The same Merkle root reported twice with different leaf counts (no event ids to order them).
    small = _record(governance_hash=H1, hash_type="merkle-sha256", leaf_count=2)
    large = _record(governance_hash=H1, hash_type="merkle-sha256", leaf_count=5)
    assert aggregate([small, large]).leaf_count == aggregate([large, small]).leaf_count


@given(st.lists(_records(), max_size=8).flatmap(lambda rs: st.tuples(st.just(rs), st.permutations(rs))))
def test_result_is_independent_of_record_order(
    pair: tuple[list[GovernanceRecord], list[GovernanceRecord]],
) -> None:
    records, shuffled = pair
    assert _order_free(aggregate(records, max_inputs=3)) == _order_free(aggregate(shuffled, max_inputs=3))


@given(st.lists(_records(), max_size=8))
def test_properties_of_any_aggregate(records: list[GovernanceRecord]) -> None:
    summary = aggregate(records)
    distinct = {r.governance_hash for r in records if r.governance_hash is not None}
    assert summary.event_count == len(records)
    assert summary.denied_count == sum(r.denied for r in records)
    assert summary.enforcement == ("denied" if any(r.denied for r in records) else "allowed")
    if len(distinct) >= 2:
        assert summary.governance_hash == merkle_root(distinct)
        assert (summary.hash_type, summary.leaf_count) == ("merkle-sha256", len(distinct))
    elif len(distinct) == 1:
        assert summary.governance_hash == next(iter(distinct))
    else:
        assert (summary.governance_hash, summary.hash_type, summary.leaf_count) == (
            EMPTY_SHA256,
            "sha256",
            None,
        )


@given(
    st.lists(_records(), min_size=1, max_size=8),
    st.lists(st.sampled_from(_RESOURCES), max_size=3),
)
def test_records_sharing_one_resource_tuple_aggregate_as_copies_do(
    records: list[GovernanceRecord], named: list[ResourceRef]
) -> None:
    # Extraction shares one tuple of references among records naming the same resources, and the
    # aggregate skips a repeat of the previous record's tuple: the result must not depend on it.
    shared = tuple(named)
    sharing = [dataclasses.replace(record, resources=shared) for record in records]
    copies = [dataclasses.replace(record, resources=tuple(list(named))) for record in records]
    assert aggregate(sharing) == aggregate(copies)


def test_a_denied_repeat_of_shared_references_marks_the_resource_denied() -> None:
    shared = (ResourceRef("policy", "policy.a", 1, content_hash=H1),)
    records = [_record(resources=shared), _record(resources=shared), _record(resources=shared, denied=True)]
    (resource,) = aggregate(records).resources
    assert resource.denied
    assert aggregate(records[:2]).resources[0].denied is False
