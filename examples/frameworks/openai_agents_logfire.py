"""openai-agents traced by logfire (``logfire.instrument_openai_agents``), governed with the AIGP SDK,
lineage through the bridge; logfire sends nothing anywhere (``send_to_logfire=False``).

Run offline: ``python examples/frameworks/openai_agents_logfire.py`` (docs/frameworks.md). logfire
names its spans by message templates (``Agent run: {name!r}``); the bridge reads the filled-in
message, so the job is ``support-bot.support_agent``, never a template.
"""

from __future__ import annotations

import logfire
from agents import Agent, Runner, function_tool, set_default_openai_client
from governed import AGENT_NAME, INSTRUCTIONS, MODEL, QUESTION, SupportGovernance, model_server
from openai import AsyncOpenAI


def main() -> None:
    governance = SupportGovernance()
    logfire.configure(
        send_to_logfire=False, console=False, service_name="support-svc",
        additional_span_processors=[governance.bridge],
    )
    logfire.instrument_openai_agents()
    agent = Agent(
        name=AGENT_NAME, instructions=INSTRUCTIONS, model=MODEL,
        tools=[function_tool(governance.lookup_order), function_tool(governance.wire_refund)],
    )
    with model_server() as base_url:
        client = AsyncOpenAI(base_url=base_url, api_key="offline", http_client=governance.async_http_client())
        set_default_openai_client(client, use_for_tracing=False)  # no trace upload to OpenAI
        for _ in range(2):
            print(Runner.run_sync(agent, QUESTION).final_output)
    logfire.shutdown()  # shuts the span processors down, the bridge's among them (it flushes)


if __name__ == "__main__":
    main()
