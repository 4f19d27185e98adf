"""The stages wired together behind one thread-safe intake.

Front doors (the span processor, the exporter, later the OTLP receiver) call ``put_*`` from
any thread; each call is an append to a deque refused past ``max_intake_size``, nothing more.
One correlation worker owns the ``Extractor`` and the ``Correlator``: it parses, correlates,
aggregates and names runs, then hands them to the ``Deliverer``, whose own thread builds and
emits them. A slow lineage backend therefore never stalls correlation, and neither ever blocks
the application.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from aigp_otel_bridge.aggregate import aggregate
from aigp_otel_bridge.build import name_run
from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.correlate import ClosedRun, Correlator
from aigp_otel_bridge.deliver import Deliverer
from aigp_otel_bridge.note import SpanNote
from aigp_otel_bridge.outbox import Outbox
from aigp_otel_bridge.records import Extractor, GovernanceRecord
from aigp_otel_bridge.telemetry import RateLimitedLog, Stats, register_metrics

_log = logging.getLogger("aigp_otel_bridge")

_START, _SPAN, _EVENT, _FLUSH, _STOP = range(5)


class _FlushToken:
    __slots__ = ("done", "upto_seq")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.upto_seq = 0


class Engine:
    """Intake queue, correlation worker and deliverer of one bridge."""

    def __init__(self, config: BridgeConfig, emit: Callable[[Any], None], stats: Stats | None = None) -> None:
        self.config = config
        self.stats = stats or Stats()
        self.log = RateLimitedLog(_log)
        self._emit = emit
        self._capacity = config.max_intake_size
        self._sweep_s = min(1.0, config.trace_timeout_s / 4)
        self._start_threads()
        # Callbacks hold the engine weakly: a global MeterProvider must not keep it alive.
        weak_self = weakref.ref(self)

        def gauge(read: Callable[[Engine], int]) -> Callable[[], int]:
            return lambda: read(engine) if (engine := weak_self()) is not None else 0

        register_metrics(
            self,
            self.stats,
            {
                "pending_traces": gauge(lambda engine: len(engine._correlator)),
                "queue_depth": gauge(lambda engine: engine._deliverer.depth()),
                "intake_depth": gauge(lambda engine: len(engine._intake)),
                "outbox_depth": gauge(lambda engine: engine._outbox.depth() if engine._outbox else 0),
            },
        )

        def restart_in_child() -> None:
            engine = weak_self()
            if engine is not None:
                engine._restart_in_child()

        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=restart_in_child)

    def _start_threads(self) -> None:
        config = self.config
        self._intake: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._stopped = False
        self._correlator = Correlator(
            trace_timeout_s=config.trace_timeout_s,
            max_pending_traces=config.max_pending_traces,
            max_records_per_trace=config.max_records_per_trace,
            emit_ungoverned=config.emit_ungoverned,
            stats=self.stats,
        )
        self._extractor = Extractor(config.limits)
        self._outbox = (
            Outbox(config.outbox_dir, max_events=config.outbox_max_events) if config.outbox_dir else None
        )
        self._deliverer = Deliverer(
            self._emit,
            producer=config.producer,
            max_queue_size=config.max_queue_size,
            retry_max_backoff_s=config.retry_max_backoff_s,
            stats=self.stats,
            log=self.log,
            outbox=self._outbox,
        )
        self._worker = threading.Thread(target=self._run, name="aigp-bridge-correlate", daemon=True)
        self._worker.start()

    def _restart_in_child(self) -> None:
        """After fork the child has no worker threads: start fresh ones, forget the parent's traces
        (a bridge already shut down stays shut down)."""
        if not self._stopped:
            self._start_threads()

    # ---- front-door API (any thread, never blocks, never raises) ----

    @property
    def stopped(self) -> bool:
        return self._stopped

    def put_root_start(self, trace_id: int, span_id: int, remote_parent: bool) -> None:
        self._put((_START, trace_id, span_id, remote_parent), wake=False)

    def put_span(self, note: SpanNote) -> None:
        self._put((_SPAN, note), wake=note.local_root)

    def put_event(self, key: int | str, record: GovernanceRecord, local_root_id: int | None = None) -> None:
        self._put((_EVENT, key, record, local_root_id), wake=False)

    def offer(self, notes: list[SpanNote]) -> bool:
        """Queue all of ``notes`` or none (False: stopped, or no room), for front doors that can
        refuse a batch before acknowledging it. An empty intake takes any batch, so none is refused
        forever; concurrent offers may overshoot the capacity by their own sizes, never drop."""
        if self._stopped:
            return False
        depth = len(self._intake)
        if depth and depth + len(notes) > self._capacity:
            return False
        self._intake.extend((_SPAN, note) for note in notes)
        self._wake.set()
        return True

    def _put(self, item: tuple[Any, ...], *, wake: bool) -> None:
        if self._stopped:
            return
        if len(self._intake) >= self._capacity:
            self.stats.intake_dropped += 1
            self.log.log(
                logging.ERROR, "intake", "intake queue full (%d); governance data dropped", self._capacity
            )
            self._wake.set()
            return
        self._intake.append(item)
        if wake or len(self._intake) >= self._capacity // 2:
            self._wake.set()

    # ---- flush and shutdown (caller waits, bounded by its timeout) ----

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        if not self._worker.is_alive():
            return self._deliverer.wait_delivered(self._deliverer.last_seq, deadline)
        token = _FlushToken()
        self._intake.append((_FLUSH, token))
        self._wake.set()
        if not token.done.wait(max(0.0, deadline - time.monotonic())):
            return False
        return self._deliverer.wait_delivered(token.upto_seq, deadline)

    def shutdown(self, timeout_s: float) -> bool:
        if self._stopped:
            return True
        deadline = time.monotonic() + timeout_s
        self._intake.append((_STOP,))
        self._stopped = True
        self._wake.set()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        delivered = self._deliverer.shutdown(deadline)
        if self._outbox is not None and delivered:
            self._outbox.close()
        return delivered

    # ---- the correlation worker ----

    def _run(self) -> None:
        while True:
            self._wake.wait(self._sweep_s)
            self._wake.clear()
            try:
                if not self._drain():
                    return
                self._hand_over(self._correlator.expire(time.monotonic()))
            except Exception:  # a bug must not kill the worker
                self.log.log(logging.ERROR, "worker", "correlation worker error", exc_info=True)

    def _drain(self) -> bool:
        """Process everything queued; False once the stop marker is reached."""
        intake = self._intake
        correlator = self._correlator
        extract = self._extractor.span
        while intake:
            item = intake.popleft()
            kind = item[0]
            now = time.monotonic()
            try:
                if kind == _SPAN:
                    note: SpanNote = item[1]
                    self.stats.spans_seen += 1
                    self._hand_over(correlator.span_ended(extract(note), now))
                elif kind == _START:
                    self._hand_over(correlator.root_started(item[1], item[2], item[3], now))
                elif kind == _EVENT:
                    self._hand_over(correlator.event_ingested(item[1], item[2], now, item[3]))
                elif kind == _FLUSH:
                    token: _FlushToken = item[1]
                    token.upto_seq = self._deliverer.last_seq
                    token.done.set()
                elif kind == _STOP:
                    self._hand_over(correlator.drain())
                    return False
            except Exception:
                self.log.log(logging.ERROR, "worker", "could not process governance data", exc_info=True)
        return True

    def _hand_over(self, closed: list[ClosedRun]) -> None:
        """Summarise and name each closed run, and pass it to delivery."""
        for closed_run in closed:
            try:
                summary = aggregate(
                    closed_run.records, closed_run.overflow, max_inputs=self.config.max_inputs_per_run
                )
                run = name_run(closed_run, summary, self.config)
            except Exception:
                self.stats.build_failures += 1
                self.log.log(logging.ERROR, "hand_over", "could not summarise a governed run", exc_info=True)
                continue
            self.stats.runs_decided += 1
            self._deliverer.submit(run)
