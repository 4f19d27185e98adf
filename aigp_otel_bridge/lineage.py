"""Build: a decided run becomes an OpenLineage 2-0-2 ``RunEvent`` (bridge contract, section 3).

``decide`` names the run (identity, job, times) from what correlation found; ``build_run_event``
gives it its OpenLineage shape with ``openlineage.client.event_v2`` and the AIGP facets. Both are
pure; ``build_run_event`` is called afresh for every delivery attempt because
``OpenLineageClient.emit`` mutates the event it is given.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from openlineage.client.constants import __version__ as openlineage_version
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.generated.nominal_time_run import NominalTimeRunFacet
from openlineage.client.generated.processing_engine_run import ProcessingEngineRunFacet
from openlineage.client.serde import Serde

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.aggregate import RunSummary
from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.correlate import FinishedTrace, Reason
from aigp_otel_bridge.facets import (
    GOVERNANCE_FACET_KEY,
    RESOURCE_FACET_KEY,
    AIGPGovernanceRunFacet,
    AIGPResourceInputFacet,
)
from aigp_otel_bridge.records import ErrorInfo, RootInfo, SpanNote, error_of
from aigp_otel_bridge.telemetry import RateLimitedLog, describe, shorten
from aigp_otel_bridge.version import __version__

_log = logging.getLogger(__name__)
_job_name_log = RateLimitedLog(_log)

ENGINE_NAME = "aigp-otel-bridge"

RUN_ID_NAMESPACE = uuid.UUID("8c6b3c0e-5a7d-5d8e-9f0a-4b1c2d3e4f50")
"""Namespace of the name-based (uuid5) run ids: trace ids that are neither 32 hex nor a UUID,
and local roots whose parent is remote (``"<trace hex>/<span hex>"``)."""

_UUID_FORM = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def run_id_for_trace(trace_id: str) -> str:
    """The run id of a trace: its id as a canonical UUID, else a uuid5 of the (UTF-8-safe) text."""
    if sc.OTEL_TRACE_ID.fullmatch(trace_id):
        return str(uuid.UUID(hex=trace_id))
    if _UUID_FORM.fullmatch(trace_id):
        return str(uuid.UUID(trace_id))
    return str(uuid.uuid5(RUN_ID_NAMESPACE, sc.clean_text(trace_id)))


def run_id_for_remote_root(trace_hex: str, span_hex: str) -> str:
    """The run id of a local root whose parent is remote: its own, never the trace's."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{trace_hex}/{span_hex}"))


