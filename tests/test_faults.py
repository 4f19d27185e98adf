"""Fault tests: a run handed to the bridge is delivered, durably stored, or visibly counted.

The lineage backend is a real HTTP endpoint on loopback (``tests/backend.py``), reached through
the OpenLineage client's own ``http`` transport. Waits are bounded and fail with a message.
"""

from __future__ import annotations

import json
import logging
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
from aigp_otel_bridge.outbox import LEASE_S, Outbox
from aigp_otel_bridge.stages import deliver
from tests.backend import LineageBackend
from tests.conftest import CaptureTransport


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
from aigp_otel_bridge.stages import deliver
from tests.backend import LineageBackend
from tests.conftest import CaptureTransport
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

    runs = len(report["run_ids"])
    assert Outbox(outbox_dir).depth() == runs, "each run is stored once"

    backend.up()
    provider, processor = bridge(backend, outbox_dir)  # a new process would do the same
    # a row the producer was replaying when it was killed is leased until LEASE_S runs out
    backend.wait_for_runs(set(report["run_ids"]), timeout_s=LEASE_S + 30)

    def all_replayed() -> bool:
        return bool(processor.stats()["runs_replayed"] == runs)

    # a run may reach the backend while the client still sees its emit fail (an answer late on a
    # loaded machine): that row stays and is sent again; a row is counted once it is deleted
    wait_until(all_replayed, "every stored run replayed", timeout_s=LEASE_S + 30)
    assert Outbox(outbox_dir).depth() == 0
    assert processor.force_flush(10_000)
    provider.shutdown()


class GatedTransport(CaptureTransport):
    """Takes every event, each only once the test opens the gate."""

    kind = "gated"

    def __init__(self, fail_times: int = 0) -> None:
        super().__init__(fail_times=fail_times)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def emit(self, event: Any) -> None:
        self.entered.set()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        super().emit(event)


def transport_bridge(
    transport: CaptureTransport, outbox_dir: Path, **settings: Any
) -> tuple[TracerProvider, AIGPLineageSpanProcessor]:
    provider = TracerProvider()
    processor = AIGPLineageSpanProcessor(
        client=OpenLineageClient(transport=transport), job_namespace="faults",  # type: ignore[arg-type]
        outbox_dir=str(outbox_dir), retry_max_backoff_s=0.4, **settings,
    )
    provider.add_span_processor(processor)
    return provider, processor


def one_stored_run(outbox_dir: Path) -> str:
    """An outbox holding one run that a down backend did not take, due now; returns its run id."""
    down = CaptureTransport(fail_times=1_000_000)
    provider, _ = transport_bridge(down, outbox_dir)
    run_id = governed_session(provider.get_tracer("down"), 0)
    provider.shutdown()
    Outbox(outbox_dir).release_all()
    assert Outbox(outbox_dir).depth() == 1
    return run_id


def test_a_clean_shutdown_waits_for_the_stored_run_it_is_replaying_and_deletes_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliver, "STUCK_EMIT_S", 60.0)  # this replay is slow, not hung
    run_id = one_stored_run(tmp_path)
    gated = GatedTransport()
    provider, processor = transport_bridge(gated, tmp_path, shutdown_timeout_s=60.0)
    assert gated.entered.wait(30), "the stored run was never replayed"
    closer = threading.Thread(target=provider.shutdown)
    closer.start()
    closer.join(0.2)  # a shutdown that does not wait for the replay has returned by now
    returned_early = not closer.is_alive()
    gated.gate.set()
    closer.join(60)
    assert not returned_early, "shutdown returned while a stored run was being replayed"
    assert [event["run"]["runId"] for event in gated.events] == [run_id]
    assert Outbox(tmp_path).depth() == 0, "a clean shutdown left a row it delivered"
    assert processor.stats()["runs_replayed"] == 1


def test_a_clean_shutdown_hands_on_the_stored_run_it_could_not_finish(tmp_path: Path) -> None:
    run_id = one_stored_run(tmp_path)
    hung = GatedTransport()
    provider, _ = transport_bridge(hung, tmp_path, shutdown_timeout_s=20.0)
    try:
        assert hung.entered.wait(30), "the stored run was never replayed"
        provider.shutdown()  # gives up on the hung emit
        status = Outbox(tmp_path).status()
        assert status.pending == 1
        assert status.next_attempt_in_s == 0, "the next process must not wait for this process's lease"
    finally:
        hung.gate.set()
    # the hung emit went through after all: its row is deleted (the next process may send it again)
    wait_until(lambda: Outbox(tmp_path).depth() == 0, "the late delivery deleted its row")
    assert [event["run"]["runId"] for event in hung.events] == [run_id]


class StallOnStoringLog(logging.Handler):
    """Holds the delivery thread where it logs that it stores a failed run, until ``closer`` ends
    (at most ``hold_s``): a shutdown that no longer waits for that run ends meanwhile."""

    def __init__(self, hold_s: float) -> None:
        super().__init__()
        self.hold_s = hold_s
        self.closer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if "storing the run" in record.getMessage() and self.closer is not None:
            self.closer.join(self.hold_s)


def test_a_run_whose_emit_fails_while_shutdown_waits_for_it_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliver, "STUCK_EMIT_S", 60.0)  # this emit is slow, not hung
    failing = GatedTransport(fail_times=1)
    provider, processor = transport_bridge(failing, tmp_path, shutdown_timeout_s=60.0)
    stall = StallOnStoringLog(hold_s=1.0)
    logging.getLogger("aigp_otel_bridge").addHandler(stall)
    try:
        run_id = governed_session(provider.get_tracer("late"), 0)
        assert failing.entered.wait(30), "the run never reached emit"
        stall.closer = threading.Thread(target=provider.shutdown)
        stall.closer.start()
        failing.gate.set()
        stall.closer.join(60)
    finally:
        logging.getLogger("aigp_otel_bridge").removeHandler(stall)
    assert processor.stats()["runs_dropped"] == 0, "the failed run was dropped instead of stored"
    rows = Outbox(tmp_path).take_due(limit=10, now=float("inf"))
    assert [json.loads(row.payload)["run"]["runId"] for row in rows] == [run_id]


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
