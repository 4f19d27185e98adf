"""Correlation: records grouped by trace until the trace's run is decided.

A run is decided when the last open local root of its trace ends, when the trace has been
quiet for ``trace_timeout_s``, when the pending-trace bound evicts it (least recently
active first), or at shutdown. Modelled on the Collector's ``groupbytraceprocessor``.

The ``Correlator`` is a plain, single-threaded state machine: one worker owns it, so it
needs no locks, and tests drive it with explicit clocks.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aigp_otel_bridge.aggregate import Overflow
from aigp_otel_bridge.records import GovernanceRecord, SpanNote, merge_records
from aigp_otel_bridge.telemetry import Stats


class Reason(enum.Enum):
    """Why a run was decided; everything but ROOT_ENDED makes an incomplete (early) run."""

    ROOT_ENDED = "root_ended"
    TIMEOUT = "timeout"
    EVICTED = "evicted"
    SHUTDOWN = "shutdown"


@dataclass(slots=True)
class _Trace:
    key: int | str
    deadline: float
    # Memory per pending trace is bounded by configuration but multiplied by max_pending_traces:
    # what most traces never need (overflow, ended roots) is allocated only when needed.
    records: dict[str, GovernanceRecord] = field(default_factory=dict)
    full_ids: set[str] | None = None
    """Ids of records that came from full AIGP events (they win when joined with span events)."""
    overflow: Overflow | None = None
    open_roots: int = 0
    root_span_id: int | None = None
    root_remote: bool = False
    roots: list[SpanNote] | None = None
    first_span_name: str | None = None
    resource: Mapping[str, Any] | None = None
    first_start_ns: int | None = None
    last_end_ns: int | None = None
    continuation: bool = False
    anonymous: int = 0

    @property
    def governed(self) -> bool:
        return bool(self.records) or self.overflow is not None


@dataclass(frozen=True)
class FinishedTrace:
    """Everything the build stage needs of a decided trace."""

    key: int | str
    records: tuple[GovernanceRecord, ...]
    overflow: Overflow
    reason: Reason
    complete: bool
    root_start: tuple[int, bool] | None
    """(span id, has a remote parent) of the first local root seen starting."""
    roots: tuple[SpanNote, ...]
    first_span_name: str | None
    resource: Mapping[str, Any] | None
    first_start_ns: int | None
    last_end_ns: int | None


class Correlator:
    """Holds pending traces within bounds and tells which runs are decided."""

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
        self._max_traces = max_pending_traces
        self._max_records = max_records_per_trace
        self._emit_ungoverned = emit_ungoverned
        self._stats = stats
        self._traces: OrderedDict[int | str, _Trace] = OrderedDict()
        self._emitted_early: OrderedDict[int | str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._traces)

    def _touch(self, key: int | str, now: float, finished: list[FinishedTrace]) -> _Trace:
        trace = self._traces.get(key)
        if trace is None:
            trace = _Trace(key=key, deadline=now + self._timeout)
            if key in self._emitted_early:
                trace.continuation = True
            self._traces[key] = trace
            while len(self._traces) > self._max_traces:
                _, oldest = self._traces.popitem(last=False)
                self._stats.traces_evicted += 1
                self._finish(oldest, Reason.EVICTED, finished)
        else:
            trace.deadline = now + self._timeout
            self._traces.move_to_end(key)
        return trace

    def root_started(
        self, trace_id: int, span_id: int, remote_parent: bool, now: float
    ) -> list[FinishedTrace]:
        finished: list[FinishedTrace] = []
        trace = self._touch(trace_id, now, finished)
        trace.open_roots += 1
        if trace.root_span_id is None:
            trace.root_span_id, trace.root_remote = span_id, remote_parent
        return finished

    def span_ended(self, note: SpanNote, records: list[GovernanceRecord], now: float) -> list[FinishedTrace]:
        finished: list[FinishedTrace] = []
        if not records and not note.local_root:
            return finished
        trace = self._touch(note.trace_id, now, finished)
        for record in records:
            self._add(trace, record, from_full_event=False)
        if records and trace.first_span_name is None:
            trace.first_span_name = note.name
        if trace.resource is None:
            trace.resource = note.resource
        if trace.first_start_ns is None or note.start_ns < trace.first_start_ns:
            trace.first_start_ns = note.start_ns
        if trace.last_end_ns is None or note.end_ns > trace.last_end_ns:
            trace.last_end_ns = note.end_ns
        if note.local_root:
            if trace.roots is None:
                trace.roots = []
            trace.roots.append(note)
            trace.open_roots = max(0, trace.open_roots - 1)
            if trace.open_roots == 0:
                del self._traces[note.trace_id]
                self._finish(trace, Reason.ROOT_ENDED, finished)
        return finished

    def event_ingested(self, key: int | str, record: GovernanceRecord, now: float) -> list[FinishedTrace]:
        finished: list[FinishedTrace] = []
        trace = self._touch(key, now, finished)
        self._add(trace, record, from_full_event=True)
        return finished

    def expire(self, now: float) -> list[FinishedTrace]:
        """Decide every trace quiet for longer than the timeout (least recently active first)."""
        finished: list[FinishedTrace] = []
        while self._traces:
            key, trace = next(iter(self._traces.items()))
            if trace.deadline > now:
                break
            del self._traces[key]
            if trace.governed:
                self._stats.traces_timed_out += 1
            self._finish(trace, Reason.TIMEOUT, finished)
        return finished

    def drain(self) -> list[FinishedTrace]:
        """Decide every pending trace now (shutdown): governed ones are emitted as incomplete."""
        finished: list[FinishedTrace] = []
        while self._traces:
            _, trace = self._traces.popitem(last=False)
            self._finish(trace, Reason.SHUTDOWN, finished)
        return finished

    def _add(self, trace: _Trace, record: GovernanceRecord, *, from_full_event: bool) -> None:
        self._stats.records += 1
        self._stats.invalid_values += record.invalid
        if record.event_id is None:
            trace.anonymous += 1
            key = f"#{trace.anonymous}"
        else:
            key = record.event_id
            known = trace.records.get(key)
            if known is not None:
                self._stats.duplicate_records += 1
                known_full = trace.full_ids is not None and key in trace.full_ids
                trace.records[key], full = join_duplicate((known, known_full), record, from_full_event)
                if full:
                    _mark_full(trace, key)
                return
        if len(trace.records) >= self._max_records:
            self._stats.records_left_out += 1
            if trace.overflow is None:
                trace.overflow = Overflow()
            trace.overflow.add(record)
            return
        trace.records[key] = record
        if from_full_event and record.event_id is not None:
            _mark_full(trace, key)

    def _finish(self, trace: _Trace, reason: Reason, finished: list[FinishedTrace]) -> None:
        # A run emitted early is closed by a terminal event when its root ends, even without
        # new records, so that no lineage backend shows it running for ever.
        closes_early_run = trace.continuation and reason is Reason.ROOT_ENDED
        wanted_ungoverned = self._emit_ungoverned and reason is Reason.ROOT_ENDED
        if not (trace.governed or closes_early_run or wanted_ungoverned):
            return
        early = reason is not Reason.ROOT_ENDED
        if early:
            self._emitted_early[trace.key] = None
            while len(self._emitted_early) > self._max_traces:
                self._emitted_early.popitem(last=False)
        else:
            self._emitted_early.pop(trace.key, None)
        finished.append(
            FinishedTrace(
                key=trace.key,
                records=tuple(trace.records.values()),
                overflow=trace.overflow or Overflow(),
                reason=reason,
                complete=not early and not trace.continuation,
                root_start=None if trace.root_span_id is None else (trace.root_span_id, trace.root_remote),
                roots=tuple(trace.roots or ()),
                first_span_name=trace.first_span_name,
                resource=trace.resource,
                first_start_ns=trace.first_start_ns,
                last_end_ns=trace.last_end_ns,
            )
        )


def _mark_full(trace: _Trace, event_id: str) -> None:
    if trace.full_ids is None:
        trace.full_ids = set()
    trace.full_ids.add(event_id)


def join_duplicate(
    known: tuple[GovernanceRecord, bool], record: GovernanceRecord, from_full_event: bool
) -> tuple[GovernanceRecord, bool]:
    """One action seen twice: a full AIGP event wins over a span event; otherwise the later full
    event replaces an earlier one and a repeated span event is ignored."""
    known_record, known_full = known
    if from_full_event and not known_full:
        return merge_records(known_record, record), True
    if not from_full_event and known_full:
        return merge_records(record, known_record), True
    if from_full_event:
        return record, True
    return known
