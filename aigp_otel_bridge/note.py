"""What a front door hands to capture (a ``FinishedSpan``), and the note capture makes of it.

Each front door adapts its own spans to the small ``FinishedSpan`` protocol: the SDK adapter
(``frontdoors/sdk.py``) through ``ReadableSpan``'s public properties, the OTLP adapter
(``frontdoors/otlp.py``) from a decoded protobuf span. Capture (``frontdoors/capture.py``) turns
either into the same ``SpanNote``, which extraction reads; nothing after extraction reads a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class SpanEvent(Protocol):
    """A span event, in OpenTelemetry's words (the SDK's ``Event`` has exactly these properties)."""

    @property
    def name(self) -> str: ...

    @property
    def timestamp(self) -> int | None: ...

    @property
    def attributes(self) -> Mapping[str, Any] | None: ...


class FinishedSpan(Protocol):
    """A finished span, as every front door presents it to capture.

    Capture decides from the ids, the attribute names and the event names alone whether a span
    matters to a run (most do not); an adapter may compute the rest (name, times, status,
    resource) only when it is read.
    """

    @property
    def trace_id(self) -> int: ...

    @property
    def span_id(self) -> int: ...

    @property
    def parent_span_id(self) -> int | None:
        """None when the span has no parent (a trace's first span)."""

    @property
    def remote_parent(self) -> bool:
        """The parent is in another process."""

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The span's attributes, cheap to read key by key."""

    @property
    def events(self) -> Sequence[SpanEvent]: ...

    @property
    def name(self) -> str: ...

    @property
    def start_ns(self) -> int | None: ...

    @property
    def end_ns(self) -> int | None: ...

    @property
    def failed(self) -> bool:
        """The span's status is ERROR."""

    @property
    def status_description(self) -> str | None: ...

    @property
    def resource_attributes(self) -> Mapping[str, Any]: ...


def plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A dict of an attribute mapping's items, owned by the caller.

    The SDK's mappings (``MappingProxyType``, ``BoundedAttributes``) and the OTLP adapter's each
    make one through their public ``copy``, many times cheaper than reading them key by key.
    """
    if not attributes:
        return {}
    copy = getattr(attributes, "copy", None)
    copied = copy() if copy is not None else None
    return copied if type(copied) is dict else dict(attributes)


@dataclass(slots=True)
class NoteEvent:
    """One span event the bridge reads: an ``aigp.*`` event, or the ``exception`` of a failed root.
    Nothing changes one; not frozen, because capture builds one per governance event on the
    application's thread, where a frozen dataclass costs twice as much to build."""

    name: str
    time_ns: int | None
    attributes: Mapping[str, Any]


@dataclass(slots=True)
class SpanNote:
    """A finished span, reduced to what extraction reads.

    Its mappings are plain dicts of the span's values (the resource's attributes excepted: one
    mapping shared by every span of a process). Not frozen, because three front-door steps change
    a note before it is queued: the gateway's adapter cuts the strings it keeps past the request
    (name, status, ``aigp.*`` event attributes) to the engine's value cap, the gateway's assembly
    decides a held note's local root (and whether a presumed remote parent is local after all),
    and the engine cuts its strings to their bound (``Engine.put_span``). Nothing changes a queued
    note.
    """

    trace_id: int
    span_id: int
    parent_span_id: int | None
    """None when the span has no parent (a trace's first span)."""
    remote_parent: bool
    """The parent is in another process: this span is a local root of its own."""
    local_root_id: int | None
    """Span id of the span's local root, when the front door knows it (itself for a local root)."""
    name: str
    start_ns: int
    end_ns: int
    governance_events: tuple[NoteEvent, ...]
    attributes: Mapping[str, Any] | None
    """The span's attributes, kept when they carry governance data or the span is a local root;
    for a span with GenAI names only, a copy of just the GenAI keys the bridge reads."""
    governed_attributes: bool
    """The span's own attributes include ``aigp.*`` keys beyond identity."""
    resource: Mapping[str, Any]
    error: bool = False
    status_description: str | None = None
    exception: NoteEvent | None = None
    """The last ``exception`` event of a failed local root."""

    @property
    def local_root(self) -> bool:
        """No parent, or a parent in another process."""
        return self.parent_span_id is None or self.remote_parent
