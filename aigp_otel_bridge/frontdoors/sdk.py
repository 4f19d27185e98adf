"""The SDK adapter: an OpenTelemetry SDK span becomes a ``SpanNote``, on the application's thread.

The only code that touches an SDK span. Runs for every finished span, governed or not, so it
reads the span's own fields and allocates nothing for a span that matters to no run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.trace import StatusCode

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.memo import remember
from aigp_otel_bridge.note import NoteEvent, SpanNote
from aigp_otel_bridge.stages.extract import has_governance_attributes


def plain(attributes: Any) -> Mapping[str, Any]:
    """The dict behind the SDK's ``BoundedAttributes`` (its ``get`` is a slow Python-level path)."""
    if attributes is None:
        return {}
    inner = getattr(attributes, "_dict", None)
    return inner if isinstance(inner, dict) else attributes


Verdict = tuple[int, tuple[str, ...]]
"""What a span's attribute keys make of it: the kind (0, ``_GOVERNED``, ``_GENAI`` or ``_MODEL``)
and which of the GenAI keys the bridge reads it has."""
_KEY_VERDICTS: dict[tuple[str, ...], Verdict] = {}
_KEY_VERDICTS_MAX = 4096
_NO_VERDICT: Verdict = (0, ())
_GOVERNED = 1
"""The keys include ``aigp.*`` beyond identity: the span's attributes make a record."""
_GENAI = 2
"""The keys name a GenAI agent or tool (contract section 9), and nothing governed."""
_MODEL = 3
"""The keys name only a GenAI model (and perhaps its provider): a chat span, noted once per model."""


def _learn_verdict(keys: tuple[str, ...]) -> Verdict:
    """The verdict on a key tuple, remembered per tuple: instrumentation repeats its key sets, and
    a dict lookup is cheaper than testing every key. Callers look it up in ``_KEY_VERDICTS`` first."""
    if has_governance_attributes(keys):
        kind = _GOVERNED
    elif sc.GEN_AI_MARKERS.isdisjoint(keys):
        kind = 0
    else:
        kind = _MODEL if sc.GEN_AI_TOOL_NAME not in keys and sc.GEN_AI_AGENT_NAME not in keys else _GENAI
    verdict = (kind, tuple(key for key in sc.GEN_AI_KEYS if key in keys))
    return remember(_KEY_VERDICTS, keys, verdict, _KEY_VERDICTS_MAX)


ModelsSent = dict[tuple[Any, ...], None]
_REQUEST_MODEL, _RESPONSE_MODEL, _PROVIDER, _SYSTEM = sc.GEN_AI_KEYS[2:]
"""The model and its provider: what a span naming no tool and no agent tells its run."""
_MODELS_SENT_MAX = 4096


def _model_sent_before(sent: ModelsSent, trace_id: int, attributes: Mapping[str, Any]) -> bool:
    """A span that names only a model its trace already sent (chat spans repeat it call after
    call) tells its run nothing new: one dict lookup instead of a note."""
    get = attributes.get
    key = (trace_id, get(_REQUEST_MODEL), get(_RESPONSE_MODEL), get(_PROVIDER), get(_SYSTEM))
    try:
        if key in sent:
            return True
        remember(sent, key, None, _MODELS_SENT_MAX)
    except TypeError:  # an unhashable value: always noted
        pass
    return False


