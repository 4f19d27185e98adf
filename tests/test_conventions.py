"""The span conventions of agent instrumentation (contract section 9, its table): OpenInference,
OpenLLMetry (``traceloop.*``) and logfire's templates read with the same meaning as GenAI spans.

The attribute sets are those the instrumentations emit (openinference-instrumentation-openai-agents
2.6, -langchain 0.1.80, -llama-index 4.6; opentelemetry-instrumentation-openai-agents / -langchain
0.62; logfire 5.4), messages and token counts included where they carry them, so that what a note
keeps is checked too. The real frameworks run in tests/test_frameworks.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aigp import AIGPInstrumentor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.frontdoors.capture import MODELS_NOTED_MAX, ModelsNoted
from aigp_otel_bridge.frontdoors.sdk import capture_span
from aigp_otel_bridge.stages.extract import (
    Extractor,
    GenAIFacts,
    Limits,
    agent_name_of,
    gen_ai_facts_of,
    span_name,
)
from tests.conftest import CaptureTransport

Bridge = Callable[..., tuple[TracerProvider, AIGPLineageSpanProcessor]]

OI_AGENT = {
    "openinference.span.kind": "AGENT",
    "agent.name": "support_agent",
    "graph.node.id": "support_agent",
}
OI_WORKFLOW = {"openinference.span.kind": "AGENT"}  # openai-agents' trace span: an agent kind, no name
OI_CHAIN = {"openinference.span.kind": "CHAIN", "input.value": "x" * 5000}
OI_TOOL = {
    "openinference.span.kind": "TOOL",
    "tool.name": "lookup_order",
    "tool.description": "",
    "input.value": '{"order_id": 42}',
    "tool.parameters": "{}",
}
OI_LLM = {
    "openinference.span.kind": "LLM",
    "llm.system": "openai",
    "llm.provider": "openai",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.token_count.prompt": 20,
    "llm.input_messages.0.message.content": "x" * 5000,
}
LANGCHAIN_METADATA = json.dumps(
    {"ls_integration": "langchain_create_agent", "lc_agent_name": "support_agent"}
)
TRACELOOP_AGENT = {
    "traceloop.span.kind": "agent",
    "gen_ai.agent.name": "support_agent",
    "gen_ai.operation.name": "invoke_agent",
    "gen_ai.provider.name": "openai",
}
TRACELOOP_TOOL = {
    "traceloop.span.kind": "tool",
    "traceloop.entity.name": "lookup_order",
    "traceloop.entity.input": "x" * 5000,
}
LOGFIRE_AGENT = {
    "logfire.msg_template": "Agent run: {name!r}",
    "logfire.msg": "Agent run: 'support_agent'",
    "name": "support_agent",
    "gen_ai.system": "openai",
    "tools": '["lookup_order"]',
}
LOGFIRE_TOOL = {
    "logfire.msg_template": "Function: {name}",
    "logfire.msg": "Function: lookup_order",
    "name": "lookup_order",
    "input": '{"order_id": 42}',
    "gen_ai.system": "openai",
}
LOGFIRE_TURN = {
    "logfire.msg_template": "Turn {turn} for agent support_agent",
    "name": "turn",
    "turn": 1,
    "logfire.msg": "Turn 1 for agent support_agent",
    "agent_name": "support_agent",
}
LOGFIRE_TRACE = {
    "logfire.msg_template": "OpenAI Agents trace: {name}",
    "name": "Agent workflow",
    "logfire.msg": "OpenAI Agents trace: Agent workflow",
}


@pytest.mark.parametrize(
    ("attributes", "facts"),
    [
        (OI_AGENT, GenAIFacts(agent_name="support_agent")),
        ({"openinference.span.kind": "AGENT", "graph.node.id": "planner"}, GenAIFacts(agent_name="planner")),
        (
            {"openinference.span.kind": "AGENT", "metadata": LANGCHAIN_METADATA},
            GenAIFacts(agent_name="support_agent"),
        ),
        (OI_TOOL, GenAIFacts(tool="tool.lookup_order")),
        (OI_LLM, GenAIFacts(model="model.gpt-4o-mini-2024-07-18", provider="openai")),
        ({**OI_LLM, "llm.provider": ""}, GenAIFacts(model="model.gpt-4o-mini-2024-07-18", provider="openai")),
        (TRACELOOP_AGENT, GenAIFacts(agent_name="support_agent")),
        (TRACELOOP_TOOL, GenAIFacts(tool="tool.lookup_order")),
        (
            {"traceloop.span.kind": "agent", "traceloop.entity.name": "planner"},
            GenAIFacts(agent_name="planner"),
        ),
        (LOGFIRE_AGENT, GenAIFacts(agent_name="support_agent")),
        (LOGFIRE_TOOL, GenAIFacts(tool="tool.lookup_order")),
        # a kind that gives no role, or a role without a name: nothing
        (OI_WORKFLOW, None),
        (OI_CHAIN, None),
        ({"openinference.span.kind": "CHAIN", "metadata": LANGCHAIN_METADATA}, None),
        ({"openinference.span.kind": "AGENT", "metadata": "{not json lc_agent_name"}, None),
        ({"traceloop.span.kind": "workflow", "traceloop.entity.name": "support_agent"}, None),
        (LOGFIRE_TURN, None),
        (LOGFIRE_TRACE, None),
        ({"name": "lookup_order"}, None),  # ``name`` means something only on a logfire tool or agent span
        ({"openinference.span.kind": ["TOOL"], "tool.name": "x"}, None),  # a kind must be a string
        # an unfit name is counted and left out
        ({"openinference.span.kind": "TOOL", "tool.name": 7}, GenAIFacts(invalid=1)),
        ({"openinference.span.kind": "AGENT", "agent.name": "a" * 40}, GenAIFacts(invalid=1)),
    ],
)
def test_each_convention_names_tools_models_and_agents(
    attributes: dict[str, Any], facts: GenAIFacts | None
) -> None:
    limits = Limits(max_string_length=32)
    assert gen_ai_facts_of(attributes, limits) == facts
    assert agent_name_of(attributes, limits) == (facts.agent_name if facts is not None else None)
    extractor = Extractor(limits)
    for _ in range(2):  # a miss, then a hit: the remembered facts are those of a fresh read
        assert extractor.gen_ai_facts(attributes) == facts


def test_the_first_convention_that_names_a_role_wins() -> None:
    """OpenLLMetry's tool spans carry both ``gen_ai.tool.name`` and ``traceloop.entity.name``."""
    both = {**TRACELOOP_TOOL, "gen_ai.tool.name": "lookup_order_v2", "gen_ai.operation.name": "execute_tool"}
    assert gen_ai_facts_of(both) == GenAIFacts(tool="tool.lookup_order_v2")


