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
    """The four targets, each as a ratio of the same run's figures; ``met`` is None if unknown."""
    found: list[dict[str, Any]] = []

    def add(name: str, description: str, value: float | None, reference: float | None,
            limit: float, strict: bool = False) -> None:
        ratio = _ratio(value, reference)
        met = None if ratio is None else (ratio < limit if strict else ratio <= limit)
        found.append({
            "name": name,
            "description": description,
            "value": value,
            "reference": reference,
            "ratio": ratio,
            "limit": limit,
            "comparison": "<" if strict else "<=",
            "met": met,
        })

    for case, limit in (("ungoverned_span", 0.35), ("governed_span", 0.5)):
        extra = measurements[case]["extra_ns_per_item"]
        add(case, f"bridge extra cost / BatchSpanProcessor extra cost, per {case.replace('_', ' ')}",
            extra["bridge"], extra["batch"], limit)
    session = measurements["governed_session"]
    add("governed_session",
        "bridge extra cost per governed session / one hand-built openlineage-python build+emit",
        session["extra_ns_per_item"]["bridge"], session["min_ns_per_item"]["hand_built"], 1.5)
    memory = measurements["pending_trace_memory"]
    add("pending_trace_memory", "bridge bytes per pending governed trace / 1 KiB",
        memory["bridge_bytes_per_trace"], 1024.0, 1.0, strict=True)
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
        "",
        f"{'measurement':<18}{'per':<9}{'no processor':>14}{'batch (extra)':>16}{'bridge (extra)':>17}"
        f"{'hand-built':>14}",
    ]
    for case in ("ungoverned_span", "governed_span", "governed_session"):
        data = m[case]
        floor = data["min_ns_per_item"]
        extra = data["extra_ns_per_item"]
        hand = _us(floor["hand_built"]) if "hand_built" in floor else ""
        lines.append(
            f"{case.replace('_', ' '):<18}{data['unit']:<9}"
            f"{_us(floor['none']):>14}{_extra(extra['batch']):>16}{_extra(extra['bridge']):>17}{hand:>14}"
        )
    memory = m["pending_trace_memory"]
    lines += [
        "",
        f"memory per pending governed trace: bridge {memory['bridge_bytes_per_trace']:,.0f} B "
        f"(tracemalloc, {memory['traces']} traces; no processor {memory['bytes_per_trace']['none']:,.0f} B, "
        f"with bridge {memory['bytes_per_trace']['bridge']:,.0f} B)",
    ]
    flood = m["flood_rss"]
    if "none" in flood and "bridge" in flood:
        bridge = flood["bridge"]
        lines.append(
            f"RSS under a flood of {flood['sessions']:,} governed sessions: peak growth "
            f"{flood['none']['peak_growth_kib']:,} KiB without processor, {bridge['peak_growth_kib']:,} KiB "
            f"with the bridge (intake dropped {bridge['bridge_stats'].get('intake_dropped', 0):,} notes, "
            f"runs dropped {bridge['bridge_stats'].get('runs_dropped', 0):,}, emitted "
            f"{bridge['bridge_stats'].get('runs_emitted', 0):,})"
        )
    builder = m["builder_throughput"]
    if "skipped" in builder:
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
        lines.append(
            f"  {target['name']:<22} ratio {ratio:>6} {target['comparison']:>2} {target['limit']:<5} "
            f"{verdict:<8} ({target['description']})"
        )
    problems = [f"{case}: {p}" for case, data in m.items() for p in data.get("problems", [])]
    if problems:
        lines += ["", "PROBLEMS (figures may be wrong):", *[f"  {p}" for p in problems]]
    return "\n".join(lines)
