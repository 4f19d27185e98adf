"""Delivery: retries, a slow or dead lineage backend, the queue bound; the application never waits."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from openlineage.client.serde import Serde
from openlineage.client.transport.transport import Config, Transport

from tests.conftest import CaptureTransport
from tests.schemas import validate_run_event

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


def wait_until(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)


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
