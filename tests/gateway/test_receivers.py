"""The gateway (``aigp-otel-bridge serve``) with real OTLP clients: same runs as in process."""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from aigp_otel_bridge.frontdoors.otlp_grpc import SERVICE_NAME
from tests.gateway.harness import SESSIONS, GatewayProcess, by_run, post, record_spans

pytest.importorskip("aigp")

MAX_REQUEST = 1024 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        tmp_path_factory.mktemp("gateway"), args=["--max-request-bytes", str(MAX_REQUEST)]
    ).wait_ready()
    yield process
    assert process.stop() == 0


def export(exporter: SpanExporter, spans: list[ReadableSpan]) -> None:
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_runs_equal_in_process_runs(gateway: GatewayProcess, protocol: str) -> None:
    spans, expected = record_spans(SESSIONS)
    before = len(gateway.lineage())
    exporter: SpanExporter = (
        GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True)
        if protocol == "grpc" else HttpSpanExporter(endpoint=gateway.http_url)
    )
    export(exporter, spans)
    received = gateway.wait_lineage(before + len(expected))[before:]
    assert {e["eventType"] for e in received} == {"COMPLETE", "FAIL"}
    assert by_run(received) == by_run(expected)


def test_gzip_http_protobuf(gateway: GatewayProcess) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression

    spans, expected = record_spans([{}])
    before = len(gateway.lineage())
    export(HttpSpanExporter(endpoint=gateway.http_url, compression=Compression.Gzip), spans)
    assert by_run(gateway.wait_lineage(before + 1)[before:]) == by_run(expected)


# ---- OTLP/JSON: hex ids, integers as strings or numbers, either key style, chunked bodies ----


def to_otlp_json(
    spans: list[ReadableSpan], *, snake_case: bool = False, numbers: bool = False, flags: bool = True
) -> bytes:
    """The OTLP/JSON form of spans, from the protobuf the SDK encoder makes (ids as hex)."""
    from google.protobuf import json_format

    document = json_format.MessageToDict(encode_spans(spans), preserving_proto_field_name=snake_case)

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                    import base64

                    value = base64.b64decode(value).hex()
                elif numbers and isinstance(value, str) and value.isdigit() and "nano" in key.lower():
                    value = int(value)
                elif key == "flags" and not flags:
                    continue  # a sender that does not know whether parents are remote
                out[key] = fix(value)
            return out
        if isinstance(node, list):
            return [fix(item) for item in node]
        return node

    return json.dumps(fix(document)).encode()


@pytest.mark.parametrize("style", ["camel-strings", "snake-numbers", "camel-noflags"])
def test_otlp_json_chunked(gateway: GatewayProcess, style: str) -> None:
    """Without the flags, a parent missing from the request's spans of the resource is remote."""
    spans, expected = record_spans([{}, {"remote_parent": True}])
    body = to_otlp_json(spans, snake_case=style.startswith("snake"), numbers=style.endswith("numbers"),
                        flags=not style.endswith("noflags"))
    before = len(gateway.lineage())
    pieces = iter([body[i:i + 1000] for i in range(0, len(body), 1000)])  # chunked, no Content-Length
    status, headers, answer = post(gateway, pieces)
    assert (status, headers["content-type"], json.loads(answer)) == (200, "application/json", {})
    assert by_run(gateway.wait_lineage(before + 2)[before:]) == by_run(expected)


def test_json_partial_success_names_rejected_spans(gateway: GatewayProcess) -> None:
    spans, _ = record_spans([{}])
    document = json.loads(to_otlp_json(spans))
    scope = document["resourceSpans"][0]["scopeSpans"][0]
    bad = dict(scope["spans"][0], traceId="00ff")
    scope["spans"].append(bad)
    status, _, answer = post(gateway, json.dumps(document).encode())
    assert status == 200
    partial = json.loads(answer)["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1 and "trace_id" in partial["errorMessage"]


# ---- bad input ----


def test_bad_requests_get_their_status(gateway: GatewayProcess) -> None:
    status, _, body = post(gateway, b"\xff\xff\xff\xff", "application/x-protobuf")
    assert status == 400
    from google.rpc import status_pb2

    assert status_pb2.Status.FromString(body).code == 3  # INVALID_ARGUMENT, in the request's encoding
    assert post(gateway, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}')[0] == 400
    assert post(gateway, b"[1, 2]")[0] == 400
    assert post(gateway, b"{}", "text/plain")[0] == 415
    assert post(gateway, b"{}", headers={"Content-Encoding": "br"})[0] == 415
    assert post(gateway, b"\x1f\x8b\x08\x00garbage", headers={"Content-Encoding": "gzip"})[0] == 400
    assert post(gateway, b"x" * (MAX_REQUEST + 1))[0] == 413
    chunks = iter([b"x" * 65536] * (MAX_REQUEST // 65536 + 2))
    assert post(gateway, chunks)[0] == 413  # chunked: no Content-Length to judge by
    assert post(gateway, gzip.compress(b"{}"), headers={"Content-Encoding": "gzip"})[0] == 200


def test_gzip_bomb_is_refused_with_bounded_memory(gateway: GatewayProcess) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1024 * 1024)
    bomb = b"".join(compressor.compress(zeros) for _ in range(512)) + compressor.flush()  # 512 MiB inflated
    assert len(bomb) < MAX_REQUEST
    before = gateway.memory_peak_kib()
    status, _, _ = post(gateway, bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert gateway.memory_peak_kib() - before < 64 * 1024
    assert post(gateway, b"{}")[0] == 200  # still serving


def test_grpc_bad_message_is_invalid_argument(gateway: GatewayProcess) -> None:
    with grpc.insecure_channel(gateway.grpc_endpoint) as channel:
        export = channel.unary_unary(f"/{SERVICE_NAME}/Export", request_serializer=None,
                                     response_deserializer=ExportTraceServiceResponse.FromString)
        with pytest.raises(grpc.RpcError) as refused:
            export(b"\xff\xff\xff\xff", timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert export(b"", timeout=10) == ExportTraceServiceResponse()


def test_health_and_unknown_paths(gateway: GatewayProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    for method, path, expected in [("GET", "/health", 200), ("GET", "/v1/traces", 405), ("GET", "/x", 404)]:
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        assert response.status == expected, (method, path)
    connection.close()


def test_stop_line_and_exit_status(tmp_path: Path) -> None:
    process = GatewayProcess(tmp_path, http=False).wait_ready()
    assert f"OTLP/gRPC on 127.0.0.1:{process.grpc_port}" in "".join(process.output)
    assert "lineage via the OpenLineage 'file' transport" in "".join(process.output)
    assert process.stop() == 0
    assert "stopped; 0 runs emitted" in "".join(process.output)


def test_bad_settings_exit_2(tmp_path: Path) -> None:
    process = GatewayProcess(tmp_path, args=["--grpc-endpoint", "nowhere"])
    assert process.process.wait(30) == 2
    process.stop()
    assert "--grpc-endpoint must be HOST:PORT" in "".join(process.errors)
