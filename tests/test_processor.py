"""The span processor end to end: a real TracerProvider, the reference AIGP SDK, one RunEvent per run."""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aigp import AIGPInstrumentor
from aigp.events import create_aigp_event
from openlineage.client.constants import __version__ as openlineage_version
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from aigp_otel_bridge import RootInfo, __version__
from aigp_otel_bridge.frontdoors.processor import OPEN_SPANS_PER_PENDING_RUN
from aigp_otel_bridge.merkle import EMPTY_SHA256, is_sha256_hex, leaf_hash, merkle_root
from aigp_otel_bridge.openlineage import build_openlineage_run_event
from aigp_otel_bridge.propagated_links import RUN_LINKS, run_id_for_remote_root
from aigp_otel_bridge.semconv import SPAN_EVENT_TYPES
from tests.conftest import CaptureTransport
from tests.schemas import validate_run_event

AGENT = "agent.trading-bot-v2"
DENIAL_TYPES = {"INJECT_DENIED", "PROMPT_DENIED", "POLICY_VIOLATION", "TOOL_DENIED", "INFERENCE_BLOCKED"}


# ---- helpers ----


def new_instrumentor() -> AIGPInstrumentor:
    return AIGPInstrumentor(agent_id=AGENT, agent_name="Trading Bot", org_id="org.finco", org_name="FinCo")


def governed_bridge(
    make_bridge: Any, aigp: AIGPInstrumentor, *, joined: bool = False, **settings: Any
) -> tuple[Any, Any, Any]:
    """A bridge with the SDK's identity on its resource; returns (provider, processor, tracer).

    ``joined``: the SDK also hands its full AIGP events to ``ingest_aigp_event`` (the store's view).
    """
    resource = {**aigp.get_resource_attributes(), "service.name": "trading-service"}
    provider, processor = make_bridge(resource=resource, **settings)
    if joined:
        aigp.event_callback = processor.ingest_aigp_event
    return provider, processor, provider.get_tracer("test")


def facet(event: dict[str, Any]) -> dict[str, Any]:
    return event["run"]["facets"]["aigp_governance"]


def hex_trace(span: Any) -> str:
    return f"{span.get_span_context().trace_id:032x}"


def trace_run_id(trace_hex: str) -> str:
    return str(uuid.UUID(hex=trace_hex))


