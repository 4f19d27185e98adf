"""Delivery: decided runs are built and handed to ``OpenLineageClient.emit`` on a worker thread.

A failed emit is retried with exponential backoff and jitter (first retry within 1 s, capped at
``retry_max_backoff_s``). Where the retry waits depends on the configuration:

- with an outbox (``outbox_dir``), in SQLite: the run is stored durably the moment ``emit`` fails
  or the delivery queue is full, and replayed from there, by this process or the next one;
- without one, in a bounded in-memory queue: when it is full (by count or by bytes) the oldest
  run is dropped and counted, and a process that dies takes its queue with it.

Four parts, each with one job, share one lock (the ``Ledger``'s):

- ``Ledger``: every submitted run from its sequence number until it is settled (delivered,
  stored or counted dropped), and the lifecycle ``Phase``; a flush waits on it;
- ``RetryQueue``: the runs waiting in memory, bounded by count and bytes, their retries, and the
  delivery thread that builds and emits them;
- ``OutboxSpiller`` (with an outbox): keeps the runs that fail or do not fit, serialised on the
  thread that gives them up and written in batches by a storage thread of its own;
- ``Replayer`` (with an outbox): when no queued run is due, the delivery thread replays a due
  outbox row through ``replay_row``, the path ``aigp-otel-bridge outbox replay`` takes too.

``Deliverer`` wires them and is what the engine calls. No thread holds the lock while it emits,
reads or writes the outbox. Whoever submits a run (the correlation worker, or an application
thread doing the correlation work itself when the intake is full) never waits for the disk or the
backend: when the queue is full it only serialises the run (CPU) for the storage thread.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from functools import partial
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
STORE_RESERVE_S = 5.0
"""At shutdown with an outbox: the time kept back from delivering to store what is left (at most
half of the shutdown timeout), so that a slow but up backend never leaves runs unstored."""
_ERROR_PAUSE_S = 0.05
_MISSING = object()

Emit = Callable[[Any], str | None]
"""One emit attempt: None when the client took the event, else a description of the error."""


# ---- pure parts: backoff, size, the outbox row ----


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


def store_reserve_s(remaining_s: float) -> float:
    """Of the shutdown time left, what is kept back to store the runs not delivered: half of it,
    at most ``STORE_RESERVE_S`` (storing a run takes well under a millisecond, its batch's
    ``fsync`` a few)."""
    return min(STORE_RESERVE_S, max(0.0, remaining_s) / 2)


def stored_row(run: DecidedRun, producer: str, *, error: str | None, attempts: int, delay_s: float) -> NewRow:
    """The outbox row of a run: its RunEvent as the client's ``Serde.to_json`` writes it, keyed
    by the run's id and event type and the event's time."""
    event = build_run_event(run, producer)
    key = EventKey(run.run_id, run.event_type.value, event.eventTime)
    return NewRow(key, Serde.to_json(event), error=error, attempts=attempts, delay_s=delay_s)


def _try_emit(emit: Callable[[Any], None], stats: Stats, event: Any) -> str | None:
    """One emit, counted; the error's description, or None when the client took the event."""
    try:
        emit(event)
    except BaseException as error:  # even SystemExit from a transport must not end delivery
        stats.emit_failures += 1
        return describe(error)
    stats.runs_emitted += 1
    return None


# ---- the lifecycle and the ledger ----


class Phase(Enum):
    """Where delivery is in its life. Only ``Deliverer.shutdown`` moves it, forward, in this order."""

    RUNNING = "running"
    """Runs are delivered and retried with backoff; the outbox is replayed."""
    DRAINING = "draining"
    """Shutdown began: retries are due at once, a run that fails again is given up, the outbox is
    not read."""
    CLOSED = "closed"
    """The queue is closed and the delivery thread ends: what is left, or decided now, goes to the
    spiller (with an outbox) or is dropped."""
    STOPPED = "stopped"
    """The spiller takes nothing more: a run given up now is dropped."""


@dataclass(eq=False)
class _Pending:
    """A submitted run on its way: queued, in flight, waiting to retry or to be stored."""

    seq: int
    run: DecidedRun
    size: int
    attempts: int = 0
    next_at: float = 0.0
    handed_to_storage: bool = False

    def __lt__(self, other: _Pending) -> bool:
        return (self.next_at, self.seq) < (other.next_at, other.seq)


