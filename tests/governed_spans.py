"""Governed agent sessions made with the reference AIGP SDK, for comparing front doors.

Each session is one trace: a root span with GenAI attributes, a policy inject, a prompt, a tool
call on a GenAI ``execute_tool`` span, a model call, a three-leaf Merkle proof and a denied
tool. Variants: a root that fails with an exception, and a root whose parent is remote.
"""

from __future__ import annotations

import random
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

POLICY = "Max position: $10M per instrument."
PROMPT = "You are a careful trading assistant."
TOOL = "GET /quotes?symbol=ACME"


def instrumentor(agent: str = "agent.trading-bot-v2") -> Any:
    from aigp import AIGPInstrumentor

    return AIGPInstrumentor(agent_id=agent, agent_name="Trading Bot", org_id="org.finco")


def resource(aigp: Any, service: str = "trading-bot") -> Resource:
    return Resource.create({**aigp.get_resource_attributes(), "service.name": service})


def remote_parent_context() -> Any:
    """A context whose current span is a remote caller (as after extracting ``traceparent``)."""
    caller = SpanContext(
        trace_id=random.getrandbits(128) or 1, span_id=random.getrandbits(64) or 1, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(caller))


def governed_session(tracer: Any, aigp: Any, *, fail: bool = False, remote_parent: bool = False) -> str:
    """Run one session; returns its trace id (32 hex)."""
    context = remote_parent_context() if remote_parent else None
    trace_id = ""
    try:
        with tracer.start_as_current_span("invoke", context=context) as root:
            trace_id = f"{root.get_span_context().trace_id:032x}"
            root.set_attribute("gen_ai.agent.name", "trader")
            with tracer.start_as_current_span("load-policy"):
                aigp.inject_success("policy.trading-limits", 4, POLICY, data_classification="confidential")
            with tracer.start_as_current_span("render-prompt"):
                aigp.prompt_used("prompt.trader-system", 3, PROMPT, data_classification="internal")
            with tracer.start_as_current_span(
                "execute_tool market-data",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "market-data"},
            ):
                aigp.tool_invoked("tool.market-data", content=TOOL)
            with tracer.start_as_current_span(
                "chat", attributes={"gen_ai.request.model": "gpt-x", "gen_ai.provider.name": "openai",
                                    "gen_ai.usage.input_tokens": 12, "gen_ai.request.temperature": 0.2},
            ):
                pass
            with tracer.start_as_current_span("prove"):
                aigp.multi_resource_governance_proof(
                    [("policy", "policy.trading-limits", POLICY), ("tool", "tool.market-data", TOOL),
                     ("prompt", "prompt.trader-system", PROMPT)],
                    data_classification="confidential",
                )
            with tracer.start_as_current_span("wire-transfer"):
                aigp.tool_denied("tool.wire-transfer", "wire transfers need human approval")
            if fail:
                raise RuntimeError("order rejected by the exchange")
    except RuntimeError:
        pass
    return trace_id


def light_session(tracer: Any, aigp: Any) -> str:
    """A small governed session (root and one governed child), for volume tests."""
    with tracer.start_as_current_span("invoke") as root:
        with tracer.start_as_current_span("load-policy"):
            aigp.inject_success("policy.trading-limits", 4, POLICY, data_classification="internal")
        return f"{root.get_span_context().trace_id:032x}"
