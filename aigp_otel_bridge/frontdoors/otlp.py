"""OTLP traces in: request decoding, the OTLP span -> span note adapter, and the gateway's intake.

Both receivers (``otlp_http``, ``otlp_grpc``) decode a request into an ``ExportTraceServiceRequest``
and hand it to ``TraceIntake.export``, which turns every span into the same ``SpanNote`` the
in-process span processor makes (each span adapted to capture's ``FinishedSpan`` protocol by
``OtlpSpan``, as the SDK adapter adapts an SDK span), then queues the whole request or none of
it: a request is acknowledged only once its spans are in the engine's intake.
"""

from __future__ import annotations

import base64
import enum
import hmac
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry import metrics
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.engine import Engine, bounded_attributes
from aigp_otel_bridge.frontdoors.assembly import ROOT, SpanKey, TraceAssembly, UnreadRoot
from aigp_otel_bridge.frontdoors.capture import capture, child_may_matter
from aigp_otel_bridge.journal import JournalEntry
from aigp_otel_bridge.note import NoteEvent, SpanNote
from aigp_otel_bridge.span_links import RunChain
from aigp_otel_bridge.telemetry import describe
from aigp_otel_bridge.version import __version__

MEDIA_PROTOBUF = "application/x-protobuf"
MEDIA_JSON = "application/json"

FLAG_PARENT_REMOTE_KNOWN = 0x100
"""``Span.flags`` bit 8: the sender knows whether the parent is remote."""
FLAG_PARENT_REMOTE = 0x200
"""``Span.flags`` bit 9: the parent is remote (meaningful only with bit 8)."""

_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_INTERN_MAX = 40
"""Strings up to this length (names, versions, enforcement results, classifications) are interned:
decoded afresh from every request, they would otherwise be kept once per pending trace."""
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
_STATUS_ERROR_CODE = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
_HEX = re.compile(r"[0-9a-fA-F]*")
MAX_VALUE_DEPTH = 32
"""Deepest nesting of arrays and key-value lists kept in an attribute value: a deeper value is left
out (and counted), so that it cannot make the decoder refuse the whole request (protobuf's own
limit is 100 nested messages, about 47 nested arrays)."""


class OtlpDecodeError(ValueError):
    """The request body is not an OTLP ``ExportTraceServiceRequest`` in the stated encoding."""


def bearer_matches(authorization: bytes, token: bytes) -> bool:
    """``authorization`` is ``Bearer <token>``: the scheme in any case (RFC 7235), the token
    compared in constant time."""
    scheme, _, credentials = authorization.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token)


# ---- decoding ----


@dataclass
class Decoded:
    """A request as decoded, and how many attribute values nested too deep were left out of it."""

    request: ExportTraceServiceRequest
    values_left_out: int = 0
    children_unread: bool = False
    """No attribute name a child span is noted for appears in the request's bytes
    (``children_unread``): its child spans are then judged by their event names alone."""


_CHILD_NAME_PARTS = (b"gen_ai.", b".span.kind", b"logfire.msg_template")
"""Each attribute name that can make capture note a child span (``capture.child_may_matter``: the
role markers and kind keys of ``semconv``) contains one of these; a test keeps them in step."""
_GOVERNANCE_NAME = re.compile(
    re.escape(sc.PREFIX).encode() + b"(?!" + b"|".join(
        re.escape(prefix[len(sc.PREFIX):]).encode() for prefix in sc.IDENTITY_PREFIXES
    ) + b")"
)
"""An ``aigp.*`` name beyond identity: a governance attribute (or event) name."""


def children_unread(body: bytes) -> bool:
    """Whether a protobuf request's bytes hold no attribute name for which capture could note a
    child span. Names are stored as plain UTF-8, so one absent from the bytes is on no span: a few
    scans of the body, instead of reading every child span's attribute names (most spans have
    none the bridge reads); a name present anywhere, even in a value, means every span is read."""
    return not any(part in body for part in _CHILD_NAME_PARTS) and _GOVERNANCE_NAME.search(body) is None


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    return _decode_protobuf(body).request


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    return _decode_json(body).request


