"""GenAI conventions (contract section 9) and late governance (section 2), with the reference SDK.

The spans carry the attribute sets agent frameworks' instrumentations emit: pydantic-ai's agent run
(``invoke_agent``, ``gen_ai.agent.name``), its model requests (``chat <model>``, request and response
model, ``gen_ai.system`` or ``gen_ai.provider.name``, token usage, messages) and its tool calls
(``execute_tool <tool>``, ``gen_ai.tool.name``, ``gen_ai.tool.call.id``, arguments); openai-agents'
(``invoke_agent``/``chat``/``execute_tool`` with ``gen_ai.operation.name``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aigp import AIGPInstrumentor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.frontdoors.capture import MODELS_NOTED_MAX, ModelsNoted
from aigp_otel_bridge.frontdoors.sdk import capture_span
from aigp_otel_bridge.merkle import merkle_root
from tests.conftest import CaptureTransport

Bridge = Callable[..., tuple[TracerProvider, AIGPLineageSpanProcessor]]

AGENT_RUN = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support_agent",
             "gen_ai.system": "openai", "model_name": "gpt-4o", "agent_name": "support_agent"}
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 412,
        "gen_ai.usage.output_tokens": 37, "server.address": "api.openai.com",
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"content": "' + "x" * 5000 + '"}]}]'}


def tool_span(name: str) -> dict[str, Any]:
    return {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": f"call_{name}", "tool_arguments": '{"order": 42}'}


def _session(make_bridge: Bridge, **settings: Any) -> tuple[TracerProvider, AIGPLineageSpanProcessor,
                                                             AIGPInstrumentor, list[dict[str, Any]]]:
    store: list[dict[str, Any]] = []
    aigp = AIGPInstrumentor(agent_id="agent.support-bot", org_id="org.acme", event_callback=store.append)
    provider, processor = make_bridge(
        resource={"service.name": "support-svc", **aigp.get_resource_attributes()}, **settings
    )
    return provider, processor, aigp, store


def _inputs(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d["inputFacets"]["aigp_resource"] for d in event["inputs"]}


def test_a_pydantic_ai_shaped_agent_names_its_tools_model_and_job(
    make_bridge: Bridge, transport: CaptureTransport
) -> None:
    provider, processor, aigp, store = _session(make_bridge)
    span = provider.get_tracer("pydantic-ai").start_as_current_span
    # The web request is the local root; the agent run is under it.
    with span("POST /support"), span("invoke_agent support_agent", attributes=AGENT_RUN):
        aigp.inject_success("policy.refunds", 3, "Refunds up to $100 only.")
        with span("chat gpt-4o", attributes=CHAT):
            pass
        with span("running tools"):
            # db.query: the tool's own code, under the execute_tool span
            with span("execute_tool lookup_order", attributes=tool_span("lookup_order")), span("db.query"):
                looked_up = aigp.tool_invoked("lookup_order", content="SELECT * FROM orders")
            with span("execute_tool issue_refund", attributes=tool_span("tool.issue_refund")):
                aigp.tool_denied("issue_refund", "refunds over $100 need a human")
            with span("execute_tool get_weather", attributes=tool_span("get_weather")):
                pass
        with span("chat gpt-4o", attributes=CHAT):
            pass
    assert processor.force_flush(10_000)
    (event,) = transport.events
    assert event["eventType"] == "COMPLETE"
    # The task: no gen_ai.agent.name on the root, so the outermost span under it that has one.
    assert event["job"]["name"] == "support-bot.support_agent"
    inputs = _inputs(event)
    assert sorted(inputs) == [
        "model.gpt-4o-2024-08-06", "policy.refunds", "tool.get_weather", "tool.issue_refund",
        "tool.lookup_order",
    ]
    # A record on a span under the execute_tool span is about that tool: governed, its hash.
    lookup = inputs["tool.lookup_order"]
    assert (lookup["governed"], lookup["enforcementResult"]) == (True, "allowed")
    assert lookup["contentHash"] == looked_up["governance_hash"]
    assert "resourceVersion" not in lookup  # the SDK's "no version" (0) is not a version
    # A value already prefixed keeps its name; a denial on the tool span makes the tool denied.
    assert (inputs["tool.issue_refund"]["governed"], inputs["tool.issue_refund"]["enforcementResult"]) == (
        True, "denied")
    # Observed only: an input without any proof, counted; the model keeps its provider.
    assert inputs["tool.get_weather"]["governed"] is False
    model = inputs["model.gpt-4o-2024-08-06"]
    assert (model["governed"], model["provider"], model["enforcementResult"]) == (False, "openai", "allowed")
    for facet in (inputs["tool.get_weather"], model):
        assert not {"contentHash", "leafHash", "contentHashes", "leafHashes"} & set(facet)
    governance = event["run"]["facets"]["aigp_governance"]
    assert governance["ungovernedResourceCount"] == 2
    assert (governance["eventCount"], governance["deniedEventCount"]) == (3, 1)
    assert governance["governanceHash"] == merkle_root({e["governance_hash"] for e in store} - {""})
    # Token counts and messages are not copied.
    text = str(event)
    assert "412" not in text and "xxxx" not in text


def test_an_openai_agents_shaped_agent_with_provider_name_and_records_on_the_tool_span(
    make_bridge: Bridge, transport: CaptureTransport
) -> None:
    provider, processor, aigp, _ = _session(make_bridge)
    span = provider.get_tracer("openai-agents").start_as_current_span
    triage = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Triage Agent",
              "gen_ai.provider.name": "openai"}
    billing = {**triage, "gen_ai.agent.name": "Billing Agent"}
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1-mini"}
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch_invoice"}
    with span("invoke_agent Triage", attributes=triage), span("invoke_agent Billing", attributes=billing):
        with span("chat", attributes=chat):
            aigp.prompt_used("prompt.billing", 2, "You handle invoices.")
        with span("execute_tool fetch_invoice", attributes=tool):
            invoked = aigp.tool_invoked("tool.fetch_invoice", 4, "invoice 7")
    assert processor.force_flush(10_000)
    (event,) = transport.events
    assert event["job"]["name"] == "support-bot.Triage Agent"  # the root's own gen_ai.agent.name
    inputs = _inputs(event)
    assert inputs["tool.fetch_invoice"]["contentHash"] == invoked["governance_hash"]
    assert inputs["tool.fetch_invoice"]["governed"] is True
    model = inputs["model.gpt-4.1-mini"]
    assert (model["governed"], model["provider"]) == (False, "openai")
    assert inputs["prompt.billing"]["resourceVersion"] == 2
    assert event["run"]["facets"]["aigp_governance"]["ungovernedResourceCount"] == 1


def test_a_trace_with_genai_spans_but_no_governance_emits_nothing(
    make_bridge: Bridge, transport: CaptureTransport
) -> None:
    provider, processor, _, _ = _session(make_bridge)
    tracer = provider.get_tracer("pydantic-ai")
    with tracer.start_as_current_span("invoke_agent support_agent", attributes=AGENT_RUN):
        with tracer.start_as_current_span("chat gpt-4o", attributes=CHAT):
            pass
        with tracer.start_as_current_span("execute_tool get_weather", attributes=tool_span("get_weather")):
            pass
    assert processor.force_flush(10_000)
    assert transport.events == []
    assert len(processor._core.engine._correlator) == 0


def test_a_genai_span_note_keeps_only_the_names_the_bridge_reads(make_bridge: Bridge) -> None:
    provider, _, _, _ = _session(make_bridge)
    notes: list[Any] = []

    class Keep(SpanProcessor):
        def on_end(self, span: Any) -> None:
            notes.append(capture_span(span))

    provider.add_span_processor(Keep())
    tracer = provider.get_tracer("pydantic-ai")
    with tracer.start_as_current_span("root"):
        with tracer.start_as_current_span("chat gpt-4o", attributes=CHAT):
            pass
        with tracer.start_as_current_span("plain", attributes={"http.method": "GET"}):
            pass
    chat, plain, _root = notes
    assert plain is None  # neither governed nor GenAI: nothing reaches correlation
    assert dict(chat.attributes) == {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                                     "gen_ai.response.model": "gpt-4o-2024-08-06"}


def test_records_arriving_after_the_run_ended_make_an_other_event_of_the_same_run_and_job(
    make_bridge: Bridge, transport: CaptureTransport
) -> None:
    """A governance store feeding ``ingest_aigp_event`` after the root ended (section 2)."""
    provider, processor, aigp, store = _session(make_bridge)
    span = provider.get_tracer("pydantic-ai").start_as_current_span
    with span("POST /support"), span("invoke_agent support_agent", attributes=AGENT_RUN):
        aigp.inject_success("policy.refunds", 3, "Refunds up to $100 only.")
        with span("execute_tool issue_refund", attributes=tool_span("issue_refund")):
            aigp.tool_denied("issue_refund", "refunds over $100 need a human")
    assert processor.force_flush(10_000)
    (complete,) = transport.events
    assert complete["eventType"] == "COMPLETE"

    for event in store:  # the store's copies of the span events: joined, not counted twice
        processor.ingest_aigp_event(event)
    trace_id = complete["run"]["facets"]["aigp_governance"]["traceId"]
    # An action the store knows of and no span showed (recorded outside the trace's spans).
    extra = {**aigp.prompt_used("prompt.apology", 0, "Apologise briefly."), "trace_id": trace_id}
    processor.ingest_aigp_event(extra)
    assert processor.force_flush(10_000)
    late = transport.events[1:]
    assert [e["eventType"] for e in late] == ["OTHER"]  # one burst, one event; never RUNNING
    (other,) = late
    assert other["run"]["runId"] == complete["run"]["runId"]
    assert other["job"] == complete["job"]
    governance = other["run"]["facets"]["aigp_governance"]
    assert (governance["eventCount"], governance["deniedEventCount"]) == (3, 1)
    hashes = {e["governance_hash"] for e in [*store, extra]} - {""}  # a denial carries no hash
    assert governance["governanceHash"] == merkle_root(hashes) != complete["run"]["facets"][
        "aigp_governance"]["governanceHash"]
    inputs = _inputs(other)
    assert inputs["tool.issue_refund"]["enforcementResult"] == "denied"
    assert "resourceVersion" not in inputs["prompt.apology"]  # version 0 from the store: absent
    stats = processor.stats()
    assert (stats["late_events"], stats["ended_runs_forgotten"]) == (1, 0)


def test_ended_runs_are_remembered_within_bounds_and_forgetting_is_counted(
    make_bridge: Bridge, transport: CaptureTransport
) -> None:
    provider, processor, aigp, store = _session(make_bridge, max_pending_traces=1)
    tracer = provider.get_tracer("t")
    for name in ("first", "second"):
        with tracer.start_as_current_span(name):
            aigp.inject_success(f"policy.{name}", 1, name)
    assert processor.force_flush(10_000)
    assert processor.stats()["ended_runs_forgotten"] == 1
    processor.ingest_aigp_event(store[1])  # an event the remembered run holds: nothing new
    assert processor.force_flush(10_000)
    assert [e["eventType"] for e in transport.events] == ["COMPLETE", "COMPLETE"]
    processor.ingest_aigp_event({**store[1], "event_id": "a-later-event"})  # the remembered run: OTHER
    assert processor.force_flush(10_000)
    assert [e["eventType"] for e in transport.events] == ["COMPLETE", "COMPLETE", "OTHER"]
    assert transport.events[2]["run"]["runId"] == transport.events[1]["run"]["runId"]
    assert transport.events[2]["job"]["name"] == transport.events[1]["job"]["name"] == "support-bot.second"


def test_a_model_its_trace_already_sent_is_not_noted_again_in_process(make_bridge: Bridge) -> None:
    """Chat spans repeat their model call after call: in process, only the first reaches correlation;
    a span naming a tool or an agent always does, and so does every span of a front door that may
    see spans again (OTLP retries), which keeps no such memory."""
    provider, _, _, _ = _session(make_bridge)
    sent = ModelsNoted(MODELS_NOTED_MAX)
    in_process: list[Any] = []
    remembered_nothing: list[Any] = []

    class Keep(SpanProcessor):
        def on_end(self, span: Any) -> None:
            in_process.append(capture_span(span, None, sent))
            remembered_nothing.append(capture_span(span))

    provider.add_span_processor(Keep())
    span = provider.get_tracer("pydantic-ai").start_as_current_span
    with span("root"):
        for _ in range(3):
            with span("chat gpt-4o", attributes=CHAT):
                pass
        with span("chat gpt-4o", attributes={**CHAT, "gen_ai.response.model": "gpt-4o-mini"}):
            pass
        for _ in range(2):
            with span("execute_tool t", attributes=tool_span("t")):
                pass
    assert [note is not None for note in in_process] == [True, False, False, True, True, True, True]
    assert all(note is not None for note in remembered_nothing)
