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

Four classes, one job each: the ``Correlator`` keeps the life of pending runs (open, add,
close); ``ToolAttribution`` tells which ``execute_tool`` span a run's tool-less records are under;
``EndedRuns`` remembers runs whose terminal event went out, so that records arriving late close
them again as ``LATE`` (an ``OTHER`` event of the same run over all its records); ``QuietRoots``
remembers, with ``remember_ungoverned_roots`` (the gateway, where a local root may arrive before
its children), local roots that closed a run without governance, so that records arriving for
one later make its run, with the root's status and job, as its terminal event.

Retries add nothing: records a remembered run already holds (the same event ids, sent again by a
retrying OTLP sender) make no event, and neither does its local root ending again.

None of them takes a lock: the engine calls them under its correlation lock (from its worker, or
from an application thread applying back-pressure), and tests drive them with explicit clocks.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from aigp_otel_bridge.run_inputs import Observed, Overflow
from aigp_otel_bridge.stages.extract import (
    GenAIFacts,
    GovernanceRecord,
    ResourceFacts,
    RootFacts,
    SpanFacts,
    about_tool,
    join_duplicate,
    names_tool,
)
from aigp_otel_bridge.telemetry import Stats

TraceKey = int | str
"""OTel's integer trace id; the text of an ingested event's trace id that is not 32 hex."""
RunKey = TraceKey | tuple[TraceKey, int]
"""A trace's first run is keyed by the trace alone; a further local root of the same trace by
(trace, its span id)."""


class Reason(enum.Enum):
    """Why a run was closed; everything but ROOT_ENDED makes an incomplete (early) run."""

    ROOT_ENDED = "root_ended"
    TIMEOUT = "timeout"
    EVICTED = "evicted"
    SHUTDOWN = "shutdown"
    LATE = "late"
    """Records arrived after the run's terminal event: an ``OTHER`` event of the same run."""


_NO_OVERFLOW = Overflow()
"""The overflow of every closed run with nothing past the per-run bound: read, never changed."""


@dataclass(frozen=True, slots=True)
class ClosedRun:
    """Everything the build stage needs of a closed run."""

    key: TraceKey
    root_span_id: int | None
    """The run's local root; None for records never attributed to one."""
    root_remote: bool
    records: tuple[GovernanceRecord, ...]
    """In the order they arrived (aggregation's ``first_agent_id`` reads the first)."""
    overflow: Overflow
    reason: Reason
    complete: bool
    root: RootFacts | None
    """The local root's facts, once it has ended."""
    first_span_name: str | None
    resource: ResourceFacts | None
    first_start_ns: int | None
    last_end_ns: int | None
    observed: tuple[Observed, ...] = ()
    """Tools and models seen on the run's GenAI spans (sorted)."""
    agent_name: str | None = None
    """``gen_ai.agent.name`` of the outermost span under the root carrying one."""
    job: tuple[str, str] | None = None
    """For a late run: the job its terminal event named."""
    run_key: RunKey | None = None
    """Identifies the run to ``Correlator.named``."""


class ToolAttribution:
    """Which ``execute_tool`` span a run's tool-less records are under (contract section 9).

    Spans end before their parents, so a record's tool span is usually seen after the record: a
    tool-less record waits under its parent's span id; a tool span that ends takes the records
    waiting under it, and any other span that ends passes its waiting records up to its own
    parent. Ancestors are known only through spans that reach correlation (governed, GenAI or
    local roots), so a record below an uninstrumented span stays tool-less. Made for a run only
    when one of its spans is a tool span or a record has to wait.
    """

    __slots__ = ("_tools", "_waiting")

    def __init__(self) -> None:
        self._tools: dict[int, str] = {}
        """``execute_tool`` spans seen: span id -> tool input name."""
        self._waiting: dict[int, list[str]] = {}
        """Keys of tool-less records by the span id of their nearest ancestor not yet seen ending."""

    def tool_span_ended(self, span_id: int, tool: str) -> list[str]:
        """An ``execute_tool`` span under the root ended: the keys of the records now about its tool."""
        self._tools[span_id] = tool
        return self._waiting.pop(span_id, [])

    def span_ended(self, span_id: int, parent_id: int, keys: list[str]) -> tuple[str | None, list[str]]:
        """Another span under the root ended, with the keys of its own tool-less records: those and
        the records waiting under it are about the parent's tool if the parent is a tool span
        already seen (returned with the tool), else they wait under the parent (``None, []``)."""
        keys = keys + self._waiting.pop(span_id, [])
        tool = self._tools.get(parent_id)
        if tool is None:
            if keys:
                self._waiting.setdefault(parent_id, []).extend(keys)
            return None, []
        return tool, keys

    def child_of_root_ended(self, span_id: int) -> None:
        """A span right under the root ended: what waited under it has no tool ancestor but the
        root, which claims every tool-less record of its run at its end if it is a tool span."""
        self._waiting.pop(span_id, None)