class Ledger:
    """Every submitted run from its sequence number until it is settled (delivered, stored or
    counted dropped), and the lifecycle ``phase``.

    Its ``lock`` is delivery's one lock: each part changes its own state under it and waits on
    ``cond`` (or, the storage thread, on a condition of its own on the same lock). Methods whose
    names end in ``_locked`` expect the caller to hold it.
    """

    def __init__(self, stats: Stats, log: RateLimitedLog) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.phase = Phase.RUNNING
        self.last_seq = 0
        """The sequence number of the latest submitted run (a flush waits up to it)."""
        self.drops = 0
        self.delivered = 0
        """Submitted runs delivered (replays of stored rows not included)."""
        self.stored = 0
        """Submitted runs handed to the outbox and written (or found there already)."""
        self._drops_reported = 0
        self._unsettled: dict[int, object | None] = {}
        """Sequence number -> the token given with the run to ``submit`` (for ``on_settled``)."""
        self.on_settled: Callable[[list[object]], None] | None = None
        """Told, with the lock held, the tokens of runs just delivered or stored (never of runs
        dropped): the journal forgets what they came from. It must not block."""
        self._stats = stats
        self._log = log

    def admit_locked(self, run: DecidedRun, size: int, token: object | None = None) -> _Pending:
        self.last_seq += 1
        self._unsettled[self.last_seq] = token
        return _Pending(self.last_seq, run, size)

    def unsettled_locked(self, seq: int) -> bool:
        return seq in self._unsettled

    def settle_locked(self, seqs: Iterable[int], *, stored: bool = False) -> None:
        """Delivered or stored: the one place a run becomes so. A flush waiting for them may
        return, and ``on_settled`` hears of their tokens."""
        tokens: list[object] = []
        settled = 0
        for seq in seqs:
            if seq not in self._unsettled:
                continue
            token = self._unsettled.pop(seq)
            settled += 1
            if token is not None:
                tokens.append(token)
        if stored:
            self.stored += settled
        else:
            self.delivered += settled
        if tokens and self.on_settled is not None:
            self.on_settled(tokens)
        self.cond.notify_all()

    def count_drop_locked(self, seq: int) -> None:
        if self._unsettled.pop(seq, _MISSING) is _MISSING:
            return
        self.drops += 1
        self._stats.runs_dropped += 1
        self.cond.notify_all()

    def drop(self, pending: _Pending, why: str) -> None:
        """Give a run up, counted in ``runs_dropped`` and logged (unless it was settled meanwhile)."""
        with self.cond:
            if pending.seq not in self._unsettled:
                return
            self.count_drop_locked(pending.seq)
        self._log.log(
            logging.ERROR, "drop", "dropped the lineage run %s of trace %s because %s",
            pending.run.run_id, pending.run.trace_id, why,
        )

    def wait_settled(self, upto_seq: int, deadline: float) -> bool:
        """Wait until every run up to ``upto_seq`` is settled; False on timeout, or when a run was
        dropped since the last call."""
        with self.cond:
            while any(seq <= upto_seq for seq in self._unsettled):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
            clean = self.drops == self._drops_reported
            self._drops_reported = self.drops
            return clean


# ---- the outbox spiller: runs given up, serialised, written in batches ----


