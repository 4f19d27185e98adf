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
