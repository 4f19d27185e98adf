"""The builder API on full AIGP events: one schema-valid RunEvent per session."""

from __future__ import annotations

import copy
import uuid

import pytest

from aigp_otel_bridge.merkle import EMPTY_SHA256, is_sha256_hex, merkle_root
from aigp_otel_bridge.openlineage import (
    build_governance_run_facet,
    build_openlineage_run_event,
    build_resource_input_facets,
)
from tests.schemas import load_examples, validate_run_event

EXAMPLES = load_examples()


def test_the_project_carries_its_example_events() -> None:
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_event_builds_a_schema_valid_run_event(name: str) -> None:
    event = EXAMPLES[name]
    run_event = build_openlineage_run_event(event, job_namespace="finco.trading", job_name="agent.invoke")
    validate_run_event(run_event)
    assert run_event["run"]["runId"] == str(uuid.UUID(run_event["run"]["runId"]))
    assert run_event["run"]["facets"]["aigp_governance"]["traceId"] == event["trace_id"]


def test_upstream_example_is_invalid_but_ours_for_the_same_trace_is_valid() -> None:
    import json

    from jsonschema import ValidationError

    from tests.schemas import EXAMPLES_DIR

    upstream = json.loads((EXAMPLES_DIR / "upstream-openlineage-governance-run.json").read_text())
    with pytest.raises(ValidationError):
        validate_run_event(upstream)


def test_run_id_is_the_trace_id_as_a_canonical_uuid() -> None:
    event = copy.deepcopy(EXAMPLES["inject-success-otel.json"])
    run_event = build_openlineage_run_event(event, "ns", "job")
    assert run_event["run"]["runId"] == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"


def test_malformed_trace_id_maps_to_a_stable_name_based_uuid() -> None:
    event = EXAMPLES["agent-registered.json"]  # its trace id is not valid hex
    first = build_openlineage_run_event(event, "ns", "job")["run"]["runId"]
    again = build_openlineage_run_event(copy.deepcopy(event), "ns", "job")["run"]["runId"]
    assert first == again
    assert uuid.UUID(first).version == 5


def test_a_session_of_events_is_one_run_with_a_merkle_aggregate() -> None:
    session = [
        EXAMPLES["inject-success-otel.json"],
        EXAMPLES["memory-read.json"],  # malformed hash (62 chars): left out
        EXAMPLES["tool-invoked.json"],  # malformed hash: left out
        EXAMPLES["model-loaded.json"],
    ]
    facet = build_governance_run_facet(session)
    session.append(EXAMPLES["memory-written.json"])
    hashes = {e["governance_hash"] for e in session if is_sha256_hex(e["governance_hash"])}
    assert len(hashes) == 1  # only inject-success-otel's hash is well formed
    assert facet["governanceHash"] == next(iter(hashes))
    session.append(EXAMPLES["inject-success-healthcare.json"] | {"trace_id": session[0]["trace_id"]})
    facet = build_governance_run_facet(session)
    hashes = {e["governance_hash"] for e in session if is_sha256_hex(e["governance_hash"])}
    assert facet["governanceHash"] == merkle_root(hashes)
    assert facet["hashType"] == "merkle-sha256"
    assert facet["leafCount"] == len(hashes) == 2
    assert facet["eventCount"] == 6
    assert facet["dataClassification"] == "restricted"  # the highest: healthcare's


def test_denial_without_content_gives_the_empty_hash_not_an_empty_string() -> None:
    facet = build_governance_run_facet(EXAMPLES["inject-denied.json"])
    assert facet["governanceHash"] == EMPTY_SHA256
    assert facet["enforcementResult"] == "denied"
    assert facet["deniedEventCount"] == 1
    assert "leafCount" not in facet


def test_merkle_tree_leaves_become_inputs_with_true_leaf_hashes() -> None:
    event = EXAMPLES["merkle-governance-proof.json"]
    facets = build_resource_input_facets(event)
    leaves = {
        (leaf["resource_type"], leaf["resource_name"]): leaf["hash"] if is_sha256_hex(leaf["hash"]) else None
        for leaf in event["governance_merkle_tree"]["leaves"]
    }
    assert None in leaves.values()  # the example has malformed leaf hashes: those inputs carry none
    assert {(f["resourceType"], f["resourceName"]): f.get("leafHash") for f in facets} == leaves
    assert all("contentHash" not in f for f in facets)


def test_mixed_trace_ids_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="trace_id"):
        build_openlineage_run_event(
            [EXAMPLES["inject-success.json"], EXAMPLES["inject-success-otel.json"]], "ns", "job"
        )
