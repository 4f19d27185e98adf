"""An agent with no bridge code: run it under ``opentelemetry-instrument`` to get lineage.

    OTEL_TRACES_EXPORTER=otlp,aigp_openlineage OTEL_SERVICE_NAME=support-agent \
    OPENLINEAGE_URL=http://localhost:5000 opentelemetry-instrument python agent.py

It only uses the OpenTelemetry API and the reference ``aigp`` SDK, as an agent would. Each
customer request is one trace: the three governed requests each become one OpenLineage RunEvent;
the health check, with no AIGP action, becomes none. It prints each trace id, to find the runs.
"""

from __future__ import annotations

from aigp import AIGPInstrumentor
from opentelemetry import trace

REQUESTS = (
    ("refund", "policy.refund-limits", 3, "Refunds above $500 need a human approval."),
    ("address-change", "policy.pii-handling", 7, "Never read back full card numbers."),
    ("close-account", "policy.retention-offers", 2, "Offer one retention discount first."),
)

tracer = trace.get_tracer("support-agent")
aigp = AIGPInstrumentor(agent_id="agent.support-bot", org_id="org.acme")


def handle(topic: str, policy: str, version: int, policy_text: str) -> str:
    """One governed request: a root span, a policy injection, a prompt, a tool call."""
    with tracer.start_as_current_span("handle-request") as root:
        root.set_attribute("support.topic", topic)
        with tracer.start_as_current_span("load-policy"):
            aigp.inject_success(policy, version, policy_text, data_classification="confidential")
        with tracer.start_as_current_span("draft-reply"):
            aigp.prompt_used("prompt.support-system", 5, "You are a concise support agent.")
        with tracer.start_as_current_span("call-crm"):
            aigp.tool_invoked("tool.crm-lookup", 1, f"lookup for {topic}")
        return format(root.get_span_context().trace_id, "032x")


def health_check() -> str:
    """Ungoverned work: traced like anything else, but no lineage run is made for it."""
    with tracer.start_as_current_span("health-check") as span:
        with tracer.start_as_current_span("ping-crm"):
            pass
        return format(span.get_span_context().trace_id, "032x")


def main() -> None:
    for request in REQUESTS:
        print("governed", handle(*request), flush=True)
    print("ungoverned", health_check(), flush=True)
    # No flush or shutdown here: opentelemetry-instrument's SDK shuts down at exit, which flushes.


if __name__ == "__main__":
    main()
