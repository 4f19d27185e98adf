"""Hostile clients and ungoverned floods (contract section 10): admission before a body is read,
decoding bounded in bytes and off the event loop, connection deadlines and caps, values cut where
kept, and the odd request that must not take the whole batch down. Real exporters and real
sockets, on loopback only."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from openlineage.client import OpenLineageClient
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aigp_otel_bridge.frontdoors import otlp_http
from aigp_otel_bridge.frontdoors.gateway import Gateway, GatewayError, gateway_settings
from aigp_otel_bridge.frontdoors.otlp import notes_from_request
from aigp_otel_bridge.frontdoors.otlp_grpc import SERVICE_NAME
from tests.conftest import CaptureTransport
from tests.gateway.harness import GatewayProcess, post, record_spans
from tests.gateway.test_operations import self_signed
from tests.governed_spans import POLICY, instrumentor
from tests.waiting import wait_until

pytest.importorskip("aigp")

TOKEN = "s3cret-token"
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
ROOT_ID = bytes.fromhex("00f067aa0ba902b7")
HASH = KeyValue(key="aigp.governance.hash", value=AnyValue(string_value="c" * 64))

Started = Callable[..., Gateway]


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch) -> Iterator[Started]:
    """Gateways in this process on free loopback ports, lineage captured; stopped at the end."""
    monkeypatch.setenv("AIGP_BRIDGE_JOB_NAMESPACE", "test.ns")
    made: list[Gateway] = []

    def started(environ: dict[str, str] | None = None, **bridge: str) -> Gateway:
        for name, value in bridge.items():
            monkeypatch.setenv(f"AIGP_BRIDGE_{name.upper()}", value)
        settings = gateway_settings(
            grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0", environ=environ or {}
        )
        transport = CaptureTransport()
        gateway = Gateway(settings, OpenLineageClient(transport=transport))
        gateway.start()
        gateway.transport = transport  # type: ignore[attr-defined]
        made.append(gateway)
        return gateway

    yield started
    for gateway in made:
        gateway.stop()


def http_port(gateway: Gateway) -> int:
    assert gateway.http is not None
    return gateway.http.port


def grpc_endpoint(gateway: Gateway) -> str:
    assert gateway.grpc is not None
    return f"127.0.0.1:{gateway.grpc.port}"


def as_target(gateway: Gateway) -> GatewayProcess:
    return cast(GatewayProcess, SimpleNamespace(http_port=http_port(gateway)))  # all ``post`` reads


def export(exporter: SpanExporter, spans: list[ReadableSpan]) -> SpanExportResult:
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def grpc_call(endpoint: str, body: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError | None:
    with grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", -1)]) as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/Export")
        try:
            call(body, timeout=30, metadata=metadata)
        except grpc.RpcError as error:
            return error
    return None


def governed_request(
    *attributes: KeyValue, resource: list[KeyValue] | None = None
) -> ExportTraceServiceRequest:
    """One governed local root, with ``attributes`` besides its governance hash."""
    span = Span(trace_id=TRACE, span_id=ROOT_ID, name="invoke", start_time_unix_nano=1, end_time_unix_nano=2,
                attributes=[HASH, *attributes])
    service = KeyValue(key="service.name", value=AnyValue(string_value="svc"))
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[service, *(resource or [])]), scope_spans=[ScopeSpans(spans=[span])],
    )])


# ---- admission: token and size before the body ----


def test_the_bearer_scheme_is_matched_in_any_case_on_both_protocols(start: Started) -> None:
    gateway = start({"AIGP_BRIDGE_AUTH_TOKEN": TOKEN})
    for scheme in ("bearer", "BEARER", "Bearer"):
        spans, _ = record_spans([{}])
        headers = {"authorization": f"{scheme} {TOKEN}"}
        url = f"http://127.0.0.1:{http_port(gateway)}/v1/traces"
        assert export(HttpSpanExporter(endpoint=url, headers=headers), spans) is SpanExportResult.SUCCESS
        exporter = GrpcSpanExporter(endpoint=grpc_endpoint(gateway), insecure=True, headers=headers)
        assert export(exporter, spans) is SpanExportResult.SUCCESS
    wrong = {"authorization": f"bearer {TOKEN}x"}
    spans, _ = record_spans([{}])
    exporter = GrpcSpanExporter(endpoint=grpc_endpoint(gateway), insecure=True, headers=wrong)
    assert export(exporter, spans) is SpanExportResult.FAILURE
    assert post(as_target(gateway), b"{}", headers={"Authorization": f"Basic {TOKEN}"})[0] == 401


def test_grpc_refuses_a_wrong_token_before_reading_the_message(tmp_path: Path) -> None:
    """24 unauthenticated calls of 15 MB each: refused from their metadata, so the gateway never
    holds their messages (grpcio reads a unary message before its handler runs)."""
    gateway = GatewayProcess(tmp_path, env={"AIGP_BRIDGE_AUTH_TOKEN": TOKEN}, http=False).wait_ready()
    try:
        big = KeyValue(key="x", value=AnyValue(string_value="x" * (15 << 20)))
        body = governed_request(big).SerializeToString()
        before = gateway.memory_peak_kib()
        errors: list[grpc.RpcError | None] = []
        calls = [threading.Thread(target=lambda: errors.append(grpc_call(gateway.grpc_endpoint, body)))
                 for _ in range(24)]
        for call in calls:
            call.start()
        for call in calls:
            call.join(60)
        assert len(errors) == 24
        assert {error.code() for error in errors if error is not None} == {grpc.StatusCode.UNAUTHENTICATED}
        assert None not in errors
        assert gateway.memory_peak_kib() - before < 15 * 1024 * 6  # far less than 24 messages of 15 MB
        assert gateway.lineage() == []
    finally:
        assert gateway.stop() == 0


def test_a_declared_size_over_the_limit_is_refused_before_the_body(tmp_path: Path) -> None:
    """Content-Length over the limit: 413 at once, though the body never comes."""
    gateway = GatewayProcess(tmp_path, grpc=False, args=["--max-request-bytes", "1000"]).wait_ready()
    try:
        with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=20) as connection:
            connection.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 5000\r\n\r\n")
            assert connection.recv(4096).startswith(b"HTTP/1.1 413 ")
    finally:
        assert gateway.stop() == 0


# ---- decoding: bounded in bytes, off the event loop ----


def test_decoding_is_bounded_in_bytes_and_a_refused_exporter_retries(start: Started) -> None:
    gateway = start({"AIGP_BRIDGE_MAX_DECODING_BYTES": "100000"})
    budget = gateway.intake.decoding
    assert budget.limit == 100_000
    body = governed_request().SerializeToString()
    assert budget.take(99_990)  # a request being decoded
    status, headers, answer = post(as_target(gateway), body, "application/x-protobuf")
    assert (status, headers["retry-after"]) == (429, "1")
    assert status_pb2.Status.FromString(answer).message == "decoding budget full, retry later"
    error = grpc_call(grpc_endpoint(gateway), body)
    assert error is not None and error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    assert status_pb2.Status.FromString(details).details[0].Unpack(retry)


_HTTP_EXPORTER = version("opentelemetry-exporter-otlp-proto-http")


@pytest.mark.skipif(
    tuple(int(part) for part in _HTTP_EXPORTER.split(".")[:2]) < (1, 45),
    reason=f"opentelemetry-exporter-otlp-proto-http {_HTTP_EXPORTER} retries no 429 (1.45 is the first that"
    " does; docs/gateway.md, 'Overload and acknowledgement')",
)
def test_an_exporter_refused_for_the_decoding_budget_retries_and_gets_in(start: Started) -> None:
    gateway = start({"AIGP_BRIDGE_MAX_DECODING_BYTES": "100000"})
    budget = gateway.intake.decoding
    assert budget.take(99_990)  # a request being decoded
    # A real exporter is refused, retries after Retry-After, and gets in once the budget is free.
    spans, expected = record_spans([{}])
    url = f"http://127.0.0.1:{http_port(gateway)}/v1/traces"
    results: list[SpanExportResult] = []
    sender = threading.Thread(target=lambda: results.append(export(HttpSpanExporter(endpoint=url), spans)))
    sender.start()
    wait_until(lambda: gateway.intake.busy_refusals >= 3, "the exporter to be refused", 20)
    budget.give_back(99_990)
    sender.join(30)
    assert results == [SpanExportResult.SUCCESS]
    assert budget.used == 0
    transport: CaptureTransport = gateway.transport  # type: ignore[attr-defined]
    assert transport.wait_for(1)[0]["run"]["runId"] == expected[0]["run"]["runId"]


def test_health_and_other_requests_are_served_while_a_request_is_decoded(
    start: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start()
    decoding = threading.Event()
    release = threading.Event()
    real_decode = otlp_http.decode

    def slow_decode(body: bytes, media_type: str) -> Any:
        decoding.set()
        assert release.wait(30)
        return real_decode(body, media_type)

    monkeypatch.setattr(otlp_http, "decode", slow_decode)
    answers: list[int] = []
    big = threading.Thread(target=lambda: answers.append(post(as_target(gateway), b"{}")[0]))
    big.start()
    assert decoding.wait(10)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", http_port(gateway), timeout=10)
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200  # the event loop is free while decoding runs
        connection.close()
    finally:
        release.set()
    big.join(30)
    assert answers == [200]


# ---- connections: deadlines and caps ----


def test_slow_heads_and_bodies_are_cut(start: Started) -> None:
    gateway = start({"AIGP_BRIDGE_READ_TIMEOUT_S": "0.5"})
    with socket.create_connection(("127.0.0.1", http_port(gateway)), timeout=20) as slow_head:
        slow_head.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert slow_head.recv(4096) == b""  # closed by the gateway, well before the 20 s
    with socket.create_connection(("127.0.0.1", http_port(gateway)), timeout=20) as slow_body:
        slow_body.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{")
        answer = b""
        while chunk := slow_body.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
    with socket.create_connection(("127.0.0.1", http_port(gateway)), timeout=20) as silent:
        assert silent.recv(4096) == b""  # a connection that sends nothing is cut too
    assert post(as_target(gateway), b"{}")[0] == 200


def test_a_flood_of_idle_connections_never_stops_the_other_protocol(tmp_path: Path) -> None:
    """At ``ulimit -n 256``, 400 idle HTTP connections: the HTTP receiver keeps its cap (a third
    of the limit), gRPC keeps serving, HTTP serves again once the idle ones are cut; then 400 idle
    gRPC connections leave HTTP serving; and the log stays a few lines."""
    gateway = GatewayProcess(tmp_path, open_files=256, env={"AIGP_BRIDGE_READ_TIMEOUT_S": "2"}).wait_ready()
    idle: list[socket.socket] = []
    try:
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10))
        spans, expected = record_spans([{}])
        exporter = GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True)
        assert export(exporter, spans) is SpanExportResult.SUCCESS
        assert gateway.wait_lineage(1)[0]["run"]["runId"] == expected[0]["run"]["runId"]

        def http_serves() -> bool:
            try:
                return post(gateway, b"{}")[0] == 200
            except OSError:
                return False

        wait_until(http_serves, "the HTTP receiver to serve again", 30, every_s=0.2)
        for _ in range(400):  # and the other way round: a flood on gRPC leaves HTTP serving
            idle.append(socket.create_connection(("127.0.0.1", gateway.grpc_port or 0), timeout=10))
        spans, expected = record_spans([{}])
        url = gateway.http_url
        assert export(HttpSpanExporter(endpoint=url), spans) is SpanExportResult.SUCCESS
        assert gateway.wait_lineage(2)[1]["run"]["runId"] == expected[0]["run"]["runId"]
    finally:
        for connection in idle:
            connection.close()
        assert gateway.stop() == 0
    log = "".join(gateway.errors)
    assert len(log) < 20_000, log[:2000]
    assert "Traceback" not in log


# ---- values kept past a request ----


def test_values_kept_past_a_request_are_cut_at_the_value_cap() -> None:
    long = "v" * 100_000
    event = Span.Event(name="aigp.inject.success", time_unix_nano=1, attributes=[
        KeyValue(key="aigp.policy.name", value=AnyValue(string_value=long))])
    request = governed_request(resource=[KeyValue(key="big", value=AnyValue(string_value=long))])
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.events.append(event)
    span.name = long
    span.status.code = 2
    span.status.message = long
    (note,) = notes_from_request(request, value_cap=2049).notes
    assert len(note.resource["big"]) == 2049
    assert len(note.governance_events[0].attributes["aigp.policy.name"]) == 2049
    assert len(note.name) == 2049
    assert note.status_description is not None and len(note.status_description) == 2049


def test_a_governed_run_with_long_values_is_still_emitted_with_them_counted(start: Started) -> None:
    gateway = start()
    long = KeyValue(key="aigp.policy.name", value=AnyValue(string_value="p" * 100_000))
    body = governed_request(long).SerializeToString()
    assert post(as_target(gateway), body, "application/x-protobuf")[0] == 200
    transport: CaptureTransport = gateway.transport  # type: ignore[attr-defined]
    (event,) = transport.wait_for(1)
    assert event["eventType"] == "COMPLETE"
    assert gateway.core.stats()["invalid_values"] >= 1


# ---- the odd request ----


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand: the protobuf library itself refuses to
    build the values a hostile sender can."""
    length, size = b"", len(payload)
    while size > 0x7F:
        length += bytes([size & 0x7F | 0x80])
        size >>= 7
    return bytes([number << 3 | 2]) + length + bytes([size]) + payload


