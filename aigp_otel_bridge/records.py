"""Extraction: OTel attributes and full AIGP events become compact ``GovernanceRecord``s.

Everything here is a pure function of its input. Values come from arbitrary code, so each
reader checks type and shape, keeps what is valid and counts what it leaves out; nothing
here raises on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from opentelemetry.trace import StatusCode

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.config import Limits
from aigp_otel_bridge.merkle import is_sha256_hex

DEFAULT_LIMITS = Limits()
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_KNOWN_HASH_TYPES = frozenset({"sha256", "merkle-sha256", "sha384", "sha512"})


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """One governed resource named by a record."""

    type: str
    name: str
    version: int | None = None
    leaf_hash: str | None = None
    content_hash: str | None = None


@dataclass(frozen=True, slots=True)
class GovernanceRecord:
    """One governance action, reduced to what the aggregate and the inputs need."""

    event_id: str | None = None
    event_type: str | None = None
    governance_hash: str | None = None
    hash_type: str | None = None
    leaf_count: int | None = None
    denied: bool = False
    classification: str | None = None
    agent_id: str | None = None
    time_ns: int | None = None
    resources: tuple[ResourceRef, ...] = ()
    invalid: int = 0
    """Values of this record that were left out as invalid."""


@dataclass(slots=True)
class _Reader:
    """Validates values one by one and counts those it rejects."""

    limits: Limits
    invalid: int = 0

    def text(self, value: object) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, str) and len(value) <= self.limits.max_string_length and sc.utf8_safe(value):
            return value
        self.invalid += 1
        return None

    def hash(self, value: object) -> str | None:
        if value is None or value == "":
            return None
        if is_sha256_hex(value):
            return value  # type: ignore[return-value]
        self.invalid += 1
        return None

    def choice(self, value: object, allowed: Iterable[str]) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, str) and value in allowed:
            return value
        self.invalid += 1
        return None

    def count(self, value: object, minimum: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        self.invalid += 1
        return None

    def event_type(self, value: object) -> str | None:
        if value is None or value == "":
            return None
        if (
            isinstance(value, str)
            and len(value) <= self.limits.max_string_length
            and sc.EVENT_TYPE_PATTERN.fullmatch(value)
        ):
            return value
        self.invalid += 1
        return None

    def name(self, value: object) -> str | None:
        """A resource name: a non-empty string within the length bound, else counted."""
        if isinstance(value, str) and 0 < len(value) <= self.limits.max_string_length and sc.utf8_safe(value):
            return value
        self.invalid += 1
        return None

    def array(self, value: object) -> list[Any]:
        """An array attribute, cut to the array bound; anything else is counted and ignored."""
        if value is None:
            return []
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            self.invalid += 1
            return []
        cap = self.limits.max_array_length
        if len(value) > cap:
            self.invalid += len(value) - cap
        return list(value[:cap])



def _span_event_type(event_name: str) -> str:
    """The AIGP type of a span event name; unknown ``aigp.x.y`` names become ``X_Y``."""
    known = sc.SPAN_EVENT_TYPES.get(event_name)
    if known is not None:
        return known
    derived = event_name[len(sc.PREFIX) :].replace(".", "_").replace("-", "_").upper()
    return derived if sc.EVENT_TYPE_PATTERN.fullmatch(derived) else "UNKNOWN"


def _resources_from_attributes(attributes: Mapping[str, Any], read: _Reader) -> list[ResourceRef]:
    resources: list[ResourceRef] = []
    for resource_type, name_key, version_key in sc.SINGLE_RESOURCES:
        name_value = attributes.get(name_key)
        if name_value is None:
            continue
        name = read.name(name_value)
        if name is None:
            continue
        resources.append(ResourceRef(resource_type, name, read.count(attributes.get(version_key), 0)))
    for resource_type, names_key, versions_key in sc.ARRAY_RESOURCES:
        names = read.array(attributes.get(names_key))
        versions = read.array(attributes.get(versions_key)) if versions_key else []
        for position, name_value in enumerate(names):
            name = read.name(name_value)
            if name is not None:
                version = read.count(versions[position], 0) if position < len(versions) else None
                resources.append(ResourceRef(resource_type, name, version))
    return resources


def _with_content_hash(
    resources: list[ResourceRef], governance_hash: str | None, hash_type: str | None
) -> tuple[ResourceRef, ...]:
    """A flat hash describes the content of a record's single resource: say so on that resource."""
    distinct = {(r.type, r.name) for r in resources}
    if governance_hash and hash_type == "sha256" and len(distinct) == 1:
        return tuple(
            r if r.leaf_hash else replace(r, content_hash=governance_hash) for r in resources
        )
    return tuple(resources)


