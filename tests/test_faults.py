"""Fault tests: a run handed to the bridge is delivered, durably stored, or visibly counted.

The lineage backend is a real HTTP endpoint on loopback (``tests/backend.py``), reached through
the OpenLineage client's own ``http`` transport. Waits are bounded and fail with a message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.outbox import Outbox
from tests.backend import LineageBackend


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
    run_ids = {governed_session(tracer, i) for i in range(12)}
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
    run_ids = {governed_session(tracer, i) for i in range(8)}
    backend.wait_for_runs(run_ids)
    assert processor.force_flush(20_000)
    assert processor.stats()["emit_failures"] >= 8
    assert len(backend.received) >= len(run_ids)  # at least once; a retried run may repeat
    provider.shutdown()


PRODUCER = """
import json, sys, time, uuid
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import TracerProvider
from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.backend import LineageBackend
from tests.test_faults import governed_session

backend = LineageBackend.__new__(LineageBackend)
backend.port = int(sys.argv[1])
processor = AIGPLineageSpanProcessor(
    client=OpenLineageClient(config=backend.client_config()), job_namespace="faults",
    outbox_dir=sys.argv[2], retry_max_backoff_s=0.4,
)
provider = TracerProvider()
provider.add_span_processor(processor)
run_ids = [governed_session(provider.get_tracer("producer"), i) for i in range(10)]
flushed = processor.force_flush(30_000)
print(json.dumps({"flushed": flushed, "run_ids": run_ids}), flush=True)
time.sleep(600)
"""


def test_process_killed_after_force_flush_a_new_process_delivers_every_run(
    backend: LineageBackend, tmp_path: Path
) -> None:
    outbox_dir = tmp_path / "outbox"
    root = Path(__file__).resolve().parents[1]
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(backend.port), str(outbox_dir)],
        cwd=root, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert producer.stdout is not None
        report = json.loads(producer.stdout.readline())
    finally:
        producer.send_signal(signal.SIGKILL)
        producer.wait(timeout=30)
    assert producer.returncode == -signal.SIGKILL
    assert report["flushed"], "force_flush must return True once every run is durably stored"

    backend.up()
    provider, processor = bridge(backend, outbox_dir)  # a new process would do the same
    backend.wait_for_runs(set(report["run_ids"]))
    assert processor.force_flush(10_000)
    provider.shutdown()
    assert Outbox(outbox_dir).status().pending == 0


class CountingTransport:
    """Remembers only counts, so that it adds no memory of its own per run."""

    kind = "counting"

    def __init__(self) -> None:
        self.events = 0
        self.incomplete_running = 0

    def emit(self, event: Any) -> None:
        self.events += 1
        facet = event.run.facets["aigp_governance"]  # a plain dict
        self.incomplete_running += event.eventType.value == "RUNNING" and facet["complete"] is False

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
    assert stats["traces_evicted"] == 3_480 and stats["intake_dropped"] == 0
    # every evicted run is emitted as incomplete or, if the delivery queue overflowed, counted
    assert counting.events == counting.incomplete_running
    assert counting.events + stats["runs_dropped"] == 3_480
    provider.shutdown()  # the 20 still pending are emitted too, as incomplete
    assert counting.events + processor.stats()["runs_dropped"] == 3_500


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
            ended.append(governed_session(tracer, index))

    producers = [threading.Thread(target=produce) for _ in range(4)]
    for thread in producers:
        thread.start()
    while len(ended) < 40:
        threading.Event().wait(0.01)
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
