"""Any order, any distance; retries add nothing (contract section 10), with the real OTLP exporters.

A local root decided without governance, before its governed children arrive, still gets the run
the in-process processor gives (its status, its job, a terminal event); a request sent again
after a lost answer adds no event.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from aigp_otel_bridge.frontdoors.gateway import Gateway, gateway_settings
from tests.conftest import CaptureTransport
from tests.gateway.harness import SESSIONS, by_run, record_spans
from tests.waiting import wait_until

pytest.importorskip("aigp")


def send(exporter: SpanExporter, spans: list[ReadableSpan]) -> None:
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gateway, CaptureTransport]]:
    """A gateway in this process (so that a test can wait until what it sent was decided), with
    local roots handed over at once (``AIGP_BRIDGE_ROOT_WAIT_S=0``): the longest distance there is."""
    monkeypatch.setenv("AIGP_BRIDGE_JOB_NAMESPACE", "test.ns")
    transport = CaptureTransport()
    settings = gateway_settings(
        grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0",
        environ={"AIGP_BRIDGE_ROOT_WAIT_S": "0", "AIGP_BRIDGE_LINK_WAIT_S": "0.2"},
    )
    gateway = Gateway(settings, OpenLineageClient(transport=transport))
    gateway.start()
    yield gateway, transport
    gateway.stop()


def decided(gateway: Gateway) -> None:
    """Everything received so far went through correlation: nothing is held, the intake is empty."""
    wait_until(lambda: len(gateway.intake.assembly) == 0, "the hold to hand every root over", 10)
    assert gateway.core.engine.flush(10.0)


def test_roots_decided_before_their_governed_children_still_make_their_runs(
    started: tuple[Gateway, CaptureTransport],
) -> None:
    """Each session's root is sent alone and decided (no governance yet: nothing emitted); its
    children come afterwards over the other protocol. Each run is the in-process one: COMPLETE or
    FAIL with the root's job, ``complete: true``, not RUNNING under the first child's name."""
    gateway, transport = started
    assert gateway.http is not None and gateway.grpc is not None
    spans, expected = record_spans(SESSIONS)
    roots = [span for span in spans if span.parent is None or span.parent.is_remote]
    children = [span for span in spans if span not in roots]
    send(HttpSpanExporter(endpoint=f"http://127.0.0.1:{gateway.http.port}/v1/traces"), roots)
    decided(gateway)
    assert transport.events == []
    send(GrpcSpanExporter(endpoint=f"127.0.0.1:{gateway.grpc.port}", insecure=True), children)
    received = transport.wait_for(len(expected))
    decided(gateway)
    assert by_run(transport.events) == by_run(expected)
    assert sorted(event["eventType"] for event in received) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert gateway.core.stats()["late_events"] == 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_request_sent_again_adds_no_event(started: tuple[Gateway, CaptureTransport], protocol: str) -> None:
    """An exporter that lost the answer sends the same request again, after its runs went out."""
    gateway, transport = started
    assert gateway.http is not None and gateway.grpc is not None

    def exporter() -> SpanExporter:
        if protocol == "http":
            return HttpSpanExporter(endpoint=f"http://127.0.0.1:{gateway.http.port}/v1/traces")  # type: ignore[union-attr]
        return GrpcSpanExporter(endpoint=f"127.0.0.1:{gateway.grpc.port}", insecure=True)  # type: ignore[union-attr]

    spans, expected = record_spans(SESSIONS)
    send(exporter(), spans)
    transport.wait_for(len(expected))
    decided(gateway)
    send(exporter(), spans)  # the retry
    decided(gateway)
    send(exporter(), [span for span in spans if span.parent is not None and not span.parent.is_remote])
    decided(gateway)  # and its children alone once more
    gateway.stop()  # every pending trace decided: anything the retries made would be out by now
    assert by_run(transport.events) == by_run(expected)
    assert len(transport.events) == len(expected)
    stats = gateway.core.stats()
    assert stats["late_events"] == 0
    assert stats["duplicate_records"] > 0
