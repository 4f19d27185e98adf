"""The stages wired together behind one thread-safe intake.

Front doors (the span processor, the span exporter, the gateway) call ``put_*`` or ``offer``
from any thread; each call appends typed items to the intake. The correlation work (extract,
correlate, aggregate, name the run) on the ``Extractor`` and the ``Correlator`` runs under one
lock, the correlation lock: on the correlation worker, or, under back-pressure, on an application
thread. Closed runs go to the ``Deliverer``, whose own threads build, emit and store them, so a
slow lineage backend or disk never stalls correlation.

Overload policy (docs/operations.md): the intake is bounded by ``max_intake_size``. When it is
full, a thread calling ``put_*`` takes the correlation lock and does the correlation work itself
(CPU only, never I/O) until the intake is half empty, then appends: ``put_*`` refuses nothing, so
no governance record is lost at the intake, and the application slows to the bridge's pace
instead. ``offer``, the gateway's, refuses a whole batch that does not fit instead, before the
gateway acknowledges its request, so that the OTLP sender retries it rather than wait; it also
refuses while delivery is full (``Deliverer.has_room``: queued runs, plus the runs that pending
traces and governed notes still in the intake may make, against ``max_queue_size``), and after
``acknowledging`` a full
delivery queue never drops a run (it is stored, or kept past the bound that admission holds).
Memory stays bounded: pending traces by ``max_pending_traces`` (early runs marked ``complete:
false``), queued runs by ``max_queue_size`` and bytes (in process, the oldest counted in
``runs_dropped``, or spilled to the outbox), and what a span note keeps by ``max_string_length``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.journal import Journal, Journaled, governs, mark_for
from aigp_otel_bridge.note import NoteEvent, SpanNote
from aigp_otel_bridge.outbox import Outbox
from aigp_otel_bridge.propagated_links import RUN_LINKS
from aigp_otel_bridge.span_links import RunChain
from aigp_otel_bridge.stages.aggregate import aggregate
from aigp_otel_bridge.stages.build import name_run
from aigp_otel_bridge.stages.correlate import ClosedRun, Correlator, Reason
from aigp_otel_bridge.stages.deliver import Deliverer, store_reserve_s
from aigp_otel_bridge.stages.extract import Extractor, GovernanceRecord
from aigp_otel_bridge.telemetry import RateLimitedLog, Stats, describe, register_metrics

_log = logging.getLogger("aigp_otel_bridge")

_BATCH = 256
"""Intake items processed per hold of the correlation lock, so that a thread applying
back-pressure waits for at most one batch of the worker's."""


@dataclass(slots=True)
class RootStart:
    """A local root span started (the span processor sees starts; the exporter does not)."""

    trace_id: int
    span_id: int
    remote_parent: bool


@dataclass(slots=True)
class Ingested:
    """A full AIGP event handed to ``ingest_aigp_event``, joined to its trace by key."""

    key: int | str
    record: GovernanceRecord
    local_root_id: int | None = None
    """The local root of the event's ``span_id``, when the front door knows it."""


@dataclass(slots=True)
class FlushRequest:
    """Marks the intake position a ``force_flush`` waits for."""

    done: threading.Event = field(default_factory=threading.Event)
    upto_seq: int = 0


@dataclass(slots=True)
class Offered:
    """Follows an offered batch: the notes of its governed traces (each may make a run) are
    correlated."""

    governed: int


@dataclass(slots=True)
class StopRequest:
    """The last item: decide every pending trace, then stop."""


IntakeItem = Union[SpanNote, RootStart, Ingested, FlushRequest, StopRequest, Journaled, Offered]  # noqa: UP007 - 3.10 aliases


def bounded_attributes(attributes: Mapping[str, Any], cap: int) -> Mapping[str, Any]:
    """``attributes`` with every string (alone or in an array) cut to ``cap`` characters; the same
    mapping when nothing is longer. Callers choose ``cap`` above every length the bridge accepts,
    so a value that was too long stays too long (and is still counted as invalid)."""
    for value in attributes.values():
        if (isinstance(value, str) and len(value) > cap) or (
            isinstance(value, (tuple, list)) and any(isinstance(v, str) and len(v) > cap for v in value)
        ):
            break
    else:
        return attributes
    return {key: _cut(value, cap) for key, value in attributes.items()}


