"""Delivery: decided runs are built and handed to ``OpenLineageClient.emit`` on a worker thread.

A failed emit is retried with exponential backoff and jitter (first retry within 1 s, capped at
``retry_max_backoff_s``). Where the retry waits depends on the configuration:

- with an outbox (``outbox_dir``), in SQLite: the run is stored durably the moment ``emit`` fails
  or the delivery queue is full, and replayed from there, by this process or the next one;
- without one, in a bounded in-memory queue: when it is full (by count or by bytes) the oldest
  run is dropped and counted, and a process that dies takes its queue with it.

One lock guards the queues, and no thread holds it while it waits for I/O: the delivery thread
emits and reads the outbox outside it, and a storage thread of its own writes the outbox in
batches. Whoever submits a run (the correlation worker, or an application thread doing the
correlation work itself when the intake is full) never waits for the disk or the backend: when
the queue is full it only serialises the run (CPU) for the storage thread.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openlineage.client.serde import Serde

from aigp_otel_bridge.outbox import EventKey, NewRow, Outbox, StoredRun
from aigp_otel_bridge.stages.build import DecidedRun, build_run_event, run_event_from_json
from aigp_otel_bridge.telemetry import RateLimitedLog, Stats, describe

_OUTBOX_POLL_S = 5.0
"""Longest wait before looking at the outbox again (rows of a dead process whose lease ran out)."""
QUEUE_MAX_BYTES = 32 * 1024 * 1024
"""Estimated bytes of runs waiting for delivery in memory, beside ``max_queue_size``."""
SPILL_MAX_BYTES = 64 * 1024 * 1024
"""Serialised runs waiting for the storage thread; past it (a disk slower than the CPU) runs are
counted dropped rather than make anyone wait for the disk."""
STORE_BATCH = 256
"""Rows written per outbox transaction (one ``fsync`` each)."""
STUCK_EMIT_S = 2.0
"""At shutdown with an outbox: an emit taking longer than this is given up on, and what is
queued is stored instead of waiting out ``shutdown_timeout_s``."""
_ERROR_PAUSE_S = 0.05


@dataclass(eq=False)
class _Pending:
    seq: int
    run: DecidedRun
    size: int
    attempts: int = 0
    next_at: float = 0.0
    handed_to_storage: bool = False

    def __lt__(self, other: _Pending) -> bool:
        return (self.next_at, self.seq) < (other.next_at, other.seq)


def backoff_s(attempts: int, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempts`` (1-based): half fixed, half jitter, doubling, capped.

    The exponent is bounded, so no number of failures overflows it.
    """
    ceiling = min(cap_s, 2.0 ** min(max(attempts, 1) - 1, 60))
    return ceiling / 2 + rand() * ceiling / 2


def approximate_size(run: DecidedRun) -> int:
    """Bytes a queued run holds, roughly: what grows with the data (names, hashes, errors)."""
    size = 1024 + len(run.job_name) + len(run.trace_id) + len(run.agent_id)
    for resource in run.summary.resources:
        size += 256 + len(resource.name) + 80 * (len(resource.leaf_hashes) + len(resource.content_hashes))
    size += 64 * len(run.summary.agent_ids)
    if run.error is not None:
        size += len(run.error.message) + len(run.error.stack_trace or "")
    return size


def stored_row(run: DecidedRun, producer: str, *, error: str | None, attempts: int, delay_s: float) -> NewRow:
    """The outbox row of a run: its RunEvent as the client's ``Serde.to_json`` writes it, keyed
    by the run's id and event type and the event's time."""
    event = build_run_event(run, producer)
    key = EventKey(run.run_id, run.event_type.value, event.eventTime)
    return NewRow(key, Serde.to_json(event), error=error, attempts=attempts, delay_s=delay_s)


