"""Whole traces at the gateway: the runs of services that call each other are linked from the spans
(``parent`` facet with ``root``), and spans of one run split over requests still make one run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aigp_otel_bridge import AIGPLineagePropagator, AIGPLineageSpanProcessor
from aigp_otel_bridge.propagated_links import RUN_LINKS, run_id_for_remote_root, run_id_for_trace
from tests.conftest import CaptureTransport
from tests.gateway.harness import GatewayProcess, by_run, post, wait_lineage

pytest.importorskip("aigp")

W3C_AND_LINEAGE = CompositePropagator([TraceContextTextMapPropagator(), AIGPLineagePropagator()])
SERVICES = ("planner", "pricer", "ledger")


@pytest.fixture(autouse=True)
def propagation_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, the caller's run crosses the call in the ``aigp-lineage`` header."""
    monkeypatch.setattr(RUN_LINKS, "active", True)


class Service:
    """One service: its own resource, the bridge in process, and its finished spans for export."""

    def __init__(self, name: str, transport: CaptureTransport) -> None:
        from aigp import AIGPInstrumentor

        self.aigp = AIGPInstrumentor(agent_id=f"agent.{name}")
        attributes = {**self.aigp.get_resource_attributes(), "service.name": name}
        self.provider = TracerProvider(resource=Resource.create(attributes))
        self.processor = AIGPLineageSpanProcessor(
            client=OpenLineageClient(transport=transport), job_namespace="test.ns"
        )
        self.memory = InMemorySpanExporter()
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer(name)

    def spans(self) -> list[ReadableSpan]:
        assert self.processor.force_flush(30_000)
        return list(self.memory.get_finished_spans())


@pytest.fixture
def services() -> Iterator[tuple[dict[str, Service], CaptureTransport]]:
    transport = CaptureTransport()
    made = {name: Service(name, transport) for name in SERVICES}
    yield made, transport
    for service in made.values():
        service.provider.shutdown()


def call_chain(services: dict[str, Service]) -> str:
    """planner -> pricer -> ledger, W3C trace context (and, in process, the lineage header) across
    each call, every service governed; returns the trace id."""
    planner, pricer, ledger = (services[name] for name in SERVICES)
    outbound: dict[str, str] = {}
    onward: dict[str, str] = {}
    with planner.tracer.start_as_current_span("plan") as root:
        planner.aigp.inject_success("policy.trading-limits", 4, "Max position: $10M per instrument.")
        with planner.tracer.start_as_current_span("call pricer", kind=trace.SpanKind.CLIENT):
            W3C_AND_LINEAGE.inject(outbound)
            incoming = W3C_AND_LINEAGE.extract(outbound)  # the callee's side of the call
            with pricer.tracer.start_as_current_span("price", context=incoming, kind=trace.SpanKind.SERVER):
                with pricer.tracer.start_as_current_span("check"):
                    pricer.aigp.inject_denied("policy.wire", "wire transfers need human approval")
                with pricer.tracer.start_as_current_span("call ledger", kind=trace.SpanKind.CLIENT):
                    W3C_AND_LINEAGE.inject(onward)
                    context = W3C_AND_LINEAGE.extract(onward)
                    with ledger.tracer.start_as_current_span("book", context=context) as book:
                        book.add_event("aigp.tool.invoked", {"aigp.governance.hash": "a" * 64})
        return f"{root.get_span_context().trace_id:032x}"


