"""The builder API on full AIGP events (the JSON a governance store keeps).

Same names as the reference SDK's helpers, but one RunEvent per session, canonical UUID run
ids and always schema-valid output, because they share the processor's extraction, aggregation
and build code: each dict is the client's ``Serde.to_dict`` of a facet or RunEvent built by
``stages/build.py``, as the processor delivers them; a new dict each call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from openlineage.client.event_v2 import RunState
from openlineage.client.serde import Serde

from aigp_otel_bridge.config import DEFAULT_PRODUCER
from aigp_otel_bridge.propagated_links import run_id_for_trace
from aigp_otel_bridge.semconv import clean_text
from aigp_otel_bridge.stages.aggregate import RunSummary, aggregate
from aigp_otel_bridge.stages.build import DecidedRun, build_run_event, governance_facet, resource_facet
from aigp_otel_bridge.stages.extract import records_from_aigp_events

AIGPEvent = Mapping[str, Any]

__all__ = [
    "build_governance_run_facet",
    "build_openlineage_run_event",
    "build_resource_input_facets",
    "records_from_aigp_events",
]


def _session(events: AIGPEvent | Iterable[AIGPEvent]) -> list[AIGPEvent]:
    """The events as a list: one mapping, or an iterable of them."""
    session = [events] if isinstance(events, Mapping) else list(events)
    if not session:
        raise ValueError("no AIGP events given")
    for event in session:
        if not isinstance(event, Mapping):
            raise TypeError(f"an AIGP event must be a mapping, got {type(event).__name__}")
    return session


def _trace_id(session: list[AIGPEvent]) -> str:
    ids = {event.get("trace_id") for event in session}
    if len(ids) != 1:
        raise ValueError(f"AIGP events of one session share one trace_id; got {len(ids)}")
    (trace_id,) = ids
    if not isinstance(trace_id, str) or not trace_id:
        raise ValueError("an AIGP event needs a non-empty string trace_id")
    return trace_id


def _session_run(
    events: AIGPEvent | Iterable[AIGPEvent],
    job_namespace: str,
    job_name: str,
    run_id: str | None = None,
    event_type: str = "COMPLETE",
) -> DecidedRun:
    session = _session(events)
    trace_id = _trace_id(session)
    summary: RunSummary = aggregate(records_from_aigp_events(session))
    agent_id = summary.first_agent_id or "unknown_agent"
    return DecidedRun(
        run_id=run_id or run_id_for_trace(trace_id),
        trace_id=clean_text(trace_id),
        event_type=RunState(event_type),
        event_time_ns=summary.latest_time_ns,
        complete=True,
        job_namespace=job_namespace,
        job_name=job_name,
        resource_namespace=job_namespace,
        agent_id=agent_id,
        nominal_start_ns=summary.earliest_time_ns,
        nominal_end_ns=summary.latest_time_ns,
        summary=summary,
    )


def build_governance_run_facet(
    aigp_event: AIGPEvent | Iterable[AIGPEvent], *, producer: str = DEFAULT_PRODUCER
) -> dict[str, Any]:
    """The ``aigp_governance`` run facet of one event or of one session's events."""
    run = _session_run(aigp_event, "default", "session")
    return Serde.to_dict(governance_facet(run, producer))


def build_resource_input_facets(
    aigp_event: AIGPEvent | Iterable[AIGPEvent], *, producer: str = DEFAULT_PRODUCER
) -> list[dict[str, Any]]:
    """One ``aigp_resource`` input facet per governed resource of the event(s)."""
    run = _session_run(aigp_event, "default", "session")
    return [Serde.to_dict(resource_facet(resource, producer)) for resource in run.summary.resources]


def build_openlineage_run_event(
    aigp_event: AIGPEvent | Iterable[AIGPEvent],
    job_namespace: str,
    job_name: str,
    run_id: str | None = None,
    event_type: str = "COMPLETE",
    *,
    producer: str = DEFAULT_PRODUCER,
) -> dict[str, Any]:
    """A complete RunEvent dict for one session: run id from the trace id, unless given."""
    run = _session_run(aigp_event, job_namespace, job_name, run_id, event_type)
    return Serde.to_dict(build_run_event(run, producer))
