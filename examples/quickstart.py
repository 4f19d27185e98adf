"""Register the bridge by hand beside the reference AIGP SDK, and print the RunEvent.

Run: ``python examples/quickstart.py`` (needs the ``demo`` extra: from the clone's root,
``pip install -e ".[demo]"``; once the package is published, ``pip install "aigp-otel-bridge[demo]"``).
Events go wherever the OpenLineage client is configured to send them; this example forces the
console transport so that it prints.
"""

from __future__ import annotations

import logging

from aigp import AIGPInstrumentor
from openlineage.client import OpenLineageClient
from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bridge = AIGPLineageSpanProcessor(
        client=OpenLineageClient(transport=ConsoleTransport(ConsoleConfig())),
        job_namespace="finco.trading",
    )
    aigp = AIGPInstrumentor(
        agent_id="agent.trading-bot-v2", org_id="org.finco", event_callback=bridge.ingest_aigp_event
    )
    provider = TracerProvider(resource=Resource.create(aigp.get_resource_attributes()))
    provider.add_span_processor(bridge)
    tracer = provider.get_tracer("quickstart")

    with tracer.start_as_current_span("invoke"):
        with tracer.start_as_current_span("load-policy"):
            aigp.inject_success("policy.trading-limits", 4, "Max position: $10M per instrument.")
        with tracer.start_as_current_span("answer"):
            aigp.prompt_used("prompt.trader-system", 3, "You are a careful trading assistant.")

    provider.shutdown()  # flushes the bridge: the RunEvent is printed by the console transport


if __name__ == "__main__":
    main()
