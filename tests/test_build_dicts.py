"""RunEvents with facets built as dicts are the RunEvents the facet classes define, byte for byte.

Delivery emits ``build_run_event`` (the client's event classes, each facet dict as a
``FacetRecord``), the outbox
stores ``run_event_dict`` written with ``json.dumps(..., sort_keys=True)``, and the builder API
returns ``run_event_dict``: each must serialise exactly as ``class_built_run_event`` (every facet
an object of its class, ``_schemaURL`` and ``_producer`` included) does with the client's
``Serde``. Checked on every kind of run: complete, failed with a stack trace, running, a nested
run with a parent, several agents, resources with several hashes and versions, denied,
ungoverned (a tool, and a model with its provider), and an empty producer (the client's own default).
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
from openlineage.client.event_v2 import Run, RunEvent, RunState
from openlineage.client.serde import Serde
from openlineage.client.transport.transform import EventTransformer

from aigp_otel_bridge import facets as facets_module
from aigp_otel_bridge.facets import FacetRecord, facet_record
from aigp_otel_bridge.openlineage import (
    _session_run,
    build_governance_run_facet,
    build_openlineage_run_event,
    build_resource_input_facets,
)
from aigp_otel_bridge.outbox import EventKey
from aigp_otel_bridge.propagated_links import RunIdentity, RunParent
from aigp_otel_bridge.stages import build as build_module
from aigp_otel_bridge.stages.aggregate import ResourceSummary
from aigp_otel_bridge.stages.build import (
    DecidedRun,
    build_governance_facet,
    build_inputs,
    build_run_event,
    class_built_run_event,
    run_event_dict,
    run_event_json,
)
from aigp_otel_bridge.stages.deliver import stored_row
from aigp_otel_bridge.stages.extract import ErrorInfo
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
    caller = RunIdentity("3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b", "finco", "planner.invoke")
    top = RunIdentity("0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d", "finco", "desk.invoke")
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
        "nested": dataclasses.replace(base, parent=RunParent(caller, top)),
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
def test_dict_facets_serialise_exactly_as_the_facet_classes(kind: str, producer: str) -> None:
    run = _runs()[kind]
    reference = Serde.to_json(class_built_run_event(run, producer))
    assert Serde.to_json(build_run_event(run, producer)) == reference
    assert json.dumps(run_event_dict(run, producer), sort_keys=True) == reference
    assert run_event_json(run, producer) == reference
    assert run_event_dict(run, producer) == Serde.to_dict(class_built_run_event(run, producer))
    validate_run_event(run_event_dict(run, producer))


def test_the_outbox_row_is_the_class_built_json_and_key() -> None:
    run = _runs()["failed"]
    row = stored_row(run, PRODUCER, error="down", attempts=1, delay_s=0.0)
    event = class_built_run_event(run, PRODUCER)
    assert row.payload == Serde.to_json(event)
    assert row.key == EventKey(event.run.runId, "FAIL", event.eventTime)


def test_builder_api_facets_are_the_class_built_facets() -> None:
    run = _runs()["complete"]
    facet_run = dataclasses.replace(run, job_namespace="default", job_name="session")
    assert build_governance_run_facet(_session(), producer=PRODUCER) == Serde.to_dict(
        build_governance_facet(facet_run, PRODUCER)
    )
    assert build_resource_input_facets(_session(), producer=PRODUCER) == [
        Serde.to_dict(facet)
        for dataset in build_inputs(facet_run, PRODUCER)
        for facet in (dataset.inputFacets or {}).values()
    ]
    built = build_openlineage_run_event(_session(), "finco.trading", "trading-bot.invoke", producer=PRODUCER)
    assert built == Serde.to_dict(class_built_run_event(run, PRODUCER))


def test_builder_results_share_nothing_with_later_events() -> None:
    first = build_openlineage_run_event(_session(), "finco", "bot.invoke")
    first["job"]["facets"]["jobType"]["jobType"] = "CHANGED"
    first["run"]["facets"]["processing_engine"]["name"] = "CHANGED"
    second = build_openlineage_run_event(_session(), "finco", "bot.invoke")
    assert second["job"]["facets"]["jobType"]["jobType"] == "AGENT"
    assert second["run"]["facets"]["processing_engine"]["name"] == "aigp-otel-bridge"


def test_emitting_leaves_the_shared_constant_facets_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's ``emit`` adds tags and environment facets beside ours; later events are as
    the first, and each emitted event carries what the client added."""
    monkeypatch.setenv("OPENLINEAGE__TAGS__JOB__team", "desk")
    monkeypatch.setenv("OPENLINEAGE__TAGS__RUN__shift", "night")
    transport = CaptureTransport()
    client = OpenLineageClient(transport=transport)
    run = _runs()["complete"]
    expected = Serde.to_dict(class_built_run_event(run, PRODUCER))
    for _ in range(2):
        client.emit(build_run_event(run, PRODUCER))
    emitted = transport.wait_for(2)
    for event in emitted:
        assert {tag["key"] for tag in event["job"]["facets"]["tags"]["tags"]} == {"team"}
        assert "tags" in event["run"]["facets"]
        del event["job"]["facets"]["tags"], event["run"]["facets"]["tags"]
        assert event == expected
    assert Serde.to_dict(build_run_event(run, PRODUCER)) == expected


def _constructed(event: RunEvent) -> RunEvent:
    """The same event made through the client's constructors, which validate every field."""
    return RunEvent(
        eventType=event.eventType,
        eventTime=event.eventTime,
        run=Run(runId=event.run.runId, facets=event.run.facets),
        job=event.job,
        inputs=event.inputs,
        outputs=event.outputs,
        producer=event.producer,
    )


