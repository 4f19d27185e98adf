"""``opentelemetry-instrument`` attaches the bridge to an agent that has no bridge code.

Each test runs ``examples/zero_code/agent.py`` in a subprocess exactly as a user would, with the
OpenLineage file transport, and reads the RunEvents the process left behind when it exited.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.schemas import validate_run_event

AGENT = Path(__file__).resolve().parents[1] / "examples" / "zero_code" / "agent.py"
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
_OWN_PREFIXES = ("OTEL_", "OPENLINEAGE", "AIGP_BRIDGE_")


def _run(tmp_path: Path, **env: str) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Run the agent under opentelemetry-instrument; return its printed trace ids and the events."""
    assert INSTRUMENT.exists(), f"{INSTRUMENT} missing: pip install -e '.[test]'"
    events_file = tmp_path / "events.jsonl"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    environ.update(
        HOME=str(tmp_path),  # no ~/.openlineage/openlineage.yml of the developer's
        OTEL_TRACES_EXPORTER="aigp_openlineage",
        OTEL_SERVICE_NAME="support-agent",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OPENLINEAGE__TRANSPORT__TYPE="file",
        OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=str(events_file),
        OPENLINEAGE__TRANSPORT__APPEND="true",
    )
    environ.update(env)
    result = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(AGENT)],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    # Other exporters may log their own failures (an OTLP exporter with no collector does, in some
    # SDK versions, with a traceback); none may come from the bridge.
    assert "aigp_otel_bridge" not in result.stderr, result.stderr
    traces: dict[str, list[str]] = {"governed": [], "ungoverned": []}
    for line in result.stdout.splitlines():
        kind, trace_id = line.split()
        traces[kind].append(trace_id)
    assert len(traces["governed"]) == 3 and len(traces["ungoverned"]) == 1, result.stdout
    events = []
    if events_file.exists():
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    return traces, events


def _by_trace(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        found.setdefault(event["run"]["facets"]["aigp_governance"]["traceId"], []).append(event)
    return found


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_one_valid_run_event_per_governed_trace_and_none_for_the_ungoverned(tmp_path: Path) -> None:
    traces, events = _run(
        tmp_path,
        OTEL_RESOURCE_ATTRIBUTES="aigp.agent.id=agent.support-bot,service.namespace=acme.support",
    )
    by_trace = _by_trace(events)
    assert sorted(by_trace) == sorted(traces["governed"]), "one run per governed trace, none for the rest"
    for trace_id, (event,) in by_trace.items():
        validate_run_event(event)
        assert event["eventType"] == "COMPLETE"
        assert event["run"]["runId"] == str(uuid.UUID(hex=trace_id))
        governance = event["run"]["facets"]["aigp_governance"]
        assert governance["eventCount"] == 3 and governance["complete"] is True
        assert governance["agentId"] == "agent.support-bot"  # from OTEL_RESOURCE_ATTRIBUTES
        job = event["job"]
        assert (job["namespace"], job["name"]) == ("acme.support", "support-bot.handle-request")
        names = {dataset["name"] for dataset in event["inputs"]}
        assert "prompt.support-system" in names and any(name.startswith("policy.") for name in names)


def test_bridge_settings_and_service_name_come_from_the_environment(tmp_path: Path) -> None:
    traces, events = _run(
        tmp_path, AIGP_BRIDGE_JOB_NAMESPACE="ops.lineage", AIGP_BRIDGE_EMIT_UNGOVERNED="true"
    )
    by_trace = _by_trace(events)
    assert sorted(by_trace) == sorted(traces["governed"] + traces["ungoverned"])
    for event in events:
        validate_run_event(event)
        assert event["job"]["namespace"] == "ops.lineage"
    (health,) = by_trace[traces["ungoverned"][0]]
    assert health["job"]["name"] == "support-agent.health-check"  # OTEL_SERVICE_NAME: no agent id
    assert health["run"]["facets"]["aigp_governance"]["eventCount"] == 0


def test_beside_otlp_with_no_collector_the_runs_still_arrive(tmp_path: Path, refused_port: int) -> None:
    traces, events = _run(
        tmp_path,
        OTEL_TRACES_EXPORTER="otlp,aigp_openlineage",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{refused_port}",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    by_trace = _by_trace(events)
    assert sorted(by_trace) == sorted(traces["governed"])
    for (event,) in by_trace.values():
        validate_run_event(event)


def test_otel_sdk_disabled_emits_nothing(tmp_path: Path) -> None:
    _, events = _run(tmp_path, OTEL_SDK_DISABLED="true")
    assert events == []