def replay_row(
    outbox: Outbox, row: StoredRun, emit: Callable[[Any], str | None], retry_max_backoff_s: float
) -> bool:
    """Try one stored run once; delete it when delivered, else note the error and back off.

    ``emit`` returns None when the client took the event, else a description of the error. This
    is the one replay path: the delivery thread and ``aigp-otel-bridge outbox replay`` use it.
    """
    try:
        event = run_event_from_json(row.payload)
    except Exception as failure:
        outbox.failed(row.row_id, f"unreadable row: {describe(failure)}", retry_in_s=retry_max_backoff_s)
        return False
    error = emit(event)
    if error is None:
        outbox.delivered(row.row_id)
        return True
    outbox.failed(row.row_id, error, retry_in_s=backoff_s(row.attempts + 1, retry_max_backoff_s))
    return False


class Deliverer:
    """Owns the delivery thread, its bounded queue, its retries and (optionally) the outbox."""

    def __init__(
        self,
        emit: Callable[[Any], None],
        *,
        producer: str,
        max_queue_size: int,
        retry_max_backoff_s: float,
        stats: Stats,
        log: RateLimitedLog,
        outbox: Outbox | None = None,
    ) -> None:
        self._emit = emit
        self._producer = producer
        self._capacity = max_queue_size
        self._max_backoff = retry_max_backoff_s
        self._stats = stats
        self._log = log
        self._outbox = outbox
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._spill_cond = threading.Condition(lock)
        self._ready: deque[_Pending] = deque()
        self._retry: list[_Pending] = []
        self._bytes = 0
        self._unresolved: set[int] = set()
        self._in_flight: _Pending | None = None
        self._in_flight_since = 0.0
        self._replaying = False
        self._leased: list[int] = []
        """Outbox rows the delivery thread is replaying now; released by a shutdown that gives up on it."""
        self._spill: deque[tuple[int, NewRow]] = deque()
        self._spill_bytes = 0
        self._seq = 0
        self._drops = 0
        self._drops_reported = 0
        self._stopping = False
        self._closed = False
        self._storage_stop = False
        self._outbox_due_at = 0.0
        self._idle = False
        """The delivery thread waits for work (``_next``): a queued run must wake it."""
        self._thread = threading.Thread(target=self._deliver_loop, name="aigp-bridge-deliver", daemon=True)
        self._thread.start()
        self._storage: threading.Thread | None = None
        if outbox is not None:
            self._storage = threading.Thread(target=self._store_loop, name="aigp-bridge-store", daemon=True)
            self._storage.start()

    def depth(self) -> int:
        return len(self._ready) + len(self._retry)

    @property
    def last_seq(self) -> int:
        return self._seq

    # ---- called by the correlation side: never waits for I/O ----

    def submit(self, run: DecidedRun) -> None:
        """Queue a run; when the queue is full, spill it to the outbox or drop the oldest (counted)."""
        size = approximate_size(run)
        give_up: list[tuple[_Pending, str]] = []
        with self._cond:
            self._seq += 1
            pending = _Pending(self._seq, run, size)
            self._unresolved.add(pending.seq)
            if self._closed:
                give_up.append((pending, "it was decided after shutdown"))
            elif self.depth() >= self._capacity or self._bytes + size > QUEUE_MAX_BYTES:
                if self._outbox is not None:
                    give_up.append((pending, "the delivery queue is full"))
                else:
                    while self.depth() and (
                        self.depth() >= self._capacity or self._bytes + size > QUEUE_MAX_BYTES
                    ):
                        oldest = self._ready.popleft() if self._ready else self._pop_oldest_retry_locked()
                        self._bytes -= oldest.size
                        give_up.append((oldest, "the delivery queue is full"))
                    self._enqueue_locked(pending)
            else:
                self._enqueue_locked(pending)
        for victim, why in give_up:
            self._keep_or_drop(victim, why)

    def _enqueue_locked(self, pending: _Pending) -> None:
        self._ready.append(pending)
        self._bytes += pending.size
        if self._idle:  # only the delivery thread waits for a run to be queued
            self._cond.notify_all()

    def wait_delivered(self, upto_seq: int, deadline: float) -> bool:
        """Wait until every run up to ``upto_seq`` is delivered or stored; False on timeout or a drop."""
        with self._cond:
            while any(seq <= upto_seq for seq in self._unresolved):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            clean = self._drops == self._drops_reported
            self._drops_reported = self._drops
            return clean

    def shutdown(self, deadline: float) -> bool:
        """Deliver what is queued until the deadline; with an outbox, store it instead as soon as
        the backend fails or hangs. What is left (a run inside a hung ``emit`` included) is stored
        or counted as dropped. True when nothing was dropped."""
        with self._cond:
            self._stopping = True
            drops_before = self._drops
            for pending in self._retry:
                pending.next_at = 0.0
            heapq.heapify(self._retry)
            self._cond.notify_all()
            while self._ready or self._retry or self._in_flight is not None or self._replaying:
                now = time.monotonic()
                if now >= deadline or not self._thread.is_alive():
                    break
                if self._outbox is not None and (self._in_flight is not None or self._replaying) and (
                    now - self._in_flight_since > STUCK_EMIT_S
                ):
                    break
                self._cond.wait(min(0.1, deadline - now))
            left = list(self._ready) + self._retry
            if self._in_flight is not None:
                left.append(self._in_flight)  # may still arrive as well: at least once
            unfinished = list(self._leased)  # may still arrive as well; due now for the next process
            self._ready.clear()
            self._retry.clear()
            self._bytes = 0
            self._closed = True
            self._cond.notify_all()
        for pending in left:
            self._keep_or_drop(pending, "it was still undelivered at shutdown")
        self._release(unfinished)
        with self._cond:
            self._storage_stop = True
            self._spill_cond.notify_all()
        if self._storage is not None:
            self._storage.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            for seq, _ in self._spill:  # the disk did not take them in time
                self._count_drop_locked(seq)
            self._spill.clear()
            self._cond.notify_all()
            return self._drops == drops_before

    # ---- keeping what could not be delivered ----

    def _pop_oldest_retry_locked(self) -> _Pending:
        oldest = min(self._retry, key=lambda p: p.seq)
        self._retry.remove(oldest)
        heapq.heapify(self._retry)
        return oldest

    def _keep_or_drop(self, pending: _Pending, why: str, error: str | None = None) -> None:
        """Hand the run to the storage thread when there is an outbox; otherwise drop and count it.

        Serialising happens here, on the caller's thread (CPU only); the write happens on the
        storage thread.
        """
        if self._outbox is None:
            self._drop(pending, why)
            return
        try:
            row = stored_row(
                pending.run, self._producer, error=error or why, attempts=pending.attempts,
                delay_s=backoff_s(pending.attempts, self._max_backoff),
            )
        except Exception:
            self._stats.build_failures += 1
            self._log.log(logging.ERROR, "build", "could not build a RunEvent", exc_info=True)
            self._drop(pending, "it could not be built")
            return
        with self._cond:
            if pending.seq not in self._unresolved or pending.handed_to_storage:
                return  # resolved, or already waiting for the storage thread (at shutdown)
            if self._storage_stop:
                reason = why
            elif self._spill_bytes + len(row.payload) > SPILL_MAX_BYTES:
                reason = "the outbox cannot be written as fast as runs are decided"
            else:
                pending.handed_to_storage = True
                self._spill.append((pending.seq, row))
                self._spill_bytes += len(row.payload)
                self._spill_cond.notify()
                return
        self._drop(pending, reason)

    def _release(self, row_ids: list[int]) -> None:
        """Give up the leases on outbox rows this process will not finish, so that the next
        process need not wait them out."""
        if not row_ids or self._outbox is None:
            return
        try:
            self._outbox.release(row_ids)
        except Exception as failure:  # the lease then runs out on its own
            self._log.log(logging.ERROR, "outbox", "could not write to the outbox: %s", describe(failure))

    def _drop(self, pending: _Pending, why: str) -> None:
        with self._cond:
            if pending.seq not in self._unresolved:
                return
            self._count_drop_locked(pending.seq)
            self._cond.notify_all()
        self._log.log(
            logging.ERROR, "drop", "dropped the lineage run %s of trace %s because %s",
            pending.run.run_id, pending.run.trace_id, why,
        )

    def _count_drop_locked(self, seq: int) -> None:
        self._unresolved.discard(seq)
        self._drops += 1
        self._stats.runs_dropped += 1

    # ---- the storage thread (with an outbox) ----

    def _store_loop(self) -> None:
        assert self._outbox is not None
        while True:
            with self._spill_cond:
                while not self._spill and not self._storage_stop:
                    self._spill_cond.wait()
                if not self._spill:
                    return
                batch = [self._spill.popleft() for _ in range(min(STORE_BATCH, len(self._spill)))]
                self._spill_bytes -= sum(len(row.payload) for _, row in batch)
            try:
                result = self._outbox.store([row for _, row in batch])
            except Exception as failure:
                self._stats.outbox_write_failures += len(batch)
                self._log.log(logging.ERROR, "outbox", "could not write to the outbox: %s", describe(failure))
                with self._cond:
                    for seq, _ in batch:
                        self._count_drop_locked(seq)
                    self._cond.notify_all()
                continue
            self._stats.runs_stored += result.stored
            self._stats.duplicates_detected += result.duplicates
            if result.dropped:
                self._stats.outbox_dropped += result.dropped
                self._log.log(
                    logging.ERROR, "outbox-full", "outbox full: dropped the %d oldest stored runs",
                    result.dropped,
                )
            with self._cond:
                self._unresolved.difference_update(seq for seq, _ in batch)
                self._outbox_due_at = min(self._outbox_due_at, time.monotonic() + _OUTBOX_POLL_S)
                self._cond.notify_all()

    # ---- the delivery thread ----

    def _deliver_loop(self) -> None:
        while True:
            try:
                item = self._next()
                if item is None:
                    return
                if item is _POLL_OUTBOX:
                    self._replay_due()
                elif isinstance(item, _Pending):
                    self._deliver(item)
            except Exception:  # a bug must not end delivery
                self._log.log(logging.ERROR, "deliver", "delivery thread error", exc_info=True)
                time.sleep(_ERROR_PAUSE_S)

    def _next(self) -> _Pending | object | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                item: _Pending | None = None
                if self._ready:
                    item = self._ready.popleft()
                elif self._retry and self._retry[0].next_at <= now:
                    item = heapq.heappop(self._retry)
                if item is not None:
                    self._bytes -= item.size
                    self._in_flight, self._in_flight_since = item, now
                    return item
                if self._outbox is not None and not self._stopping and now >= self._outbox_due_at:
                    self._outbox_due_at = now + _OUTBOX_POLL_S
                    self._replaying, self._in_flight_since = True, now
                    return _POLL_OUTBOX
                waits = [self._retry[0].next_at - now] if self._retry else []
                if self._outbox is not None and not self._stopping:
                    waits.append(self._outbox_due_at - now)
                self._idle = True
                try:
                    self._cond.wait(max(0.0, min(waits)) if waits else None)
                finally:
                    self._idle = False

    def _replay_due(self) -> None:
        """Deliver one due outbox row (outside the lock); look again soon while rows are due.

        Shutdown waits for it like for a run in flight, and releases the row if it gives up.
        """
        outbox = self._outbox
        assert outbox is not None
        try:
            rows = outbox.take_due(limit=1)
            leased = [row.row_id for row in rows]
            with self._cond:
                given_up = self._closed  # shutdown did not wait for this replay: leave the rows
                self._leased = leased
            if given_up:
                self._release(leased)
                return
            for row in rows:
                if replay_row(outbox, row, self._try_emit, self._max_backoff):
                    self._stats.runs_replayed += 1
            soonest = 0.0 if rows else outbox.next_due_in()
        except Exception as failure:
            self._log.log(logging.ERROR, "outbox", "could not read the outbox: %s", describe(failure))
            soonest = _OUTBOX_POLL_S
        finally:
            with self._cond:
                self._replaying, self._leased = False, []
                self._cond.notify_all()
        wait = _OUTBOX_POLL_S if soonest is None else min(soonest, _OUTBOX_POLL_S)
        with self._cond:
            self._outbox_due_at = min(self._outbox_due_at, time.monotonic() + wait)

    def _deliver(self, pending: _Pending) -> None:
        """One attempt, settled (resolved, stored, requeued or dropped) while the run still counts
        as in flight: a shutdown that saw nothing in flight must find the run settled."""
        try:
            self._attempt(pending)
        finally:
            self._finish_attempt()

    def _attempt(self, pending: _Pending) -> None:
        pending.attempts += 1
        try:
            event = build_run_event(pending.run, self._producer)
        except Exception:
            self._stats.build_failures += 1
            self._log.log(logging.ERROR, "build", "could not build a RunEvent", exc_info=True)
            self._drop(pending, "it could not be built")
            return
        error = self._try_emit(event)
        if error is None:
            with self._cond:
                self._unresolved.discard(pending.seq)
                self._cond.notify_all()
            return
        if self._outbox is not None:
            self._log.log(logging.WARNING, "emit", "OpenLineage emit failed (%s); storing the run", error)
            self._keep_or_drop(pending, "emit failed", error)
            return
        with self._cond:
            if pending.seq not in self._unresolved:
                return
            if not self._stopping or pending.attempts == 1:
                delay = 0.0 if self._stopping else backoff_s(pending.attempts, self._max_backoff)
                pending.next_at = time.monotonic() + delay
                heapq.heappush(self._retry, pending)
                self._bytes += pending.size
                self._cond.notify_all()
                retrying = True
            else:
                retrying = False
        if retrying:
            self._log.log(logging.WARNING, "emit", "OpenLineage emit failed (%s); will retry", error)
        else:
            self._drop(pending, f"the lineage backend kept failing until shutdown ({error})")

    def _finish_attempt(self) -> None:
        with self._cond:
            self._in_flight = None
            self._cond.notify_all()

    def _try_emit(self, event: Any) -> str | None:
        """One emit; the error's description, or None when the client took the event."""
        try:
            self._emit(event)
        except BaseException as error:  # even SystemExit from a transport must not end delivery
            self._stats.emit_failures += 1
            return describe(error)
        self._stats.runs_emitted += 1
        return None


_POLL_OUTBOX = object()
"""What the delivery thread does when no queued run is due: look at the outbox."""


@dataclass
class ReplaySummary:
    """What one manual replay of an outbox did."""

    delivered: int = 0
    failed: int = 0
    last_error: str | None = None


def replay_outbox(
    outbox: Outbox,
    emit: Callable[[Any], None],
    *,
    retry_max_backoff_s: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Try every stored run once, now, oldest first; what fails stays stored with its error.

    Leases keep a bridge running on the same folder from sending the same rows meanwhile.
    """
    summary = ReplaySummary()

    def attempt(event: Any) -> str | None:
        try:
            emit(event)
        except Exception as error:
            summary.last_error = describe(error)
            return summary.last_error
        return None

    outbox.release_all()
    cutoff = time.time()
    while True:
        rows = outbox.take_due(limit=64, now=cutoff)
        if not rows:
            return summary
        for row in rows:
            if replay_row(outbox, row, attempt, retry_max_backoff_s):
                summary.delivered += 1
            else:
                summary.failed += 1
            if progress is not None:
                progress(1)
