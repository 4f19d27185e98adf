"""Build: a closed run becomes an OpenLineage 2-0-2 ``RunEvent`` (bridge contract, section 3).

``name_run`` combines what correlation closed and aggregation summarised into a ``DecidedRun``
(identity, job, times, state) from the facts extraction computed; ``build_run_event`` gives it
its OpenLineage shape: an ``openlineage.client.event_v2.RunEvent``. Both are pure;
``build_run_event`` is called afresh for every delivery attempt because
``OpenLineageClient.emit`` mutates the event it is given.

The facets are defined by their classes (``facets.py`` and the client's generated facets);
``class_built_run_event`` builds an event with them. Their validators cost three times as much
as writing the same values into a dict, so the facets are built as dicts: the builder API and
the outbox use them as they are (``run_event_dict``, as ``Serde.to_dict`` would give it), and
delivery hands the client each as a ``FacetRecord``, the shape its ``Serde`` copies at least
cost. Tests hold all three byte-identical.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from attr import fields as attrs_fields
from openlineage.client.constants import __version__ as openlineage_version
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated import base as client_base
from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.generated.nominal_time_run import NominalTimeRunFacet
from openlineage.client.generated.processing_engine_run import ProcessingEngineRunFacet
from openlineage.client.serde import Serde

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.facets import (
    GOVERNANCE_FACET_KEY,
    RESOURCE_FACET_KEY,
    AIGPGovernanceRunFacet,
    AIGPResourceInputFacet,
    FacetRecord,
    facet_record,
)
from aigp_otel_bridge.propagated_links import (
    RUN_LINKS,
    RunParent,
    parent_run_facet,
    run_id_for_remote_root,
    run_id_for_trace,
)
from aigp_otel_bridge.semconv import AIGP_FACET_SPEC_VERSION
from aigp_otel_bridge.stages.aggregate import RunSummary
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


@dataclass(slots=True)
class DecidedRun:
    """One run, named and summarised, ready to be built (again, on every attempt). Treated as
    immutable (a changed copy is made with ``dataclasses.replace``); not frozen, because a frozen
    dataclass of this size costs twice as much to build, once per run."""

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


def name_run(closed: ClosedRun, summary: RunSummary, config: BridgeConfig) -> DecidedRun:
    """Name a closed run: identity from its local root, job from config or root, times, state."""
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
    (job_namespace, job_name), parent = RUN_LINKS.run_link(
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
        ungovernedResourceCount=summary.ungoverned_count,
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
            enforcementResult=sc.DENIED if resource.denied else sc.ALLOWED,
            governed=resource.governed,
            provider=resource.provider,
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
    """The RunEvent of a run as JSON, as the client's ``Serde.to_json`` writes it."""
    return json.dumps(run_event_dict(run, producer), sort_keys=True)


def build_run_event(run: DecidedRun, producer: str) -> RunEvent:
    """The RunEvent of a decided run: the client's event classes, each facet a ``FacetRecord``
    (the facet dict as an attrs record, which the client's ``Serde`` copies at least cost)."""
    producer = producer or client_base.PRODUCER
    job_facets: dict[str, Any] = {"jobType": _job_type_record(producer)}
    event_time = iso_millis(run.event_time_ns)
    run_facets = _run_facets(run, producer, event_time)
    facets: dict[str, Any] = {key: facet_record(facet) for key, facet in run_facets.items()}
    facets["processing_engine"] = _engine_record(producer)
    job = Job(namespace=run.job_namespace, name=run.job_name, facets=job_facets)
    inputs = []
    for namespace, name, facet in _input_parts(run, producer):
        input_facets: dict[str, Any] = {RESOURCE_FACET_KEY: facet_record(facet)}
        inputs.append(InputDataset(namespace=namespace, name=name, inputFacets=input_facets))
    if _PREVALIDATED and isinstance(run.run_id, str) and _CANONICAL_UUID.fullmatch(run.run_id):
        return _prevalidated_event(run, event_time, facets, job, inputs, producer)
    return RunEvent(
        eventType=run.event_type,
        eventTime=event_time,
        run=Run(runId=run.run_id, facets=facets),
        job=job,
        inputs=inputs,
        outputs=[],
        producer=producer,
    )


