"""Capture: a finished span (any front door's ``FinishedSpan``) becomes a ``SpanNote``, or nothing.

Runs for every finished span, governed or not, on the thread that hands it over (the
application's, for the span processor), so it decides from the ids, the attribute names and the
event names whether the span matters to a run before it reads anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
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
    marked_role: str | None
    """The role keys of a convention without a kind attribute give by their presence (GenAI's
    ``gen_ai.tool.name``, ...): ``sc.MODEL`` when they name only a model, else ``sc.TOOL`` or
    ``sc.AGENT``; None when no such key is present."""
    kind_keys: tuple[str, ...]
    """The kind attributes the span has (``openinference.span.kind``, ...): their values say
    whether it has a role (contract section 9)."""
    read_keys: tuple[str, ...]
    """The keys the conventions are read from that the span has (``sc.CONVENTION_KEYS``, in order)."""
    model_keys: tuple[str, ...]
    """Of those, the keys that say which model and provider a model span called (``sc.MODEL_KEYS``)."""
    model_values: Callable[[Mapping[str, Any]], Any]
    """The values of ``model_keys`` of a span's attributes (an ``itemgetter``)."""


def _no_values(attributes: Mapping[str, Any]) -> None:
    return None


_NO_ATTRIBUTES = AttributeNames(
    governed=False, marked_role=None, kind_keys=(), read_keys=(), model_keys=(), model_values=_no_values
)
_NAMES_SEEN: BoundedMemo[tuple[str, ...], AttributeNames] = BoundedMemo(4096)
"""What each tuple of attribute names says: instrumentation repeats its key sets, and one look-up
costs less than testing every key."""


def _marked_role(keys: set[str]) -> str | None:
    roles = {role for key, role in sc.MARKER_ROLES.items() if key in keys}
    if not roles:
        return None
    return sc.MODEL if roles == {sc.MODEL} else next(r for r in (sc.TOOL, sc.AGENT) if r in roles)


def attribute_names(keys: tuple[str, ...]) -> AttributeNames:
    """What the attribute names ``keys`` say of their span, remembered per tuple of names."""
    known = _NAMES_SEEN.get(keys)
    if known is not None:
        return known
    present = set(keys)
    model_keys = tuple(key for key in sc.MODEL_KEYS if key in present)
    names = AttributeNames(
        governed=has_governance_attributes(keys),
        marked_role=_marked_role(present),
        kind_keys=tuple(key for key in sc.KIND_KEYS if key in present),
        read_keys=tuple(key for key in sc.CONVENTION_KEYS if key in present),
        model_keys=model_keys,
        model_values=itemgetter(*model_keys) if model_keys else _no_values,
    )
    return _NAMES_SEEN.remember(keys, names)


def child_may_matter(attribute_keys: tuple[str, ...], event_names: Iterable[str]) -> bool:
    """Whether capture could note a span that is not a local root, judged from its attribute and
    event names alone: False for most spans, which a front door then need not adapt (capture
    itself still decides, from the values, for the spans that may matter)."""
    if any(name.startswith(sc.PREFIX) for name in event_names):
        return True
    if not attribute_keys:
        return False
    names = attribute_names(attribute_keys)
    return names.governed or names.marked_role is not None or bool(names.kind_keys)


def role_of(names: AttributeNames, attributes: Mapping[str, Any]) -> str | None:
    """The role a span has in an agent's work (``sc.TOOL``, ``sc.MODEL``, ``sc.AGENT``) or None:
    from its names, and from the value of each kind attribute it has (one look-up each). A tool
    or an agent outranks a model, so that only a span that is nothing but a model call counts as
    one (such spans are noted once per model and trace)."""
    role = names.marked_role
    for key in names.kind_keys:
        value = attributes[key]
        kind_role = sc.ROLE_OF_KIND.get((key, value)) if type(value) is str else None
        if kind_role is not None and role in (None, sc.MODEL):
            role = kind_role
    return role


ModelsNoted = BoundedMemo[tuple[Any, ...], bool]
"""(trace id, model keys present, their values) of model spans already noted."""
MODELS_NOTED_MAX = 4096


def _model_noted_before(
    noted: ModelsNoted, trace_id: int, names: AttributeNames, attributes: Mapping[str, Any]
) -> bool:
    """A span that is only a model call naming a model its trace already named (chat spans repeat
    it call after call) tells its run nothing new: one look-up instead of a note."""
    key = (trace_id, names.model_keys, names.model_values(attributes))
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
    check, an event-name check, one look-up of its attribute names (and of the value of a kind
    attribute it has) and the removal of its entry; a model span naming a model its trace already
    named, one more look-up. ``models_noted`` is
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
    role = role_of(names, attributes) if names.kind_keys else names.marked_role
    if not (local_root or governance_events or governed_attributes) and (
        role is None
        or (
            role == sc.MODEL
            and models_noted is not None
            and _model_noted_before(models_noted, span.trace_id, names, attributes)
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
    elif role is not None:  # the keys the conventions read, so that a note never
        kept = {key: attributes[key] for key in names.read_keys}  # keeps a span's messages alive
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