def test_every_key_a_convention_reads_is_kept_and_a_convention_is_one_entry() -> None:
    for convention in sc.CONVENTIONS:
        keys = (
            [convention.kind_key, *convention.provider_keys]
            if convention.kind_key
            else [*convention.provider_keys]
        )
        for _, how in convention.roles():
            keys += [*how.name_keys, *(key for key, _ in how.json_names)]
            assert how.kinds or convention.kind_key is None  # a kind attribute's roles are marked by kinds
        assert set(keys) <= set(sc.CONVENTION_KEYS)


def test_a_logfire_template_is_never_a_span_s_name() -> None:
    assert span_name("OpenAI Agents trace: {name}", LOGFIRE_TRACE) == "OpenAI Agents trace: Agent workflow"
    assert span_name("Agent run: {name!r}", LOGFIRE_AGENT) == "Agent run: 'support_agent'"
    assert span_name("renamed", LOGFIRE_TOOL) == "renamed"  # a name that is no template is the name
    assert span_name("POST /plan", {"http.route": "/plan"}) == "POST /plan"
    assert span_name("{x}", {"logfire.msg_template": "{x}"}) == "{x}"  # no message to read instead


def _notes_of(
    make_bridge: Bridge, spans: list[tuple[str, dict[str, Any]]], sent: ModelsNoted | None
) -> list[Any]:
    provider, _ = make_bridge()
    notes: list[Any] = []

    class Keep(SpanProcessor):
        def on_end(self, span: Any) -> None:
            if span.parent is not None:
                notes.append(capture_span(span, None, sent))

    provider.add_span_processor(Keep())
    tracer = provider.get_tracer("instrumentation")
    with tracer.start_as_current_span("root"):
        for name, attributes in spans:
            with tracer.start_as_current_span(name, attributes=attributes):
                pass
    return notes


def test_capture_notes_only_spans_with_a_role_keeping_only_what_the_conventions_read(
    make_bridge: Bridge,
) -> None:
    spans = [
        ("turn", OI_CHAIN),
        ("lookup_order", OI_TOOL),
        ("response", OI_LLM),
        ("Function: {name}", LOGFIRE_TOOL),
        ("Turn {turn} for agent support_agent", LOGFIRE_TURN),
        ("lookup_order.tool", TRACELOOP_TOOL),
    ]
    chain, tool, llm, logfire_tool, turn, traceloop_tool = _notes_of(make_bridge, spans, None)
    assert chain is None and turn is None
    assert dict(tool.attributes) == {"openinference.span.kind": "TOOL", "tool.name": "lookup_order"}
    assert dict(llm.attributes) == {
        key: OI_LLM[key]
        for key in ("openinference.span.kind", "llm.model_name", "llm.provider", "llm.system")
    }
    assert dict(logfire_tool.attributes) == {
        key: LOGFIRE_TOOL[key] for key in ("gen_ai.system", "logfire.msg_template", "name", "logfire.msg")
    }
    assert dict(traceloop_tool.attributes) == {
        "traceloop.span.kind": "tool",
        "traceloop.entity.name": "lookup_order",
    }


