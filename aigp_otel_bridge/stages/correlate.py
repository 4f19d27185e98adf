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

A run that ended is remembered for a while (bounded by count and time): records that arrive after
its terminal event join it again and close it as ``LATE``, an ``OTHER`` event of the same run over
all its records. GenAI spans add the tools and models they name, and the tool a record is about.

The ``Correlator`` is a plain, single-threaded state machine: one worker owns it, so it needs no
locks, and tests drive it with explicit clocks.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from aigp_otel_bridge.memo import remember
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
"""A trace's first run is keyed by the trace alone, so the usual single-root trace costs no more
than a trace key; a further local root of the same trace by (trace, its span id)."""


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
class _GenAI:
    """What a run's GenAI spans said (contract section 9); only for runs that have some (records
    waiting for a tool ancestor are the run's own ``waiting``). Replaced, never changed (but for
    its ``tools`` dict), so that runs which only observed the same tools and models share one."""

    observed: tuple[Observed, ...] = ()
    """Tools and models seen, with a model's provider, sorted."""
    tools: dict[int, str] | None = None
    """``execute_tool`` spans seen: span id -> tool input name."""
    agent: tuple[int, int, str] | None = None
    """The outermost span under the root with ``gen_ai.agent.name``: (start, -end, name); the
    earliest started is the outermost, since a span starts before every span under it."""


_NO_GENAI = _GenAI()

Waiting: TypeAlias = tuple[int | str, ...] | dict[int, list[str]] | None
"""Records waiting for an ``execute_tool`` ancestor: a flat ``(span id, key, span id, key, ...)``
tuple while few (a pending run holds no dict or list for them), a dict of lists past
``_WAITING_FLAT_MAX`` pairs (so that many waiting records never cost a scan per span)."""
_WAITING_FLAT_MAX = 8


def _wait(waiting: Waiting, parent: int, keys: list[str]) -> Waiting:
    """``waiting`` with ``keys`` waiting under ``parent``."""
    if isinstance(waiting, dict):
        waiting.setdefault(parent, []).extend(keys)
        return waiting
    flat = (*(waiting or ()), *(item for key in keys for item in (parent, key)))
    if len(flat) <= 2 * _WAITING_FLAT_MAX:
        return flat
    grouped: dict[int, list[str]] = {}
    for index in range(0, len(flat), 2):
        grouped.setdefault(int(flat[index]), []).append(str(flat[index + 1]))
    return grouped


def _take(waiting: Waiting, span_id: int) -> tuple[list[str], Waiting]:
    """The keys waiting under ``span_id``, and what still waits."""
    if not waiting:
        return [], waiting
    if isinstance(waiting, dict):
        return waiting.pop(span_id, []), waiting
    taken = [str(waiting[i + 1]) for i in range(0, len(waiting), 2) if waiting[i] == span_id]
    if not taken:
        return taken, waiting
    left = tuple(item for i in range(0, len(waiting), 2) if waiting[i] != span_id
                 for item in waiting[i : i + 2])
    return taken, left or None


_SHARED_GENAI_MAX = 1024
_OBSERVED_MAX = 64
_NOT_OBSERVED: tuple[GenAIFacts | None, _GenAI | None, _GenAI | None] = (None, None, None)


class _Records(dict[str, GovernanceRecord]):
    """A run's records by key once it has more than one (or one and an overflow), with what the
    per-run bound left out."""

    __slots__ = ("overflow",)
    overflow: Overflow | None


def _records(key: str, record: GovernanceRecord) -> _Records:
    """``_Records`` holding one record (without a Python ``__init__``, which costs three times as much)."""
    records = _Records()
    records[key] = record
    records.overflow = None
    return records


Held: TypeAlias = GovernanceRecord | _Records | None
"""A run's records: none, the only one itself (most runs hold one), or ``_Records`` from the
second on. A record's key is its event id, else ``#`` and its position among the run's records."""


def _key_of(record: GovernanceRecord, position: int) -> str:
    return record.event_id if record.event_id is not None else f"#{position}"


Extent: TypeAlias = int | tuple[int, int] | None
"""The first start and the last end of a run's spans: one int, ``start << 64 | end``, while both
are unsigned 64-bit nanoseconds (as OTLP defines them), which costs half of two ints; else a pair."""
_NS_MAX = (1 << 64) - 1


