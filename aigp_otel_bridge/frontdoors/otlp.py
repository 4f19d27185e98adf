"""OTLP traces in: request decoding, the OTLP span -> span note adapter, and the gateway's intake.

Both receivers (``otlp_http``, ``otlp_grpc``) decode a request into an ``ExportTraceServiceRequest``
and hand it to ``TraceIntake.export``, which turns every span into the same ``SpanNote`` the
in-process span processor makes (``capture_span`` reads an OTLP span through a small view with
the SDK span's shape), then queues the whole request or none of it: a request is acknowledged
only once its spans are in the engine's intake.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
from opentelemetry.trace import SpanContext, Status, StatusCode

from aigp_otel_bridge.engine import Engine
from aigp_otel_bridge.frontdoors.assembly import TraceAssembly
from aigp_otel_bridge.frontdoors.sdk import capture_span
from aigp_otel_bridge.journal import JournalEntry
from aigp_otel_bridge.note import SpanNote
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
_STATUS_UNSET = Status(StatusCode.UNSET)
_INTERN_MAX = 40
"""Strings up to this length (names, versions, enforcement results, classifications) are interned:
decoded afresh from every request, they would otherwise be kept once per pending trace."""
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
_STATUS_ERROR_CODE = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


class OtlpDecodeError(ValueError):
    """The request body is not an OTLP ``ExportTraceServiceRequest`` in the stated encoding."""


# ---- decoding ----


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as error:
        raise OtlpDecodeError(f"not an OTLP protobuf ExportTraceServiceRequest: {error}") from None
    return request


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON: the protobuf JSON mapping, except that ids are hex strings, not base64.

    ``json_format`` already accepts both lowerCamelCase and snake_case field names, 64-bit
    integers as strings or numbers and enums as integers; unknown fields are ignored, as the
    OTLP specification asks of receivers.
    """
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise OtlpDecodeError("an OTLP/JSON request is a JSON object")
        for span in _json_spans(document):
            _hex_ids_to_base64(span)
            for link in _json_list(span, "links"):
                _hex_ids_to_base64(link)
        request = ExportTraceServiceRequest()
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except OtlpDecodeError:
        raise
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise OtlpDecodeError(f"not an OTLP/JSON ExportTraceServiceRequest: {error}") from None
    return request


def decode(body: bytes, media_type: str) -> ExportTraceServiceRequest:
    return decode_json(body) if media_type == MEDIA_JSON else decode_protobuf(body)


def _json_list(node: Mapping[str, Any], camel: str) -> list[Any]:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    value = node.get(camel, node.get(snake))
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{camel} must be a list")
    return [item for item in value if isinstance(item, dict)]


