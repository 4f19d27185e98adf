"""The machine and the printed table of one benchmark run (the guard's verdicts: ``bench.guard``)."""

from __future__ import annotations

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


def _us(ns: float) -> str:
    return f"{ns / 1000:,.2f} µs"


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f} B" if unit == "B" else f"{value:.2f}x"


def _extra(ns: float) -> str:
    return f"{'+' if ns >= 0 else '-'}{abs(ns) / 1000:,.2f} µs"


def table(results: dict[str, Any]) -> str:
    """The human-readable summary printed at the end of a run."""
    m = results["measurements"]
    beforehand = [name.replace("_", " ") for name, yes in results["settings"]["spans_made_beforehand"].items()
                  if yes]
    lines = [
        f"aigp-otel-bridge benchmark — {results['settings']['rounds']} interleaved rounds; "
        f"{results['machine']['cpus']} CPUs, {results['machine']['cpu_model']}, "
        f"Python {results['machine']['python']}",
        "process CPU time of all threads per item (min / median over rounds); wall time (min) after |; "
        f"each processor alone, on spans made beforehand: {', '.join(beforehand) or 'none'}",
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
    lines += ["", "guard (figures of this run; the median decides, the least disturbed windows' beside it):"]
    for line in results["guard"]:
        verdict = {True: "met", False: "NOT MET", None: "unknown"}[line["met"]]
        lines.append(
            f"  {line['name']:<22} {_figure(line['figure'], line['unit']):>8} "
            f"(best windows {_figure(line['best_windows_figure'], line['unit']):>6}) {line['comparison']} "
            f"{_figure(line['limit'], line['unit']):<7} {verdict:<8} ({line['meaning']})"
        )
    problems = [f"{case}: {p}" for case, data in m.items() for p in data.get("problems", [])]
    if problems:
        lines += ["", "PROBLEMS (figures may be wrong):", *[f"  {p}" for p in problems]]
    return "\n".join(lines)
