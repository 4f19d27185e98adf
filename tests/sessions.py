"""Governed sessions through the real bridge and the reference SDK, shared by the verification,
explain and snapshot tests: the lineage file the OpenLineage file transport writes, and the
governance store (the full AIGP events)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import Dataset
from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.snapshot import lineage_snapshot

POLICY = "Max position: $10M per instrument."
PROMPT = "You are a careful trading assistant."
TOOL = "GET /quotes?symbol=ACME"
REVIEW_PROMPT = "Review the trade."
SEARCH = "search: ACME filings"
SNAPSHOT = lineage_snapshot(
    [Dataset(namespace="s3://finco", name="quotes/2026-01-02")], name="lineage.pre-trade"
)
CONTENT = {
    ("policy", "policy.trading-limits"): POLICY,
    ("prompt", "prompt.trader-system"): PROMPT,
    ("tool", "tool.market-data"): TOOL,
    ("lineage", "lineage.pre-trade"): SNAPSHOT.content,
    ("prompt", "prompt.reviewer"): REVIEW_PROMPT,
}


@dataclass
class Session:
    lineage: list[dict[str, Any]]
    store: list[dict[str, Any]]
    trace_ids: list[str]


def run_governed_session(directory: Path, **settings: Any) -> Session:
    """Two governed traces through the bridge; ``settings`` go to the span processor.

    Trace one: a policy, a prompt, a three-leaf Merkle proof (policy, tool, lineage snapshot)
    and a denied tool. Trace two: a prompt and a tool named only by a span attribute.
    """
    from aigp import AIGPInstrumentor

    lineage_path = directory / "lineage.jsonl"
    client = OpenLineageClient(
        config={"transport": {"type": "file", "log_file_path": str(lineage_path), "append": True}}
    )
    processor = AIGPLineageSpanProcessor(client=client, job_namespace="finco.trading", **settings)
    store: list[dict[str, Any]] = []

    def to_store(event: dict[str, Any]) -> None:
        store.append(event)
        processor.ingest_aigp_event(event)

    instrumentor = AIGPInstrumentor(
        agent_id="agent.trading-bot-v2", agent_name="Trading Bot", org_id="org.finco", event_callback=to_store
    )
    resource = Resource.create({**instrumentor.get_resource_attributes(), "service.name": "trading-bot"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests.verify")
    trace_ids: list[str] = []
    try:
        with tracer.start_as_current_span("invoke") as root:
            trace_ids.append(f"{root.get_span_context().trace_id:032x}")
            with tracer.start_as_current_span("load-policy"):
                instrumentor.inject_success(
                    "policy.trading-limits", 4, POLICY, data_classification="confidential"
                )
            with tracer.start_as_current_span("review", context=otel_context.Context()) as other:
                trace_ids.append(f"{other.get_span_context().trace_id:032x}")
                instrumentor.prompt_used("prompt.reviewer", 1, REVIEW_PROMPT, data_classification="public")
                with tracer.start_as_current_span("search") as search:
                    search.set_attribute("aigp.tools.names", ["tool.search"])
                    instrumentor.tool_invoked("tool.search", content=SEARCH)
            with tracer.start_as_current_span("render-prompt"):
                instrumentor.prompt_used("prompt.trader-system", 3, PROMPT, data_classification="internal")
            with tracer.start_as_current_span("prove"):
                instrumentor.multi_resource_governance_proof(
                    [
                        ("policy", "policy.trading-limits", POLICY),
                        ("tool", "tool.market-data", TOOL),
                        SNAPSHOT.resource,
                    ],
                    data_classification="confidential",
                )
            with tracer.start_as_current_span("wire-transfer"):
                instrumentor.tool_denied("tool.wire-transfer", "wire transfers need human approval")
        assert processor.force_flush(30_000)
    finally:
        provider.shutdown()
    lineage = [json.loads(line) for line in lineage_path.read_text().splitlines() if line.strip()]
    return Session(lineage=lineage, store=store, trace_ids=trace_ids)
