"""The gateway in operation: token, TLS, overload, SIGTERM with the backend down, scale-out, metrics."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aigp_otel_bridge.outbox import Outbox
from aigp_otel_bridge.propagated_links import run_id_for_trace
from tests.backend import LineageBackend
from tests.gateway.harness import SESSIONS, GatewayProcess, by_run, post, record_spans, wait_lineage
from tests.governed_spans import instrumentor, light_session, resource

pytest.importorskip("aigp")

TOKEN = "s3cret-token"


def send(exporter: SpanExporter, spans: list[ReadableSpan]) -> SpanExportResult:
    """One export; a connection the server dropped is a failure (older OTLP/HTTP exporters, 1.27
    among them, raise ``requests``' ConnectionError where newer ones return FAILURE)."""
    try:
        return exporter.export(spans)
    except requests.exceptions.ConnectionError:
        return SpanExportResult.FAILURE
    finally:
        exporter.shutdown()


def test_token_is_enforced_on_both_protocols(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, env={"AIGP_BRIDGE_AUTH_TOKEN": TOKEN}).wait_ready()
    try:
        spans, expected = record_spans([{}])
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert send(HttpSpanExporter(endpoint=gateway.http_url), spans) is SpanExportResult.FAILURE
        wrong = {"authorization": "Bearer nope"}
        assert send(GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True, headers=wrong),
                    spans) is SpanExportResult.FAILURE
        status, headers, _ = post(gateway, b"{}")
        assert (status, headers["www-authenticate"]) == (401, "Bearer")
        with grpc.insecure_channel(gateway.grpc_endpoint) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export", request_serializer=None
            )
            with pytest.raises(grpc.RpcError) as refused:
                export(b"", timeout=10)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert gateway.lineage() == []
        exporter = HttpSpanExporter(endpoint=gateway.http_url, headers=bearer)
        assert send(exporter, spans) is SpanExportResult.SUCCESS
        assert by_run(gateway.wait_lineage(1)) == by_run(expected)
        spans, expected = record_spans([{}])
        assert send(GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True, headers=bearer),
                    spans) is SpanExportResult.SUCCESS
        assert by_run(gateway.wait_lineage(2)[1:]) == by_run(expected)
    finally:
        assert gateway.stop() == 0


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_with_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the exporter's certificate_file
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    cert, key = self_signed(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    gateway = GatewayProcess(
        tmp_path, args=["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--auth-token-file",
                        str(token_file)],
    ).wait_ready()
    try:
        assert f"https://127.0.0.1:{gateway.http_port}/v1/traces" in "".join(gateway.output)
        bearer = {"authorization": f"Bearer {TOKEN}"}
        spans, expected = record_spans([{}])
        plain = HttpSpanExporter(endpoint=gateway.http_url, headers=bearer, timeout=3)
        assert send(plain, spans) is SpanExportResult.FAILURE  # plain HTTP to a TLS port
        https = gateway.http_url.replace("http://", "https://")
        exporter = HttpSpanExporter(endpoint=https, headers=bearer, certificate_file=str(cert))
        assert send(exporter, spans) is SpanExportResult.SUCCESS
        assert by_run(gateway.wait_lineage(1)) == by_run(expected)
        spans, expected = record_spans([{}])
        credentials = grpc.ssl_channel_credentials(cert.read_bytes())
        exporter = GrpcSpanExporter(endpoint=gateway.grpc_endpoint, credentials=credentials, headers=bearer)
        assert send(exporter, spans) is SpanExportResult.SUCCESS
        assert by_run(gateway.wait_lineage(2)[1:]) == by_run(expected)
    finally:
        assert gateway.stop() == 0


def test_full_intake_refuses_and_loses_nothing(tmp_path: Path) -> None:
    """8 concurrent senders, 2 000 sessions, an intake of 8 notes: every session acknowledged is
    one run, none twice; refusals happened and the exporters retried them."""
    gateway = GatewayProcess(tmp_path, env={"AIGP_BRIDGE_MAX_INTAKE_SIZE": "8"}).wait_ready()
    senders, sessions_each, per_request = 8, 250, 25
    batches: list[list[list[ReadableSpan]]] = []
    expected: set[str] = set()
    for _ in range(senders):
        aigp = instrumentor()
        provider = TracerProvider(resource=resource(aigp))
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("tests.overload")
        trace_ids = [light_session(tracer, aigp) for _ in range(sessions_each)]
        expected |= {run_id_for_trace(trace_id) for trace_id in trace_ids}
        spans = list(memory.get_finished_spans())
        batches.append([spans[i:i + 2 * per_request] for i in range(0, len(spans), 2 * per_request)])
    results: list[SpanExportResult] = []
    start = threading.Barrier(senders)

    def sender(index: int) -> None:
        exporter: SpanExporter = (
            GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True, timeout=60)
            if index % 2 else HttpSpanExporter(endpoint=gateway.http_url, timeout=60)
        )
        start.wait()
        for batch in batches[index]:
            results.append(exporter.export(batch))
        exporter.shutdown()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert results.count(SpanExportResult.SUCCESS) == len(results) == sum(map(len, batches))
        events = gateway.wait_lineage(len(expected), timeout_s=120)
    finally:
        assert gateway.stop() == 0
    run_ids = [event["run"]["runId"] for event in events]
    assert len(run_ids) == len(set(run_ids)) == len(expected)
    assert set(run_ids) == expected
    refused = re.search(r"(\d+) requests refused while the intake was full", "".join(gateway.output))
    assert refused is not None and int(refused.group(1)) > 0


