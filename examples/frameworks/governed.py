"""What the framework examples share: the bridge and the reference AIGP SDK set up as a user would,
and a support agent's governance: a policy injected before every model request, one tool that is
allowed (``lookup_order``) and one that policy denies (``wire_refund``).

The SDK records each action on the span that is current, or on the span it is given: pass
``span_of`` when the instrumentation does not make its spans current (OpenInference's LangChain
instrumentation), so that the records land on the tool span they are about.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from aigp import AIGPInstrumentor
from offline_model import SCRIPT, offline_openai
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from aigp_otel_bridge import AIGPLineageSpanProcessor

AGENT_NAME = "support_agent"
QUESTION = "Where is order 42? And please refund the $120 I paid for it."
MODEL = "gpt-4o-mini"
INSTRUCTIONS = "You help customers with their orders. Use the tools."
POLICY = "Never promise a refund; refunds above $100 need a human."


def print_console_events() -> None:
    """Show the RunEvents of the OpenLineage console transport (the client's default when nothing is
    configured, e.g. ``OPENLINEAGE_URL``), which logs them at INFO, without every library's INFO."""
    console = logging.getLogger("openlineage.client.transport.console")
    console.setLevel(logging.INFO)
    console.addHandler(logging.StreamHandler())


@contextmanager
def model_server() -> Iterator[str]:
    """The base URL of the OpenAI-compatible server the agent calls: ``OFFLINE_MODEL_URL`` when one
    is already running (the test suite starts its own), else a local one for the duration."""
    running = os.environ.get("OFFLINE_MODEL_URL")
    if running:
        yield running
        return
    with offline_openai(SCRIPT) as base_url:
        yield base_url


class SupportGovernance:
    """The AIGP SDK and the bridge of one process, and the governed tools of the support agent."""

    def __init__(self, service_name: str = "support-svc", span_of: Callable[[], Span | None] | None = None):
        print_console_events()
        self.aigp = AIGPInstrumentor(agent_id="agent.support-bot", org_id="org.acme")
        self.bridge = AIGPLineageSpanProcessor(job_namespace="support")
        self.aigp.event_callback = self.bridge.ingest_aigp_event  # the governance store's view, joined
        self.resource = Resource.create({"service.name": service_name, **self.aigp.get_resource_attributes()})
        self._span_of = span_of or (lambda: None)  # None: the span that is current

    def tracer_provider(self) -> TracerProvider:
        """A tracer provider whose spans reach the bridge (add your exporter beside it)."""
        provider = TracerProvider(resource=self.resource)
        provider.add_span_processor(self.bridge)
        return provider

    def before_model_request(self, request: Any = None) -> None:
        """Govern a model request: the policy its prompt is built with (an httpx request hook)."""
        self.aigp.inject_success("policy.support", 3, POLICY, span=self._span_of())

    async def before_model_request_async(self, request: Any = None) -> None:
        self.before_model_request(request)

    def http_client(self) -> httpx.Client:
        """An HTTP client for the model's SDK that governs every request it sends."""
        return httpx.Client(event_hooks={"request": [self.before_model_request]})

    def async_http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(event_hooks={"request": [self.before_model_request_async]})

    def lookup_order(self, order_id: int) -> str:
        """Look up where an order is."""
        self.aigp.tool_invoked("lookup_order", content=f"SELECT status FROM orders WHERE id = {order_id}",
                               span=self._span_of())
        return f"Order {order_id} has shipped."

    def wire_refund(self, order_id: int, amount: int) -> str:
        """Wire a refund for an order."""
        self.aigp.tool_denied("wire_refund", "refunds above $100 need a human", span=self._span_of())
        return "Refused by policy: refunds above $100 need a human."
