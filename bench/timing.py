"""Timed measurements: interleaved rounds, a fresh provider per window, minimum over rounds.

A window runs from just before the first span starts to the return of ``force_flush``, which
waits for the processors' workers (the batch exporter's thread; the bridge's correlation and
delivery threads). On a two-core machine the workers' CPU is therefore inside the window.
The garbage collector stays enabled in every window (``gc.collect()`` runs before each one, so
each starts from the same state); the cost of collections that a processor's allocations
cause is part of its cost.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Tracer

from aigp_otel_bridge.config import DEFAULT_PRODUCER
from bench import workloads
from bench.setups import CONFIGS, make_setup, null_client

HAND_BUILT = "hand_built"


@dataclass
class Case:
    """The windows of one measurement, per configuration, in round order."""

    name: str
    unit: str
    """What one item is: a span, a session."""
    items: int
    """Items per window."""
    rounds_ns: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def per_item_ns(self, config: str) -> float:
        """The least disturbed window of ``config``, per item."""
        return min(self.rounds_ns[config]) / self.items

    def extra_ns(self, config: str) -> float:
        """What ``config`` adds per item to the no-processor floor."""
        return self.per_item_ns(config) - self.per_item_ns("none")

    def to_json(self) -> dict[str, Any]:
        configs = list(self.rounds_ns)
        return {
            "unit": self.unit,
            "items_per_window": self.items,
            "rounds": len(self.rounds_ns[configs[0]]),
            "window_ns": self.rounds_ns,
            "min_ns_per_item": {c: self.per_item_ns(c) for c in configs},
            "extra_ns_per_item": {c: self.extra_ns(c) for c in configs if c not in ("none", HAND_BUILT)},
            "problems": self.problems,
        }


Work = Callable[[Tracer], None]


def _span_window(config: str, work: Work, *, spans: int, runs: int) -> tuple[int, list[str]]:
    setup = make_setup(config, queue_hint=spans)
    gc.collect()
    start = time.perf_counter_ns()
    work(setup.tracer)
    setup.flush()
    elapsed = time.perf_counter_ns() - start
    problems = setup.check(spans=spans, runs=runs)
    setup.shutdown()
    return elapsed, problems


def _hand_window(sessions: list[workloads.HandSession]) -> tuple[int, list[str]]:
    client, transport = null_client()
    gc.collect()
    start = time.perf_counter_ns()
    workloads.run_hand_built(client, sessions, DEFAULT_PRODUCER)
    elapsed = time.perf_counter_ns() - start
    client.close(timeout=1.0)
    problems = [] if transport.events == len(sessions) else [f"hand_built: {transport.events} emitted"]
    return elapsed, problems


def _interleave(case: Case, windows: dict[str, Callable[[], tuple[int, list[str]]]], rounds: int) -> Case:
    for window in windows.values():  # warm-up: imports, caches, first-call costs
        window()
    case.rounds_ns = {name: [] for name in windows}
    for _ in range(rounds):
        for name, window in windows.items():
            elapsed, problems = window()
            case.rounds_ns[name].append(elapsed)
            case.problems.extend(p for p in problems if p not in case.problems)
    return case


def measure_spans(name: str, spans: int, rounds: int, *, governed: bool) -> Case:
    """Child spans with ordinary attributes; governed ones carry one ``aigp.*`` span event each."""
    events = workloads.span_events(spans) if governed else None
    roots = workloads.roots_for(spans)

    def work(tracer: Tracer) -> None:
        workloads.run_spans(tracer, spans, events)

    def window(config: str) -> Callable[[], tuple[int, list[str]]]:
        return lambda: _span_window(config, work, spans=spans + roots, runs=roots if governed else 0)

    return _interleave(Case(name, "span", spans), {c: window(c) for c in CONFIGS}, rounds)


def measure_sessions(sessions: int, rounds: int) -> Case:
    """Governed agent sessions, and the same number of RunEvents built and emitted by hand."""
    events = workloads.session_events(sessions)
    hand = workloads.hand_sessions(events)
    spans = sessions * (1 + len(workloads.SESSION_CHILDREN))

    def work(tracer: Tracer) -> None:
        workloads.run_sessions(tracer, events)

    def window(config: str) -> Callable[[], tuple[int, list[str]]]:
        return lambda: _span_window(config, work, spans=spans, runs=sessions)

    windows = {c: window(c) for c in CONFIGS}
    windows[HAND_BUILT] = lambda: _hand_window(hand)
    return _interleave(Case("governed_session", "session", sessions), windows, rounds)