def test_sigterm_with_backend_down_keeps_runs_for_the_next_start(tmp_path: Path) -> None:
    backend = LineageBackend()  # not listening: connection refused
    outbox = tmp_path / "outbox"
    transport = {
        "OPENLINEAGE__TRANSPORT__TYPE": "http", "OPENLINEAGE__TRANSPORT__URL": backend.url,
        "OPENLINEAGE__TRANSPORT__TIMEOUT": "1", "OPENLINEAGE__TRANSPORT__RETRY__TOTAL": "0",
        "OPENLINEAGE__TRANSPORT__RETRY__CONNECT": "0",
    }
    env = {"AIGP_BRIDGE_OUTBOX_DIR": str(outbox)}
    gateway = GatewayProcess(tmp_path, env=env, transport_env=transport).wait_ready()
    spans, expected = record_spans(SESSIONS)
    exporter = GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True)
    assert send(exporter, spans) is SpanExportResult.SUCCESS
    assert gateway.stop() == 0
    assert Outbox(outbox).depth() == len(expected)
    backend.up()
    try:
        again = GatewayProcess(tmp_path, env=env, transport_env=transport).wait_ready()
        try:
            backend.wait_for_runs(set(by_run(expected)))
        finally:
            assert again.stop() == 0
        assert by_run(backend.received) == by_run(expected)
    finally:
        backend.down()


def test_trace_id_router_over_three_gateways_gives_the_runs_of_one(tmp_path: Path) -> None:
    """What the Collector's loadbalancing exporter does with routing_key traceID."""
    sessions: list[dict[str, Any]] = [{}, {"fail": True}, {"remote_parent": True}] * 3
    spans, expected = record_spans(sessions)
    gateways = [GatewayProcess(tmp_path, grpc=False) for _ in range(3)]
    try:
        for gateway in gateways:
            gateway.wait_ready()
        traces = sorted({span.context.trace_id for span in spans})  # each trace to one gateway, spread
        for index, gateway in enumerate(gateways):
            mine = [span for span in spans if traces.index(span.context.trace_id) % len(gateways) == index]
            if mine:
                assert send(HttpSpanExporter(endpoint=gateway.http_url), mine) is SpanExportResult.SUCCESS
        received = wait_lineage(gateways, len(expected))
    finally:
        for gateway in gateways:
            assert gateway.stop() == 0
    assert len(received) == len(expected)
    assert by_run(received) == by_run(expected)
    assert all(gateway.lineage() for gateway in gateways)  # the work was spread


def test_metrics_through_the_sdk(tmp_path: Path) -> None:
    env = {"OTEL_METRICS_EXPORTER": "console", "OTEL_METRIC_EXPORT_INTERVAL": "60000"}
    gateway = GatewayProcess(tmp_path, env=env).wait_ready()
    spans, _ = record_spans([{}])
    assert send(HttpSpanExporter(endpoint=gateway.http_url), spans) is SpanExportResult.SUCCESS
    gateway.wait_lineage(1)
    assert gateway.stop() == 0
    output = "".join(gateway.output)
    for name in ("aigp_bridge.gateway.requests", "aigp_bridge.gateway.spans", "aigp_bridge.runs_emitted"):
        assert name in output