_RUN_EVENT_FIELDS = frozenset(
    {"eventTime", "producer", "schemaURL", "run", "job", "eventType", "inputs", "outputs"}
)
_PREVALIDATED = (
    frozenset(a.name for a in attrs_fields(RunEvent)) == _RUN_EVENT_FIELDS
    and frozenset(a.name for a in attrs_fields(Run)) == {"runId", "facets"}
)
"""The client's ``RunEvent`` and ``Run`` have exactly the fields ``_prevalidated_event`` sets; with
any other version of them, every event goes through their constructors."""


def _prevalidated_event(
    run: DecidedRun, event_time: str, facets: dict[str, Any], job: Job, inputs: list[InputDataset],
    producer: str,
) -> RunEvent:
    """The ``RunEvent`` the constructors would make, without re-running their validators.

    ``RunEvent`` and ``Run`` check each event's time with ``dateutil``'s ISO parser, its producer
    and schema URLs with ``urlparse`` and its run id with ``uuid.UUID``: two thirds of an event's
    build, spent on values this module has already made valid (``iso_millis`` writes ISO 8601
    with a time; the run id matched the canonical UUID form; ``producer`` is the bridge's). The
    fields are set as attrs' own ``__init__`` sets them, and ``__attrs_post_init__``'s outcome
    with them (the schema URL). Tests hold these events equal to constructed ones.
    """
    set_field = object.__setattr__
    run_object = object.__new__(Run)
    set_field(run_object, "runId", run.run_id)
    set_field(run_object, "facets", facets)
    event = object.__new__(RunEvent)
    for name, value in (
        ("eventTime", event_time), ("producer", producer), ("schemaURL", _RUN_EVENT_SCHEMA),
        ("run", run_object), ("job", job), ("eventType", run.event_type), ("inputs", inputs), ("outputs", []),
    ):
        set_field(event, name, value)
    return event