def _genai_only(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The GenAI attributes the bridge reads (``keys``: those the span has), so a note never keeps
    a span's messages alive."""
    kept = {}  # a plain loop: a comprehension's frame costs more than copying two or three keys
    for key in keys:
        kept[key] = attributes[key]
    return kept


def _event(event: Any) -> NoteEvent:
    """A span event's note, from the SDK ``Event``'s own fields (each property costs a call)."""
    try:
        name, time_ns, attributes = event._name, event._timestamp, event._attributes
    except AttributeError:  # another event type: its public fields
        name, time_ns, attributes = event.name, event.timestamp, event.attributes
    return NoteEvent(name, time_ns, plain(attributes))


def _name_of(event: Any) -> str:
    try:
        name: str = event._name
    except AttributeError:
        name = event.name
    return name


def _governance_events(events: Iterable[Any]) -> tuple[NoteEvent, ...]:
    """Notes of the ``aigp.*`` events; the SDK's ``Event``s read by their own fields."""
    prefix = sc.PREFIX
    try:
        notes = []  # a plain loop: a comprehension's frame costs more than the usual single event
        for e in events:
            name = e._name
            if name.startswith(prefix):
                notes.append(NoteEvent(name, e._timestamp, plain(e._attributes)))
        return tuple(notes)
    except AttributeError:  # another event type
        return tuple([_event(e) for e in events if _name_of(e).startswith(prefix)])


def capture_span(
    span: Any, local_root_of: dict[int, int] | None = None, models_sent: ModelsSent | None = None
) -> SpanNote | None:
    """The compact note of a finished SDK span, or None when it matters to no run.

    ``local_root_of`` maps open span ids to their local root (kept by the span processor from
    ``on_start``); the span's entry is taken out here. It reads the SDK span's own fields
    (``_parent``, ``_context``, ``_events``, ``_attributes``, and for a span that matters
    ``_status``, ``_name``, the times and ``_resource``) rather than the public properties, which
    copy the events into a tuple and the attributes under a lock, and cost a call each; any span
    object without them goes through the public API. An ungoverned child span costs a parent
    check, an events check, one dict lookup, and the removal of its entry; a chat span naming a
    model its trace already named, one more lookup. ``models_sent`` is the front door's memory of
    the (trace, model) pairs already noted; None (a front door whose spans may come again, as
    OTLP senders retry) notes every such span.
    """
    try:
        parent = span._parent
        context = span._context
        events = span._events
        attributes = span._attributes
    except AttributeError:
        parent, context, events, attributes = span.parent, span.context, span.events, span.attributes
    # ``SpanContext`` is a tuple (trace id, span id, is remote, ...): an index costs a quarter of a
    # property, on every span (tests/test_processor.py holds the order).
    local_root_id = None if local_root_of is None else local_root_of.pop(context[1], None)
    local_root = parent is None or parent[2]
    events = getattr(events, "_dq", events)  # the SDK's BoundedList keeps its events in a deque
    attributes = getattr(attributes, "_dict", attributes)  # BoundedAttributes keeps a dict
    verdict: Verdict = _NO_VERDICT
    if attributes:
        keys = tuple(attributes)
        verdict = _KEY_VERDICTS.get(keys) or _learn_verdict(keys)
    governance_events = _governance_events(events) if events else ()
    kind = verdict[0]
    governed_attributes = kind == _GOVERNED
    if not (local_root or governance_events or governed_attributes) and (
        not kind
        or (
            kind == _MODEL
            and models_sent is not None
            and _model_sent_before(models_sent, context[0], attributes)
        )
    ):
        return None
    try:
        status, name, start, end, resource = (
            span._status, span._name, span._start_time, span._end_time, span._resource
        )
    except AttributeError:
        status, name, start, end = span.status, span.name, span.start_time, span.end_time
        resource = span.resource
    error = status.status_code is StatusCode.ERROR
    exception = None
    if error and local_root:
        exception = next((_event(e) for e in reversed(events) if _name_of(e) == sc.EXCEPTION_EVENT), None)
    start = start or 0
    kept: Mapping[str, Any] | None = None
    if governed_attributes or local_root:
        kept = attributes
    elif kind:
        kept = _genai_only(attributes, verdict[1])
    return SpanNote(
        context[0],
        context[1],
        None if parent is None else parent[1],
        parent is not None and parent[2],
        context[1] if local_root else local_root_id,
        name,
        start,
        end or start,
        governance_events,
        kept,
        governed_attributes,
        plain(getattr(resource, "attributes", None)),
        error,
        status.description if error else None,
        exception,
    )