def deep_request(depth: int) -> bytes:
    """``governed_request`` with one more attribute: arrays nested ``depth`` deep."""
    value = field(1, b"deep")  # AnyValue.string_value
    for _ in range(depth):
        value = field(5, field(1, value))  # AnyValue.array_value, ArrayValue.values
    request = governed_request()
    span = request.resource_spans[0].scope_spans[0].spans[0].SerializeToString()
    span += field(9, field(1, b"deep") + field(2, value))  # Span.attributes: KeyValue(key, value)
    resource = request.resource_spans[0].resource.SerializeToString()
    return field(1, field(1, resource) + field(2, field(2, span)))


def nested_json(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "deep"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


@pytest.mark.parametrize("depth", [60, 200])
def test_arrays_nested_too_deep_are_left_out_and_counted_not_the_request(start: Started, depth: int) -> None:
    gateway = start()
    protobuf = deep_request(depth)
    assert post(as_target(gateway), protobuf, "application/x-protobuf")[0] == 200
    attributes = [{"key": "aigp.governance.hash", "value": {"stringValue": "c" * 64}},
                  {"key": "deep", "value": nested_json(depth)}]
    document = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {
        "stringValue": "svc"}}]}, "scopeSpans": [{"spans": [{
            "traceId": "1" * 32, "spanId": ROOT_ID.hex(), "name": "invoke", "startTimeUnixNano": 1,
            "endTimeUnixNano": 2, "attributes": attributes}]}]}]}
    if depth < 400:  # Python's own JSON parser refuses nesting past its recursion limit
        assert post(as_target(gateway), json.dumps(document).encode())[0] == 200
    transport: CaptureTransport = gateway.transport  # type: ignore[attr-defined]
    assert len(transport.wait_for(2)) == 2
    assert gateway.core.stats()["invalid_values"] >= 2
    assert ExportTraceServiceRequest.FromString(deep_request(20)).resource_spans  # what is kept parses as is


