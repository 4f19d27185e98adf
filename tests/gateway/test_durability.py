"""Acknowledged means kept (contract section 10): real OTLP exporters, a real slow lineage backend
on loopback, the gateway started as a user starts it. After each fault, every session the gateway
answered 200 for is in the backend or the outbox: a full delivery queue refuses instead of
dropping, SIGTERM stores what a slow backend did not take, and a SIGKILL loses nothing once the
next start has replayed the journal."""

from __future__ import annotations

import json
import re
import threading
from importlib.metadata import version
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aigp_otel_bridge.outbox import Outbox
from aigp_otel_bridge.propagated_links import run_id_for_trace
from tests.backend import LineageBackend
from tests.gateway.harness import GatewayProcess
from tests.governed_spans import instrumentor, light_session, resource
from tests.waiting import wait_until

pytest.importorskip("aigp")

Batch = tuple[list[ReadableSpan], set[str]]
"""One export request's spans and the run ids of the sessions in it."""


def sessions(count: int, per_request: int) -> list[Batch]:
    """``count`` light governed sessions (root and governed child, sent together), in requests."""
    aigp = instrumentor()
    provider = TracerProvider(resource=resource(aigp))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.durability")
    for _ in range(count):
        light_session(tracer, aigp)
    spans = list(memory.get_finished_spans())
    batches = []
    for start in range(0, len(spans), 2 * per_request):
        chunk = spans[start:start + 2 * per_request]
        trace_ids = {f"{span.context.trace_id:032x}" for span in chunk if span.parent is None}
        batches.append((chunk, {run_id_for_trace(trace_id) for trace_id in trace_ids}))
    return batches


HTTP_EXPORTER_RETRIES_429 = tuple(
    int(part) for part in version("opentelemetry-exporter-otlp-proto-http").split(".")[:2]
) >= (1, 45)
"""The OTLP/HTTP exporter retries a refused request (429) from 1.45 on; before (the floors run) it
gives the batch up on its side, which a test of refusals would count as the sender's failure."""


def exporters(gateway: GatewayProcess, timeout_s: int, *, refused: bool = False) -> list[SpanExporter]:
    """An OTLP/gRPC exporter, and an OTLP/HTTP one unless requests will be ``refused`` and this
    version of it does not retry a refusal."""
    grpc_exporter = GrpcSpanExporter(endpoint=gateway.grpc_endpoint, insecure=True, timeout=timeout_s)
    if refused and not HTTP_EXPORTER_RETRIES_429:
        return [grpc_exporter]
    return [HttpSpanExporter(endpoint=gateway.http_url, timeout=timeout_s), grpc_exporter]