class _OutermostAgent(NamedTuple):
    """A span under the root carrying ``gen_ai.agent.name``; compared as a tuple, the least is
    the outermost: the earliest started (a span starts before every span under it), then the
    latest ended."""

    start_ns: int
    minus_end_ns: int
    name: str


@dataclass(slots=True)
class _Run:
    """A pending run: its records and what its spans said, until it is closed."""

    key: RunKey
    active_at: float
    """When the run last saw activity (it times out ``trace_timeout_s`` later)."""
    root_span_id: int | None = None
    """The run's local root; None while its records are not attributed to one."""
    root_remote: bool = False
    """The local root has a remote parent (known from its start or its end)."""
    continuation: bool = False
    """Part of this run already went out early: it ends incomplete."""
    records: dict[str, GovernanceRecord] = field(default_factory=dict)
    """By key, in arrival order: a record's event id, else ``#`` and its position."""
    overflow: Overflow | None = None
    """What is kept of the records past the per-run bound."""
    first_span_name: str | None = None
    resource: ResourceFacts | None = None
    first_start_ns: int | None = None
    last_end_ns: int | None = None
    observed: tuple[Observed, ...] = ()
    """Tools and models its GenAI spans named (with a model's provider), sorted."""
    agent: _OutermostAgent | None = None
    tools: ToolAttribution | None = None

    @property
    def trace(self) -> TraceKey:
        return self.key[0] if isinstance(self.key, tuple) else self.key

    @property
    def governed(self) -> bool:
        return bool(self.records)  # the first record is always kept, so an overflow has one

    def cover(self, start_ns: int, end_ns: int) -> None:
        """Widen the run's extent to a span's start and end."""
        if self.first_start_ns is None or start_ns < self.first_start_ns:
            self.first_start_ns = start_ns
        if self.last_end_ns is None or end_ns > self.last_end_ns:
            self.last_end_ns = end_ns

    def make_about_tool(self, keys: list[str], tool: str) -> None:
        for key in keys:
            self.records[key] = about_tool(self.records[key], tool)


def _closed_run(
    run: _Run, *, reason: Reason, complete: bool, root: RootFacts | None, job: tuple[str, str] | None = None
) -> ClosedRun:
    return ClosedRun(
        key=run.trace,
        root_span_id=run.root_span_id,
        root_remote=run.root_remote,
        records=tuple(run.records.values()),
        overflow=run.overflow or _NO_OVERFLOW,
        reason=reason,
        complete=complete,
        root=root,
        first_span_name=run.first_span_name,
        resource=run.resource,
        first_start_ns=run.first_start_ns,
        last_end_ns=run.last_end_ns,
        observed=run.observed,
        agent_name=run.agent.name if run.agent is not None else None,
        job=job,
        run_key=run.key,
    )