@pytest.mark.parametrize("producer", [PRODUCER, ""])
@pytest.mark.parametrize("kind", list(_runs()))
def test_events_made_without_the_validators_equal_constructed_ones(kind: str, producer: str) -> None:
    event = build_run_event(_runs()[kind], producer)
    assert event == _constructed(event)
    assert Serde.to_json(event) == Serde.to_json(_constructed(event))


def test_the_client_emits_and_enriches_an_event_made_without_the_validators() -> None:
    transport = CaptureTransport()
    OpenLineageClient(transport=transport).emit(build_run_event(_base_run(), PRODUCER))
    (emitted,) = transport.events  # the JSON dict a backend receives
    assert "tags" in emitted["run"]["facets"]  # the client's own facet, added in emit
    validate_run_event(emitted)


def test_other_run_ids_go_through_the_constructors(monkeypatch: pytest.MonkeyPatch) -> None:
    upper = dataclasses.replace(_base_run(), run_id=_base_run().run_id.upper())
    assert build_run_event(upper, PRODUCER).run.runId == upper.run_id  # a UUID, checked by ``Run``
    with pytest.raises(ValueError):
        build_run_event(dataclasses.replace(_base_run(), run_id="not-a-uuid"), PRODUCER)
    monkeypatch.setattr(build_module, "_PREVALIDATED", False)  # a client whose classes differ
    event = build_run_event(_base_run(), PRODUCER)
    assert event == _constructed(event)


def test_delivered_facets_read_like_their_dicts_and_copy_as_the_client_copies() -> None:
    """Delivery hands the client facet records: a transport or transformer reads them by key (as
    the dicts they stand for) or by attribute (as the client's facet objects); ``deepcopy`` (the
    transform transport's) and pickling keep them and their JSON."""
    run = _runs()["several agents and hashes"]
    event = build_run_event(run, PRODUCER)
    as_dicts = run_event_dict(run, PRODUCER)
    governance = event.run.facets["aigp_governance"]
    assert isinstance(governance, FacetRecord)
    assert governance == as_dicts["run"]["facets"]["aigp_governance"]
    assert dict(governance) == as_dicts["run"]["facets"]["aigp_governance"]
    assert governance["complete"] is run.complete and governance.complete is run.complete
    assert governance.get("no such field") is None and "governanceHash" in governance
    with pytest.raises(KeyError):
        governance["keys"]
    for made, expected in zip(event.inputs, as_dicts["inputs"], strict=True):
        assert made.inputFacets["aigp_resource"] == expected["inputFacets"]["aigp_resource"]
    for copied in (copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
        assert Serde.to_json(copied) == Serde.to_json(event)
        assert copied.run.facets["aigp_governance"] == governance


def test_facets_whose_keys_cannot_be_fields_stay_dicts() -> None:
    for facet in ({"keys": 1}, {"a-b": 1}, {"class": 1}, {"_a": 1, "a": 2}, {"__x": 1}):
        assert facet_record(facet) is facet
    assert facet_record({"_producer": "p", "value": None}) == {"_producer": "p", "value": None}


def test_a_facet_shape_attrs_refuses_is_delivered_as_its_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("refused")

    monkeypatch.setattr(facets_module.attr, "make_class", refuse)
    monkeypatch.setattr(facets_module, "_RECORD_CLASSES", {})
    run = _runs()["several agents and hashes"]
    event = build_run_event(run, "https://example.com/another-producer")
    assert isinstance(event.run.facets["aigp_governance"], dict)
    assert Serde.to_json(event) == Serde.to_json(class_built_run_event(run, "https://example.com/another-producer"))


def test_facet_shapes_past_the_bound_stay_dicts_and_each_shape_is_tried_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[tuple[str, ...]] = []
    make_class = facets_module.attr.make_class

    def counting(name: str, fields: list[str], **kwargs: Any) -> Any:
        made.append(tuple(fields))
        if fields == ["refused"]:
            raise TypeError("refused")
        return make_class(name, fields, **kwargs)

    monkeypatch.setattr(facets_module.attr, "make_class", counting)
    monkeypatch.setattr(facets_module, "_RECORD_CLASSES", {})
    monkeypatch.setattr(facets_module, "_RECORD_CLASSES_MAX", 2)
    for _ in range(3):
        assert isinstance(facet_record({"a": 1}), FacetRecord)
        assert facet_record({"refused": 1}) == {"refused": 1}
        assert type(facet_record({"b": 2})) is dict  # the third shape: past the bound
    assert made == [("a",), ("refused",)]


class RedactingTransformer(EventTransformer):
    """A user's transformer: reads the governance facet by key, changes a field by attribute."""

    def transform(self, event: Any) -> Any:
        facet = event.run.facets["aigp_governance"]
        facet.agentId = f"redacted-{len(facet['governanceHash'])}"
        return event


def test_a_transform_transport_reads_and_changes_delivered_facets(tmp_path: Path) -> None:
    log_file = tmp_path / "events.jsonl"
    client = OpenLineageClient(config={"transport": {
        "type": "transform",
        "transformer_class": f"{__name__}.RedactingTransformer",
        "transport": {"type": "file", "log_file_path": str(log_file), "append": True},
    }})
    run = _base_run()
    event = build_run_event(run, PRODUCER)
    client.emit(event)
    (line,) = log_file.read_text().splitlines()
    written = json.loads(line)
    validate_run_event(written)
    assert written["run"]["facets"]["aigp_governance"]["agentId"] == "redacted-64"
    assert event.run.facets["aigp_governance"]["agentId"] == run.agent_id  # the transport copied it
    del written["run"]["facets"]["tags"]
    expected = Serde.to_dict(class_built_run_event(run, PRODUCER))
    expected["run"]["facets"]["aigp_governance"]["agentId"] = "redacted-64"
    assert written == expected