class OutboxSpiller:
    """Keeps in the outbox the runs delivery gives up (emit failed, queue full, shutdown).

    ``keep`` serialises a run on the caller's thread (CPU only) and queues the row for the
    storage thread, which writes batches of up to ``STORE_BATCH`` rows, each batch one
    transaction; so neither the correlation side nor the delivery thread waits for the disk.
    Past ``SPILL_MAX_BYTES`` of rows waiting, or once the phase is ``STOPPED``, a run is dropped.
    """

    def __init__(
        self,
        ledger: Ledger,
        outbox: Outbox,
        *,
        producer: str,
        retry_max_backoff_s: float,
        stats: Stats,
        log: RateLimitedLog,
    ) -> None:
        self._ledger = ledger
        self._outbox = outbox
        self._producer = producer
        self._max_backoff = retry_max_backoff_s
        self._stats = stats
        self._log = log
        self._rows: deque[tuple[int, NewRow]] = deque()
        self._bytes = 0
        self._has_rows = threading.Condition(ledger.lock)
        """Wakes only the storage thread (on the ledger's lock)."""
        self._thread = threading.Thread(target=self._store_loop, name="aigp-bridge-store", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def backlog_bytes_locked(self) -> int:
        """Bytes of rows waiting for the storage thread."""
        return self._bytes

    def keep(self, pending: _Pending, why: str, error: str | None = None) -> None:
        """Hand a run to the storage thread; ``why`` (or the emit's ``error``) is its row's error."""
        try:
            row = stored_row(
                pending.run, self._producer, error=error or why, attempts=pending.attempts,
                delay_s=backoff_s(pending.attempts, self._max_backoff),
            )
        except Exception:
            self._stats.build_failures += 1
            self._log.log(logging.ERROR, "build", "could not build a RunEvent", exc_info=True)
            self._ledger.drop(pending, "it could not be built")
            return
        with self._ledger.cond:
            if not self._ledger.unsettled_locked(pending.seq) or pending.handed_to_storage:
                return  # settled, or already waiting for the storage thread (at shutdown)
            if self._ledger.phase is Phase.STOPPED:
                reason = why
            elif self._bytes + len(row.payload) > SPILL_MAX_BYTES:
                reason = "the outbox cannot be written as fast as runs are decided"
            else:
                pending.handed_to_storage = True
                self._rows.append((pending.seq, row))
                self._bytes += len(row.payload)
                self._has_rows.notify()
                return
        self._ledger.drop(pending, reason)

    def stop(self, deadline: float) -> None:
        """With the phase ``STOPPED``: let the storage thread write what it holds until the
        deadline; what it did not start writing is counted dropped. A batch whose transaction is
        under way then is waited for (up to ``STUCK_EMIT_S`` more), so that the runs counted
        stored are the rows the outbox holds."""
        with self._ledger.cond:
            self._has_rows.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._ledger.cond:
            for seq, _ in self._rows:  # the disk did not take them in time
                self._ledger.count_drop_locked(seq)
            self._rows.clear()
            self._bytes = 0
        self._thread.join(STUCK_EMIT_S)

    def _store_loop(self) -> None:
        ledger = self._ledger
        while True:
            with ledger.cond:
                while not self._rows and ledger.phase is not Phase.STOPPED:
                    self._has_rows.wait()
                if not self._rows:
                    return
                batch = [self._rows.popleft() for _ in range(min(STORE_BATCH, len(self._rows)))]
                self._bytes -= sum(len(row.payload) for _, row in batch)
            try:
                result = self._outbox.store([row for _, row in batch])
            except Exception as failure:
                self._stats.outbox_write_failures += len(batch)
                self._log.log(logging.ERROR, "outbox", "could not write to the outbox: %s", describe(failure))
                with ledger.cond:
                    for seq, _ in batch:
                        ledger.count_drop_locked(seq)
                continue
            self._stats.runs_stored += result.stored
            self._stats.duplicates_detected += result.duplicates
            if result.dropped:
                self._stats.outbox_dropped += result.dropped
                self._log.log(
                    logging.ERROR, "outbox-full", "outbox full: dropped the %d oldest stored runs",
                    result.dropped,
                )
            with ledger.cond:
                ledger.settle_locked((seq for seq, _ in batch), stored=True)


# ---- the replayer: due outbox rows, one path ----


def replay_row(outbox: Outbox, row: StoredRun, emit: Emit, retry_max_backoff_s: float) -> bool:
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


class Replayer:
    """Delivers due outbox rows, one per turn of the delivery thread when no queued run is due.

    It looks at the outbox every ``_OUTBOX_POLL_S`` at most (rows just stored, rows whose backoff
    ended, rows of a dead process whose lease ran out), and at once again while rows are due. Rows
    it leased are released by a shutdown that does not wait for them.
    """

    def __init__(
        self,
        ledger: Ledger,
        outbox: Outbox,
        emit: Emit,
        *,
        retry_max_backoff_s: float,
        stats: Stats,
        log: RateLimitedLog,
    ) -> None:
        self._ledger = ledger
        self._outbox = outbox
        self._emit = emit
        self._max_backoff = retry_max_backoff_s
        self._stats = stats
        self._log = log
        self._due_at = 0.0
        self._leased: list[int] = []
        """Rows being replayed now; released by a shutdown that gives up on them."""

    def due_in_locked(self, now: float) -> float:
        """Seconds until the outbox should be looked at (zero or less: now)."""
        return self._due_at - now

    def begin_locked(self, now: float) -> None:
        """The delivery thread takes this turn: the next look is at most a poll away."""
        self._due_at = now + _OUTBOX_POLL_S

    def leased_locked(self) -> list[int]:
        return list(self._leased)

    def look_within(self, seconds: float) -> None:
        """Look at the outbox within ``seconds`` (sooner than planned, never later)."""
        with self._ledger.cond:
            due_at = time.monotonic() + seconds
            if due_at < self._due_at:
                self._due_at = due_at
                self._ledger.cond.notify_all()

    def replay_due(self) -> None:
        """Deliver one due outbox row (on the delivery thread, outside the lock).

        Shutdown waits for it like for a run in flight, and releases the row if it gives up.
        """
        outbox = self._outbox
        try:
            rows = outbox.take_due(limit=1)
            leased = [row.row_id for row in rows]
            with self._ledger.cond:
                given_up = self._ledger.phase not in (Phase.RUNNING, Phase.DRAINING)
                self._leased = leased
            if given_up:  # shutdown did not wait for this replay: leave the rows to the next process
                self.release(leased)
                return
            for row in rows:
                if replay_row(outbox, row, self._emit, self._max_backoff):
                    self._stats.runs_replayed += 1
            soonest = 0.0 if rows else outbox.next_due_in()
        except Exception as failure:
            self._log.log(logging.ERROR, "outbox", "could not read the outbox: %s", describe(failure))
            soonest = _OUTBOX_POLL_S
        finally:
            with self._ledger.cond:
                self._leased = []
        self.look_within(_OUTBOX_POLL_S if soonest is None else min(soonest, _OUTBOX_POLL_S))

    def release(self, row_ids: list[int]) -> None:
        """Give up the leases on rows this process will not finish, so that the next process need
        not wait them out."""
        if not row_ids:
            return
        try:
            self._outbox.release(row_ids)
        except Exception as failure:  # the lease then runs out on its own
            self._log.log(logging.ERROR, "outbox", "could not write to the outbox: %s", describe(failure))


# ---- the retry queue and the delivery thread ----


class Overflow(Enum):
    """What a full retry queue does with one more run."""

    EVICT_OLDEST = "evict_oldest"
    """Without an outbox, in process: the oldest queued runs are given up (dropped, counted)."""
    HAND_OVER = "hand_over"
    """With an outbox: the new run is given to the spiller, which stores it."""
    KEEP = "keep"
    """Without an outbox, behind a front door that refuses while the queue is full (the gateway):
    the run is queued past the bound, which admission keeps from growing further (a run that was
    acknowledged is never dropped to make room)."""


class RetryQueue:
    """The runs waiting for delivery in memory, bounded by count (``capacity``) and bytes
    (``QUEUE_MAX_BYTES``), and the delivery thread that builds and emits them.

    A run whose emit fails goes to ``spill`` when there is one (the outbox keeps it); otherwise it
    waits here for its retry, with backoff and jitter. When no queued run is due, the delivery
    thread gives its turn to the ``replayer``.
    """

    def __init__(
        self,
        ledger: Ledger,
        emit: Emit,
        *,
        producer: str,
        capacity: int,
        retry_max_backoff_s: float,
        stats: Stats,
        log: RateLimitedLog,
        spill: Callable[[_Pending, str, str | None], None] | None = None,
        replayer: Replayer | None = None,
    ) -> None:
        self._ledger = ledger
        self._emit = emit
        self._producer = producer
        self._capacity = capacity
        self._max_backoff = retry_max_backoff_s
        self._stats = stats
        self._log = log
        self._spill = spill
        self._replayer = replayer
        self._ready: deque[_Pending] = deque()
        self._retry: list[_Pending] = []
        """A heap by the time each run is due again."""
        self._bytes = 0
        self._in_flight: _Pending | None = None
        self._busy_since: float | None = None
        """When the delivery thread began its current emit or replay; None while it waits."""
        self._idle = False
        """The delivery thread waits for work (``_next``): a queued run must wake it."""
        self._thread = threading.Thread(target=self._deliver_loop, name="aigp-bridge-deliver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def depth(self) -> int:
        return len(self._ready) + len(self._retry)

    # ---- called with the ledger's lock held ----

    def put_locked(self, pending: _Pending, *, overflow: Overflow) -> list[_Pending]:
        """Queue a run. Returns the runs that do not fit: none with ``Overflow.KEEP``, the new one
        with ``Overflow.HAND_OVER``, the oldest queued ones (as many as make room for it) with
        ``Overflow.EVICT_OLDEST``."""
        if not self._fits(pending.size) and overflow is not Overflow.KEEP:
            if overflow is Overflow.HAND_OVER:
                return [pending]
            evicted: list[_Pending] = []
            while self.depth() and not self._fits(pending.size):
                evicted.append(self._pop_oldest_locked())
            self._append_locked(pending)
            return evicted
        self._append_locked(pending)
        return []

    def drain_locked(self, deadline: float, *, stuck_after_s: float | None) -> None:
        """Make every retry due now and wait, until the deadline, for the queue to empty and the
        delivery thread to finish its emit or replay; not for one busy longer than
        ``stuck_after_s``."""
        for pending in self._retry:
            pending.next_at = 0.0
        heapq.heapify(self._retry)
        self._ledger.cond.notify_all()
        while self._ready or self._retry or self._busy_since is not None:
            now = time.monotonic()
            if now >= deadline or not self._thread.is_alive():
                return
            if stuck_after_s is not None and self._busy_since is not None and (
                now - self._busy_since > stuck_after_s
            ):
                return
            self._ledger.cond.wait(min(0.1, deadline - now))

    def close_locked(self) -> list[_Pending]:
        """Empty the queue (the phase is ``CLOSED``): every run left, the one in flight included
        (it may still arrive as well: at least once)."""
        left = list(self._ready) + self._retry
        if self._in_flight is not None:
            left.append(self._in_flight)
        self._ready.clear()
        self._retry.clear()
        self._bytes = 0
        return left

    def _fits(self, size: int) -> bool:
        return self.depth() < self._capacity and self._bytes + size <= QUEUE_MAX_BYTES

    def full_locked(self, coming: int = 0) -> bool:
        """At or over its bound (by count, with ``coming`` runs still to be queued, or bytes): a
        front door that can refuse should."""
        return self.depth() + coming >= self._capacity or self._bytes >= QUEUE_MAX_BYTES

    def _append_locked(self, pending: _Pending) -> None:
        self._ready.append(pending)
        self._bytes += pending.size
        if self._idle:  # only the delivery thread waits for a run to be queued
            self._ledger.cond.notify_all()

    def _pop_oldest_locked(self) -> _Pending:
        if self._ready:
            oldest = self._ready.popleft()
        else:
            oldest = min(self._retry, key=lambda p: p.seq)
            self._retry.remove(oldest)
            heapq.heapify(self._retry)
        self._bytes -= oldest.size
        return oldest

    # ---- the delivery thread ----

    def _deliver_loop(self) -> None:
        while True:
            try:
                work = self._next()
                if work is None:
                    return
                try:
                    work()
                finally:  # settled while still busy: a shutdown that saw it idle finds it settled
                    with self._ledger.cond:
                        self._in_flight = self._busy_since = None
                        self._ledger.cond.notify_all()
            except Exception:  # a bug must not end delivery
                self._log.log(logging.ERROR, "deliver", "delivery thread error", exc_info=True)
                time.sleep(_ERROR_PAUSE_S)

    def _next(self) -> Callable[[], None] | None:
        """The next piece of work: a due run, else a due replay; None once the queue is closed."""
        ledger = self._ledger
        with ledger.cond:
            while True:
                if ledger.phase in (Phase.CLOSED, Phase.STOPPED):
                    return None
                now = time.monotonic()
                item: _Pending | None = None
                if self._ready:
                    item = self._ready.popleft()
                elif self._retry and self._retry[0].next_at <= now:
                    item = heapq.heappop(self._retry)
                if item is not None:
                    self._bytes -= item.size
                    self._in_flight, self._busy_since = item, now
                    return partial(self._deliver, item)
                replayer = self._replayer if ledger.phase is Phase.RUNNING else None
                if replayer is not None and replayer.due_in_locked(now) <= 0:
                    replayer.begin_locked(now)
                    self._busy_since = now
                    return replayer.replay_due
                waits = [self._retry[0].next_at - now] if self._retry else []
                if replayer is not None:
                    waits.append(replayer.due_in_locked(now))
                self._idle = True
                try:
                    ledger.cond.wait(max(0.0, min(waits)) if waits else None)
                finally:
                    self._idle = False

    def _deliver(self, pending: _Pending) -> None:
        """One attempt: delivered, stored, requeued for a retry, or dropped."""
        pending.attempts += 1
        try:
            event = build_run_event(pending.run, self._producer)
        except Exception:
            self._stats.build_failures += 1
            self._log.log(logging.ERROR, "build", "could not build a RunEvent", exc_info=True)
            self._ledger.drop(pending, "it could not be built")
            return
        error = self._emit(event)
        if error is None:
            with self._ledger.cond:
                self._ledger.settle_locked((pending.seq,))
            return
        if self._spill is not None:
            self._log.log(logging.WARNING, "emit", "OpenLineage emit failed (%s); storing the run", error)
            self._spill(pending, "emit failed", error)
            return
        with self._ledger.cond:
            if not self._ledger.unsettled_locked(pending.seq):
                return
            running = self._ledger.phase is Phase.RUNNING
            retrying = running or pending.attempts == 1  # shutdown tries a run once more, not again
            if retrying:
                delay = backoff_s(pending.attempts, self._max_backoff) if running else 0.0
                pending.next_at = time.monotonic() + delay
                heapq.heappush(self._retry, pending)
                self._bytes += pending.size
                self._ledger.cond.notify_all()
        if retrying:
            self._log.log(logging.WARNING, "emit", "OpenLineage emit failed (%s); will retry", error)
        else:
            self._ledger.drop(pending, f"the lineage backend kept failing until shutdown ({error})")


# ---- the façade the engine calls ----


class Deliverer:
    """Delivery as the engine sees it: ``submit`` a decided run, wait for it (``wait_delivered``),
    ``shutdown``. Wires the ledger, the retry queue and, with an outbox, the spiller and the
    replayer; a forked child's engine makes a new one (fresh lock and threads)."""

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
        self._ledger = Ledger(stats, log)
        counted_emit = partial(_try_emit, emit, stats)
        self._replayer: Replayer | None = None
        self._spiller: OutboxSpiller | None = None
        if outbox is not None:
            self._replayer = Replayer(
                self._ledger, outbox, counted_emit, retry_max_backoff_s=retry_max_backoff_s,
                stats=stats, log=log,
            )
            self._spiller = OutboxSpiller(
                self._ledger, outbox, producer=producer, retry_max_backoff_s=retry_max_backoff_s,
                stats=stats, log=log,
            )
        self._queue = RetryQueue(
            self._ledger, counted_emit, producer=producer, capacity=max_queue_size,
            retry_max_backoff_s=retry_max_backoff_s, stats=stats, log=log,
            spill=None if self._spiller is None else self._spiller.keep, replayer=self._replayer,
        )
        self._queue.start()
        if self._spiller is not None:
            self._spiller.start()
        self.keep_acknowledged = False
        """Set by a front door that refuses while ``has_room`` is False (the gateway): without an
        outbox, a full queue then keeps a run past its bound rather than drop the oldest."""

    @property
    def phase(self) -> Phase:
        return self._ledger.phase

    def depth(self) -> int:
        """Runs waiting for delivery in memory, retries included."""
        return self._queue.depth()

    @property
    def last_seq(self) -> int:
        return self._ledger.last_seq

    def set_on_settled(self, hook: Callable[[list[object]], None] | None) -> None:
        """Hear of the tokens of runs as they are delivered or stored (see ``Ledger.on_settled``)."""
        with self._ledger.cond:
            self._ledger.on_settled = hook

    def has_room(self, coming: int = 0) -> bool:
        """The retry queue, with ``coming`` runs still to be decided (pending traces), is under its
        bound and the spiller has room: a front door that can refuse (the gateway) acknowledges
        more only then, the way the Collector's ``memory_limiter`` refuses before accepting."""
        with self._ledger.cond:
            if self._queue.full_locked(coming):
                return False
            return self._spiller is None or self._spiller.backlog_bytes_locked() < SPILL_MAX_BYTES // 2

    def tally(self) -> tuple[int, int, int]:
        """Submitted runs (delivered, stored, dropped) so far; with the runs still unsettled they
        add up to every run submitted."""
        with self._ledger.cond:
            return self._ledger.delivered, self._ledger.stored, self._ledger.drops

    def submit(self, run: DecidedRun, token: object | None = None) -> None:
        """Queue a run, never waiting for I/O. When the queue is full: with an outbox the new run
        is stored; without one, the oldest are dropped (counted), or, with ``keep_acknowledged``,
        the run is queued past the bound. ``token`` is passed to the ``on_settled`` hook once the
        run is delivered or stored."""
        size = approximate_size(run)
        if self._spiller is not None:
            overflow = Overflow.HAND_OVER
        else:
            overflow = Overflow.KEEP if self.keep_acknowledged else Overflow.EVICT_OLDEST
        with self._ledger.cond:
            pending = self._ledger.admit_locked(run, size, token)
            if self._ledger.phase in (Phase.CLOSED, Phase.STOPPED):
                refused = [(pending, "it was decided after shutdown")]
            else:
                displaced = self._queue.put_locked(pending, overflow=overflow)
                refused = [(victim, "the delivery queue is full") for victim in displaced]
        for victim, why in refused:
            self._give_up(victim, why)

    def wait_delivered(self, upto_seq: int, deadline: float) -> bool:
        """Wait until every run up to ``upto_seq`` is delivered or stored; False on timeout or a drop."""
        return self._ledger.wait_settled(upto_seq, deadline)

    def shutdown(self, deadline: float) -> bool:
        """Deliver what is queued until the deadline; with an outbox, only until
        ``store_reserve_s`` before it, and store it instead as soon as the backend fails or an
        emit hangs (``STUCK_EMIT_S``). What is left (a run inside a hung ``emit`` included) is
        stored or counted as dropped. True when nothing was dropped; a second call returns True
        at once."""
        ledger = self._ledger
        with ledger.cond:
            if ledger.phase is not Phase.RUNNING:
                return True
            drops_before = ledger.drops
            ledger.phase = Phase.DRAINING
            drain_until = deadline
            if self._spiller is not None:
                drain_until -= store_reserve_s(deadline - time.monotonic())
            self._queue.drain_locked(
                drain_until, stuck_after_s=None if self._spiller is None else STUCK_EMIT_S
            )
            ledger.phase = Phase.CLOSED
            left = self._queue.close_locked()
            unfinished = [] if self._replayer is None else self._replayer.leased_locked()
            ledger.cond.notify_all()
        for pending in left:
            self._give_up(pending, "it was still undelivered at shutdown")
        if self._replayer is not None:  # the rows may still arrive as well; due now for the next process
            self._replayer.release(unfinished)
        with ledger.cond:
            ledger.phase = Phase.STOPPED
        if self._spiller is not None:
            self._spiller.stop(deadline)
        with ledger.cond:
            return ledger.drops == drops_before

    def _give_up(self, pending: _Pending, why: str) -> None:
        """A run that cannot wait in memory: stored with an outbox, else dropped (counted)."""
        if self._spiller is not None:
            self._spiller.keep(pending, why)
        else:
            self._ledger.drop(pending, why)


# ---- a manual replay (``aigp-otel-bridge outbox replay``) ----


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