def decode(body: bytes, media_type: str) -> Decoded:
    """A request in either encoding, with what decoding left out."""
    return _decode_json(body) if media_type == MEDIA_JSON else _decode_protobuf(body)


def _decode_protobuf(body: bytes) -> Decoded:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
        return Decoded(request, children_unread=children_unread(body))
    except (DecodeError, RecursionError, ValueError) as error:
        problem = error
    # The parser refuses values nested past its depth limit: leave those values out and parse again.
    left_out = [0]
    try:
        pruned = _pruned(body, _REQUEST, left_out)
        if left_out[0]:
            request = ExportTraceServiceRequest()
            request.ParseFromString(pruned)
            return Decoded(request, left_out[0], children_unread(pruned))
    except (DecodeError, RecursionError, ValueError) as error:
        problem = error
    raise OtlpDecodeError(f"not an OTLP protobuf ExportTraceServiceRequest: {problem}") from None


def _decode_json(body: bytes) -> Decoded:
    """OTLP/JSON: the protobuf JSON mapping, except that ids are hex strings, not base64.

    ``json_format`` already accepts both lowerCamelCase and snake_case field names, 64-bit
    integers as strings or numbers and enums as integers; unknown fields are ignored, as the
    OTLP specification asks of receivers.
    """
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise OtlpDecodeError("an OTLP/JSON request is a JSON object")
        left_out = 0
        for resource_spans in _json_list(document, "resourceSpans"):
            left_out += _json_prune(_json_object(resource_spans, "resource"))
            for scope_spans in _json_list(resource_spans, "scopeSpans"):
                left_out += _json_prune(_json_object(scope_spans, "scope"))
                for span in _json_list(scope_spans, "spans"):
                    _hex_ids_to_base64(span)
                    left_out += _json_prune(span)
                    for event in _json_list(span, "events"):
                        left_out += _json_prune(event)
                    for link in _json_list(span, "links"):
                        _hex_ids_to_base64(link)
                        left_out += _json_prune(link)
        request = ExportTraceServiceRequest()
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except OtlpDecodeError:
        raise
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise OtlpDecodeError(f"not an OTLP/JSON ExportTraceServiceRequest: {error}") from None
    return Decoded(request, left_out)


