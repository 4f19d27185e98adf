"""The ``aigp.*`` vocabulary the bridge reads, and the orderings it relies on.

Kept in one module so that extraction, aggregation and tests agree on every key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "aigp."

# Identity keys: present on every span of an instrumented process, so they never make a record.
AGENT_ID: Final = "aigp.agent.id"
AGENT_NAME: Final = "aigp.agent.name"
ORG_ID: Final = "aigp.org.id"
ORG_NAME: Final = "aigp.org.name"
IDENTITY_PREFIXES: Final = ("aigp.agent.", "aigp.org.")

EVENT_ID: Final = "aigp.event.id"
EVENT_TYPE: Final = "aigp.event.type"
GOVERNANCE_HASH: Final = "aigp.governance.hash"
GOVERNANCE_HASH_TYPE: Final = "aigp.governance.hash_type"
MERKLE_LEAF_COUNT: Final = "aigp.governance.merkle.leaf_count"
DATA_CLASSIFICATION: Final = "aigp.data.classification"
ENFORCEMENT_RESULT: Final = "aigp.enforcement.result"

POLICY_NAME: Final = "aigp.policy.name"
POLICY_VERSION: Final = "aigp.policy.version"
PROMPT_NAME: Final = "aigp.prompt.name"
PROMPT_VERSION: Final = "aigp.prompt.version"

# Singular resource attributes: (resource type, name key, version key).
SINGLE_RESOURCES: Final = (
    ("policy", POLICY_NAME, POLICY_VERSION),
    ("prompt", PROMPT_NAME, PROMPT_VERSION),
)

# Array resource attributes: (resource type, names key, positional versions key or None).
ARRAY_RESOURCES: Final = (
    ("policy", "aigp.policies.names", "aigp.policies.versions"),
    ("prompt", "aigp.prompts.names", "aigp.prompts.versions"),
    ("tool", "aigp.tools.names", None),
    ("context", "aigp.contexts.names", None),
    ("lineage", "aigp.lineages.names", None),
    ("memory", "aigp.memories.names", None),
    ("model", "aigp.models.names", None),
)

# The 22 span event names of the AIGP OpenTelemetry binding and their AIGP event types.
SPAN_EVENT_TYPES: Final[dict[str, str]] = {
    "aigp.inject.success": "INJECT_SUCCESS",
    "aigp.inject.denied": "INJECT_DENIED",
    "aigp.prompt.used": "PROMPT_USED",
    "aigp.prompt.denied": "PROMPT_DENIED",
    "aigp.policy.violation": "POLICY_VIOLATION",
    "aigp.governance.proof": "GOVERNANCE_PROOF",
    "aigp.a2a.call": "A2A_CALL",
    "aigp.memory.read": "MEMORY_READ",
    "aigp.memory.written": "MEMORY_WRITTEN",
    "aigp.tool.invoked": "TOOL_INVOKED",
    "aigp.tool.denied": "TOOL_DENIED",
    "aigp.context.captured": "CONTEXT_CAPTURED",
    "aigp.lineage.snapshot": "LINEAGE_SNAPSHOT",
    "aigp.inference.started": "INFERENCE_STARTED",
    "aigp.inference.completed": "INFERENCE_COMPLETED",
    "aigp.inference.blocked": "INFERENCE_BLOCKED",
    "aigp.human.override": "HUMAN_OVERRIDE",
    "aigp.human.approval": "HUMAN_APPROVAL",
    "aigp.classification.changed": "CLASSIFICATION_CHANGED",
    "aigp.model.loaded": "MODEL_LOADED",
    "aigp.model.switched": "MODEL_SWITCHED",
    "aigp.boundary.unverified": "UNVERIFIED_BOUNDARY",
}

ALLOWED: Final = "allowed"
DENIED: Final = "denied"
DENIAL_MARKERS: Final = ("DENIED", "VIOLATION", "BLOCKED")

# Classification order: a higher rank is more sensitive.
CLASSIFICATION_RANK: Final[dict[str, int]] = {
    "public": 0,
    "internal": 1,
    "confidential": 2,
    "restricted": 3,
}

HASH_TYPES: Final = frozenset({"sha256", "merkle-sha256", "sha384", "sha512"})
"""The ``hash_type`` values AIGP defines; any other is left out and counted."""
SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
OTEL_TRACE_ID: Final = re.compile(r"[0-9a-fA-F]{32}")
"""A trace id in OpenTelemetry's form: 32 hex digits (AIGP writes them lowercase)."""
OTEL_SPAN_ID: Final = re.compile(r"[0-9a-fA-F]{16}")
EVENT_TYPE_PATTERN: Final = re.compile(r"[A-Z][A-Z0-9_]*")
RESOURCE_TYPE_PATTERN: Final = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