def send(exporter: SpanExporter, spans: list[ReadableSpan]) -> None:
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_services_of_one_trace_give_linked_runs_equal_to_in_process(
    tmp_path: Path, services: tuple[dict[str, Service], CaptureTransport]
) -> None:
    """Each service's spans exported by its own Python OTLP exporter, bottom-up as they end (the
    callee's root reaches the gateway before its caller's): three runs, each linked to its caller
    with the caller's run as parent and the planner's as root, as in process with the header."""
    made, transport = services
    trace_hex = call_chain(made)
    expected = transport.wait_for(3)
    gateway = GatewayProcess(tmp_path).wait_ready()
    try:
        send(GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True), made["ledger"].spans())
        send(HttpSpanExporter(endpoint=gateway.http_url), made["pricer"].spans())
        send(GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True), made["planner"].spans())
        received = gateway.wait_lineage(3)
    finally:
        assert gateway.stop() == 0
    runs = {event["job"]["name"]: event for event in received}
    planner, pricer, ledger = runs["planner.plan"], runs["pricer.price"], runs["ledger.book"]
    assert planner["run"]["runId"] == run_id_for_trace(trace_hex)
    assert "parent" not in planner["run"]["facets"]
    pricer_parent, ledger_parent = pricer["run"]["facets"]["parent"], ledger["run"]["facets"]["parent"]
    assert pricer_parent["run"]["runId"] == planner["run"]["runId"]
    assert pricer_parent["job"] == {"namespace": "test.ns", "name": "planner.plan", "facets": {}}
    assert ledger_parent["run"]["runId"] == pricer["run"]["runId"]
    assert ledger_parent["job"]["name"] == "pricer.price"
    for parent in (pricer_parent, ledger_parent):
        assert parent["root"]["run"]["runId"] == planner["run"]["runId"]
        assert parent["root"]["job"]["name"] == "planner.plan"
    price_root = next(s for s in made["pricer"].spans() if s.name == "price")
    assert pricer["run"]["runId"] == run_id_for_remote_root(trace_hex, f"{price_root.context.span_id:016x}")
    assert by_run(received) == by_run(expected)


def test_trace_id_router_over_two_gateways_links_the_same_runs(
    tmp_path: Path, services: tuple[dict[str, Service], CaptureTransport]
) -> None:
    """Several traces over two gateways behind a trace-id router: the runs, links included, are
    those one process gives."""
    made, transport = services
    traces = [call_chain(made) for _ in range(6)]
    expected = transport.wait_for(3 * len(traces))
    gateways = [GatewayProcess(tmp_path, grpc=False) for _ in range(2)]
    try:
        for gateway in gateways:
            gateway.wait_ready()
        order = sorted(int(trace_hex, 16) for trace_hex in traces)  # each trace to one gateway, spread
        for name in reversed(SERVICES):  # callees first, as their spans end first
            spans = made[name].spans()
            for index, gateway in enumerate(gateways):
                mine = [span for span in spans if order.index(span.context.trace_id) % len(gateways) == index]
                if mine:
                    send(HttpSpanExporter(endpoint=gateway.http_url), mine)
        received = wait_lineage(gateways, len(expected))
    finally:
        for gateway in gateways:
            assert gateway.stop() == 0
    assert all(gateway.lineage() for gateway in gateways)  # the work was spread
    assert len(received) == len(expected)
    assert by_run(received) == by_run(expected)
    assert sum("parent" in event["run"]["facets"] for event in received) == 2 * len(traces)


# ---- one run's spans split over requests ----


def one_service_session(services: dict[str, Service]) -> list[ReadableSpan]:
    planner = services["planner"]
    with planner.tracer.start_as_current_span("plan"):
        with planner.tracer.start_as_current_span("load-policy"):
            planner.aigp.inject_success("policy.trading-limits", 4, "Max position: $10M per instrument.")
        with planner.tracer.start_as_current_span("wire-transfer"):
            planner.aigp.tool_denied("tool.wire-transfer", "wire transfers need human approval")
    return planner.spans()


def test_children_sent_after_their_root_join_its_terminal_event(
    tmp_path: Path, services: tuple[dict[str, Service], CaptureTransport]
) -> None:
    """What a span processor exporting every span on its own does (the JavaScript
    ``SimpleSpanProcessor``, concurrent requests): the root arrives first, then each child."""
    made, transport = services
    spans = one_service_session(made)
    expected = transport.wait_for(1)
    root = next(span for span in spans if span.parent is None)
    gateway = GatewayProcess(tmp_path).wait_ready()
    try:
        send(HttpSpanExporter(endpoint=gateway.http_url), [root])
        for child in (span for span in spans if span is not root):
            send(GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True), [child])
        gateway.wait_lineage(1)
    finally:
        assert gateway.stop() == 0  # every pending trace decided: a continuation would be written by now
    received = gateway.lineage()
    assert len(received) == 1
    assert by_run(received) == by_run(expected)
    assert received[0]["run"]["facets"]["aigp_governance"]["eventCount"] == 2


def without_flags(spans: list[ReadableSpan]) -> bytes:
    """An OTLP request as a sender that leaves the span flags 0 makes it."""
    request = encode_spans(spans)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.flags = 0
    return request.SerializeToString()


