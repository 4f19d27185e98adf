"""Extraction: OTel attributes and full AIGP events become compact ``GovernanceRecord``s.

Everything here is a pure function of its input. Values come from arbitrary code, so each
reader checks type and shape, keeps what is valid and counts what it leaves out; nothing
here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from opentelemetry.trace import StatusCode

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.config import Limits
from aigp_otel_bridge.merkle import is_sha256_hex

DEFAULT_LIMITS = Limits()
_KNOWN_HASH_TYPES = frozenset({"sha256", "merkle-sha256", "sha384", "sha512"})


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """One governed resource named by a record."""

    type: str
    name: str
    version: int | None = None
    leaf_hash: str | None = None
    content_hash: str | None = None


@dataclass(slots=True)
class GovernanceRecord:
    """One governance action, reduced to what the aggregate and the inputs need. Treated as
    immutable once built; not frozen, because a frozen dataclass of this size costs several times
    as much to build, and the worker builds one per governance action."""

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

    def _fits(self, value: object) -> bool:
        """A string within the length bound that can be written as UTF-8."""
        return isinstance(value, str) and len(value) <= self.limits.max_string_length and sc.utf8_safe(value)

    def text(self, value: object) -> str | None:
        """An optional text value (id, agent id): absent when None or empty, counted when unfit."""
        if value is None or value == "":
            return None
        if self._fits(value):
            return value  # type: ignore[return-value]
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

    def proof(self, digest: object, kind: object) -> tuple[str | None, str | None]:
        """A governance hash and its hash type; a valid hash without a type is a flat SHA-256."""
        governance_hash = self.hash(digest)
        hash_type = self.choice(kind, _KNOWN_HASH_TYPES)
        return governance_hash, "sha256" if governance_hash and hash_type is None else hash_type

    def enforcement(self, value: object) -> object:
        """An enforcement result as given; anything but allowed/denied is counted (and then
        ignored by the enforcement rule)."""
        if value is not None and value not in (sc.ALLOWED, sc.DENIED):
            self.invalid += 1
        return value

    def version(self, value: object) -> int | None:
        """A resource version: 0 is the reference SDK's "no version" and reads as absent, as from
        a span event that leaves it out; negative or non-integer values are counted."""
        return None if value == 0 and not isinstance(value, bool) else self.count(value, 1)

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
        """A resource name: required wherever it is read, so empty or unfit is counted."""
        if value != "" and self._fits(value):
            return value  # type: ignore[return-value]
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


_ARRAY_KEYS = frozenset(names_key for _, names_key, _ in sc.ARRAY_RESOURCES)
_RawResource = tuple[str, str, "int | None", "str | None"]
"""(type, name, version, leaf hash) of a resource, before it becomes a ``ResourceRef``."""


def _resources_from_attributes(attributes: Mapping[str, Any], read: _Reader) -> list[_RawResource]:
    raw: list[_RawResource] = []
    for resource_type, name_key, version_key in sc.SINGLE_RESOURCES:
        name_value = attributes.get(name_key)
        if name_value is not None:
            name = read.name(name_value)
            if name is not None:
                raw.append((resource_type, name, read.version(attributes.get(version_key)), None))
    if _ARRAY_KEYS.isdisjoint(attributes):
        return raw
    for resource_type, names_key, versions_key in sc.ARRAY_RESOURCES:
        names_value = attributes.get(names_key)
        if names_value is None:
            continue
        versions = read.array(attributes.get(versions_key)) if versions_key else []
        for position, name_value in enumerate(read.array(names_value)):
            name = read.name(name_value)
            if name is not None:
                version = read.version(versions[position]) if position < len(versions) else None
                raw.append((resource_type, name, version, None))
    return raw


def _refs(
    raw: list[_RawResource], governance_hash: str | None, hash_type: str | None
) -> tuple[ResourceRef, ...]:
    """The record's resources; a flat hash describes the content of a record's single resource,
    so that resource carries it as its content hash."""
    content = None
    if governance_hash and hash_type == "sha256" and len({(t, n) for t, n, _, _ in raw}) == 1:
        content = governance_hash
    return tuple(ResourceRef(t, n, v, leaf, None if leaf else content) for t, n, v, leaf in raw)


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
    governance_hash, hash_type = read.proof(
        attributes.get(sc.GOVERNANCE_HASH), attributes.get(sc.GOVERNANCE_HASH_TYPE)
    )
    enforcement = read.enforcement(attributes.get(sc.ENFORCEMENT_RESULT))
    resources = _refs(_resources_from_attributes(attributes, read), governance_hash, hash_type)
    return GovernanceRecord(  # positional: the worker builds one per governance action
        read.text(attributes.get(sc.EVENT_ID)),
        event_type,
        governance_hash,
        hash_type,
        read.count(attributes.get(sc.MERKLE_LEAF_COUNT), 1),
        sc.is_denied(event_type, enforcement),
        read.choice(attributes.get(sc.DATA_CLASSIFICATION), sc.CLASSIFICATION_RANK),
        read.text(attributes.get(sc.AGENT_ID)),
        time_ns,
        resources,
        read.invalid,
    )


def has_governance_attributes(attributes: Iterable[str]) -> bool:
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


def _merkle_leaves(tree: object, read: _Reader) -> tuple[list[_RawResource], int | None]:
    if tree is None:
        return [], None
    if not isinstance(tree, Mapping):
        read.invalid += 1
        return [], None
    leaf_count = read.count(tree.get("leaf_count"), 1)
    refs: list[_RawResource] = []
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
            refs.append((resource_type, name, None, read.hash(leaf.get("hash"))))
    return refs, leaf_count


def _resources_from_event(event: Mapping[str, Any], read: _Reader) -> list[_RawResource]:
    resources: list[_RawResource] = []
    for resource_type in ("policy", "prompt"):
        name_value = event.get(f"{resource_type}_name")
        name = None if name_value in (None, "") else read.name(name_value)
        if name is not None:
            version = read.version(event.get(f"{resource_type}_version"))
            resources.append((resource_type, name, version, None))
    annotations = event.get("annotations")
    if isinstance(annotations, Mapping):
        resources.extend(_all_policies(annotations.get("all_policies"), read))
        otel_attributes = annotations.get("otel_attributes")
        if isinstance(otel_attributes, Mapping):
            resources.extend(_resources_from_attributes(otel_attributes, read))
    return resources


def _all_policies(value: object, read: _Reader) -> list[_RawResource]:
    """The policies of a multi-policy inject, which the reference SDK lists in the full event's
    ``annotations.all_policies`` (``policy_name`` holds only the first)."""
    resources: list[_RawResource] = []
    for entry in read.array(value):
        if not isinstance(entry, Mapping):
            read.invalid += 1
            continue
        name = read.name(entry.get("name"))
        if name is not None:
            resources.append(("policy", name, read.version(entry.get("version")), None))
    return resources


def record_from_aigp_event(event: Mapping[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> GovernanceRecord:
    """Read one record from a full AIGP event (the JSON a governance store keeps)."""
    read = _Reader(limits)
    event_type = read.event_type(event.get("event_type"))
    governance_hash, hash_type = read.proof(event.get("governance_hash"), event.get("hash_type"))
    leaves, leaf_count = _merkle_leaves(event.get("governance_merkle_tree"), read)
    enforcement = read.enforcement(event.get("enforcement_result"))
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
        resources=_refs(resources, governance_hash, hash_type),
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
    resources = full_record.resources + tuple(
        replace(r, version=None) if (r.type, r.name) in versioned else r for r in span_record.resources
    )
    if len({(r.type, r.name) for r in resources}) > 1:  # a combined hash is no one resource's own
        resources = tuple(replace(r, content_hash=None) if r.content_hash else r for r in resources)
    merged["resources"] = resources
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


@dataclass(slots=True)
class SpanNote:
    """A finished span, captured compactly on the application's thread.

    It holds references to the span's own event objects and attribute dict (neither changes once
    the span has ended), never the span itself; parsing waits for the worker. Not frozen, because
    a frozen dataclass costs eight times as much to build on this hot path; nothing mutates it.
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


