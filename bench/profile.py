"""Profile the bridge on one workload, on every thread, with ``cProfile``.

    python -m bench profile ungoverned          # child spans with ordinary attributes
    python -m bench profile governed            # the same, each with one aigp.* span event
    python -m bench profile session             # governed agent sessions
    python -m bench profile session --top 30 --dump /tmp/session.pstats
    python -m bench profile session --clock cpu  # each thread's CPU time, not wall time

``cProfile`` only sees the thread that enabled it, so a hook installed with
``threading.setprofile`` gives every thread started afterwards (the bridge's correlation and
delivery workers) a profiler of its own. Printed per thread: total profiled time, the
functions with the most own time, and the bridge's entry points with their cumulative share
(time spent blocked on a lock is left out; cumulative shares of functions that wait can
exceed 100 %). With the default wall clock, a thread waiting for the GIL counts that wait to
whatever it was running; ``--clock cpu`` reads each thread's own CPU time instead.
cProfile slows small Python functions more than large ones: read the shares as a guide to
where time goes, and confirm any change with ``python -m bench``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from opentelemetry.trace import Tracer

from bench import workloads
from bench.setups import make_setup

ENTRY_POINTS = (
    ("processor.py", "on_start"),
    ("processor.py", "on_end"),
    ("core.py", "take_span"),
    ("sdk.py", "capture_span"),
    ("capture.py", "capture"),
    ("engine.py", "_put"),
    ("engine.py", "_drain"),
    ("extract.py", "span"),
    ("extract.py", "records_from_note"),
    ("correlate.py", "span_ended"),
    ("correlate.py", "_close"),
    ("engine.py", "_hand_over"),
    ("aggregate.py", "aggregate"),
    ("build.py", "name_run"),
    ("deliver.py", "_deliver"),
    ("build.py", "build_run_event"),
    ("deliver.py", "_try_emit"),
    ("client.py", "emit"),
    ("serde.py", "to_json"),
)


class AllThreads:
    """One ``cProfile.Profile`` for the calling thread and one per thread started while active.

    ``timer``: the clock every profile reads; ``time.thread_time`` gives each thread its own CPU
    time, so that waiting for the GIL or a lock is not counted as the waiting function's.
    """

    def __init__(self, timer: Callable[[], float] | None = None) -> None:
        self.profiles: dict[str, cProfile.Profile] = {}
        self._lock = threading.Lock()
        self._timer = timer

    def _new_profile(self) -> cProfile.Profile:
        return cProfile.Profile() if self._timer is None else cProfile.Profile(self._timer)

    def _adopt(self, frame: FrameType, event: str, arg: Any) -> None:
        """Runs once in each new thread: replaces itself with that thread's own profiler."""
        sys.setprofile(None)
        profile = self._new_profile()
        with self._lock:
            name = threading.current_thread().name
            self.profiles[f"{name}#{len(self.profiles)}"] = profile
        profile.enable()

    def __enter__(self) -> AllThreads:
        threading.setprofile(self._adopt)
        main = self._new_profile()
        self.profiles["application (main thread)"] = main
        main.enable()
        return self

    def __exit__(self, *_: object) -> None:
        self.profiles["application (main thread)"].disable()
        threading.setprofile(None)


def _workload(case: str, size: int) -> Callable[[Tracer], None]:
    if case == "session":
        events = workloads.session_events(size)
        return lambda tracer: workloads.run_sessions(tracer, events)
    spans_events = workloads.span_events(size) if case == "governed" else None
    return lambda tracer: workloads.run_spans(tracer, size, spans_events)


BLOCKING = ("<method 'acquire' of '_thread.lock' objects>", "<method 'acquire' of '_thread.RLock' objects>",
            "<built-in method time.sleep>")
"""Waits, not work: left out of a thread's total (on the wall clock they would dominate it)."""


def _matches(key: tuple[str, int, str], file_end: str, function: str) -> bool:
    return key[0].endswith(file_end) and key[2] == function


def report(profiles: dict[str, cProfile.Profile], top: int) -> str:
    lines = []
    for thread, profile in profiles.items():
        stats = pstats.Stats(profile)
        table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
        if not table:
            continue
        # Own times add up to the thread's total; waiting on a lock is not work.
        waited = sum(entry[2] for key, entry in table.items() if key[2] in BLOCKING)
        total = sum(entry[2] for key, entry in table.items() if key[2] not in BLOCKING)
        if total < 0.001:
            lines.append(f"\n== {thread}: idle ({waited * 1000:,.0f} ms waiting)")
            continue
        lines.append(
            f"\n== {thread}: {total * 1000:,.0f} ms profiled, {waited * 1000:,.0f} ms waiting (left out)"
        )
        lines.append(f"   {'own %':>6} {'cum %':>6} {'calls':>9}  function")
        working = [(key, entry) for key, entry in table.items() if key[2] not in BLOCKING]
        for key, entry in sorted(working, key=lambda item: item[1][2], reverse=True)[:top]:
            calls, own, cumulative = entry[1], entry[2], entry[3]
            where = f"{key[0].rsplit('site-packages/', 1)[-1]}:{key[1]}({key[2]})"
            lines.append(f"   {own / total:6.1%} {cumulative / total:6.1%} {calls:>9,}  {where}")
        entries = [
            (f"{file_end}:{function}", entry)
            for file_end, function in ENTRY_POINTS
            for key, entry in table.items()
            if _matches(key, file_end, function)
        ]
        if entries:
            lines.append("   bridge entry points (cumulative share of this thread):")
            for name, entry in entries:
                lines.append(f"   {entry[3] / total:6.1%} {entry[1]:>9,} calls  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=("ungoverned", "governed", "session"))
    parser.add_argument("--size", type=int, help="spans (default 20000) or sessions (default 1000)")
    parser.add_argument("--config", choices=("none", "batch", "bridge"), default="bridge")
    parser.add_argument("--top", type=int, default=20, help="functions listed per thread")
    parser.add_argument("--dump", help="also write the main thread's pstats to this file")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (default), or each thread's CPU time (time.thread_time)")
    args = parser.parse_args(argv)
    size = args.size or (1_000 if args.case == "session" else 20_000)
    work = _workload(args.case, size)
    warm = make_setup(args.config)
    _workload(args.case, 10)(warm.tracer)  # first-call costs out of the profile
    warm.flush()
    warm.shutdown()
    with AllThreads(time.thread_time if args.clock == "cpu" else None) as profiler:
        setup = make_setup(args.config)
        work(setup.tracer)
        setup.flush()
        setup.shutdown()
    print(f"profile of {args.case} ({size:,} {'sessions' if args.case == 'session' else 'spans'}), "
          f"config {args.config}; problems: {setup.check() or 'none'}")
    print(report(profiler.profiles, args.top))
    if args.dump:
        pstats.Stats(profiler.profiles["application (main thread)"]).dump_stats(args.dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
