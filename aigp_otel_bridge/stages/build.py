"""Build: a closed run becomes an OpenLineage 2-0-2 ``RunEvent`` (bridge contract, section 3).

``name_run`` combines what correlation closed and aggregation summarised into a ``DecidedRun``
(identity, job, times, state) from the facts extraction computed. What only the process knows (the
job a propagated identity fixed for a local root's run, and the run that called it) comes from
the ``run_link`` its caller passes: this module reads no process-global registry.

``build_run_event`` gives a decided run its one OpenLineage shape: the client's ``RunEvent``, each
facet an object of its class (the client's generated facets; ``facets.py`` for AIGP's), made
through their constructors. Everything else is derived from that object with the client's
``Serde``: the builder API's dicts (``Serde.to_dict``) and the outbox row (``Serde.to_json``).
Delivery builds the event afresh for each attempt, because ``OpenLineageClient.emit`` adds facets
to the event it is given.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Protocol

from openlineage.client.constants import __version__ as openlineage_version
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated import base as client_base
from openlineage.client.generated.base import JobFacet, RunFacet
from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.generated.nominal_time_run import NominalTimeRunFacet
from openlineage.client.generated.processing_engine_run import ProcessingEngineRunFacet

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.facets import (
    GOVERNANCE_FACET_KEY,
    RESOURCE_FACET_KEY,
    AIGPGovernanceRunFacet,
    AIGPResourceInputFacet,
)
from aigp_otel_bridge.propagated_links import (
    RunParent,
    parent_run_facet,
    run_id_for_remote_root,
    run_id_for_trace,
)
from aigp_otel_bridge.stages.aggregate import ResourceSummary, RunSummary
from aigp_otel_bridge.stages.correlate import ClosedRun, Reason
from aigp_otel_bridge.stages.extract import ErrorInfo, ResourceFacts, RootFacts, RootInfo
from aigp_otel_bridge.telemetry import RateLimitedLog, describe, shorten
from aigp_otel_bridge.version import __version__

_log = logging.getLogger(__name__)
_job_name_log = RateLimitedLog(_log)

ENGINE_NAME = "aigp-otel-bridge"


def iso_millis(time_ns: int | None) -> str:
    """UTC, millisecond precision, ``Z``: the form OpenLineage backends parse most reliably.
    Exact integer arithmetic on the whole milliseconds; no time, or one out of range, is now."""
    try:
        if time_ns is None:
            raise ValueError
        moment = _EPOCH + timedelta(0, 0, 0, time_ns // 1_000_000)
    except (ValueError, OverflowError):
        moment = datetime.now(timezone.utc).replace(tzinfo=None)
    return moment.isoformat("T", "milliseconds") + "Z"


_EPOCH = datetime(1970, 1, 1)
"""Naive UTC: ``isoformat`` then writes no offset, and ``Z`` follows."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DecidedRun:
    """One run, named and summarised, ready to be built (again, on every delivery attempt).
    Made once per run; a changed copy is made with ``dataclasses.replace``."""

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
    parent: RunParent | None = None
    """The caller's run and the chain's root (section 8); None for a top-level run."""


def job_name_for(agent_id: str | None, service_name: str | None, span_name: str) -> str:
    """``<agent>.<span name>``: the agent id without ``agent.``, else the service name."""
    agent = agent_id[len("agent.") :] if agent_id and agent_id.startswith("agent.") else agent_id
    return f"{agent or service_name or 'unknown_service'}.{span_name}"


class RunLink(Protocol):
    """What the process knows of a local root's run beyond its spans (``RunLinks.run_link``)."""

    def __call__(
        self, trace_id: int | str, span_id: int, remote: bool, job: tuple[str, str]
    ) -> tuple[tuple[str, str], RunParent | None]:
        """The run's job ``(namespace, name)``, ``job`` unless one was fixed for the root
        earlier, and the run's parent (None for a top-level run with no lineage context)."""
        ...


