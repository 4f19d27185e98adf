"""Benchmark of aigp-otel-bridge, and the performance guard it is held to, in one run.

Run from the project root::

    python -m bench                    # every measurement and the guard, a few minutes on 2 cores
    python -m bench --quick            # tiny sizes: checks the harness, figures mean nothing
    python -m bench --rounds 21 --spans 9900 --out /tmp/bench.json
    python -m bench builder            # the builder API measurements alone (see SUB_COMMANDS)

Configurations, each made afresh for every timed window (and shut down after it): ``none`` (a
processor whose hooks do nothing, or no processor), ``batch`` (the SDK's ``BatchSpanProcessor``
with an exporter that drops), ``bridge`` (``AIGPLineageSpanProcessor``, ``OpenLineageClient`` on
a null transport that only serialises with ``Serde.to_json``).

Method: interleaved rounds (none, batch, bridge, none, ...; at least seven), one untimed warm-up
first, ``gc.collect()`` before each window and the collector enabled in it. The span and session
measurements time each processor alone: the spans are made and ended before the window, and the
window replays their starts and ends to the processor and ends when its ``force_flush`` returns
(its worker threads' work is inside). Windows are read in process CPU time of all threads (what
the guard uses) and in wall time (a second column). Per configuration the median and the minimum
over rounds; extra cost = configuration - none. The guard (``bench.guard``) compares figures of
the same run, and its median decides.

Measurements: ``ungoverned_span``, ``governed_span`` (the same spans, one ``aigp.*`` event each),
``governed_session`` (a root, seven children, three AIGP events; against one hand-built
openlineage-python RunEvent emitted), ``pending_trace_memory`` (``tracemalloc``), ``flood_rss``
(a fresh process under a flood), ``sustained_sessions`` (sessions made as fast as one thread can,
all delivered, against the client-alone ceiling), ``builder_session`` and ``builder_throughput``
(the builder API). JSON goes to ``bench/results/latest.json`` (or ``--out``). See
docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import builder, guard, memory, report, timing

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
MIN_ROUNDS = 7

SUB_COMMANDS: dict[str, tuple[str, str]] = {
    "builder": ("bench.builder", "the builder API on a session of three events, against the reference SDK"),
    "threads": ("bench.threads", "which thread pays each configuration's CPU (Linux)"),
    "compare": ("bench.compare", "this checkout against another one (e.g. a commit), in the same rounds"),
    "profile": ("bench.profile", "cProfile of one workload on every thread"),
    "flood": ("bench.flood", "one flood of governed sessions in this process: memory, where every run went"),
    "gateway": ("bench.gateway", "the OTLP gateway's throughput and memory, against decoding alone"),
}
"""``python -m bench NAME ...``: the module whose ``main(argv)`` runs it, and what it measures."""


@dataclass(frozen=True)
class Sizes:
    rounds: int
    spans: int
    """Child spans per window in the two span measurements."""
    sessions: int
    """Governed sessions (and hand-built events) per window."""
    pending_traces: int
    flood_sessions: int
    builder_loops: int
    """Passes over the example events per builder round."""
    sustained_sessions: int
    """Sessions per window of the sustained-throughput measurement."""
    sustained_rounds: int
    builder_sessions: int
    """Sessions of three AIGP events per builder window."""


DEFAULT = Sizes(rounds=21, spans=4_950, sessions=400, pending_traces=3_000, flood_sessions=20_000,
                builder_loops=20, sustained_sessions=2_000, sustained_rounds=5, builder_sessions=200)
QUICK = Sizes(rounds=MIN_ROUNDS, spans=198, sessions=10, pending_traces=50, flood_sessions=100,
              builder_loops=1, sustained_sessions=20, sustained_rounds=2, builder_sessions=5)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: list[str] | None) -> tuple[Sizes, Path, bool, frozenset[str] | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark aigp-otel-bridge against no processor, the SDK's "
        "BatchSpanProcessor\nand hand-built openlineage-python RunEvents, and print the performance guard's "
        "verdicts\n(see docs/performance.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sub-commands (python -m bench NAME --help for each):\n" + "\n".join(
            f"  {name:<9} {text}" for name, (_, text) in SUB_COMMANDS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--rounds", type=_positive, help=f"interleaved rounds (default {DEFAULT.rounds})")
    parser.add_argument("--spans", type=_positive, help=f"spans per window (default {DEFAULT.spans})")
    parser.add_argument("--sessions", type=_positive,
                        help=f"governed sessions per window (default {DEFAULT.sessions})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--only", type=lambda text: frozenset(text.split(",")), default=None,
                        help=f"comma-separated measurements to run (default all: {', '.join(MEASUREMENTS)})")
    args = parser.parse_args(argv)
    if args.only is not None and not args.only <= set(MEASUREMENTS):
        parser.error(f"--only: unknown measurement {', '.join(sorted(args.only - set(MEASUREMENTS)))}")
    base = QUICK if args.quick else DEFAULT
    sizes = Sizes(
        rounds=args.rounds or base.rounds,
        spans=args.spans or base.spans,
        sessions=args.sessions or base.sessions,
        pending_traces=base.pending_traces,
        flood_sessions=base.flood_sessions,
        builder_loops=base.builder_loops,
        sustained_sessions=base.sustained_sessions,
        sustained_rounds=base.sustained_rounds,
        builder_sessions=base.builder_sessions,
    )
    return sizes, args.out, args.quick, args.only


MEASUREMENTS = ("ungoverned_span", "governed_span", "governed_session", "pending_trace_memory", "flood_rss",
                "sustained_sessions", "builder_session", "builder_throughput")


def _spans(name: str, sizes: Sizes) -> dict[str, Any]:
    """A span measurement, its spans made as the guard's line defines (``made_beforehand``)."""
    return timing.measure_spans(name, sizes.spans, sizes.rounds, governed=name == "governed_span",
                                beforehand=guard.limit_of(name).made_beforehand).to_json()


