"""The machine, the targets and the printed table of one benchmark run."""

from __future__ import annotations

import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("aigp-otel-bridge", "opentelemetry-api", "opentelemetry-sdk", "openlineage-python", "attrs")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpus": usable,
        "cpu_model": model or platform.processor() or None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": versions,
    }


def _ratio(value: float | None, limit_of: float | None) -> float | None:
    if value is None or limit_of is None or not math.isfinite(value) or limit_of <= 0:
        return None
    return value / limit_of


def targets(measurements: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, each as a ratio of the same run's figures (minimum windows, process CPU time;
    the ratio of the median windows beside it); ``met`` is None if unknown."""
    found: list[dict[str, Any]] = []

    def add(name: str, description: str, value: float | None, reference: float | None,
            limit: float, median: float | None = None, *, at_least: bool = False) -> None:
        ratio = _ratio(value, reference)
        met = None if ratio is None else (ratio >= limit if at_least else ratio <= limit)
        found.append({
            "name": name,
            "description": description,
            "value": value,
            "reference": reference,
            "ratio": ratio,
            "median_ratio": median,
            "limit": limit,
            "comparison": ">=" if at_least else "<=",
            "met": met,
        })

    for case, limit in (("ungoverned_span", 0.25), ("governed_span", 1.0)):
        data = measurements.get(case)
        if data is None:  # not run (--only)
            continue
        extra, median = data["extra_ns_per_item"], data["median_extra_ns_per_item"]
        add(case, f"bridge extra CPU / BatchSpanProcessor extra CPU, per {case.replace('_', ' ')}",
            extra["bridge"], extra["batch"], limit, _ratio(median["bridge"], median["batch"]))
    session = measurements.get("governed_session")
    if session:
        add("governed_session",
            "bridge extra CPU per governed session / one hand-built openlineage-python RunEvent emitted "
            "(both serialised)",
            session["extra_ns_per_item"]["bridge"], session["min_ns_per_item"]["hand_built"], 1.0,
            _ratio(session["median_extra_ns_per_item"]["bridge"],
                   session["median_ns_per_item"]["hand_built"]))
    builder = measurements.get("builder_session", {})
    if "skipped" not in builder and builder:
        add("builder_session",
            "builder API per session of 3 events + json.dumps / "
            "reference SDK builder's 3 events + json.dumps",
            builder["min_ns_per_item"]["bridge"], builder["min_ns_per_item"]["reference"], 2.0,
            _ratio(builder["median_ns_per_item"]["bridge"], builder["median_ns_per_item"]["reference"]))
    sustained = measurements.get("sustained_sessions")
    if sustained:
        add("sustained_sessions", "governed sessions per process CPU second (all delivered) / 2 000",
            sustained["per_cpu_second"]["best"], 2000.0, 1.0,
            sustained["per_cpu_second"]["median"] / 2000.0, at_least=True)
    memory = measurements.get("pending_trace_memory")
    if memory:
        add("pending_trace_memory", "bridge bytes per pending governed trace / 512 B",
            memory["bridge_bytes_per_trace"], 512.0, 1.0)
    return found


def _us(ns: float) -> str:
    return f"{ns / 1000:,.2f} µs"


def _extra(ns: float) -> str:
    return f"{'+' if ns >= 0 else '-'}{abs(ns) / 1000:,.2f} µs"


def table(results: dict[str, Any]) -> str:
    """The human-readable summary printed at the end of a run."""
    m = results["measurements"]
    lines = [
        f"aigp-otel-bridge benchmark — {results['settings']['rounds']} interleaved rounds, "
        f"minimum per configuration; {results['machine']['cpus']} CPUs, "
        f"{results['machine']['cpu_model']}, Python {results['machine']['python']}",
        "process CPU time of all threads per item (min / median over rounds); wall time (min) after |",
        "",
        f"{'measurement':<18}{'per':<9}{'no processor':>26}{'batch (extra)':>26}{'bridge (extra)':>26}"
        f"{'hand-built':>26}{'| wall: batch':>16}{'bridge':>12}",
    ]
    for case in ("ungoverned_span", "governed_span", "governed_session"):
        data = m.get(case)
        if data is None:
            continue
        floor, median = data["min_ns_per_item"], data["median_ns_per_item"]
        extra, median_extra = data["extra_ns_per_item"], data["median_extra_ns_per_item"]
        wall = data["wall_extra_ns_per_item"]
        hand = (f"{_us(floor['hand_built'])} / {_us(median['hand_built'])}" if "hand_built" in floor else "")
        lines.append(
            f"{case.replace('_', ' '):<18}{data['unit']:<9}"
            f"{_us(floor['none']) + ' / ' + _us(median['none']):>26}"
            f"{_extra(extra['batch']) + ' / ' + _extra(median_extra['batch']):>26}"
            f"{_extra(extra['bridge']) + ' / ' + _extra(median_extra['bridge']):>26}{hand:>26}"
            f"{'| ' + _extra(wall['batch']):>16}{_extra(wall['bridge']):>12}"
        )
    memory = m.get("pending_trace_memory")
    lines += [""] if memory is None else [
        "",
        f"memory per pending governed trace: bridge {memory['bridge_bytes_per_trace']:,.0f} B "
        f"(tracemalloc, {memory['traces']} traces; no processor {memory['bytes_per_trace']['none']:,.0f} B, "
        f"with bridge {memory['bytes_per_trace']['bridge']:,.0f} B)",
    ]
    flood = m.get("flood_rss", {})
    if "none" in flood and "bridge" in flood:
        bridge = flood["bridge"]
        lines.append(
            f"RSS under a flood of {flood['sessions']:,} governed sessions: peak growth "
            f"{flood['none']['peak_growth_kib']:,} KiB without processor, {bridge['peak_growth_kib']:,} KiB "
            f"with the bridge (runs dropped {bridge['bridge_stats'].get('runs_dropped', 0):,}, emitted "
            f"{bridge['bridge_stats'].get('runs_emitted', 0):,})"
        )
    sustained = m.get("sustained_sessions")
    if sustained:
        lines.append(
            f"sustained governed sessions (all delivered, null serialising transport): "
            f"{sustained['per_cpu_second']['best']:,.0f} / {sustained['per_cpu_second']['median']:,.0f} "
            f"per CPU second (best / median), {sustained['per_wall_second']['best']:,.0f} / "
            f"{sustained['per_wall_second']['median']:,.0f} per wall second"
        )
        ceiling = sustained["ceiling_per_cpu_second"]
        lines.append(
            f"  ceiling (the same sessions with no processor + one hand-built RunEvent emitted each): "
            f"{ceiling['best']:,.0f} / {ceiling['median']:,.0f} per CPU second (best / median)"
        )
    session = m.get("builder_session", {})
    if "skipped" in session:
        lines.append(f"builder API, session of three events: skipped — {session['skipped']}")
    elif session:
        ours, reference = session["min_ns_per_item"], session["median_ns_per_item"]
        lines.append(
            f"builder API, session of three events + json.dumps: {_us(ours['bridge'])} / "
            f"{_us(reference['bridge'])}; reference SDK builder x3 + json.dumps: {_us(ours['reference'])} / "
            f"{_us(reference['reference'])} (min / median)"
        )
    builder = m.get("builder_throughput", {})
    if not builder:
        pass
    elif "skipped" in builder:
        lines.append(f"builder API: skipped — {builder['skipped']}")
    else:
        lines.append(
            f"builder API (build_openlineage_run_event): {builder['events_per_second']:,.0f} events/s, "
            f"{_us(builder['ns_per_event'])} per event ({builder['built']} examples)"
        )
    lines += ["", "targets (same run):"]
    for target in results["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "unknown"}[target["met"]]
        ratio = "n/a" if target["ratio"] is None else f"{target['ratio']:.2f}"
        median = "n/a" if target["median_ratio"] is None else f"{target['median_ratio']:.2f}"
        lines.append(
            f"  {target['name']:<22} ratio {ratio:>6} (median {median:>5}) {target['comparison']:>2} "
            f"{target['limit']:<5} {verdict:<8} ({target['description']})"
        )
    problems = [f"{case}: {p}" for case, data in m.items() for p in data.get("problems", [])]
    if problems:
        lines += ["", "PROBLEMS (figures may be wrong):", *[f"  {p}" for p in problems]]
    return "\n".join(lines)