def _extent(start: int, end: int) -> Extent:
    if type(start) is int and type(end) is int and 0 <= start <= _NS_MAX and 0 <= end <= _NS_MAX:
        return start << 64 | end
    return (start, end)


def _bounds(extent: Extent) -> tuple[int | None, int | None]:
    """(first start, last end) of an extent."""
    if extent is None:
        return None, None
    if isinstance(extent, tuple):
        return extent
    return extent >> 64, extent & _NS_MAX


class _Flag:
    """A boolean kept as one bit of a run's ``flags`` (an int costs a run less than two bools' slots)."""

    __slots__ = ("_bit",)

    def __init__(self, bit: int) -> None:
        self._bit = bit

    def __get__(self, run: _Run, owner: type | None = None) -> bool:
        return bool(run.flags & self._bit)

    def __set__(self, run: _Run, value: bool) -> None:
        run.flags = run.flags | self._bit if value else run.flags & ~self._bit


@dataclass(slots=True)
class _Run:
    # Memory per pending run is bounded by configuration but multiplied by max_pending_traces, so a
    # run holds no more than it must: no dict for a single record; the overflow with the records
    # (``_Records``); the root's facts only once ended (``_Ended``); two flags in one int; the
    # first start and the last end in one (``Extent``).
    key: RunKey
    active_at: float
    """When the run last saw activity (it times out ``trace_timeout_s`` later): the clock reading the
    worker takes once per batch, so the runs a batch touches share one float."""
    root_span_id: int | None = None
    """The run's local root; None while its records are not attributed to one."""
    records: Held = None
    flags: int = 0
    """The bits of ``root_remote`` and ``continuation``."""
    first_span_name: str | None = None
    resource: ResourceFacts | None = None
    extent: Extent = None
    genai: _GenAI | None = None
    waiting: Waiting = None
    """Keys of tool-less records by the span id of their nearest ancestor not yet seen ending."""

    root_remote = _Flag(1)
    """The local root has a remote parent (known from its start or its end)."""
    continuation = _Flag(2)
    """Part of this run already went out early: it ends incomplete."""

    def cover(self, start_ns: int, end_ns: int) -> None:
        """Widen the run's extent to a span's start and end."""
        extent = self.extent
        if type(extent) is int:  # the usual case: a span starting after the first, perhaps ending later
            first, last = extent >> 64, extent & _NS_MAX
            if first <= start_ns:
                if end_ns <= last:
                    return
                if type(end_ns) is int and end_ns <= _NS_MAX:
                    self.extent = extent - last + end_ns
                    return
        if extent is not None:
            first, last = (extent >> 64, extent & _NS_MAX) if isinstance(extent, int) else extent
            if not (start_ns < first or end_ns > last):
                return
            if not start_ns < first:
                start_ns = first
            if not end_ns > last:
                end_ns = last
        self.extent = _extent(start_ns, end_ns)

    @property
    def trace(self) -> TraceKey:
        return self.key[0] if isinstance(self.key, tuple) else self.key

    @property
    def governed(self) -> bool:
        return self.records is not None  # the first record is always kept, so an overflow has one

    def record_keys(self) -> list[str]:
        held = self.records
        if held is None:
            return []
        return list(held) if isinstance(held, _Records) else [_key_of(held, 0)]

    def kept_records(self) -> tuple[GovernanceRecord, ...]:
        held = self.records
        if held is None:
            return ()
        return tuple(held.values()) if isinstance(held, _Records) else (held,)

    def record(self, key: str) -> GovernanceRecord | None:
        held = self.records
        if isinstance(held, _Records):
            return held.get(key)
        return held if held is not None and _key_of(held, 0) == key else None

    def replace_record(self, key: str, record: GovernanceRecord) -> None:
        """Put ``record`` in place of the one kept under ``key`` (its position unchanged)."""
        if isinstance(self.records, _Records):
            self.records[key] = record
        else:
            self.records = record


@dataclass(slots=True)
class _Ended:
    """A run whose terminal event went out, remembered for records that arrive late."""

    run: _Run
    forget_at: float
    job: tuple[str, str] | None = None
    """The job the terminal event named (``Correlator.named``): a late event names the same."""
    complete: bool = True
    root: RootFacts | None = None
    """The local root's facts, when its end closed the run."""