def name_run(
    closed: ClosedRun, summary: RunSummary, config: BridgeConfig, *, run_link: RunLink
) -> DecidedRun:
    """Name a closed run: identity from its local root, job from config or root (or as
    ``run_link`` fixed it), parent from ``run_link``, times, state."""
    trace_hex = f"{closed.key:032x}" if isinstance(closed.key, int) else sc.clean_text(closed.key)
    root = closed.root
    if closed.root_remote and closed.root_span_id is not None:
        run_id = run_id_for_remote_root(trace_hex, f"{closed.root_span_id:016x}")
    else:
        run_id = run_id_for_trace(trace_hex)
    resource = closed.resource
    agent_id = (
        (root.agent_id if root is not None else None)
        or (resource.agent_id if resource is not None else None)
        or summary.first_agent_id
        or (resource.service_name if resource is not None else None)
        or "unknown_service"
    )
    job = closed.job or job_of(
        config, root, resource, agent_id, trace_hex, closed.first_span_name, closed.agent_name
    )
    (job_namespace, job_name), parent = run_link(
        closed.key, closed.root_span_id or 0, closed.root_remote, job
    )
    error = None
    if closed.reason is Reason.ROOT_ENDED:
        error = root.error if root is not None else None
        event_type = RunState.FAIL if error is not None else RunState.COMPLETE
        event_time = root.end_ns if root is not None else closed.last_end_ns
    elif closed.reason is Reason.LATE:  # the same run, after its terminal event (section 2)
        error = root.error if root is not None else None
        event_type = RunState.OTHER
        event_time = max(filter(None, (root.end_ns if root else None, closed.last_end_ns)), default=None)
    else:
        event_type = RunState.RUNNING
        event_time = closed.last_end_ns or summary.latest_time_ns
    return DecidedRun(
        run_id=run_id,
        trace_id=trace_hex,
        event_type=event_type,
        event_time_ns=event_time,
        complete=closed.complete,
        job_namespace=job_namespace,
        job_name=job_name,
        resource_namespace=config.resource_namespace or job_namespace,
        agent_id=agent_id,
        nominal_start_ns=root.start_ns if root is not None else closed.first_start_ns,
        nominal_end_ns=event_time if root is not None else None,
        summary=summary,
        error=error,
        parent=parent,
    )


def job_of(
    config: BridgeConfig,
    root: RootFacts | None,
    resource: ResourceFacts | None,
    agent_id: str,
    trace_hex: str,
    first_span_name: str | None = None,
    agent_name: str | None = None,
) -> tuple[str, str]:
    """A run's job ``(namespace, name)`` (contract section 6). One rule, whether it is fixed while
    the root runs (its identity propagated: ``agent_name`` of the spans under it is not known yet)
    or when the run is named (``agent_name``: that of the outermost span under the root)."""
    namespace = config.job_namespace or (resource.service_namespace if resource is not None else None)
    task = (
        (root.gen_ai_agent_name or agent_name or root.name) if root is not None
        else (agent_name or first_span_name or "session")
    )
    return namespace or "default", _job_name(config, root, resource, agent_id, trace_hex, task)


def _job_name(
    config: BridgeConfig,
    root: RootFacts | None,
    resource: ResourceFacts | None,
    agent_id: str,
    trace_hex: str,
    task: str,
) -> str:
    setting = config.job_name
    if isinstance(setting, str):
        return setting
    service = resource.service_name if resource is not None else None
    default = job_name_for(agent_id, service, task)[: config.max_string_length]
    if setting is None or root is None:
        return default
    info = RootInfo(  # read-only views: these are the span's and the Resource's own dicts
        name=root.name,
        attributes=MappingProxyType(dict(root.attributes)),
        resource=MappingProxyType(dict(resource.attributes if resource is not None else {})),
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


def governance_facet(run: DecidedRun, producer: str) -> AIGPGovernanceRunFacet:
    """The run's ``aigp_governance`` facet (contract section 4)."""
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
        ungovernedResourceCount=summary.ungoverned_count,
        producer=producer,
    )


