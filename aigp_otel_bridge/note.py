"""The typed note every front door fills for a finished span, and extraction reads.

The SDK adapter (``frontdoors/sdk.py``) fills it from an in-process span; an OTLP adapter fills
it from a protobuf span. Nothing after extraction reads a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class NoteEvent:
    """One span event the bridge reads: an ``aigp.*`` event, or the ``exception`` of a failed root."""

    name: str
    time_ns: int | None
    attributes: Mapping[str, Any]


@dataclass(slots=True)
class SpanNote:
    """A finished span, reduced to what extraction reads.

    The mappings are the span's own (neither changes once the span has ended), never copies.
    Not frozen, because a frozen dataclass costs several times as much to build on the
    application's thread; nothing mutates it.
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
