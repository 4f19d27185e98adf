"""Overload and faults in delivery: every governed session is delivered, stored or counted.

Tests check accounting, run by run where the bridge can name the runs, never timing: waits are
bounded and fail with a message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.outbox import Outbox
from aigp_otel_bridge.stages import build
from aigp_otel_bridge.telemetry import RateLimitedLog
from tests.conftest import CaptureTransport
from tests.test_faults import governed_session

SESSIONS_PER_THREAD = 400
THREADS = 3


class SlowTransport(CaptureTransport):
    """Takes every event, slowly: delivery falls behind a flood by construction."""

    kind = "slow"

    def __init__(self, delay_s: float = 0.002, fail: bool = False) -> None:
        super().__init__(delay_s=delay_s)
        self.fail = fail

    def emit(self, event: Any) -> None:
        if self.fail:
            with self._lock:
                self.attempts += 1
            raise ConnectionError("lineage backend unavailable")
        super().emit(event)


def flood(processor: AIGPLineageSpanProcessor, provider: TracerProvider) -> list[str]:
    """Several threads make governed sessions as fast as they can; returns every run id made."""
    made: list[list[str]] = [[] for _ in range(THREADS)]

    def produce(slot: int) -> None:
        tracer = provider.get_tracer("flood")
        made[slot].extend(governed_session(tracer, index) for index in range(SESSIONS_PER_THREAD))

    threads = [threading.Thread(target=produce, args=(slot,)) for slot in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
        assert not thread.is_alive(), "a producer never finished: the application was blocked"
    return [run_id for ids in made for run_id in ids]


def small_bridge(
    transport: CaptureTransport, **settings: Any
) -> tuple[TracerProvider, AIGPLineageSpanProcessor]:
    """The bridge with small bounds, so that a short flood overflows them."""
    provider = TracerProvider(resource=Resource.create({"service.name": "flood"}))
    settings = {"max_intake_size": 64, "max_queue_size": 16, "retry_max_backoff_s": 0.05, **settings}
    processor = AIGPLineageSpanProcessor(
        client=OpenLineageClient(transport=transport), job_namespace="flood", **settings
    )
    provider.add_span_processor(processor)
    return provider, processor


@pytest.mark.parametrize("backend_up", [True, False], ids=["slow-backend", "backend-down"])
def test_flood_with_an_outbox_loses_no_session(tmp_path: Path, backend_up: bool) -> None:
    transport = SlowTransport(fail=not backend_up)
    provider, processor = small_bridge(transport, outbox_dir=str(tmp_path))
    produced = flood(processor, provider)
    assert processor.force_flush(120_000), "every run must be delivered or durably stored"
    delivered = {e["run"]["runId"] for e in transport.events}
    stored_rows = Outbox(tmp_path).take_due(limit=100_000, now=float("inf"))
    stored = {json.loads(row.payload)["run"]["runId"] for row in stored_rows}
    missing = [run_id for run_id in produced if run_id not in delivered and run_id not in stored]
    assert not missing, f"{len(missing)} of {len(produced)} sessions neither delivered nor stored"
    for row in stored_rows:  # stored with all their records: one per session here
        facet = json.loads(row.payload)["run"]["facets"]["aigp_governance"]
        assert facet["complete"] is True and facet["eventCount"] == 1
    stats = processor.stats()
    assert stats["runs_dropped"] == 0
    assert stats["runs_decided"] == len(produced)
    if not backend_up:
        assert stats["runs_stored"] == len(produced) and not delivered
    provider.shutdown()


class GateTransport(CaptureTransport):
    """Holds every emit until the test opens the gate: delivery is behind the whole flood."""

    kind = "gate"

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def emit(self, event: Any) -> None:
        self.gate.wait(120)
        super().emit(event)


def test_flood_without_an_outbox_counts_every_session_it_sheds() -> None:
    transport = GateTransport()
    provider, processor = small_bridge(transport)
    produced = flood(processor, provider)
    deadline = time.monotonic() + 120
    while processor.stats()["runs_decided"] < len(produced) and time.monotonic() < deadline:
        time.sleep(0.01)  # the correlation worker gathers; every run must be decided while held
    assert not processor.force_flush(200), "delivery is held"  # its token passed every hand-over
    transport.gate.set()
    processor.shutdown()
    delivered = [e["run"]["runId"] for e in transport.events]
    assert len(delivered) == len(set(delivered)) and set(delivered) <= set(produced)
    stats = processor.stats()
    assert stats["runs_decided"] == len(produced)
    assert len(delivered) + stats["runs_dropped"] == len(produced)
    assert stats["runs_dropped"] >= len(produced) - 17, "a 16-run queue behind a held emit sheds the rest"
    for event in transport.events:  # a delivered run has all its records or says it does not
        facet = event["run"]["facets"]["aigp_governance"]
        assert facet["eventCount"] == 1 or facet["complete"] is False


def test_a_root_note_keeps_bounded_strings_of_a_huge_attribute() -> None:
    seen: list[Any] = []

    def job_name(root: Any) -> str:
        seen.append(dict(root.attributes))
        return "job"

    transport = CaptureTransport()
    provider, processor = small_bridge(transport, job_name=job_name, max_string_length=100)
    tracer = provider.get_tracer("big")
    with tracer.start_as_current_span("invoke", attributes={"payload": "x" * 100_000, "n": 3}) as root:
        root.add_event("aigp.tool.invoked", {"aigp.event.id": "e1", "aigp.tools.names": ["y" * 5000]})
    assert processor.force_flush(10_000)
    (attributes,) = seen
    assert len(attributes["payload"]) == 1025 and attributes["n"] == 3
    (event,) = transport.events
    assert event["job"]["name"] == "job"
    assert processor.stats()["invalid_values"] == 1  # the over-long tool name is still refused
    provider.shutdown()


@pytest.fixture
def fresh_job_name_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job_name log is rate-limited per process: start each of these tests with none sent."""
    fresh = RateLimitedLog(logging.getLogger("aigp_otel_bridge.stages.build"))
    monkeypatch.setattr(build, "_job_name_log", fresh)