def test_hex_ids_with_whitespace_are_refused(start: Started) -> None:
    gateway = start()
    spaced = "0af76519 16cd43dd8448eb211c80319c"
    for trace_id in (spaced, f" {TRACE.hex()}", f"{TRACE.hex()}\n"):
        span = {"traceId": trace_id, "spanId": ROOT_ID.hex()}
        document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
        status, _, body = post(as_target(gateway), json.dumps(document).encode())
        assert status == 400
        assert b"not a hex string" in body


def test_a_tls_key_that_does_not_match_its_certificate_is_named(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    cert, _ = self_signed(first)
    _, other_key = self_signed(second)
    with pytest.raises(GatewayError, match="not a usable certificate and key pair"):
        gateway_settings(tls_cert_file=str(cert), tls_key_file=str(other_key), environ={})


def test_a_receiver_on_other_interfaces_without_tls_or_token_is_named() -> None:
    exposed = gateway_settings(grpc_endpoint="0.0.0.0:4317", http_endpoint="[::1]:4318", environ={})
    assert exposed.exposed() == ["OTLP/gRPC listens on 0.0.0.0 without TLS or a token"]
    with_token = gateway_settings(http_endpoint="10.1.2.3:4318", environ={"AIGP_BRIDGE_AUTH_TOKEN": TOKEN})
    assert with_token.exposed() == ["OTLP/HTTP listens on 10.1.2.3 without TLS"]
    assert gateway_settings(environ={}).exposed() == []  # loopback by default
    assert gateway_settings(http_endpoint="localhost:4318", environ={}).exposed() == []


# ---- ungoverned traffic ----


def ungoverned_batch(traces: int, spans_per_trace: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "web"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for _ in range(traces):
        with tracer.start_as_current_span("GET /", attributes={"http.method": "GET"}):
            for step in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"step {step}", attributes={"db.system": "postgres"}):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_ungoverned_batches_from_one_client_are_never_refused(start: Started) -> None:
    """512-span batches of 8-span traces, one after another from one client, with a small
    ``max_pending_traces``: held roots are bounded in bytes, not by that count, so none is refused
    (the count would refuse the second batch, within the hold's second)."""
    gateway = start(max_pending_traces="64")
    url = f"http://127.0.0.1:{http_port(gateway)}/v1/traces"
    for batch in range(12):
        spans = ungoverned_batch(64, 8)
        assert len(spans) == 512
        exporter: SpanExporter = (HttpSpanExporter(endpoint=url) if batch % 2 else
                                  GrpcSpanExporter(endpoint=grpc_endpoint(gateway), insecure=True))
        assert export(exporter, spans) is SpanExportResult.SUCCESS
    assert gateway.intake.busy_refusals == 0
    assert gateway.intake.assembly.bytes_held <= gateway.settings.max_held_bytes
    transport: CaptureTransport = gateway.transport  # type: ignore[attr-defined]
    wait_until(lambda: len(gateway.intake.assembly) == 0, "the hold to decide every root", 10)
    assert transport.events == []  # nothing governed, nothing emitted
    root = next(span for span in spans if span.parent is None)  # of the last batch: still remembered
    assert export(HttpSpanExporter(endpoint=url), late_governed_child(root)) is SpanExportResult.SUCCESS
    (event,) = transport.wait_for(1)
    gateway.stop()
    assert event["eventType"] == "COMPLETE" and event["run"]["facets"]["aigp_governance"]["complete"] is True
    assert event["job"]["name"].endswith("GET /")  # the root's job, not the late child's


def late_governed_child(root: ReadableSpan) -> list[ReadableSpan]:
    """A governed span whose parent is ``root``, recorded after ``root`` was sent."""
    aigp = instrumentor()
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "web"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(root.get_span_context()))
    with provider.get_tracer("t").start_as_current_span("load-policy", context=parent):
        aigp.inject_success("policy.trading-limits", 4, POLICY, data_classification="internal")
    provider.shutdown()
    return list(memory.get_finished_spans())
