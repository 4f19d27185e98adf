"""Delivery: decided runs are built and handed to ``OpenLineageClient.emit`` on a worker thread.

A failed emit is retried with exponential backoff and jitter (first retry within 1 s, capped at
``retry_max_backoff_s``). Where the retry waits depends on the configuration:

- with an outbox (``outbox_dir``), in SQLite: the run is stored durably the moment ``emit`` fails
  or the delivery queue is full, and replayed from there, by this process or the next one;
- without one, in a bounded in-memory queue: when it is full the oldest run is dropped, and a
  process that dies takes its queue with it.

The application's threads never wait here: only ``force_flush`` and ``shutdown`` do, and only as
long as their timeout.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aigp_otel_bridge.build import DecidedRun, build_run_event, run_event_from_json, run_event_json
from aigp_otel_bridge.outbox import Outbox, StoredRun
from aigp_otel_bridge.telemetry import RateLimitedLog, Stats

_log = logging.getLogger(__name__)

_OUTBOX_POLL_S = 5.0
"""Longest wait before looking at the outbox again (rows of a dead process whose lease ran out)."""


@dataclass(order=True)
class _Pending:
    next_at: float
    seq: int
    run: DecidedRun = field(compare=False)
    attempts: int = field(default=0, compare=False)


def backoff_s(attempts: int, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempts`` (1-based): half fixed, half jitter, doubling, capped."""
    ceiling = min(cap_s, 2.0 ** (attempts - 1))
    return ceiling / 2 + rand() * ceiling / 2


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


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
        self._cond = threading.Condition()
        self._ready: deque[_Pending] = deque()
        self._retry: list[_Pending] = []
        self._unresolved: set[int] = set()
        self._seq = 0
        self._drops = 0
        self._drops_reported = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="aigp-bridge-deliver", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        return len(self._ready) + len(self._retry)

    @property
    def last_seq(self) -> int:
        return self._seq

    def submit(self, run: DecidedRun) -> None:
        """Queue a run (called by the correlation worker, never by the application)."""
        with self._cond:
            self._seq += 1
            pending = _Pending(0.0, self._seq, run)
            self._unresolved.add(pending.seq)
            if self._stopping:
                self._keep_or_drop_locked(pending, "the bridge is shut down")
                return
            if self.depth() >= self._capacity:
                if self._outbox is not None:
                    self._keep_or_drop_locked(pending, "the delivery queue is full")
                    return
                oldest = self._ready.popleft() if self._ready else self._pop_oldest_retry_locked()
                self._keep_or_drop_locked(oldest, "the delivery queue is full")
            self._ready.append(pending)
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
        """Try what is queued once more (no backoff) until the deadline; store or count the rest."""
        with self._cond:
            self._stopping = True
            drops_before = self._drops
            for pending in self._retry:
                pending.next_at = 0.0
            heapq.heapify(self._retry)
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = list(self._ready) + self._retry
            self._ready.clear()
            self._retry.clear()
            for pending in left:
                self._keep_or_drop_locked(pending, "it was still undelivered at shutdown")
            self._cond.notify_all()
            return self._drops == drops_before and not self._thread.is_alive()

    # ---- keeping what could not be delivered ----

    def _pop_oldest_retry_locked(self) -> _Pending:
        oldest = min(self._retry, key=lambda p: p.seq)
        self._retry.remove(oldest)
        heapq.heapify(self._retry)
        return oldest

    def _keep_or_drop_locked(self, pending: _Pending, why: str, error: str | None = None) -> None:
        """Store the run in the outbox when there is one; otherwise drop it and count it."""
        self._unresolved.discard(pending.seq)
        if self._outbox is not None and self._store(pending, error or why):
            return
        self._drops += 1
        self._stats.runs_dropped += 1
        self._log.log(
            logging.ERROR, "drop", "dropped the lineage run %s of trace %s because %s",
            pending.run.run_id, pending.run.trace_id, why,
        )

    def _store(self, pending: _Pending, error: str) -> bool:
        assert self._outbox is not None
        try:
            payload = run_event_json(pending.run, self._producer)
            stored, dropped = self._outbox.store(
                payload, error=error, attempts=pending.attempts,
                delay_s=backoff_s(max(1, pending.attempts), self._max_backoff),
            )
        except Exception as failure:
            self._log.log(logging.ERROR, "outbox", "could not write to the outbox: %s", _describe(failure))
            return False
        if stored:
            self._stats.runs_stored += 1
        else:
            self._stats.duplicates_detected += 1
        if dropped:
            self._stats.outbox_dropped += dropped
            self._log.log(
                logging.ERROR, "outbox-full", "outbox full: dropped the %d oldest stored runs", dropped
            )
        return True

    # ---- the delivery thread ----

    def _next_locked(self) -> _Pending | StoredRun | None:
        while True:
            if self._ready:
                return self._ready.popleft()
            now = time.monotonic()
            if self._retry and self._retry[0].next_at <= now:
                return heapq.heappop(self._retry)
            outbox_wait: float | None = None
            if self._outbox is not None and not self._stopping:
                due = self._take_from_outbox()
                if due is not None:
                    return due
                soonest = self._outbox.next_due_in()
                outbox_wait = _OUTBOX_POLL_S if soonest is None else min(soonest, _OUTBOX_POLL_S)
            if self._stopping:
                return None
            retry_wait = self._retry[0].next_at - now if self._retry else None
            waits = [wait for wait in (outbox_wait, retry_wait) if wait is not None]
            self._cond.wait(max(0.0, min(waits)) if waits else None)

    def _take_from_outbox(self) -> StoredRun | None:
        assert self._outbox is not None
        try:
            rows = self._outbox.take_due(limit=1)
        except Exception as failure:
            self._log.log(logging.ERROR, "outbox", "could not read the outbox: %s", _describe(failure))
            return None
        return rows[0] if rows else None

    def _run(self) -> None:
        while True:
            with self._cond:
                item = self._next_locked()
            if item is None:
                return
            if isinstance(item, StoredRun):
                self._replay(item)
            else:
                self._deliver(item)
            with self._cond:
                self._cond.notify_all()

    def _deliver(self, pending: _Pending) -> None:
        pending.attempts += 1
        try:
            event = build_run_event(pending.run, self._producer)
        except Exception:
            self._stats.build_failures += 1
            self._log.log(logging.ERROR, "build", "could not build a RunEvent", exc_info=True)
            with self._cond:
                self._keep_or_drop_locked(pending, "it could not be built")
            return
        error = self._try_emit(event)
        with self._cond:
            if error is None:
                self._unresolved.discard(pending.seq)
            elif self._outbox is not None:
                self._keep_or_drop_locked(pending, "emit failed", error)
            elif self._stopping and pending.attempts > 1:
                self._keep_or_drop_locked(pending, "the lineage backend kept failing until shutdown")
            else:
                delay = 0.0 if self._stopping else backoff_s(pending.attempts, self._max_backoff)
                pending.next_at = time.monotonic() + delay
                heapq.heappush(self._retry, pending)

    def _replay(self, stored: StoredRun) -> None:
        assert self._outbox is not None
        try:
            event = run_event_from_json(stored.payload)
        except Exception as failure:
            self._log.log(logging.ERROR, "outbox", "unreadable outbox row %d: %s", stored.row_id, failure)
            self._outbox.failed(stored.row_id, _describe(failure), retry_in_s=self._max_backoff)
            return
        error = self._try_emit(event)
        try:
            if error is None:
                self._outbox.delivered(stored.row_id)
                self._stats.runs_replayed += 1
            else:
                self._outbox.failed(
                    stored.row_id, error, retry_in_s=backoff_s(stored.attempts + 1, self._max_backoff)
                )
        except Exception as failure:
            self._log.log(logging.ERROR, "outbox", "could not update the outbox: %s", _describe(failure))

    def _try_emit(self, event: Any) -> str | None:
        """One emit; the error's description, or None when the client took the event."""
        try:
            self._emit(event)
        except Exception as error:
            self._stats.emit_failures += 1
            self._log.log(
                logging.WARNING, "emit", "OpenLineage emit failed (%s); will retry", _describe(error)
            )
            return _describe(error)
        self._stats.runs_emitted += 1
        return None


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
    outbox.release_all()
    cutoff = time.time()
    while True:
        rows = outbox.take_due(limit=64, now=cutoff)
        if not rows:
            return summary
        for row in rows:
            try:
                emit(run_event_from_json(row.payload))
            except Exception as error:
                summary.failed += 1
                summary.last_error = _describe(error)
                retry_in = backoff_s(row.attempts + 1, retry_max_backoff_s)
                outbox.failed(row.row_id, summary.last_error, retry_in)
            else:
                summary.delivered += 1
                outbox.delivered(row.row_id)
            if progress is not None:
                progress(1)
