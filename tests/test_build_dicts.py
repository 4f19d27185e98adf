"""The one RunEvent of a run, and what is derived from it: what a backend, the outbox and the
builder API's caller receive.

Delivery emits ``build_run_event`` (the client's event classes, each facet an object of its
class); the outbox stores ``Serde.to_json`` of that event and the builder API returns
``Serde.to_dict`` of it (or of its facets). Checked on every kind of run: complete, failed with
and without a stack trace, running, without nominal times, a nominal end before the event, a
nested run with a parent, several agents, resources with several hashes and versions, denied,
ungoverned (a tool, and a model with its provider), and an empty producer (the client's own
default).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import RunState
from openlineage.client.generated import base as client_base
from openlineage.client.serde import Serde
from openlineage.client.transport.transform import EventTransformer

from aigp_otel_bridge.facets import AIGPGovernanceRunFacet, AIGPResourceInputFacet
from aigp_otel_bridge.openlineage import (
    _session_run,
    build_governance_run_facet,
    build_openlineage_run_event,
    build_resource_input_facets,
)
from aigp_otel_bridge.outbox import EventKey
from aigp_otel_bridge.propagated_links import RunIdentity, RunParent
from aigp_otel_bridge.stages.aggregate import ResourceSummary
from aigp_otel_bridge.stages.build import (
    DecidedRun,
    build_run_event,
    governance_facet,
    iso_millis,
    resource_facet,
    run_event_from_json,
)
from aigp_otel_bridge.stages.deliver import stored_row
from aigp_otel_bridge.stages.extract import ErrorInfo
from aigp_otel_bridge.version import __version__
from tests.conftest import CaptureTransport
from tests.schemas import validate_run_event

EXAMPLES = Path(__file__).resolve().parent / "data" / "examples" / "aigp-events"
PRODUCER = "https://example.com/aigp-otel-bridge"
SESSION = ("inject-success-otel.json", "tool-invoked.json", "memory-read.json", "model-loaded.json")


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return document


def _session() -> list[dict[str, Any]]:
    return [_example(name) for name in SESSION]


def _base_run() -> DecidedRun:
    return _session_run(_session(), "finco.trading", "trading-bot.invoke")


CALLER = RunIdentity("3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b", "finco", "planner.invoke")
TOP = RunIdentity("0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d", "finco", "desk.invoke")


def _runs() -> dict[str, DecidedRun]:
    base = _base_run()
    summary = base.summary
    several = ResourceSummary(
        type="prompt",
        name="prompt.trader-system",
        version=7,
        observed_versions=(6, 7),
        leaf_hashes=("a" * 64, "b" * 64),
        content_hashes=("c" * 64, "d" * 64),
        denied=True,
    )
    ungoverned = ResourceSummary(type="tool", name="tool.unseen", governed=False)
    model = ResourceSummary(type="model", name="model.gpt-4o", governed=False, provider="openai")
    return {
        "complete": base,
        "failed": dataclasses.replace(
            base, event_type=RunState.FAIL, error=ErrorInfo("backend down", "Traceback ...\nValueError")
        ),
        "failed without trace": dataclasses.replace(base, event_type=RunState.FAIL, error=ErrorInfo("x")),
        "running": dataclasses.replace(
            base, event_type=RunState.RUNNING, complete=False, nominal_end_ns=None
        ),
        "no nominal time": dataclasses.replace(base, nominal_start_ns=None, nominal_end_ns=None),
        "nominal end before the event": dataclasses.replace(
            base, nominal_end_ns=(base.nominal_end_ns or 0) - 1_500_000_000
        ),
        "nested": dataclasses.replace(base, parent=RunParent(CALLER, TOP)),
        "several agents and hashes": dataclasses.replace(
            base,
            summary=dataclasses.replace(
                summary,
                agent_ids=("agent.a", "agent.b"),
                resources=(*summary.resources, several, ungoverned, model),
                ungoverned_count=2,
                leaf_count=None,
                classification=None,
            ),
        ),
    }


@pytest.mark.parametrize("producer", [PRODUCER, ""])
@pytest.mark.parametrize("kind", list(_runs()))
def test_every_kind_of_run_is_a_schema_valid_event_with_its_facets(kind: str, producer: str) -> None:
    run = _runs()[kind]
    event = Serde.to_dict(build_run_event(run, producer))
    validate_run_event(event)
    expected_producer = producer or client_base.PRODUCER
    assert event["producer"] == expected_producer
    assert event["eventType"] == run.event_type.value
    assert event["eventTime"] == iso_millis(run.event_time_ns)
    assert event["run"]["runId"] == run.run_id
    run_facets = event["run"]["facets"]
    for facet in [*run_facets.values(), *event["job"]["facets"].values()]:
        assert facet["_producer"] == expected_producer
    governance = run_facets["aigp_governance"]
    assert (governance["agentId"], governance["traceId"]) == (run.agent_id, run.trace_id)
    assert governance["complete"] is run.complete
    assert ("errorMessage" in run_facets) is (run.error is not None)
    assert ("parent" in run_facets) is (run.parent is not None)
    if run.nominal_start_ns is None:
        assert "nominalTime" not in run_facets
    else:
        nominal = run_facets["nominalTime"]
        assert nominal["nominalStartTime"] == iso_millis(run.nominal_start_ns)
        assert nominal.get("nominalEndTime") == (
            iso_millis(run.nominal_end_ns) if run.nominal_end_ns is not None else None
        )
    assert [d["name"] for d in event["inputs"]] == [r.name for r in run.summary.resources]
    assert event["outputs"] == []


def test_optional_fields_are_left_out_and_several_values_are_lists() -> None:
    event = Serde.to_dict(build_run_event(_runs()["several agents and hashes"], PRODUCER))
    governance = event["run"]["facets"]["aigp_governance"]
    assert governance["agentIds"] == sorted({"agent.a", "agent.b", governance["agentId"]})
    assert "leafCount" not in governance and "dataClassification" not in governance
    several, ungoverned, model = (d["inputFacets"]["aigp_resource"] for d in event["inputs"][-3:])
    assert (several["leafHashes"], several["contentHashes"]) == (["a" * 64, "b" * 64], ["c" * 64, "d" * 64])
    assert "leafHash" not in several and "contentHash" not in several
    assert (several["resourceVersion"], several["observedVersions"]) == (7, [6, 7])
    assert several["enforcementResult"] == "denied"
    assert ungoverned == {
        "resourceType": "tool", "resourceName": "tool.unseen", "enforcementResult": "allowed",
        "governed": False, "_producer": PRODUCER, "_schemaURL": ungoverned["_schemaURL"],
    }
    assert model["provider"] == "openai"
    failed = Serde.to_dict(build_run_event(_runs()["failed without trace"], PRODUCER))
    assert failed["run"]["facets"]["errorMessage"]["message"] == "x"
    assert "stackTrace" not in failed["run"]["facets"]["errorMessage"]


def test_the_constant_facets_name_the_bridge() -> None:
    event = Serde.to_dict(build_run_event(_base_run(), PRODUCER))
    engine = event["run"]["facets"]["processing_engine"]
    assert (engine["name"], engine["version"]) == ("aigp-otel-bridge", __version__)
    job_type = event["job"]["facets"]["jobType"]
    assert (job_type["processingType"], job_type["integration"], job_type["jobType"]) == (
        "BATCH", "AIGP", "AGENT"
    )


def test_the_outbox_row_is_the_events_json_and_key() -> None:
    run = _runs()["failed"]
    row = stored_row(run, PRODUCER, error="down", attempts=1, delay_s=0.0)
    event = build_run_event(run, PRODUCER)
    assert row.payload == Serde.to_json(event)
    assert row.key == EventKey(event.run.runId, "FAIL", event.eventTime)


@pytest.mark.parametrize("kind", list(_runs()))
def test_a_replayed_row_serialises_as_the_event_it_stores(kind: str) -> None:
    payload = stored_row(_runs()[kind], PRODUCER, error=None, attempts=0, delay_s=0.0).payload
    assert Serde.to_json(run_event_from_json(payload)) == payload


def test_builder_api_returns_the_client_dicts_of_the_event_and_its_facets() -> None:
    run = _runs()["complete"]
    assert build_governance_run_facet(_session(), producer=PRODUCER) == Serde.to_dict(
        governance_facet(run, PRODUCER)
    )
    assert build_resource_input_facets(_session(), producer=PRODUCER) == [
        Serde.to_dict(resource_facet(resource, PRODUCER)) for resource in run.summary.resources
    ]
    built = build_openlineage_run_event(_session(), "finco.trading", "trading-bot.invoke", producer=PRODUCER)
    assert built == Serde.to_dict(build_run_event(run, PRODUCER))
    validate_run_event(built)


def test_builder_results_share_nothing_with_later_events() -> None:
    first = build_openlineage_run_event(_session(), "finco", "bot.invoke")
    first["job"]["facets"]["jobType"]["jobType"] = "CHANGED"
    first["run"]["facets"]["processing_engine"]["name"] = "CHANGED"
    second = build_openlineage_run_event(_session(), "finco", "bot.invoke")
    assert second["job"]["facets"]["jobType"]["jobType"] == "AGENT"
    assert second["run"]["facets"]["processing_engine"]["name"] == "aigp-otel-bridge"


def test_emitting_leaves_later_events_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's ``emit`` adds tags and environment facets beside ours; later events (which
    share the constant facet objects) are as the first, and each emitted event carries what the
    client added."""
    monkeypatch.setenv("OPENLINEAGE__TAGS__JOB__team", "desk")
    monkeypatch.setenv("OPENLINEAGE__TAGS__RUN__shift", "night")
    transport = CaptureTransport()
    client = OpenLineageClient(transport=transport)
    run = _runs()["complete"]
    expected = Serde.to_dict(build_run_event(run, PRODUCER))
    for _ in range(2):
        client.emit(build_run_event(run, PRODUCER))
    emitted = transport.wait_for(2)
    for event in emitted:
        assert {tag["key"] for tag in event["job"]["facets"]["tags"]["tags"]} == {"team"}
        assert "tags" in event["run"]["facets"]
        del event["job"]["facets"]["tags"], event["run"]["facets"]["tags"]
        assert event == expected
    assert Serde.to_dict(build_run_event(run, PRODUCER)) == expected


