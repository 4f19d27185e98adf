"""The ``aigp.*`` vocabulary the bridge reads, and the orderings it relies on.

Kept in one module so that extraction, aggregation and tests agree on every key.
"""

from __future__ import annotations

import re
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
GEN_AI_KEYS: Final = (
    GEN_AI_AGENT_NAME,
    GEN_AI_TOOL_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_SYSTEM,
)
"""The GenAI attributes the bridge reads (contract section 9); a span note keeps only these of a
span that carries no governance data."""
GEN_AI_MARKERS: Final = frozenset(GEN_AI_KEYS[:4])
"""Keys that make a span matter to a run: an agent, a tool or a model (a provider alone does not)."""

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