@dataclass(slots=True)
class ClosedRun:
    """Everything the build stage needs of a closed run. Treated as immutable once built; not
    frozen, because a frozen dataclass of this size costs twice as much to build (once per run)."""

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
    observed: tuple[Observed, ...] = ()
    """Tools and models seen on the run's GenAI spans (sorted)."""
    agent_name: str | None = None
    """``gen_ai.agent.name`` of the outermost span under the root carrying one."""
    job: tuple[str, str] | None = None
    """For a late run: the job its terminal event named."""
    run_key: RunKey | None = None
    """Identifies the run to ``Correlator.named``."""


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
        self._runs: dict[RunKey, _Run] = {}
        """Pending runs, least recently active first: a run that sees activity is inserted again
        at the end (a plain dict costs about half an ``OrderedDict`` per entry)."""
        self._latest: _Run | None = None
        """The run last put at the end of ``_runs``: the spans of one run, which mostly come
        together, move nothing while it is still there."""
        self._emitted_early: OrderedDict[tuple[TraceKey, int | None], None] = OrderedDict()
        """(trace, local root or None) of runs emitted early, to mark their continuations."""
        self._ended: OrderedDict[RunKey, _Ended] = OrderedDict()
        """Runs whose terminal event went out, oldest first, bounded by count and by time."""
        self._late: dict[RunKey, _Ended] = {}
        """Ended runs that received records since their last event."""
        self._shared_genai: dict[tuple[Observed, ...], _GenAI] = {}
        """One ``_GenAI`` per set of observations, for runs that have nothing else."""
        self._observed: dict[tuple[int, int], tuple[GenAIFacts | None, _GenAI | None, _GenAI | None]] = {}
        """What model-only GenAI facts did to a run's GenAI state, by the identities of both (the
        objects themselves kept with it, so that neither identity can be reused): (facts, state
        before, state after, a shared one or None). The same facts on a run in the same state make
        the same change without being observed again: chat spans repeat their model run after
        run, extraction shares equal facts, and runs share equal states. Only changes that
        counted nothing are kept."""
        self._observed_last = _NOT_OBSERVED

    def __len__(self) -> int:
        return len(self._runs)

    def _run_for(
        self, trace: TraceKey, local_root_id: int | None, now: float, closed: list[ClosedRun], *,
        late: bool = False,
    ) -> _Run:
        """The pending run a span or event of this trace belongs to, made when there is none.

        A known local root has its own run; the first run of the trace takes what has no known
        root, and the first local root to claim it (start or end) makes those records its own.
        With ``late``, records of a run that has already ended join that run again (section 2).
        """
        runs = self._runs
        run = runs.get(trace)
        if run is not None and local_root_id is not None and run.root_span_id not in (None, local_root_id):
            run = runs.get((trace, local_root_id))
            if run is None:
                ended = self._ended_run(trace, local_root_id, now) if late else None
                return ended or self._new((trace, local_root_id), trace, local_root_id, now, closed)
        elif run is None:
            ended = self._ended_run(trace, local_root_id, now) if late else None
            return ended or self._new(trace, trace, local_root_id, now, closed)
        elif run.root_span_id is None and local_root_id is not None:
            run.root_span_id = local_root_id
            run.continuation = run.continuation or self._emitted_before(trace, local_root_id)
        run.active_at = now
        if run is not self._latest:  # nothing was added after it since, so it is still the last
            key = run.key
            del runs[key]
            runs[key] = run
            self._latest = run
        return run

    def _new(
        self, key: RunKey, trace: TraceKey, local_root_id: int | None, now: float, closed: list[ClosedRun]
    ) -> _Run:
        run = _Run(key, now, local_root_id)
        if self._emitted_early:
            run.continuation = self._emitted_before(trace, local_root_id)
        self._runs[key] = run
        self._latest = run
        while len(self._runs) > self._max_runs:
            oldest = self._runs.pop(next(iter(self._runs)))
            self._stats.traces_evicted += 1
            self._close(oldest, Reason.EVICTED, closed)
        return run

    def _ended_run(self, trace: TraceKey, local_root_id: int | None, now: float) -> _Run | None:
        """The ended run a late record belongs to, marked to be emitted again; None when forgotten."""
        ended = self._ended.get(trace)
        if ended is None or local_root_id not in (None, ended.run.root_span_id):
            ended = self._ended.get((trace, local_root_id)) if local_root_id is not None else None
        if ended is None:
            return None
        ended.forget_at = now + self._timeout
        self._ended.move_to_end(ended.run.key)
        self._late[ended.run.key] = ended
        return ended.run

    def named(self, closed: ClosedRun, job: tuple[str, str]) -> None:
        """The job a terminal event named: a later event of the same run must name it again."""
        ended = self._ended.get(closed.run_key) if closed.run_key is not None else None
        if ended is not None and ended.job is None and ended.run.root_span_id == closed.root_span_id:
            ended.job = job

    def settle(self) -> list[ClosedRun]:
        """An ``OTHER`` event for each ended run that received late records, the aggregate over
        all of its records (called once the intake is drained, so a burst makes one event)."""
        closed: list[ClosedRun] = []
        for ended in self._late.values():
            closed.append(self._closed_run(ended.run, Reason.LATE, ended.complete, ended.job, ended.root))
        self._late.clear()
        self._stats.late_events += len(closed)
        return closed

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

    def span_ended(self, span: SpanFacts, now: float) -> Sequence[ClosedRun]:
        """The runs a finished span closes: its own when it is a local root, one evicted when it
        starts a run past the bound; ``()`` for most spans, which then cost no list."""
        records, root, genai = span.records, span.root, span.genai
        if root is not None:
            return self._root_ended(span, root, now)
        closed: Sequence[ClosedRun] = ()
        if not records and genai is None:
            return closed
        local_root_id = span.local_root_id
        run = self._runs.get(span.trace_id)
        if run is not None and run is self._latest and local_root_id is not None and (
            run.root_span_id == local_root_id
        ):
            run.active_at = now  # the usual case: the run of the span before, still the last
        else:
            evicted: list[ClosedRun] = []
            run = self._run_for(span.trace_id, local_root_id, now, evicted, late=bool(records))
            closed = evicted
        key: str | None = None
        keys: list[str] | None = None
        if len(records) == 1:  # the usual governed span: one AIGP event (its key in a list if needed)
            key = self._add(run, records[0])
        else:
            keys = [key for record in records if (key := self._add(run, record)) is not None]
        if genai is not None:
            if genai.invalid:
                self._stats.invalid_values += genai.invalid
            state = run.genai
            known = self._observed_last  # the spans of one run mostly repeat one model
            if known[0] is not genai or known[1] is not state:
                known = self._observed.get((id(genai), id(state)), _NOT_OBSERVED)
            if known[0] is genai and known[1] is state:
                self._observed_last = known
                run.genai = known[2]
            else:
                self._observe(run, span, genai)
        parent = span.parent_span_id
        if (genai is None or genai.tool is None) and (run.waiting or (
            parent is not None and parent != local_root_id and parent != run.root_span_id
        )):
            if keys is None:
                keys = [] if key is None else [key]
            self._place_tool_less(run, span, keys, local_root_id)
        if records and run.first_span_name is None:
            run.first_span_name = span.name
        if run.resource is None:
            run.resource = span.resource
        run.cover(span.start_ns, span.end_ns)
        return closed

    def _root_ended(self, span: SpanFacts, root: RootFacts, now: float) -> list[ClosedRun]:
        """A local root ended: its span's records and facts join its run, which is closed."""
        closed: list[ClosedRun] = []
        run = self._run_for(span.trace_id, root.span_id, now, closed)
        for record in span.records:
            self._add(run, record)
        genai = span.genai
        if genai is not None:
            self._stats.invalid_values += genai.invalid
            self._observe(run, span, genai)
            if genai.tool is not None:  # every span of the run is under its root
                self._about_tool(run, run.record_keys(), genai.tool)
        if span.records and run.first_span_name is None:
            run.first_span_name = span.name
        run.resource = span.resource
        run.cover(span.start_ns, span.end_ns)
        run.root_remote = root.remote_parent
        del self._runs[run.key]
        self._close(run, Reason.ROOT_ENDED, closed, root)
        return closed

    def event_ingested(
        self, key: TraceKey, record: GovernanceRecord, now: float, local_root_id: int | None = None
    ) -> list[ClosedRun]:
        """A full AIGP event: it joins the local root of its span when the front door knew it."""
        closed: list[ClosedRun] = []
        self._add(self._run_for(key, local_root_id, now, closed, late=True), record)
        return closed

    # ---- GenAI spans (contract section 9) ----

    def _observe(self, run: _Run, span: SpanFacts, genai: GenAIFacts) -> None:
        """Note the tool, model and agent name a GenAI span names."""
        before = run.genai
        state = before or _NO_GENAI
        observed = state.observed
        model_only = genai.tool is None and genai.agent_name is None
        if model_only and genai.model is not None and ("model", genai.model, genai.provider) in observed:
            self._observation(genai, before, before)
            return  # a model seen before, as chat spans repeat it: nothing new
        counted = False
        seen = (("tool", genai.tool, None), ("model", genai.model, genai.provider))
        for resource_type, name, provider in seen:
            if name is None:
                continue
            known = next((o for o in observed if o[0] == resource_type and o[1] == name), None)
            if known is None and len(observed) >= self._max_records:
                self._stats.invalid_values += 1
                counted = True
            elif known is None or (known[2] is None and provider is not None):
                others = tuple(o for o in observed if o is not known)
                observed = tuple(sorted((*others, (resource_type, name, provider))))
        agent = state.agent
        if genai.agent_name is not None and span.root is None:
            candidate = (span.start_ns, -span.end_ns, genai.agent_name)
            agent = candidate if agent is None or candidate < agent else agent
        tools = state.tools
        if genai.tool is not None and span.root is None:
            tools = tools if tools is not None else {}
            tools[span.span_id] = genai.tool
        if (observed, agent, tools) != (state.observed, state.agent, state.tools):
            run.genai = self._genai(observed, agent, tools)
        if model_only and not counted and tools is None and agent is None:
            self._observation(genai, before, run.genai)  # a shared state, or None
        if genai.tool is not None and span.root is None and run.waiting:
            keys, run.waiting = _take(run.waiting, span.span_id)
            self._about_tool(run, keys, genai.tool)

    def _observation(self, genai: GenAIFacts, before: _GenAI | None, after: _GenAI | None) -> None:
        remember(self._observed, (id(genai), id(before)), (genai, before, after), _OBSERVED_MAX)

    def _genai(
        self, observed: tuple[Observed, ...], agent: tuple[int, int, str] | None, tools: dict[int, str] | None
    ) -> _GenAI:
        """A run's GenAI state, shared with other runs when it holds only observations."""
        if tools is not None or agent is not None:
            return _GenAI(observed, tools, agent)
        shared = self._shared_genai
        state = shared.get(observed)
        if state is None:
            state = remember(shared, observed, _GenAI(observed), _SHARED_GENAI_MAX)
        return state

    def _place_tool_less(self, run: _Run, span: SpanFacts, keys: list[str], root_id: int | None) -> None:
        """Tool-less records of a span under the root wait for the nearest ``execute_tool``
        ancestor: spans end before their parents, so it is usually seen after them. Records
        waiting on this span move up to its parent. A record's chain of ancestors is only known
        through spans that reach correlation (governed, GenAI or local roots)."""
        if span.genai is not None and span.genai.tool is not None:
            return  # extraction made this span's records about its own tool
        moved: list[str] = []
        if run.waiting:
            moved, run.waiting = _take(run.waiting, span.span_id)
        parent = span.parent_span_id
        if parent is None or parent == root_id or parent == run.root_span_id:
            return  # under the root alone: about the root's tool, if it is one (at its end)
        keys = [key for key in keys if (kept := run.record(key)) is not None and not names_tool(kept)] + moved
        if not keys:
            return
        state = run.genai
        tool = state.tools.get(parent) if state is not None and state.tools else None
        if tool is not None:
            self._about_tool(run, keys, tool)
            return
        run.waiting = _wait(run.waiting, parent, keys)

    def _about_tool(self, run: _Run, keys: list[str], tool: str) -> None:
        for key in keys:
            record = run.record(key)
            if record is not None:
                run.replace_record(key, about_tool(record, tool))

    def expire(self, now: float) -> list[ClosedRun]:
        """Close every run quiet for longer than the timeout (least recently active first), and
        forget ended runs quiet for as long."""
        closed: list[ClosedRun] = []
        while self._ended:
            ended = next(iter(self._ended.values()))
            if ended.forget_at > now or ended.run.key in self._late:
                break
            del self._ended[ended.run.key]
        quiet = list(_quiet(self._runs, now, self._timeout))
        for run in quiet:
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

    def _add(self, run: _Run, record: GovernanceRecord) -> str | None:
        """Keep a record in its run; its key, or None when it went to the overflow."""
        stats = self._stats
        stats.records += 1
        if record.invalid:
            stats.invalid_values += record.invalid
        held = run.records
        key = record.event_id
        if held is None:  # max_records is at least one
            run.records = record
            return key if key is not None else "#0"
        records = held if isinstance(held, _Records) else _records(_key_of(held, 0), held)
        if key is None:
            key = f"#{len(records)}"  # unique: records are never removed, so the length only grows
        known = records.get(key)
        if known is not None:
            stats.duplicate_records += 1
            run.replace_record(key, join_duplicate(known, record))
            return key
        if len(records) >= self._max_records:
            stats.records_left_out += 1
            if records.overflow is None:
                records.overflow = Overflow()
            records.overflow.add(record)
            run.records = records
            return None
        records[key] = record
        run.records = records
        return key

    def _close(
        self, run: _Run, reason: Reason, closed: list[ClosedRun], root: RootFacts | None = None
    ) -> None:
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
        elif self._emitted_early:
            self._emitted_early.pop((trace, run.root_span_id), None)
            self._emitted_early.pop((trace, None), None)
        complete = not early and not run.continuation
        if not early and run.key in self._ended:  # an ended run of this key goes out first
            self._forget(self._ended.pop(run.key), closed)
        closed.append(self._closed_run(run, reason, complete, None, root))
        if not early:
            self._remember(run, complete, closed, root)

    def _remember(self, run: _Run, complete: bool, closed: list[ClosedRun], root: RootFacts | None) -> None:
        """Keep an ended run for its late records: at most ``max_pending_traces`` of them, each
        for ``trace_timeout_s`` after its last activity; one forgotten earlier is counted (and
        its late records, if any are waiting, go out first)."""
        ended = self._ended
        ended[run.key] = _Ended(run, run.active_at + self._timeout, None, complete, root)
        while len(ended) > self._max_runs:
            _, oldest = ended.popitem(last=False)
            self._forget(oldest, closed)
            self._stats.ended_runs_forgotten += 1

    def _forget(self, ended: _Ended | None, closed: list[ClosedRun]) -> None:
        if ended is not None and self._late.pop(ended.run.key, None) is not None:
            closed.append(self._closed_run(ended.run, Reason.LATE, ended.complete, ended.job, ended.root))
            self._stats.late_events += 1

    def _closed_run(
        self, run: _Run, reason: Reason, complete: bool, job: tuple[str, str] | None,
        root: RootFacts | None,
    ) -> ClosedRun:
        state = run.genai
        held = run.records
        overflow = held.overflow if isinstance(held, _Records) else None
        first_start_ns, last_end_ns = _bounds(run.extent)
        return ClosedRun(
            key=run.trace,
            root_span_id=run.root_span_id,
            root_remote=run.root_remote,
            records=run.kept_records(),
            overflow=overflow or _NO_OVERFLOW,
            reason=reason,
            complete=complete,
            root=root,
            first_span_name=run.first_span_name,
            resource=run.resource,
            first_start_ns=first_start_ns,
            last_end_ns=last_end_ns,
            observed=state.observed if state is not None else (),
            agent_name=state.agent[2] if state is not None and state.agent is not None else None,
            job=job,
            run_key=run.key,
        )


def _quiet(runs: dict[RunKey, _Run], now: float, timeout: float) -> Iterator[_Run]:
    """The runs quiet for longer than ``timeout`` at ``now``, least recently active first."""
    for run in runs.values():
        if run.active_at + timeout > now:
            return
        yield run