def plain(attributes: Any) -> Mapping[str, Any]:
    """The dict behind the SDK's ``BoundedAttributes`` (its ``get`` is a slow Python-level path)."""
    if attributes is None:
        return {}
    inner = getattr(attributes, "_dict", None)
    return inner if isinstance(inner, dict) else attributes


def records_from_note(note: SpanNote, limits: Limits = DEFAULT_LIMITS) -> list[GovernanceRecord]:
    """Every record a captured span carries: one per ``aigp.*`` event, plus its own attributes."""
    records = [
        record_from_attributes(
            plain(event.attributes), event_name=event.name, time_ns=event.timestamp, limits=limits
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
    if sc.OTEL_TRACE_ID.fullmatch(trace_id):
        return int(trace_id, 16)
    return trace_id


_KEY_VERDICTS: dict[tuple[str, ...], bool] = {}
_KEY_VERDICTS_MAX = 4096


def _governed_keys(keys: tuple[str, ...]) -> bool:
    """``has_governance_attributes`` remembered per key tuple: instrumentation repeats its key sets,
    and a dict lookup is cheaper than testing every key of every span."""
    verdict = _KEY_VERDICTS.get(keys)
    if verdict is None:
        verdict = has_governance_attributes(keys)
        if len(_KEY_VERDICTS) >= _KEY_VERDICTS_MAX:
            _KEY_VERDICTS.clear()
        _KEY_VERDICTS[keys] = verdict
    return verdict


def capture_span(span: Any) -> SpanNote | None:
    """The compact note of a finished SDK span, or None when it matters to no run.

    Runs on the application's thread for every span. It reads the SDK span's own fields
    (``_parent``, ``_events``, ``_attributes``) rather than the public properties, which copy the
    events into a tuple and the attributes under a lock on every access; any span object without
    them goes through the public API. An ungoverned child span costs a parent check, an events
    check and one dict lookup.
    """
    try:
        parent = span._parent
        events = span._events
        attributes = span._attributes
    except AttributeError:
        parent, events, attributes = span.parent, span.events, span.attributes
    local_root = parent is None or parent.is_remote
    events = getattr(events, "_dq", events)  # the SDK's BoundedList keeps its events in a deque
    attributes = getattr(attributes, "_dict", attributes)  # BoundedAttributes keeps a dict
    governed_attributes = bool(attributes) and _governed_keys(tuple(attributes))
    governance_events = tuple(e for e in events if e.name.startswith(sc.PREFIX)) if events else ()
    if not (local_root or governance_events or governed_attributes):
        return None
    context = span.context
    status = span.status
    error = status.status_code is StatusCode.ERROR
    exception = None
    if error and local_root:
        exception = next((e for e in reversed(events) if e.name == sc.EXCEPTION_EVENT), None)
    start = span.start_time or 0
    return SpanNote(
        context.trace_id,
        context.span_id,
        local_root,
        parent is not None and parent.is_remote,
        span.name,
        start,
        span.end_time or start,
        governance_events,
        attributes if (governed_attributes or local_root) else None,
        governed_attributes,
        _resource_attributes(span.resource),
        error,
        status.description if error else None,
        exception,
    )


def _resource_attributes(resource: Any) -> Mapping[str, Any]:
    """A Resource's attributes as a plain mapping (shared by all spans; nothing is copied)."""
    return plain(getattr(resource, "attributes", None))