def _json_spans(document: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for resource_spans in _json_list(document, "resourceSpans"):
        for scope_spans in _json_list(resource_spans, "scopeSpans"):
            yield from _json_list(scope_spans, "spans")


def _hex_ids_to_base64(node: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        value = node.get(key)
        if isinstance(value, str):
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raise OtlpDecodeError(f"{key} is not a hex string: {value[:40]!r}") from None
            node[key] = base64.b64encode(raw).decode("ascii")


# ---- the adapter: OTLP values in the SDK's plain Python shapes ----


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

    ``capture_span`` decides from the keys alone whether a span matters; most spans do not, and
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

    def plain(self) -> dict[str, Any]:
        """Every value converted, as a plain dict."""
        return self._values()

    def detach(self) -> None:
        """Convert every value now and let go of the request (a note may outlive it by minutes)."""
        self._values()
        self._key_values = ()


class OtlpEvent:
    """A span event with the SDK ``Event``'s own fields (``_name``, ``_attributes``, ``_timestamp``),
    which ``capture_span`` reads."""

    __slots__ = ("_attributes", "_name", "_timestamp")

    def __init__(self, name: str, attributes: Mapping[str, Any], timestamp: int) -> None:
        self._name = name
        self._attributes = attributes
        self._timestamp = timestamp


class OtlpParent(tuple[int, int, bool]):
    """The parent of a span as ``capture_span`` reads it: ``SpanContext``'s first three fields, in
    its order (trace id, span id, is remote), unvalidated."""

    __slots__ = ()

    def __new__(cls, trace_id: int, span_id: int, is_remote: bool) -> OtlpParent:
        return tuple.__new__(cls, (trace_id, span_id, is_remote))

    @property
    def trace_id(self) -> int:
        return self[0]

    @property
    def span_id(self) -> int:
        return self[1]

    @property
    def is_remote(self) -> bool:
        return self[2]


class _DecodedResource:
    """An OTLP resource's attributes, decoded once per ``ResourceSpans`` and shared by its spans'
    views (``capture_span`` reads a resource's ``attributes``)."""

    __slots__ = ("attributes",)

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes


class _SpanView:
    """An OTLP span with the fields ``capture_span`` reads from a finished SDK span; what it reads
    only for spans that matter (context, status, times) is computed when read."""

    __slots__ = ("_attributes", "_events", "_parent", "_resource", "_span")

    def __init__(self, span: Span, resource: _DecodedResource, parent: OtlpParent | None) -> None:
        self._span = span
        self._parent = parent
        self._events = [
            OtlpEvent(sys.intern(event.name), OtlpAttributes(event.attributes), event.time_unix_nano)
            for event in span.events
        ]
        self._attributes = OtlpAttributes(span.attributes)
        self._resource = resource

    @property
    def _context(self) -> SpanContext:
        span = self._span
        return SpanContext(int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big"), False)

    @property
    def _status(self) -> Status:
        status = self._span.status
        if status.code == _STATUS_ERROR_CODE:
            return Status(StatusCode.ERROR, status.message or None)
        return _STATUS_UNSET

    @property
    def _name(self) -> str:
        return sys.intern(self._span.name)

    @property
    def _start_time(self) -> int:
        return self._span.start_time_unix_nano

    @property
    def _end_time(self) -> int:
        return self._span.end_time_unix_nano


def note_from_otlp_span(span: Span, resource: _DecodedResource, parent_remote: bool) -> SpanNote | None:
    """The note ``capture_span`` makes for the same span in process, or None when it matters to no run.

    ``parent_remote`` says whether the span's parent (if it has one) lives in another process;
    ``_convert_resource_spans`` decides it from the flags, else from the spans seen.
    """
    parent = None
    if span.parent_span_id:
        parent = OtlpParent(
            int.from_bytes(span.trace_id, "big"), int.from_bytes(span.parent_span_id, "big"), parent_remote
        )
    note = capture_span(_SpanView(span, resource, parent))
    if note is not None:  # what the note keeps must not keep the request alive
        if isinstance(note.attributes, OtlpAttributes):
            note.attributes.detach()
        for event in (*note.governance_events, note.exception):
            if event is not None and isinstance(event.attributes, OtlpAttributes):
                event.attributes = event.attributes.plain()
    return note


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
    links: dict[int, int] = field(default_factory=dict)
    """Every readable span by ``span_key``: its parent span id, or ``ROOT`` for a local root."""
    resources: dict[int, int] = field(default_factory=dict)
    """Span key -> resource key, for spans whose sender sets no flags."""
    presumed: dict[int, int] = field(default_factory=dict)
    """Local roots only presumed (no flags, parent not among the resource's spans) -> resource key."""


SeenInResource = Callable[[int, int, int], bool]
"""(trace id, span id, resource key) -> the span arrived earlier under that resource."""


def notes_from_request(
    request: ExportTraceServiceRequest, log: Any = None, seen: SeenInResource | None = None
) -> Converted:
    """Every span of a request as a note (or nothing), malformed spans counted and left out."""
    converted = Converted([], 0, 0, "")
    for resource_spans in request.resource_spans:
        _convert_resource_spans(resource_spans, converted, log, seen)
    return converted


def _convert_resource_spans(
    resource_spans: ResourceSpans, converted: Converted, log: Any, seen: SeenInResource | None
) -> None:
    resource = _DecodedResource(plain_attributes(resource_spans.resource.attributes))
    spans = [span for scope_spans in resource_spans.scope_spans for span in scope_spans.spans]
    local_spans: set[tuple[bytes, bytes]] | None = None  # needed only for senders without the flags
    resource_key: int | None = None
    links = converted.links
    for span in spans:  # every span of every request: each protobuf field is read once
        converted.spans += 1
        trace_bytes, span_bytes, parent_bytes = span.trace_id, span.span_id, span.parent_span_id
        problem = _malformed(trace_bytes, span_bytes, parent_bytes)
        if problem is not None:
            converted.rejected += 1
            converted.reason = problem
            continue
        key = int.from_bytes(trace_bytes + span_bytes, "big")  # span_key(trace id, span id)
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
                    local_spans = {(span.trace_id, span.span_id) for span in spans}
                if (trace_bytes, parent_bytes) not in local_spans and not (
                    seen is not None and seen(key >> 64, int.from_bytes(parent_bytes, "big"), resource_key)
                ):
                    remote = True
                    converted.presumed[key] = resource_key
        links[key] = int.from_bytes(parent_bytes, "big") if parent_bytes and not remote else 0
        try:
            note = note_from_otlp_span(span, resource, remote)
        except Exception as error:  # a value no span could hold: leave the span out, say so
            converted.rejected += 1
            converted.reason = f"unreadable span: {type(error).__name__}"
            if log is not None:
                log.log(logging.WARNING, "otlp", "could not read an OTLP span", exc_info=True)
            continue
        if note is not None:
            converted.notes.append(note)


# ---- the intake both receivers share ----


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    BUSY = "busy"
    """The engine's intake is full: the sender should retry shortly."""
    STOPPED = "stopped"
    """The gateway is shutting down."""


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
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


class TraceIntake:
    """Turns decoded requests into notes and queues them all-or-nothing into the engine; local
    roots go through the ``TraceAssembly`` hold (``close`` hands over what it holds)."""

    def __init__(
        self,
        engine: Engine,
        *,
        root_wait_s: float = DEFAULT_ROOT_WAIT_S,
        link_wait_s: float = DEFAULT_LINK_WAIT_S,
    ) -> None:
        self.engine = engine
        engine.run_chain = RunChain(max_runs=engine.config.max_pending_traces)
        self.assembly = TraceAssembly(
            engine, engine.run_chain, root_wait_s=root_wait_s,
            link_wait_s=min(link_wait_s, engine.config.trace_timeout_s),
        )
        self.journal = engine.acknowledging()
        """With an outbox: each request's governance is written here before it is acknowledged."""
        self.busy_refusals = 0
        """Requests refused because the intake or delivery was full (each one retried by its sender)."""
        meter = metrics.get_meter("aigp_otel_bridge.gateway", __version__)
        self._requests = meter.create_counter(
            "aigp_bridge.gateway.requests", description="OTLP export requests, by protocol and outcome"
        )
        self._spans = meter.create_counter(
            "aigp_bridge.gateway.spans", description="Spans received over OTLP, by protocol and outcome"
        )

    def export(self, request: ExportTraceServiceRequest, protocol: str) -> Outcome:
        engine = self.engine
        assembly = self.assembly
        if engine.stopped or assembly.closed:
            return self._count(Outcome(Verdict.STOPPED), protocol, 0)
        converted = notes_from_request(request, engine.log, assembly.seen_in_resource)
        entry = None if self.journal is None else self.journal.prepare(converted.notes)
        admitted = assembly.admit(
            converted.notes, converted.links, converted.resources, converted.presumed,
            None if entry is None else entry.marker,
        )
        if entry is not None:
            admitted = self._journaled(entry, admitted)
        if not admitted:
            if engine.stopped or assembly.closed:
                return self._count(Outcome(Verdict.STOPPED), protocol, converted.spans)
            self.busy_refusals += 1
            return self._count(Outcome(Verdict.BUSY), protocol, converted.spans)
        outcome = Outcome(Verdict.ACCEPTED, converted.rejected, converted.reason)
        return self._count(outcome, protocol, converted.spans)

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
        verdict = outcome.verdict.value
        self._requests.add(1, {"protocol": protocol, "outcome": verdict})
        if outcome.verdict is Verdict.ACCEPTED:
            self._spans.add(spans - outcome.rejected_spans, {"protocol": protocol, "outcome": "accepted"})
            if outcome.rejected_spans:
                self._spans.add(outcome.rejected_spans, {"protocol": protocol, "outcome": "rejected"})
        elif spans:
            self._spans.add(spans, {"protocol": protocol, "outcome": verdict})
        return outcome