@dataclass(slots=True)
class _Ended:
    """A run whose terminal event went out (or a quiet root, whose run emitted nothing),
    remembered for records that arrive late."""

    run: _Run
    forget_at: float
    complete: bool
    root: RootFacts | None
    """The local root's facts, when its end closed the run."""
    job: tuple[str, str] | None = None
    """The job the terminal event named (``EndedRuns.named``): a late event names the same."""
    emitted: bool = True
    """False for a quiet root (``QuietRoots``): its first records make its terminal event."""

    def closed_again(self) -> ClosedRun:
        """The run closed for its new records: ``LATE``, under the job its terminal event named;
        for a quiet root, the terminal event itself (``ROOT_ENDED``)."""
        if not self.emitted:
            self.emitted = True
            return _closed_run(self.run, reason=Reason.ROOT_ENDED, complete=self.complete, root=self.root)
        return _closed_run(self.run, reason=Reason.LATE, complete=self.complete, root=self.root, job=self.job)


def _remembered(
    memory: OrderedDict[RunKey, _Ended], trace: TraceKey, local_root_id: int | None
) -> _Ended | None:
    """The run remembered in ``memory`` for this trace and local root."""
    ended = memory.get(trace)
    if ended is None or local_root_id not in (None, ended.run.root_span_id):
        ended = memory.get((trace, local_root_id)) if local_root_id is not None else None
    return ended


def _holds_all(run: _Run, records: Sequence[GovernanceRecord]) -> bool:
    """``run`` already holds each of ``records`` (by event id: a record without one is always new)."""
    return all(record.event_id is not None and record.event_id in run.records for record in records)


class EndedRuns:
    """Runs whose terminal event went out, kept for records that arrive late (contract section 2).

    At most ``max_runs`` of them, each for ``timeout_s`` after its last activity; one forgotten
    earlier is counted in ``ended_runs_forgotten`` (and its late records, if any wait, go out
    first). A record that arrives for a remembered run joins its records; ``settle`` then closes
    the run again as ``LATE``: the aggregate over all of its records, under the job its terminal
    event named. Records it already holds (a request sent again) close nothing. A quiet root
    (``QuietRoots``) that receives its first records is adopted: its terminal event goes out
    then, and it is remembered as any ended run from there on.
    """

    def __init__(self, *, timeout_s: float, max_runs: int, stats: Stats) -> None:
        self._timeout = timeout_s
        self._max_runs = max_runs
        self._stats = stats
        self._ended: OrderedDict[RunKey, _Ended] = OrderedDict()
        """Oldest first."""
        self._late: dict[RunKey, _Ended] = {}
        """Those that received records since their last event."""

    def release(self, key: RunKey) -> list[ClosedRun]:
        """Forget the ended run of ``key`` (a new run of that key is ending): its late records, if
        any wait, go out first."""
        ended = self._ended.pop(key, None)
        return self._forget(ended) if ended is not None else []

    def remember(self, run: _Run, *, complete: bool, root: RootFacts | None) -> list[ClosedRun]:
        """Keep a run whose terminal event went out; the late runs of those it pushes out."""
        forget_at = run.active_at + self._timeout
        return self._keep(_Ended(run=run, forget_at=forget_at, complete=complete, root=root))

    def adopt(self, quiet: _Ended, now: float) -> list[ClosedRun]:
        """Keep a quiet root that has received its first records, its terminal event to go out at
        ``settle``; the late runs of those it pushes out."""
        closed = self._keep(quiet)
        self._mark_late(quiet, now)
        return closed

    def _keep(self, ended: _Ended) -> list[ClosedRun]:
        self._ended[ended.run.key] = ended
        closed: list[ClosedRun] = []
        while len(self._ended) > self._max_runs:
            _, oldest = self._ended.popitem(last=False)
            closed.extend(self._forget(oldest))
            self._stats.ended_runs_forgotten += 1
        return closed

    def rejoin(
        self, trace: TraceKey, local_root_id: int | None, records: Sequence[GovernanceRecord], now: float
    ) -> _Run | None:
        """The ended run late ``records`` belong to, marked to be closed again unless it already
        holds every one of them (a request sent again, or a span with none); None when there is
        none (or it was forgotten)."""
        ended = _remembered(self._ended, trace, local_root_id)
        if ended is None:
            return None
        if not _holds_all(ended.run, records):
            self._mark_late(ended, now)
        return ended.run

    def holds(self, trace: TraceKey, root_id: int, records: Sequence[GovernanceRecord]) -> bool:
        """The ended run of this local root holds every one of ``records``."""
        ended = _remembered(self._ended, trace, root_id)
        return ended is not None and ended.run.root_span_id == root_id and _holds_all(ended.run, records)

    def _mark_late(self, ended: _Ended, now: float) -> None:
        ended.forget_at = now + self._timeout
        self._ended.move_to_end(ended.run.key)
        self._late[ended.run.key] = ended

    def named(self, closed: ClosedRun, job: tuple[str, str]) -> None:
        """The job a terminal event named: a later event of the same run must name it again."""
        ended = self._ended.get(closed.run_key) if closed.run_key is not None else None
        if ended is not None and ended.job is None and ended.run.root_span_id == closed.root_span_id:
            ended.job = job

    def settle(self) -> list[ClosedRun]:
        """A run closed again for each ended run that received records since its last event."""
        closed = [self._closed_again(ended) for ended in self._late.values()]
        self._late.clear()
        return closed

    def expire(self, now: float) -> None:
        """Forget the runs quiet for ``timeout_s`` (oldest first; none with late records waiting)."""
        while self._ended:
            ended = next(iter(self._ended.values()))
            if ended.forget_at > now or ended.run.key in self._late:
                break
            del self._ended[ended.run.key]

    def _forget(self, ended: _Ended) -> list[ClosedRun]:
        if self._late.pop(ended.run.key, None) is None:
            return []
        return [self._closed_again(ended)]

    def _closed_again(self, ended: _Ended) -> ClosedRun:
        closed = ended.closed_again()
        if closed.reason is Reason.LATE:
            self._stats.late_events += 1
        return closed


