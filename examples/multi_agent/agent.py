"""One agent process of the multi-agent example; ``run.py`` starts three of them.

``python agent.py ROLE EVENTS_FILE STORE_FILE [CALLEE_PORT]``:

- ``librarian`` serves one HTTP request: it fetches a filing, and is refused a bulk download;
- ``researcher`` serves one HTTP request (a question from the planner) and asks the librarian;
- ``planner`` plans, and asks the researcher.

A serving agent prints its port first (``run.py`` reads it). Each process has its own
``TracerProvider`` and bridge, writing its RunEvents to ``EVENTS_FILE`` with the OpenLineage file
transport and its full AIGP events to ``STORE_FILE`` (its governance store, for ``verify``). Each
call carries the W3C ``traceparent`` header and the bridge's ``aigp-lineage`` header
(``AIGPLineagePropagator``: the caller's run id and job and the chain's root, never any governance
content), so the callee's run gets OpenLineage's ``parent`` facet pointing at the caller's run.
The spans follow the OpenTelemetry GenAI conventions, as agent frameworks emit them: the tools and
models they name become inputs of each run.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

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


class Agent:
    """A process's tracing: its own bridge and governance store, and both propagators for the
    calls it makes or serves."""

    def __init__(self, service: str, events_file: str, store_file: str) -> None:
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), AIGPLineagePropagator()])
        )
        client = OpenLineageClient(
            config={"transport": {"type": "file", "log_file_path": events_file, "append": True}}
        )
        self.bridge = AIGPLineageSpanProcessor(client=client, job_namespace="acme.agents")
        self.store = open(store_file, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.aigp = AIGPInstrumentor(agent_id=f"agent.{service}", org_id="org.acme",
                                     event_callback=self.governed)
        resource = Resource.create({"service.name": service, **self.aigp.get_resource_attributes()})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(self.bridge)
        self.tracer = self.provider.get_tracer(service)

    def governed(self, event: dict[str, Any]) -> None:
        """Each full AIGP event goes to the governance store and to the bridge."""
        self.store.write(json.dumps(event) + "\n")
        self.bridge.ingest_aigp_event(event)

    def span(self, name: str, **options: Any) -> Any:
        return self.tracer.start_as_current_span(name, **options)

    def tool(self, name: str) -> Any:
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        return self.span(f"execute_tool {name}", attributes=attributes)

    def invoke(self, name: str, **options: Any) -> Any:
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}
        return self.span(f"invoke_agent {name}", attributes=attributes, **options)

    def ask(self, port: str, path: str, question: str) -> dict[str, str]:
        """Call another agent over HTTP, carrying both headers; returns the headers sent."""
        headers: dict[str, str] = {}
        propagate.inject(headers)  # traceparent and aigp-lineage
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=question.encode(),
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        return headers

    def close(self) -> None:
        self.provider.shutdown()  # flushes the bridge
        self.store.close()


def serve_once(agent: Agent, role: str, work: Callable[[str], bytes]) -> None:
    """Serve one POST: ``work`` runs inside the agent's server span, continuing the caller's trace."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            question = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            context = propagate.extract({key.lower(): value for key, value in self.headers.items()})
            with agent.invoke(role, context=context, kind=trace.SpanKind.SERVER):
                answer = work(question)
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


def librarian(agent: Agent) -> None:
    def fetch(question: str) -> bytes:
        with agent.tool("fetch_filing"):
            agent.aigp.tool_invoked("fetch_filing", content=f"fetch: {question}")
        with agent.tool("download_archive"):  # refused: the input is marked denied
            agent.aigp.tool_denied("download_archive", "bulk downloads need human approval")
        return b"10-K 2025"

    serve_once(agent, "librarian", fetch)


def researcher(agent: Agent, librarian_port: str) -> None:
    def research(question: str) -> bytes:
        agent.aigp.prompt_used("prompt.researcher", 2, "Answer with sources.")
        with agent.span("chat gpt-4o", attributes=MODEL):
            pass
        with agent.tool("search_filings"):
            agent.aigp.tool_invoked("search_filings", content=f"search: {question}")
        with agent.tool("ask_librarian"):
            agent.ask(librarian_port, "/fetch", "ACME 10-K 2025")
        return b"three filings found"

    serve_once(agent, "researcher", research)


def planner(agent: Agent, researcher_port: str) -> None:
    with agent.invoke("planner"):
        agent.aigp.inject_success("policy.research-budget", 1, "At most one research call per plan.")
        with agent.span("chat gpt-4o", attributes=MODEL):
            pass
        with agent.tool("ask_researcher"):
            agent.aigp.tool_invoked("ask_researcher", content="ACME filings 2025")
            headers = agent.ask(researcher_port, "/research", "ACME filings 2025")
    print(json.dumps(headers), flush=True)


def main(argv: list[str]) -> None:
    role, events_file, store_file, *port = argv
    agent = Agent(role, events_file, store_file)
    try:
        if role == "librarian":
            librarian(agent)
        elif role == "researcher":
            researcher(agent, port[0])
        else:
            planner(agent, port[0])
    finally:
        agent.close()


if __name__ == "__main__":
    main(sys.argv[1:])
