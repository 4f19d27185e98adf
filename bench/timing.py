"""Timed measurements: interleaved rounds, a fresh processor per window, median and minimum.

In the span and session measurements each processor runs alone: the spans are made before the
window (``setups.made_beforehand``) and the window replays their starts and ends to it, up to the
return of its ``force_flush``, which waits for its workers (the batch exporter's thread; the
bridge's correlation and delivery threads), so their work is inside the window. The sustained
measurement makes its sessions inside the window, as an application does. Each window is read
on two clocks: the process CPU time of all its threads (``time.process_time_ns``, the figure the
guard uses: it does not count the time other processes on a shared machine take from this one)
and the wall time (``time.perf_counter_ns``, a second column). The garbage collector stays
enabled in every window (``gc.collect()`` runs before each one, so each starts from the same
state); the cost of collections that a processor's allocations cause is part of its cost.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Tracer

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.config import DEFAULT_PRODUCER
from bench import workloads
from bench.setups import CONFIGS, made_beforehand, make_setup, null_client, replay

HAND_BUILT = "hand_built"
CLOCK = "process CPU time of all threads (time.process_time_ns); wall time (time.perf_counter_ns) beside it"


@dataclass
class Window:
    """One timed window: process CPU of all threads, and wall time."""

    cpu_ns: int
    wall_ns: int
    problems: list[str]


class Clock:
    """Reads both clocks at the start and the end of a window."""

    def __init__(self) -> None:
        self._cpu = time.process_time_ns()
        self._wall = time.perf_counter_ns()

    def stop(self, problems: list[str] | None = None) -> Window:
        wall = time.perf_counter_ns() - self._wall
        return Window(time.process_time_ns() - self._cpu, wall, problems or [])


@dataclass
class Case:
    """The windows of one measurement, per configuration, in round order."""

    name: str
    unit: str
    """What one item is: a span, a session."""
    items: int
    """Items per window."""
    rounds_ns: dict[str, list[int]] = field(default_factory=dict)
    """Process CPU time of each window."""
    wall_ns: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def per_item_ns(self, config: str, *, wall: bool = False, median: bool = False) -> float:
        """The least disturbed window of ``config`` (or the median one: what the guard reads), per item."""
        windows = (self.wall_ns if wall else self.rounds_ns)[config]
        return (statistics.median(windows) if median else min(windows)) / self.items

    def extra_ns(self, config: str, *, wall: bool = False, median: bool = False) -> float:
        """What ``config`` adds per item to the no-processor floor."""
        return self.per_item_ns(config, wall=wall, median=median) - self.per_item_ns(
            "none", wall=wall, median=median
        )

    def to_json(self) -> dict[str, Any]:
        configs = list(self.rounds_ns)
        extra = [c for c in configs if c not in ("none", HAND_BUILT)] if "none" in configs else []
        return {
            "unit": self.unit,
            "items_per_window": self.items,
            "rounds": len(self.rounds_ns[configs[0]]),
            "clock": CLOCK,
            "window_ns": self.rounds_ns,
            "wall_window_ns": self.wall_ns,
            "min_ns_per_item": {c: self.per_item_ns(c) for c in configs},
            "median_ns_per_item": {c: self.per_item_ns(c, median=True) for c in configs},
            "extra_ns_per_item": {c: self.extra_ns(c) for c in extra},
            "median_extra_ns_per_item": {c: self.extra_ns(c, median=True) for c in extra},
            "wall_min_ns_per_item": {c: self.per_item_ns(c, wall=True) for c in configs},
            "wall_extra_ns_per_item": {c: self.extra_ns(c, wall=True) for c in extra},
            "problems": self.problems,
        }


Work = Callable[[Tracer], None]


Others = Mapping[str, "type[AIGPLineageSpanProcessor]"]
"""Further bridge configurations: their name and the processor class of another checkout."""


def _span_window(config: str, work: Work, *, spans: int, runs: int, others: Others,
                 beforehand: bool = False) -> Window:
    """One window of ``config``: the application makes the spans in it, or (``beforehand``) they
    are made before it and the window replays them to the processor alone."""
    setup = make_setup(config, queue_hint=spans, processor=others.get(config))
    steps = made_beforehand(work) if beforehand else []
    gc.collect()
    clock = Clock()
    if beforehand:
        replay(setup.processor, steps)
    else:
        work(setup.tracer)
    setup.flush()
    window = clock.stop()
    window.problems = setup.check(spans=spans, runs=runs)
    setup.shutdown()
    return window


def _hand_window(sessions: list[workloads.HandSession]) -> Window:
    client, transport = null_client()
    gc.collect()
    clock = Clock()
    workloads.run_hand_built(client, sessions, DEFAULT_PRODUCER)
    window = clock.stop()
    client.close(timeout=1.0)
    if transport.events != len(sessions):
        window.problems.append(f"hand_built: {transport.events} emitted")
    return window


def interleave(case: Case, windows: dict[str, Callable[[], Window]], rounds: int) -> Case:
    """One untimed warm-up of each window, then ``rounds`` rounds taking each in turn."""
    for window in windows.values():  # warm-up: imports, caches, first-call costs
        window()
    case.rounds_ns = {name: [] for name in windows}
    case.wall_ns = {name: [] for name in windows}
    for _ in range(rounds):
        for name, window in windows.items():
            measured = window()
            case.rounds_ns[name].append(measured.cpu_ns)
            case.wall_ns[name].append(measured.wall_ns)
            case.problems.extend(p for p in measured.problems if p not in case.problems)
    return case


def measure_spans(
    name: str, spans: int, rounds: int, *, governed: bool, beforehand: bool, others: Others | None = None
) -> Case:
    """Child spans with ordinary attributes, in traces of 100; governed ones carry one ``aigp.*``
    span event each. ``beforehand``: the processor alone, on spans made before each window."""
    events = workloads.span_events(spans) if governed else None
    roots = workloads.roots_for(spans)

    def work(tracer: Tracer) -> None:
        workloads.run_spans(tracer, spans, events)

    def window(config: str) -> Callable[[], Window]:
        return lambda: _span_window(config, work, spans=spans + roots, runs=roots if governed else 0,
                                    others=others or {}, beforehand=beforehand)

    configs = (*CONFIGS, *(others or {}))
    return interleave(Case(name, "span", spans), {c: window(c) for c in configs}, rounds)


def measure_sessions(sessions: int, rounds: int, *, beforehand: bool, others: Others | None = None) -> Case:
    """Governed agent sessions, and the same number of RunEvents built and emitted by hand.
    ``beforehand``: the processor alone, on sessions made before each window."""
    events = workloads.session_events(sessions)
    hand = workloads.hand_sessions(events)
    spans = sessions * (1 + len(workloads.SESSION_CHILDREN))

    def work(tracer: Tracer) -> None:
        workloads.run_sessions(tracer, events)

    def window(config: str) -> Callable[[], Window]:
        return lambda: _span_window(config, work, spans=spans, runs=sessions, others=others or {},
                                    beforehand=beforehand)

    windows = {c: window(c) for c in (*CONFIGS, *(others or {}))}
    windows[HAND_BUILT] = lambda: _hand_window(hand)
    return interleave(Case("governed_session", "session", sessions), windows, rounds)


def measure_sustained(sessions: int, rounds: int) -> dict[str, Any]:
    """Governed sessions per second through one process: the application thread makes them as
    fast as it can, the bridge delivers every one to the null (serialising) transport.

    The queues are sized so that nothing is shed (a shed run would make the rate a lie; the
    window is checked). The rate counts all the process does, the application's own spans
    included: sessions over the window's process CPU time (what the guard reads), and over wall time.

    Interleaved with it, the ceiling no bridge could pass: the same sessions made with no span
    processor, plus one hand-built RunEvent per session emitted through the client on the same
    transport; the ceiling's window is the sum of the two in one round.
    """
    events = workloads.session_events(sessions)
    hand = workloads.hand_sessions(events)
    spans = sessions * (1 + len(workloads.SESSION_CHILDREN))

    def work(tracer: Tracer) -> None:
        workloads.run_sessions(tracer, events)

    def window() -> Window:
        setup = make_setup("bridge", queue_hint=spans, max_queue_size=spans + 64)
        gc.collect()
        clock = Clock()
        work(setup.tracer)
        setup.flush()
        measured = clock.stop()
        measured.problems = setup.check(runs=sessions)
        setup.shutdown()
        return measured

    windows = {
        "bridge": window,
        "none": lambda: _span_window("none", work, spans=spans, runs=0, others={}),
        HAND_BUILT: lambda: _hand_window(hand),
    }
    case = interleave(Case("sustained_sessions", "session", sessions), windows, rounds)
    cpu, wall = case.rounds_ns["bridge"], case.wall_ns["bridge"]
    ceiling = [a + b for a, b in zip(case.rounds_ns["none"], case.rounds_ns[HAND_BUILT], strict=True)]
    return {
        "unit": "sessions per second",
        "sessions_per_window": sessions,
        "rounds": rounds,
        "clock": CLOCK,
        "window_ns": cpu,
        "wall_window_ns": wall,
        "per_cpu_second": _rates(sessions, cpu),
        "per_wall_second": _rates(sessions, wall),
        "ceiling_window_ns": ceiling,
        "ceiling_per_cpu_second": _rates(sessions, ceiling),
        "problems": case.problems,
    }


def _rates(items: int, windows_ns: list[int]) -> dict[str, float]:
    return {"best": items * 1e9 / min(windows_ns), "median": items * 1e9 / statistics.median(windows_ns)}
