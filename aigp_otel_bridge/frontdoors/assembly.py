"""The gateway's view of whole traces: which local root each span belongs to, across requests, and
a short hold on each local root before its run is decided (docs/gateway.md, "Whole traces").

Spans reach a gateway in requests that follow each service's export schedule, not the call tree:
a child may come after its local root (exporters that send every span on its own, concurrently),
a callee's root nearly always comes before its caller's root, and a sender without the span
flags cannot say whether a parent is remote. ``TraceAssembly`` therefore

- keeps a span index: every span of recent requests, by (trace, span), with its parent or a mark
  that it is a local root, so that any span's local root is found by walking up the index. Two
  generations of plain dicts, rotated every ``link_wait_s + root_wait_s`` (or sooner, when the
  newer one holds ``max_spans`` entries), bound it without per-trace bookkeeping;
- holds every local root for ``root_wait_s`` before handing it to the engine, so that children
  arriving just after it (resolved through the index) still join its terminal event;
- holds a callee's root (a local root with a parent) until its caller's local root has been handed
  over, at most ``link_wait_s`` after it arrived, then names the caller for the ``parent`` facet
  (``RunChain.expect``) and hands it over after the caller's, so the worker names the caller's run
  first;
- for senders without flags, holds a span presumed a local root (its parent not among its
  resource's spans) and makes it an ordinary child again when its parent arrives under the same
  resource while it is held;
- keeps a *lonely* root apart instead of holding it: a local root with no parent and no
  governance of its own, of a trace nothing else is noted of (in its request or recently). Most
  traffic is such traces, whose roots the engine would only decide make no run. A lonely root is
  remembered for ``trace_timeout_s`` (bounded as the hold is, in ``max_held_bytes``, and to 16 x
  ``max_pending_traces`` traces; the oldest forgotten first, never refused) and held from the
  moment a span of its trace is noted, as if it had just arrived, so the rest of its trace may
  still join it.

Held notes are acknowledged data: the hold thread hands them to the engine (``put_span``), and
``close`` hands over every held note before the engine stops. In process none of this exists.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aigp_otel_bridge.engine import Engine
from aigp_otel_bridge.journal import Journaled, governs
from aigp_otel_bridge.note import SpanNote
from aigp_otel_bridge.span_links import RunChain

ROOT = b""
"""The index's value for a local root (a parent span id is 8 bytes)."""
_MAX_DEPTH = 256
"""Longest walk up the index (deeper call trees resolve to no root: the trace's first run)."""
_NOTE_BYTES = 640
"""What a held note costs before its attributes: the note, its hold entry and index entries."""
_VALUE_BYTES = 80
"""What an attribute costs besides its string's characters: the dict slot, key and value objects."""
_NOTED_PER_PENDING_TRACE = 4
"""Traces remembered as noted, per ``max_pending_traces``: a root of one of them is never lonely, so
that it reaches the engine (to close a run emitted early, say) for that many newer noted traces."""


SpanKey = bytes
"""(trace, span) as their 24 bytes, as OTLP carries them: the receivers key every span without
converting its ids, and a key is cheaper to keep and hash than a tuple."""


def span_key(trace_id: int, span_id: int) -> SpanKey:
    return trace_id.to_bytes(16, "big") + span_id.to_bytes(8, "big")


def held_bytes(note: SpanNote) -> int:
    """An estimate of what holding ``note`` costs, for the hold's bound in bytes: its strings'
    lengths (already cut at the value cap) plus a fixed cost per note and per attribute."""
    size = _NOTE_BYTES + len(note.name)
    for attributes in (note.attributes, *(event.attributes for event in note.governance_events)):
        if attributes:
            for value in attributes.values():
                size += _VALUE_BYTES + (len(value) if isinstance(value, str) else 0)
    return size


@dataclass(slots=True)
class UnreadRoot:
    """A local root kept before its note is made: one with no parent and no events, in a request
    without governance, of a trace not noted. Such a root is nearly always lonely, and its note
    (``make``, None when the span turns out unreadable) is made only if it is held."""

    trace_id: int
    span_id: int
    size: int
    """What keeping it costs (the span it keeps and a fixed cost)."""
    span: bytes
    """The span, serialized as it came."""
    note_of: Callable[[bytes], SpanNote | None]
    """Makes the note of ``span`` (one for every root of a request's resource)."""
    parent_span_id: None = None

    def make(self) -> SpanNote | None:
        return self.note_of(self.span)


LonelyRoot = SpanNote | UnreadRoot


def _lonely_size(root: LonelyRoot) -> int:
    return root.size if isinstance(root, UnreadRoot) else held_bytes(root)