# OpenTelemetry keys the bridge reads.
SERVICE_NAME: Final = "service.name"
SERVICE_NAMESPACE: Final = "service.namespace"
EXCEPTION_EVENT: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"
"""The provider's name before the conventions renamed it ``gen_ai.provider.name``."""
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
TRACELOOP_SPAN_KIND: Final = "traceloop.span.kind"
TRACELOOP_ENTITY_NAME: Final = "traceloop.entity.name"
LOGFIRE_MSG_TEMPLATE: Final = "logfire.msg_template"
LOGFIRE_MSG: Final = "logfire.msg"
"""A logfire span's name is its message template; ``logfire.msg`` is the message filled in."""

TOOL: Final = "tool"
MODEL: Final = "model"
AGENT: Final = "agent"
"""The roles a span can have in an agent's work (contract section 9)."""


@dataclass(frozen=True, slots=True)
class Role:
    """How one convention marks one role on a span, and where it writes the role's name."""

    name_keys: tuple[str, ...]
    """Attributes that hold the name (tool, model or agent), the first one set wins."""
    kinds: frozenset[str] = frozenset()
    """Values of the convention's kind attribute that give a span this role; empty for a
    convention without one, whose spans have the role when a name key is present."""
    json_names: tuple[tuple[str, str], ...] = ()
    """(attribute holding a JSON object, its field): a name some instrumentations write only there."""


@dataclass(frozen=True, slots=True)
class Convention:
    """One span convention of agent instrumentation: how its tool, model and agent spans are
    recognised and which attributes carry their names and the model's provider. Adding a
    convention is one entry in ``CONVENTIONS``; extraction and capture derive the rest."""

    name: str
    kind_key: str | None
    """The attribute whose value says a span's role; None: a name key's presence does."""
    tool: Role | None = None
    model: Role | None = None
    agent: Role | None = None
    provider_keys: tuple[str, ...] = ()
    """Where the model's provider is written, the first one set wins."""

    def roles(self) -> tuple[tuple[str, Role], ...]:
        """(role, how it is marked) for each role the convention marks."""
        marked = ((TOOL, self.tool), (MODEL, self.model), (AGENT, self.agent))
        return tuple((role, how) for role, how in marked if how is not None)


CONVENTIONS: Final = (
    Convention(
        "OpenTelemetry GenAI",
        kind_key=None,
        tool=Role((GEN_AI_TOOL_NAME,)),
        model=Role((GEN_AI_RESPONSE_MODEL, GEN_AI_REQUEST_MODEL)),  # the response model is what ran
        agent=Role((GEN_AI_AGENT_NAME,)),
        provider_keys=(GEN_AI_PROVIDER_NAME, GEN_AI_SYSTEM),
    ),
    Convention(
        "OpenInference",
        kind_key=OPENINFERENCE_SPAN_KIND,
        tool=Role(("tool.name",), frozenset({"TOOL"})),
        model=Role(("llm.model_name",), frozenset({"LLM"})),
        agent=Role(
            ("agent.name", "graph.node.id"), frozenset({"AGENT"}), json_names=(("metadata", "lc_agent_name"),)
        ),
        provider_keys=("llm.provider", "llm.system"),
    ),
    Convention(
        "OpenLLMetry",
        kind_key=TRACELOOP_SPAN_KIND,
        tool=Role((TRACELOOP_ENTITY_NAME,), frozenset({"tool"})),
        agent=Role((TRACELOOP_ENTITY_NAME,), frozenset({"agent"})),
    ),
    Convention(
        "logfire",
        kind_key=LOGFIRE_MSG_TEMPLATE,
        tool=Role(("name",), frozenset({"Function: {name}"})),
        agent=Role(("name",), frozenset({"Agent run: {name!r}"})),
    ),
)
"""The span conventions the bridge reads, in the order they are consulted (contract section 9):
the first convention that gives a span a role names it. Models and providers of OpenLLMetry and
logfire spans are written with the GenAI names, so the first entry reads them."""