class QuietRoots:
    """Local roots that closed their run without governance, and so emitted nothing, kept for
    governed records that arrive after them (the gateway, where a root may come first).

    Bounded as ended runs are (``max_runs``, each for ``timeout_s`` after its last activity) but
    apart from them, so that ungoverned traffic never pushes governed runs out of memory; one
    forgotten is simply gone, as its root would have been without this memory.
    """

    def __init__(self, *, timeout_s: float, max_runs: int) -> None:
        self._timeout = timeout_s
        self._max_runs = max_runs
        self._quiet: OrderedDict[RunKey, _Ended] = OrderedDict()
        """Oldest first."""

    def remember(self, run: _Run, root: RootFacts) -> None:
        """Keep a local root that closed its run without governance."""
        self._quiet.pop(run.key, None)
        self._quiet[run.key] = _Ended(
            run=run, forget_at=run.active_at + self._timeout, complete=not run.continuation, root=root,
            emitted=False,
        )
        while len(self._quiet) > self._max_runs:
            self._quiet.popitem(last=False)

    def find(self, trace: TraceKey, local_root_id: int | None) -> _Ended | None:
        """The quiet root a span or event of this trace and local root belongs to."""
        return _remembered(self._quiet, trace, local_root_id)

    def holds(self, trace: TraceKey, root_id: int, records: Sequence[GovernanceRecord]) -> bool:
        """This local root is remembered quiet and ``records`` add nothing to it (none, or copies)."""
        quiet = self.find(trace, root_id)
        return quiet is not None and quiet.run.root_span_id == root_id and _holds_all(quiet.run, records)

    def release(self, key: RunKey) -> None:
        """Forget the quiet root of ``key`` (its records made it a run, or a new run of it ended)."""
        self._quiet.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget the roots quiet for ``timeout_s`` (oldest first)."""
        while self._quiet and next(iter(self._quiet.values())).forget_at <= now:
            self._quiet.popitem(last=False)


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
        remember_ungoverned_roots: bool = False,
    ) -> None:
        self._timeout = trace_timeout_s
        self.remember_ungoverned_roots = remember_ungoverned_roots
        """Keep local roots that close a run without governance (``QuietRoots``)."""
        self._max_runs = max_pending_traces
        self._max_records = max_records_per_trace
        self._emit_ungoverned = emit_ungoverned
        self._stats = stats
        self._runs: dict[RunKey, _Run] = {}
        """Pending runs, least recently active first: a run that sees activity is inserted anew at
        the end (a plain dict costs about half an ``OrderedDict`` per entry, and pending runs are
        many)."""
        self._emitted_early: OrderedDict[tuple[TraceKey, int | None], None] = OrderedDict()
        """(trace, local root or None) of runs emitted early, to mark their continuations."""
        self._ended = EndedRuns(timeout_s=trace_timeout_s, max_runs=max_pending_traces, stats=stats)
        self._quiet_roots = QuietRoots(timeout_s=trace_timeout_s, max_runs=max_pending_traces)

    def __len__(self) -> int:
        return len(self._runs)

    # ---- what arrives ----

    def root_started(
        self, trace_id: int, span_id: int, remote_parent: bool, now: float
    ) -> list[ClosedRun]:
        """A local root started: its run is opened (or claims the trace's first run)."""
        closed: list[ClosedRun] = []
        self._run_for(trace_id, span_id, now, closed).root_remote = remote_parent
        return closed

    def span_ended(self, span: SpanFacts, now: float) -> list[ClosedRun]:
        """The runs a finished span closes: its own when it is a local root, one evicted when it
        opens a run past the bound."""
        if span.root is not None:
            return self._root_ended(span, span.root, now)
        closed: list[ClosedRun] = []
        if not span.records and span.genai is None:
            return closed
        run = self._run_for(span.trace_id, span.local_root_id, now, closed, late=span.records)
        keys = [key for record in span.records if (key := self._add(run, record)) is not None]
        genai = span.genai
        if genai is not None:
            self._stats.invalid_values += genai.invalid
            self._observe(run, span, genai)
        self._attribute_tools(run, span, keys)
        if span.records and run.first_span_name is None:
            run.first_span_name = span.name
        if run.resource is None:
            run.resource = span.resource
        run.cover(span.start_ns, span.end_ns)
        return closed

    def event_ingested(
        self, key: TraceKey, record: GovernanceRecord, now: float, local_root_id: int | None = None
    ) -> list[ClosedRun]:
        """A full AIGP event: it joins the local root of its span when the front door knew it."""
        closed: list[ClosedRun] = []
        self._add(self._run_for(key, local_root_id, now, closed, late=(record,)), record)
        return closed

    def named(self, closed: ClosedRun, job: tuple[str, str]) -> None:
        """The job a terminal event named: a later event of the same run must name it again."""
        self._ended.named(closed, job)

    # ---- what closes runs besides a root's end ----

    def settle(self) -> list[ClosedRun]:
        """An ``OTHER`` event for each ended run that received late records, the aggregate over
        all of its records (called once the intake is drained, so a burst makes one event)."""
        return self._ended.settle()

    def expire(self, now: float) -> list[ClosedRun]:
        """Close every run quiet for longer than the timeout (least recently active first), and
        forget ended runs and quiet roots quiet for as long."""
        self._ended.expire(now)
        self._quiet_roots.expire(now)
        closed: list[ClosedRun] = []
        while self._runs:
            run = next(iter(self._runs.values()))
            if run.active_at + self._timeout > now:
                break
            del self._runs[run.key]
            if run.governed:
                self._stats.traces_timed_out += 1
            self._close(run, Reason.TIMEOUT, closed)
        return closed

    def drain(self) -> list[ClosedRun]:
        """Close every pending run now (shutdown): governed ones are emitted as incomplete."""
        closed = self.settle()
        runs = list(self._runs.values())
        self._runs.clear()
        for run in runs:
            self._close(run, Reason.SHUTDOWN, closed)
        return closed

    # ---- run life ----

    def _run_for(
        self, trace: TraceKey, local_root_id: int | None, now: float, closed: list[ClosedRun], *,
        late: Sequence[GovernanceRecord] | None = None,
    ) -> _Run:
        """The pending run a span or event of this trace belongs to, opened when there is none.

        A known local root has its own run; the first run of the trace takes what has no known
        root, and the first local root to claim it (start or end) makes those records its own.
        With ``late`` (the records of a span or event, perhaps none), a run that has already
        ended, or a quiet root, takes them again (section 2).
        """
        run = self._runs.get(trace)
        if run is not None and local_root_id is not None and run.root_span_id not in (None, local_root_id):
            run = self._runs.get((trace, local_root_id))
            if run is None:
                ended = self._rejoin(trace, local_root_id, late, now, closed) if late is not None else None
                return ended or self._open((trace, local_root_id), trace, local_root_id, now, closed)
        elif run is None:
            ended = self._rejoin(trace, local_root_id, late, now, closed) if late is not None else None
            return ended or self._open(trace, trace, local_root_id, now, closed)
        elif run.root_span_id is None and local_root_id is not None:
            run.root_span_id = local_root_id
            run.continuation = run.continuation or self._emitted_before(trace, local_root_id)
        run.active_at = now
        del self._runs[run.key]
        self._runs[run.key] = run
        return run

    def _rejoin(
        self, trace: TraceKey, local_root_id: int | None, records: Sequence[GovernanceRecord], now: float,
        closed: list[ClosedRun],
    ) -> _Run | None:
        """The ended run or quiet root late ``records`` belong to; None when there is none. A quiet
        root's first records make it an ended run whose terminal event is still to go out; what
        a span without records observes joins it and emits nothing."""
        ended = self._ended.rejoin(trace, local_root_id, records, now)
        if ended is not None:
            return ended
        quiet = self._quiet_roots.find(trace, local_root_id)
        if quiet is None:
            return None
        if records:
            self._quiet_roots.release(quiet.run.key)
            closed.extend(self._ended.adopt(quiet, now))
        return quiet.run

    def _open(
        self, key: RunKey, trace: TraceKey, local_root_id: int | None, now: float, closed: list[ClosedRun]
    ) -> _Run:
        """A new pending run; past ``max_pending_traces``, the least recently active is evicted."""
        run = _Run(
            key=key, active_at=now, root_span_id=local_root_id,
            continuation=self._emitted_before(trace, local_root_id),
        )
        self._runs[key] = run
        while len(self._runs) > self._max_runs:
            oldest = self._runs.pop(next(iter(self._runs)))
            self._stats.traces_evicted += 1
            self._close(oldest, Reason.EVICTED, closed)
        return run

    def _root_ended(self, span: SpanFacts, root: RootFacts, now: float) -> list[ClosedRun]:
        """A local root ended: its span's records and facts join its run, which is closed. The
        same root ending again (a request sent again) adds nothing."""
        closed: list[ClosedRun] = []
        if self._repeated(span.trace_id, root.span_id, span.records):
            return closed
        run = self._run_for(span.trace_id, root.span_id, now, closed)
        for record in span.records:
            self._add(run, record)
        genai = span.genai
        if genai is not None:
            self._stats.invalid_values += genai.invalid
            self._observe(run, span, genai)
            if genai.tool is not None:  # every span of the run is under its root
                run.make_about_tool(list(run.records), genai.tool)
        if span.records and run.first_span_name is None:
            run.first_span_name = span.name
        run.resource = span.resource
        run.cover(span.start_ns, span.end_ns)
        run.root_remote = root.remote_parent
        del self._runs[run.key]
        self._close(run, Reason.ROOT_ENDED, closed, root)
        return closed

    def _repeated(self, trace: TraceKey, root_id: int, records: Sequence[GovernanceRecord]) -> bool:
        """This root's run already ended (and is remembered) holding all of ``records``, and no run
        of it is pending: its end is a copy."""
        run = self._runs.get(trace)
        if (run is not None and run.root_span_id in (None, root_id)) or (trace, root_id) in self._runs:
            return False
        if self._ended.holds(trace, root_id, records) or self._quiet_roots.holds(trace, root_id, records):
            self._stats.duplicate_records += len(records)
            return True
        return False

    def _close(
        self, run: _Run, reason: Reason, closed: list[ClosedRun], root: RootFacts | None = None
    ) -> None:
        # A run emitted early is closed by a terminal event when its root ends, even without
        # new records, so that no lineage backend shows it running for ever.
        closes_early_run = run.continuation and reason is Reason.ROOT_ENDED
        wanted_ungoverned = self._emit_ungoverned and reason is Reason.ROOT_ENDED
        if not (run.governed or closes_early_run or wanted_ungoverned):
            if reason is Reason.ROOT_ENDED and root is not None and self.remember_ungoverned_roots:
                self._quiet_roots.remember(run, root)
            return
        trace = run.trace
        early = reason is not Reason.ROOT_ENDED
        if early:
            self._emitted_early[(trace, run.root_span_id)] = None
            while len(self._emitted_early) > self._max_runs:
                self._emitted_early.popitem(last=False)
            closed.append(_closed_run(run, reason=reason, complete=False, root=root))
            return
        self._emitted_early.pop((trace, run.root_span_id), None)
        self._emitted_early.pop((trace, None), None)
        complete = not run.continuation
        self._quiet_roots.release(run.key)
        closed.extend(self._ended.release(run.key))  # an ended run of this key goes out first
        closed.append(_closed_run(run, reason=reason, complete=complete, root=root))
        closed.extend(self._ended.remember(run, complete=complete, root=root))

    def _emitted_before(self, trace: TraceKey, local_root_id: int | None) -> bool:
        """Part of this run already went out early (its own, or its trace's unattributed records)."""
        early = self._emitted_early
        return (trace, local_root_id) in early or (local_root_id is not None and (trace, None) in early)

    # ---- what a run holds ----

    def _add(self, run: _Run, record: GovernanceRecord) -> str | None:
        """Keep a record in its run; its key, or None when it went to the overflow."""
        stats = self._stats
        stats.records += 1
        stats.invalid_values += record.invalid
        records = run.records
        # Unique: records are never removed, so the count only grows.
        key = record.event_id if record.event_id is not None else f"#{len(records)}"
        known = records.get(key)
        if known is not None:
            stats.duplicate_records += 1
            records[key] = join_duplicate(known, record)
            return key
        if len(records) >= self._max_records:
            stats.records_left_out += 1
            if run.overflow is None:
                run.overflow = Overflow()
            run.overflow.add(record)
            return None
        records[key] = record
        return key

    def _observe(self, run: _Run, span: SpanFacts, genai: GenAIFacts) -> None:
        """Note the tool, model and agent name a GenAI span names (contract section 9); past
        ``max_records_per_trace`` resources, a new one is left out and counted."""
        observed = run.observed
        named = (("tool", genai.tool, None), ("model", genai.model, genai.provider))
        for resource_type, name, provider in named:
            if name is None:
                continue
            known = next((o for o in observed if o[0] == resource_type and o[1] == name), None)
            if known is None and len(observed) >= self._max_records:
                self._stats.invalid_values += 1
            elif known is None or (known[2] is None and provider is not None):
                others = tuple(o for o in observed if o is not known)
                observed = tuple(sorted((*others, (resource_type, name, provider))))
        run.observed = observed
        if genai.agent_name is not None and span.root is None:
            candidate = _OutermostAgent(span.start_ns, -span.end_ns, genai.agent_name)
            if run.agent is None or candidate < run.agent:
                run.agent = candidate

    def _attribute_tools(self, run: _Run, span: SpanFacts, keys: list[str]) -> None:
        """Make the records of a span under the root about the tool span they are under.

        A tool span's own records were made about its tool at extraction; it claims the records
        waiting for it. Records right under the root wait for nothing: when the root ends, an
        ``execute_tool`` root claims every tool-less record of its run.
        """
        tool = span.genai.tool if span.genai is not None else None
        if tool is not None:
            if run.tools is None:
                run.tools = ToolAttribution()
            run.make_about_tool(run.tools.tool_span_ended(span.span_id, tool), tool)
            return
        parent = span.parent_span_id
        if parent is None or parent == span.local_root_id or parent == run.root_span_id:
            if run.tools is not None:
                run.tools.child_of_root_ended(span.span_id)
            return
        tool_less = [key for key in keys if not names_tool(run.records[key])]
        if run.tools is None:
            if not tool_less:
                return
            run.tools = ToolAttribution()
        tool, claimed = run.tools.span_ended(span.span_id, parent, tool_less)
        if tool is not None:
            run.make_about_tool(claimed, tool)
