"""A flood of roots that never end: memory stays flat and every evicted run is emitted; and the
governed session and bounded wait the delivery, outbox and overload tests share.

Delivery faults (a backend down, failing, slow or hung): tests/test_delivery.py; the outbox and
storage faults: tests/test_outbox.py.
"""

from __future__ import annotations

import time
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor


def governed_session(tracer: Any, index: int) -> str:
    """One governed session (root + a child with an AIGP event); returns its run id."""
    with tracer.start_as_current_span("invoke") as root:
        with tracer.start_as_current_span("step") as step:
            step.add_event(
                "aigp.inject.success",
                {"aigp.event.id": str(uuid.uuid4()), "aigp.policy.name": f"policy.p{index % 5}"},
            )
        return str(uuid.UUID(int=root.get_span_context().trace_id))


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s}s: {what}")
        time.sleep(0.02)


class CountingTransport:
    """Remembers only counts, so that it adds no memory of its own per run."""

    kind = "counting"

    def __init__(self) -> None:
        self.events = 0
        self.incomplete_running = 0

    def emit(self, event: Any) -> None:
        self.events += 1
        facet = event.run.facets["aigp_governance"]  # an AIGPGovernanceRunFacet
        self.incomplete_running += event.eventType.value == "RUNNING" and facet.complete is False

    def close(self, timeout: float = -1) -> bool:
        return True


def test_flood_of_never_ending_roots_keeps_memory_flat_and_emits_every_evicted_run() -> None:
    counting = CountingTransport()
    provider = TracerProvider()
    # The flood decides runs faster than one delivery thread hands them on (far faster under
    # tracemalloc on Python 3.13); room for all of them keeps the delivery bound out of this test.
    processor = AIGPLineageSpanProcessor(
        client=OpenLineageClient(transport=counting), job_namespace="flood", max_pending_traces=20,  # type: ignore[arg-type]
        max_queue_size=4_000,
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("flood")

    def flood(count: int) -> None:
        for index in range(count):
            root = tracer.start_span("never-ends")  # never ended, never referenced again
            from opentelemetry import trace

            with trace.use_span(root, end_on_exit=False), tracer.start_as_current_span("step") as step:
                step.add_event("aigp.tool.invoked", {"aigp.event.id": f"e{index}"})
        assert processor.force_flush(30_000)

    tracemalloc.start()
    flood(500)
    warm = tracemalloc.get_traced_memory()[0]
    flood(3_000)
    grown = tracemalloc.get_traced_memory()[0] - warm
    tracemalloc.stop()
    assert grown < 512 * 1024, f"memory grew by {grown} bytes over 3000 more pending traces"
    stats = processor.stats()
    assert stats["traces_evicted"] == 3_480
    # every evicted run is emitted as incomplete or, if the delivery queue overflowed, counted
    assert counting.events == counting.incomplete_running
    assert counting.events + stats["runs_dropped"] == 3_480
    provider.shutdown()  # the 20 still pending are emitted too, as incomplete
    assert counting.events + processor.stats()["runs_dropped"] == 3_500


