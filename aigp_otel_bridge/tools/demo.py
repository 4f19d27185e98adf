"""A small governed agent session, run through the real span processor.

The governance actions are made with the reference AIGP SDK (the ``demo`` extra), exactly as an
instrumented agent makes them: span events on the current span, and full AIGP events handed to
the governance store (here a list, joined to the spans through ``ingest_aigp_event``). Tool calls
are OpenTelemetry GenAI ``execute_tool`` spans, as agent frameworks record them. The store and the
RunEvents can be written to JSON-lines files, the inputs of ``aigp-otel-bridge verify``.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigp import AIGPInstrumentor
from openlineage.client import OpenLineageClient
from openlineage.client.serde import Serde
from openlineage.client.transport.transport import Transport
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, Tracer

from aigp_otel_bridge.client import default_client
from aigp_otel_bridge.frontdoors.processor import AIGPLineageSpanProcessor
from aigp_otel_bridge.propagated_links import run_id_for_trace
from aigp_otel_bridge.stages.build import job_name_for


@dataclass(frozen=True)
class DemoResult:
    trace_id: str
    run_id: str
    job: str
    spans: int
    aigp_events: int
    transport: str
    outcome: str
    """Where the run went: ``delivered``, ``stored`` (in the outbox), ``dropped``, or ``undelivered``
    (still being retried when the timeout ran out; lost when the demo ends)."""

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


class _CopyToFile(Transport):
    """Writes each RunEvent once to a JSON-lines file, then hands it to the configured transport.

    The copy is written before delivery, so that the lineage file holds the run even when the
    backend refuses it; a retried emit is not written twice.
    """

    def __init__(self, inner: Transport, path: Path) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.name = inner.name
        self._path = path
        self._written: set[str] = set()
        self._lock = threading.Lock()
        path.write_text("", encoding="utf-8")

    def emit(self, event: Any) -> Any:
        line = Serde.to_json(event)
        key = f"{event.run.runId}/{event.eventType}"
        with self._lock:
            if key not in self._written:
                with self._path.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")
                self._written.add(key)
        return self.inner.emit(event)

    def close(self, timeout: float = -1) -> bool:
        return self.inner.close(timeout)


def _outcome(stats: dict[str, int]) -> str:
    if stats["runs_emitted"]:
        return "delivered"
    if stats["runs_stored"]:
        return "stored"
    if stats["runs_dropped"] or stats["build_failures"]:
        return "dropped"
    return "undelivered"


def _write_json_lines(path: Path, documents: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in documents), encoding="utf-8")


def _tool_span(tracer: Tracer, tool: str) -> AbstractContextManager[Span]:
    """A tool call as an agent framework records it: an OpenTelemetry GenAI ``execute_tool`` span.

    The reference SDK's events name no tool; the bridge makes a record on or under such a span
    about the span's tool (``tool.<gen_ai.tool.name>``), so a denial lands on the tool denied.
    """
    return tracer.start_as_current_span(
        f"execute_tool {tool}", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
    )


def run_demo(
    timeout_s: float = 30.0,
    client: OpenLineageClient | None = None,
    store_file: Path | None = None,
    lineage_file: Path | None = None,
) -> DemoResult:
    """Run one governed session, within ``timeout_s`` seconds in all.

    The client defaults to the OpenLineage configuration in effect. ``store_file`` receives the
    governance store (full AIGP events), ``lineage_file`` a copy of every RunEvent emitted, both as
    JSON lines.
    """
    deadline = time.monotonic() + timeout_s
    instrumentor = AIGPInstrumentor(
        agent_id="agent.trading-bot-v2", agent_name="Trading Bot", org_id="org.finco"
    )
    governance_store: list[dict[str, Any]] = []
    own_client = client is None
    client = default_client() if client is None else client
    if lineage_file is not None:
        client = OpenLineageClient(transport=_CopyToFile(client.transport, lineage_file))
    processor = AIGPLineageSpanProcessor(  # the shutdown below is bounded by the deadline anyway
        client=client, job_namespace="finco.trading", shutdown_timeout_s=max(timeout_s, 0.1)
    )

    def to_store(event: dict[str, Any]) -> None:
        governance_store.append(event)
        processor.ingest_aigp_event(event)

    instrumentor.event_callback = to_store
    resource = Resource.create({**instrumentor.get_resource_attributes(), "service.name": "trading-bot"})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("aigp_otel_bridge.tools.demo")
    spans = 0

    with tracer.start_as_current_span("invoke") as root:
        spans += 1
        trace_id = f"{root.get_span_context().trace_id:032x}"
        with tracer.start_as_current_span("load-policy"):
            instrumentor.inject_success(
                "policy.trading-limits", 4, "Max position: $10M per instrument.",
                data_classification="confidential",
            )
        with tracer.start_as_current_span("render-prompt"):
            instrumentor.prompt_used(
                "prompt.trader-system", 3, "You are a careful trading assistant.",
                data_classification="internal",
            )
        with _tool_span(tracer, "market-data"):
            instrumentor.tool_invoked("tool.market-data", content="GET /quotes?symbol=ACME")
        with tracer.start_as_current_span("prove-governance"):
            instrumentor.multi_resource_governance_proof(
                [
                    ("policy", "policy.trading-limits", "Max position: $10M per instrument."),
                    ("prompt", "prompt.trader-system", "You are a careful trading assistant."),
                    ("tool", "tool.market-data", "GET /quotes?symbol=ACME"),
                ],
                data_classification="confidential",
            )
        with _tool_span(tracer, "wire-transfer"):
            instrumentor.tool_denied("tool.wire-transfer", "wire transfers need human approval")
        spans += 5
        with tracer.start_as_current_span("http-get"):
            spans += 1

    if store_file is not None:
        _write_json_lines(store_file, governance_store)
    processor.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000))
    transport = client.transport.kind or type(client.transport).__name__

    def shut_down() -> None:
        provider.shutdown()
        if own_client:
            client.close(timeout=max(0.0, deadline - time.monotonic()))

    # Shutdown waits for delivery and closes the client: bounded by what is left of the timeout.
    closing = threading.Thread(target=shut_down, name="aigp-demo-shutdown", daemon=True)
    closing.start()
    closing.join(max(0.0, deadline - time.monotonic()))
    return DemoResult(
        trace_id=trace_id,
        run_id=run_id_for_trace(trace_id),
        job="finco.trading/" + job_name_for(instrumentor.agent_id, None, "invoke"),
        spans=spans,
        aigp_events=len(governance_store),
        transport=str(transport),
        outcome=_outcome(processor.stats()),
    )
