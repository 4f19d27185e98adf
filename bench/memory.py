"""Memory: bytes the bridge keeps per pending governed trace, and process RSS under a flood.

Per pending trace (``tracemalloc``): many governed traces whose roots stay open, each with one
ended child carrying one AIGP span event (made inside the measured section, as an application
makes it, so the strings the bridge keeps count). After ``force_flush`` the worker has taken every
note in, and (with a long ``trace_timeout_s`` and a large ``max_pending_traces``) every trace is
still pending. The same spans are made with no processor; the difference in traced memory,
divided by the number of traces, is what the bridge keeps per trace (the open roots and the
harness's own data are in both and cancel out). The same difference is broken down by where each
kept block was allocated: the innermost frame in the bridge's package names its module; a block
allocated elsewhere (an event id, a timestamp) is a value of the application or of the SDK that the
bridge keeps alive.

Under a flood (RSS): ``bench.flood`` runs in a fresh process per configuration, so the peak
resident set (``VmHWM``) of that process belongs to that configuration alone.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from opentelemetry.trace import Span, set_span_in_context

from bench import workloads
from bench.setups import make_setup

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = str(PROJECT_ROOT / "aigp_otel_bridge") + "/"
KEPT_VALUES = "values of the application or SDK kept"
FRAMES = 16
"""Deep enough to reach the bridge's frame from any allocation it causes (tracemalloc's own memory
is not traced, so the depth does not change the figures)."""


def _by_site(snapshot: tracemalloc.Snapshot) -> Counter[str]:
    """Traced bytes by the bridge module that allocated them, or ``KEPT_VALUES``."""
    sites: Counter[str] = Counter()
    for statistic in snapshot.statistics("traceback"):
        module = next(
            (frame.filename[len(PACKAGE):] for frame in reversed(statistic.traceback)  # innermost first
             if frame.filename.startswith(PACKAGE)),
            KEPT_VALUES,
        )
        sites[module] += statistic.size
    return sites


def _traced_bytes(config: str, traces: int) -> tuple[int, Counter[str], list[str]]:
    setup = make_setup(
        config, trace_timeout_s=3600.0, max_pending_traces=2 * traces + 16, max_queue_size=2 * traces + 16
    )
    tracer = setup.tracer
    gc.collect()
    tracemalloc.start(FRAMES)
    before = _by_site(tracemalloc.take_snapshot())
    base = tracemalloc.get_traced_memory()[0]
    roots: list[Span] = []
    for _ in range(traces):
        # Made here, as an application makes them: strings the bridge keeps are counted.
        name, attributes = workloads.governance_event("aigp.inject.success")
        root = tracer.start_span("agent.session", attributes=workloads.ROOT_ATTRIBUTES)
        child = tracer.start_span(
            "policy.inject", context=set_span_in_context(root), attributes=workloads.ORDINARY_ATTRIBUTES
        )
        child.add_event(name, attributes)
        child.end()
        roots.append(root)
    setup.flush()
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    sites = _by_site(tracemalloc.take_snapshot())
    sites.subtract(before)
    tracemalloc.stop()
    problems = setup.check()
    if setup.bridge is not None:
        stats = setup.bridge.stats()
        if stats["records"] != traces or stats["runs_decided"] != 0:
            problems.append(
                f"bridge: expected {traces} pending traces, got records={stats['records']} "
                f"runs_decided={stats['runs_decided']}"
            )
    setup.shutdown()  # emits the pending traces as RUNNING; not measured
    del roots
    return kept, sites, problems


def pending_trace_memory(traces: int) -> dict[str, Any]:
    """Traced bytes per pending governed trace, with and without the bridge."""
    kept: dict[str, int] = {}
    sites: dict[str, Counter[str]] = {}
    problems: list[str] = []
    _traced_bytes("bridge", min(traces, 100))  # warm-up: first-call allocations and caches
    for config in ("none", "bridge"):
        kept[config], sites[config], found = _traced_bytes(config, traces)
        problems.extend(found)
    bridge_sites = sites["bridge"]
    bridge_sites.subtract(sites["none"])  # what the application itself keeps is in both
    return {
        "unit": "bytes",
        "traces": traces,
        "traced_bytes": kept,
        "bytes_per_trace": {c: b / traces for c, b in kept.items()},
        "bridge_bytes_per_trace": (kept["bridge"] - kept["none"]) / traces,
        "bridge_bytes_per_trace_by_site": {
            site: size / traces for site, size in bridge_sites.most_common() if abs(size) >= traces
        },
        "problems": problems,
    }


def flood_rss(sessions: int) -> dict[str, Any]:
    """Run ``bench.flood`` in a fresh process for each configuration."""
    results: dict[str, Any] = {"unit": "KiB", "sessions": sessions, "problems": []}
    for config in ("none", "bridge"):
        done = subprocess.run(
            [sys.executable, "-m", "bench.flood", "--config", config, "--sessions", str(sessions)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            results["problems"].append(f"{config}: flood failed: {done.stderr.strip()[-500:]}")
            continue
        results[config] = json.loads(done.stdout)
    if "none" in results and "bridge" in results:
        growth = {config: results[config]["peak_growth_kib"] for config in ("none", "bridge")}
        results["bridge_extra_peak_kib"] = growth["bridge"] - growth["none"]
    return results
