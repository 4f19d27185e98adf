"""One agent process of the multi-agent example; ``run.py`` starts two of them.

``python agent.py researcher EVENTS_FILE`` serves one HTTP request: a research question from the
planner. ``python agent.py planner EVENTS_FILE PORT`` plans, and asks the researcher over HTTP.

Each process has its own ``TracerProvider`` and bridge, writing its RunEvents to ``EVENTS_FILE``
with the OpenLineage file transport. The call carries the W3C ``traceparent`` header and the
bridge's ``aigp-lineage`` header (``AIGPLineagePropagator``: the planner's run id and job, never
any governance content), so the researcher's run gets OpenLineage's ``parent`` facet pointing at
the planner's run. The spans follow the OpenTelemetry GenAI conventions, as agent frameworks emit
them: the tools and models they name become inputs of each run.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

from aigp import AIGPInstrumentor
from openlineage.client import OpenLineageClient
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aigp_otel_bridge import AIGPLineagePropagator, AIGPLineageSpanProcessor

MODEL = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
         "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"}


def setup(service: str, events_file: str) -> tuple[TracerProvider, trace.Tracer, AIGPInstrumentor]:
    """A process's tracing: its own bridge, and both propagators for the calls it makes or serves."""
    propagators = [TraceContextTextMapPropagator(), AIGPLineagePropagator()]
    propagate.set_global_textmap(CompositePropagator(propagators))
    client = OpenLineageClient(
        config={"transport": {"type": "file", "log_file_path": events_file, "append": True}}
    )
    bridge = AIGPLineageSpanProcessor(client=client, job_namespace="acme.agents")
    aigp = AIGPInstrumentor(agent_id=f"agent.{service}", org_id="org.acme",
                            event_callback=bridge.ingest_aigp_event)
    resource = Resource.create({"service.name": service, **aigp.get_resource_attributes()})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(bridge)
    return provider, provider.get_tracer(service), aigp


def researcher(events_file: str) -> None:
    provider, tracer, aigp = setup("researcher", events_file)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            question = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            context = propagate.extract({key.lower(): value for key, value in self.headers.items()})
            span = tracer.start_as_current_span
            with span("POST /research", context=context, kind=trace.SpanKind.SERVER), \
                    span("invoke_agent researcher", attributes={"gen_ai.operation.name": "invoke_agent",
                                                                "gen_ai.agent.name": "researcher"}):
                aigp.prompt_used("prompt.researcher", 2, "Answer with sources.")
                with span("chat gpt-4o", attributes=MODEL):
                    pass
                with span("execute_tool search_filings", attributes={
                        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_filings"}):
                    aigp.tool_invoked("search_filings", content=f"search: {question}")
            answer = b"three filings found"
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)  # tells run.py where to call
    server.handle_request()
    server.server_close()
    provider.shutdown()  # flushes the bridge


def planner(events_file: str, port: str) -> None:
    provider, tracer, aigp = setup("planner", events_file)
    span = tracer.start_as_current_span
    with span("invoke_agent planner", attributes={"gen_ai.operation.name": "invoke_agent",
                                                   "gen_ai.agent.name": "planner"}):
        aigp.inject_success("policy.research-budget", 1, "At most one research call per plan.")
        with span("chat gpt-4o", attributes=MODEL):
            pass
        with span("execute_tool ask_researcher", kind=trace.SpanKind.CLIENT, attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "ask_researcher"}):
            aigp.tool_invoked("ask_researcher", content="ACME filings 2025")
            headers: dict[str, str] = {}
            propagate.inject(headers)  # traceparent and aigp-lineage
            request = urllib.request.Request(f"http://127.0.0.1:{port}/research", data=b"ACME filings 2025",
                                             headers=headers)
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
    provider.shutdown()
    print(json.dumps(headers), flush=True)


if __name__ == "__main__":
    role, events = sys.argv[1], sys.argv[2]
    if role == "researcher":
        researcher(events)
    else:
        planner(events, sys.argv[3])
