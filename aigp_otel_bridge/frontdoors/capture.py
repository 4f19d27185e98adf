"""Capture: a finished span (any front door's ``FinishedSpan``) becomes a ``SpanNote``, or nothing.

Runs for every finished span, governed or not, on the thread that hands it over (the
application's, for the span processor), so it decides from the ids, the attribute names and the
event names whether the span matters to a run before it reads anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.memo import BoundedMemo
from aigp_otel_bridge.note import FinishedSpan, NoteEvent, SpanEvent, SpanNote, plain
from aigp_otel_bridge.stages.extract import has_governance_attributes


@dataclass(frozen=True, slots=True)
class AttributeNames:
    """What a span's attribute names say of it."""

    governed: bool
    """``aigp.*`` keys beyond identity: the span's attributes make a record."""
    names_gen_ai: bool
    """A GenAI agent, tool or model is named (contract section 9): the span tells its run which."""
    model_only: bool
    """Of those, only a model (and perhaps its provider): a chat span, noted once per model."""
    gen_ai_keys: tuple[str, ...]
    """The GenAI keys the bridge reads that the span has (``sc.GEN_AI_KEYS``, in order)."""


_NO_ATTRIBUTES = AttributeNames(governed=False, names_gen_ai=False, model_only=False, gen_ai_keys=())
_NAMES_SEEN: BoundedMemo[tuple[str, ...], AttributeNames] = BoundedMemo(4096)
"""What each tuple of attribute names says: instrumentation repeats its key sets, and one look-up
costs less than testing every key."""


def attribute_names(keys: tuple[str, ...]) -> AttributeNames:
    """What the attribute names ``keys`` say of their span, remembered per tuple of names."""
    known = _NAMES_SEEN.get(keys)
    if known is not None:
        return known
    names_gen_ai = not sc.GEN_AI_MARKERS.isdisjoint(keys)
    names = AttributeNames(
        governed=has_governance_attributes(keys),
        names_gen_ai=names_gen_ai,
        model_only=names_gen_ai and sc.GEN_AI_TOOL_NAME not in keys and sc.GEN_AI_AGENT_NAME not in keys,
        gen_ai_keys=tuple(key for key in sc.GEN_AI_KEYS if key in keys),
    )
    return _NAMES_SEEN.remember(keys, names)


ModelsNoted = BoundedMemo[tuple[Any, ...], bool]
"""(trace id, request model, response model, provider, system) of chat spans already noted."""
MODELS_NOTED_MAX = 4096


def _model_noted_before(noted: ModelsNoted, trace_id: int, attributes: Mapping[str, Any]) -> bool:
    """A span that names only a model its trace already named (chat spans repeat it call after
    call) tells its run nothing new: one look-up instead of a note."""
    get = attributes.get
    key = (
        trace_id,
        get(sc.GEN_AI_REQUEST_MODEL),
        get(sc.GEN_AI_RESPONSE_MODEL),
        get(sc.GEN_AI_PROVIDER_NAME),
        get(sc.GEN_AI_SYSTEM),
    )
    try:
        if key in noted:
            return True
        noted.remember(key, True)
    except TypeError:  # an unhashable value: always noted
        pass
    return False


def _note_event(event: SpanEvent) -> NoteEvent:
    """A span event's note, with a plain dict of its attributes."""
    return NoteEvent(event.name, event.timestamp, plain(event.attributes))  # positional: per event


def capture(
    span: FinishedSpan, local_root_of: dict[int, int] | None = None, models_noted: ModelsNoted | None = None
) -> SpanNote | None:
    """The note of a finished span, or None when it matters to no run.

    ``local_root_of`` maps open span ids to their local root (kept by the span processor from
    ``on_start``); the span's entry is taken out here. An ungoverned child span costs a parent
    check, an event-name check, one look-up of its attribute names and the removal of its entry;
    a chat span naming a model its trace already named, one more look-up. ``models_noted`` is
    the front door's memory of the (trace, model) pairs already noted; None (a front door whose
    spans may come again, as OTLP senders retry) notes every such span.
    """
    span_id = span.span_id
    local_root_id = None if local_root_of is None else local_root_of.pop(span_id, None)
    parent_span_id = span.parent_span_id
    local_root = parent_span_id is None or span.remote_parent
    attributes = span.attributes
    names = attribute_names(tuple(attributes)) if attributes else _NO_ATTRIBUTES
    events = span.events
    governance_events: tuple[NoteEvent, ...] = ()
    if events:
        governance_events = tuple(
            [_note_event(event) for event in events if event.name.startswith(sc.PREFIX)]
        )
    governed_attributes = names.governed
    if not (local_root or governance_events or governed_attributes) and (
        not names.names_gen_ai
        or (
            names.model_only
            and models_noted is not None
            and _model_noted_before(models_noted, span.trace_id, attributes)
        )
    ):
        return None
    error = span.failed
    exception = None
    if error and local_root:
        exception = next((_note_event(e) for e in reversed(events) if e.name == sc.EXCEPTION_EVENT), None)
    kept: Mapping[str, Any] | None = None
    if governed_attributes or local_root:
        kept = plain(attributes)
    elif names.names_gen_ai:  # the GenAI keys the bridge reads, so a note never
        kept = {key: attributes[key] for key in names.gen_ai_keys}  # keeps a span's messages alive
    start = span.start_ns or 0
    return SpanNote(  # positional, in the field order: keywords cost a third more, per noted span
        span.trace_id,
        span_id,
        parent_span_id,
        parent_span_id is not None and span.remote_parent,
        span_id if local_root else local_root_id,
        span.name,
        start,
        span.end_ns or start,
        governance_events,
        kept,
        governed_attributes,
        span.resource_attributes,
        error,
        span.status_description if error else None,
        exception,
    )