def resource_facet(resource: ResourceSummary, producer: str) -> AIGPResourceInputFacet:
    """One input's ``aigp_resource`` facet (contract section 5): a single hash as ``leafHash`` /
    ``contentHash``, several as ``leafHashes`` / ``contentHashes``."""
    leaf, content = resource.leaf_hashes, resource.content_hashes
    return AIGPResourceInputFacet(
        resourceType=resource.type,
        resourceName=resource.name,
        resourceVersion=resource.version,
        observedVersions=list(resource.observed_versions) or None,
        leafHash=leaf[0] if len(leaf) == 1 else None,
        leafHashes=list(leaf) if len(leaf) > 1 else None,
        contentHash=content[0] if len(content) == 1 else None,
        contentHashes=list(content) if len(content) > 1 else None,
        enforcementResult=sc.DENIED if resource.denied else sc.ALLOWED,
        governed=resource.governed,
        provider=resource.provider,
        producer=producer,
    )


@lru_cache(maxsize=8)
def engine_facet(producer: str) -> ProcessingEngineRunFacet:
    """The ``processing_engine`` run facet: the same for every event of a producer, so one object
    is shared by all of them (making the two constant facets anew costs about a fifth of building
    an event). Safe because the client never changes a facet object it is given: ``emit`` only
    adds facets beside it, ``Serde`` and the transform transport copy."""
    return ProcessingEngineRunFacet(
        version=__version__,
        name=ENGINE_NAME,
        openlineageAdapterVersion=openlineage_version,
        producer=producer,
    )


@lru_cache(maxsize=8)
def job_type_facet(producer: str) -> JobTypeJobFacet:
    """The ``jobType`` job facet, shared per producer as ``engine_facet`` is."""
    return JobTypeJobFacet(processingType="BATCH", integration="AIGP", jobType="AGENT", producer=producer)


def build_run_event(run: DecidedRun, producer: str) -> RunEvent:
    """The RunEvent of a decided run: the client's event classes, each facet an object of its
    class, all made through their constructors (so the client's validators run).

    A new event each call (``OpenLineageClient.emit`` adds facets to the event it is given); only
    the two constant facets are shared. An empty ``producer`` is the client's default producer."""
    producer = producer or client_base.PRODUCER  # as the constructors default it, before sharing
    run_facets: dict[str, RunFacet] = {
        GOVERNANCE_FACET_KEY: governance_facet(run, producer),
        "processing_engine": engine_facet(producer),
    }
    if run.nominal_start_ns is not None:
        run_facets["nominalTime"] = NominalTimeRunFacet(
            nominalStartTime=iso_millis(run.nominal_start_ns),
            nominalEndTime=iso_millis(run.nominal_end_ns) if run.nominal_end_ns is not None else None,
            producer=producer,
        )
    if run.parent is not None:
        run_facets["parent"] = parent_run_facet(run.parent, producer)
    if run.error is not None:
        run_facets["errorMessage"] = ErrorMessageRunFacet(
            message=run.error.message,
            programmingLanguage="python",
            stackTrace=run.error.stack_trace,
            producer=producer,
        )
    job_facets: dict[str, JobFacet] = {"jobType": job_type_facet(producer)}
    inputs = [
        InputDataset(
            namespace=run.resource_namespace,
            name=resource.name,
            inputFacets={RESOURCE_FACET_KEY: resource_facet(resource, producer)},
        )
        for resource in run.summary.resources
    ]
    return RunEvent(
        eventType=run.event_type,
        eventTime=iso_millis(run.event_time_ns),
        run=Run(runId=run.run_id, facets=run_facets),
        job=Job(namespace=run.job_namespace, name=run.job_name, facets=job_facets),
        inputs=inputs,
        outputs=[],
        producer=producer,
    )


def run_event_from_json(payload: str) -> RunEvent:
    """A stored RunEvent (an outbox row's JSON) as an object the client will emit unchanged.

    The row may hold facets this version does not know (or an older version wrote), so its
    facets stay the plain dicts they were stored as: the client's ``Serde`` writes a dict as it
    is, and the replayed event has the same fields as the one first attempted.
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