def test_a_model_span_of_any_convention_is_noted_once_per_model_in_process(make_bridge: Bridge) -> None:
    other = {**OI_LLM, "llm.model_name": "gpt-4o"}
    spans = [
        ("response", OI_LLM),
        ("response", OI_LLM),
        ("response", other),
        ("lookup_order", OI_TOOL),
        ("lookup_order", OI_TOOL),
    ]
    noted = [note is not None for note in _notes_of(make_bridge, spans, ModelsNoted(MODELS_NOTED_MAX))]
    assert noted == [True, False, True, True, True]


@pytest.mark.parametrize(
    ("root", "agent", "tool", "model"),
    [
        (
            ("Agent workflow", OI_WORKFLOW),
            ("support_agent", OI_AGENT),
            ("lookup_order", OI_TOOL),
            ("response", OI_LLM),
        ),
        (
            ("OpenAI Agents trace: {name}", LOGFIRE_TRACE),
            ("Agent run: {name!r}", LOGFIRE_AGENT),
            ("Function: {name}", LOGFIRE_TOOL),
            (
                "Responses API",
                {
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.system": "openai",
                },
            ),
        ),
        (
            ("Agent Workflow", {"traceloop.span.kind": "workflow"}),
            ("support_agent.agent", TRACELOOP_AGENT),
            ("lookup_order.tool", TRACELOOP_TOOL),
            (
                "openai.response",
                {"gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.provider.name": "openai"},
            ),
        ),
    ],
    ids=["OpenInference", "logfire", "OpenLLMetry"],
)
def test_records_on_a_tool_span_of_any_convention_name_the_tool_and_the_agent_names_the_job(
    make_bridge: Bridge, transport: CaptureTransport, root: Any, agent: Any, tool: Any, model: Any
) -> None:
    aigp = AIGPInstrumentor(agent_id="agent.support-bot", org_id="org.acme")
    provider, processor = make_bridge(
        resource={"service.name": "support-svc", **aigp.get_resource_attributes()}
    )
    span = provider.get_tracer("instrumentation").start_as_current_span
    with span(root[0], attributes=root[1]), span(agent[0], attributes=agent[1]):
        with span(model[0], attributes=model[1]):
            aigp.inject_success("policy.support", 3, "Be polite.")
        with span(tool[0], attributes=tool[1]):
            aigp.tool_invoked("lookup_order", content="SELECT status FROM orders WHERE id = 42")
        with span(
            tool[0],
            attributes={
                **tool[1],
                "name": "wire_refund",
                "tool.name": "wire_refund",
                "traceloop.entity.name": "wire_refund",
            },
        ):
            aigp.tool_denied("wire_refund", "refunds above $100 need a human")
    assert processor.force_flush(10_000)
    (event,) = transport.events
    assert event["job"]["name"] == "support-bot.support_agent"
    inputs = {d["name"]: d["inputFacets"]["aigp_resource"] for d in event["inputs"]}
    assert sorted(inputs) == [
        "model.gpt-4o-mini-2024-07-18",
        "policy.support",
        "tool.lookup_order",
        "tool.wire_refund",
    ]
    assert (inputs["tool.lookup_order"]["governed"], inputs["tool.lookup_order"]["enforcementResult"]) == (
        True,
        "allowed",
    )
    assert inputs["tool.wire_refund"]["enforcementResult"] == "denied"
    model_input = inputs["model.gpt-4o-mini-2024-07-18"]
    assert (model_input["governed"], model_input["provider"]) == (False, "openai")
    assert event["run"]["facets"]["aigp_governance"]["ungovernedResourceCount"] == 1


def test_a_logfire_root_without_an_agent_is_named_by_its_message(
    make_bridge: Bridge, transport: CaptureTransport
) -> None:
    aigp = AIGPInstrumentor(agent_id="agent.support-bot", org_id="org.acme")
    provider, processor = make_bridge(
        resource={"service.name": "support-svc", **aigp.get_resource_attributes()}
    )
    with provider.get_tracer("logfire").start_as_current_span(
        "OpenAI Agents trace: {name}", attributes=LOGFIRE_TRACE
    ):
        aigp.inject_success("policy.support", 3, "Be polite.")
    assert processor.force_flush(10_000)
    (event,) = transport.events
    assert event["job"]["name"] == "support-bot.OpenAI Agents trace: Agent workflow"
