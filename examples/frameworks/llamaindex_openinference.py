"""A LlamaIndex ``FunctionAgent`` traced by OpenInference, governed with the AIGP SDK, lineage through
the bridge.

Run offline: ``python examples/frameworks/llamaindex_openinference.py`` (docs/frameworks.md).
LlamaIndex's spans name no agent, so the job is named after the root span (``FunctionAgent.run``)
unless the bridge is given a ``job_name``.
"""

from __future__ import annotations

import asyncio

from governed import AGENT_NAME, INSTRUCTIONS, MODEL, QUESTION, SupportGovernance, model_server
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor


async def ask_twice(agent: FunctionAgent) -> None:
    for _ in range(2):
        print(await agent.run(QUESTION))


def main() -> None:
    governance = SupportGovernance()
    provider = governance.tracer_provider()
    LlamaIndexInstrumentor().instrument(tracer_provider=provider)
    tools = [FunctionTool.from_defaults(tool) for tool in (governance.lookup_order, governance.wire_refund)]
    with model_server() as base_url:
        llm = OpenAI(model=MODEL, api_base=base_url, api_key="offline",
                     async_http_client=governance.async_http_client())
        agent = FunctionAgent(
            name=AGENT_NAME, description=INSTRUCTIONS, system_prompt=INSTRUCTIONS, tools=tools, llm=llm,
            streaming=False,
        )
        asyncio.run(ask_twice(agent))
    provider.shutdown()


if __name__ == "__main__":
    main()
