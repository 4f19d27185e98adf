"""A malformed OpenLineage configuration never stops the application.

The bridge warns once, naming the problem without the credential, and sends its RunEvents to the
console transport; under ``opentelemetry-instrument`` the exporters listed after ours still run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.telemetry import redact
from tests.factories import instrumented_environ
from tests.schemas import validate_run_event

MALFORMED_URL = "http://lineage:s3cr3t-pw@lineage host:5000/api?api_key=t0ken"
SECRETS = ("s3cr3t-pw", "t0ken")
AGENT = Path(__file__).resolve().parents[1] / "examples" / "zero_code" / "agent.py"
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"


@pytest.fixture
def malformed_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only ``OPENLINEAGE_URL`` configures the client: no openlineage.yml, no other variable."""
    for name in list(os.environ):
        if name.startswith("OPENLINEAGE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENLINEAGE_URL", MALFORMED_URL)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "passed http://user:pa ss@exa mple.com/x?api_key=tok. Failed",
            "passed http://***@exa mple.com/x?*** Failed",
        ),
        ("https://u:p@host.example/lineage", "https://***@host.example/lineage"),
        ("http://host:5000/api/v1/lineage", "http://host:5000/api/v1/lineage"),
        ("Host 'x y' contains invalid character ' '", "Host 'x y' contains invalid character ' '"),
    ],
)
def test_credentials_in_urls_are_masked(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.usefixtures("malformed_url")
def test_a_malformed_url_warns_and_falls_back_to_the_console(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aigp_otel_bridge")
    caplog.set_level(logging.INFO, logger="openlineage.client.transport.console")  # sets the handler's too
    bridge = AIGPLineageSpanProcessor(job_namespace="finco.trading")  # does not raise
    provider = TracerProvider(resource=Resource.create({"service.name": "trading-bot"}))
    provider.add_span_processor(bridge)
    with provider.get_tracer("agent").start_as_current_span("invoke") as root:
        root.add_event("aigp.inject.success", {
            "aigp.event.id": str(uuid.uuid4()),
            "aigp.governance.hash": hashlib.sha256(b"policy").hexdigest(),
            "aigp.policy.name": "policy.trading-limits", "aigp.policy.version": 4,
        })
        trace_id = f"{root.get_span_context().trace_id:032x}"
    assert bridge.force_flush(10_000)
    provider.shutdown()

    warnings = [r.getMessage() for r in caplog.records if r.name == "aigp_otel_bridge"]
    assert len(warnings) == 1, warnings
    assert "Need valid url" in warnings[0] and "console transport" in warnings[0]
    assert "http://***@lineage host" in warnings[0]
    assert not any(secret in caplog.text for secret in SECRETS), caplog.text
    events = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "openlineage.client.transport.console"
    ]
    assert [e["run"]["facets"]["aigp_governance"]["traceId"] for e in events] == [trace_id]
    validate_run_event(events[0])
    assert bridge.stats()["runs_emitted"] == 1


@pytest.mark.usefixtures("malformed_url")
def test_the_warning_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aigp_otel_bridge")
    bridges = [AIGPLineageSpanProcessor() for _ in range(3)]
    for bridge in bridges:
        assert bridge.client.transport.kind == "console"
        bridge.shutdown()
    assert len([r for r in caplog.records if "configuration is unusable" in r.getMessage()]) <= 1


def test_exporters_after_ours_still_run_under_opentelemetry_instrument(tmp_path: Path) -> None:
    environ = instrumented_environ(
        tmp_path,
        OTEL_TRACES_EXPORTER="aigp_openlineage,console",
        OTEL_SERVICE_NAME="support-agent",
        OPENLINEAGE_URL=MALFORMED_URL,
    )
    result = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(AGENT)],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    printed = [line.split()[1] for line in lines if line.startswith(("governed ", "ungoverned "))]
    assert len(printed) == 4, result.stdout
    for trace_id in printed:  # the console exporter printed every trace's spans
        assert f'"trace_id": "0x{trace_id}"' in result.stdout, result.stdout
    assert '"name": "handle-request"' in result.stdout
    assert "configuration is unusable" in result.stderr and "Need valid url" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not any(secret in result.stderr + result.stdout for secret in SECRETS)
