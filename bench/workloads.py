"""The spans each measurement makes, and the hand-built RunEvent the session is compared with.

Everything a workload needs per span (event ids, hashes, attribute mappings) is made before the
timed window, so the window holds the tracing calls and the processors' work, nothing else.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.constants import __version__ as client_version
from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
from openlineage.client.generated.base import InputDatasetFacet, RunFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.generated.nominal_time_run import NominalTimeRunFacet
from openlineage.client.generated.processing_engine_run import ProcessingEngineRunFacet
from opentelemetry.trace import Tracer, set_span_in_context

Attributes = dict[str, Any]
SpanEvent = tuple[str, Attributes]

CHILDREN_PER_ROOT = 99
"""Children per root in the span measurements: traces of 100 spans, as the governed-span line of the guard
defines them, so each run's RunEvent (built, serialised) is paid once per 100 spans."""

ORDINARY_ATTRIBUTES: Attributes = {
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 812,
    "gen_ai.usage.output_tokens": 164,
    "server.address": "api.example.com",
    "server.port": 443,
}
"""The ordinary attributes every child span carries (no ``aigp.*`` key)."""

UNREAD_ATTRIBUTES: Attributes = {k: v for k, v in ORDINARY_ATTRIBUTES.items() if not k.startswith("gen_ai.")}
"""The same without the GenAI keys: nothing in them that the bridge reads."""

ROOT_ATTRIBUTES: Attributes = {"aigp.agent.id": "agent.bench-bot", "aigp.agent.name": "Bench Bot"}
"""Identity only: marks the agent, makes no governance record."""

POLICY = ("policy.trading-limits", 4)
PROMPT = ("prompt.customer-support", 7)
TOOL = "tool.web-search"
JOB_NAMESPACE_HAND = "bench"

SESSION_CHILDREN: tuple[tuple[str, str | None], ...] = (
    ("agent.plan", None),
    ("policy.inject", "aigp.inject.success"),
    ("prompt.render", "aigp.prompt.used"),
    ("llm.chat", None),
    ("tool.call", "aigp.tool.invoked"),
    ("llm.chat", None),
    ("agent.respond", None),
)
"""One agent session: a root and these seven children, three of them with one AIGP event."""


