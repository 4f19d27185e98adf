"""examples/gateway: the one-command run prints a valid RunEvent; the Collector configuration routes
by trace id and fans out to the observability backend and the gateways."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.schemas import SCHEMAS_DIR, validate_run_event

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway"


def test_one_command_run_prints_the_run_event() -> None:
    pytest.importorskip("aigp")
    done = subprocess.run([sys.executable, str(EXAMPLE / "run.py")], capture_output=True, text=True,
                          timeout=180, check=True)
    event = json.loads(done.stdout)
    assert event["eventType"] == "COMPLETE"
    assert event["job"]["namespace"] == "finco.trading"
    governance = event["run"]["facets"]["aigp_governance"]
    assert (governance["enforcementResult"], governance["eventCount"]) == ("denied", 3)
    if SCHEMAS_DIR.is_dir():
        validate_run_event(event)


def test_collector_configuration_routes_by_trace_id() -> None:
    config = yaml.safe_load((EXAMPLE / "collector.yaml").read_text())
    lineage = config["exporters"]["loadbalancing/lineage"]
    assert lineage["routing_key"] == "traceID"
    assert len(lineage["resolver"]["static"]["hostnames"]) >= 2
    pipeline = config["service"]["pipelines"]["traces"]
    assert set(pipeline["exporters"]) == {"otlp/observability", "loadbalancing/lineage"}
    assert set(pipeline["receivers"]) <= set(config["receivers"])
    assert set(pipeline["processors"]) <= set(config["processors"])
