"""The span exporter front door: same RunEvents as the processor, from batches of ended spans."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest
from aigp import AIGPInstrumentor
from openlineage.client import OpenLineageClient
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.frontdoors.exporter import AIGPOpenLineageSpanExporter
from tests.conftest import CaptureTransport
from tests.schemas import validate_run_event


def _session(provider: TracerProvider) -> None:
    """Traces that exercise every way a run is decided on root end, plus one ungoverned trace."""
    tracer = provider.get_tracer("equivalence")
    aigp = AIGPInstrumentor(agent_id="agent.trading-bot-v2", org_id="org.finco")
    with tracer.start_as_current_span("invoke"):
        with tracer.start_as_current_span("load-policy"):
            aigp.inject_success("policy.trading-limits", 4, "Max $10M.", data_classification="internal")
        with tracer.start_as_current_span("answer"):
            aigp.prompt_used("prompt.trader-system", 3, "You are careful.")
            aigp.tool_denied("tool.wire-transfer", "over limit")
    with pytest.raises(RuntimeError), tracer.start_as_current_span("failing"):
        aigp.model_loaded("model.risk-scorer", "weights v9")
        raise RuntimeError("model crashed")
    remote = SpanContext(0x5B8EFFF798038103D269B633813FC60C, 0xEEE19B7EC3C1B174, True, TraceFlags(1))
    with tracer.start_as_current_span("resume", context=trace.set_span_in_context(NonRecordingSpan(remote))):
        aigp.memory_read("memory.client-notes", "q", "notes")
    with tracer.start_as_current_span("attributes-only") as span:
        span.set_attribute("aigp.policy.name", "policy.kyc")
        span.set_attribute("aigp.policy.version", 0)
        span.set_attribute("aigp.enforcement.result", "allowed")
    with tracer.start_as_current_span("health-check"), tracer.start_as_current_span("ping"):
        pass


def _by_run(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    runs = {event["run"]["runId"]: event for event in events}
    assert len(runs) == len(events), "one event per run"
    return runs


@pytest.mark.parametrize("batch_size", [1, 512])
def test_exporter_and_processor_give_the_same_run_events(batch_size: int) -> None:
    via_processor, via_exporter = CaptureTransport(), CaptureTransport()
    resource = Resource.create({"service.name": "trader", "service.namespace": "fin"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(AIGPLineageSpanProcessor(client=OpenLineageClient(transport=via_processor)))
    exporter = AIGPOpenLineageSpanExporter(client=OpenLineageClient(transport=via_exporter))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=batch_size))
    _session(provider)
    provider.shutdown()

    processed, exported = _by_run(via_processor.events), _by_run(via_exporter.events)
    assert len(processed) == 4, "four governed traces, the health check is not one"
    assert exported.keys() == processed.keys()
    for run_id, event in exported.items():
        validate_run_event(event)
        expected = processed[run_id]
        assert event["run"]["facets"]["aigp_governance"] == expected["run"]["facets"]["aigp_governance"]
        assert event["inputs"] == expected["inputs"]
        for key in ("eventType", "eventTime", "job"):
            assert event[key] == expected[key], key
        assert event["run"]["facets"].get("errorMessage") == expected["run"]["facets"].get("errorMessage")
    assert sorted(e["eventType"] for e in exported.values()) == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]


def test_pending_governed_trace_is_flushed_at_shutdown() -> None:
    """A trace whose root never ended is still emitted (RUNNING, incomplete) when the SDK shuts down."""
    transport = CaptureTransport()
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(AIGPOpenLineageSpanExporter(client=OpenLineageClient(transport=transport)))
    )
    tracer = provider.get_tracer("t")
    root = tracer.start_span("never-ends")
    with tracer.start_as_current_span("child", context=trace.set_span_in_context(root)):
        AIGPInstrumentor(agent_id="agent.a", org_id="org.o").prompt_used("prompt.p", 1, "x")
    provider.shutdown()
    (event,) = transport.events
    validate_run_event(event)
    assert event["eventType"] == "RUNNING"
    assert event["run"]["facets"]["aigp_governance"]["complete"] is False


def test_exporter_refuses_spans_after_shutdown_and_shuts_down_twice() -> None:
    transport = CaptureTransport()
    exporter = AIGPOpenLineageSpanExporter(client=OpenLineageClient(transport=transport))
    exporter.shutdown()
    exporter.shutdown()
    assert exporter.export([]) is SpanExportResult.FAILURE
    assert exporter.force_flush() is True
    assert transport.events == []


def test_settings_come_from_aigp_bridge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGP_BRIDGE_JOB_NAMESPACE", "from.env")
    monkeypatch.setenv("AIGP_BRIDGE_TRACE_TIMEOUT_S", "not-a-number")  # logged, default kept
    exporter = AIGPOpenLineageSpanExporter(client=OpenLineageClient(transport=CaptureTransport()))
    try:
        assert exporter.enabled
        assert exporter._core is not None
        assert exporter._core.config.job_namespace == "from.env"
        assert exporter._core.config.trace_timeout_s == 300.0
    finally:
        exporter.shutdown()


def test_otel_sdk_disabled_makes_the_exporter_inert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "True")
    transport = CaptureTransport()
    exporter = AIGPOpenLineageSpanExporter(client=OpenLineageClient(transport=transport))
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    provider.get_tracer("t").start_span("root").end()
    provider.shutdown()
    assert not exporter.enabled
    assert exporter.stats() == {}
    assert transport.events == []


class _ContextRecordingTransport(CaptureTransport):
    def __init__(self) -> None:
        super().__init__()
        self.suppressed: list[object] = []

    def emit(self, event: Any) -> None:
        self.suppressed.append(otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY))
        super().emit(event)


@pytest.mark.parametrize("front_door", ["exporter", "processor"])
def test_delivery_is_not_itself_traced(front_door: str) -> None:
    """An instrumented HTTP client must make no spans while either front door delivers a run."""
    transport = _ContextRecordingTransport()
    provider = TracerProvider()
    client = OpenLineageClient(transport=transport)
    if front_door == "exporter":
        provider.add_span_processor(BatchSpanProcessor(AIGPOpenLineageSpanExporter(client=client)))
    else:
        provider.add_span_processor(AIGPLineageSpanProcessor(client=client))
    with provider.get_tracer("t").start_as_current_span("root"):
        AIGPInstrumentor(agent_id="agent.a", org_id="org.o").prompt_used("prompt.p", 1, "x")
    provider.shutdown()
    assert len(transport.events) == 1
    assert transport.suppressed == [True]


def test_registered_as_the_aigp_openlineage_traces_exporter() -> None:
    (entry,) = entry_points(group="opentelemetry_traces_exporter", name="aigp_openlineage")
    assert entry.load() is AIGPOpenLineageSpanExporter
