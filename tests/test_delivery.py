"""Delivery: retries, a slow, failing or dead lineage backend, the queue bound, shutdown; the
application never waits.

Tests that run with and without an outbox (``durable``) compare the two modes; what only the
outbox does (storage, replay, its files) is tested in tests/test_outbox.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from openlineage.client.serde import Serde
from openlineage.client.transport.transport import Config, Transport
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.outbox import Outbox
from aigp_otel_bridge.stages.deliver import backoff_s
from tests.backend import LineageBackend
from tests.conftest import CaptureTransport
from tests.schemas import validate_run_event
from tests.test_faults import governed_session as governed_child_session
from tests.test_faults import wait_until
from tests.test_overload import small_bridge

AIGP_EVENT = "aigp.inject.success"


class GatedTransport(CaptureTransport):
    """Blocks every emit until the test opens the gate; notes which thread emitted."""

    kind = "gated"

    def __init__(self, gate_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.threads: set[int] = set()
        self._gate_timeout_s = gate_timeout_s

    def emit(self, event: Any) -> None:
        with self._lock:
            self.threads.add(threading.get_ident())
        self.started.set()
        self.gate.wait(self._gate_timeout_s)
        with self._lock:
            self.events.append(json.loads(Serde.to_json(event)))
        self.finished.set()



def governed_session(tracer: Any, name: str = "invoke") -> str:
    """One governed trace; returns its trace id as 32 hex."""
    with tracer.start_as_current_span(name) as root:
        root.add_event(
            AIGP_EVENT,
            {
                "aigp.event.type": "INJECT_SUCCESS",
                "aigp.policy.name": "policy.trading-limits",
                "aigp.policy.version": 4,
            },
        )
    return f"{root.get_span_context().trace_id:032x}"


def trace_ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["run"]["facets"]["aigp_governance"]["traceId"] for e in events]


def test_failing_backend_is_retried_until_the_event_arrives(make_bridge: Any) -> None:
    failing = CaptureTransport(fail_times=3)
    provider, processor = make_bridge(transport_=failing, retry_max_backoff_s=0.05)
    trace_id = governed_session(provider.get_tracer("test"))
    (event,) = failing.wait_for(1, timeout_s=10)
    validate_run_event(event)
    assert trace_ids([event]) == [trace_id]
    assert failing.attempts == 4
    stats = processor.stats()
    assert stats["emit_failures"] == 3
    assert stats["runs_emitted"] == 1
    assert stats["runs_dropped"] == 0
    assert processor.force_flush(timeout_millis=5_000) is True


def test_retried_event_is_identical_to_a_first_time_delivery(make_bridge: Any) -> None:
    # OpenLineageClient.emit mutates the event it is given: a retry must not carry an earlier attempt's
    failing = CaptureTransport(fail_times=2)
    provider, _ = make_bridge(transport_=failing, retry_max_backoff_s=0.05)
    governed_session(provider.get_tracer("test"))
    (event,) = failing.wait_for(1, timeout_s=10)
    validate_run_event(event)
    tags = event["run"]["facets"].get("tags")
    if tags is not None:
        keys = [tag["key"] for tag in tags["tags"]]
        assert len(keys) == len(set(keys)), f"tags duplicated by retries: {keys}"


def test_span_end_does_not_wait_for_a_slow_backend(make_bridge: Any) -> None:
    slow = GatedTransport()
    provider, _ = make_bridge(transport_=slow)
    governed_session(provider.get_tracer("test"))
    # The emit cannot finish before the gate opens, and only this thread opens it: had the span's end
    # waited for delivery, the emit would have run out its gate timeout and finished by now.
    assert not slow.finished.is_set(), "span end waited for the lineage backend"
    slow.gate.set()
    (event,) = slow.wait_for(1)
    validate_run_event(event)
    assert threading.get_ident() not in slow.threads, "emit ran on the application's thread"


def test_ingest_does_not_wait_for_a_slow_backend(make_bridge: Any) -> None:
    slow = GatedTransport()
    provider, processor = make_bridge(transport_=slow)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke") as root:
        processor.ingest_aigp_event(
            {"trace_id": f"{root.get_span_context().trace_id:032x}", "event_type": "INJECT_SUCCESS"}
        )
    assert not slow.finished.is_set()
    processor.ingest_aigp_event({"trace_id": f"{root.get_span_context().trace_id:032x}", "event_type": "X"})
    assert not slow.finished.is_set()
    slow.gate.set()
    slow.wait_for(1)


def test_force_flush_times_out_while_the_backend_blocks(make_bridge: Any) -> None:
    blocked = GatedTransport()
    provider, processor = make_bridge(transport_=blocked)
    governed_session(provider.get_tracer("test"))
    assert processor.force_flush(timeout_millis=50) is False
    assert not blocked.finished.is_set()
    blocked.gate.set()
    assert processor.force_flush(timeout_millis=10_000) is True
    assert len(blocked.events) == 1


def test_full_delivery_queue_drops_the_oldest_runs_and_counts_them(make_bridge: Any) -> None:
    blocked = GatedTransport()
    provider, processor = make_bridge(transport_=blocked, max_queue_size=2)
    tracer = provider.get_tracer("test")
    first = governed_session(tracer, "first")
    assert blocked.started.wait(10), "the first run never reached the backend"
    rest = [governed_session(tracer, f"run-{n}") for n in range(4)]
    # the first run is inside emit; two fit the queue, so the two oldest queued runs are dropped
    wait_until(lambda: processor.stats()["runs_dropped"] == 2, "two dropped runs")
    assert processor.stats()["runs_decided"] == 5
    blocked.gate.set()
    events = blocked.wait_for(3)
    processor.force_flush(timeout_millis=10_000)
    assert trace_ids(blocked.events) == [first, rest[2], rest[3]]
    assert len(events) == 3
    assert processor.stats()["runs_dropped"] == 2
    assert processor.stats()["runs_emitted"] == 3


class BrokenTransport(Transport):
    kind = "broken"
    config_class = Config

    def __init__(self) -> None:
        self.attempts = 0

    def emit(self, event: Any) -> None:
        self.attempts += 1
        raise RuntimeError("lineage backend is down for good")


def test_backend_that_always_fails_never_reaches_the_application(make_bridge: Any) -> None:
    broken = BrokenTransport()
    provider, processor = make_bridge(transport_=broken, retry_max_backoff_s=0.05)
    tracer = provider.get_tracer("test")
    governed_session(tracer)  # would raise here if the bridge leaked the transport's error
    wait_until(lambda: broken.attempts >= 2, "at least one retry")
    assert processor.force_flush(timeout_millis=100) is False
    processor.shutdown()
    stats = processor.stats()
    assert stats["runs_dropped"] == 1
    assert stats["runs_emitted"] == 0
    assert stats["emit_failures"] == broken.attempts
    processor.shutdown()  # again: harmless


# ---- a lineage backend on loopback: down, failing, slow ----


@pytest.fixture
def backend() -> Iterator[LineageBackend]:
    server = LineageBackend(slow_s=1.5)
    yield server
    server.down()


def bridge(
    backend: LineageBackend, outbox_dir: Path | None, **settings: Any
) -> tuple[TracerProvider, AIGPLineageSpanProcessor]:
    provider = TracerProvider(resource=Resource.create({"aigp.agent.id": "agent.faulty"}))
    processor = AIGPLineageSpanProcessor(
        client=OpenLineageClient(config=backend.client_config()),
        job_namespace="faults",
        outbox_dir=str(outbox_dir) if outbox_dir else None,
        retry_max_backoff_s=0.4,
        **settings,
    )
    provider.add_span_processor(processor)
    return provider, processor


@pytest.mark.parametrize("durable", [True, False], ids=["outbox", "memory"])
def test_backend_down_for_the_whole_run_then_up_every_run_arrives(
    backend: LineageBackend, tmp_path: Path, durable: bool
) -> None:
    provider, processor = bridge(backend, tmp_path / "outbox" if durable else None)
    tracer = provider.get_tracer("faults")
    run_ids = {governed_child_session(tracer, i) for i in range(12)}
    if durable:
        assert processor.force_flush(20_000), "runs must be durably stored while the backend is down"
        assert processor.stats()["runs_stored"] == 12
        assert Outbox(tmp_path / "outbox").status().pending == 12
    else:
        assert not processor.force_flush(500), "nothing can be delivered while the backend is down"
        wait_until(lambda: processor.stats()["emit_failures"] >= 12, "every run was tried once")
    backend.up()
    backend.wait_for_runs(run_ids)
    assert processor.force_flush(20_000)
    if durable:  # the backend has them; the bridge counts each once its row is deleted
        wait_until(lambda: processor.stats()["runs_replayed"] == 12, "every stored run counted as replayed")
        wait_until(lambda: Outbox(tmp_path / "outbox").depth() == 0, "the outbox emptied")
    stats = processor.stats()
    assert stats["runs_dropped"] == 0 and stats["emit_failures"] >= 12
    provider.shutdown()


def test_errors_and_timeouts_for_a_while_then_healthy_every_run_arrives(
    backend: LineageBackend, tmp_path: Path
) -> None:
    backend.script.extend(["503", "503", "500", "slow", "500", "503", "slow", "500"])
    backend.up()
    provider, processor = bridge(backend, tmp_path / "outbox")
    tracer = provider.get_tracer("faults")
    run_ids = {governed_child_session(tracer, i) for i in range(8)}
    backend.wait_for_runs(run_ids)
    assert processor.force_flush(20_000)
    assert processor.stats()["emit_failures"] >= 8
    assert len(backend.received) >= len(run_ids)  # at least once; a retried run may repeat
    provider.shutdown()


def test_shutdown_under_load_finishes_in_time_and_loses_nothing_flushed(
    backend: LineageBackend, tmp_path: Path
) -> None:
    backend.up()
    provider, processor = bridge(backend, tmp_path / "outbox", shutdown_timeout_s=10.0)
    tracer = provider.get_tracer("load")
    ended: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        for index in range(300):
            if stop.is_set():
                return
            ended.append(governed_child_session(tracer, index))

    producers = [threading.Thread(target=produce) for _ in range(4)]
    for thread in producers:
        thread.start()
    wait_until(lambda: len(ended) >= 40, "40 sessions ended while the producers go on")
    flushed = set(ended)
    assert processor.force_flush(30_000)

    closer = threading.Thread(target=provider.shutdown)
    closer.start()
    closer.join(timeout=40)
    stop.set()
    for thread in producers:
        thread.join(timeout=30)
    assert not closer.is_alive(), "shutdown did not finish within its timeout"
    stored = {json.loads(row.payload)["run"]["runId"] for row in Outbox(tmp_path / "outbox").take_due(10_000)}
    missing = flushed - backend.run_ids() - stored
    assert not missing, f"{len(missing)} flushed runs were neither delivered nor stored"


# ---- retries, a hung emit at shutdown, an odd error ----


class HungTransport(CaptureTransport):
    """The first emit never returns (until the test ends); later ones wait behind it."""

    kind = "hung"

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def emit(self, event: Any) -> None:
        self.entered.set()
        self.release.wait(60)
        super().emit(event)


@pytest.mark.parametrize("durable", [True, False], ids=["outbox", "memory"])
def test_a_run_inside_a_hung_emit_at_shutdown_is_stored_or_counted(tmp_path: Path, durable: bool) -> None:
    hung = HungTransport()
    provider, processor = small_bridge(
        hung, outbox_dir=str(tmp_path) if durable else None, shutdown_timeout_s=3.0
    )
    tracer = provider.get_tracer("hung")
    first = governed_child_session(tracer, 0)
    assert hung.entered.wait(10), "the first run never reached emit"
    rest = [governed_child_session(tracer, index) for index in range(1, 6)]
    processor.shutdown()
    stats = processor.stats()
    try:
        if durable:
            rows = Outbox(tmp_path).take_due(limit=100, now=float("inf"))
            stored = {json.loads(row.payload)["run"]["runId"] for row in rows}
            assert {first, *rest} <= stored, "the run in flight and the queued ones must be stored"
            assert stats["runs_dropped"] == 0
        else:
            assert stats["runs_dropped"] == 6 and stats["runs_emitted"] == 0
    finally:
        hung.release.set()


@pytest.mark.parametrize("timeout_s", [1.0, 2.0])
def test_with_an_outbox_a_hung_emit_is_stored_whatever_the_shutdown_timeout(
    tmp_path: Path, timeout_s: float
) -> None:
    """Shutdown keeps back part of its timeout to store: even when the timeout is shorter than
    the wait for a hung emit, the run inside it and those queued behind it are stored."""
    hung = HungTransport()
    provider, processor = small_bridge(hung, outbox_dir=str(tmp_path), shutdown_timeout_s=timeout_s)
    tracer = provider.get_tracer("hung")
    first = governed_child_session(tracer, 0)
    assert hung.entered.wait(10), "the first run never reached emit"
    rest = [governed_child_session(tracer, index) for index in range(1, 4)]
    try:
        processor.shutdown()
        stats = processor.stats()
        rows = Outbox(tmp_path).take_due(limit=100, now=float("inf"))
        stored = {json.loads(row.payload)["run"]["runId"] for row in rows}
        assert {first, *rest} <= stored
        assert (stats["runs_dropped"], stats["runs_stored"]) == (0, len(rows))
    finally:
        hung.release.set()


def test_backoff_never_overflows() -> None:
    for attempts in (1, 2, 1_024, 1_025, 1_500, 10**9):
        assert 0 < backoff_s(attempts, 30.0) <= 30.0


def test_1500_consecutive_failures_then_recovery_delivers() -> None:
    failing = CaptureTransport(fail_times=1_500)
    provider, processor = small_bridge(failing, retry_max_backoff_s=0.001)
    run_id = governed_child_session(provider.get_tracer("retry"), 0)
    (event,) = failing.wait_for(1, timeout_s=120)
    assert event["run"]["runId"] == run_id
    stats = processor.stats()
    assert stats["emit_failures"] == 1_500 and stats["runs_emitted"] == 1 and stats["runs_dropped"] == 0
    provider.shutdown()


class ExitingTransport(CaptureTransport):
    """Raises what no transport should (``SystemExit``) once, then works."""

    kind = "exiting"

    def emit(self, event: Any) -> None:
        with self._lock:
            self.attempts += 1
            first = self.attempts == 1
        if first:
            raise SystemExit("a transport that exits")
        self.events.append(json.loads(Serde.to_json(event)))


def test_the_delivery_thread_survives_an_unexpected_error() -> None:
    transport = ExitingTransport()
    provider, processor = small_bridge(transport)
    tracer = provider.get_tracer("odd")
    run_ids = [governed_child_session(tracer, index) for index in range(3)]
    wait_until(lambda: len(transport.events) == 3, "every run delivered after the odd error")
    assert sorted(e["run"]["runId"] for e in transport.events) == sorted(run_ids)
    assert processor.stats()["emit_failures"] == 1
    provider.shutdown()
