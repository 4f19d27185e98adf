"""Correlation: records grouped by local root until the root's run is closed.

A run is keyed by (trace id, local root span id), so every local root of a trace (a caller and
its callee in one process, every service a gateway sees) gets its own run. A run is closed when
its local root ends, when it has been quiet for ``trace_timeout_s``, when the pending-run bound
evicts it (least recently active first), or at shutdown. Modelled on the Collector's
``groupbytraceprocessor``.

Where a record belongs: a span note names its local root when its front door knows it (the span
processor tracks it from ``on_start``); otherwise, and for full AIGP events, the record joins
the trace's first local root seen starting, else waits unattributed until a local root of its
trace ends and takes it in (the exporter and any front door that sees no starts).

The ``Correlator`` is a plain, single-threaded state machine: one worker owns it, so it needs no
locks, and tests drive it with explicit clocks.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.records import GovernanceRecord, ResourceFacts, RootFacts, SpanFacts, join_duplicate
from aigp_otel_bridge.telemetry import Stats

TraceKey = int | str
"""OTel's integer trace id; the text of an ingested event's trace id that is not 32 hex."""
RunKey = tuple[TraceKey, int | None]
"""(trace, local root span id); None while the records are not attributed to a local root."""


class Reason(enum.Enum):
    """Why a run was closed; everything but ROOT_ENDED makes an incomplete (early) run."""

    ROOT_ENDED = "root_ended"
    TIMEOUT = "timeout"
    EVICTED = "evicted"
    SHUTDOWN = "shutdown"


@dataclass
class Overflow:
    """What is kept of records past the per-run bound: only what the aggregate needs."""

    hashes: dict[str, tuple[str | None, int | None]] = field(default_factory=dict)
    count: int = 0
    denied: int = 0
    classification_rank: int = -1
    invalid: int = 0

    def add(self, record: GovernanceRecord) -> None:
        self.count += 1
        self.denied += record.denied
        self.invalid += record.invalid
        if record.governance_hash is not None:
            self.hashes.setdefault(record.governance_hash, (record.hash_type, record.leaf_count))
        if record.classification is not None:
            self.classification_rank = max(
                self.classification_rank, sc.CLASSIFICATION_RANK[record.classification]
            )

    def absorb(self, other: Overflow) -> None:
        for digest, details in other.hashes.items():
            self.hashes.setdefault(digest, details)
        self.count += other.count
        self.denied += other.denied
        self.classification_rank = max(self.classification_rank, other.classification_rank)
        self.invalid += other.invalid


@dataclass(slots=True)
class _Run:
    key: RunKey
    deadline: float
    # Memory per pending run is bounded by configuration but multiplied by max_pending_traces:
    # what most runs never need (overflow, an ended root's facts) is allocated only when needed.
    records: dict[str, GovernanceRecord] = field(default_factory=dict)
    overflow: Overflow | None = None
    root_remote: bool = False
    """The local root has a remote parent (known from its start or its end)."""
    root: RootFacts | None = None
    first_span_name: str | None = None
    resource: ResourceFacts | None = None
    first_start_ns: int | None = None
    last_end_ns: int | None = None
    continuation: bool = False
    anonymous: int = 0

    @property
    def governed(self) -> bool:
        return bool(self.records) or self.overflow is not None


@dataclass(frozen=True)
class ClosedRun:
    """Everything the build stage needs of a closed run."""

    key: TraceKey
    root_span_id: int | None
    """The run's local root; None for records never attributed to one."""
    root_remote: bool
    records: tuple[GovernanceRecord, ...]
    overflow: Overflow
    reason: Reason
    complete: bool
    root: RootFacts | None
    """The local root's facts, once it has ended."""
    first_span_name: str | None
    resource: ResourceFacts | None
    first_start_ns: int | None
    last_end_ns: int | None


