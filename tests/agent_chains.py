"""Chains of runs made by real agent processes: the three agents of ``examples/multi_agent`` (a
planner calling a researcher calling a librarian over HTTP, linked by W3C trace context and the
bridge's ``aigp_lineage`` propagator), and small helpers to read and tamper with their files."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "multi_agent" / "run.py"


def run_three_agents(directory: Path, **environment: str) -> list[dict[str, Any]]:
    """Run the example's three agent processes; their RunEvents (planner, researcher, librarian).
    ``directory`` then holds ``lineage.jsonl`` and ``store.jsonl``. ``environment`` is added to a
    clean environment (no OTEL_* or OPENLINEAGE* of the caller's)."""
    spec = importlib.util.spec_from_file_location("multi_agent_run", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    directory.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("OTEL_", "OPENLINEAGE")):
                patch.delenv(name)
        for name, value in environment.items():
            patch.setenv(name, value)
        events: list[dict[str, Any]] = module.run_agents(directory)
    return events


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_lines(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    return path


def by_job(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Events by the first part of their job name: ``planner``, ``researcher``, ``librarian``."""
    return {event["job"]["name"].split(".")[0]: event for event in events}
