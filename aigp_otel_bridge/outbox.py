"""The durable outbox: RunEvents the lineage backend could not take, kept in SQLite until delivered.

One row per event, identified by ``(runId, eventType, eventTime)`` (two early parts of one run
share run id and type but not time). The payload is the RunEvent's JSON, serialised before any
``emit`` touched it. WAL mode lets one process write while others read; rows are *leased* while
being delivered, so two processes on one folder rarely send the same row twice, and a process
killed mid-delivery leaves its rows to the next one once the lease runs out.

The outbox is bounded: storing past ``max_events`` deletes the oldest rows, and that count is the
only loss the bridge admits to (``outbox_dropped``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DATABASE_NAME = "aigp-bridge-outbox.sqlite3"
LEASE_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_time TEXT NOT NULL,
    payload TEXT NOT NULL,
    stored_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    UNIQUE (run_id, event_type, event_time)
);
CREATE INDEX IF NOT EXISTS pending_runs_due ON pending_runs (next_attempt_at);
"""


@dataclass(frozen=True)
class StoredRun:
    """A row taken for delivery: its payload and how often it was tried."""

    row_id: int
    run_id: str
    event_type: str
    payload: str
    attempts: int


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    oldest_age_s: float | None
    last_error: str | None
    next_attempt_in_s: float | None


class Outbox:
    """A SQLite-backed queue of undelivered RunEvents in one folder; safe across threads and processes."""

    def __init__(self, directory: str | Path, max_events: int = 100_000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / DATABASE_NAME
        self.max_events = max_events
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def store(
        self, payload: str, *, error: str | None = None, attempts: int = 0, delay_s: float = 0.0
    ) -> tuple[bool, int]:
        """Keep one RunEvent; returns (stored anew, oldest rows dropped to make room).

        False means the same event (run id, type, time) was already waiting: a duplicate.
        """
        event = json.loads(payload)
        key = (event["run"]["runId"], event["eventType"], event["eventTime"])
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO pending_runs (run_id, event_type, event_time, payload, stored_at,"
                " attempts, next_attempt_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, payload, now, attempts, now + delay_s, error),
            )
            if cursor.rowcount == 0:
                return False, 0
            (count,) = db.execute("SELECT COUNT(*) FROM pending_runs").fetchone()
            excess = count - self.max_events
            if excess > 0:
                db.execute(
                    "DELETE FROM pending_runs WHERE id IN"
                    " (SELECT id FROM pending_runs ORDER BY id LIMIT ?)",
                    (excess,),
                )
            return True, max(0, excess)

    def take_due(self, limit: int = 16, now: float | None = None) -> list[StoredRun]:
        """Lease up to ``limit`` rows whose next attempt is due, oldest first."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, run_id, event_type, payload, attempts FROM pending_runs"
                " WHERE next_attempt_at <= ? ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE pending_runs SET next_attempt_at = ? WHERE id = ?",
                [(now + LEASE_S, row[0]) for row in rows],
            )
        return [StoredRun(*row) for row in rows]

    def delivered(self, row_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM pending_runs WHERE id = ?", (row_id,))

    def failed(self, row_id: int, error: str, retry_in_s: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE pending_runs SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                " WHERE id = ?",
                (error[:2000], time.time() + retry_in_s, row_id),
            )

    def release_all(self) -> None:
        """Make every row due now (a manual replay does not wait for backoff or leases)."""
        with self._transaction() as db:
            db.execute("UPDATE pending_runs SET next_attempt_at = 0")

    def next_due_in(self) -> float | None:
        """Seconds until the next row is due (0 if one is due now), None when empty."""
        with self._lock:
            (soonest,) = self._db.execute("SELECT MIN(next_attempt_at) FROM pending_runs").fetchone()
        return None if soonest is None else max(0.0, soonest - time.time())

    def depth(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM pending_runs").fetchone()
        return int(count)

    def status(self) -> OutboxStatus:
        now = time.time()
        with self._lock:
            count, oldest, soonest = self._db.execute(
                "SELECT COUNT(*), MIN(stored_at), MIN(next_attempt_at) FROM pending_runs"
            ).fetchone()
            row = self._db.execute(
                "SELECT last_error FROM pending_runs WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return OutboxStatus(
            pending=int(count),
            oldest_age_s=None if oldest is None else max(0.0, now - oldest),
            last_error=row[0] if row else None,
            next_attempt_in_s=None if soonest is None else max(0.0, soonest - now),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
