"""Extraction: ``aigp.*`` attributes and full AIGP events become ``GovernanceRecord``s."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.merkle import flat_hash, leaf_hash
from aigp_otel_bridge.note import NoteEvent, SpanNote
from aigp_otel_bridge.stages.aggregate import aggregate
from aigp_otel_bridge.stages.extract import _RECORD_KEYS as RECORD_KEYS
from aigp_otel_bridge.stages.extract import _RECORDS_REMEMBERED as RECORDS_REMEMBERED
from aigp_otel_bridge.stages.extract import (
    Extractor,
    GovernanceRecord,
    Limits,
    ResourceRef,
    error_of,
    gen_ai_facts_of,
    has_governance_attributes,
    merge_records,
    parse_event_time,
    record_from_aigp_event,
    record_from_attributes,
    records_from_aigp_events,
    records_from_note,
    trace_key_of,
)
from tests.factories import store_event, two_leaves

HASH_A = flat_hash("policy A content")
HASH_B = flat_hash("policy B content")
TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"


def _ns(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


# --- event type ---------------------------------------------------------------------------


def test_event_type_attribute_wins_over_the_event_name() -> None:
    record = record_from_attributes({sc.EVENT_TYPE: "PROMPT_USED"}, event_name="aigp.inject.success")
    assert record.event_type == "PROMPT_USED"


@pytest.mark.parametrize(("event_name", "event_type"), sorted(sc.SPAN_EVENT_TYPES.items()))
def test_event_type_from_each_of_the_22_span_event_names(event_name: str, event_type: str) -> None:
    assert record_from_attributes({}, event_name=event_name).event_type == event_type


def test_there_are_22_span_event_names() -> None:
    assert len(sc.SPAN_EVENT_TYPES) == 22
    assert sc.SPAN_EVENT_TYPES["aigp.boundary.unverified"] == "UNVERIFIED_BOUNDARY"


@pytest.mark.parametrize(
    ("event_name", "event_type"),
    [
        ("aigp.custom.thing", "CUSTOM_THING"),
        ("aigp.compliance.check-passed", "COMPLIANCE_CHECK_PASSED"),
        ("aigp.audit", "AUDIT"),
    ],
)
def test_unknown_span_event_names_derive_a_custom_type(event_name: str, event_type: str) -> None:
    assert record_from_attributes({}, event_name=event_name).event_type == event_type


def test_malformed_event_type_attribute_is_counted_and_the_name_used() -> None:
    record = record_from_attributes({sc.EVENT_TYPE: "inject success"}, event_name="aigp.tool.invoked")
    assert record.event_type == "TOOL_INVOKED"
    assert record.invalid == 1


def test_custom_event_type_attribute_is_carried() -> None:
    assert record_from_attributes({sc.EVENT_TYPE: "MY_CUSTOM_TYPE_2"}).event_type == "MY_CUSTOM_TYPE_2"


def test_span_attributes_without_type_or_name_have_no_event_type() -> None:
    record = record_from_attributes({sc.GOVERNANCE_HASH: HASH_A})
    assert record.event_type is None
    assert record.denied is False


# --- hashes -------------------------------------------------------------------------------


def test_valid_hash_is_kept_and_hash_type_defaults_to_sha256() -> None:
    record = record_from_attributes({sc.GOVERNANCE_HASH: HASH_A})
    assert record.governance_hash == HASH_A
    assert record.hash_type == "sha256"
    assert record.invalid == 0


def test_no_hash_means_no_hash_type() -> None:
    record = record_from_attributes({sc.EVENT_TYPE: "INJECT_DENIED"})
    assert record.governance_hash is None
    assert record.hash_type is None


def test_empty_hash_is_absent_not_invalid() -> None:
    record = record_from_attributes({sc.GOVERNANCE_HASH: "", sc.EVENT_TYPE: "INJECT_DENIED"})
    assert record.governance_hash is None
    assert record.invalid == 0


@pytest.mark.parametrize("bad", [HASH_A.upper(), HASH_A[:62], HASH_A + "ab", "not-a-hash", 42, [HASH_A]])
def test_malformed_hash_is_left_out_and_counted(bad: object) -> None:
    record = record_from_attributes({sc.GOVERNANCE_HASH: bad})
    assert record.governance_hash is None
    assert record.hash_type is None
    assert record.invalid == 1


def test_explicit_merkle_hash_type_and_leaf_count() -> None:
    record = record_from_attributes(
        {sc.GOVERNANCE_HASH: HASH_A, sc.GOVERNANCE_HASH_TYPE: "merkle-sha256", sc.MERKLE_LEAF_COUNT: 3}
    )
    assert record.hash_type == "merkle-sha256"
    assert record.leaf_count == 3


@pytest.mark.parametrize("bad", [0, -2, True, "3", 2.0])
def test_invalid_leaf_count_is_left_out_and_counted(bad: object) -> None:
    record = record_from_attributes(
        {sc.GOVERNANCE_HASH: HASH_A, sc.GOVERNANCE_HASH_TYPE: "merkle-sha256", sc.MERKLE_LEAF_COUNT: bad}
    )
    assert record.leaf_count is None
    assert record.invalid == 1


def test_unknown_hash_type_is_counted_and_sha256_assumed() -> None:
    record = record_from_attributes({sc.GOVERNANCE_HASH: HASH_A, sc.GOVERNANCE_HASH_TYPE: "md5"})
    assert record.hash_type == "sha256"
    assert record.invalid == 1


# --- enforcement --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "explicit", "denied"),
    [
        ("INJECT_SUCCESS", "denied", True),
        ("INJECT_DENIED", "allowed", False),
        ("INJECT_SUCCESS", None, False),
        ("INJECT_DENIED", None, True),
        ("POLICY_VIOLATION", None, True),
        ("INFERENCE_BLOCKED", None, True),
        ("CUSTOM_BLOCKED_BY_RULE", None, True),
        ("TOOL_INVOKED", None, False),
    ],
)
def test_enforcement_explicit_wins_else_derived_from_type(
    event_type: str, explicit: str | None, denied: bool
) -> None:
    attributes: dict[str, Any] = {sc.EVENT_TYPE: event_type}
    if explicit is not None:
        attributes[sc.ENFORCEMENT_RESULT] = explicit
    assert record_from_attributes(attributes).denied is denied


@pytest.mark.parametrize(
    "event_name", ["aigp.inject.denied", "aigp.policy.violation", "aigp.inference.blocked"]
)
def test_denial_derived_from_span_event_name(event_name: str) -> None:
    assert record_from_attributes({}, event_name=event_name).denied is True


@pytest.mark.parametrize(("event_type", "denied"), [("INJECT_DENIED", True), ("INJECT_SUCCESS", False)])
def test_unknown_enforcement_value_counts_as_absent(event_type: str, denied: bool) -> None:
    record = record_from_attributes({sc.EVENT_TYPE: event_type, sc.ENFORCEMENT_RESULT: "maybe"})
    assert record.denied is denied
    assert record.invalid == 1


# --- classification -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["public", "internal", "confidential", "restricted"])
def test_valid_classification_is_kept(value: str) -> None:
    record = record_from_attributes({sc.DATA_CLASSIFICATION: value})
    assert record.classification == value
    assert record.invalid == 0


@pytest.mark.parametrize("value", ["secret", "Public", "RESTRICTED", 3, ["public"]])
def test_invalid_classification_is_left_out_and_counted(value: object) -> None:
    record = record_from_attributes({sc.DATA_CLASSIFICATION: value})
    assert record.classification is None
    assert record.invalid == 1


# --- resources ----------------------------------------------------------------------------


def test_single_policy_and_prompt_with_versions() -> None:
    record = record_from_attributes(
        {
            sc.POLICY_NAME: "policy.trading-limits",
            sc.POLICY_VERSION: 4,
            sc.PROMPT_NAME: "prompt.analyst",
            sc.PROMPT_VERSION: 0,
        }
    )
    assert set(record.resources) == {
        ResourceRef("policy", "policy.trading-limits", 4),
        ResourceRef("prompt", "prompt.analyst", None),  # 0: the SDK's "no version"
    }
    assert record.invalid == 0
    assert record.invalid == 0


def test_single_resource_without_version() -> None:
    record = record_from_attributes({sc.POLICY_NAME: "policy.a"})
    assert record.resources == (ResourceRef("policy", "policy.a", None),)


@pytest.mark.parametrize("bad", [-1, True, False, "4", 4.0])
def test_invalid_single_version_is_left_out_and_counted(bad: object) -> None:
    record = record_from_attributes({sc.POLICY_NAME: "policy.a", sc.POLICY_VERSION: bad})
    assert record.resources == (ResourceRef("policy", "policy.a", None),)
    assert record.invalid == 1


def test_array_resources_with_positional_versions() -> None:
    record = record_from_attributes(
        {
            "aigp.policies.names": ["policy.a", "policy.b", "policy.c"],
            "aigp.policies.versions": [2, 0],
            "aigp.prompts.names": ("prompt.x",),
            "aigp.prompts.versions": (7,),
            "aigp.tools.names": ["tool.search"],
            "aigp.contexts.names": ["context.user"],
            "aigp.lineages.names": ["lineage.snap"],
            "aigp.memories.names": ["memory.long-term"],
            "aigp.models.names": ["model.gpt"],
        }
    )
    assert set(record.resources) == {
        ResourceRef("policy", "policy.a", 2),
        ResourceRef("policy", "policy.b", None),  # 0: the SDK's "no version"
        ResourceRef("policy", "policy.c", None),
        ResourceRef("prompt", "prompt.x", 7),
        ResourceRef("tool", "tool.search"),
        ResourceRef("context", "context.user"),
        ResourceRef("lineage", "lineage.snap"),
        ResourceRef("memory", "memory.long-term"),
        ResourceRef("model", "model.gpt"),
    }
    assert record.invalid == 0


def test_invalid_array_versions_are_left_out_and_counted() -> None:
    record = record_from_attributes(
        {
            "aigp.policies.names": ["policy.a", "policy.b", "policy.c", "policy.d"],
            "aigp.policies.versions": [-1, True, "3", 5],
        }
    )
    assert [(r.name, r.version) for r in record.resources] == [
        ("policy.a", None),
        ("policy.b", None),
        ("policy.c", None),
        ("policy.d", 5),
    ]
    assert record.invalid == 3


@pytest.mark.parametrize("bad", ["", 42, None, "x" * 1025])
def test_bad_array_names_are_left_out_and_counted(bad: object) -> None:
    record = record_from_attributes({"aigp.tools.names": ["tool.ok", bad]})
    assert record.resources == (ResourceRef("tool", "tool.ok"),)
    assert record.invalid == 1


def test_versions_stay_positional_when_a_name_is_left_out() -> None:
    record = record_from_attributes(
        {"aigp.policies.names": ["", "policy.b"], "aigp.policies.versions": [1, 2]}
    )
    assert record.resources == (ResourceRef("policy", "policy.b", 2),)
    assert record.invalid == 1


@pytest.mark.parametrize("bad", ["", 7, "y" * 1025])
def test_bad_single_names_are_left_out_and_counted(bad: object) -> None:
    record = record_from_attributes({sc.POLICY_NAME: bad, sc.POLICY_VERSION: 1})
    assert record.resources == ()
    assert record.invalid == 1


def test_name_at_the_length_bound_is_kept_and_non_agrn_names_are_kept() -> None:
    longest = "n" * Limits().max_string_length
    record = record_from_attributes({"aigp.tools.names": [longest, "My Tool (v2)"]})
    assert {r.name for r in record.resources} == {longest, "My Tool (v2)"}
    assert record.invalid == 0


def test_custom_length_bound_applies() -> None:
    record = record_from_attributes(
        {"aigp.tools.names": ["abcd", "abcde"]}, limits=Limits(max_string_length=4)
    )
    assert [r.name for r in record.resources] == ["abcd"]
    assert record.invalid == 1


def test_names_attribute_that_is_not_an_array_is_counted() -> None:
    record = record_from_attributes({"aigp.tools.names": "tool.search"})
    assert record.resources == ()
    assert record.invalid == 1


def test_array_past_the_bound_is_cut_and_the_rest_counted() -> None:
    names = [f"tool.t{i}" for i in range(5)]
    record = record_from_attributes({"aigp.tools.names": names}, limits=Limits(max_array_length=3))
    assert [r.name for r in record.resources] == names[:3]
    assert record.invalid == 2


def test_content_hash_on_the_single_resource_of_a_sha256_record() -> None:
    record = record_from_attributes(
        {sc.GOVERNANCE_HASH: HASH_A, sc.POLICY_NAME: "policy.a", sc.POLICY_VERSION: 1}
    )
    assert record.resources == (ResourceRef("policy", "policy.a", 1, content_hash=HASH_A),)
    assert record.resources[0].leaf_hash is None


def test_no_content_hash_when_several_resources() -> None:
    record = record_from_attributes(
        {sc.GOVERNANCE_HASH: HASH_A, sc.POLICY_NAME: "policy.a", sc.PROMPT_NAME: "prompt.b"}
    )
    assert len(record.resources) == 2
    assert all(r.content_hash is None for r in record.resources)


def test_no_content_hash_for_a_merkle_record() -> None:
    record = record_from_attributes(
        {sc.GOVERNANCE_HASH: HASH_A, sc.GOVERNANCE_HASH_TYPE: "merkle-sha256", sc.POLICY_NAME: "policy.a"}
    )
    assert record.resources[0].content_hash is None


def test_no_content_hash_without_a_hash() -> None:
    record = record_from_attributes({sc.POLICY_NAME: "policy.a"})
    assert record.resources[0].content_hash is None


def test_identity_event_id_and_time_are_read() -> None:
    record = record_from_attributes(
        {sc.EVENT_ID: "e-1", sc.AGENT_ID: "agent.bot"}, event_name="aigp.inject.success", time_ns=123
    )
    assert (record.event_id, record.agent_id, record.time_ns) == ("e-1", "agent.bot", 123)


def test_nothing_raises_on_garbage() -> None:
    garbage: dict[str, Any] = {
        sc.EVENT_TYPE: object(),
        sc.EVENT_ID: 12,
        sc.GOVERNANCE_HASH: b"\xff",
        sc.GOVERNANCE_HASH_TYPE: 1,
        sc.MERKLE_LEAF_COUNT: "x",
        sc.ENFORCEMENT_RESULT: ["denied"],
        sc.DATA_CLASSIFICATION: {},
        sc.POLICY_NAME: 1.5,
        "aigp.policies.names": {"a": 1},
        "aigp.policies.versions": 3,
    }
    record = record_from_attributes(garbage, event_name="aigp.x")
    assert record.governance_hash is None
    assert record.resources == ()
    assert record.invalid >= 8


# --- full AIGP events ---------------------------------------------------------------------


def _merkle_event(**overrides: Any) -> dict[str, Any]:
    leaves = two_leaves()
    event: dict[str, Any] = {
        "event_id": "11111111-2222-3333-4444-555555555555",
        "event_type": "GOVERNANCE_PROOF",
        "event_time": "2026-02-15T10:30:00.456Z",
        "agent_id": "agent.trading-bot-v2",
        "governance_hash": HASH_B,
        "hash_type": "merkle-sha256",
        "governance_merkle_tree": {"algorithm": "sha256", "leaf_count": 2, "leaves": leaves},
        "trace_id": TRACE_HEX,
        "data_classification": "confidential",
    }
    event.update(overrides)
    return event


def test_merkle_tree_leaves_become_resources_with_leaf_hashes() -> None:
    record = record_from_aigp_event(_merkle_event())
    assert record.governance_hash == HASH_B
    assert record.hash_type == "merkle-sha256"
    assert record.leaf_count == 2
    assert set(record.resources) == {
        ResourceRef("policy", "policy.a", leaf_hash=leaf_hash("policy", "policy.a", "A")),
        ResourceRef("prompt", "prompt.b", leaf_hash=leaf_hash("prompt", "prompt.b", "B")),
    }
    assert all(r.content_hash is None for r in record.resources)
    assert record.invalid == 0


def test_full_event_fields_are_read() -> None:
    record = record_from_aigp_event(_merkle_event())
    assert record.event_id == "11111111-2222-3333-4444-555555555555"
    assert record.event_type == "GOVERNANCE_PROOF"
    assert record.agent_id == "agent.trading-bot-v2"
    assert record.classification == "confidential"
    assert record.denied is False
    assert record.time_ns == _ns("2026-02-15T10:30:00.456+00:00")


def test_malformed_merkle_leaves_are_left_out_and_counted() -> None:
    good = {"resource_type": "tool", "resource_name": "tool.ok", "hash": leaf_hash("tool", "tool.ok", "c")}
    leaves = [
        good,
        "not a mapping",
        {"resource_type": "Policy", "resource_name": "policy.x", "hash": HASH_A},
        {"resource_type": 3, "resource_name": "policy.x", "hash": HASH_A},
        {"resource_type": "policy", "resource_name": "", "hash": HASH_A},
        {"resource_type": "policy", "resource_name": 9, "hash": HASH_A},
    ]
    tree = {"algorithm": "sha256", "leaf_count": 6, "leaves": leaves}
    record = record_from_aigp_event(_merkle_event(governance_merkle_tree=tree))
    assert [(r.type, r.name) for r in record.resources] == [("tool", "tool.ok")]
    assert record.invalid == 5


def test_leaf_with_malformed_hash_keeps_the_resource_without_a_leaf_hash() -> None:
    tree = {
        "leaf_count": 1,
        "leaves": [{"resource_type": "policy", "resource_name": "policy.a", "hash": "ABC"}],
    }
    record = record_from_aigp_event(_merkle_event(governance_merkle_tree=tree))
    assert record.resources == (ResourceRef("policy", "policy.a"),)
    assert record.invalid == 1


def test_tree_that_is_not_a_mapping_is_counted() -> None:
    record = record_from_aigp_event(_merkle_event(governance_merkle_tree=["leaves"]))
    assert record.resources == ()
    assert record.leaf_count is None
    assert record.invalid == 1


def test_full_event_version_zero_reads_as_absent() -> None:
    record = record_from_aigp_event(
        {
            "event_type": "INJECT_SUCCESS",
            "policy_name": "policy.trading-limits",
            "policy_version": 0,
            "prompt_name": "",
            "prompt_version": 0,
            "governance_hash": HASH_A,
            "hash_type": "sha256",
        }
    )
    assert record.resources == (ResourceRef("policy", "policy.trading-limits", None, content_hash=HASH_A),)
    assert record.invalid == 0


def test_annotations_otel_attributes_arrays_are_read() -> None:
    event = {
        "event_type": "TOOL_INVOKED",
        "annotations": {
            "otel_attributes": {
                "aigp.tools.names": ["tool.search", "tool.calc"],
                "aigp.policies.names": ["policy.a"],
                "aigp.policies.versions": [3],
            }
        },
    }
    record = record_from_aigp_event(event)
    assert set(record.resources) == {
        ResourceRef("tool", "tool.search"),
        ResourceRef("tool", "tool.calc"),
        ResourceRef("policy", "policy.a", 3),
    }


def test_full_event_enforcement_and_hash_type_default() -> None:
    record = record_from_aigp_event({"event_type": "INJECT_SUCCESS", "enforcement_result": "denied"})
    assert record.denied is True
    record = record_from_aigp_event({"event_type": "INJECT_DENIED", "governance_hash": ""})
    assert record.denied is True
    assert record.governance_hash is None
    record = record_from_aigp_event({"event_type": "INJECT_SUCCESS", "governance_hash": HASH_A})
    assert record.hash_type == "sha256"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-02-15T10:30:00Z", "2026-02-15T10:30:00+00:00"),
        ("2026-02-15T10:30:00.456Z", "2026-02-15T10:30:00.456000+00:00"),
        ("2026-02-15T10:30:00.123456z", "2026-02-15T10:30:00.123456+00:00"),
        ("2026-02-15T12:30:00+02:00", "2026-02-15T10:30:00+00:00"),
        ("2026-02-15T10:30:00", "2026-02-15T10:30:00+00:00"),
    ],
)
def test_event_time_parsing(text: str, expected: str) -> None:
    assert parse_event_time(text) == _ns(expected)
    assert record_from_aigp_event({"event_time": text}).time_ns == _ns(expected)


@pytest.mark.parametrize("bad", [None, "", "yesterday", 1700000000, "2026-13-45T99:00:00Z", "x" * 100])
def test_unparseable_event_time_is_none(bad: object) -> None:
    assert parse_event_time(bad) is None
    assert record_from_aigp_event({"event_time": bad}).time_ns is None


# --- merging ------------------------------------------------------------------------------


def test_merge_full_event_fields_win_and_resources_are_united() -> None:
    span = record_from_attributes(
        {
            sc.EVENT_ID: "e-1",
            sc.EVENT_TYPE: "INJECT_SUCCESS",
            sc.GOVERNANCE_HASH: HASH_A,
            sc.DATA_CLASSIFICATION: "internal",
            sc.AGENT_ID: "agent.span",
            "aigp.tools.names": ["tool.search"],
            sc.POLICY_NAME: "policy.a",
            sc.POLICY_VERSION: 1,
        },
        time_ns=5,
    )
    full = record_from_aigp_event(
        {
            "event_id": "e-1",
            "event_type": "INJECT_DENIED",
            "governance_hash": HASH_B,
            "hash_type": "sha256",
            "data_classification": "restricted",
            "agent_id": "agent.full",
            "policy_name": "policy.a",
            "policy_version": 2,
        }
    )
    merged = merge_records(span, full)
    assert merged.event_id == "e-1"
    assert merged.event_type == "INJECT_DENIED"
    assert merged.governance_hash == HASH_B
    assert merged.classification == "restricted"
    assert merged.agent_id == "agent.full"
    assert merged.denied is True
    assert merged.time_ns == 5  # the full event had no time: the span's fills the gap
    assert {(r.type, r.name) for r in merged.resources} == {("policy", "policy.a"), ("tool", "tool.search")}
    assert ResourceRef("policy", "policy.a", 2) in merged.resources
    # the action names two resources: its flat hash is their combination, no one's own content
    assert all(r.content_hash is None for r in merged.resources)


def test_merge_keeps_the_span_version_of_a_merkle_leaf() -> None:
    # Merkle leaves carry no version; the span event of the same action does.
    leaf = leaf_hash("policy", "policy.a", "A")
    span = record_from_attributes(
        {sc.EVENT_ID: "e-1", sc.POLICY_NAME: "policy.a", sc.POLICY_VERSION: 4},
        event_name="aigp.governance.proof",
    )
    full = record_from_aigp_event(
        {
            "event_id": "e-1",
            "event_type": "GOVERNANCE_PROOF",
            "governance_hash": HASH_B,
            "hash_type": "merkle-sha256",
            "governance_merkle_tree": {
                "leaf_count": 2,
                "leaves": [
                    {"resource_type": "policy", "resource_name": "policy.a", "hash": leaf},
                    {"resource_type": "prompt", "resource_name": "prompt.b", "hash": HASH_A},
                ],
            },
        }
    )
    (policy, prompt) = aggregate([merge_records(span, full)]).resources
    assert (policy.name, policy.version, policy.leaf_hashes) == ("policy.a", 4, (leaf,))
    assert (prompt.name, prompt.version) == ("prompt.b", None)


def test_merge_keeps_span_values_the_full_event_lacks() -> None:
    span = GovernanceRecord(event_id="e", classification="confidential", leaf_count=3, agent_id="agent.a")
    full = GovernanceRecord(event_id="e", event_type="GOVERNANCE_PROOF")
    merged = merge_records(span, full)
    assert merged.classification == "confidential"
    assert merged.leaf_count == 3
    assert merged.agent_id == "agent.a"
    assert merged.event_type == "GOVERNANCE_PROOF"


def test_merge_denial_follows_the_full_event() -> None:
    span = record_from_attributes({sc.EVENT_ID: "e"}, event_name="aigp.inject.denied")
    full = record_from_aigp_event(
        {"event_id": "e", "event_type": "INJECT_DENIED", "enforcement_result": "allowed"}
    )
    assert span.denied is True
    assert merge_records(span, full).denied is False


# --- governance attributes, trace keys -----------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "governed"),
    [
        ({}, False),
        ({"service.name": "x", "http.method": "GET"}, False),
        ({sc.AGENT_ID: "agent.a", sc.AGENT_NAME: "A", sc.ORG_ID: "org.x", sc.ORG_NAME: "X"}, False),
        ({sc.AGENT_ID: "agent.a", sc.POLICY_NAME: "policy.a"}, True),
        ({sc.GOVERNANCE_HASH: HASH_A}, True),
        ({"aigp.tools.names": ["tool.a"]}, True),
        ({sc.DATA_CLASSIFICATION: "public"}, True),
    ],
)
def test_has_governance_attributes(attributes: dict[str, Any], governed: bool) -> None:
    assert has_governance_attributes(attributes) is governed


def test_trace_key_of_hex_ids_is_the_otel_integer() -> None:
    assert trace_key_of(TRACE_HEX) == int(TRACE_HEX, 16)
    assert trace_key_of(TRACE_HEX.upper()) == int(TRACE_HEX, 16)
    assert trace_key_of("0" * 31 + "1") == 1


@pytest.mark.parametrize(
    "text", ["trace-" + TRACE_HEX, TRACE_HEX[:31], TRACE_HEX + "0", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"]
)
def test_trace_key_of_other_strings_is_the_text(text: str) -> None:
    assert trace_key_of(text) == text


@pytest.mark.parametrize("bad", [None, "", 12, b"abc", [TRACE_HEX]])
def test_trace_key_of_non_strings_is_none(bad: object) -> None:
    assert trace_key_of(bad) is None


# --- span notes ---------------------------------------------------------------------------


def _note(**overrides: Any) -> SpanNote:
    values: dict[str, Any] = {
        "trace_id": 1,
        "span_id": 2,
        "parent_span_id": None,
        "remote_parent": False,
        "local_root_id": 2,
        "name": "invoke",
        "start_ns": 10,
        "end_ns": 20,
        "governance_events": (),
        "attributes": {},
        "governed_attributes": False,
        "resource": {},
    }
    values.update(overrides)
    return SpanNote(**values)


def _event(name: str, attributes: dict[str, Any] | None, timestamp: int = 0) -> NoteEvent:
    return NoteEvent(name, timestamp, attributes or {})


def test_error_of_a_healthy_span_is_none() -> None:
    assert error_of(_note(error=False, status_description="ignored")) is None


def test_error_of_prefers_the_recorded_exception() -> None:
    exception = _event(
        "exception",
        {
            sc.EXCEPTION_TYPE: "ValueError",
            sc.EXCEPTION_MESSAGE: "boom",
            sc.EXCEPTION_STACKTRACE: "Traceback...",
        },
    )
    error = error_of(_note(error=True, status_description="status text", exception=exception))
    assert error is not None
    assert error.message == "ValueError: boom"
    assert error.stack_trace == "Traceback..."


def test_error_of_exception_without_type() -> None:
    exception = _event("exception", {sc.EXCEPTION_MESSAGE: "boom"})
    error = error_of(_note(error=True, exception=exception))
    assert error is not None
    assert error.message == "boom"
    assert error.stack_trace is None


def test_error_of_falls_back_to_status_description_then_a_default() -> None:
    error = error_of(_note(error=True, status_description="upstream timeout"))
    assert error is not None and error.message == "upstream timeout"
    error = error_of(_note(error=True))
    assert error is not None and error.message == "span status ERROR"


def test_error_message_is_bounded() -> None:
    limits = Limits(max_string_length=10)
    error = error_of(_note(error=True, status_description="x" * 1000), limits)
    assert error is not None
    assert len(error.message) == 160


def test_records_from_note_one_per_event_plus_governed_attributes() -> None:
    note = _note(
        governance_events=(
            _event("aigp.inject.success", {sc.GOVERNANCE_HASH: HASH_A}, 11),
            _event("aigp.tool.denied", None, 12),
        ),
        attributes={sc.POLICY_NAME: "policy.a"},
        governed_attributes=True,
    )
    records = records_from_note(note)
    assert [(r.event_type, r.time_ns) for r in records] == [
        ("INJECT_SUCCESS", 11),
        ("TOOL_DENIED", 12),
        (None, 20),
    ]
    assert records[1].denied is True
    assert records[2].resources == (ResourceRef("policy", "policy.a"),)


def test_records_from_note_without_governed_attributes() -> None:
    note = _note(attributes={sc.AGENT_ID: "agent.a"}, governed_attributes=False)
    assert records_from_note(note) == []


# --- the facts of a span ------------------------------------------------------------------


def test_a_local_roots_facts_are_computed_once_with_the_configured_bound() -> None:
    limits = Limits(max_string_length=12)
    note = _note(
        name="invoke\ud800",
        attributes={sc.AGENT_ID: "agent.short"},
        error=True,
        status_description="down",
        resource={sc.SERVICE_NAME: "svc", sc.AGENT_ID: "agent.far-too-long-for-the-bound"},
    )
    facts = Extractor(limits).span(note)
    assert facts.root is not None
    assert (facts.root.agent_id, facts.root.name) == ("agent.short", "invoke?")
    assert facts.root.error == error_of(note)
    assert (facts.resource.service_name, facts.resource.agent_id) == ("svc", None)
    assert facts.local_root_id == 2
    too_long = Extractor(Limits(max_string_length=5)).span(note)
    assert too_long.root is not None and too_long.root.agent_id is None


def test_a_child_span_has_no_root_facts_and_keeps_its_roots_id() -> None:
    facts = Extractor().span(_note(span_id=9, parent_span_id=2, local_root_id=2))
    assert facts.root is None
    assert facts.local_root_id == 2
    remote = Extractor().span(_note(span_id=9, parent_span_id=2, remote_parent=True, local_root_id=None))
    assert remote.root is not None and remote.root.remote_parent and remote.local_root_id == 9


def test_the_resource_is_read_once_per_resource() -> None:
    extractor = Extractor()
    resource = {sc.SERVICE_NAME: "svc"}
    first = extractor.span(_note(resource=resource)).resource
    assert extractor.span(_note(span_id=3, resource=resource)).resource is first
    other = extractor.span(_note(resource={sc.SERVICE_NAME: "other"})).resource
    assert other.service_name == "other"


def test_the_event_cache_tells_equal_values_of_different_types_apart() -> None:
    """``1``, ``True`` and ``1.0`` are one dict key; only the integer is a valid version."""
    extractor = Extractor()
    for _ in range(2):
        for version, valid in ((1, True), (True, False), (1.0, False), ((1,), False)):
            record = extractor.event_record(
                {sc.POLICY_NAME: "policy.a", sc.POLICY_VERSION: version}, "aigp.inject.success", None
            )
            assert record.resources[0].version == (1 if valid else None)
            assert record.invalid == (0 if valid else 1)
        for versions, valid in (((1,), True), ((True,), False)):
            attributes = {"aigp.policies.names": ("policy.a",), "aigp.policies.versions": versions}
            record = extractor.event_record(attributes, "aigp.inject.success", None)
            assert record.resources[0].version == (1 if valid else None)


def test_the_event_cache_checks_each_event_id_and_counts_bad_values_every_time() -> None:
    extractor = Extractor(Limits(max_string_length=8))
    attributes = {sc.POLICY_NAME: "policy.a", sc.GOVERNANCE_HASH: "not a hash"}
    first = extractor.event_record({**attributes, sc.EVENT_ID: "e-1"}, "aigp.inject.success", 5)
    second = extractor.event_record({**attributes, sc.EVENT_ID: "much-too-long"}, "aigp.inject.success", 6)
    third = extractor.event_record({**attributes, sc.EVENT_ID: "e-3"}, "aigp.inject.success", 7)
    assert (first.event_id, first.time_ns, first.invalid) == ("e-1", 5, 1)
    assert (second.event_id, second.time_ns, second.invalid) == (None, 6, 2)
    assert (third.event_id, third.time_ns, third.invalid) == ("e-3", 7, 1)
    unhashable = extractor.event_record({"aigp.tools.names": ["tool.a"]}, "aigp.tool.invoked", None)
    assert unhashable.resources[0].name == "tool.a"


def test_the_event_cache_keeps_one_entry_per_repeated_action_and_stays_bounded() -> None:
    """Events that differ only by their id share one entry; distinct values and attribute names
    never grow the caches past their bound, and every record is still the one read afresh."""
    extractor = Extractor()
    for n in range(50):
        tool_event = {sc.EVENT_ID: f"e-{n}", "aigp.tools.names": ("tool.a", "tool.b")}
        assert extractor.event_record(tool_event, "aigp.tool.invoked", n) == record_from_attributes(
            tool_event, event_name="aigp.tool.invoked", time_ns=n
        )
    assert len(extractor._records_by_content) == 1
    for n in range(3 * RECORDS_REMEMBERED):
        policy_event = {
            sc.EVENT_ID: f"e-{n}", sc.POLICY_NAME: f"policy.{n}", sc.POLICY_VERSION: n % 3, f"x.{n}": n
        }
        assert extractor.event_record(policy_event, "aigp.inject.success", n) == record_from_attributes(
            policy_event, event_name="aigp.inject.success", time_ns=n
        )
        assert len(extractor._records_by_content) <= RECORDS_REMEMBERED


def test_the_event_cache_keys_only_what_the_record_reads() -> None:
    """The reference SDK numbers its span events (``aigp.sequence.number``) and may sign them:
    events of one action that differ only in keys the record never reads share one entry, and
    every record is still the one read afresh."""
    extractor = Extractor()
    for n in range(1, 40):
        attributes = {
            sc.EVENT_ID: f"e-{n}",
            sc.EVENT_TYPE: "INJECT_SUCCESS",
            "aigp.event.category": "inject",
            sc.GOVERNANCE_HASH: HASH_A,
            sc.POLICY_NAME: "policy.a",
            sc.POLICY_VERSION: 3,
            "aigp.sequence.number": n,
            "aigp.event.signature": "x" * (2000 + n),  # unread, so no bound applies to it
            "aigp.denial.reason": None if n % 2 else "denied for a reason",
        }
        assert extractor.event_record(attributes, "aigp.inject.success", n) == record_from_attributes(
            attributes, event_name="aigp.inject.success", time_ns=n
        )
    ((_, kept, _, _),) = extractor._records_by_content
    assert set(kept) == {sc.EVENT_TYPE, sc.GOVERNANCE_HASH, sc.POLICY_NAME, sc.POLICY_VERSION}


def test_the_keys_the_cache_reads_are_all_a_record_reads() -> None:
    """``record_from_attributes`` reads no key beyond the event id and ``_RECORD_KEYS`` (else a
    cache hit could miss a value that changes the record)."""

    class Reading(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            asked.add(key)
            return super().get(key, default)

    asked: set[str] = set()
    everything = {key: "x" for key in [*RECORD_KEYS, "aigp.event.id", "aigp.sequence.number"]}
    record_from_attributes(Reading(everything), event_name="aigp.tool.invoked")
    assert asked == {*RECORD_KEYS, sc.EVENT_ID}


def test_the_event_cache_keeps_only_small_keys() -> None:
    """Strings longer than any accepted name, long arrays and arrays of anything but strings and
    integers are read afresh every time, and the attributes no record reads are never kept, so
    what the cache holds stays small whatever the application puts on its events."""
    extractor = Extractor(Limits(max_string_length=16))
    long_name = {sc.POLICY_NAME: "p" * 17, sc.EVENT_ID: "e-1"}
    long_array = {"aigp.tools.names": tuple(f"tool.{n}" for n in range(17)), sc.EVENT_ID: "e-2"}
    long_element = {"aigp.tools.names": ("tool.a", "t" * 17), sc.EVENT_ID: "e-3"}
    nested = {"aigp.tools.names": (("tool.a",),), sc.EVENT_ID: "e-4"}
    crowded = {sc.POLICY_NAME: "policy.b", **{f"x.{n}": n for n in range(200)}}
    small = {sc.POLICY_NAME: "policy.a", sc.EVENT_ID: "e-5"}
    array = {"aigp.tools.names": tuple(f"tool.{n}" for n in range(16)), sc.EVENT_ID: "e-6"}
    for attributes in (long_name, long_array, long_element, nested, crowded, small, array):
        first = extractor.event_record(attributes, "aigp.inject.success", 1)
        assert extractor.event_record(attributes, "aigp.inject.success", 1) == first
    assert (long_name_record := extractor.event_record(long_name, "aigp.inject.success", 1)).invalid == 1
    assert long_name_record.resources == ()
    assert extractor.event_record(long_array, "aigp.inject.success", 1).invalid == 0
    assert extractor.event_record(long_element, "aigp.inject.success", 1).invalid == 1
    kept = [dict(zip(names, values, strict=True)) for _, names, values, _ in extractor._records_by_content]
    assert kept == [  # neither the event id nor what no record reads is part of the key
        {sc.POLICY_NAME: "policy.b"},
        {sc.POLICY_NAME: "policy.a"},
        {"aigp.tools.names": array["aigp.tools.names"]},
    ]


def test_span_events_read_from_the_cache_as_afresh_whatever_their_values() -> None:
    """A span event is read once per value, arrays included, and the record, its resources'
    content hashes and its count of invalid values are those of a fresh read, on a cache miss and
    on a hit, whatever mixes of valid and invalid values it holds. Arrays of equal elements of
    other types (``(1,) == (True,) == (1.0,)``) are never looked up by value."""
    limits = Limits(max_string_length=64, max_array_length=3)
    scalars: list[tuple[dict[str, Any], bool]] = [  # (attributes, kept)
        ({}, True),
        ({sc.GOVERNANCE_HASH: HASH_A, sc.GOVERNANCE_HASH_TYPE: "sha256", sc.ENFORCEMENT_RESULT: "denied"},
         True),
        ({sc.GOVERNANCE_HASH: HASH_A, sc.POLICY_NAME: "policy.a", sc.POLICY_VERSION: 2}, True),
        ({sc.GOVERNANCE_HASH: "not a hash", sc.POLICY_NAME: "p" * 65, sc.DATA_CLASSIFICATION: "secret"},
         False),
        ({sc.EVENT_TYPE: "TOOL_INVOKED", sc.AGENT_ID: "agent.a", sc.MERKLE_LEAF_COUNT: 0}, True),
    ]
    arrays: list[tuple[dict[str, Any], bool]] = [
        ({"aigp.tools.names": ("tool.a",)}, True),
        ({"aigp.tools.names": ["tool.a", "tool.b"]}, False),
        ({"aigp.tools.names": ("tool.a", "", 3, "t" * 65, "tool.e")}, False),
        ({"aigp.tools.names": ("tool.a", "", 3, "tool.d", "tool.e")}, True),
        ({"aigp.policies.names": ("policy.a", "policy.b"), "aigp.policies.versions": (1, True)}, False),
        ({"aigp.policies.versions": (1,)}, True),
        ({"aigp.policies.names": ("policy.a",), "aigp.policies.versions": (2,)}, True),
        ({"aigp.policies.names": ("policy.a",), "aigp.policies.versions": (True,)}, False),
        ({"aigp.policies.names": ("policy.a",), "aigp.policies.versions": (2.0,)}, False),
        ({"aigp.policies.names": ("policy.a",), "aigp.policies.versions": (-1,)}, True),
        ({"aigp.prompts.names": "prompt.a", "aigp.models.names": ()}, True),
        ({"aigp.tools.names": ("tool.a",), "aigp.other": 1.5}, True),  # a float no record reads
    ]
    ids: list[object] = [None, "", "e-1", "e" * 65, 7]
    extractor = Extractor(limits)
    expected_keys = set()
    for scalar, scalar_kept in scalars:
        for array, array_kept in arrays:
            if scalar_kept and array_kept:  # one entry per content read, whatever the event id
                read = {**scalar, **array}
                expected_keys.add(tuple((name, repr(read[name])) for name in read if name in RECORD_KEYS))
            for position, event_id in enumerate(ids):
                attributes = {**scalar, **array}
                if event_id is not None:
                    attributes[sc.EVENT_ID] = event_id
                fresh = record_from_attributes(
                    attributes, event_name="aigp.tool.invoked", time_ns=position, limits=limits
                )
                for _ in range(2):  # a miss, then a hit
                    assert extractor.event_record(attributes, "aigp.tool.invoked", position) == fresh
    assert len(extractor._records_by_content) == len(expected_keys)


def test_remembered_gen_ai_facts_are_those_of_a_fresh_read() -> None:
    """Spans with GenAI keys only and spans with other keys too: the facts (and their count of
    invalid values) are those read afresh, on a miss and on a hit."""
    limits = Limits(max_string_length=12)
    cases: list[dict[str, Any]] = [
        {sc.GEN_AI_REQUEST_MODEL: "gpt-4o", sc.GEN_AI_SYSTEM: "openai"},
        {sc.GEN_AI_REQUEST_MODEL: "gpt-4o", sc.GEN_AI_SYSTEM: "openai", "server.port": 443},
        {sc.GEN_AI_TOOL_NAME: "search", sc.GEN_AI_AGENT_NAME: "a" * 13},
        {sc.GEN_AI_RESPONSE_MODEL: 1, sc.GEN_AI_PROVIDER_NAME: True},
        {sc.GEN_AI_RESPONSE_MODEL: True, sc.GEN_AI_PROVIDER_NAME: 1},
        {sc.GEN_AI_REQUEST_MODEL: ["a", "b"]},
        {sc.GEN_AI_SYSTEM: "openai"},
        {sc.AGENT_ID: "agent.a", "server.port": 443},
        {sc.GEN_AI_REQUEST_MODEL: ("gpt-4o",)},
    ]
    extractor = Extractor(limits)
    for _ in range(2):
        for attributes in cases:
            assert extractor.gen_ai_facts(attributes) == gen_ai_facts_of(attributes, limits)


def test_reference_sdk_sessions_hit_the_event_cache_with_records_read_as_afresh() -> None:
    """The reference SDK's span events carry a sequence number that grows with every event: the
    second and later sessions add no entry to the cache, and every record is the fresh read."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from aigp_otel_bridge.frontdoors.sdk import capture_span
    from tests.governed_spans import governed_session, instrumentor

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    aigp, tracer = instrumentor(), provider.get_tracer("sessions")
    extractor = Extractor()
    entries = []
    for _ in range(3):
        governed_session(tracer, aigp)
        notes = [note for span in spans.get_finished_spans() if (note := capture_span(span)) is not None]
        spans.clear()
        events = [event for note in notes for event in note.governance_events]
        assert len({event.attributes["aigp.sequence.number"] for event in events}) == len(events) == 5
        for event in events:
            fresh = record_from_attributes(event.attributes, event_name=event.name, time_ns=event.time_ns)
            assert extractor.event_record(event.attributes, event.name, event.time_ns) == fresh
        entries.append(len(extractor._records_by_content))
    assert entries[0] == entries[1] == entries[2] > 0
    provider.shutdown()


