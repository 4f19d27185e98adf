"""openai-agents traced by OpenInference, governed with the AIGP SDK, lineage through the bridge.

Run offline: ``python examples/frameworks/openai_agents_openinference.py`` (needs ``openai-agents``
and ``openinference-instrumentation-openai-agents``; docs/frameworks.md). The agent runs twice
against a local stand-in for the OpenAI API, and the bridge prints one RunEvent per run: job
``support-bot.support_agent``, the two tools as inputs (``wire_refund`` denied), the model as an
observed-only input.
"""

from __future__ import annotations

from agents import Agent, Runner, function_tool, set_default_openai_client
from governed import AGENT_NAME, INSTRUCTIONS, MODEL, QUESTION, SupportGovernance, model_server
from openai import AsyncOpenAI
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor


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
        set_default_openai_client(client, use_for_tracing=False)
        for _ in range(2):
            print(Runner.run_sync(agent, QUESTION).final_output)
    provider.shutdown()  # flushes the bridge: its RunEvents go out before the process ends


if __name__ == "__main__":
    main()
