"""A LangGraph agent traced by OpenInference, governed with the AIGP SDK, lineage through the bridge.

Run offline: ``python examples/frameworks/langgraph_openinference.py`` (docs/frameworks.md).

OpenInference's LangChain instrumentation does not make its spans current, so the SDK would find no
span to record on (the bridge counts such events as ``ingest_rejected`` and says so in a warning).
The SDK is given the span of the LangChain run instead: ``get_current_span`` of the instrumentation.
"""

from __future__ import annotations

from governed import AGENT_NAME, INSTRUCTIONS, MODEL, QUESTION, SupportGovernance, model_server
from langchain.agents import create_agent
from langchain_core.tools import StructuredTool
from langchain_openai import ChatOpenAI
from openinference.instrumentation.langchain import LangChainInstrumentor, get_current_span


def main() -> None:
    governance = SupportGovernance(span_of=get_current_span)  # the span is passed explicitly
    provider = governance.tracer_provider()
    LangChainInstrumentor().instrument(tracer_provider=provider)
    tools = [StructuredTool.from_function(tool) for tool in (governance.lookup_order, governance.wire_refund)]
    with model_server() as base_url:
        http_client = governance.http_client()
        model = ChatOpenAI(model=MODEL, base_url=base_url, api_key="offline", http_client=http_client)
        agent = create_agent(model, tools, system_prompt=INSTRUCTIONS, name=AGENT_NAME)
        for _ in range(2):
            print(agent.invoke({"messages": [("user", QUESTION)]})["messages"][-1].content)
    provider.shutdown()


if __name__ == "__main__":
    main()