def send_concurrently(
    senders: list[SpanExporter], batches: list[Batch], acknowledged: set[str],
    stop: threading.Event | None = None,
) -> list[SpanExportResult]:
    """Each exporter sends its share of the batches, one request after another, on its own
    thread; the run ids of every acknowledged request go to ``acknowledged``."""
    results: list[SpanExportResult] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        exporter = senders[index]
        try:
            for spans, run_ids in batches[index::len(senders)]:
                if stop is not None and stop.is_set():
                    return
                result = exporter.export(spans)
                with lock:
                    results.append(result)
                    if result is SpanExportResult.SUCCESS:
                        acknowledged.update(run_ids)
        finally:
            exporter.shutdown()

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(senders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a sender did not finish"
    return results


SUMMARY = re.compile(
    r"stopped; (\d+) runs emitted, (\d+) stored in the outbox, (\d+) dropped \(of (\d+) decided\);"
    r" (\d+) replayed from the outbox; (\d+) requests refused"
)


def summary(gateway: GatewayProcess) -> dict[str, int]:
    found = SUMMARY.search("".join(gateway.output))
    assert found is not None, "".join(gateway.output)
    names = ("delivered", "stored", "dropped", "decided", "replayed", "refused")
    return dict(zip(names, map(int, found.groups()), strict=True))


def stored_run_ids(outbox: Path) -> list[str]:
    rows = Outbox(outbox).take_due(limit=1_000_000, now=float("inf"))
    return [json.loads(row.payload)["run"]["runId"] for row in rows]


def test_a_full_delivery_queue_refuses_and_drops_nothing(tmp_path: Path) -> None:
    """A delivery queue of 16 runs behind a backend that takes ~20 runs/s, 100 sessions from the
    OTLP exporters: requests are refused (and retried by the exporters), no run is dropped."""
    backend = LineageBackend().up()
    backend.delay_s = 0.05
    env = {"AIGP_BRIDGE_MAX_QUEUE_SIZE": "16", "AIGP_BRIDGE_ROOT_WAIT_S": "0.2"}
    gateway = GatewayProcess(tmp_path, env=env, transport_env={"OPENLINEAGE_URL": backend.url}).wait_ready()
    try:
        batches = sessions(100, per_request=4)
        acknowledged: set[str] = set()
        results = send_concurrently(exporters(gateway, timeout_s=60, refused=True), batches, acknowledged)
        assert results.count(SpanExportResult.SUCCESS) == len(batches)
        backend.wait_for_runs(acknowledged, timeout_s=60)
    finally:
        assert gateway.stop() == 0
        backend.down()
    counts = summary(gateway)
    assert counts["dropped"] == 0 and counts["refused"] > 0, counts
    assert counts["delivered"] == counts["decided"] == len(acknowledged) == 100


def test_sigterm_with_a_slow_backend_stores_what_it_could_not_deliver(tmp_path: Path) -> None:
    """A backend that takes ~20 runs/s, 300 acknowledged sessions, SIGTERM with a 2 s shutdown
    timeout: what was not delivered is stored, and the summary adds up and matches the outbox."""
    backend = LineageBackend().up()
    backend.delay_s = 0.05
    outbox = tmp_path / "outbox"
    env = {
        "AIGP_BRIDGE_OUTBOX_DIR": str(outbox), "AIGP_BRIDGE_SHUTDOWN_TIMEOUT_S": "2",
        "AIGP_BRIDGE_ROOT_WAIT_S": "0.2",
    }
    gateway = GatewayProcess(tmp_path, env=env, transport_env={"OPENLINEAGE_URL": backend.url}).wait_ready()
    try:
        acknowledged: set[str] = set()
        results = send_concurrently(exporters(gateway, timeout_s=30), sessions(300, 25), acknowledged)
        assert results.count(SpanExportResult.SUCCESS) == len(results)
    finally:
        assert gateway.stop() == 0
        backend.down()
    counts = summary(gateway)
    stored = stored_run_ids(outbox)
    assert counts["dropped"] == 0, counts
    assert counts["delivered"] + counts["stored"] == counts["decided"] == 300, counts
    assert counts["stored"] > 0, "the backend was fast enough to take everything: nothing was tested"
    assert len(stored) == counts["stored"] - counts["replayed"]
    missing = acknowledged - backend.run_ids() - set(stored)
    assert not missing, f"{len(missing)} acknowledged sessions neither delivered nor stored"
    assert Outbox(outbox).journal_rows() == []  # every run settled: its journal rows compacted


def test_sigkill_mid_load_with_an_outbox_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Two exporters send while the backend takes ~5 runs/s; SIGKILL once 150 sessions were
    acknowledged. The next start replays the journal: every acknowledged session reaches the
    backend as a COMPLETE run (its root had arrived)."""
    backend = LineageBackend().up()
    backend.delay_s = 0.2
    outbox = tmp_path / "outbox"
    env = {"AIGP_BRIDGE_OUTBOX_DIR": str(outbox), "AIGP_BRIDGE_ROOT_WAIT_S": "0.2"}
    transport = {"OPENLINEAGE_URL": backend.url}
    gateway = GatewayProcess(tmp_path, env=env, transport_env=transport).wait_ready()
    acknowledged: set[str] = set()
    stop = threading.Event()
    sending = threading.Thread(
        target=send_concurrently,
        args=(exporters(gateway, timeout_s=5), sessions(600, per_request=10), acknowledged, stop),
    )
    try:
        sending.start()
        wait_until(lambda: len(acknowledged) >= 150, lambda: f"{len(acknowledged)} sessions acknowledged")
        gateway.kill()
        killed_at = set(acknowledged)
        stop.set()
        sending.join(120)
        delivered_before = backend.run_ids()
        assert killed_at - delivered_before, "the backend took everything before the kill: nothing was tested"
        backend.delay_s = 0.0
        again = GatewayProcess(tmp_path, env=env, transport_env=transport).wait_ready()
        try:
            backend.wait_for_runs(acknowledged, timeout_s=60)
        finally:
            assert again.stop() == 0
    finally:
        stop.set()
        gateway.kill()
        backend.down()
    states = {
        event["run"]["runId"]: event["eventType"] for event in backend.received
        if event["run"]["runId"] in acknowledged and event["eventType"] != "RUNNING"
    }
    assert set(states) == acknowledged and set(states.values()) == {"COMPLETE"}
    assert "replayed" in "".join(again.errors)
    assert Outbox(outbox).journal_rows() == []
