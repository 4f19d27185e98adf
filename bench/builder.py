"""The builder API: one session of three AIGP events, and throughput on the example events.

``builder_session``: a session of three full AIGP events (a policy injection, a tool call, a
memory read, one trace id: copies of the AIGP examples in
``tests/data/examples/aigp-events/``) becomes one RunEvent with
``build_openlineage_run_event`` and ``json.dumps``; the reference is the reference SDK's
``aigp.openlineage.build_openlineage_run_event`` on each of the three events (one RunEvent per
event: it neither validates nor aggregates) and ``json.dumps`` of each. Interleaved rounds,
process CPU time, minimum and median.

``builder_throughput``: ``build_openlineage_run_event`` on each example event (each its own
session). Without the examples folder (an installed package, not a clone) or without the
reference SDK (``pip install aigp``) a measurement is skipped with a note.

``python -m bench builder [--rounds N] [--sessions N] [--quick] [--out FILE]`` runs only these two
measurements and prints the guard's verdict on the builder (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aigp_otel_bridge.openlineage import build_openlineage_run_event
from bench.guard import limit_of
from bench.timing import CLOCK, Case, Clock, Window, interleave

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SESSION_EXAMPLES = ("inject-success-otel.json", "tool-invoked.json", "memory-read.json")
SESSIONS_PER_WINDOW = 200


def examples_dir() -> Path:
    return PROJECT_ROOT / "tests" / "data" / "examples" / "aigp-events"


def _window(work: Callable[[], None], repeat: int) -> Window:
    gc.collect()
    clock = Clock()
    for _ in range(repeat):
        work()
    return clock.stop()


def measure_session(rounds: int, sessions: int = SESSIONS_PER_WINDOW) -> dict[str, Any]:
    """One session of three events: this builder + ``json.dumps`` against the reference SDK's."""
    folder = examples_dir()
    if not all((folder / name).is_file() for name in SESSION_EXAMPLES):
        return {"skipped": f"the example AIGP events {SESSION_EXAMPLES} are not in {folder}"}
    try:
        from aigp.openlineage import build_openlineage_run_event as reference_builder
    except ImportError:
        return {"skipped": "the reference SDK (package aigp) is not installed"}
    events = [json.loads((folder / name).read_text()) for name in SESSION_EXAMPLES]

    def ours() -> None:
        json.dumps(build_openlineage_run_event(events, "bench", "aigp.session"))

    def reference() -> None:
        for event in events:
            json.dumps(reference_builder(event, "bench", "aigp.session"))

    case = interleave(
        Case("builder_session", "session", sessions),
        {"bridge": lambda: _window(ours, sessions), "reference": lambda: _window(reference, sessions)},
        rounds,
    )
    data = case.to_json()
    return {
        "unit": "session of 3 AIGP events",
        "examples": list(SESSION_EXAMPLES),
        "sessions_per_window": sessions,
        "rounds": rounds,
        "clock": data["clock"],
        "window_ns": data["window_ns"],
        "wall_window_ns": data["wall_window_ns"],
        "min_ns_per_item": data["min_ns_per_item"],
        "median_ns_per_item": data["median_ns_per_item"],
        "wall_min_ns_per_item": data["wall_min_ns_per_item"],
        "problems": [],
    }


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

    def build_all() -> None:
        for event in events:
            build_openlineage_run_event(event, "bench", "aigp.example")

    windows = [_window(build_all, loops) for _ in range(rounds)]
    calls = loops * len(events)
    cpu = [w.cpu_ns for w in windows]
    ns_per_event = min(cpu) / calls
    return {
        "unit": "event",
        "folder": str(folder),
        "examples": len(files),
        "built": len(events),
        "refused": refused,
        "calls_per_round": calls,
        "rounds": rounds,
        "clock": CLOCK,
        "window_ns": cpu,
        "wall_window_ns": [w.wall_ns for w in windows],
        "ns_per_event": ns_per_event,
        "median_ns_per_event": statistics.median(cpu) / calls,
        "events_per_second": 1e9 / ns_per_event,
    }


def _us(ns: float) -> str:
    return f"{ns / 1000:,.1f} µs"


def main(argv: list[str] | None = None) -> int:
    """``python -m bench builder``: the builder measurements alone, with the guard's verdict on them."""
    parser = argparse.ArgumentParser(prog="python -m bench builder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness only")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds (default 21)")
    parser.add_argument("--sessions", type=int, default=SESSIONS_PER_WINDOW,
                        help=f"sessions per window (default {SESSIONS_PER_WINDOW})")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    rounds, sessions, loops = (7, 5, 1) if args.quick else (max(args.rounds, 1), max(args.sessions, 1), 20)
    session = measure_session(rounds, sessions)
    throughput = measure_builder(loops, rounds)
    lines = []
    if "skipped" in session:
        lines.append(f"builder API, session of three events: skipped — {session['skipped']}")
    else:
        low, mid = session["min_ns_per_item"], session["median_ns_per_item"]
        lines.append(
            f"session of three events + json.dumps ({rounds} rounds, min / median): builder "
            f"{_us(low['bridge'])} / {_us(mid['bridge'])}, reference SDK x3 {_us(low['reference'])} / "
            f"{_us(mid['reference'])}"
        )
        best, median = low["bridge"] / low["reference"], mid["bridge"] / mid["reference"]
        limit = limit_of("builder_session").limit
        verdict = "met" if median <= limit else "NOT MET"
        lines.append(f"guard: {median:.2f}x (best windows {best:.2f}x) <= {limit}x: {verdict}")
    if "skipped" in throughput:
        lines.append(f"builder throughput: skipped — {throughput['skipped']}")
    else:
        lines.append(
            f"builder on each example event: {_us(throughput['ns_per_event'])} / "
            f"{_us(throughput['median_ns_per_event'])} per event, "
            f"{throughput['events_per_second']:,.0f} events per CPU second ({throughput['built']} examples)"
        )
    print("\n".join(lines))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figures = {"builder_session": session, "builder_throughput": throughput}
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0
