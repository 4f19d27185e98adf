"""Delivery: decided runs are built and handed to ``OpenLineageClient.emit`` on a worker thread.

A failed emit is retried with exponential backoff and jitter (first retry within 1 s, capped
at ``retry_max_backoff_s``) from a bounded in-memory queue. When the queue is full the oldest
run is dropped and counted. The application's threads never wait here: only ``force_flush``
and ``shutdown`` do, and only as long as their timeout.
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

from aigp_otel_bridge.lineage import DecidedRun, build_run_event
from aigp_otel_bridge.telemetry import RateLimitedLog, Stats

_log = logging.getLogger(__name__)


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


class Deliverer:
    """Owns the delivery thread, its bounded queue and its retries."""

    def __init__(
        self,
        emit: Callable[[Any], None],
        *,
        producer: str,
        max_queue_size: int,
        retry_max_backoff_s: float,
        stats: Stats,
        log: RateLimitedLog,
    ) -> None:
        self._emit = emit
        self._producer = producer
        self._capacity = max_queue_size
        self._max_backoff = retry_max_backoff_s
        self._stats = stats
        self._log = log
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
        with self._cond:
            if self._stopping:
                self._drop_locked(_Pending(0.0, -1, run), "the bridge is shut down")
                return
            if self.depth() >= self._capacity:
                if self._retry:
                    oldest = min(self._retry, key=lambda p: p.seq)
                    self._retry.remove(oldest)
                    heapq.heapify(self._retry)
                else:
                    oldest = self._ready.popleft()
                self._drop_locked(oldest, "the delivery queue is full")
            self._seq += 1
            self._unresolved.add(self._seq)
            self._ready.append(_Pending(0.0, self._seq, run))
            self._cond.notify_all()

    def wait_delivered(self, upto_seq: int, deadline: float) -> bool:
        """Wait until every run up to ``upto_seq`` is delivered; False on timeout or a drop."""
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
        """Deliver what is queued (one last attempt each, no backoff) until the deadline; count the rest."""
        with self._cond:
            self._stopping = True
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
                self._drop_locked(pending, "it was still undelivered at shutdown")
            self._cond.notify_all()
            return not left and not self._thread.is_alive()

    def _drop_locked(self, pending: _Pending, why: str) -> None:
        self._unresolved.discard(pending.seq)
        self._drops += 1
        self._stats.runs_dropped += 1
        self._log.log(
            logging.ERROR, "drop", "dropped the lineage run %s of trace %s because %s",
            pending.run.run_id, pending.run.trace_id, why,
        )

    def _next_locked(self) -> _Pending | None:
        while True:
            if self._ready:
                return self._ready.popleft()
            now = time.monotonic()
            if self._retry and self._retry[0].next_at <= now:
                return heapq.heappop(self._retry)
            if self._stopping:
                return None
            wait = self._retry[0].next_at - now if self._retry else None
            self._cond.wait(wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                pending = self._next_locked()
            if pending is None:
                return
            delivered = self._attempt(pending)
            with self._cond:
                if delivered is None:
                    self._drop_locked(pending, "it could not be built")
                elif delivered:
                    self._unresolved.discard(pending.seq)
                elif self._stopping and pending.attempts > 1:
                    self._drop_locked(pending, "the lineage backend kept failing until shutdown")
                else:
                    pending.next_at = time.monotonic() + (
                        0.0 if self._stopping else backoff_s(pending.attempts, self._max_backoff)
                    )
                    heapq.heappush(self._retry, pending)
                self._cond.notify_all()

    def _attempt(self, pending: _Pending) -> bool | None:
        """One build and emit; True delivered, False failed (retry), None unbuildable."""
        pending.attempts += 1
        try:
            event = build_run_event(pending.run, self._producer)
        except Exception:
            self._stats.build_failures += 1
            self._log.log(logging.ERROR, "build", "could not build a RunEvent", exc_info=True)
            return None
        try:
            self._emit(event)
        except Exception as error:
            self._stats.emit_failures += 1
            self._log.log(
                logging.WARNING, "emit", "OpenLineage emit failed (%s: %s); will retry",
                type(error).__name__, error,
            )
            return False
        self._stats.runs_emitted += 1
        return True