def _may_be_lonely(root: LonelyRoot) -> bool:
    """A local root with no parent and no governance of its own (lonely when nothing else of its
    trace is noted)."""
    if isinstance(root, UnreadRoot):
        return True
    return root.local_root and root.parent_span_id is None and not governs(root)


@dataclass(slots=True)
class _Held:
    note: SpanNote
    release_at: float
    give_up_at: float
    """A callee waits for its caller's root until then."""
    resource_key: int | None
    """Set for a root presumed from a sender without flags: the resource whose spans it was missing from."""
    size: int
    """``held_bytes`` of the root and of its children."""
    children: list[SpanNote] = field(default_factory=list)
    """Children of a presumed root: they follow it, or its parent's root if it turns out a child."""


class TraceAssembly:
    """Span index and hold; ``admit`` on the receivers' threads, releases on its own thread."""

    def __init__(
        self,
        engine: Engine,
        chain: RunChain,
        *,
        root_wait_s: float,
        link_wait_s: float,
        max_held_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._chain = chain
        self._root_wait = root_wait_s
        self._link_wait = link_wait_s
        self._keep_s = max(root_wait_s + link_wait_s, 1.0)
        self._max_spans = 16 * engine.config.max_pending_traces
        self._max_held_bytes = max_held_bytes
        self._held_bytes = 0
        """``held_bytes`` of every note held (roots waiting, callees awaiting, presumed roots' children)."""
        self._clock = clock
        self._lock = threading.Condition()
        self._current: dict[SpanKey, bytes] = {}
        """Span key -> its parent's span id, or ``ROOT``."""
        self._previous: dict[SpanKey, bytes] = {}
        self._current_resources: dict[SpanKey, int] = {}
        """Span key -> resource key, for spans of senders without flags only."""
        self._previous_resources: dict[SpanKey, int] = {}
        self._rotated_at = clock()
        self._held: dict[SpanKey, _Held] = {}
        """Roots in their ``root_wait_s``, in order of arrival."""
        self._awaiting: dict[SpanKey, _Held] = {}
        """Callees past their ``root_wait_s``, waiting for their caller's root."""
        self._presumed_by_parent: dict[SpanKey, list[SpanKey]] = {}
        """Parent span key -> held presumed roots that name it."""
        self._ready: list[SpanNote] = []
        self._keeps_lonely = not engine.config.emit_ungoverned
        """Without ``emit_ungoverned``, a lonely root makes no run unless a later span of its trace
        is noted."""
        self._lonely: OrderedDict[int, tuple[float, LonelyRoot]] = OrderedDict()
        """Trace id -> (forget at, its lonely root), oldest first: a trace has one root with no parent."""
        self._lonely_bytes = 0
        self._lonely_for_s = engine.config.trace_timeout_s
        self._max_lonely = 16 * engine.config.max_pending_traces
        self._noted: dict[int, None] = {}
        """Trace ids something other than a lonely root was noted of, oldest first (bounded)."""
        self._max_noted = _NOTED_PER_PENDING_TRACE * engine.config.max_pending_traces
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="aigp-gateway-hold", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- the span index ----

    def _parent(self, key: SpanKey) -> bytes | None:
        parent = self._current.get(key)
        return self._previous.get(key) if parent is None else parent

    def local_root(self, trace_id: int, span_id: int) -> int | None:
        """The local root of ``span_id`` (itself when it is one), or None while its chain is unknown."""
        trace = trace_id.to_bytes(16, "big")
        span = span_id.to_bytes(8, "big")
        for _ in range(_MAX_DEPTH):
            parent = self._parent(trace + span)
            if parent is None:
                return None
            if parent == ROOT:
                return int.from_bytes(span, "big")
            span = parent
        return None

    def seen_in_resource(self, key: SpanKey, resource_key: int) -> bool:
        """The span was received earlier under this resource (for senders without flags)."""
        with self._lock:
            found = self._current_resources.get(key)
            if found is None:
                found = self._previous_resources.get(key)
        return found == resource_key

    def _rotate_if_due(self, now: float) -> None:
        if now - self._rotated_at >= self._keep_s or len(self._current) > self._max_spans:
            self._previous, self._current = self._current, {}
            self._previous_resources, self._current_resources = self._current_resources, {}
            self._rotated_at = now

    # ---- admission (receiver threads) ----

    def admit(
        self,
        notes: list[SpanNote],
        links: dict[SpanKey, bytes],
        resources: dict[SpanKey, int],
        presumed: dict[SpanKey, int],
        journaled: Journaled | None = None,
        unread_roots: list[UnreadRoot] | None = None,
    ) -> bool:
        """Record a request's spans, queue its children, hold its roots (keep the lonely ones, of
        ``notes`` and ``unread_roots``, apart) and hold the lonely roots its notes' traces had;
        False (nothing queued, held or kept) when the engine refuses the request (intake or
        delivery full), the held roots would pass ``max_held_bytes`` (an empty hold takes any
        request), or the gateway is stopping. ``journaled`` is queued after the children
        (``Engine.offer``)."""
        with self._lock:
            if self._closed:
                return False
            now = self._clock()
            self._rotate_if_due(now)
            self._forget_lonely(now)
            self._current.update(links)
            if resources:
                self._current_resources.update(resources)
            noting = self._noting(notes)
            revived = [trace_id for trace_id in noting if trace_id in self._lonely] if self._lonely else []
            lonely: list[LonelyRoot] = []
            new: dict[SpanKey, _Held] = {}
            roots = [self._lonely[trace_id][1] for trace_id in revived]
            roots.extend(note for note in notes if note.local_root)
            roots.extend(unread_roots or ())
            for candidate in roots:
                if self._stays_lonely(candidate, noting):
                    lonely.append(candidate)
                    continue
                made = candidate if isinstance(candidate, SpanNote) else candidate.make()
                if made is None:  # an unreadable span (logged): left out, and counted
                    self._engine.stats.invalid_values += 1
                    continue
                key = span_key(made.trace_id, made.span_id)
                new[key] = _Held(made, now + self._root_wait, now + self._link_wait, presumed.get(key),
                                 held_bytes(made))
            new_bytes = sum(held.size for held in new.values())
            if self._held_bytes and self._held_bytes + new_bytes > self._max_held_bytes:
                return False
            immediate: list[SpanNote] = []
            attached: list[tuple[_Held, SpanNote]] = []
            for note in notes:
                if note.local_root or note.parent_span_id is None:
                    continue
                root = self.local_root(note.trace_id, note.parent_span_id)
                note.local_root_id = root
                held = None
                if root is not None:
                    root_key = span_key(note.trace_id, root)
                    held = new.get(root_key) or self._held.get(root_key) or self._awaiting.get(root_key)
                if held is not None and held.resource_key is not None:
                    attached.append((held, note))
                else:
                    immediate.append(note)
            if not self._engine.offer(immediate, journaled):  # roots alone too: delivery may be full
                return False
            for trace_id in revived:  # held from now on: the rest of their traces may follow
                self._lonely_bytes -= _lonely_size(self._lonely.pop(trace_id)[1])
            self._note(noting)
            self._keep_lonely(lonely, now)
            arriving = {id(held) for held in new.values()}
            for held, note in attached:
                held.children.append(note)
                size = held_bytes(note)
                held.size += size
                if id(held) not in arriving:  # an arriving root is counted below, children included
                    self._held_bytes += size
            for key, held in new.items():
                if key in self._held or key in self._awaiting:
                    continue  # the same request sent again
                self._held[key] = held
                self._held_bytes += held.size
                parent = held.note.parent_span_id
                if held.resource_key is not None and parent is not None:
                    self._presumed_by_parent.setdefault(span_key(held.note.trace_id, parent), []).append(key)
            if self._presumed_by_parent:
                for parent_key in [key for key in self._presumed_by_parent if key in links]:
                    for key in self._presumed_by_parent.pop(parent_key):
                        self._demote(key, resources.get(parent_key))
            self._lock.notify()
            return True

    def noted(self, trace_id: int) -> bool:
        """Something other than a lonely root was noted of this trace (recently)."""
        return trace_id in self._noted

    @staticmethod
    def _noting(notes: list[SpanNote]) -> set[int]:
        """The traces a request notes something of, besides roots that may be lonely."""
        return {note.trace_id for note in notes if not _may_be_lonely(note)}

    def _note(self, traces: set[int]) -> None:
        noted = self._noted
        for trace_id in traces:
            noted.pop(trace_id, None)
            noted[trace_id] = None
        while len(noted) > self._max_noted:
            del noted[next(iter(noted))]

    def _stays_lonely(self, root: LonelyRoot, noting: set[int]) -> bool:
        """A root that may be lonely, of a trace nothing else is noted of (in this request or
        recently): kept apart instead of held."""
        trace_id = root.trace_id
        noted = trace_id in noting or trace_id in self._noted
        return self._keeps_lonely and not noted and _may_be_lonely(root)

    def _keep_lonely(self, roots: list[LonelyRoot], now: float) -> None:
        """Remember lonely roots (the latest of a trace), forgetting the oldest past the bounds."""
        lonely = self._lonely
        forget_at = now + self._lonely_for_s
        for root in roots:
            earlier = lonely.pop(root.trace_id, None)
            if earlier is not None:
                self._lonely_bytes -= _lonely_size(earlier[1])
            lonely[root.trace_id] = (forget_at, root)
            self._lonely_bytes += _lonely_size(root)
        while lonely and (self._lonely_bytes > self._max_held_bytes or len(lonely) > self._max_lonely):
            self._forget_oldest_lonely()

    def _forget_lonely(self, now: float) -> None:
        """Forget the lonely roots kept for ``trace_timeout_s``."""
        while self._lonely and next(iter(self._lonely.values()))[0] <= now:
            self._forget_oldest_lonely()

    def _forget_oldest_lonely(self) -> None:
        self._lonely_bytes -= _lonely_size(self._lonely.popitem(last=False)[1][1])

    def _demote(self, key: SpanKey, parent_resource: int | None) -> None:
        """A presumed root whose parent arrived: a child again when the parent is of its resource."""
        held = self._held.get(key) or self._awaiting.get(key)
        if held is None or held.resource_key is None or held.resource_key != parent_resource:
            return
        self._held.pop(key, None)
        self._awaiting.pop(key, None)
        self._held_bytes -= held.size
        note = held.note
        if note.parent_span_id is None:
            return
        note.remote_parent = False
        self._current[key] = note.parent_span_id.to_bytes(8, "big")
        root = self.local_root(note.trace_id, note.parent_span_id)
        for child in (note, *held.children):
            child.local_root_id = root
        self._ready.extend((note, *held.children))

    # ---- release (the hold thread; ``close``) ----

    def _run(self) -> None:
        while True:
            try:
                with self._lock:
                    if self._closed:
                        return
                    due = self._due(self._clock())
                    if not due:
                        self._lock.wait(self._wait_s())
                        continue
                for note in due:
                    self._engine.put_span(note)
            except Exception:  # a bug must not stop the hold: what is held would wait for ``close``
                self._engine.log.log(logging.ERROR, "hold", "gateway hold thread error", exc_info=True)
                time.sleep(0.05)

    def _wait_s(self) -> float | None:
        if self._held:
            first = next(iter(self._held.values()))
            return max(0.0, first.release_at - self._clock())
        if self._awaiting:
            return 0.25
        return max(0.0, next(iter(self._lonely.values()))[0] - self._clock()) if self._lonely else None

    def _due(self, now: float) -> list[SpanNote]:
        out, self._ready = self._ready, []
        self._rotate_if_due(now)
        self._forget_lonely(now)
        while self._held:
            key, held = next(iter(self._held.items()))
            if held.release_at > now:
                break
            self._decide(key, held, now, out, final=False)
        for key, held in list(self._awaiting.items()):
            self._decide(key, held, now, out, final=False)
        return out

    def _decide(self, key: SpanKey, held: _Held, now: float, out: list[SpanNote], *, final: bool) -> None:
        """Hand a root over (its presumed children first) unless it is a callee still waiting."""
        self._held.pop(key, None)
        self._awaiting.pop(key, None)
        note = held.note
        caller = None
        if note.parent_span_id is not None:
            caller = self.local_root(note.trace_id, note.parent_span_id)
            caller_key = span_key(note.trace_id, caller) if caller is not None else None
            caller_held = self._held.get(caller_key) if caller_key is not None else None
            caller_held = caller_held or (self._awaiting.get(caller_key) if caller_key is not None else None)
            if caller is None or caller_held is not None:
                if not final and now < held.give_up_at:
                    self._awaiting[key] = held
                    return
                if caller_held is not None and caller_key is not None:  # stopping: the caller first
                    self._decide(caller_key, caller_held, now, out, final=True)
                else:
                    caller = None
        self._held_bytes -= held.size
        if held.resource_key is not None and note.parent_span_id is not None:
            parent_key = span_key(note.trace_id, note.parent_span_id)
            siblings = self._presumed_by_parent.get(parent_key)
            if siblings is not None and key in siblings:
                siblings.remove(key)
                if not siblings:
                    del self._presumed_by_parent[parent_key]
        if caller is not None:
            self._chain.expect(note.trace_id, note.span_id, caller)
        out.extend(held.children)
        out.append(note)

    def close(self) -> None:
        """Stop holding: hand every held note to the engine now (callers before their callees)."""
        with self._lock:
            self._closed = True
            self._lock.notify()
            out, self._ready = self._ready, []
            now = self._clock()
            while self._held or self._awaiting:
                pending = self._held if self._held else self._awaiting
                key, held = next(iter(pending.items()))
                self._decide(key, held, now, out, final=True)
        self._thread.join(5.0)
        for note in out:
            self._engine.put_span(note)

    @property
    def bytes_held(self) -> int:
        """``held_bytes`` of every note held now (the hold's bound is ``max_held_bytes``)."""
        return self._held_bytes

    def __len__(self) -> int:
        """Notes held (roots waiting, and the children of presumed roots)."""
        with self._lock:
            held = (*self._held.values(), *self._awaiting.values())
            return len(self._ready) + sum(1 + len(h.children) for h in held)
