"""One flood in this (fresh) process: governed sessions as fast as one thread makes them.

``python -m bench.flood --config bridge --sessions 20000`` prints one JSON object: resident set
before the flood, its peak (``VmHWM``, or ``ru_maxrss`` where there is no ``/proc``), after the
flood and after ``force_flush``, and the bridge's counters (a flood is expected to fill the
bridge's bounded intake and delivery queue, so drops are reported, not treated as errors).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench import workloads
from bench.setups import make_setup

_COUNTERS = ("spans_seen", "runs_emitted", "intake_dropped", "runs_dropped")
_POOL = 1_000
"""Distinct sessions of events made up front; the flood cycles through them."""


def memory_kib() -> dict[str, int]:
    """Current and peak resident set of this process, in KiB."""
    status = Path("/proc/self/status")
    if status.exists():
        values = {}
        for line in status.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        if len(values) == 2:
            return {"rss": values["VmRSS"], "peak": values["VmHWM"]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere
    return {"rss": peak, "peak": peak}


def flood(config: str, sessions: int) -> dict[str, Any]:
    pool = workloads.session_events(min(sessions, _POOL))
    events = [pool[i % len(pool)] for i in range(sessions)]
    setup = make_setup(config)
    gc.collect()
    before = memory_kib()
    start = time.perf_counter()
    workloads.run_sessions(setup.tracer, events)
    produced_s = time.perf_counter() - start
    after_flood = memory_kib()
    setup.flush()
    flushed_s = time.perf_counter() - start
    after_flush = memory_kib()
    stats = setup.bridge.stats() if setup.bridge is not None else {}
    setup.shutdown()
    return {
        "config": config,
        "sessions": sessions,
        "rss_before_kib": before["rss"],
        "rss_after_flood_kib": after_flood["rss"],
        "rss_after_flush_kib": after_flush["rss"],
        "peak_kib": after_flush["peak"],
        "peak_growth_kib": after_flush["peak"] - before["rss"],
        "flood_seconds": produced_s,
        "flush_seconds": flushed_s,
        "bridge_stats": {k: stats[k] for k in _COUNTERS if k in stats},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("--config", choices=("none", "batch", "bridge"), default="bridge")
    parser.add_argument("--sessions", type=int, default=20_000)
    args = parser.parse_args(argv)
    print(json.dumps(flood(args.config, args.sessions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