def _json_object(node: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = node.get(key)
    return value if isinstance(value, dict) else {}


def _json_prune(node: dict[str, Any]) -> int:
    """Leave out of ``node``'s attributes every value nested deeper than ``MAX_VALUE_DEPTH``; how many."""
    attributes = node.get("attributes")
    if not isinstance(attributes, list):
        return 0
    kept = [kv for kv in attributes if not (isinstance(kv, dict) and _json_too_deep(kv.get("value"), 0))]
    if len(kept) < len(attributes):
        node["attributes"] = kept
    return len(attributes) - len(kept)


def _json_too_deep(value: Any, depth: int) -> bool:
    """An OTLP/JSON ``AnyValue`` nests arrays or key-value lists past ``MAX_VALUE_DEPTH``."""
    if not isinstance(value, dict):
        return False
    for key in ("arrayValue", "array_value", "kvlistValue", "kvlist_value"):
        inner = value.get(key)
        if not isinstance(inner, dict) or not isinstance(inner.get("values"), list):
            continue
        if depth >= MAX_VALUE_DEPTH:
            return True
        is_kvlist = key.startswith("kv")
        for item in inner["values"]:
            item = item.get("value") if is_kvlist and isinstance(item, dict) else item
            if _json_too_deep(item, depth + 1):
                return True
    return False


# The protobuf wire format, just enough to leave out attribute values nested too deep: which fields
# of which message hold the messages that lead to ``KeyValue`` attributes.
_REQUEST, _RESOURCE_SPANS, _RESOURCE, _SCOPE_SPANS, _SCOPE, _SPAN, _EVENT, _LINK = range(8)
_KEY_VALUE = -1
_CHILDREN: dict[int, dict[int, int]] = {
    _REQUEST: {1: _RESOURCE_SPANS},
    _RESOURCE_SPANS: {1: _RESOURCE, 2: _SCOPE_SPANS},
    _RESOURCE: {1: _KEY_VALUE},
    _SCOPE_SPANS: {1: _SCOPE, 2: _SPAN},
    _SCOPE: {3: _KEY_VALUE},
    _SPAN: {9: _KEY_VALUE, 11: _EVENT, 13: _LINK},
    _EVENT: {3: _KEY_VALUE},
    _LINK: {4: _KEY_VALUE},
}
_ANY_ARRAY, _ANY_KVLIST = 5, 6  # AnyValue's array_value and kvlist_value


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise DecodeError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, start, payload start, end) of each field of a message."""
    position = 0
    while position < len(data):
        start = position
        tag, position = _varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, position = _varint(data, position)
            payload = start
        elif wire_type == 1:
            payload, position = position, position + 8
        elif wire_type == 5:
            payload, position = position, position + 4
        elif wire_type == 2:
            length, payload = _varint(data, position)
            position = payload + length
        else:
            raise DecodeError(f"unsupported wire type {wire_type}")
        if position > len(data):
            raise DecodeError("truncated message")
        yield number, wire_type, start, payload, position


def _pruned(data: bytes, shape: int, left_out: list[int]) -> bytes:
    """``data`` (a message of ``shape``) without the attributes whose value nests too deep."""
    children = _CHILDREN[shape]
    out = bytearray()
    for number, wire_type, start, payload, end in _fields(data):
        child = children.get(number) if wire_type == 2 else None
        if child is None:
            out += data[start:end]
        elif child == _KEY_VALUE:
            if _key_value_too_deep(data[payload:end], 0):
                left_out[0] += 1
            else:
                out += data[start:end]
        else:
            inner = _pruned(data[payload:end], child, left_out)
            out += _encode_varint(number << 3 | 2) + _encode_varint(len(inner)) + inner
    return bytes(out)


def _key_value_too_deep(key_value: bytes, depth: int) -> bool:
    for number, wire_type, _, payload, end in _fields(key_value):
        if number == 2 and wire_type == 2 and _any_value_too_deep(key_value[payload:end], depth):
            return True
    return False


def _any_value_too_deep(any_value: bytes, depth: int) -> bool:
    for number, wire_type, _, payload, end in _fields(any_value):
        if wire_type != 2 or number not in (_ANY_ARRAY, _ANY_KVLIST):
            continue
        if depth >= MAX_VALUE_DEPTH:
            return True
        values = any_value[payload:end]  # ArrayValue or KeyValueList: field 1, repeated
        for inner, inner_type, _, inner_payload, inner_end in _fields(values):
            if inner != 1 or inner_type != 2:
                continue
            item = values[inner_payload:inner_end]
            if (number == _ANY_ARRAY and _any_value_too_deep(item, depth + 1)) or (
                number == _ANY_KVLIST and _key_value_too_deep(item, depth + 1)
            ):
                return True
    return False


def _json_list(node: Mapping[str, Any], camel: str) -> list[Any]:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    value = node.get(camel, node.get(snake))
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{camel} must be a list")
    return [item for item in value if isinstance(item, dict)]


def _hex_ids_to_base64(node: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        value = node.get(key)
        if isinstance(value, str):
            if not _HEX.fullmatch(value) or len(value) % 2:  # fromhex alone would allow spaces
                raise OtlpDecodeError(f"{key} is not a hex string: {value[:40]!r}")
            node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


# ---- the adapter: OTLP spans as capture's ``FinishedSpan``, values in the SDK's plain Python shapes ----


def plain_value(value: AnyValue) -> Any:
    """An ``AnyValue`` as the SDK holds attribute values: str, bool, int, float, tuples for arrays.

    Key-value lists and bytes, which the SDK never produces, come through as a dict and bytes;
    extraction treats them as it treats any value of the wrong type (left out and counted).
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text: str = value.string_value
        return sys.intern(text) if len(text) <= _INTERN_MAX else text
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(plain_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return plain_attributes(value.kvlist_value.values)
    return getattr(value, kind)


def plain_attributes(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: plain_value(kv.value) for kv in key_values}


class OtlpAttributes(Mapping[str, Any]):
    """A ``KeyValue`` list as a read-only mapping whose values are converted on first use.

    Capture decides from the keys alone whether a span matters; most spans do not, and
    their values are then never converted. The first value access converts them all (the last
    duplicate key wins, as in the SDK).
    """

    __slots__ = ("_key_values", "_plain")

    def __init__(self, key_values: Sequence[KeyValue]) -> None:
        self._key_values = key_values
        self._plain: dict[str, Any] | None = None

    def _values(self) -> dict[str, Any]:
        if self._plain is None:
            self._plain = plain_attributes(self._key_values)
        return self._plain

    def __getitem__(self, key: str) -> Any:
        return self._values()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._values().get(key, default)

    def __iter__(self) -> Iterator[str]:
        if self._plain is not None:
            return iter(self._plain)
        return iter([key_value.key for key_value in self._key_values])

    def __len__(self) -> int:  # consistent with __iter__, which yields a duplicate key twice until converted
        return len(self._plain) if self._plain is not None else len(self._key_values)

    def __bool__(self) -> bool:
        return bool(self._plain) if self._plain is not None else len(self._key_values) > 0

    def copy(self) -> dict[str, Any]:
        """Every value converted, as a plain dict of the caller's own (what ``note.plain`` asks for)."""
        return self._values().copy()


class OtlpEvent:
    """A span event of an OTLP span, as a ``SpanEvent``."""

    __slots__ = ("attributes", "name", "timestamp")

    def __init__(self, name: str, attributes: OtlpAttributes, timestamp: int) -> None:
        self.name = name
        self.attributes = attributes
        self.timestamp = timestamp


class OtlpSpan:
    """A ``FinishedSpan`` over a decoded OTLP span. What capture reads of every span (ids,
    attributes, events) is read once here; the rest only when a span that matters asks for it."""

    __slots__ = (
        "_span", "attributes", "events", "parent_span_id", "remote_parent", "resource_attributes", "span_id",
        "trace_id",
    )

    def __init__(self, span: Span, resource_attributes: Mapping[str, Any], parent_remote: bool) -> None:
        self._span = span
        self.trace_id = int.from_bytes(span.trace_id, "big")
        self.span_id = int.from_bytes(span.span_id, "big")
        self.parent_span_id = int.from_bytes(span.parent_span_id, "big") if span.parent_span_id else None
        self.remote_parent = parent_remote
        self.attributes = OtlpAttributes(span.attributes)
        self.events = [
            OtlpEvent(sys.intern(event.name), OtlpAttributes(event.attributes), event.time_unix_nano)
            for event in span.events
        ]
        self.resource_attributes = resource_attributes

    @property
    def name(self) -> str:
        return sys.intern(self._span.name)

    @property
    def start_ns(self) -> int:
        return self._span.start_time_unix_nano

    @property
    def end_ns(self) -> int:
        return self._span.end_time_unix_nano

    @property
    def failed(self) -> bool:
        return self._span.status.code == _STATUS_ERROR_CODE

    @property
    def status_description(self) -> str | None:
        return self._span.status.message or None


def note_from_otlp_span(
    span: Span, resource_attributes: Mapping[str, Any], parent_remote: bool
) -> SpanNote | None:
    """The note ``capture_span`` makes for the same span in process, or None when it matters to no run.

    ``parent_remote`` says whether the span's parent (if it has one) lives in another process;
    ``_convert_resource_spans`` decides it from the flags, else from the spans seen. The note
    holds plain dicts only, so it keeps nothing of the request alive.
    """
    return capture(OtlpSpan(span, resource_attributes, parent_remote))


def _malformed(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> str | None:
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        return "trace_id must be 16 bytes, not all zero"
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        return "span_id must be 8 bytes, not all zero"
    if parent_span_id and len(parent_span_id) != 8:
        return "parent_span_id must be empty or 8 bytes"
    return None


@dataclass
class Converted:
    """What one request holds for the engine, and what the span index learns from it."""

    notes: list[SpanNote]
    spans: int
    rejected: int
    reason: str
    links: dict[SpanKey, bytes] = field(default_factory=dict)
    """Every readable span by ``span_key``: its parent span id, or ``ROOT`` for a local root."""
    resources: dict[SpanKey, int] = field(default_factory=dict)
    """Span key -> resource key, for spans whose sender sets no flags."""
    presumed: dict[SpanKey, int] = field(default_factory=dict)
    """Local roots only presumed (no flags, parent not among the resource's spans) -> resource key."""
    unread_roots: list[UnreadRoot] = field(default_factory=list)
    """Local roots whose notes are made only if they are held (``UnreadRoot``)."""


SeenInResource = Callable[[SpanKey, int], bool]
"""(span key, resource key) -> the span arrived earlier under that resource."""
Noted = Callable[[int], bool]
"""trace id -> something of the trace was noted (``TraceAssembly.noted``)."""


_UNCUT = 1 << 62
_UNREAD_ROOT_BYTES = 300
"""What an ``UnreadRoot`` costs besides the span it keeps: the root and its entry among the lonely."""


def notes_from_request(
    request: ExportTraceServiceRequest, log: Any = None, seen: SeenInResource | None = None,
    value_cap: int = _UNCUT, children_unread: bool = False, noted: Noted | None = None,
) -> Converted:
    """Every span of a request as a note (or nothing), malformed spans counted and left out.

    ``value_cap``: what a note keeps past the request (its resource's attributes, its name, status
    and ``aigp.*`` event attributes) is cut to this many characters (``Engine.value_cap``);
    ``children_unread``: ``Decoded.children_unread``; ``noted``: with it, a root of a trace not
    noted, in a request whose children are unread, is an ``UnreadRoot``."""
    converted = Converted([], 0, 0, "")
    for resource_spans in request.resource_spans:
        _convert_resource_spans(resource_spans, converted, log, seen, value_cap, children_unread, noted)
    return converted


def _unread_root_note(
    span: bytes, *, resource: Mapping[str, Any], value_cap: int, log: Any
) -> SpanNote | None:
    """The note of an ``UnreadRoot``, from the span it kept, or None when the span is unreadable."""
    try:
        note = note_from_otlp_span(Span.FromString(span), resource, False)
    except Exception:  # acknowledged already: logged here, counted by the assembly
        if log is not None:
            log.log(logging.WARNING, "otlp", "could not read an OTLP span", exc_info=True)
        return None
    if note is not None:
        _cut_note(note, value_cap)
    return note


def _cut_note(note: SpanNote, cap: int) -> None:
    """Cut the strings a note keeps past the request that the engine's own bound does not cover."""
    if len(note.name) > cap:
        note.name = note.name[:cap]
    if note.status_description is not None and len(note.status_description) > cap:
        note.status_description = note.status_description[:cap]
    events = note.governance_events
    if events:
        cut = [(event, bounded_attributes(event.attributes, cap)) for event in events]
        if any(attributes is not event.attributes for event, attributes in cut):
            note.governance_events = tuple(
                NoteEvent(name=event.name, time_ns=event.time_ns, attributes=attributes)
                for event, attributes in cut
            )


def _convert_resource_spans(
    resource_spans: ResourceSpans, converted: Converted, log: Any, seen: SeenInResource | None,
    value_cap: int, children_unread: bool = False, noted: Noted | None = None,
) -> None:
    resource = bounded_attributes(plain_attributes(resource_spans.resource.attributes), value_cap)
    spans = [span for scope_spans in resource_spans.scope_spans for span in scope_spans.spans]
    local_spans: set[SpanKey] | None = None  # needed only for senders without the flags
    resource_key: int | None = None
    note_of: Callable[[bytes], SpanNote | None] | None = None  # for this resource's unread roots
    links = converted.links
    converted.spans += len(spans)
    for span in spans:  # every span of every request: each protobuf field is read once
        trace_bytes, span_bytes, parent_bytes = span.trace_id, span.span_id, span.parent_span_id
        if not (len(trace_bytes) == 16 and len(span_bytes) == 8 and len(parent_bytes) in (0, 8)) or (
            trace_bytes == _ZERO_TRACE_ID or span_bytes == _ZERO_SPAN_ID
        ):
            converted.rejected += 1
            converted.reason = _malformed(trace_bytes, span_bytes, parent_bytes) or ""
            continue
        key = trace_bytes + span_bytes  # span_key(trace id, span id)
        flags = span.flags
        remote = False
        if flags & FLAG_PARENT_REMOTE_KNOWN:
            remote = bool(flags & FLAG_PARENT_REMOTE)
        else:  # no flags: a parent among the resource's spans, in this request or earlier, is local
            if resource_key is None:
                resource_key = hash(resource_spans.resource.SerializeToString(deterministic=True))
            converted.resources[key] = resource_key
            if parent_bytes:
                if local_spans is None:
                    local_spans = {span.trace_id + span.span_id for span in spans}
                parent_key = trace_bytes + parent_bytes
                if parent_key not in local_spans and (seen is None or not seen(parent_key, resource_key)):
                    remote = True
                    converted.presumed[key] = resource_key
        if parent_bytes and not remote:  # a child: most spans, which carry nothing the bridge reads
            links[key] = parent_bytes
            if not span.events if children_unread else not child_may_matter(
                tuple([key_value.key for key_value in span.attributes]),
                [event.name for event in span.events] if span.events else (),
            ):
                continue  # no adapter, no capture
        else:
            links[key] = ROOT
            if not parent_bytes and children_unread and noted is not None and not span.events:
                trace_id = int.from_bytes(trace_bytes, "big")
                if not noted(trace_id):
                    if note_of is None:
                        note_of = partial(_unread_root_note, resource=resource, value_cap=value_cap, log=log)
                    kept = span.SerializeToString()
                    size = _UNREAD_ROOT_BYTES + len(kept)
                    converted.unread_roots.append(
                        UnreadRoot(trace_id, int.from_bytes(span_bytes, "big"), size, kept, note_of)
                    )
                    continue
        try:
            note = note_from_otlp_span(span, resource, remote)
        except Exception as error:  # a value no span could hold: leave the span out, say so
            converted.rejected += 1
            converted.reason = f"unreadable span: {type(error).__name__}"
            if log is not None:
                log.log(logging.WARNING, "otlp", "could not read an OTLP span", exc_info=True)
            continue
        if note is not None:
            _cut_note(note, value_cap)
            converted.notes.append(note)


# ---- the intake both receivers share ----


class Admission(enum.Enum):
    """What the intake did with a request."""

    ACCEPTED = "accepted"
    BUSY = "busy"
    """The engine's intake is full: the sender should retry shortly."""
    STOPPED = "stopped"
    """The gateway is shutting down."""


@dataclass(frozen=True)
class Outcome:
    admission: Admission
    rejected_spans: int = 0
    error_message: str = ""

    def response(self) -> ExportTraceServiceResponse:
        """The success answer; ``partial_success`` only when spans were rejected."""
        if not self.rejected_spans:
            return ExportTraceServiceResponse()
        return ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(
                rejected_spans=self.rejected_spans, error_message=self.error_message
            )
        )


DEFAULT_ROOT_WAIT_S = 1.0
"""How long a local root waits before its run is decided, for children sent just after it."""
DEFAULT_LINK_WAIT_S = 10.0
"""How long a callee's root waits, at most, for its caller's root (for the ``parent`` facet)."""
DEFAULT_MAX_DECODING_BYTES = 32 * 1024 * 1024
"""Request bytes read or decoded at once, across requests and both protocols."""
DEFAULT_MAX_HELD_BYTES = 64 * 1024 * 1024
"""Estimated bytes of the local roots held at once (``TraceAssembly``)."""


class ByteBudget:
    """A semaphore of bytes that never waits: ``take`` says yes or no at once.

    Bounds the memory of request bodies being read and decoded across requests (decoding costs a
    multiple of the body, 10 to 20 times for tiny spans). An idle budget takes any size, so a
    request up to the size limit is never refused for ever; a refused sender retries (429 /
    ``RESOURCE_EXHAUSTED``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def take(self, size: int) -> bool:
        with self._lock:
            if self._used and self._used + size > self.limit:
                return False
            self._used += size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self._used -= size


class TraceIntake:
    """Turns decoded requests into notes and queues them all-or-nothing into the engine; local
    roots go through the ``TraceAssembly`` hold (``close`` hands over what it holds). ``decoding``
    is the byte budget both receivers take a request's body from before reading or decoding it."""

    def __init__(
        self,
        engine: Engine,
        *,
        root_wait_s: float = DEFAULT_ROOT_WAIT_S,
        link_wait_s: float = DEFAULT_LINK_WAIT_S,
        max_decoding_bytes: int = DEFAULT_MAX_DECODING_BYTES,
        max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
    ) -> None:
        self.engine = engine
        engine.run_chain = RunChain(max_runs=engine.config.max_pending_traces)
        engine.remember_ungoverned_roots()  # a root may come before its children, by any distance
        self.assembly = TraceAssembly(
            engine, engine.run_chain, root_wait_s=root_wait_s,
            link_wait_s=min(link_wait_s, engine.config.trace_timeout_s), max_held_bytes=max_held_bytes,
        )
        self.decoding = ByteBudget(max_decoding_bytes)
        self.journal = engine.acknowledging()
        """With an outbox: each request's governance is written here before it is acknowledged."""
        self.busy_refusals = 0
        """Requests refused because the intake, delivery, the hold or the decoding budget was full
        (each one retried by its sender)."""
        meter = metrics.get_meter("aigp_otel_bridge.gateway", __version__)
        self._requests = meter.create_counter(
            "aigp_bridge.gateway.requests", description="OTLP export requests, by protocol and outcome"
        )
        self._spans = meter.create_counter(
            "aigp_bridge.gateway.spans", description="Spans received over OTLP, by protocol and outcome"
        )

    def export(self, decoded: Decoded, protocol: str) -> Outcome:
        """Queue a decoded request."""
        engine = self.engine
        assembly = self.assembly
        if engine.stopped or assembly.closed:
            return self._count(Outcome(Admission.STOPPED), protocol, 0)
        converted = notes_from_request(
            decoded.request, engine.log, assembly.seen_in_resource, engine.value_cap, decoded.children_unread,
            assembly.noted,
        )
        entry = None if self.journal is None else self.journal.prepare(converted.notes)
        admitted = assembly.admit(
            converted.notes, converted.links, converted.resources, converted.presumed,
            None if entry is None else entry.marker, converted.unread_roots,
        )
        if entry is not None:
            admitted = self._journaled(entry, admitted)
        if not admitted:
            if engine.stopped or assembly.closed:
                return self._count(Outcome(Admission.STOPPED), protocol, converted.spans)
            return self.busy(protocol, converted.spans)
        if decoded.values_left_out:
            engine.stats.invalid_values += decoded.values_left_out
        outcome = Outcome(Admission.ACCEPTED, converted.rejected, converted.reason)
        return self._count(outcome, protocol, converted.spans)

    def busy(self, protocol: str, spans: int = 0) -> Outcome:
        """Count a request refused for lack of room (the sender retries)."""
        self.busy_refusals += 1
        return self._count(Outcome(Admission.BUSY), protocol, spans)

    def _journaled(self, entry: JournalEntry, admitted: bool) -> bool:
        """Write an admitted request's journal entry (or give up a refused one's); False when it
        could not be written: the request, queued but not durable, is then not acknowledged (its
        retry is a duplicate)."""
        journal = self.journal
        assert journal is not None
        if not admitted:
            journal.abandon(entry)
            return False
        try:
            journal.write(entry)
        except Exception as error:
            self.engine.log.log(
                logging.ERROR, "journal", "could not journal a request's governance (%s); refused it",
                describe(error),
            )
            return False
        return True

    def close(self) -> None:
        """Stop taking requests and hand every held root to the engine (before it stops)."""
        self.assembly.close()

    def refused(self, protocol: str, reason: str) -> None:
        """Count a request refused before decoding (bad body, auth, size, media type)."""
        self._requests.add(1, {"protocol": protocol, "outcome": reason})

    def _count(self, outcome: Outcome, protocol: str, spans: int) -> Outcome:
        admission = outcome.admission.value
        self._requests.add(1, {"protocol": protocol, "outcome": admission})
        if outcome.admission is Admission.ACCEPTED:
            self._spans.add(spans - outcome.rejected_spans, {"protocol": protocol, "outcome": "accepted"})
            if outcome.rejected_spans:
                self._spans.add(outcome.rejected_spans, {"protocol": protocol, "outcome": "rejected"})
        elif spans:
            self._spans.add(spans, {"protocol": protocol, "outcome": admission})
        return outcome
