"""A GenAI agent traced with the OpenTelemetry GenAI conventions, with AIGP governance on top.

Run: ``python examples/genai_agent.py`` (needs the ``demo`` extra: from the clone's root,
``pip install -e ".[demo]"``; once the package is published, ``pip install "aigp-otel-bridge[demo]"``).

The spans say *what the agent did* in the ``gen_ai.*`` namespace (agent invocation, chat calls,
tool executions, token usage) that GenAI observability tools read. The reference AIGP SDK adds
*what governed it* as ``aigp.*`` span events on the same spans. The two namespaces never share a
key, so neither tool disturbs the other: the ``gen_ai.*`` attributes reach the tracing backend as
they were, and the bridge turns the session into one OpenLineage RunEvent. From ``gen_ai.*`` it
reads only names (docs/facets.md, "GenAI inputs"): the ``execute_tool`` span names the tool its
AIGP events are about (the SDK's tool events carry only a hash), the chat spans name the model and
its provider. Token counts stay in the tracing backend. The job is named from
``gen_ai.agent.name`` and the operation through a ``job_name`` callable.
"""

from __future__ import annotations

import logging

from aigp import AIGPInstrumentor
from openlineage.client import OpenLineageClient
from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Tracer

from aigp_otel_bridge import AIGPLineageSpanProcessor, RootInfo

AGENT_NAME = "research-assistant"
MODEL = "gpt-4o"
SNAPSHOT = "gpt-4o-2024-08-06"
"""The model that ran (``gen_ai.response.model``): the model input is named after it."""


def job_from_genai(root: RootInfo) -> str:
    """Name the job after the GenAI agent and operation of the root span."""
    agent = root.attributes.get("gen_ai.agent.name")
    operation = root.attributes.get("gen_ai.operation.name")
    if isinstance(agent, str) and isinstance(operation, str):
        return f"{agent}.{operation}"
    return root.name


def run_agent(tracer: Tracer, aigp: AIGPInstrumentor) -> None:
    """One agent invocation: a governed system prompt, a chat turn, a tool call, a final answer."""
    with tracer.start_as_current_span(f"invoke_agent {AGENT_NAME}", kind=SpanKind.INTERNAL) as agent:
        agent.set_attributes({
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": "openai",
            "gen_ai.agent.name": AGENT_NAME,
            "gen_ai.agent.id": "asst_research_01",
            "gen_ai.conversation.id": "conv_5j66UpCpwteGg4YSxUnt7lPY",
        })
        aigp.inject_success("policy.research-sources", 2, "Cite only peer-reviewed sources.",
                            data_classification="internal")

        with tracer.start_as_current_span(f"chat {MODEL}", kind=SpanKind.CLIENT) as chat:
            chat.set_attributes({
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": MODEL,
                "gen_ai.request.temperature": 0.2,
                "gen_ai.response.model": SNAPSHOT,
                "gen_ai.response.finish_reasons": ("tool_calls",),
                "gen_ai.usage.input_tokens": 412,
                "gen_ai.usage.output_tokens": 37,
                # The SDK's model events carry only a hash: naming the governed model on the span
                # (an AIGP array attribute) says which model the proof is about.
                "aigp.models.names": (f"model.{SNAPSHOT}",),
            })
            aigp.model_loaded(f"model.{SNAPSHOT}", "provider=openai; snapshot=2024-08-06")
            aigp.prompt_used("prompt.research-system", 6, "You are a careful research assistant.")

        with tracer.start_as_current_span("execute_tool search_papers", kind=SpanKind.INTERNAL) as tool:
            tool.set_attributes({
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search_papers",
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": "call_mszuSIzqtI65i1wAUOE8w5H4",
            })
            # About tool.search_papers: the execute_tool span it sits on names the tool.
            aigp.tool_invoked("tool.search_papers", 3, "query=retrieval augmented generation")

        with tracer.start_as_current_span(f"chat {MODEL}", kind=SpanKind.CLIENT) as answer:
            answer.set_attributes({
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": MODEL,
                "gen_ai.response.model": SNAPSHOT,
                "gen_ai.response.finish_reasons": ("stop",),
                "gen_ai.usage.input_tokens": 913,
                "gen_ai.usage.output_tokens": 188,
            })
            aigp.inference_completed("Three surveys match; summary attached.", data_classification="internal")


def main(client: OpenLineageClient | None = None, span_exporter: SpanExporter | None = None) -> None:
    """Run the agent with the bridge; the RunEvent is printed unless another client is given."""
    if client is None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        client = OpenLineageClient(transport=ConsoleTransport(ConsoleConfig()))
    bridge = AIGPLineageSpanProcessor(client=client, job_namespace="acme.research", job_name=job_from_genai)
    aigp = AIGPInstrumentor(
        agent_id="agent.research-assistant", org_id="org.acme", event_callback=bridge.ingest_aigp_event
    )
    resource = Resource.create({"service.name": "research-service", **aigp.get_resource_attributes()})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(bridge)
    if span_exporter is not None:  # your OTLP exporter would sit here, seeing the gen_ai.* spans
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    run_agent(provider.get_tracer("genai-example"), aigp)
    provider.shutdown()  # flushes the bridge


if __name__ == "__main__":
    main()