def test_the_client_emits_and_enriches_the_event() -> None:
    transport = CaptureTransport()
    OpenLineageClient(transport=transport).emit(build_run_event(_base_run(), PRODUCER))
    (emitted,) = transport.events  # the JSON dict a backend receives
    assert "tags" in emitted["run"]["facets"]  # the client's own facet, added in emit
    validate_run_event(emitted)


def test_the_client_checks_the_run_id() -> None:
    upper = dataclasses.replace(_base_run(), run_id=_base_run().run_id.upper())
    assert build_run_event(upper, PRODUCER).run.runId == upper.run_id  # a UUID, checked by ``Run``
    with pytest.raises(ValueError):
        build_run_event(dataclasses.replace(_base_run(), run_id="not-a-uuid"), PRODUCER)


def test_delivered_facets_are_the_facet_classes_and_copy_as_the_client_copies() -> None:
    """A transport or transformer reads the AIGP facets as the client's own facet objects;
    ``deepcopy`` (the transform transport's) and pickling keep them and their JSON."""
    run = _runs()["several agents and hashes"]
    event = build_run_event(run, PRODUCER)
    governance = event.run.facets["aigp_governance"]
    assert isinstance(governance, AIGPGovernanceRunFacet)
    assert governance.complete is run.complete and governance.agentId == run.agent_id
    for dataset, resource in zip(event.inputs or [], run.summary.resources, strict=True):
        facet = (dataset.inputFacets or {})["aigp_resource"]
        assert isinstance(facet, AIGPResourceInputFacet)
        assert (facet.resourceName, facet.governed) == (resource.name, resource.governed)
    for copied in (copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
        assert Serde.to_json(copied) == Serde.to_json(event)
        assert copied.run.facets["aigp_governance"] == governance


class RedactingTransformer(EventTransformer):
    """A user's transformer: reads the governance facet and changes a field, by attribute."""

    def transform(self, event: Any) -> Any:
        facet = event.run.facets["aigp_governance"]
        facet.agentId = f"redacted-{len(facet.governanceHash)}"
        return event


def test_a_transform_transport_reads_and_changes_delivered_facets(tmp_path: Path) -> None:
    log_file = tmp_path / "events.jsonl"
    client = OpenLineageClient(config={"transport": {
        "type": "transform",
        "transformer_class": f"{__name__}.RedactingTransformer",
        "transport": {"type": "file", "log_file_path": str(log_file), "append": True},
    }})
    run = _base_run()
    expected = Serde.to_dict(build_run_event(run, PRODUCER))
    event = build_run_event(run, PRODUCER)
    client.emit(event)
    (line,) = log_file.read_text().splitlines()
    written = json.loads(line)
    validate_run_event(written)
    assert written["run"]["facets"]["aigp_governance"]["agentId"] == "redacted-64"
    assert event.run.facets["aigp_governance"].agentId == run.agent_id  # the transport copied it
    del written["run"]["facets"]["tags"]
    expected["run"]["facets"]["aigp_governance"]["agentId"] = "redacted-64"
    assert written == expected