@pytest.mark.parametrize("order", ["children-first", "root-first"])
def test_without_flags_a_parent_in_another_request_of_the_same_resource_is_local(
    tmp_path: Path, services: tuple[dict[str, Service], CaptureTransport], order: str
) -> None:
    """No flags: a child whose parent came, or comes shortly, in another request of the same
    resource is not a local root of its own: one run, as in process."""
    made, transport = services
    spans = one_service_session(made)
    expected = transport.wait_for(1)
    root = next(span for span in spans if span.parent is None)
    children = [span for span in spans if span is not root]
    requests = [[root], *([child] for child in children)]
    if order == "children-first":
        requests.reverse()
    gateway = GatewayProcess(tmp_path).wait_ready()
    try:
        for batch in requests:
            status, _, _ = post(gateway, without_flags(batch), "application/x-protobuf")
            assert status == 200
        gateway.wait_lineage(1)
    finally:
        assert gateway.stop() == 0  # every pending trace decided: a second run would be written by now
    received = gateway.lineage()
    assert len(received) == 1
    assert by_run(received) == by_run(expected)


# ---- the wire: refusals that OTLP senders retry ----


def governed_child_request() -> bytes:
    """One governed child span (no root): it goes straight to the engine's intake."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "wire"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("wire")
    root = tracer.start_span("session")
    child = tracer.start_span("policy", context=trace.set_span_in_context(root))
    child.add_event("aigp.policy.inject.success", {"aigp.event.id": "e-1", "aigp.governance.hash": "b" * 64})
    child.end()
    provider.shutdown()
    return encode_spans(list(memory.get_finished_spans())).SerializeToString()


def grpc_export(port: int, body: bytes) -> Any:
    import grpc

    from aigp_otel_bridge.frontdoors.otlp_grpc import SERVICE_NAME

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/Export")
        try:
            call(body, timeout=10)
        except grpc.RpcError as error:
            return error
    return None


def test_full_intake_and_stopping_answers_on_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Intake full: HTTP 429 with ``Retry-After`` and a ``google.rpc.Status``; gRPC
    ``RESOURCE_EXHAUSTED`` with a ``RetryInfo`` detail. Stopping: HTTP 503 with ``Retry-After``,
    gRPC ``UNAVAILABLE``. OTLP senders retry all four; nothing acknowledged is lost."""
    import grpc
    from google.rpc import error_details_pb2, status_pb2

    from aigp_otel_bridge.frontdoors.gateway import Gateway, gateway_settings

    monkeypatch.setenv("AIGP_BRIDGE_MAX_INTAKE_SIZE", "1")
    transport = CaptureTransport()
    settings = gateway_settings(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0", environ={})
    gateway = Gateway(settings, OpenLineageClient(transport=transport))
    gateway.start()
    assert gateway.http is not None and gateway.grpc is not None
    endpoint = cast(GatewayProcess, SimpleNamespace(http_port=gateway.http.port))  # all ``post`` reads
    body = governed_child_request()
    try:
        with gateway.core.engine._correlating:  # the worker cannot drain the intake meanwhile
            assert post(endpoint, body, "application/x-protobuf")[0] == 200  # an empty intake takes it
            status, headers, answer = post(endpoint, body, "application/x-protobuf")
            assert (status, headers["retry-after"]) == (429, "1")
            assert status_pb2.Status.FromString(answer).message == "intake full, retry later"
            error = grpc_export(gateway.grpc.port, body)
            assert error is not None and error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            details = dict(error.trailing_metadata())["grpc-status-details-bin"]
            retry = error_details_pb2.RetryInfo()
            assert status_pb2.Status.FromString(details).details[0].Unpack(retry)
            assert retry.retry_delay.seconds == 1
        gateway.intake.close()  # the stop sequence: the engine takes nothing more
        status, headers, _ = post(endpoint, body, "application/x-protobuf")
        assert (status, headers["retry-after"]) == (503, "1")
        error = grpc_export(gateway.grpc.port, body)
        assert error is not None and error.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        assert gateway.stop()
    assert gateway.intake.busy_refusals == 2
    stats = gateway.core.stats()
    assert (stats["records"], stats["runs_decided"]) == (1, 1)  # the one acknowledged request's run
