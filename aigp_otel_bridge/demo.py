"""A small governed agent session, run through the real span processor.

The governance actions are made with the reference AIGP SDK (``pip install
"aigp-otel-bridge[demo]"``), exactly as an instrumented agent makes them: span events on the
current span, and full AIGP events handed to the governance store (here a list, joined to the
spans through ``ingest_aigp_event``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openlineage.client import OpenLineageClient
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge.build import job_name_for
from aigp_otel_bridge.frontdoors.processor import AIGPLineageSpanProcessor
from aigp_otel_bridge.links import run_id_for_trace


@dataclass(frozen=True)
class DemoResult:
    trace_id: str
    run_id: str
    job: str
    spans: int
    aigp_events: int
    transport: str
    delivered: bool


def _instrumentor_class() -> Any:
    try:
        from aigp import AIGPInstrumentor
    except ImportError as missing:
        raise SystemExit(
            "the demo uses the reference AIGP SDK: pip install \"aigp-otel-bridge[demo]\""
        ) from missing
    return AIGPInstrumentor


def run_demo(timeout_s: float = 30.0, client: OpenLineageClient | None = None) -> DemoResult:
    """Run one governed session; the client defaults to the OpenLineage configuration in effect."""
    instrumentor = _instrumentor_class()(
        agent_id="agent.trading-bot-v2", agent_name="Trading Bot", org_id="org.finco"
    )
    governance_store: list[dict[str, Any]] = []
    processor = AIGPLineageSpanProcessor(client=client, job_namespace="finco.trading")

    def to_store(event: dict[str, Any]) -> None:
        governance_store.append(event)
        processor.ingest_aigp_event(event)

    instrumentor.event_callback = to_store
    resource = Resource.create({**instrumentor.get_resource_attributes(), "service.name": "trading-bot"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("aigp_otel_bridge.demo")
    spans = 0

    with tracer.start_as_current_span("invoke") as root:
        spans += 1
        trace_id = f"{root.get_span_context().trace_id:032x}"
        with tracer.start_as_current_span("load-policy"):
            instrumentor.inject_success(
                "policy.trading-limits", 4, "Max position: $10M per instrument.",
                data_classification="confidential",
            )
        with tracer.start_as_current_span("render-prompt"):
            instrumentor.prompt_used(
                "prompt.trader-system", 3, "You are a careful trading assistant.",
                data_classification="internal",
            )
        with tracer.start_as_current_span("fetch-quotes") as tool_span:
            tool_span.set_attribute("aigp.tools.names", ["tool.market-data"])
            instrumentor.tool_invoked("tool.market-data", content="GET /quotes?symbol=ACME")
        with tracer.start_as_current_span("prove-governance"):
            instrumentor.multi_resource_governance_proof(
                [
                    ("policy", "policy.trading-limits", "Max position: $10M per instrument."),
                    ("prompt", "prompt.trader-system", "You are a careful trading assistant."),
                    ("tool", "tool.market-data", "GET /quotes?symbol=ACME"),
                ],
                data_classification="confidential",
            )
        with tracer.start_as_current_span("wire-transfer") as wire_span:
            wire_span.set_attribute("aigp.tools.names", ["tool.wire-transfer"])
            instrumentor.tool_denied("tool.wire-transfer", "wire transfers need human approval")
        spans += 5
        with tracer.start_as_current_span("http-get"):
            spans += 1

    delivered = processor.force_flush(int(timeout_s * 1000))
    transport = processor.client.transport.kind or type(processor.client.transport).__name__
    provider.shutdown()
    return DemoResult(
        trace_id=trace_id,
        run_id=run_id_for_trace(trace_id),
        job="finco.trading/" + job_name_for(instrumentor.agent_id, None, "invoke"),
        spans=spans,
        aigp_events=len(governance_store),
        transport=str(transport),
        delivered=delivered,
    )
