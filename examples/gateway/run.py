"""One command, a gateway and an agent: ``python examples/gateway/run.py``.

Starts ``aigp-otel-bridge serve`` on free loopback ports with lineage going to a file, runs a small
governed agent session that exports its spans over OTLP/HTTP (the agent has no bridge of its
own), stops the gateway with SIGTERM and prints the RunEvent the gateway emitted. Needs the
``demo`` extra (the reference AIGP SDK makes the governance events): from the clone's root,
``pip install -e ".[demo]"``; once the package is published, ``pip install "aigp-otel-bridge[demo]"``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aigp import AIGPInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_gateway(lineage: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {
        **os.environ,
        "OPENLINEAGE__TRANSPORT__TYPE": "file",
        "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(lineage),
        "OPENLINEAGE__TRANSPORT__APPEND": "true",
        "OPENLINEAGE_NAMESPACE": "finco.trading",
    }
    command = [sys.executable, "-m", "aigp_otel_bridge", "serve", "--grpc-endpoint", "none",
               "--http-endpoint", f"127.0.0.1:{port}"]
    gateway = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert gateway.stdout is not None
    line = gateway.stdout.readline()  # the start line says where it listens and where lineage goes
    print(line.strip(), file=sys.stderr)
    if " serving " not in line:
        gateway.kill()
        raise SystemExit("the gateway did not start")
    return gateway, port


def run_agent(port: int) -> None:
    """A governed agent that only exports OTLP: the gateway does the lineage."""
    aigp = AIGPInstrumentor(agent_id="agent.trading-bot-v2", org_id="org.finco")
    provider = TracerProvider(resource=Resource.create({**aigp.get_resource_attributes(),
                                                        "service.name": "trading-bot"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")))
    tracer = provider.get_tracer("examples.gateway")
    with tracer.start_as_current_span("invoke"):
        with tracer.start_as_current_span("load-policy"):
            aigp.inject_success("policy.trading-limits", 4, "Max position: $10M per instrument.",
                                data_classification="confidential")
        with tracer.start_as_current_span("answer"):
            aigp.prompt_used("prompt.trader-system", 3, "You are a careful trading assistant.")
        with tracer.start_as_current_span("wire-transfer"):
            aigp.tool_denied("tool.wire-transfer", "wire transfers need human approval")
    provider.shutdown()  # exports the batch to the gateway


def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        lineage = Path(directory) / "lineage.jsonl"
        gateway, port = start_gateway(lineage)
        try:
            run_agent(port)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (lineage.exists() and lineage.read_text().strip()):
                time.sleep(0.1)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(60)
        if not lineage.exists():
            print("no RunEvent arrived", file=sys.stderr)
            return 1
        for line in lineage.read_text().splitlines():
            print(json.dumps(json.loads(line), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