def iso_millis(time_ns: int | None) -> str:
    """UTC, millisecond precision, ``Z``: the form OpenLineage backends parse most reliably."""
    try:
        if time_ns is None:
            raise ValueError
        moment = datetime.fromtimestamp(time_ns // 1_000_000 / 1000, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        moment = datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class DecidedRun:
    """One run, named and summarised, ready to be built (again, on every attempt)."""

    run_id: str
    trace_id: str
    event_type: RunState
    event_time_ns: int | None
    complete: bool
    job_namespace: str
    job_name: str
    resource_namespace: str
    agent_id: str
    nominal_start_ns: int | None
    nominal_end_ns: int | None
    summary: RunSummary
    error: ErrorInfo | None = None


def job_name_for(agent_id: str | None, service_name: str | None, span_name: str) -> str:
    """``<agent>.<span name>``: the agent id without ``agent.``, else the service name."""
    agent = agent_id[len("agent.") :] if agent_id and agent_id.startswith("agent.") else agent_id
    return f"{agent or service_name or 'unknown_service'}.{span_name}"


def _text(mapping: Mapping[str, Any] | None, key: str) -> str | None:
    """An identity value (agent id, service name) fit to appear in a RunEvent, else None."""
    value = mapping.get(key) if mapping is not None else None
    if isinstance(value, str) and value and len(value) <= _MAX_IDENTITY and sc.utf8_safe(value):
        return value
    return None


_MAX_IDENTITY = 1024


def decide(finished: FinishedTrace, summary: RunSummary, config: BridgeConfig) -> DecidedRun:
    """Name a decided trace's run: identity from its first local root, job from config or root."""
    trace_hex = f"{finished.key:032x}" if isinstance(finished.key, int) else sc.clean_text(finished.key)
    roots = finished.roots
    first_root = roots[0] if roots else None
    if finished.root_start is not None:
        root_span_id, remote = finished.root_start
    elif first_root is not None:
        root_span_id, remote = first_root.span_id, first_root.remote_parent
    else:
        root_span_id, remote = 0, False
    run_id = (
        run_id_for_remote_root(trace_hex, f"{root_span_id:016x}") if remote else run_id_for_trace(trace_hex)
    )
    resource = first_root.resource if first_root is not None else finished.resource
    root_agent = _text(first_root.attributes, sc.AGENT_ID) if first_root else None
    agent_id = (
        root_agent
        or _text(resource, sc.AGENT_ID)
        or summary.first_agent_id
        or _text(resource, sc.SERVICE_NAME)
        or "unknown_service"
    )
    span_name = sc.clean_text(
        first_root.name if first_root is not None else finished.first_span_name or "session"
    )
    job_name = _job_name(config, first_root, resource, agent_id, trace_hex, span_name)
    job_namespace = config.job_namespace or _text(resource, sc.SERVICE_NAMESPACE) or "default"
    error = None
    if finished.reason is Reason.ROOT_ENDED:
        error = next((e for e in (error_of(r, config.limits) for r in roots) if e is not None), None)
        event_type = RunState.FAIL if error is not None else RunState.COMPLETE
        event_time = max(r.end_ns for r in roots) if roots else finished.last_end_ns
    else:
        event_type = RunState.RUNNING
        event_time = finished.last_end_ns or summary.latest_time_ns
    return DecidedRun(
        run_id=run_id,
        trace_id=trace_hex,
        event_type=event_type,
        event_time_ns=event_time,
        complete=finished.complete,
        job_namespace=job_namespace,
        job_name=job_name,
        resource_namespace=config.resource_namespace or job_namespace,
        agent_id=agent_id,
        nominal_start_ns=min(r.start_ns for r in roots) if roots else finished.first_start_ns,
        nominal_end_ns=event_time if roots else None,
        summary=summary,
        error=error,
    )


def _job_name(
    config: BridgeConfig,
    root: SpanNote | None,
    resource: Mapping[str, Any] | None,
    agent_id: str,
    trace_hex: str,
    span_name: str,
) -> str:
    setting = config.job_name
    if isinstance(setting, str):
        return setting
    default = job_name_for(agent_id, _text(resource, sc.SERVICE_NAME), span_name)[: config.max_string_length]
    if setting is None or root is None:
        return default
    info = RootInfo(  # read-only views: these are the span's and the Resource's own dicts
        name=root.name,
        attributes=MappingProxyType(dict(root.attributes or {})),
        resource=MappingProxyType(dict(resource or {})),
        agent_id=agent_id,  # already the root's own aigp.agent.id when it has one
        trace_id=trace_hex,
    )
    try:
        name = setting(info)
    except Exception as error:  # a user callable must not cost the run
        _job_name_log.log(
            logging.WARNING, "job_name", "job_name callable raised %s; using %r", describe(error), default
        )
        return default
    limit = config.max_string_length
    if not isinstance(name, str) or not name or len(name) > limit:
        shown = (
            f"a text of {len(name)} characters (max_string_length {limit})"
            if isinstance(name, str) else f"a {type(name).__name__}"
        )
        _job_name_log.log(
            logging.WARNING, "job_name", "job_name callable returned %s; using %r", shown, shorten(default)
        )
        return default
    return sc.clean_text(name)


@lru_cache(maxsize=8)
def _job_type(producer: str) -> JobTypeJobFacet:
    return JobTypeJobFacet(processingType="BATCH", integration="AIGP", jobType="AGENT", producer=producer)


@lru_cache(maxsize=8)
def _engine(producer: str) -> ProcessingEngineRunFacet:
    """Constant per producer; shared by every event (``emit`` adds facets, it never changes ours)."""
    return ProcessingEngineRunFacet(
        version=__version__,
        name=ENGINE_NAME,
        openlineageAdapterVersion=openlineage_version,
        producer=producer,
    )


def build_governance_facet(run: DecidedRun, producer: str) -> AIGPGovernanceRunFacet:
    summary = run.summary
    agent_ids = sorted({*summary.agent_ids, run.agent_id}) if summary.agent_ids else []
    return AIGPGovernanceRunFacet(
        governanceHash=summary.governance_hash,
        hashType=summary.hash_type,
        leafCount=summary.leaf_count,
        agentId=run.agent_id,
        traceId=run.trace_id,
        enforcementResult=summary.enforcement,
        dataClassification=summary.classification,
        eventCount=summary.event_count,
        deniedEventCount=summary.denied_count,
        complete=run.complete,
        agentIds=agent_ids if len(agent_ids) > 1 else None,
        producer=producer,
    )


def build_inputs(run: DecidedRun, producer: str) -> list[InputDataset]:
    inputs = []
    for resource in run.summary.resources:
        leaf = resource.leaf_hashes
        content = resource.content_hashes
        facet = AIGPResourceInputFacet(
            resourceType=resource.type,
            resourceName=resource.name,
            resourceVersion=resource.version,
            observedVersions=list(resource.observed_versions) or None,
            leafHash=leaf[0] if len(leaf) == 1 else None,
            leafHashes=list(leaf) if len(leaf) > 1 else None,
            contentHash=content[0] if len(content) == 1 else None,
            contentHashes=list(content) if len(content) > 1 else None,
            producer=producer,
        )
        inputs.append(
            InputDataset(
                namespace=run.resource_namespace,
                name=resource.name,
                inputFacets={RESOURCE_FACET_KEY: facet},
            )
        )
    return inputs


def run_event_from_json(payload: str) -> RunEvent:
    """A stored RunEvent (the outbox's JSON) as an object the client will emit unchanged.

    Facets stay plain dicts: the client's ``Serde`` writes them as they are, so the replayed
    event has the same fields as the one first attempted.
    """
    document = json.loads(payload)
    run, job = document["run"], document["job"]
    return RunEvent(
        eventType=RunState(document["eventType"]),
        eventTime=document["eventTime"],
        run=Run(runId=run["runId"], facets=run.get("facets") or {}),
        job=Job(namespace=job["namespace"], name=job["name"], facets=job.get("facets") or {}),
        inputs=[
            InputDataset(
                namespace=d["namespace"], name=d["name"], facets=d.get("facets") or {},
                inputFacets=d.get("inputFacets") or {},
            )
            for d in document.get("inputs") or []
        ],
        outputs=[
            OutputDataset(
                namespace=d["namespace"], name=d["name"], facets=d.get("facets") or {},
                outputFacets=d.get("outputFacets") or {},
            )
            for d in document.get("outputs") or []
        ],
        producer=document["producer"],
    )


def run_event_json(run: DecidedRun, producer: str) -> str:
    """The RunEvent of a run as JSON, built afresh (never from an event ``emit`` has touched)."""
    return Serde.to_json(build_run_event(run, producer))


def build_run_event(run: DecidedRun, producer: str, *, with_error: bool = True) -> RunEvent:
    """The RunEvent of a decided run, built with the client's own classes."""
    run_facets: dict[str, Any] = {
        GOVERNANCE_FACET_KEY: build_governance_facet(run, producer),
        "processing_engine": _engine(producer),
    }
    if run.nominal_start_ns is not None:
        run_facets["nominalTime"] = NominalTimeRunFacet(
            nominalStartTime=iso_millis(run.nominal_start_ns),
            nominalEndTime=iso_millis(run.nominal_end_ns) if run.nominal_end_ns is not None else None,
            producer=producer,
        )
    if with_error and run.error is not None:
        run_facets["errorMessage"] = ErrorMessageRunFacet(
            message=run.error.message,
            programmingLanguage="python",
            stackTrace=run.error.stack_trace,
            producer=producer,
        )
    return RunEvent(
        eventType=run.event_type,
        eventTime=iso_millis(run.event_time_ns),
        run=Run(runId=run.run_id, facets=run_facets),
        job=Job(namespace=run.job_namespace, name=run.job_name, facets={"jobType": _job_type(producer)}),
        inputs=build_inputs(run, producer),
        outputs=[],
        producer=producer,
    )
