"""The gateway fed by the OpenTelemetry JavaScript SDK's OTLP exporters (http/json, http/protobuf,
gRPC) under node: the RunEvent equals the one the in-process processor gives for the same session
made with the Python SDK, apart from what two sessions cannot share (trace id, times)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.conftest import CaptureTransport
from tests.gateway.harness import GatewayProcess

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed: the JavaScript exporters cannot run"
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``npm ci`` from the committed lock file when the modules are missing."""
    if not (JS_DIR / "node_modules").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600,
                       capture_output=True)
    return JS_DIR / "node_modules"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """One gateway per export, so that the test can stop it: once stopped, every trace it took is
    decided and written, and what it wrote is all it will ever write."""
    process = GatewayProcess(tmp_path).wait_ready()
    yield process
    process.kill()


def python_twin() -> dict[str, Any]:
    """The JavaScript session (js/send.mjs), made with the Python SDK, through the processor."""
    transport = CaptureTransport()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "trading-bot", "aigp.agent.id": "agent.trading-bot-v2"})
    )
    client = OpenLineageClient(transport=transport)
    processor = AIGPLineageSpanProcessor(client=client, job_namespace="test.ns")
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests.gateway.js")
    root = tracer.start_span("invoke", attributes={"gen_ai.agent.name": "trader"})
    in_root = trace.set_span_in_context(root)

    def child(name: str, attributes: dict[str, Any], event: tuple[str, dict[str, Any]] | None = None) -> None:
        span = tracer.start_span(name, attributes=attributes, context=in_root)
        if event is not None:
            span.add_event(*event)
        span.end()

    child("load-policy", {}, ("aigp.inject.success", {
        "aigp.event.id": "e-policy", "aigp.event.type": "INJECT_SUCCESS", "aigp.event.category": "inject",
        "aigp.governance.hash": "4f1d1ac775da46b2f13d3120d1c7891735b88a735d8b8e6473c5512d974c3cc9",
        "aigp.governance.hash_type": "sha256", "aigp.data.classification": "confidential",
        "aigp.policy.name": "policy.trading-limits", "aigp.policy.version": 4,
        "aigp.enforcement.result": "allowed", "aigp.sequence.number": 1,
    }))
    child("execute_tool market-data",
          {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "market-data"})
    model = {"gen_ai.request.model": "gpt-x", "gen_ai.provider.name": "openai",
             "gen_ai.usage.input_tokens": 12}
    child("chat", model)
    child("wire-transfer", {}, ("aigp.tool.denied", {
        "aigp.event.id": "e-denied", "aigp.event.type": "TOOL_DENIED", "aigp.event.category": "tool",
        "aigp.enforcement.result": "denied", "aigp.denial.reason": "wire transfers need human approval",
        "aigp.tools.names": ("tool.wire-transfer",), "aigp.sequence.number": 2,
    }))
    root.add_event("exception", {
        "exception.type": "RuntimeError", "exception.message": "order rejected",
        "exception.stacktrace": "at invoke",
    })
    root.set_status(Status(StatusCode.ERROR, "order rejected"))
    root.end()
    assert processor.force_flush(30_000)
    provider.shutdown()
    return transport.wait_for(1)[0]


def without_identity(event: dict[str, Any]) -> dict[str, Any]:
    """The event minus what two sessions cannot share: trace id (run id) and times."""
    event = copy.deepcopy(event)
    del event["run"]["runId"], event["eventTime"], event["run"]["facets"]["nominalTime"]
    del event["run"]["facets"]["aigp_governance"]["traceId"]
    return event


@pytest.mark.parametrize(
    ("protocol", "processor"),
    [("http/json", "batch"), ("http/protobuf", "batch"), ("grpc", "batch"),
     ("http/protobuf", "simple"), ("grpc", "simple")],
)
def test_javascript_exporters(
    node_modules: Path, gateway: GatewayProcess, protocol: str, processor: str
) -> None:
    """Batched, or one span per concurrent request (``SimpleSpanProcessor``): one run either way."""
    assert NODE is not None
    endpoint = gateway.http_url if protocol.startswith("http") else f"http://{gateway.grpc_endpoint}"
    sent = subprocess.run([NODE, "send.mjs", protocol, endpoint], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=120, check=True, env={**os.environ, "SPAN_PROCESSOR": processor})
    trace_id = json.loads(sent.stdout.strip().splitlines()[-1])["traceId"]
    gateway.wait_lineage(1)
    assert gateway.stop() == 0  # a child arriving after the run was decided would now follow as OTHER
    received = gateway.lineage()
    assert len(received) == 1
    event = received[0]
    assert event["run"]["runId"] == str(uuid.UUID(hex=trace_id))
    assert event["run"]["facets"]["aigp_governance"]["traceId"] == trace_id
    assert event["eventType"] == "FAIL"
    assert without_identity(event) == without_identity(python_twin())