def iso_ms(time_ns: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=time_ns // 1_000_000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def flushed(processor: Any, transport: CaptureTransport) -> list[dict[str, Any]]:
    assert processor.force_flush(timeout_millis=10_000), "force_flush did not finish within 10 s"
    return list(transport.events)


def inputs_by_key(event: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for dataset in event["inputs"]:
        resource = dataset["inputFacets"]["aigp_resource"]
        key = (resource["resourceType"], resource["resourceName"])
        assert key not in found, f"two inputs for {key}"
        assert dataset["name"] == resource["resourceName"]
        found[key] = resource
    return found


def all_22_event_types(aigp: AIGPInstrumentor, tracer: Any) -> list[dict[str, Any]]:
    """One call of each of the SDK's 22 single-event helpers, spread over the root and two children."""
    events = [
        aigp.inject_success(
            "policy.trading-limits", 4, "Max position: $10M", data_classification="confidential"
        ),
        aigp.inject_denied("policy.restricted-data", "no clearance", severity="medium"),
        aigp.prompt_used("prompt.analyst", 3, "You are a careful analyst", data_classification="internal"),
        aigp.prompt_denied("prompt.jailbreak", "jailbreak attempt"),
        aigp.policy_violation("RATE_LIMIT", "medium", "too many trades"),
    ]
    with tracer.start_as_current_span("plan"):
        events += [
            aigp.governance_proof("proof content", policy_name="policy.audit", policy_version=1),
            aigp.a2a_call(request_path="/agents/risk", content="hello risk agent"),
            aigp.memory_read("memory.history", "last trades", "trade log"),
            aigp.memory_written("memory.state", "new state", previous_content="old state"),
            aigp.tool_invoked("tool.pricer", content="price AAPL"),
            aigp.tool_denied("tool.wire-transfer", "not allowed"),
            aigp.context_captured("context.market", "market snapshot"),
            aigp.lineage_snapshot("lineage.upstream", "lineage content"),
        ]
    with tracer.start_as_current_span("act"):
        events += [
            aigp.inference_started("prompt text"),
            aigp.inference_completed("completion text", data_classification="restricted"),
            aigp.inference_blocked("toxic output", severity="medium"),
            aigp.human_override("reviewer overrode the block"),
            aigp.human_approval("approved plan"),
            aigp.classification_changed("confidential", previous_classification="internal"),
            aigp.model_loaded("model.gpt4-trading", "model card"),
            aigp.model_switched("model.gpt4-mini", "model card 2", previous_content="model card"),
            aigp.unverified_boundary("agent.external", content="payload"),
        ]
    return events


# ---- one session, all 22 span event types ----


@pytest.mark.parametrize("joined", [False, True], ids=["spans-only", "spans-and-store-events"])
def test_all_22_event_types_in_one_session_give_one_valid_run_event(
    make_bridge: Any, transport: CaptureTransport, joined: bool
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, joined=joined)
    with tracer.start_as_current_span("invoke") as root:
        returned = all_22_event_types(aigp, tracer)

    assert {e["event_type"] for e in returned} == set(SPAN_EVENT_TYPES.values())
    events = flushed(processor, transport)
    assert len(events) == 1, f"expected one RunEvent for the session, got {len(events)}"
    event = events[0]
    validate_run_event(event)
    governance = facet(event)
    hashes = {e["governance_hash"] for e in returned if is_sha256_hex(e["governance_hash"])}
    assert len(hashes) >= 2
    assert event["eventType"] == "COMPLETE"
    assert event["run"]["runId"] == trace_run_id(hex_trace(root))
    assert governance["eventCount"] == len(returned) == 22
    assert governance["deniedEventCount"] == len(DENIAL_TYPES) == 5
    assert {e["event_type"] for e in returned} & DENIAL_TYPES == DENIAL_TYPES
    assert governance["enforcementResult"] == "denied"
    assert governance["governanceHash"] == merkle_root(hashes)
    assert governance["hashType"] == "merkle-sha256"
    assert governance["leafCount"] == len(hashes)
    assert governance["dataClassification"] == "restricted"
    assert governance["agentId"] == AGENT
    assert governance["traceId"] == hex_trace(root)
    assert governance["complete"] is True
    assert "agentIds" not in governance
    if joined:
        assert processor.stats()["duplicate_records"] == 22

    inputs = inputs_by_key(event)
    assert inputs[("policy", "policy.trading-limits")]["resourceVersion"] == 4
    assert inputs[("policy", "policy.trading-limits")]["contentHash"] == returned[0]["governance_hash"]
    assert inputs[("prompt", "prompt.analyst")]["resourceVersion"] == 3
    assert inputs[("prompt", "prompt.analyst")]["contentHash"] == returned[2]["governance_hash"]
    assert ("policy", "policy.restricted-data") in inputs
    assert ("prompt", "prompt.jailbreak") in inputs
    assert inputs[("policy", "policy.audit")]["resourceVersion"] == 1
    assert all("leafHash" not in resource for resource in inputs.values())
    assert {d["namespace"] for d in event["inputs"]} == {"test.ns"}


def test_a_session_without_any_valid_hash_gives_the_empty_sha256(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke"):
        aigp.inject_denied("policy.restricted-data", "no clearance", severity="low")
        aigp.tool_denied("tool.wire-transfer", "not allowed")
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    governance = facet(event)
    assert governance["governanceHash"] == EMPTY_SHA256
    assert governance["hashType"] == "sha256"
    assert "leafCount" not in governance
    assert governance["eventCount"] == governance["deniedEventCount"] == 2


def test_one_distinct_hash_stands_for_itself(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke"):
        first = aigp.inject_success("policy.trading-limits", 4, "same content")
        aigp.inject_success("policy.trading-limits", 4, "same content")
    (event,) = flushed(processor, transport)
    governance = facet(event)
    assert governance["governanceHash"] == first["governance_hash"]
    assert governance["hashType"] == "sha256"
    assert governance["leafCount"] == 1
    assert governance["eventCount"] == 2
    assert governance["enforcementResult"] == "allowed"
    assert governance["deniedEventCount"] == 0


# ---- Merkle trees and array attributes ----

RESOURCES = [
    ("policy", "policy.trading-limits", "Max position: $10M"),
    ("prompt", "prompt.analyst", "You are a careful analyst"),
    ("tool", "tool.pricer", '{"name": "pricer"}'),
    ("memory", "memory.history", "trade log"),
]


@pytest.mark.parametrize("joined", [False, True], ids=["spans-only", "spans-and-store-events"])
def test_multi_resource_governance_proof(make_bridge: Any, transport: CaptureTransport, joined: bool) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, joined=joined)
    with tracer.start_as_current_span("invoke"):
        proof = aigp.multi_resource_governance_proof(RESOURCES, data_classification="confidential")

    tree = proof["governance_merkle_tree"]
    leaves = {(leaf["resource_type"], leaf["resource_name"]): leaf["hash"] for leaf in tree["leaves"]}
    assert leaves == {(t, n): leaf_hash(t, n, c) for t, n, c in RESOURCES}
    assert proof["governance_hash"] == merkle_root(leaves.values())

    (event,) = flushed(processor, transport)
    validate_run_event(event)
    governance = facet(event)
    assert governance["governanceHash"] == proof["governance_hash"]
    assert governance["hashType"] == "merkle-sha256"
    assert governance["leafCount"] == len(RESOURCES)
    assert governance["eventCount"] == 1
    assert governance["dataClassification"] == "confidential"
    inputs = inputs_by_key(event)
    if joined:
        assert set(inputs) == set(leaves)
        for key, resource in inputs.items():
            assert resource["leafHash"] == leaves[key], key
            assert "contentHash" not in resource
    else:
        # a span event carries only the leaf count and the primary resource's name: no leaf hashes
        assert set(inputs) == {("policy", "policy.trading-limits")}
        assert "leafHash" not in inputs[("policy", "policy.trading-limits")]
        assert "contentHash" not in inputs[("policy", "policy.trading-limits")]


@pytest.mark.parametrize("joined", [False, True], ids=["spans-only", "spans-and-store-events"])
def test_multi_policy_inject_names_versions_and_leaves(
    make_bridge: Any, transport: CaptureTransport, joined: bool
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, joined=joined)
    policies = [
        {"name": "policy.trading-limits", "version": 4},
        {"name": "policy.risk-controls", "version": 2},
    ]
    contents = [
        ("policy", "policy.trading-limits", "limits text"),
        ("policy", "policy.risk-controls", "risk text"),
        ("prompt", "prompt.analyst", "prompt text"),
    ]
    with tracer.start_as_current_span("invoke"):
        injected = aigp.multi_policy_inject(policies, "ignored", resource_contents=contents)

    (event,) = flushed(processor, transport)
    validate_run_event(event)
    governance = facet(event)
    assert governance["governanceHash"] == injected["governance_hash"]
    assert governance["hashType"] == "merkle-sha256"
    assert governance["leafCount"] == 3
    assert governance["eventCount"] == 1
    inputs = inputs_by_key(event)
    # the span event's positional versions (aigp.policies.versions) are the only source of version 2
    assert inputs[("policy", "policy.trading-limits")].get("resourceVersion") == 4
    assert inputs[("policy", "policy.risk-controls")].get("resourceVersion") == 2, (
        "version seen on the span event was lost"
    )
    if joined:
        leaves = {
            (leaf["resource_type"], leaf["resource_name"]): leaf["hash"]
            for leaf in injected["governance_merkle_tree"]["leaves"]
        }
        assert set(inputs) == set(leaves)
        assert {key: resource["leafHash"] for key, resource in inputs.items()} == leaves
    else:
        assert set(inputs) == {("policy", "policy.trading-limits"), ("policy", "policy.risk-controls")}
        assert all("leafHash" not in resource for resource in inputs.values())


def test_array_attributes_name_the_inputs(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke"), tracer.start_as_current_span("tools") as span:
        aigp.tool_invoked("tool.pricer", content="price AAPL")
        span.set_attribute("aigp.tools.names", ["tool.pricer", "tool.news"])
        span.set_attribute("aigp.contexts.names", ["context.market"])
        span.set_attribute("aigp.lineages.names", ["lineage.upstream"])
        span.set_attribute("aigp.memories.names", ["memory.history"])
        span.set_attribute("aigp.models.names", ["model.gpt4-trading"])
        span.set_attribute("aigp.prompts.names", ["prompt.analyst", "prompt.summary"])
        span.set_attribute("aigp.prompts.versions", [0, 7])
        span.set_attribute("aigp.policies.names", ["Policy With Spaces"])  # not AGRN-shaped: kept
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    inputs = inputs_by_key(event)
    assert set(inputs) == {
        ("tool", "tool.pricer"),
        ("tool", "tool.news"),
        ("context", "context.market"),
        ("lineage", "lineage.upstream"),
        ("memory", "memory.history"),
        ("model", "model.gpt4-trading"),
        ("prompt", "prompt.analyst"),
        ("prompt", "prompt.summary"),
        ("policy", "Policy With Spaces"),
    }
    assert "resourceVersion" not in inputs[("prompt", "prompt.analyst")]  # 0 means "no version"
    assert inputs[("prompt", "prompt.summary")]["resourceVersion"] == 7
    assert "resourceVersion" not in inputs[("tool", "tool.news")]
    # the tool span event and the span's own aigp.* attributes are two records
    assert facet(event)["eventCount"] == 2


def test_versions_seen_for_one_resource_are_reported(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke"):
        aigp.inject_success("policy.trading-limits", 3, "v3 text")
        aigp.inject_success("policy.trading-limits", 5, "v5 text")
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    resource = inputs_by_key(event)[("policy", "policy.trading-limits")]
    assert resource["resourceVersion"] == 5
    assert resource["observedVersions"] == [3, 5]


# ---- ingest_aigp_event ----


def test_span_event_and_store_event_with_one_event_id_are_one_record_full_event_wins(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke"):
        used = aigp.prompt_used("prompt.analyst", 3, "prompt text", data_classification="restricted")
        stored = copy.deepcopy(used)
        stored["data_classification"] = "public"  # the store's view differs: the full event wins
        processor.ingest_aigp_event(stored)
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    governance = facet(event)
    assert governance["eventCount"] == 1
    assert governance["dataClassification"] == "public"
    assert governance["governanceHash"] == used["governance_hash"]
    assert processor.stats()["duplicate_records"] == 1


def test_ingested_store_events_match_the_builders(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke") as root:
        quiet = NonRecordingSpan(root.get_span_context())  # the SDK's span events go nowhere
        trace_hex = hex_trace(root)
        session = [
            aigp.inject_success(
                "policy.trading-limits", 4, "limits", data_classification="internal", span=quiet
            ),
            aigp.inject_denied("policy.restricted-data", "no clearance", severity="low", span=quiet),
            aigp.prompt_used("prompt.analyst", 2, "prompt", span=quiet),
            aigp.multi_resource_governance_proof(RESOURCES, data_classification="confidential", span=quiet),
            aigp.tool_invoked("tool.pricer", content="price", span=quiet),
            # a custom type from another agent, with a malformed hash and an unknown classification
            create_aigp_event(
                "CUSTOM_AUDIT",
                "audit",
                "agent.other-bot",
                trace_hex,
                governance_hash="A" * 64,
                data_classification="secret",
            ),
        ]
        session.append(copy.deepcopy(session[2]))  # the store delivered one event twice
        for aigp_event in session:
            processor.ingest_aigp_event(aigp_event)
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    built = build_openlineage_run_event(session, job_namespace="test.ns", job_name="any")
    validate_run_event(built)
    ours, theirs = facet(event), facet(built)
    for key in (
        "governanceHash",
        "hashType",
        "leafCount",
        "enforcementResult",
        "dataClassification",
        "eventCount",
    ):
        assert ours.get(key) == theirs.get(key), key
    assert ours["eventCount"] == 6
    assert ours["dataClassification"] == "confidential"
    assert sorted(event["inputs"], key=lambda d: d["name"]) == sorted(
        built["inputs"], key=lambda d: d["name"]
    )
    assert ours["agentIds"] == sorted({AGENT, "agent.other-bot"})


def test_ingest_rejects_garbage_without_raising(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    garbage: list[Any] = [
        None,
        [],
        ["trace_id"],
        {},
        {"trace_id": 42},
        {"trace_id": ""},
        {"event_type": "X"},
        "x",
        7,
    ]
    for value in garbage:
        assert processor.ingest_aigp_event(value) is None
    assert processor.stats()["ingest_rejected"] == len(garbage)
    assert flushed(processor, transport) == []
    # the processor still works afterwards
    with tracer.start_as_current_span("invoke") as root:
        processor.ingest_aigp_event({"trace_id": hex_trace(root), "event_type": "INJECT_SUCCESS"})
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    assert facet(event)["eventCount"] == 1
    assert processor.stats()["ingest_rejected"] == len(garbage)


def test_governance_recorded_with_no_span_current_is_counted_and_warned_about_once(
    make_bridge: Any, transport: CaptureTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """The reference SDK writes an empty trace_id when no span is current (an instrumentation that
    does not make its spans current): the warning says so and how to fix it, once a minute."""
    aigp = new_instrumentor()
    _, processor, _ = governed_bridge(make_bridge, aigp)
    aigp.event_callback = processor.ingest_aigp_event
    with caplog.at_level("WARNING", logger="aigp_otel_bridge"):
        aigp.inject_success("policy.trading-limits", 4, "limits")
        aigp.tool_denied("wire_transfer", "not allowed")
    assert processor.stats()["ingest_rejected"] == 2
    (warning,) = [r.getMessage() for r in caplog.records if "trace_id" in r.getMessage()]
    assert "no span current" in warning
    assert "span=" in warning and "makes its spans current" in warning
    assert "dict" not in warning
    assert flushed(processor, transport) == []


def test_the_sdk_callback_and_direct_ingest_are_the_same_door(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    received: list[dict[str, Any]] = []

    def store(aigp_event: dict[str, Any]) -> None:
        received.append(aigp_event)
        processor.ingest_aigp_event(aigp_event)

    aigp.event_callback = store
    with tracer.start_as_current_span("invoke"):
        aigp.inject_success("policy.trading-limits", 4, "limits")
        aigp.tool_denied("tool.wire-transfer", "not allowed")
    (event,) = flushed(processor, transport)
    assert len(received) == 2
    assert facet(event)["eventCount"] == 2
    assert processor.stats()["duplicate_records"] == 2
    assert processor.stats()["ingest_rejected"] == 0


# ---- run identity, job, facets ----


def test_run_identity_job_and_standard_facets(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke") as root:
        aigp.inject_success("policy.trading-limits", 4, "limits")
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    trace_hex = hex_trace(root)
    assert event["run"]["runId"] == str(uuid.UUID(hex=trace_hex))
    assert event["job"]["name"] == "trading-bot-v2.invoke"
    assert event["job"]["namespace"] == "test.ns"
    assert event["eventTime"] == iso_ms(root.end_time)
    facets = event["run"]["facets"]
    assert facets["nominalTime"]["nominalStartTime"] == iso_ms(root.start_time)
    assert facets["nominalTime"]["nominalEndTime"] == iso_ms(root.end_time)
    engine = facets["processing_engine"]
    assert engine["name"] == "aigp-otel-bridge"
    assert engine["version"] == __version__
    assert engine["openlineageAdapterVersion"] == openlineage_version
    job_type = event["job"]["facets"]["jobType"]
    assert (job_type["processingType"], job_type["integration"], job_type["jobType"]) == (
        "BATCH",
        "AIGP",
        "AGENT",
    )
    assert event["producer"] == facet(event)["_producer"]
    assert "errorMessage" not in facets
    assert facet(event)["specVersion"] == "0.8.0"


def test_job_namespace_and_name_fall_back_to_the_resource(
    make_bridge: Any, transport: CaptureTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENLINEAGE_NAMESPACE", raising=False)
    monkeypatch.delenv("AIGP_BRIDGE_JOB_NAMESPACE", raising=False)
    monkeypatch.delenv("AIGP_BRIDGE_JOB_NAME", raising=False)
    provider, processor = make_bridge(
        resource={"service.name": "pricing-svc", "service.namespace": "finco.pricing"}, job_namespace=None
    )
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("quote") as span:
        span.add_event("aigp.tool.invoked", {"aigp.event.type": "TOOL_INVOKED"})
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    assert event["job"]["namespace"] == "finco.pricing"
    assert event["job"]["name"] == "pricing-svc.quote"
    assert facet(event)["agentId"] == "pricing-svc"
    assert {d["namespace"] for d in event["inputs"]} <= {"finco.pricing"}


def test_job_name_callable_gets_the_root(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    seen: list[RootInfo] = []

    def name_job(root: RootInfo) -> str:
        seen.append(root)
        return f"custom.{root.attributes['tenant']}"

    _, processor, tracer = governed_bridge(make_bridge, aigp, job_name=name_job)
    with tracer.start_as_current_span("invoke", attributes={"tenant": "acme"}) as root:
        aigp.inject_success("policy.trading-limits", 4, "limits")
    (event,) = flushed(processor, transport)
    assert event["job"]["name"] == "custom.acme"
    (info,) = seen
    assert info.name == "invoke"
    assert info.agent_id == AGENT
    assert info.trace_id == hex_trace(root)
    assert info.resource["service.name"] == "trading-service"


def test_exception_escaping_the_root_gives_a_fail_event(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with pytest.raises(RuntimeError, match="model exploded"), tracer.start_as_current_span("invoke") as root:
        aigp.inject_success("policy.trading-limits", 4, "limits")
        raise RuntimeError("model exploded")
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    assert event["eventType"] == "FAIL"
    assert event["run"]["runId"] == trace_run_id(hex_trace(root))
    error = event["run"]["facets"]["errorMessage"]
    assert "model exploded" in error["message"]
    assert error["programmingLanguage"] == "python"
    assert "RuntimeError" in error["stackTrace"]
    assert "model exploded" in error["stackTrace"]
    assert facet(event)["complete"] is True


def test_sdk_marking_a_high_severity_denial_as_error_fails_the_run(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke"):
        aigp.inference_blocked("toxic output", severity="critical")
    (event,) = flushed(processor, transport)
    validate_run_event(event)
    assert event["eventType"] == "FAIL"
    assert "INFERENCE_BLOCKED" in event["run"]["facets"]["errorMessage"]["message"]
    assert facet(event)["enforcementResult"] == "denied"


class _FixedSpanIds(IdGenerator):
    """Random trace ids, one fixed span id: a process that restarts and replays the same span."""

    def __init__(self, span_id: int) -> None:
        self._span_id = span_id
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._span_id

    def generate_trace_id(self) -> int:
        return self._random.generate_trace_id()


def _remote_context(trace_id: int, span_id: int) -> Any:
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def test_root_with_a_remote_parent_gets_its_own_deterministic_run(make_bridge: Any) -> None:
    aigp = new_instrumentor()
    trace_id = random.getrandbits(128) | 1
    trace_hex = f"{trace_id:032x}"
    run_ids = []
    for _ in range(2):  # two bridges, as if the same process replayed the same span
        capture = CaptureTransport()
        provider, processor, _ = governed_bridge(make_bridge, aigp, transport_=capture)
        provider.id_generator = _FixedSpanIds(0x00F067AA0BA902B7)
        tracer = provider.get_tracer("replay")  # a new tracer picks up the id generator
        with tracer.start_as_current_span("handle", context=_remote_context(trace_id, 0x1234)) as root:
            aigp.inject_success("policy.trading-limits", 4, "limits")
        assert root.get_span_context().trace_id == trace_id
        (event,) = flushed(processor, capture)
        validate_run_event(event)
        assert facet(event)["traceId"] == trace_hex
        run_ids.append(event["run"]["runId"])
    assert run_ids[0] == run_ids[1]
    assert run_ids[0] != str(uuid.UUID(hex=trace_hex))
    assert run_ids[0] == str(uuid.UUID(run_ids[0]))
    assert run_ids[0] == run_id_for_remote_root(trace_hex, "00f067aa0ba902b7")


def test_two_remote_parented_roots_of_one_trace_are_two_runs(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    trace_id = random.getrandbits(128) | 1
    trace_hex = f"{trace_id:032x}"
    roots = []
    for parent_span in (0x1111, 0x2222):
        with tracer.start_as_current_span("handle", context=_remote_context(trace_id, parent_span)) as root:
            aigp.inject_success("policy.trading-limits", 4, "limits")
        roots.append(root)
    events = flushed(processor, transport)
    assert len(events) == 2
    expected = [run_id_for_remote_root(trace_hex, f"{r.get_span_context().span_id:016x}") for r in roots]
    assert [e["run"]["runId"] for e in events] == expected
    assert len(set(expected)) == 2
    assert str(uuid.UUID(hex=trace_hex)) not in expected
    for event in events:
        validate_run_event(event)
        assert facet(event)["complete"] is True


@pytest.mark.parametrize("joined", [False, True], ids=["spans-only", "spans-and-store-events"])
def test_caller_and_callee_in_one_process_are_two_runs_each_with_its_own_records(
    make_bridge: Any, transport: CaptureTransport, joined: bool
) -> None:
    """One process hosts both ends of a call: the callee's root has a remote parent in the same
    trace. Each local root gets its own run, with only the governance of its own spans."""
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, joined=joined)
    with tracer.start_as_current_span("call") as caller:
        aigp.inject_success("policy.caller", 1, "caller policy")
        with tracer.start_as_current_span("outbound") as outbound:  # ungoverned, between the two
            context = outbound.get_span_context()
            remote = _remote_context(context.trace_id, context.span_id)
            with tracer.start_as_current_span("handle", context=remote) as callee:
                with tracer.start_as_current_span("lookup"):
                    aigp.prompt_used("prompt.callee", 1, "callee prompt")
                aigp.inject_success("policy.callee", 2, "callee policy")
        with tracer.start_as_current_span("after"):
            aigp.prompt_used("prompt.caller", 3, "caller prompt")
    events = flushed(processor, transport)
    assert len(events) == 2
    trace_hex = hex_trace(caller)
    assert hex_trace(callee) == trace_hex
    by_run = {e["run"]["runId"]: e for e in events}
    callee_run = by_run[run_id_for_remote_root(trace_hex, f"{callee.get_span_context().span_id:016x}")]
    caller_run = by_run[trace_run_id(trace_hex)]
    assert set(inputs_by_key(callee_run)) == {("prompt", "prompt.callee"), ("policy", "policy.callee")}
    assert set(inputs_by_key(caller_run)) == {("policy", "policy.caller"), ("prompt", "prompt.caller")}
    assert (facet(callee_run)["eventCount"], facet(caller_run)["eventCount"]) == (2, 2)
    assert callee_run["job"]["name"].endswith(".handle")
    assert caller_run["job"]["name"].endswith(".call")
    for event in events:
        validate_run_event(event)
        assert facet(event)["complete"] is True
        assert facet(event)["traceId"] == trace_hex


def test_spans_open_past_the_tracking_bound_still_reach_their_run(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    """Past the bound on tracked open spans the map starts afresh: records of spans then open
    join their trace's first run, nothing is lost."""
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    assert processor._max_open_spans == OPEN_SPANS_PER_PENDING_RUN * processor.config.max_pending_traces
    processor._max_open_spans = 3
    with tracer.start_as_current_span("invoke") as root:
        with tracer.start_as_current_span("step"):
            others = [tracer.start_span(f"other-{i}", context=_remote_context(1 + i, 0x99)) for i in range(3)]
            aigp.inject_success("policy.trading-limits", 4, "limits")
        for other in others:
            other.end()
    events = [e for e in flushed(processor, transport) if facet(e)["traceId"] == hex_trace(root)]
    (event,) = events
    assert set(inputs_by_key(event)) == {("policy", "policy.trading-limits")}
    assert event["run"]["runId"] == trace_run_id(hex_trace(root))
    assert processor._local_root_of == {}


# ---- governed or not ----


def test_ungoverned_traces_emit_nothing(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    for _ in range(3):
        with tracer.start_as_current_span("invoke") as root:
            root.set_attribute("aigp.agent.id", AGENT)  # identity alone does not govern a trace
            root.set_attribute("aigp.org.id", "org.finco")
            root.add_event("not-governance", {"aigp.event.type": "INJECT_SUCCESS"})
            with tracer.start_as_current_span("child"):
                pass
    assert flushed(processor, transport) == []
    assert processor.stats()["runs_decided"] == 0


def test_emit_ungoverned_emits_one_event_per_trace(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, emit_ungoverned=True)
    roots = []
    for _ in range(3):
        with tracer.start_as_current_span("invoke") as root, tracer.start_as_current_span("child"):
            pass
        roots.append(root)
    events = flushed(processor, transport)
    assert sorted(e["run"]["runId"] for e in events) == sorted(trace_run_id(hex_trace(r)) for r in roots)
    for event in events:
        validate_run_event(event)
        assert facet(event)["eventCount"] == 0
        assert facet(event)["governanceHash"] == EMPTY_SHA256
        assert facet(event)["enforcementResult"] == "allowed"


# ---- timeout and eviction ----


def test_root_that_stays_open_is_emitted_running_then_completed(
    make_bridge: Any, transport: CaptureTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RUN_LINKS, "active", False)  # no propagator: open roots are not noted
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, trace_timeout_s=0.2)
    with tracer.start_as_current_span("invoke") as root:
        with tracer.start_as_current_span("step") as step:
            aigp.inject_success("policy.trading-limits", 4, "limits")
        (running,) = transport.wait_for(1, timeout_s=10)
        later = aigp.prompt_used("prompt.analyst", 3, "prompt")  # a record after the timeout
    run_id = trace_run_id(hex_trace(root))
    validate_run_event(running)
    assert running["eventType"] == "RUNNING"
    assert running["run"]["runId"] == run_id
    assert facet(running)["complete"] is False
    assert facet(running)["eventCount"] == 1
    assert running["eventTime"] == iso_ms(step.end_time)  # the last span end seen
    assert running["job"]["name"] == "trading-bot-v2.step"  # no root known yet: first governed span

    events = transport.wait_for(2, timeout_s=10)
    assert len(events) == 2
    completed = events[1]
    validate_run_event(completed)
    assert completed["eventType"] == "COMPLETE"
    assert completed["run"]["runId"] == run_id
    assert facet(completed)["complete"] is False
    assert facet(completed)["eventCount"] == 1  # only the later record
    assert facet(completed)["governanceHash"] == later["governance_hash"]
    assert completed["eventTime"] == iso_ms(root.end_time)
    assert processor.stats()["traces_timed_out"] == 1


def test_timed_out_run_is_closed_when_its_root_ends_without_later_records(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, trace_timeout_s=0.2)
    with tracer.start_as_current_span("invoke") as root:
        with tracer.start_as_current_span("step"):
            aigp.inject_success("policy.trading-limits", 4, "limits")
        (running,) = transport.wait_for(1, timeout_s=10)
        assert running["eventType"] == "RUNNING"
    events = flushed(processor, transport)
    assert [e["eventType"] for e in events] == ["RUNNING", "COMPLETE"], (
        "a RUNNING run must be followed by a terminal event for the same run once its root ends"
    )
    completed = events[1]
    validate_run_event(completed)
    assert completed["run"]["runId"] == running["run"]["runId"] == trace_run_id(hex_trace(root))
    assert facet(completed)["complete"] is False


def test_eviction_emits_running_and_loses_no_trace(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, max_pending_traces=2)
    roots = []
    for index in range(5):
        root = tracer.start_span(f"session-{index}")
        with trace.use_span(root, end_on_exit=False), tracer.start_as_current_span("step"):
            aigp.inject_success("policy.trading-limits", 4, f"limits {index}")
        roots.append(root)
    for root in roots:
        root.end()
    events = flushed(processor, transport)
    for event in events:
        validate_run_event(event)
    by_run = {}
    for event in events:
        by_run.setdefault(event["run"]["runId"], []).append(event)
    assert set(by_run) == {trace_run_id(hex_trace(r)) for r in roots}, "a governed trace was lost"
    running = [e for e in events if e["eventType"] == "RUNNING"]
    assert len(running) >= 3  # five open roots, room for two
    assert len(running) == processor.stats()["traces_evicted"]
    for run_events in by_run.values():
        if any(e["eventType"] == "RUNNING" for e in run_events):
            assert run_events[0]["eventType"] == "RUNNING"
            assert all(facet(e)["complete"] is False for e in run_events)
        else:
            assert [e["eventType"] for e in run_events] == ["COMPLETE"]
            assert facet(run_events[0])["complete"] is True
    total = sum(facet(e)["eventCount"] for e in events)
    assert total == 5  # every record counted exactly once


# ---- concurrency ----


def test_many_threads_with_interleaved_traces(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    threads, sessions = 8, 25
    expected: dict[str, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for index in range(sessions):
                first, second = tracer.start_span(f"a-{worker}"), tracer.start_span(f"b-{worker}")
                counts = {first: 0, second: 0}
                for step in range(1 + (worker + index) % 4):
                    for root in (first, second):
                        aigp.inject_success("policy.trading-limits", 4, f"{worker}/{index}/{step}", span=root)
                        counts[root] += 1
                with trace.use_span(second, end_on_exit=False), tracer.start_as_current_span("child"):
                    aigp.tool_invoked("tool.pricer", content=f"{worker}/{index}")
                    counts[second] += 1
                second.end()
                first.end()
                with lock:
                    for root, count in counts.items():
                        expected[hex_trace(root)] = count
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert not errors, errors
    assert len(expected) == threads * sessions * 2
    events = flushed(processor, transport)
    runs = Counter(e["run"]["runId"] for e in events)
    assert len(events) == len(expected), f"{len(events)} events for {len(expected)} traces"
    assert all(count == 1 for count in runs.values()), "a trace was emitted more than once"
    for event in events:
        trace_hex = facet(event)["traceId"]
        assert event["run"]["runId"] == trace_run_id(trace_hex)
        assert facet(event)["eventCount"] == expected[trace_hex], trace_hex
        assert facet(event)["complete"] is True
    for event in events[:: max(1, len(events) // 8)]:
        validate_run_event(event)


# ---- flush and shutdown ----


def test_force_flush_returns_true_after_delivery(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    for _ in range(3):
        with tracer.start_as_current_span("invoke"):
            aigp.inject_success("policy.trading-limits", 4, "limits")
    assert processor.force_flush(timeout_millis=10_000) is True
    assert len(transport.events) == 3  # delivered when force_flush returned, no waiting
    assert processor.stats()["runs_emitted"] == 3


def test_a_flush_never_waits_for_the_schedule_delay(make_bridge: Any, transport: CaptureTransport) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, schedule_delay_s=3600)
    for _ in range(3):
        with tracer.start_as_current_span("invoke"):
            aigp.inject_success("policy.trading-limits", 4, "limits")
    assert processor.force_flush(timeout_millis=10_000) is True  # not after the worker's hour of gathering
    assert len(transport.events) == 3


def test_runs_go_out_after_the_schedule_delay_without_a_flush(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, _, tracer = governed_bridge(make_bridge, aigp, schedule_delay_s=0.05)
    for _ in range(3):
        with tracer.start_as_current_span("invoke"):
            aigp.inject_success("policy.trading-limits", 4, "limits")
    assert len(transport.wait_for(3)) == 3  # the worker's own pass, no flush asked


def test_shutdown_is_idempotent_and_later_spans_are_ignored_but_counted(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    with tracer.start_as_current_span("invoke"):
        aigp.inject_success("policy.trading-limits", 4, "limits")
    processor.shutdown()
    assert len(transport.events) == 1  # shutdown flushes
    processor.shutdown()
    before = processor.stats()
    with tracer.start_as_current_span("invoke") as root:
        aigp.inject_success("policy.trading-limits", 4, "limits")
        processor.ingest_aigp_event({"trace_id": hex_trace(root), "event_type": "INJECT_SUCCESS"})
    processor.force_flush(timeout_millis=1_000)
    processor.shutdown()
    assert len(transport.events) == 1
    after = processor.stats()
    assert after.pop("spans_after_shutdown") == before.pop("spans_after_shutdown") + 1  # the late root
    assert after == before


def test_shutdown_emits_open_governed_traces_as_incomplete(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp)
    root = tracer.start_span("invoke")
    with trace.use_span(root, end_on_exit=False), tracer.start_as_current_span("step"):
        aigp.inject_success("policy.trading-limits", 4, "limits")
    ungoverned = tracer.start_span("idle")
    processor.shutdown()
    events = list(transport.events)
    assert len(events) == 1, events
    event = events[0]
    validate_run_event(event)
    assert event["run"]["runId"] == trace_run_id(hex_trace(root))
    assert event["eventType"] == "RUNNING"
    assert facet(event)["complete"] is False
    assert facet(event)["eventCount"] == 1
    root.end()
    ungoverned.end()
    assert len(transport.events) == 1


def test_job_name_callable_cannot_change_the_span_or_the_resource(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    refused: list[bool] = []

    def meddling(root: RootInfo) -> str:
        for mapping in (root.attributes, root.resource):
            try:
                mapping["aigp.agent.id"] = "agent.hijacked"  # type: ignore[index]
            except TypeError:
                refused.append(True)
            else:
                refused.append(False)
        return f"job-{root.name}"

    provider, processor = make_bridge(
        resource={"service.name": "svc", "aigp.agent.id": "agent.real"}, job_name=meddling
    )
    with provider.get_tracer("test").start_as_current_span("invoke") as root:
        root.add_event("aigp.prompt.used", {"aigp.event.id": "m-1"})
    assert processor.force_flush(10_000)
    (event,) = transport.events
    assert refused == [True, True]
    assert event["job"]["name"] == "job-invoke"
    assert event["run"]["facets"]["aigp_governance"]["agentId"] == "agent.real"

