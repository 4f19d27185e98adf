"""Small shared test data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aigp_otel_bridge.merkle import flat_hash, leaf_hash


def two_leaves() -> list[dict[str, Any]]:
    """The leaves of a Merkle tree over ``policy.a`` (content "A") and ``prompt.b`` (content "B")."""
    return [
        {"resource_type": kind, "resource_name": name, "hash": leaf_hash(kind, name, content)}
        for kind, name, content in (("policy", "policy.a", "A"), ("prompt", "prompt.b", "B"))
    ]


def instrumented_environ(home: Path, **variables: str) -> dict[str, str]:
    """The environment of an ``opentelemetry-instrument`` subprocess: this one's without any
    OpenTelemetry, OpenLineage or bridge setting, its own ``HOME`` (no ``~/.openlineage``), no
    metrics or logs exporter, then ``variables``."""
    own = ("OTEL_", "OPENLINEAGE", "AIGP_BRIDGE_")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    environ.update(HOME=str(home), OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    environ.update(variables)
    return environ


def store_event(number: int = 0, **fields: object) -> dict[str, Any]:
    """A full AIGP event as the governance store keeps it (a policy inject, ``event_id`` numbered
    ``number``), with ``fields`` set over it."""
    event: dict[str, Any] = {
        "event_id": f"00000000-0000-4000-8000-{number:012d}",
        "event_type": "INJECT_SUCCESS",
        "event_time": "2026-02-15T10:30:00.456Z",
        "agent_id": "agent.trading-bot-v2",
        "policy_name": "policy.trading-limits",
        "policy_version": 4,
        "governance_hash": flat_hash("policy content"),
        "hash_type": "sha256",
        "data_classification": "confidential",
    }
    event.update(fields)
    return event