def _sessions(sizes: Sizes) -> dict[str, Any]:
    beforehand = guard.limit_of("governed_session").made_beforehand
    return timing.measure_sessions(sizes.sessions, sizes.rounds, beforehand=beforehand).to_json()


def run(sizes: Sizes, *, quick: bool = False, only: frozenset[str] | None = None) -> dict[str, Any]:
    """Every measurement (or those in ``only``), in the order of ``MEASUREMENTS``."""
    steps: dict[str, tuple[str, Callable[[], Any]]] = {
        "ungoverned_span": (f"ungoverned spans ({sizes.spans} per window, {sizes.rounds} rounds)",
                            lambda: _spans("ungoverned_span", sizes)),
        "governed_span": (f"governed spans ({sizes.spans} per window)",
                          lambda: _spans("governed_span", sizes)),
        "governed_session": (f"governed sessions ({sizes.sessions} per window)", lambda: _sessions(sizes)),
        "pending_trace_memory": (f"memory per pending trace ({sizes.pending_traces} traces)",
                                 lambda: memory.pending_trace_memory(sizes.pending_traces)),
        "flood_rss": (f"RSS under a flood ({sizes.flood_sessions} sessions, fresh processes)",
                      lambda: memory.flood_rss(sizes.flood_sessions)),
        "sustained_sessions": (
            f"sustained sessions ({sizes.sustained_sessions} per window, {sizes.sustained_rounds} rounds)",
            lambda: timing.measure_sustained(sizes.sustained_sessions, sizes.sustained_rounds)),
        "builder_session": (f"builder API on a session of three events ({sizes.builder_sessions} per window)",
                            lambda: builder.measure_session(sizes.rounds, sizes.builder_sessions)),
        "builder_throughput": ("builder API throughput",
                               lambda: builder.measure_builder(sizes.builder_loops, sizes.rounds)),
    }
    began = time.perf_counter()
    measurements: dict[str, Any] = {}
    for name in MEASUREMENTS:
        if only is None or name in only:
            text, measure = steps[name]
            print(f"  {text} ...", file=sys.stderr, flush=True)
            measurements[name] = measure()
    results: dict[str, Any] = {
        "format": 3,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "settings": {
            "quick": quick,
            "rounds": sizes.rounds,
            "spans_per_window": sizes.spans,
            "sessions_per_window": sizes.sessions,
            "pending_traces": sizes.pending_traces,
            "flood_sessions": sizes.flood_sessions,
            "builder_loops": sizes.builder_loops,
            "sustained_sessions": sizes.sustained_sessions,
            "sustained_rounds": sizes.sustained_rounds,
            "builder_sessions": sizes.builder_sessions,
            "clock": "process CPU time of all threads per window (the guard); wall time as a second column",
            "gc": "enabled in every window; gc.collect() before each",
            "spans_made_beforehand": {name: guard.limit_of(name).made_beforehand
                                      for name in ("ungoverned_span", "governed_span", "governed_session")},
            "statistic": "median and minimum over rounds per configuration; extra = configuration - none; "
            "the guard's verdict by the median",
        },
        "measurements": measurements,
    }
    results["guard"] = guard.verdicts(measurements)
    results["seconds"] = time.perf_counter() - began
    return results


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] and arguments[0] in SUB_COMMANDS:
        module = importlib.import_module(SUB_COMMANDS[arguments[0]][0])
        return int(module.main(arguments[1:]))
    sizes, out, quick, only = parse_args(argv)
    if sizes.rounds < MIN_ROUNDS:
        print(f"note: fewer than {MIN_ROUNDS} rounds; the figures do not follow the method",
              file=sys.stderr)
    results = run(sizes, quick=quick, only=only)
    print(report.table(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