@pytest.mark.usefixtures("fresh_job_name_log")
def test_a_raising_job_name_callable_logs_once_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def job_name(root: Any) -> str:
        raise RuntimeError("no name " + "z" * 100_000)

    transport = CaptureTransport()
    provider, processor = small_bridge(transport, job_name=job_name, max_queue_size=100)
    tracer = provider.get_tracer("names")
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge"):
        for index in range(50):
            governed_session(tracer, index)
        assert processor.force_flush(30_000)
    lines = [r for r in caplog.records if "job_name" in r.getMessage()]
    assert len(lines) == 1 and not lines[0].exc_info
    assert len(lines[0].getMessage()) < 2_000
    assert len(transport.events) == 50 and all(e["job"]["name"] != "" for e in transport.events)
    provider.shutdown()


@pytest.mark.usefixtures("fresh_job_name_log")
def test_a_huge_job_name_is_not_used_nor_logged_whole(caplog: pytest.LogCaptureFixture) -> None:
    transport = CaptureTransport()
    provider, processor = small_bridge(transport, job_name=lambda root: "n" * 1_000_000, max_queue_size=100)
    tracer = provider.get_tracer("names")
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge"):
        for index in range(20):
            with tracer.start_as_current_span("s" * 5000) as root:
                root.add_event("aigp.tool.invoked", {"aigp.event.id": f"e{index}"})
        assert processor.force_flush(30_000)
    assert sum(len(r.getMessage()) for r in caplog.records) < 5_000
    assert all(len(e["job"]["name"]) <= 1024 for e in transport.events) and len(transport.events) == 20
    provider.shutdown()


def test_the_correlation_worker_survives_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from aigp_otel_bridge.stages import extract as records

    real = records.records_from_note
    calls = {"n": 0}

    def once_broken(note: Any, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("a bug, once")
        return real(note, *args)

    monkeypatch.setattr(records, "records_from_note", once_broken)
    transport = CaptureTransport()
    provider, processor = small_bridge(transport, max_queue_size=100)
    tracer = provider.get_tracer("odd")
    governed_session(tracer, 0)  # its child's note meets the bug: that session has no record
    later = [governed_session(tracer, index) for index in range(1, 4)]
    assert processor.force_flush(10_000)
    assert [e["run"]["runId"] for e in transport.events] == later
    provider.shutdown()
