"""The durable outbox: RunEvents the lineage backend could not take, kept in SQLite until delivered.

One row per event, identified by ``(runId, eventType, eventTime)`` (two early parts of one run
share run id and type but not time). The payload is the RunEvent's JSON, serialised before any
``emit`` touched it. WAL mode lets one process write while others read; rows are *leased* while
being delivered, so two processes on one folder rarely send the same row twice, and a process
killed mid-delivery leaves its rows to the next one once the lease runs out.

The outbox is bounded: storing past ``max_events`` deletes the oldest rows, and ``store`` says how
many (the deliverer counts them in ``outbox_dropped``).

Making an ``Outbox`` prepares and checks the folder and the database at once (with ``create``,
made 0700 and 0600; in WAL mode, with its table): a database file that cannot be read is moved
aside (kept, renamed) and a fresh one used; a folder that cannot be used raises
``OutboxUnusableError`` so that the caller decides (a programmer's argument: an error; the
environment: a warning). After that no connection stays open: each operation opens its own and
closes it, so a forked child never touches a connection of its parent, and the child makes the
lock again (``claim``). An operation that fails (disk full, a file size limit) raises; the
deliverer catches and counts it, so it never reaches the application.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DATABASE_NAME = "aigp-bridge-outbox.sqlite3"
LEASE_S = 60.0
LAST_ERROR_MAX = 2000

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
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    root_id TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_run ON journal (trace_id, root_id, batch);
"""


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``db``, begun at once (so a writer waits for the lock here rather
    than failing midway), rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")

class OutboxUnusableError(Exception):
    """The outbox folder or database cannot be used (not a folder, no permission, a symlink)."""


@dataclass(frozen=True)
class EventKey:
    """What identifies a stored RunEvent: run id, event type and event time."""

    run_id: str
    event_type: str
    event_time: str


@dataclass(frozen=True)
class NewRow:
    """A RunEvent to store: its key, its JSON, and why and how often its delivery failed."""

    key: EventKey
    payload: str
    error: str | None = None
    attempts: int = 0
    delay_s: float = 0.0


@dataclass(frozen=True)
class JournalRow:
    """Governance one request brought for one run: the batch (request) number, the run's trace
    and local root (hex; ``0`` when the root is not known), and the notes (``journal.dump_notes``)."""

    batch: int
    trace_id: str
    root_id: str
    payload: bytes


@dataclass(frozen=True)
class JournalMark:
    """A run delivered or stored: its trace's and root's journal rows up to ``batch`` may go."""

    trace_id: str
    root_id: str
    batch: int


@dataclass(frozen=True)
class StoredRun:
    """A row taken for delivery: its payload and how often it was tried."""

    row_id: int
    payload: str
    attempts: int


@dataclass(frozen=True)
class StoreResult:
    """What one ``store`` did with its rows."""

    stored: int = 0
    duplicates: int = 0
    dropped: int = 0
    """Oldest rows deleted to stay within ``max_events``."""


@dataclass(frozen=True)
class OutboxStatus:
    """What ``aigp-otel-bridge outbox status`` shows: rows waiting, the oldest's age, the latest
    error, and when the next row is due (None when empty)."""

    pending: int
    oldest_age_s: float | None
    last_error: str | None
    next_attempt_in_s: float | None


def _prepare_folder(directory: Path) -> None:
    """Create the folder (0700) or check the existing one; ``OutboxUnusableError`` saying why not."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise OutboxUnusableError(f"{directory} exists and is not a folder") from None
    except OSError as error:
        reason = error.strerror or error
        raise OutboxUnusableError(f"cannot create the folder {directory}: {reason}") from None
    if not directory.is_dir():
        raise OutboxUnusableError(f"{directory} is not a folder")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutboxUnusableError(f"no permission to write in {directory}")


def _create_file(path: Path) -> None:
    """The database file, created 0600 without following a symlink; a symlink is refused."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise OutboxUnusableError(f"{path} is a symbolic link; refusing to follow it")
    except FileNotFoundError:
        pass
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as error:
        raise OutboxUnusableError(f"cannot open {path}: {error.strerror or error}") from None
    os.close(descriptor)