def _hash(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def governance_event(kind: str) -> SpanEvent:
    """The ``aigp.*`` span event of one governance action: a fresh event id; the hash is that of
    the resource's content, so the same for every use of one policy (prompt, tool) version."""
    common: Attributes = {
        "aigp.event.id": str(uuid.UUID(int=random.getrandbits(128), version=4)),
        "aigp.governance.hash": _hash(kind),
        "aigp.governance.hash_type": "sha256",
        "aigp.enforcement.result": "allowed",
    }
    if kind == "aigp.inject.success":
        common |= {
            "aigp.policy.name": POLICY[0],
            "aigp.policy.version": POLICY[1],
            "aigp.data.classification": "confidential",
        }
    elif kind == "aigp.prompt.used":
        common |= {
            "aigp.prompt.name": PROMPT[0],
            "aigp.prompt.version": PROMPT[1],
            "aigp.data.classification": "internal",
        }
    elif kind == "aigp.tool.invoked":
        common |= {"aigp.tools.names": (TOOL,)}
    else:
        raise ValueError(kind)
    return kind, common


def span_events(count: int) -> list[SpanEvent]:
    """One policy-injection event per governed span."""
    return [governance_event("aigp.inject.success") for _ in range(count)]


def roots_for(spans: int) -> int:
    return -(-spans // CHILDREN_PER_ROOT)


def run_spans(
    tracer: Tracer, spans: int, events: list[SpanEvent] | None, child_attributes: Attributes | None = None
) -> None:
    """``spans`` children with ordinary attributes, under roots of at most ``CHILDREN_PER_ROOT``.

    With ``events``, child number *i* carries ``events[i]`` as a span event (a governed span);
    ``child_attributes`` replaces the children's ``ORDINARY_ATTRIBUTES``.
    """
    ordinary = child_attributes or ORDINARY_ATTRIBUTES
    done = 0
    while done < spans:
        batch = min(spans - done, CHILDREN_PER_ROOT)
        root = tracer.start_span("agent.session", attributes=ROOT_ATTRIBUTES)
        context = set_span_in_context(root)
        for index in range(done, done + batch):
            span = tracer.start_span("llm.chat", context=context, attributes=ordinary)
            if events is not None:
                name, attributes = events[index]
                span.add_event(name, attributes)
            span.end()
        root.end()
        done += batch


def session_events(sessions: int) -> list[list[SpanEvent | None]]:
    """For each session, the event (or None) of each of its seven children."""
    return [
        [governance_event(kind) if kind else None for _, kind in SESSION_CHILDREN]
        for _ in range(sessions)
    ]


def run_sessions(tracer: Tracer, sessions: list[list[SpanEvent | None]]) -> None:
    """One trace per session: the root, seven children, three AIGP events."""
    for child_events in sessions:
        root = tracer.start_span("agent.session", attributes=ROOT_ATTRIBUTES)
        context = set_span_in_context(root)
        for (name, _), event in zip(SESSION_CHILDREN, child_events, strict=True):
            span = tracer.start_span(name, context=context, attributes=ORDINARY_ATTRIBUTES)
            if event is not None:
                span.add_event(event[0], event[1])
            span.end()
        root.end()


# ---- the hand-built equivalent ----

AIGP_SCHEMAS = "https://github.com/sandarb-ai/aigp/blob/v0.8.0/integrations/openlineage/facets/"
"""Where the AIGP facet schemas are published: an application writing the facets itself cites
them too, so its event carries the same schema URLs (and serialises the same text) as the bridge's."""


@attr.define
class HandGovernanceRunFacet(RunFacet):
    """A governance run facet as an application would write it with openlineage-python."""

    governanceHash: str  # noqa: N815
    hashType: str  # noqa: N815
    agentId: str  # noqa: N815
    traceId: str  # noqa: N815
    leafCount: int  # noqa: N815
    enforcementResult: str  # noqa: N815
    dataClassification: str  # noqa: N815
    eventCount: int  # noqa: N815
    deniedEventCount: int  # noqa: N815
    ungovernedResourceCount: int  # noqa: N815
    specVersion: str = "0.8.0"  # noqa: N815
    complete: bool = True

    @staticmethod
    def _get_schema() -> str:
        return AIGP_SCHEMAS + "AIGPGovernanceRunFacet.json#/$defs/AIGPGovernanceRunFacet"


@attr.define
class HandResourceInputFacet(InputDatasetFacet):
    """A governed resource as an input facet, written by hand."""

    resourceType: str  # noqa: N815
    resourceName: str  # noqa: N815
    enforcementResult: str  # noqa: N815
    governed: bool
    resourceVersion: int | None = None  # noqa: N815
    contentHash: str | None = None  # noqa: N815
    provider: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return AIGP_SCHEMAS + "AIGPResourceInputFacet.json#/$defs/AIGPResourceInputFacet"


@dataclass(frozen=True)
class HandSession:
    """What an application knows of a session when it builds the RunEvent itself."""

    trace_id: int
    start_ns: int
    end_ns: int
    hashes: tuple[str, str, str]
    """Content hashes of the policy, the prompt and the tool call."""


def hand_sessions(sessions: list[list[SpanEvent | None]]) -> list[HandSession]:
    start = 1_771_000_000_000_000_000
    made = []
    for serial, child_events in enumerate(sessions):
        hashes = tuple(e[1]["aigp.governance.hash"] for e in child_events if e is not None)
        made.append(
            HandSession(random.getrandbits(128), start + serial * 10**9, start + serial * 10**9 + 8 * 10**8,
                        (hashes[0], hashes[1], hashes[2]))
        )
    return made


def _iso(time_ns: int) -> str:
    moment = datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


MODEL = ("model." + ORDINARY_ATTRIBUTES["gen_ai.request.model"], ORDINARY_ATTRIBUTES["gen_ai.system"])
"""The model the children's ``gen_ai.*`` attributes name: observed, so an input (not governed)."""


def hand_built_event(session: HandSession, producer: str) -> RunEvent:
    """The RunEvent of one session, built directly with ``openlineage.client.event_v2``: the same
    inputs and fields as the bridge's (three governed resources and the model the spans name)."""
    trace_hex = f"{session.trace_id:032x}"
    policy_hash, prompt_hash, tool_hash = session.hashes
    root_hash = hashlib.sha256("".join(sorted(session.hashes)).encode()).hexdigest()
    end = _iso(session.end_ns)
    inputs = [
        InputDataset(
            namespace=JOB_NAMESPACE_HAND,
            name=name,
            inputFacets={
                "aigp_resource": HandResourceInputFacet(
                    resourceType=kind, resourceName=name, enforcementResult="allowed", governed=governed,
                    resourceVersion=version, contentHash=content, provider=provider, producer=producer,
                )
            },
        )
        for kind, name, version, content, provider, governed in (
            ("model", MODEL[0], None, None, MODEL[1], False),
            ("policy", POLICY[0], POLICY[1], policy_hash, None, True),
            ("prompt", PROMPT[0], PROMPT[1], prompt_hash, None, True),
            ("tool", TOOL, None, tool_hash, None, True),
        )
    ]
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=end,
        run=Run(
            runId=str(uuid.UUID(hex=trace_hex)),
            facets={
                "aigp_governance": HandGovernanceRunFacet(
                    governanceHash=root_hash, hashType="merkle-sha256", agentId="agent.bench-bot",
                    traceId=trace_hex, leafCount=3, enforcementResult="allowed",
                    dataClassification="confidential", eventCount=3, deniedEventCount=0,
                    ungovernedResourceCount=1, producer=producer,
                ),
                "nominalTime": NominalTimeRunFacet(
                    nominalStartTime=_iso(session.start_ns), nominalEndTime=end, producer=producer
                ),
                "processing_engine": ProcessingEngineRunFacet(
                    version="0.1.0", name="hand-built", openlineageAdapterVersion=client_version,
                    producer=producer,
                ),
            },
        ),
        job=Job(
            namespace=JOB_NAMESPACE_HAND,
            name="bench-bot.agent.session",
            facets={
                "jobType": JobTypeJobFacet(
                    processingType="BATCH", integration="AIGP", jobType="AGENT", producer=producer
                )
            },
        ),
        inputs=inputs,
        outputs=[],
        producer=producer,
    )


def run_hand_built(client: OpenLineageClient, sessions: list[HandSession], producer: str) -> None:
    for session in sessions:
        client.emit(hand_built_event(session, producer))
