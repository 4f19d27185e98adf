"""A real agent framework: pydantic-ai (its offline ``TestModel``), instrumented with OpenTelemetry,
governed with the reference AIGP SDK inside its tool, through the bridge (contract section 9)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

if sys.version_info < (3, 11):  # the releases tested here (pydantic-ai-slim 2.68+) need 3.11
    pytest.skip("pydantic-ai-slim 2.68 or newer needs Python 3.11", allow_module_level=True)

from aigp import AIGPInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.test import TestModel

from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.conftest import CaptureTransport

Bridge = Callable[..., tuple[TracerProvider, AIGPLineageSpanProcessor]]


def test_a_pydantic_ai_agent_run_names_its_tools_and_model_and_its_job(
    make_bridge: Bridge, transport: CaptureTransport
) -> None:
    store: list[dict[str, object]] = []
    aigp = AIGPInstrumentor(agent_id="agent.support-bot", org_id="org.acme", event_callback=store.append)
    provider, processor = make_bridge(
        resource={"service.name": "support-svc", **aigp.get_resource_attributes()}
    )
    agent = Agent(TestModel(), name="support_agent")

    @agent.tool_plain
    def lookup_order(order: int) -> str:
        """Where an order is (the SDK's tool event names no tool: the execute_tool span does)."""
        aigp.tool_invoked("lookup_order", content=f"SELECT status FROM orders WHERE id = {order}")
        return "shipped"

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """An ungoverned tool."""
        return "sunny"

    Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))
    try:
        with provider.get_tracer("app").start_as_current_span("POST /support"):
            aigp.inject_success("policy.support", 2, "Be polite.")
            agent.run_sync("Where is my order?")
    finally:
        Agent.instrument_all(False)
    assert processor.force_flush(10_000)

    (event,) = transport.events
    assert event["eventType"] == "COMPLETE"
    assert event["job"]["name"] == "support-bot.support_agent"  # the agent span under the root
    inputs = {d["name"]: d["inputFacets"]["aigp_resource"] for d in event["inputs"]}
    assert sorted(inputs) == ["model.test", "policy.support", "tool.get_weather", "tool.lookup_order"]
    (tool_event,) = [e for e in store if e["event_type"] == "TOOL_INVOKED"]
    assert inputs["tool.lookup_order"]["governed"] is True
    assert inputs["tool.lookup_order"]["contentHash"] == tool_event["governance_hash"]
    assert inputs["tool.get_weather"]["governed"] is False
    assert (inputs["model.test"]["governed"], inputs["model.test"]["provider"]) == (False, "test")
    governance = event["run"]["facets"]["aigp_governance"]
    assert (governance["eventCount"], governance["ungovernedResourceCount"]) == (2, 2)


def test_a_pydantic_ai_agent_under_a_server_span_keeps_one_job_whether_or_not_it_called_another_agent(
    make_bridge: Bridge, transport: CaptureTransport
) -> None:
    """pydantic-ai names its agent as the agent's span starts, so a call a tool makes carries the
    job its run is emitted with: the agent's, not the web framework's span (contract section 9)."""
    from opentelemetry import trace
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from aigp_otel_bridge import AIGPLineagePropagator
    from aigp_otel_bridge.propagated_links import HEADER, decode_header

    propagator = CompositePropagator([TraceContextTextMapPropagator(), AIGPLineagePropagator()])
    aigp = AIGPInstrumentor(agent_id="agent.planner")
    provider, _ = make_bridge(resource={"service.name": "planner", **aigp.get_resource_attributes()})
    agent = Agent(TestModel(), name="planner")
    headers: list[dict[str, str]] = []

    @agent.tool_plain
    def ask_pricer(instrument: str) -> str:
        """Ask the pricing agent (another service) for a price."""
        aigp.tool_invoked("ask_pricer", content=instrument)
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
        headers.append(carrier)
        return "42.0"

    Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))
    try:
        for prompt, tools in (("Price AAPL", None), ("Plan the day", [])):
            with provider.get_tracer("web").start_as_current_span("POST /plan", kind=trace.SpanKind.SERVER):
                aigp.inject_success("policy.trading-limits", 4, "limits")
                agent.run_sync(prompt, model=TestModel(call_tools=tools) if tools is not None else None)
    finally:
        Agent.instrument_all(False)
    called, alone = transport.wait_for(2)
    (carrier,) = headers
    propagated = decode_header(carrier[HEADER])
    assert propagated is not None
    assert called["job"]["name"] == alone["job"]["name"] == propagated.parent.name == "planner.planner"
    assert propagated.parent.run_id == called["run"]["runId"]