class Outbox:
    """A SQLite-backed queue of undelivered RunEvents in one folder; safe across threads and processes.

    ``OutboxUnusableError`` when the folder or file cannot be used. ``moved_aside`` lists unreadable
    database files this instance renamed before starting a fresh one.
    """

    def __init__(self, directory: str | Path, max_events: int = 100_000, *, create: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DATABASE_NAME
        self.max_events = max_events
        self.moved_aside: list[Path] = []
        if create:
            _prepare_folder(self.directory)
        elif not self.directory.is_dir():
            raise OutboxUnusableError(f"{self.directory} is not a folder")
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._usable = True
        self._kept: tuple[int, sqlite3.Connection] | None = None
        """The journal's connection and the process that opened it (``_journal_connection``)."""
        self._open(create=create)

    # ---- connections: one per operation, never across fork ----

    def _open(self, *, create: bool = True) -> None:
        """Check the database once, at construction: made 0600 (when creating), never through a
        symlink, readable, in WAL mode, with its table; an unreadable file is moved aside (when
        creating) and a fresh one started."""
        if create:
            _create_file(self.path)
        else:
            try:
                linked = stat.S_ISLNK(os.lstat(self.path).st_mode)
            except OSError as error:
                raise OutboxUnusableError(f"cannot open {self.path}: {error.strerror or error}") from None
            if linked:
                raise OutboxUnusableError(f"{self.path} is a symbolic link; refusing to follow it")
        try:
            self._connect(prepare=True).close()
        except sqlite3.DatabaseError as error:
            if not create or isinstance(error, sqlite3.OperationalError):
                raise OutboxUnusableError(f"{self.path}: {error}") from None
            self._move_aside()
            _create_file(self.path)
            self._connect(prepare=True).close()

    def _connect(self, *, prepare: bool = False, synced: bool = True) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            if prepare:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                db.execute("SELECT COUNT(*) FROM pending_runs").fetchone()
            db.execute("PRAGMA synchronous=FULL" if synced else "PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self) -> None:
        """Keep an unreadable database under a new name (never deleted) and start afresh."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{DATABASE_NAME}.unreadable-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{target}{suffix}"))
        self.moved_aside.append(target)

    def claim(self) -> bool:
        """Make this process the owner (after fork: a fresh lock); False when SQLite cannot be used
        here. Called before this process's threads use the outbox, so that they share one lock.

        A child forked while a parent thread was inside an operation inherits SQLite's in-process
        lock records of that open connection; the database would look locked to it for ever.
        The inherited lock tells: it was held at fork time exactly when a connection was open.
        """
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._usable = not self._lock.locked()
            self._lock = threading.Lock()
        return self._usable

    @contextmanager
    def _locked(self, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection for one operation. SQLite connections must not cross ``fork``; opened
        and closed around each operation, none is open in a parent that forks between them.
        ``synced``: each commit is ``fsync``ed (survives a power loss), else it is written to the
        operating system before the commit returns (survives the process being killed)."""
        self.claim()
        with self._lock:
            db = self._connect(synced=synced)
            try:
                yield db
            finally:
                db.close()

    @contextmanager
    def _transaction(self, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        with self._locked(synced=synced) as db, _immediate(db):
            yield db

    # ---- queue operations ----

    def store(self, rows: Sequence[NewRow]) -> StoreResult:
        """Keep RunEvents, in one transaction; an event already waiting is a duplicate."""
        if not rows:
            return StoreResult()
        now = time.time()
        stored = 0
        with self._transaction() as db:
            for row in rows:
                key = row.key
                cursor = db.execute(
                    "INSERT OR IGNORE INTO pending_runs (run_id, event_type, event_time, payload, stored_at,"
                    " attempts, next_attempt_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key.run_id, key.event_type, key.event_time, row.payload, now, row.attempts,
                     now + row.delay_s, None if row.error is None else row.error[:LAST_ERROR_MAX]),
                )
                stored += cursor.rowcount
            excess = 0
            if stored:
                (count,) = db.execute("SELECT COUNT(*) FROM pending_runs").fetchone()
                excess = max(0, count - self.max_events)
                if excess:
                    db.execute(
                        "DELETE FROM pending_runs WHERE id IN"
                        " (SELECT id FROM pending_runs ORDER BY id LIMIT ?)",
                        (excess,),
                    )
        return StoreResult(stored=stored, duplicates=len(rows) - stored, dropped=excess)

    def take_due(self, limit: int = 16, now: float | None = None) -> list[StoredRun]:
        """Lease up to ``limit`` rows whose next attempt is due, oldest first."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, payload, attempts FROM pending_runs"
                " WHERE next_attempt_at <= ? ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE pending_runs SET next_attempt_at = ? WHERE id = ?",
                [(now + LEASE_S, row[0]) for row in rows],
            )
        return [StoredRun(*row) for row in rows]

    def delivered(self, row_id: int) -> None:
        """The row's event was delivered: delete it."""
        with self._transaction() as db:
            db.execute("DELETE FROM pending_runs WHERE id = ?", (row_id,))

    def failed(self, row_id: int, error: str, retry_in_s: float) -> None:
        """One more failed attempt: keep its error (cut) and when to try again."""
        with self._transaction() as db:
            db.execute(
                "UPDATE pending_runs SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                " WHERE id = ?",
                (error[:LAST_ERROR_MAX], time.time() + retry_in_s, row_id),
            )

    def release(self, row_ids: Sequence[int]) -> None:
        """Make leased rows due now: a process that stops without finishing them hands them on."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE pending_runs SET next_attempt_at = MIN(next_attempt_at, ?) WHERE id = ?",
                [(time.time(), row_id) for row_id in row_ids],
            )

    def release_all(self) -> None:
        """Make every row due now (a manual replay does not wait for backoff or leases)."""
        with self._transaction() as db:
            db.execute("UPDATE pending_runs SET next_attempt_at = 0")

    def next_due_in(self) -> float | None:
        """Seconds until the next row is due (0 if one is due now), None when empty."""
        with self._locked() as db:
            (soonest,) = db.execute("SELECT MIN(next_attempt_at) FROM pending_runs").fetchone()
        return None if soonest is None else max(0.0, soonest - time.time())

    def depth(self) -> int:
        """Rows waiting, leased ones included."""
        with self._locked() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM pending_runs").fetchone()
        return int(count)

    def status(self) -> OutboxStatus:
        """Rows waiting, the oldest's age, the latest error and the next due time, in one read."""
        now = time.time()
        with self._locked() as db:
            count, oldest, soonest = db.execute(
                "SELECT COUNT(*), MIN(stored_at), MIN(next_attempt_at) FROM pending_runs"
            ).fetchone()
            row = db.execute(
                "SELECT last_error FROM pending_runs WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return OutboxStatus(
            pending=int(count),
            oldest_age_s=None if oldest is None else max(0.0, now - oldest),
            last_error=row[0] if row else None,
            next_attempt_in_s=None if soonest is None else max(0.0, soonest - now),
        )

    # ---- the journal of acknowledged governance (journal.py) ----

    @contextmanager
    def _journal_connection(self) -> Iterator[sqlite3.Connection]:
        """The journal's one connection, kept open until ``close``: the last connection to a WAL
        database to close checkpoints it (an ``fsync``), which per request would cost more than
        the request. Opened by the process that uses it (a forked child opens its own)."""
        self.claim()
        with self._lock:
            if self._kept is None or self._kept[0] != os.getpid():
                self._kept = (os.getpid(), self._connect(synced=False))
            with _immediate(self._kept[1]) as db:
                yield db

    def journal_write(self, rows: Sequence[JournalRow], forget: Sequence[JournalMark]) -> None:
        """In one transaction: add a request's rows, then delete those of runs since delivered or
        stored (each mark: its trace's and root's rows of that batch or earlier). Written to the
        operating system, not ``fsync``ed, before it returns: the journal survives the process
        being killed; a power loss may take its last transactions (``fsync`` per request would
        cost more than the request)."""
        if not rows and not forget:
            return
        with self._journal_connection() as db:
            if rows:
                db.executemany(
                    "INSERT INTO journal (batch, trace_id, root_id, payload) VALUES (?, ?, ?, ?)",
                    [(row.batch, row.trace_id, row.root_id, row.payload) for row in rows],
                )
            if forget:  # after the insert: a run settled already may cover this very batch
                db.executemany(
                    "DELETE FROM journal WHERE trace_id = ? AND root_id = ? AND batch <= ?",
                    [(mark.trace_id, mark.root_id, mark.batch) for mark in forget],
                )

    def journal_rows(self) -> list[JournalRow]:
        """Every journal row, in the order written."""
        with self._locked() as db:
            found = db.execute("SELECT batch, trace_id, root_id, payload FROM journal ORDER BY id").fetchall()
        return [JournalRow(*row) for row in found]

    def journal_last_batch(self) -> int:
        """The highest batch number in the journal (0 when it is empty)."""
        with self._locked() as db:
            (last,) = db.execute("SELECT MAX(batch) FROM journal").fetchone()
        return int(last or 0)

    def close(self) -> None:
        """Close the journal's connection, if this process opened one; nothing else stays open
        between operations."""
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is not None and kept[0] == os.getpid():
            kept[1].close()
