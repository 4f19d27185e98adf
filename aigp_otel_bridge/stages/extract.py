"""Extraction: span notes and full AIGP events become compact ``GovernanceRecord``s and facts.

The one stage that reads span content: later stages only combine what it computes (records,
a local root's checked agent id and error, a resource's identity). Values come from arbitrary
code, so each reader checks type and shape, keeps what is valid and counts what it leaves
out; nothing here raises on bad input. A leaf module: it imports only the vocabulary, the
hashing helpers, the bounded memo and the note.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.memo import BoundedMemo
from aigp_otel_bridge.merkle import is_sha256_hex
from aigp_otel_bridge.note import SpanNote


@dataclass(frozen=True)
class Limits:
    """Bounds on what one value may cost; values past them are left out and counted."""

    max_string_length: int = 1024
    """Longest accepted name, id or event type, in characters."""
    max_array_length: int = 1000
    """Most elements read from one array attribute or Merkle tree."""
    max_inputs_per_run: int = 1000
    """Most input datasets on one RunEvent; further resources are counted."""


DEFAULT_LIMITS = Limits()


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
    """One governance action, reduced to what the aggregate and the inputs need. Nothing changes
    one once built (``dataclasses.replace`` makes another); not frozen, because a frozen dataclass
    of this size costs several times as much to build, and the worker builds one per action."""

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
    full: bool = False
    """Read from a full AIGP event (whose fields win when joined with a span event's)."""


def fits_text(value: object, max_length: int) -> bool:
    """A string of at most ``max_length`` characters that can be written as UTF-8."""
    return (
        isinstance(value, str)
        and len(value) <= max_length
        and (value.isascii() or sc.utf8_safe(value))  # ASCII (nearly every value) costs no call
    )


def optional_text(value: object, max_length: int) -> tuple[str | None, bool]:
    """An optional text value (id, agent id) and whether it was unfit: None when absent (None or
    empty) or unfit (``fits_text``)."""
    if type(value) is str and len(value) <= max_length and value.isascii():  # the common case
        return value or None, False
    if value is None or value == "":
        return None, False
    if fits_text(value, max_length):
        return value, False  # type: ignore[return-value]
    return None, True


@dataclass(slots=True)
class _Reader:
    """Validates values one by one and counts those it rejects."""

    limits: Limits
    invalid: int = 0

    def _fits(self, value: object) -> bool:
        return fits_text(value, self.limits.max_string_length)

    def text(self, value: object) -> str | None:
        """An optional text value (id, agent id): absent when None or empty, counted when unfit."""
        text, unfit = optional_text(value, self.limits.max_string_length)
        self.invalid += unfit
        return text

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
        if governance_hash is not None:  # one string for a hash that recurs (same content)
            governance_hash = sys.intern(governance_hash)
        hash_type = self.choice(kind, sc.HASH_TYPES)
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
_RECORD_KEYS = frozenset({
    sc.EVENT_TYPE,
    sc.GOVERNANCE_HASH,
    sc.GOVERNANCE_HASH_TYPE,
    sc.ENFORCEMENT_RESULT,
    sc.MERKLE_LEAF_COUNT,
    sc.DATA_CLASSIFICATION,
    sc.AGENT_ID,
    *(key for _, name_key, version_key in sc.SINGLE_RESOURCES for key in (name_key, version_key)),
    *(key for _, names_key, versions_key in sc.ARRAY_RESOURCES for key in (names_key, versions_key) if key),
})
"""Every key ``record_from_attributes`` reads, the event id aside (it reads each with ``get``)."""
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
    if not raw:
        return ()
    content = None
    if governance_hash and hash_type == "sha256" and (
        len(raw) == 1 or len({(t, n) for t, n, _, _ in raw}) == 1
    ):
        content = governance_hash
    refs = tuple(
        ResourceRef(type=t, name=n, version=v, leaf_hash=leaf, content_hash=None if leaf else content)
        for t, n, v, leaf in raw
    )
    shared = _SHARED_RESOURCES.get(refs)
    return shared if shared is not None else _SHARED_RESOURCES.remember(refs, refs)


_SHARED_RESOURCES: BoundedMemo[tuple[ResourceRef, ...], tuple[ResourceRef, ...]] = BoundedMemo(4096)
"""One object for equal resource tuples: agents use the same policies and prompts (same content,
same hash) run after run, and pending runs then share what they name instead of each keeping a
copy (the memory per pending trace)."""


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
        resources=resources,
        invalid=read.invalid,
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
    return (moment - _EPOCH) // _MICROSECOND * 1_000


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


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
    event_id = read.text(event.get("event_id"))
    event_type = read.event_type(event.get("event_type"))
    governance_hash, hash_type = read.proof(event.get("governance_hash"), event.get("hash_type"))
    leaves, leaf_count = _merkle_leaves(event.get("governance_merkle_tree"), read)
    enforcement = read.enforcement(event.get("enforcement_result"))
    resources = _resources_from_event(event, read) + leaves
    return GovernanceRecord(
        event_id=event_id,
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
        full=True,
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
    merged["full"] = True
    versioned = {(r.type, r.name) for r in full_record.resources if r.version is not None}
    resources = full_record.resources + tuple(
        replace(r, version=None) if (r.type, r.name) in versioned else r for r in span_record.resources
    )
    if len({(r.type, r.name) for r in resources}) > 1:  # a combined hash is no one resource's own
        resources = tuple(replace(r, content_hash=None) if r.content_hash else r for r in resources)
    merged["resources"] = resources
    return GovernanceRecord(**merged)


def join_duplicate(known: GovernanceRecord, record: GovernanceRecord) -> GovernanceRecord:
    """One action seen twice: a full AIGP event wins over a span event; otherwise the later full
    event replaces an earlier one and a repeated span event is ignored."""
    if record.full and not known.full:
        return merge_records(known, record)
    if known.full and not record.full:
        return merge_records(record, known)
    return record if record.full else known


def records_from_aigp_events(
    events: Iterable[Mapping[str, Any]], *, limits: Limits = DEFAULT_LIMITS
) -> list[GovernanceRecord]:
    """One record per event; events sharing an ``event_id`` are one action (the later one wins).

    Public because the builders and ``verify`` must join a store's events the same way.
    """
    joined: dict[str, GovernanceRecord] = {}
    for position, event in enumerate(events):
        record = record_from_aigp_event(event, limits=limits)
        key = record.event_id or f"#{position}"
        joined[key] = join_duplicate(joined[key], record) if key in joined else record
    return list(joined.values())


def trace_key_of(trace_id: object) -> int | str | None:
    """The correlation key of an AIGP ``trace_id``: OTel's integer for 32-hex ids, else the text."""
    if not isinstance(trace_id, str) or not trace_id:
        return None
    if sc.OTEL_TRACE_ID.fullmatch(trace_id):
        return int(trace_id, 16)
    return trace_id


def span_key_of(span_id: object) -> int | None:
    """An AIGP ``span_id`` (16 hex digits) as OTel's integer, else None."""
    if isinstance(span_id, str) and sc.OTEL_SPAN_ID.fullmatch(span_id):
        return int(span_id, 16)
    return None


# ---- what extraction knows of a finished span, beyond its records ----


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
class ResourceFacts:
    """The identity a Resource gives every span of a process, checked once."""

    attributes: Mapping[str, Any]
    agent_id: str | None
    service_name: str | None
    service_namespace: str | None


@dataclass(frozen=True, slots=True)
class RootFacts:
    """A local root span, as the build stage needs it: identity, name, times, failure."""

    span_id: int
    remote_parent: bool
    name: str
    """The span's name (``span_name``), made UTF-8-safe."""
    start_ns: int
    end_ns: int
    agent_id: str | None
    """The root's own ``aigp.agent.id``, when valid."""
    error: ErrorInfo | None
    attributes: Mapping[str, Any]
    """The span's own attributes (for a ``job_name`` callable)."""
    gen_ai_agent_id: str | None = None
    """The root's ``gen_ai.agent.id``, when valid."""
    gen_ai_agent_name: str | None = None
    """The agent the root itself names (``agent_name_of``: ``gen_ai.agent.name`` or another
    convention's), when valid: the task in the default job name."""


@dataclass(frozen=True, slots=True)
class GenAIFacts:
    """What a span's agent-instrumentation attributes say about the resources it used and the
    agent it ran for, in whichever convention of ``sc.CONVENTIONS`` (contract section 9)."""

    tool: str | None = None
    """``tool.<name>`` of a tool span (GenAI ``execute_tool``, OpenInference ``TOOL``, ...)."""
    model: str | None = None
    """``model.<model>`` of a model span: for GenAI the response model (what ran), else the
    request model."""
    provider: str | None = None
    """The model's provider, as the convention that named the model writes it."""
    agent_name: str | None = None
    """The agent an agent span ran: a candidate task for the run's job name."""
    invalid: int = 0
    """Values left out as invalid."""


@dataclass(slots=True)
class SpanFacts:
    """Everything correlation needs of one finished span: where it belongs, and what it carries.
    Nothing changes one once built; not frozen, because the worker builds one per noted span and
    a frozen dataclass of this size costs several times as much to build."""

    trace_id: int
    local_root_id: int | None
    """The span's local root, when known (its own id for a local root)."""
    name: str
    start_ns: int
    end_ns: int
    resource: ResourceFacts
    records: list[GovernanceRecord]
    root: RootFacts | None
    """Set for a local root."""
    span_id: int = 0
    parent_span_id: int | None = None
    genai: GenAIFacts | None = None
    """Set when the span carries GenAI attributes the bridge reads."""


def identity(mapping: Mapping[str, Any] | None, key: str, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """An identity value (agent id, service name) fit to appear in a RunEvent, else None."""
    value = mapping.get(key) if mapping is not None else None
    return value if value and fits_text(value, limits.max_string_length) else None


def resource_facts(resource: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> ResourceFacts:
    return ResourceFacts(
        attributes=resource,
        agent_id=identity(resource, sc.AGENT_ID, limits),
        service_name=identity(resource, sc.SERVICE_NAME, limits),
        service_namespace=identity(resource, sc.SERVICE_NAMESPACE, limits),
    )


EventParser = Callable[[Mapping[str, Any], str, "int | None"], GovernanceRecord]
"""Reads one ``aigp.*`` span event: (attributes, event name, time)."""


def records_from_note(
    note: SpanNote, limits: Limits = DEFAULT_LIMITS, parse_event: EventParser | None = None
) -> list[GovernanceRecord]:
    """Every record a captured span carries: one per ``aigp.*`` event, plus its own attributes."""
    events = note.governance_events
    if parse_event is None:
        records = [
            record_from_attributes(e.attributes, event_name=e.name, time_ns=e.time_ns, limits=limits)
            for e in events
        ]
    else:
        records = [parse_event(e.attributes, e.name, e.time_ns) for e in events]
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
        attributes = note.exception.attributes
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


def span_name(name: str, attributes: Mapping[str, Any] | None) -> str:
    """The name a span goes by (a job's task): its own, but for a logfire span named by its
    message template (``{...}`` placeholders), whose filled-in ``logfire.msg`` is meant."""
    if not attributes or sc.LOGFIRE_MSG_TEMPLATE not in attributes:
        return sc.clean_text(name)
    message = attributes.get(sc.LOGFIRE_MSG)
    if (attributes[sc.LOGFIRE_MSG_TEMPLATE] == name or "{" in name) and isinstance(message, str) and message:
        return sc.clean_text(message)
    return sc.clean_text(name)


def root_facts(note: SpanNote, limits: Limits = DEFAULT_LIMITS) -> RootFacts:
    """The facts of a local root span."""
    attributes = note.attributes or {}
    return RootFacts(
        span_id=note.span_id,
        remote_parent=note.remote_parent,
        name=span_name(note.name, attributes),
        start_ns=note.start_ns,
        end_ns=note.end_ns,
        agent_id=identity(attributes, sc.AGENT_ID, limits),
        error=error_of(note, limits),
        attributes=attributes,
        gen_ai_agent_id=identity(attributes, sc.GEN_AI_AGENT_ID, limits),
        gen_ai_agent_name=agent_name_of(attributes, limits),
    )


def agent_name_of(attributes: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The agent a span names in any convention (``gen_ai.agent.name``, OpenInference's
    ``agent.name``, ...), when valid: ``gen_ai_facts_of``'s agent name, reading nothing else."""
    for convention in sc.CONVENTIONS:
        if convention.agent is not None:
            value = _role_value(attributes, convention, convention.agent)
            if value is not None:
                return optional_text(value, limits.max_string_length)[0]
    return None


def _prefixed_name(prefix: str, value: object, read: _Reader, *, keep_prefixed: bool) -> str | None:
    """A GenAI value as a resource name (``tool.x``, ``model.x``), checked like any name."""
    if not isinstance(value, str) or not value:
        return read.name(None)  # counted
    return read.name(value if keep_prefixed and value.startswith(prefix) else prefix + value)


ROLE_KEYS = frozenset(sc.MARKER_ROLES) | sc.KIND_KEYS
"""Attributes without which a span has no role in any convention."""
_JSON_READ_MAX = 64 * 1024
"""Longest JSON attribute parsed for a name (LangChain's run ``metadata``); longer ones are not."""


def _first_set(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> object:
    """The value of the first of ``keys`` set (not None, not empty), else None."""
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return value
    return None


def _role_name(attributes: Mapping[str, Any], how: sc.Role) -> object:
    """The value a role's name is read from: the first name key set, else a JSON field; None
    when the span names none."""
    value = _first_set(attributes, how.name_keys)
    if value is not None:
        return value
    for key, field in how.json_names:
        text = attributes.get(key)
        if isinstance(text, str) and len(text) <= _JSON_READ_MAX and field in text:
            try:
                document = json.loads(text)
            except ValueError:
                continue
            value = document.get(field) if isinstance(document, dict) else None
            if value is not None and value != "":
                return value
    return None


def _role_value(attributes: Mapping[str, Any], convention: sc.Convention, how: sc.Role) -> object:
    """The value a span's name for a role is read from, when the convention gives the span that
    role (its kind attribute, if it has one, is one of the role's kinds); else None."""
    if how.kinds:
        kind = attributes.get(convention.kind_key) if convention.kind_key is not None else None
        if not (type(kind) is str and kind in how.kinds):
            return None
    return _role_name(attributes, how)


def gen_ai_facts_of(
    attributes: Mapping[str, Any] | None, limits: Limits = DEFAULT_LIMITS
) -> GenAIFacts | None:
    """What a span's attributes say in the conventions of ``sc.CONVENTIONS`` (contract section 9):
    the tool, model (and its provider) and agent it names; None when it has no role in any.

    Each role is taken from the first convention that gives the span that role and names it; a
    name that is set but unfit is counted and left out."""
    if not attributes or ROLE_KEYS.isdisjoint(attributes):
        return None
    read = _Reader(limits)
    found: dict[str, str | None] = {}
    provider = None
    for convention in sc.CONVENTIONS:
        for role, how in convention.roles():
            if role in found:
                continue
            value = _role_value(attributes, convention, how)
            if value is None:
                continue
            if role == sc.AGENT:
                found[role] = read.text(value)
                continue
            found[role] = _prefixed_name(f"{role}.", value, read, keep_prefixed=role == sc.TOOL)
            if role == sc.MODEL and found[role] is not None:
                provider = read.text(_first_set(attributes, convention.provider_keys))
    if not found:
        return None
    return GenAIFacts(
        tool=found.get(sc.TOOL),
        model=found.get(sc.MODEL),
        provider=provider,
        agent_name=found.get(sc.AGENT),
        invalid=read.invalid,
    )


def names_tool(record: GovernanceRecord) -> bool:
    return any(ref.type == "tool" for ref in record.resources)


def about_tool(record: GovernanceRecord, tool: str) -> GovernanceRecord:
    """A record that names no tool, made about ``tool`` (the ``execute_tool`` span it sits on or
    under). Its flat hash is the tool's own content hash only when the tool is all it covers."""
    if names_tool(record):
        return record
    if record.resources:
        resources = tuple(replace(r, content_hash=None) if r.content_hash else r for r in record.resources)
        content = None
    else:
        resources = ()
        content = record.governance_hash if record.hash_type == "sha256" else None
    return replace(record, resources=(*resources, ResourceRef(type="tool", name=tool, content_hash=content)))


_RECORDS_REMEMBERED = 1024
_GEN_AI_FACTS_REMEMBERED = 1024
_ARRAY_KEPT_MAX = 16
"""Most elements of an array a remembered span event may hold (the tools or policies of one action)."""


def _keepable(value: object, max_length: int) -> bool:
    """A value a memo key may keep: None, a boolean, a 64-bit integer, a string that may be valid,
    or an array (a tuple, as OpenTelemetry stores it) of at most ``_ARRAY_KEPT_MAX`` such strings
    and integers, so that what a memo holds stays small in bytes as well as in entries."""
    if type(value) is str:
        return len(value) <= max_length
    if type(value) is int:
        return -(1 << 63) <= value < 1 << 63
    if type(value) is tuple:
        return (
            len(value) <= _ARRAY_KEPT_MAX
            and _plain_array(value)
            and all(_keepable(element, max_length) for element in value)
        )
    return value is None or type(value) is bool


def _plain_array(value: tuple[object, ...]) -> bool:
    """An array of strings and integers only: equal arrays of other elements read differently
    (``(1,) == (True,) == (1.0,)``), so only these may be looked up by value."""
    return all(type(element) is str or type(element) is int for element in value)


RecordContent = tuple[str, tuple[str, ...], tuple[object, ...], tuple[type, ...]]
"""What a span event's record is read from, its event id aside: the event name, the keys of
``_RECORD_KEYS`` it has, their values, and the values' types (``1``, ``1.0`` and ``True`` are
equal, but not equally valid)."""


GenAIContent = tuple[tuple[str, ...], tuple[object, ...]]
"""What a span's GenAI facts are read from: the convention keys it has and their values."""
_CONVENTION_KEYS = frozenset(sc.CONVENTION_KEYS)


class Extractor:
    """Reads notes on the correlation worker. Remembers the facts of the last Resource seen (every
    span of a process shares one), the record each distinct span event content reads, and the
    GenAI facts each distinct set of GenAI values gives: instrumentation repeats all three span
    after span, and reading them afresh is most of what extraction costs."""

    __slots__ = ("_gen_ai_facts_by_content", "_limits", "_records_by_content", "_resource")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._resource: ResourceFacts | None = None
        self._records_by_content: BoundedMemo[RecordContent, GovernanceRecord] = BoundedMemo(
            _RECORDS_REMEMBERED
        )
        """A span event's record without its id and time, by what it is read from."""
        self._gen_ai_facts_by_content: BoundedMemo[GenAIContent, GenAIFacts | None] = BoundedMemo(
            _GEN_AI_FACTS_REMEMBERED
        )
        """Facts by the convention keys a span has and their values (``gen_ai_facts``)."""

    def event_record(
        self, attributes: Mapping[str, Any], event_name: str, time_ns: int | None
    ) -> GovernanceRecord:
        """``record_from_attributes`` of a span event, read once per distinct content.

        Everything an AIGP span event carries that its record reads, the event id aside, repeats
        from one action to the next (the same policy, version, content hash and verdict), so the
        record is remembered by that content (``RecordContent``); keys no record reads (a sequence
        number, a signature, a denial reason) are no part of it. Each event's id and time are its
        own, and values left out as invalid are counted every time they are seen: the record is
        the one ``record_from_attributes`` reads, hit or miss. Arrays of anything but strings and
        integers, and unhashable values, are read afresh; only ``_keepable`` (small) contents are
        remembered.
        """
        limits = self._limits
        names = tuple(filter(_RECORD_KEYS.__contains__, attributes))
        values = tuple(map(attributes.__getitem__, names))
        types = tuple(map(type, values))
        if tuple in types and not all(_plain_array(v) for v in values if type(v) is tuple):
            return record_from_attributes(attributes, event_name=event_name, time_ns=time_ns, limits=limits)
        content: RecordContent = (event_name, names, values, types)
        try:
            known = self._records_by_content.get(content)
        except TypeError:  # an unhashable value (a list): read afresh
            return record_from_attributes(attributes, event_name=event_name, time_ns=time_ns, limits=limits)
        if known is None:
            known = record_from_attributes(dict(zip(names, values, strict=True)), event_name=event_name,
                                           limits=limits)
            if all(_keepable(value, limits.max_string_length) for value in values):
                self._records_by_content.remember(content, known)
        event_id, unfit = optional_text(attributes.get(sc.EVENT_ID), limits.max_string_length)
        return GovernanceRecord(  # positional, in the field order: one per governance action
            event_id,
            known.event_type,
            known.governance_hash,
            known.hash_type,
            known.leaf_count,
            known.denied,
            known.classification,
            known.agent_id,
            time_ns,
            known.resources,
            known.invalid + unfit,
        )

    def gen_ai_facts(self, attributes: Mapping[str, Any] | None) -> GenAIFacts | None:
        """``gen_ai_facts_of`` the attributes, read once per distinct content they are read from:
        the convention keys present and their values. Every value the conventions read that is
        not a string is unfit, so equal values of other types (``1``, ``True``) read alike. Only
        ``_keepable`` contents are remembered (not a long LangChain ``metadata``); unhashable
        values are read afresh."""
        if not attributes or ROLE_KEYS.isdisjoint(attributes):
            return None
        keys = tuple(filter(_CONVENTION_KEYS.__contains__, attributes))
        content = (keys, tuple(map(attributes.__getitem__, keys)))
        try:
            known = self._gen_ai_facts_by_content.get(content)
        except TypeError:  # an unhashable value (a list): read afresh
            return gen_ai_facts_of(attributes, self._limits)
        if known is None:
            known = gen_ai_facts_of(attributes, self._limits)
            if all(_keepable(value, self._limits.max_string_length) for value in content[1]):
                self._gen_ai_facts_by_content.remember(content, known)
        return known

    def resource(self, attributes: Mapping[str, Any]) -> ResourceFacts:
        """The facts of a Resource's attributes, read again only when another mapping comes."""
        known = self._resource
        if known is None or known.attributes is not attributes:
            known = self._resource = resource_facts(attributes, self._limits)
        return known

    def span(self, note: SpanNote) -> SpanFacts:
        local_root = note.local_root
        records = (
            records_from_note(note, self._limits, self.event_record)
            if note.governance_events or note.governed_attributes
            else []
        )
        gen_ai = self.gen_ai_facts(note.attributes)
        if gen_ai is not None and gen_ai.tool is not None:  # records on a tool span are about its tool
            records = [about_tool(record, gen_ai.tool) for record in records]
        return SpanFacts(  # positional, in the field order: one per noted span
            note.trace_id,
            note.span_id if local_root else note.local_root_id,
            span_name(note.name, note.attributes),
            note.start_ns,
            note.end_ns,
            self.resource(note.resource),
            records,
            root_facts(note, self._limits) if local_root else None,
            note.span_id,
            note.parent_span_id,
            gen_ai,
        )
