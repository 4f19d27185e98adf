"""openai-agents traced by OpenLLMetry (``opentelemetry-instrumentation-openai-agents``), governed with
the AIGP SDK, lineage through the bridge.

Run offline: ``python examples/frameworks/openai_agents_openllmetry.py`` (docs/frameworks.md). The
agent runs twice against a local stand-in for the OpenAI API; one RunEvent per run.
"""

from __future__ import annotations

from agents import Agent, Runner, function_tool, set_default_openai_client
from governed import AGENT_NAME, INSTRUCTIONS, MODEL, QUESTION, SupportGovernance, model_server
from openai import AsyncOpenAI
from opentelemetry.instrumentation.openai_agents import OpenAIAgentsInstrumentor


def main() -> None:
    governance = SupportGovernance()
    provider = governance.tracer_provider()
    OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)
    agent = Agent(
        name=AGENT_NAME, instructions=INSTRUCTIONS, model=MODEL,
        tools=[function_tool(governance.lookup_order), function_tool(governance.wire_refund)],
    )
    with model_server() as base_url:
        client = AsyncOpenAI(base_url=base_url, api_key="offline", http_client=governance.async_http_client())
        set_default_openai_client(client, use_for_tracing=False)  # no trace upload to OpenAI
        for _ in range(2):
            print(Runner.run_sync(agent, QUESTION).final_output)
    provider.shutdown()


if __name__ == "__main__":
    main()