def _store_event(number: int, **fields: object) -> dict[str, Any]:
    return store_event(number, **{"governance_hash": HASH_A, **fields})


def test_full_events_count_their_invalid_values_each() -> None:
    events = [_store_event(n, governance_hash="not a hash", policy_version=-2) for n in range(3)]
    read = records_from_aigp_events(events)
    assert [record.invalid for record in read] == [2, 2, 2]
    assert aggregate(read).invalid == 6


def test_each_full_event_keeps_its_own_id_and_time() -> None:
    first = record_from_aigp_event(_store_event(1))
    second = record_from_aigp_event(_store_event(2, event_time="2026-02-15T10:30:01Z"))
    third = record_from_aigp_event(_store_event(3, event_id="\ud800"))
    assert (first.event_id, second.event_id) == (_store_event(1)["event_id"], _store_event(2)["event_id"])
    assert second.time_ns == first.time_ns + 544_000_000  # type: ignore[operator]
    assert (third.event_id, third.invalid, first.invalid) == (None, 1, 0)


def test_a_full_event_is_read_within_the_limits_given() -> None:
    event = _store_event(1)
    assert record_from_aigp_event(event).agent_id == "agent.trading-bot-v2"
    narrow = record_from_aigp_event(event, limits=Limits(max_string_length=8))
    assert (narrow.agent_id, narrow.resources) == (None, ())
    assert record_from_aigp_event(event).agent_id == "agent.trading-bot-v2"