def record_from_attributes(
    attributes: Mapping[str, Any],
    *,
    event_name: str | None = None,
    time_ns: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> GovernanceRecord:
    """Read one record from ``aigp.*`` attributes (a span event's, or a span's own)."""
    read = _Reader(limits)
    event_type = read.event_type(attributes.get(sc.EVENT_TYPE))
    if event_type is None and event_name is not None:
        event_type = _span_event_type(event_name)
    governance_hash = read.hash(attributes.get(sc.GOVERNANCE_HASH))
    hash_type = read.choice(attributes.get(sc.GOVERNANCE_HASH_TYPE), _KNOWN_HASH_TYPES)
    if governance_hash and hash_type is None:
        hash_type = "sha256"
    enforcement = attributes.get(sc.ENFORCEMENT_RESULT)
    if enforcement is not None and enforcement not in (sc.ALLOWED, sc.DENIED):
        read.invalid += 1
    resources = _resources_from_attributes(attributes, read)
    return GovernanceRecord(
        event_id=read.text(attributes.get(sc.EVENT_ID)),
        event_type=event_type,
        governance_hash=governance_hash,
        hash_type=hash_type,
        leaf_count=read.count(attributes.get(sc.MERKLE_LEAF_COUNT), 1),
        denied=sc.is_denied(event_type, enforcement),
        classification=read.choice(attributes.get(sc.DATA_CLASSIFICATION), sc.CLASSIFICATION_RANK),
        agent_id=read.text(attributes.get(sc.AGENT_ID)),
        time_ns=time_ns,
        resources=_with_content_hash(resources, governance_hash, hash_type),
        invalid=read.invalid,
    )


def has_governance_attributes(attributes: Mapping[str, Any]) -> bool:
    """A span's own attributes make a record when any ``aigp.*`` key beyond identity is set."""
    for key in attributes:  # noqa: SIM110 - a plain loop is the cheapest form on the hot path
        if key.startswith(sc.PREFIX) and not key.startswith(sc.IDENTITY_PREFIXES):
            return True
    return False


def parse_event_time(value: object) -> int | None:
    """An AIGP ``event_time`` (RFC 3339) as nanoseconds since the epoch, or None."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _merkle_leaves(tree: object, read: _Reader) -> tuple[list[ResourceRef], int | None]:
    if tree is None:
        return [], None
    if not isinstance(tree, Mapping):
        read.invalid += 1
        return [], None
    leaf_count = read.count(tree.get("leaf_count"), 1)
    refs: list[ResourceRef] = []
    for leaf in read.array(tree.get("leaves")):
        if not isinstance(leaf, Mapping):
            read.invalid += 1
            continue
        resource_type = leaf.get("resource_type")
        if not (isinstance(resource_type, str) and sc.RESOURCE_TYPE_PATTERN.fullmatch(resource_type)):
            read.invalid += 1
            continue
        name = read.name(leaf.get("resource_name"))
        if name is not None:
            refs.append(ResourceRef(resource_type, name, leaf_hash=read.hash(leaf.get("hash"))))
    return refs, leaf_count


def _resources_from_event(event: Mapping[str, Any], read: _Reader) -> list[ResourceRef]:
    resources: list[ResourceRef] = []
    for resource_type in ("policy", "prompt"):
        name_value = event.get(f"{resource_type}_name")
        name = None if name_value in (None, "") else read.name(name_value)
        if name is not None:
            version = read.count(event.get(f"{resource_type}_version"), 0)
            resources.append(ResourceRef(resource_type, name, version))
    annotations = event.get("annotations")
    if isinstance(annotations, Mapping):
        otel_attributes = annotations.get("otel_attributes")
        if isinstance(otel_attributes, Mapping):
            resources.extend(_resources_from_attributes(otel_attributes, read))
    return resources


def record_from_aigp_event(event: Mapping[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> GovernanceRecord:
    """Read one record from a full AIGP event (the JSON a governance store keeps)."""
    read = _Reader(limits)
    event_type = read.event_type(event.get("event_type"))
    governance_hash = read.hash(event.get("governance_hash"))
    hash_type = read.choice(event.get("hash_type"), _KNOWN_HASH_TYPES)
    if governance_hash and hash_type is None:
        hash_type = "sha256"
    leaves, leaf_count = _merkle_leaves(event.get("governance_merkle_tree"), read)
    enforcement = event.get("enforcement_result")
    if enforcement is not None and enforcement not in (sc.ALLOWED, sc.DENIED):
        read.invalid += 1
    resources = _resources_from_event(event, read) + leaves
    return GovernanceRecord(
        event_id=read.text(event.get("event_id")),
        event_type=event_type,
        governance_hash=governance_hash,
        hash_type=hash_type,
        leaf_count=leaf_count,
        denied=sc.is_denied(event_type, enforcement),
        classification=read.choice(event.get("data_classification"), sc.CLASSIFICATION_RANK),
        agent_id=read.text(event.get("agent_id")),
        time_ns=parse_event_time(event.get("event_time")),
        resources=_with_content_hash(resources, governance_hash, hash_type),
        invalid=read.invalid,
    )


def merge_records(span_record: GovernanceRecord, full_record: GovernanceRecord) -> GovernanceRecord:
    """One action seen twice (span event and full AIGP event): the full event's fields win.

    Resources of both are kept (the aggregate merges them per type and name), because span events
    carry array attributes and versions that the full event keeps only in its annotations; where
    both give a resource's version, the full event's wins.
    """
    merged: dict[str, Any] = {}
    for name in GovernanceRecord.__dataclass_fields__:
        full_value = getattr(full_record, name)
        merged[name] = full_value if full_value is not None else getattr(span_record, name)
    merged["denied"] = full_record.denied
    merged["invalid"] = full_record.invalid
    versioned = {(r.type, r.name) for r in full_record.resources if r.version is not None}
    merged["resources"] = full_record.resources + tuple(
        replace(r, version=None) if (r.type, r.name) in versioned else r for r in span_record.resources
    )
    return GovernanceRecord(**merged)


@dataclass(frozen=True, slots=True)
class RootInfo:
    """What the bridge knows of a local root span; passed to a ``job_name`` callable."""

    name: str
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    agent_id: str | None
    trace_id: str


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The failure of a root span, for the ``errorMessage`` run facet."""

    message: str
    stack_trace: str | None = None


@dataclass(frozen=True, slots=True)
class SpanNote:
    """A finished span, captured compactly on the application's thread.

    It holds references to the span's own event tuple and attribute mapping (immutable
    once the span has ended), never the span itself; parsing waits for the worker.
    """

    trace_id: int
    span_id: int
    local_root: bool
    remote_parent: bool
    name: str
    start_ns: int
    end_ns: int
    governance_events: tuple[Any, ...]
    """The span's ``aigp.*`` events (objects with ``name``, ``attributes``, ``timestamp``)."""
    attributes: Mapping[str, Any] | None
    """The span's attributes, kept when they carry governance data or the span is a local root."""
    governed_attributes: bool
    resource: Mapping[str, Any]
    error: bool = False
    status_description: str | None = None
    exception: Any = None
    """The last ``exception`` event of a failed local root."""


def records_from_note(note: SpanNote, limits: Limits = DEFAULT_LIMITS) -> list[GovernanceRecord]:
    """Every record a captured span carries: one per ``aigp.*`` event, plus its own attributes."""
    records = [
        record_from_attributes(
            event.attributes or {}, event_name=event.name, time_ns=event.timestamp, limits=limits
        )
        for event in note.governance_events
    ]
    if note.governed_attributes and note.attributes is not None:
        records.append(record_from_attributes(note.attributes, time_ns=note.end_ns, limits=limits))
    return records


def error_of(note: SpanNote, limits: Limits = DEFAULT_LIMITS) -> ErrorInfo | None:
    """What went wrong with a failed span: its recorded exception, else its status description."""
    if not note.error:
        return None
    message: str | None = None
    stack: str | None = None
    if note.exception is not None:
        attributes = note.exception.attributes or {}
        kind = attributes.get(sc.EXCEPTION_TYPE)
        text = attributes.get(sc.EXCEPTION_MESSAGE)
        if isinstance(text, str) and text:
            message = f"{kind}: {text}" if isinstance(kind, str) and kind else text
        trace = attributes.get(sc.EXCEPTION_STACKTRACE)
        stack = trace if isinstance(trace, str) and trace else None
    if message is None:
        message = note.status_description or "span status ERROR"
    cap = limits.max_string_length * 16
    return ErrorInfo(sc.clean_text(message[:cap]), sc.clean_text(stack[:cap]) if stack else None)


def trace_key_of(trace_id: object) -> int | str | None:
    """The correlation key of an AIGP ``trace_id``: OTel's integer for 32-hex ids, else the text."""
    if not isinstance(trace_id, str) or not trace_id:
        return None
    if _HEX32.fullmatch(trace_id):
        return int(trace_id, 16)
    return trace_id


def capture_span(span: Any) -> SpanNote | None:
    """The compact note of a finished SDK span, or None when it matters to no run.

    Runs on the application's thread for every span: a span that is neither a local root
    nor carries ``aigp.*`` data costs a look at its events and attribute keys, nothing more.
    """
    parent = span.parent
    local_root = parent is None or parent.is_remote
    events = span.events
    governance_events = tuple(e for e in events if e.name.startswith(sc.PREFIX)) if events else ()
    attributes = span.attributes
    governed_attributes = bool(attributes) and has_governance_attributes(attributes)
    if not (local_root or governance_events or governed_attributes):
        return None
    context = span.context
    status = span.status
    error = status.status_code is StatusCode.ERROR
    exception = None
    if error and local_root:
        exception = next((e for e in reversed(events) if e.name == sc.EXCEPTION_EVENT), None)
    return SpanNote(
        trace_id=context.trace_id,
        span_id=context.span_id,
        local_root=local_root,
        remote_parent=parent is not None and parent.is_remote,
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        governance_events=governance_events,
        attributes=attributes if (governed_attributes or local_root) else None,
        governed_attributes=governed_attributes,
        resource=span.resource.attributes,
        error=error,
        status_description=status.description if error else None,
        exception=exception,
    )