GEN_AI_KEYS: Final = (
    GEN_AI_AGENT_NAME,
    GEN_AI_TOOL_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_SYSTEM,
)
"""The GenAI attributes the bridge reads (the first convention's keys)."""
GEN_AI_MARKERS: Final = frozenset(GEN_AI_KEYS[:4])
"""Keys that make a span matter to a run: an agent, a tool or a model (a provider alone does not)."""


def _read_keys() -> tuple[str, ...]:
    keys: dict[str, None] = {}
    for convention in CONVENTIONS:
        if convention.kind_key is not None:
            keys[convention.kind_key] = None
        for _, how in convention.roles():
            keys.update(dict.fromkeys(how.name_keys))
            keys.update(dict.fromkeys(key for key, _ in how.json_names))
        keys.update(dict.fromkeys(convention.provider_keys))
    keys[LOGFIRE_MSG] = None
    return tuple(keys)


CONVENTION_KEYS: Final = _read_keys()
"""Every attribute the conventions are read from (and ``logfire.msg``, a template span's name):
a span note keeps only these of a span that carries no governance data, never its messages."""
KIND_KEYS: Final = frozenset(c.kind_key for c in CONVENTIONS if c.kind_key is not None)
"""Attributes whose value says a span's role."""
ROLE_OF_KIND: Final[dict[tuple[str, str], str]] = {
    (c.kind_key, kind): role
    for c in CONVENTIONS
    if c.kind_key is not None
    for role, how in c.roles()
    for kind in how.kinds
}
"""(kind attribute, value) -> the role it marks."""
MARKER_ROLES: Final[dict[str, str]] = {
    key: role for c in CONVENTIONS if c.kind_key is None for role, how in c.roles() for key in how.name_keys
}
"""Name keys that mark a role by being present (conventions without a kind attribute) -> the role."""
MODEL_KEYS: Final = tuple(
    dict.fromkeys(
        key
        for c in CONVENTIONS
        if c.model is not None
        for key in (*c.model.name_keys, *c.provider_keys)
    )
)
"""Attributes that say which model (and provider) a model span called."""


# Version of the AIGP facet schemas the bridge emits (copies in tests/data/schemas/aigp).
AIGP_FACET_SPEC_VERSION: Final = "0.8.0"
AIGP_FACET_SCHEMA_BASE: Final = (
    "https://github.com/sandarb-ai/aigp/blob/v0.8.0/integrations/openlineage/facets/"
)


def is_denied(event_type: str | None, enforcement_result: object) -> bool:
    """Apply the AIGP enforcement rule: an explicit result wins, else the event type decides."""
    if enforcement_result == DENIED:
        return True
    if enforcement_result == ALLOWED:
        return False
    if not event_type:
        return False
    return any(marker in event_type for marker in DENIAL_MARKERS)


def utf8_safe(text: str) -> bool:
    """True when the text can be written as UTF-8 (no lone surrogates), as JSON consumers need."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """Text that must appear (a span name, a trace id as written), made UTF-8-safe."""
    return text if utf8_safe(text) else text.encode("utf-8", "replace").decode("utf-8")
