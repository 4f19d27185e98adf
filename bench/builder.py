"""Throughput of the builder API on the example AIGP events the project carries.

``build_openlineage_run_event`` is called once per example event (each event a session of its
own), in a loop, in several rounds; the least disturbed round counts. The examples are the
copies in ``tests/data/examples/aigp-events/*.json`` (origin and license in
``tests/data/README.md``); without that folder (an installed package, not a clone) the
measurement is skipped with a note.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

from aigp_otel_bridge.openlineage import build_openlineage_run_event

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def examples_dir() -> Path:
    return PROJECT_ROOT / "tests" / "data" / "examples" / "aigp-events"


def _build_all(events: list[dict[str, Any]], loops: int) -> int:
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(loops):
        for event in events:
            build_openlineage_run_event(event, "bench", "aigp.example")
    return time.perf_counter_ns() - start


def measure_builder(loops: int, rounds: int) -> dict[str, Any]:
    folder = examples_dir()
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        return {"skipped": f"no example AIGP events in {folder}"}
    events: list[dict[str, Any]] = []
    refused: dict[str, str] = {}
    for path in files:
        event = json.loads(path.read_text())
        try:
            build_openlineage_run_event(event, "bench", "aigp.example")
        except (TypeError, ValueError) as error:  # the builder refuses what is not one session
            refused[path.name] = f"{type(error).__name__}: {error}"
            continue
        events.append(event)
    if not events:
        return {"skipped": f"the builder refused every example in {folder}", "refused": refused}
    windows = [_build_all(events, loops) for _ in range(rounds)]
    calls = loops * len(events)
    ns_per_event = min(windows) / calls
    return {
        "unit": "event",
        "folder": str(folder),
        "examples": len(files),
        "built": len(events),
        "refused": refused,
        "calls_per_round": calls,
        "rounds": rounds,
        "window_ns": windows,
        "ns_per_event": ns_per_event,
        "events_per_second": 1e9 / ns_per_event,
    }