def run_event_dict(run: DecidedRun, producer: str) -> dict[str, Any]:
    """``Serde.to_dict(build_run_event(run, producer))``, built directly; owns all its dicts."""
    producer = producer or client_base.PRODUCER
    if not (isinstance(run.run_id, str) and _CANONICAL_UUID.fullmatch(run.run_id)):
        uuid.UUID(run.run_id)  # what ``Run`` checks; ``iso_millis`` always writes a valid eventTime
    event_time = iso_millis(run.event_time_ns)
    run_facets = _run_facets(run, producer, event_time)
    run_facets["processing_engine"] = dict(_engine_dict(producer))
    return {
        "eventTime": event_time,
        "producer": producer,
        "schemaURL": _RUN_EVENT_SCHEMA,
        "eventType": run.event_type.value,
        "run": {"runId": run.run_id, "facets": run_facets},
        "job": {
            "namespace": run.job_namespace,
            "name": run.job_name,
            "facets": {"jobType": dict(_job_type_dict(producer))},
        },
        "inputs": [
            {"namespace": namespace, "name": name, "facets": {}, "inputFacets": {RESOURCE_FACET_KEY: facet}}
            for namespace, name, facet in _input_parts(run, producer)
        ],
        "outputs": [],
    }


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The form run ids are made in; ``uuid.UUID`` accepts it and checks any other."""
_RUN_EVENT_SCHEMA = RunEvent._get_schema()
_GOVERNANCE_SCHEMA = AIGPGovernanceRunFacet._get_schema()
_RESOURCE_SCHEMA = AIGPResourceInputFacet._get_schema()
_NOMINAL_TIME_SCHEMA = NominalTimeRunFacet._get_schema()


def _run_facets(run: DecidedRun, producer: str, event_time: str) -> dict[str, Any]:
    """The run facets that differ from run to run (the caller adds ``processing_engine``), as
    dicts. ``event_time``: the event's ``iso_millis(run.event_time_ns)``, which a nominal end equal
    to it (a run that ended with its root) reuses."""
    facets: dict[str, Any] = {GOVERNANCE_FACET_KEY: governance_facet_dict(run, producer)}
    if run.nominal_start_ns is not None:
        nominal = {
            "nominalStartTime": iso_millis(run.nominal_start_ns),
            "_producer": producer,
            "_schemaURL": _NOMINAL_TIME_SCHEMA,
        }
        end_ns = run.nominal_end_ns
        if end_ns is not None:
            nominal["nominalEndTime"] = event_time if end_ns == run.event_time_ns else iso_millis(end_ns)
        facets["nominalTime"] = nominal
    if run.parent is not None:  # rare: a nested run; the client's own facet, as a dict
        facets["parent"] = Serde.to_dict(parent_run_facet(run.parent, producer))
    if run.error is not None:
        facets["errorMessage"] = Serde.to_dict(
            ErrorMessageRunFacet(
                message=run.error.message,
                programmingLanguage="python",
                stackTrace=run.error.stack_trace,
                producer=producer,
            )
        )
    return facets


def governance_facet_dict(run: DecidedRun, producer: str) -> dict[str, Any]:
    """``Serde.to_dict(build_governance_facet(run, producer))``, built directly."""
    producer = producer or client_base.PRODUCER
    summary = run.summary
    facet: dict[str, Any] = {
        "governanceHash": summary.governance_hash,
        "hashType": summary.hash_type,
        "agentId": run.agent_id,
        "traceId": run.trace_id,
        "specVersion": AIGP_FACET_SPEC_VERSION,
        "complete": run.complete,
        "ungovernedResourceCount": summary.ungoverned_count,
        "_producer": producer,
        "_schemaURL": _GOVERNANCE_SCHEMA,
    }
    for key, value in (
        ("leafCount", summary.leaf_count),
        ("enforcementResult", summary.enforcement),
        ("dataClassification", summary.classification),
        ("eventCount", summary.event_count),
        ("deniedEventCount", summary.denied_count),
    ):
        if value is not None:
            facet[key] = value
    if summary.agent_ids:
        agent_ids = sorted({*summary.agent_ids, run.agent_id})
        if len(agent_ids) > 1:
            facet["agentIds"] = agent_ids
    return facet


def resource_facet_dicts(run: DecidedRun, producer: str) -> list[dict[str, Any]]:
    """The ``aigp_resource`` facet of each input as ``Serde.to_dict`` gives it, built directly."""
    return [facet for _, _, facet in _input_parts(run, producer or client_base.PRODUCER)]


def _input_parts(run: DecidedRun, producer: str) -> list[tuple[str, str, Any]]:
    """``(namespace, name, aigp_resource facet dict)`` of each input, as ``build_inputs`` has them."""
    parts = []
    for resource in run.summary.resources:
        facet: dict[str, Any] = {
            "resourceType": resource.type,
            "resourceName": resource.name,
            "enforcementResult": sc.DENIED if resource.denied else sc.ALLOWED,
            "governed": resource.governed,
            "_producer": producer,
            "_schemaURL": _RESOURCE_SCHEMA,
        }
        if resource.version is not None:
            facet["resourceVersion"] = resource.version
        if resource.observed_versions:
            facet["observedVersions"] = list(resource.observed_versions)
        leaf, content = resource.leaf_hashes, resource.content_hashes
        if len(leaf) == 1:
            facet["leafHash"] = leaf[0]
        elif leaf:
            facet["leafHashes"] = list(leaf)
        if len(content) == 1:
            facet["contentHash"] = content[0]
        elif content:
            facet["contentHashes"] = list(content)
        if resource.provider is not None:
            facet["provider"] = resource.provider
        parts.append((run.resource_namespace, resource.name, facet))
    return parts


@lru_cache(maxsize=8)
def _job_type_dict(producer: str) -> dict[str, Any]:
    """Constant per producer; shared by the events ``build_run_event`` makes (nothing changes it:
    ``emit`` adds facets beside it, ``Serde`` copies)."""
    return Serde.to_dict(_job_type(producer))


@lru_cache(maxsize=8)
def _job_type_record(producer: str) -> FacetRecord | dict[str, Any]:
    """``_job_type_dict`` as the facet record ``build_run_event`` shares between its events."""
    return facet_record(_job_type_dict(producer))


@lru_cache(maxsize=8)
def _engine_dict(producer: str) -> dict[str, Any]:
    return Serde.to_dict(_engine(producer))


@lru_cache(maxsize=8)
def _engine_record(producer: str) -> FacetRecord | dict[str, Any]:
    return facet_record(_engine_dict(producer))


def class_built_run_event(run: DecidedRun, producer: str) -> RunEvent:
    """The RunEvent of a decided run with every facet an object of its class: the definition
    ``build_run_event`` and ``run_event_dict`` are held to, byte for byte, by the tests."""
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
    if run.parent is not None:
        run_facets["parent"] = parent_run_facet(run.parent, producer)
    if run.error is not None:
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
