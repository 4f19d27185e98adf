"""Where each configuration's CPU goes, per thread: ``python -m bench threads``.

The guard adds up the CPU of all threads; this says which thread pays it: the application's
(capture on ``on_start`` / ``on_end``), the bridge's correlation worker, its delivery thread, or
the batch processor's export thread. As in the main measurements each processor runs alone on
spans made beforehand, in interleaved rounds. Each thread's CPU is read from Linux's
``/proc/self/task/<tid>/schedstat`` (nanoseconds on CPU) before a window and after its flush;
the application thread's figure is paired with the window of the same round whose processor does
nothing, so what is printed for it is the extra. Minimum and median over rounds.

    python -m bench threads                       # 11 rounds, default sizes
    python -m bench threads --rounds 21 --spans 9900 --sessions 400
    python -m bench threads --switch-interval 0.05   # the application's GIL switch interval
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import sys
import threading
from collections.abc import Callable

from opentelemetry.trace import Tracer

from bench import workloads
from bench.setups import CONFIGS, made_beforehand, make_setup, replay

MAIN = "MainThread"


def thread_cpu_ns() -> dict[str, int]:
    """CPU nanoseconds of each live thread of this process, by thread name (numbered suffixes
    such as ``#2`` dropped, so that windows with fresh threads compare)."""
    names = {thread.native_id: re.sub(r"#\d+$", "", thread.name) for thread in threading.enumerate()}
    spent: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as stat:
                ns = int(stat.read().split()[0])
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), f"thread {tid}")
        spent[name] = spent.get(name, 0) + ns
    return spent


def window(config: str, work: Callable[[Tracer], None], items: int, runs: int) -> dict[str, float]:
    """One window's CPU per item, per thread; raises when the window lost anything."""
    setup = make_setup(config, queue_hint=items * 2)
    steps = made_beforehand(work)
    gc.collect()
    before = thread_cpu_ns()
    replay(setup.processor, steps)
    setup.flush()
    after = thread_cpu_ns()
    problems = setup.check(runs=runs if config == "bridge" else None)
    setup.shutdown()
    if problems:
        raise RuntimeError(f"{config}: {problems}")
    spent = {name: ns - before.get(name, 0) for name, ns in after.items()}
    return {name: ns / items for name, ns in spent.items() if ns > 0}


def measure(label: str, work: Callable[[Tracer], None], items: int, runs: int, rounds: int) -> str:
    """Interleaved rounds of every configuration; the table of one workload."""
    per_round: dict[str, dict[str, list[float]]] = {}
    totals: dict[str, list[float]] = {}
    for round_number in range(rounds + 1):  # the first round warms up and is not kept
        taken = {config: window(config, work, items, runs) for config in CONFIGS}
        if round_number == 0:
            continue
        floor = taken["none"].get(MAIN, 0.0)
        for config in CONFIGS[1:]:
            extras = {name: ns - floor if name == MAIN else ns for name, ns in taken[config].items()}
            totals.setdefault(config, []).append(sum(extras.values()))
            for name, extra in extras.items():
                per_round.setdefault(config, {}).setdefault(name, []).append(extra)
    lines = [f"{label}: CPU per item, min / median over {rounds} rounds ({MAIN}: extra over a processor "
             "that does nothing)"]
    for config, threads in per_round.items():
        lines.append(f"  {config}: all threads {_figure(totals[config])}")
        for name, values in sorted(threads.items(), key=lambda item: -statistics.median(item[1])):
            # The application's row always (its extra can be below zero in a noisy window); of
            # the others, those that did more than wake up once or twice.
            if name == MAIN or statistics.median(values) >= 50:
                lines.append(f"    {name:32} {_figure(values)}")
    return "\n".join(lines)


def _figure(values: list[float]) -> str:
    return f"{min(values) / 1000:9.2f} / {statistics.median(values) / 1000:9.2f} µs"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--spans", type=int, default=4950, help="child spans per window")
    parser.add_argument("--sessions", type=int, default=200, help="governed sessions per window")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval for the run (CPython's default: 0.005 s)")
    args = parser.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(f"GIL switch interval: {sys.getswitchinterval() * 1000:g} ms")
    if not os.path.exists("/proc/self/task"):
        print("bench threads reads /proc/self/task/*/schedstat: Linux only", file=sys.stderr)
        return 2
    spans, sessions = args.spans, args.sessions
    roots = workloads.roots_for(spans)
    events = workloads.span_events(spans)
    session_events = workloads.session_events(sessions)
    cases = (
        ("ungoverned span", lambda tracer: workloads.run_spans(tracer, spans, None), spans, 0),
        ("governed span", lambda tracer: workloads.run_spans(tracer, spans, events), spans, roots),
        ("governed session", lambda tracer: workloads.run_sessions(tracer, session_events), sessions,
         sessions),
    )
    for label, work, items, runs in cases:
        print(measure(label, work, items, runs, args.rounds), flush=True)
    return 0
