"""The ``aigp-otel-bridge demo`` command, started the way a user starts it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.schemas import validate_run_event


def _command() -> list[str]:
    script = shutil.which("aigp-otel-bridge", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "aigp_otel_bridge"]


def _run(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    return subprocess.run(
        [*_command(), "demo", "--timeout", "20"],
        env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def to_a_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    """The demo with the OpenLineage file transport: its output and the RunEvents in the file."""
    folder = tmp_path_factory.mktemp("demo")
    events_file = folder / "events.jsonl"
    result = _run(
        {
            "OPENLINEAGE__TRANSPORT__TYPE": "file",
            "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(events_file),
            "OPENLINEAGE__TRANSPORT__APPEND": "true",
        },
        folder,
    )
    assert result.returncode == 0, result.stderr
    return result, [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]


def test_demo_sends_one_valid_run_event_where_the_openlineage_config_says(
    to_a_file: tuple[subprocess.CompletedProcess[str], list[Any]],
) -> None:
    result, events = to_a_file
    assert len(events) == 1
    event = events[0]
    validate_run_event(event)
    governance = event["run"]["facets"]["aigp_governance"]
    trace_id = governance["traceId"]
    assert f"trace id  {trace_id}" in result.stdout
    assert event["run"]["runId"].replace("-", "") == trace_id
    assert governance["enforcementResult"] == "denied"  # the demo's wire transfer is denied
    assert governance["hashType"] == "merkle-sha256"
    assert event["job"] == {**event["job"], "namespace": "finco.trading", "name": "trading-bot-v2.invoke"}
    names = {d["name"] for d in event["inputs"]}
    expected = {"policy.trading-limits", "prompt.trader-system", "tool.market-data", "tool.wire-transfer"}
    assert expected <= names



def test_the_demos_denied_tool_is_an_input_denied_and_the_others_allowed(
    to_a_file: tuple[subprocess.CompletedProcess[str], list[Any]],
) -> None:
    """The SDK's denial names no tool; made under the tool's ``execute_tool`` span, it is about it."""
    (event,) = to_a_file[1]
    resources = {d["name"]: d["inputFacets"]["aigp_resource"] for d in event["inputs"]}
    denied = resources.pop("tool.wire-transfer")
    assert denied["resourceType"] == "tool"
    assert (denied["enforcementResult"], denied["governed"]) == ("denied", True)
    assert resources and all(r["enforcementResult"] == "allowed" for r in resources.values())
    assert all(r["governed"] for r in resources.values())
    governance = event["run"]["facets"]["aigp_governance"]
    assert (governance["deniedEventCount"], governance["ungovernedResourceCount"]) == (1, 0)


def test_demo_prints_the_run_event_to_the_console_without_configuration(tmp_path: Path) -> None:
    result = _run({"HOME": str(tmp_path)}, tmp_path)
    assert result.returncode == 0, result.stderr
    document = re.search(r"^\{\n.*?^\}$", result.stdout, re.MULTILINE | re.DOTALL)
    assert document, result.stdout
    event = json.loads(document.group(0))
    validate_run_event(event)
    assert event["run"]["runId"] in result.stdout.split("OpenLineage backend", 1)[1]


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_command_line_answers_version_and_help(flag: str) -> None:
    result = subprocess.run([*_command(), flag], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert ("demo" in result.stdout) if flag == "--help" else re.search(r"\d+\.\d+\.\d+", result.stdout)