class Correlator:
    """Holds pending runs within bounds and tells which are closed."""

    def __init__(
        self,
        *,
        trace_timeout_s: float,
        max_pending_traces: int,
        max_records_per_trace: int,
        emit_ungoverned: bool,
        stats: Stats,
    ) -> None:
        self._timeout = trace_timeout_s
        self._max_runs = max_pending_traces
        self._max_records = max_records_per_trace
        self._emit_ungoverned = emit_ungoverned
        self._stats = stats
        self._runs: OrderedDict[RunKey, _Run] = OrderedDict()
        self._first_root: dict[TraceKey, int] = {}
        """The first local root seen starting, per trace, until it ends. Its run may be closed
        early and continue; past twice ``max_pending_traces`` entries (roots that never end)
        the oldest is forgotten."""
        self._emitted_early: OrderedDict[RunKey, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def _touch(self, key: RunKey, now: float, closed: list[ClosedRun]) -> _Run:
        run = self._runs.get(key)
        if run is None:
            run = _Run(key=key, deadline=now + self._timeout)
            if key in self._emitted_early:
                run.continuation = True
            self._runs[key] = run
            while len(self._runs) > self._max_runs:
                _, oldest = self._runs.popitem(last=False)
                self._stats.traces_evicted += 1
                self._close(oldest, Reason.EVICTED, closed)
        else:
            run.deadline = now + self._timeout
            self._runs.move_to_end(key)
        return run

    def _attributed(self, trace: TraceKey, local_root_id: int | None) -> RunKey:
        """The run a record of this trace joins: its own local root, else the trace's first."""
        return trace, local_root_id if local_root_id is not None else self._first_root.get(trace)

    def root_started(
        self, trace_id: int, span_id: int, remote_parent: bool, now: float
    ) -> list[ClosedRun]:
        closed: list[ClosedRun] = []
        run = self._touch((trace_id, span_id), now, closed)
        run.root_remote = remote_parent
        first_root = self._first_root
        if trace_id not in first_root:
            first_root[trace_id] = span_id
            if len(first_root) > 2 * self._max_runs:
                del first_root[next(iter(first_root))]
        return closed

    def span_ended(self, span: SpanFacts, now: float) -> list[ClosedRun]:
        closed: list[ClosedRun] = []
        records, root = span.records, span.root
        if not records and root is None:
            return closed
        if root is None:
            run = self._touch(self._attributed(span.trace_id, span.local_root_id), now, closed)
        else:
            run = self._touch((span.trace_id, root.span_id), now, closed)
            self._take_unattributed(run, span.trace_id)
        for record in records:
            self._add(run, record)
        if records and run.first_span_name is None:
            run.first_span_name = span.name
        if run.resource is None or root is not None:
            run.resource = span.resource
        if run.first_start_ns is None or span.start_ns < run.first_start_ns:
            run.first_start_ns = span.start_ns
        if run.last_end_ns is None or span.end_ns > run.last_end_ns:
            run.last_end_ns = span.end_ns
        if root is not None:
            run.root = root
            run.root_remote = root.remote_parent
            del self._runs[run.key]
            self._close(run, Reason.ROOT_ENDED, closed)
        return closed

    def event_ingested(
        self, key: TraceKey, record: GovernanceRecord, now: float, local_root_id: int | None = None
    ) -> list[ClosedRun]:
        """A full AIGP event: it joins the local root of its span when the front door knew it."""
        closed: list[ClosedRun] = []
        run = self._touch(self._attributed(key, local_root_id), now, closed)
        self._add(run, record)
        return closed

    def expire(self, now: float) -> list[ClosedRun]:
        """Close every run quiet for longer than the timeout (least recently active first)."""
        closed: list[ClosedRun] = []
        while self._runs:
            key, run = next(iter(self._runs.items()))
            if run.deadline > now:
                break
            del self._runs[key]
            if run.governed:
                self._stats.traces_timed_out += 1
            self._close(run, Reason.TIMEOUT, closed)
        return closed

    def drain(self) -> list[ClosedRun]:
        """Close every pending run now (shutdown): governed ones are emitted as incomplete."""
        closed: list[ClosedRun] = []
        while self._runs:
            _, run = self._runs.popitem(last=False)
            self._close(run, Reason.SHUTDOWN, closed)
        return closed

    def _take_unattributed(self, run: _Run, trace: TraceKey) -> None:
        """A local root ends: records of its trace not yet attributed to any root become its own."""
        unattributed: RunKey = (trace, None)
        if unattributed in self._emitted_early:  # such records went out early: close that run too
            del self._emitted_early[unattributed]
            run.continuation = True
        waiting = self._runs.pop(unattributed, None)
        if waiting is None:
            return
        run.continuation = run.continuation or waiting.continuation
        for record in waiting.records.values():
            self._add(run, record, counted=True)
        if waiting.overflow is not None:
            if run.overflow is None:
                run.overflow = Overflow()
            run.overflow.absorb(waiting.overflow)
        run.first_span_name = run.first_span_name or waiting.first_span_name
        run.resource = run.resource or waiting.resource
        run.first_start_ns = _earliest(run.first_start_ns, waiting.first_start_ns)
        run.last_end_ns = _latest(run.last_end_ns, waiting.last_end_ns)

    def _add(self, run: _Run, record: GovernanceRecord, *, counted: bool = False) -> None:
        if not counted:
            self._stats.records += 1
            self._stats.invalid_values += record.invalid
        if record.event_id is None:
            run.anonymous += 1
            key = f"#{run.anonymous}"
        else:
            key = record.event_id
            known = run.records.get(key)
            if known is not None:
                self._stats.duplicate_records += 1
                run.records[key] = join_duplicate(known, record)
                return
        if len(run.records) >= self._max_records:
            self._stats.records_left_out += 1
            if run.overflow is None:
                run.overflow = Overflow()
            run.overflow.add(record)
            return
        run.records[key] = record

    def _close(self, run: _Run, reason: Reason, closed: list[ClosedRun]) -> None:
        trace, root_span_id = run.key
        ended = reason is Reason.ROOT_ENDED
        if ended and root_span_id is not None and self._first_root.get(trace) == root_span_id:
            del self._first_root[trace]
        # A run emitted early is closed by a terminal event when its root ends, even without
        # new records, so that no lineage backend shows it running for ever.
        closes_early_run = run.continuation and reason is Reason.ROOT_ENDED
        wanted_ungoverned = self._emit_ungoverned and reason is Reason.ROOT_ENDED
        if not (run.governed or closes_early_run or wanted_ungoverned):
            return
        early = reason is not Reason.ROOT_ENDED
        if early:
            self._emitted_early[run.key] = None
            while len(self._emitted_early) > self._max_runs:
                self._emitted_early.popitem(last=False)
        else:
            self._emitted_early.pop(run.key, None)
        closed.append(
            ClosedRun(
                key=trace,
                root_span_id=root_span_id,
                root_remote=run.root_remote,
                records=tuple(run.records.values()),
                overflow=run.overflow or Overflow(),
                reason=reason,
                complete=not early and not run.continuation,
                root=run.root,
                first_span_name=run.first_span_name,
                resource=run.resource,
                first_start_ns=run.first_start_ns,
                last_end_ns=run.last_end_ns,
            )
        )


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
