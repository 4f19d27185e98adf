"""Correlation: records grouped by local root until the root's run is closed.

A run belongs to (trace id, local root span id), so every local root of a trace (a caller and
its callee in one process, every service a gateway sees) gets its own run. A run is closed when
its local root ends, when it has been quiet for ``trace_timeout_s``, when the pending-run bound
evicts it (least recently active first), or at shutdown. Modelled on the Collector's
``groupbytraceprocessor``.

Where a record belongs: a span note names its local root when its front door knows it (the span
processor tracks it from ``on_start``); otherwise, and for full AIGP events without an open
span, the record joins the trace's first run: that of the first local root seen starting, or,
when none is known (the exporter sees no starts), records that wait until a local root of their
trace ends and claims them.

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
RunKey = TraceKey | tuple[TraceKey, int]
"""A trace's first run is keyed by the trace alone, so the usual single-root trace costs no more
than a trace key; a further local root of the same trace by (trace, its span id)."""


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


@dataclass(slots=True)
class _Run:
    key: RunKey
    deadline: float
    root_span_id: int | None = None
    """The run's local root; None while its records are not attributed to one."""
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

    @property
    def trace(self) -> TraceKey:
        return self.key[0] if isinstance(self.key, tuple) else self.key

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
        self._emitted_early: OrderedDict[tuple[TraceKey, int | None], None] = OrderedDict()
        """(trace, local root or None) of runs emitted early, to mark their continuations."""

    def __len__(self) -> int:
        return len(self._runs)

    def _run_for(
        self, trace: TraceKey, local_root_id: int | None, now: float, closed: list[ClosedRun]
    ) -> _Run:
        """The pending run a span or event of this trace belongs to, made when there is none.

        A known local root has its own run; the first run of the trace takes what has no known
        root, and the first local root to claim it (start or end) makes those records its own.
        """
        runs = self._runs
        run = runs.get(trace)
        if run is not None and local_root_id is not None and run.root_span_id not in (None, local_root_id):
            run = runs.get((trace, local_root_id))
            if run is None:
                return self._new((trace, local_root_id), trace, local_root_id, now, closed)
        elif run is None:
            return self._new(trace, trace, local_root_id, now, closed)
        elif run.root_span_id is None and local_root_id is not None:
            run.root_span_id = local_root_id
            run.continuation = run.continuation or self._emitted_before(trace, local_root_id)
        run.deadline = now + self._timeout
        runs.move_to_end(run.key)
        return run

    def _new(
        self, key: RunKey, trace: TraceKey, local_root_id: int | None, now: float, closed: list[ClosedRun]
    ) -> _Run:
        run = _Run(key, now + self._timeout, local_root_id)
        run.continuation = self._emitted_before(trace, local_root_id)
        self._runs[key] = run
        while len(self._runs) > self._max_runs:
            _, oldest = self._runs.popitem(last=False)
            self._stats.traces_evicted += 1
            self._close(oldest, Reason.EVICTED, closed)
        return run

    def _emitted_before(self, trace: TraceKey, local_root_id: int | None) -> bool:
        """Part of this run already went out early (its own, or its trace's unattributed records)."""
        early = self._emitted_early
        return (trace, local_root_id) in early or (local_root_id is not None and (trace, None) in early)

    def root_started(
        self, trace_id: int, span_id: int, remote_parent: bool, now: float
    ) -> list[ClosedRun]:
        closed: list[ClosedRun] = []
        self._run_for(trace_id, span_id, now, closed).root_remote = remote_parent
        return closed

    def span_ended(self, span: SpanFacts, now: float) -> list[ClosedRun]:
        closed: list[ClosedRun] = []
        records, root = span.records, span.root
        if not records and root is None:
            return closed
        local_root_id = root.span_id if root is not None else span.local_root_id
        run = self._run_for(span.trace_id, local_root_id, now, closed)
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
        self._add(self._run_for(key, local_root_id, now, closed), record)
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

    def _add(self, run: _Run, record: GovernanceRecord) -> None:
        self._stats.records += 1
        self._stats.invalid_values += record.invalid
        records = run.records
        if record.event_id is None:
            key = f"#{len(records)}"  # unique: records are never removed, so the length only grows
        else:
            key = record.event_id
            known = records.get(key)
            if known is not None:
                self._stats.duplicate_records += 1
                records[key] = join_duplicate(known, record)
                return
        if len(records) >= self._max_records:
            self._stats.records_left_out += 1
            if run.overflow is None:
                run.overflow = Overflow()
            run.overflow.add(record)
            return
        records[key] = record

    def _close(self, run: _Run, reason: Reason, closed: list[ClosedRun]) -> None:
        # A run emitted early is closed by a terminal event when its root ends, even without
        # new records, so that no lineage backend shows it running for ever.
        closes_early_run = run.continuation and reason is Reason.ROOT_ENDED
        wanted_ungoverned = self._emit_ungoverned and reason is Reason.ROOT_ENDED
        if not (run.governed or closes_early_run or wanted_ungoverned):
            return
        trace = run.trace
        early = reason is not Reason.ROOT_ENDED
        if early:
            self._emitted_early[(trace, run.root_span_id)] = None
            while len(self._emitted_early) > self._max_runs:
                self._emitted_early.popitem(last=False)
        else:
            self._emitted_early.pop((trace, run.root_span_id), None)
            self._emitted_early.pop((trace, None), None)
        closed.append(
            ClosedRun(
                key=trace,
                root_span_id=run.root_span_id,
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