def _cut(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return value[:cap]
    if isinstance(value, (tuple, list)):
        return tuple(v[:cap] if isinstance(v, str) else v for v in value)
    return value


class Engine:
    """Intake queue, correlation worker and deliverer of one bridge.

    ``outbox_from_environment``: the outbox folder came from ``AIGP_BRIDGE_OUTBOX_DIR`` rather
    than an argument, so an unusable one is a warning (memory-only delivery), not a ``ValueError``.
    """

    def __init__(
        self,
        config: BridgeConfig,
        emit: Callable[[Any], None],
        stats: Stats | None = None,
        *,
        outbox_from_environment: bool = False,
    ) -> None:
        self.config = config
        self.stats = stats or Stats()
        self.log = RateLimitedLog(_log)
        self._emit = emit
        self._capacity = config.max_intake_size
        self._sweep_s = min(1.0, config.trace_timeout_s / 4)
        self._gather_s = min(config.schedule_delay_s, config.trace_timeout_s / 4)
        """After a local root ends, how long the worker waits for more before it starts: each pass
        over the intake pays a fixed cost (a wake-up, and on a busy process caches gone cold while
        the application ran), so one pass per delay rather than per trace, as the SDK's batch
        processor exports per schedule delay rather than per span. A flush, a shutdown or a
        half-full intake ends the wait at once. A quarter of ``trace_timeout_s`` bounds it, as it
        bounds the sweep, so that timeouts stay as exact."""
        self._note_cap = max(config.max_string_length, 1024) + 1
        self._stopped = False
        self._forked = False
        self._outbox = self._open_outbox(outbox_from_environment)
        self._acknowledging = False
        self.journal: Journal | None = None
        """With an outbox, behind a front door that acknowledges (``acknowledging``)."""
        self.run_chain: RunChain | None = None
        """Set by the gateway, which links runs from the spans themselves (``span_links.py``)."""
        self._remember_ungoverned_roots = False
        self._start()
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

        def mark_forked() -> None:  # at-fork handlers only set a flag; the child restarts lazily
            engine = weak_self()
            if engine is not None:
                engine._forked = True

        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=mark_forked)
        _LIVE.add(self)

    def _open_outbox(self, from_environment: bool) -> Outbox | None:
        directory = self.config.outbox_dir
        if not directory:
            return None
        try:
            outbox = Outbox(directory, max_events=self.config.outbox_max_events)
        except Exception as error:
            if not from_environment:
                raise ValueError(f"outbox_dir {directory!r} cannot be used: {error}") from None
            _log.warning(
                "AIGP_BRIDGE_OUTBOX_DIR %r cannot be used (%s); undelivered runs are kept in memory only",
                directory, describe(error),
            )
            return None
        for moved in outbox.moved_aside:
            self.stats.outbox_moved_aside += 1
            _log.error("the outbox database could not be read; kept it as %s and started a fresh one", moved)
        return outbox

    def _start(self) -> None:
        """Fresh state, locks and threads (at construction, and in a forked child at first use)."""
        config = self.config
        self.log = RateLimitedLog(_log)
        self._intake: deque[IntakeItem] = deque()
        self._wake = threading.Event()
        self._prompt = threading.Event()
        """Set by what must not wait for a gathering worker: flush, shutdown, a full batch."""
        self._correlating = threading.Lock()
        self._correlating_thread: int | None = None
        self._stop_done = False
        self._governed_offered = 0
        """Governed traces in the batches ``offer`` queued (written by ``offer`` only)."""
        self._governed_correlated = 0
        """Of those, the ones correlated (written by the correlating thread only)."""
        self._journal_marks: dict[tuple[int, int], int] = {}
        """(trace, local root or 0) -> the last journal batch correlated into that run."""
        self._correlator = Correlator(
            trace_timeout_s=config.trace_timeout_s,
            max_pending_traces=config.max_pending_traces,
            max_records_per_trace=config.max_records_per_trace,
            emit_ungoverned=config.emit_ungoverned,
            stats=self.stats,
            remember_ungoverned_roots=self._remember_ungoverned_roots,
        )
        self._extractor = Extractor(config.limits)
        if self._outbox is not None and not self._outbox.claim():
            _log.warning(
                "this process was forked while the outbox was being written; it keeps its"
                " undelivered runs in memory (counted in runs_dropped if they cannot be delivered)"
            )
            self._outbox = None
        self._deliverer = Deliverer(
            self._emit,
            producer=config.producer,
            max_queue_size=config.max_queue_size,
            retry_max_backoff_s=config.retry_max_backoff_s,
            stats=self.stats,
            log=self.log,
            outbox=self._outbox,
        )
        self._deliverer.keep_acknowledged = self._acknowledging
        if self.journal is not None:
            self._deliverer.set_on_settled(self.journal.forget)
        self._worker = threading.Thread(target=self._run, name="aigp-bridge-correlate", daemon=True)
        self._worker.start()

    def _after_fork(self) -> None:
        """In a forked child: start afresh, without the parent's traces (a stopped bridge stays so)."""
        self._forked = False
        if not self._stopped:
            self._start()

    # ---- front-door API (any thread; never waits for I/O, never raises; a full intake makes
    # ``put_*`` correlate on the calling thread, ``offer`` refuse) ----

    @property
    def stopped(self) -> bool:
        return self._stopped

    def remember_ungoverned_roots(self) -> None:
        """For front doors where a local root may arrive before its children (the gateway): a root
        decided without governance is remembered, so that records arriving for it later make its
        run (``Correlator``'s ``remember_ungoverned_roots``)."""
        with self._correlating:
            self._remember_ungoverned_roots = True
            self._correlator.remember_ungoverned_roots = True

    @property
    def value_cap(self) -> int:
        """Strings a note keeps are cut to this length: above every length the bridge accepts, so
        that a value too long stays too long (and is still counted as invalid)."""
        return self._note_cap

    def acknowledging(self) -> Journal | None:
        """For a front door that acknowledges what it ``offer``s (the gateway): a full delivery
        queue then never drops a run (``offer`` refuses instead), and, with an outbox, the journal
        of acknowledged governance is opened and what an earlier process left in it replayed.
        Returns the journal (None without an outbox), which the front door writes before it
        answers."""
        self._acknowledging = True
        self._deliverer.keep_acknowledged = True
        if self._outbox is None or self.journal is not None:
            return self.journal
        self.journal = Journal(self._outbox, max_traces=self.config.max_pending_traces)
        self._deliverer.set_on_settled(self.journal.forget)
        replayed = self.journal.replay(self.put_replayed)
        if replayed:
            _log.warning("replayed %d governed spans journaled by an earlier process", replayed)
        return self.journal

    def delivery_tally(self) -> tuple[int, int, int]:
        """Runs decided so far that were (delivered, stored in the outbox, dropped)."""
        return self._deliverer.tally()

    def put_root_start(self, trace_id: int, span_id: int, remote_parent: bool) -> None:
        self._put(RootStart(trace_id, span_id, remote_parent), wake=False, counted=False)

    def put_span(self, note: SpanNote) -> None:
        self._put(self._bounded(note), wake=note.local_root)

    def _bounded(self, note: SpanNote) -> SpanNote:
        """What a note keeps, cut to the string bound (a 100 KB attribute must not cost 100 KB)."""
        cap = self._note_cap
        if note.attributes:
            note.attributes = bounded_attributes(note.attributes, cap)
        exception = note.exception
        if exception is not None:
            attributes = bounded_attributes(exception.attributes, cap * 16)
            note.exception = NoteEvent(exception.name, exception.time_ns, attributes)
        return note

    def offer(self, notes: list[SpanNote], journaled: Journaled | None = None) -> bool:
        """Queue all of ``notes`` or none (False: stopped, no room in the intake, or delivery
        full), for front doors that can refuse a batch before acknowledging it (the gateway
        answers 429/503, and OTLP senders retry) rather than make their caller wait. An empty
        intake takes any batch while delivery has room, so none is refused for the intake alone;
        concurrent offers may overshoot the capacity by their own sizes, never drop.
        ``journaled`` follows the notes: their runs' journal rows up to its batch."""
        if self._forked:
            self._after_fork()
        if self._stopped:
            return False
        depth = len(self._intake)
        if depth and depth + len(notes) > self._capacity:
            return False
        coming = self._governed_offered - self._governed_correlated + len(self._correlator)
        if not self._deliverer.has_room(coming):
            return False
        bounded: list[IntakeItem] = [self._bounded(note) for note in notes]
        governed = len({note.trace_id for note in notes if governs(note)})
        if governed:
            self._governed_offered += governed
            bounded.append(Offered(governed))
        if journaled is not None:
            bounded.append(journaled)
        self._intake.extend(bounded)
        if len(self._intake) >= self._capacity // 2:
            self._prompt.set()
        self._wake.set()
        return True

    def put_replayed(self, notes: list[SpanNote], journaled: Journaled) -> None:
        """Notes replayed from the journal at start, never refused (``put_*``'s back-pressure).
        As in the gateway, where roots are held, a batch's children come first, then its marker,
        then its roots: the run a root closes covers its batch's rows."""
        for note in notes:
            if not note.local_root:
                self.put_span(note)
        self._put(journaled, wake=False, counted=False)
        for note in notes:
            if note.local_root:
                self.put_span(note)

    def put_event(self, key: int | str, record: GovernanceRecord, local_root_id: int | None = None) -> None:
        if isinstance(key, str) and len(key) > self.config.max_string_length:
            self.stats.ingest_rejected += 1
            self.log.log(
                logging.WARNING, "ingest", "ignored an AIGP event whose trace_id has %d characters"
                " (max_string_length %d)", len(key), self.config.max_string_length,
            )
            return
        self._put(Ingested(key, record, local_root_id), wake=False)

    def _put(self, item: IntakeItem, *, wake: bool, counted: bool = True) -> None:
        if self._forked:
            self._after_fork()
        if self._stopped:
            if counted:
                self.stats.spans_after_shutdown += 1
                self.log.log(logging.WARNING, "late", "governance data arrived after shutdown; not emitted")
            return
        intake = self._intake
        if len(intake) >= self._capacity and self._correlating_thread != threading.get_ident():
            self._correlate_here()
        intake.append(item)
        if len(intake) >= self._capacity // 2 and not self._prompt.is_set():
            self._prompt.set()  # half full: no gathering
            self._wake.set()
        elif wake:
            self._wake.set()

    def _correlate_here(self) -> None:
        """Back-pressure: the caller takes the correlation lock (waiting for at most one batch of
        the worker) and correlates until the intake is half empty (CPU work only). A thread that
        already holds the lock (a ``job_name`` callable making spans) is not sent here by ``_put``:
        it appends past the bound rather than wait for itself."""
        with self._correlating:
            self._correlating_thread = threading.get_ident()
            try:
                while len(self._intake) > self._capacity // 2 and self._process(_BATCH):
                    pass
            finally:
                self._correlating_thread = None

    # ---- flush and shutdown (caller waits, bounded by its timeout) ----

    def flush(self, timeout_s: float) -> bool:
        if self._forked:
            self._after_fork()
        deadline = time.monotonic() + timeout_s
        if self._stopped or not self._worker.is_alive():
            return self._deliverer.wait_delivered(self._deliverer.last_seq, deadline)
        token = FlushRequest()
        self._intake.append(token)
        self._prompt.set()
        self._wake.set()
        if not token.done.wait(max(0.0, deadline - time.monotonic())):
            return False
        return self._deliverer.wait_delivered(token.upto_seq, deadline)

    def shutdown(self, timeout_s: float) -> bool:
        if self._forked:  # a child that never used the bridge has nothing of its own to deliver
            self._forked = False
            self._stopped = True
            return True
        if self._stopped:
            return True
        deadline = time.monotonic() + timeout_s
        self._stopped = True
        self._intake.append(StopRequest())
        self._prompt.set()
        self._wake.set()
        reserve = store_reserve_s(timeout_s) if self._outbox is not None else 0.0
        self._worker.join(max(0.0, deadline - reserve - time.monotonic()))
        delivered = self._deliverer.shutdown(deadline)
        if self.journal is not None:
            try:
                self.journal.close()
            except Exception as error:  # the rows stay: the next start replays them (again)
                _log.error("could not compact the journal: %s", describe(error))
        if self._outbox is not None and delivered:
            self._outbox.close()
        return delivered

    # ---- the correlation worker ----

    def _run(self) -> None:
        while not self._stop_done:
            self._wake.wait(self._sweep_s)
            self._wake.clear()
            if self._intake and not self._prompt.is_set():
                self._prompt.wait(self._gather_s)  # gather more traces into this pass
            self._prompt.clear()
            try:
                while self._intake and not self._stop_done:
                    with self._correlating:
                        self._correlating_thread = threading.get_ident()
                        try:
                            self._process(_BATCH)
                        finally:
                            self._correlating_thread = None
                if self._stop_done:
                    return
                with self._correlating:
                    self._hand_over(self._correlator.settle() + self._correlator.expire(time.monotonic()))
            except Exception:  # a bug must not kill the worker
                self.log.log(logging.ERROR, "worker", "correlation worker error", exc_info=True)
                time.sleep(0.05)

    def _process(self, limit: int) -> bool:
        """Process up to ``limit`` queued items (the caller holds the correlation lock); False once
        the stop request was processed."""
        intake = self._intake
        correlator = self._correlator
        extract = self._extractor.span
        stats = self.stats
        now = time.monotonic()  # one reading per batch: the runs it touches share it
        if self._stop_done:  # only set below, under the same lock: checked once per batch
            return False
        for _ in range(limit):
            try:
                item = intake.popleft()
            except IndexError:
                return True
            try:
                if isinstance(item, SpanNote):
                    stats.spans_seen += 1
                    closed = correlator.span_ended(extract(item), now)
                    if closed:  # most spans close no run
                        self._hand_over(closed)
                elif isinstance(item, RootStart):
                    started = correlator.root_started(item.trace_id, item.span_id, item.remote_parent, now)
                    if started:
                        self._hand_over(started)
                elif isinstance(item, Ingested):
                    self._hand_over(correlator.event_ingested(item.key, item.record, now, item.local_root_id))
                elif isinstance(item, Offered):
                    self._governed_correlated += item.governed
                elif isinstance(item, Journaled):
                    self._note_journaled(item)
                elif isinstance(item, FlushRequest):
                    self._hand_over(correlator.settle())
                    item.upto_seq = self._deliverer.last_seq
                    item.done.set()
                else:
                    self._hand_over(correlator.drain())
                    self._stop_done = True
                    self._wake.set()
                    self._discard_late()
                    return False
            except Exception:
                self.log.log(logging.ERROR, "worker", "could not process governance data", exc_info=True)
                if self._stop_done:  # failed after the stop request: nothing more is processed
                    return False
        return True

    def _discard_late(self) -> None:
        """Items queued behind the stop request arrived after shutdown: counted, flushes released."""
        while self._intake:
            item = self._intake.popleft()
            if isinstance(item, FlushRequest):
                item.upto_seq = self._deliverer.last_seq
                item.done.set()
            elif isinstance(item, (SpanNote, Ingested)):
                self.stats.spans_after_shutdown += 1
            elif isinstance(item, Offered):
                self._governed_correlated += item.governed

    def _note_journaled(self, item: Journaled) -> None:
        """The notes of ``item``'s runs up to its batch are correlated: a run decided from now on
        covers their journal rows. Bounded: a mark let go leaves its rows for the next start."""
        marks = self._journal_marks
        for key in item.runs():
            marks[key] = max(item.batch, marks.get(key, 0))
        while len(marks) > 4 * self.config.max_pending_traces:
            del marks[next(iter(marks))]

    def _journal_token(self, closed: ClosedRun) -> list[Any] | None:
        """The journal marks a closed run settles: its root's and its trace's unattributed rows
        (kept for an early part, whose run goes on)."""
        if not self._journal_marks or not isinstance(closed.key, int):
            return None
        take = self._journal_marks.get if closed.reason is Reason.EVICTED else self._journal_marks.pop
        marks = []
        for root in {closed.root_span_id or 0, 0}:
            batch = take((closed.key, root), None)
            if batch is not None:
                marks.append(mark_for((closed.key, root), batch))
        return marks or None

    def _hand_over(self, closed: Sequence[ClosedRun]) -> None:
        """Summarise and name each closed run, and pass it to delivery."""
        for closed_run in closed:
            try:
                summary = aggregate(
                    closed_run.records, closed_run.overflow, max_inputs=self.config.max_inputs_per_run,
                    observed=closed_run.observed,
                )
                run = name_run(closed_run, summary, self.config, run_link=RUN_LINKS.run_link)
                if closed_run.reason is Reason.ROOT_ENDED:  # a late event of this run names this job
                    self._correlator.named(closed_run, (run.job_namespace, run.job_name))
                if self.run_chain is not None:
                    run = self.run_chain.link(closed_run, run)
            except Exception:
                self.stats.build_failures += 1
                self.log.log(logging.ERROR, "hand_over", "could not summarise a governed run", exc_info=True)
                continue
            self.stats.runs_decided += 1
            self._deliverer.submit(run, self._journal_token(closed_run))


_LIVE: weakref.WeakSet[Engine] = weakref.WeakSet()


def _shutdown_at_exit() -> None:
    """The bridge's own ``atexit``: each live bridge shut down, bounded by its ``shutdown_timeout_s``.

    Registered when this module is imported, so that it runs after the ``atexit`` of a
    ``TracerProvider`` made later (handlers run last-registered first): the provider's batch
    processors hand over their last spans before the bridge stops.
    """
    for engine in list(_LIVE):
        if engine.stopped:
            continue
        try:
            engine.shutdown(engine.config.shutdown_timeout_s)
        except Exception:
            _log.exception("aigp-otel-bridge shutdown at exit failed")


atexit.register(_shutdown_at_exit)
