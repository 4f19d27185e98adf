"""The performance guard: what ``python -m bench`` holds the bridge to, and the verdict of one run.

Every limit is a ratio of two figures of the same run (interleaved windows, process CPU time), or
bytes for memory, so that the machine's speed and load cancel out. The median over rounds
decides ("met" / "not met"); the ratio of the least disturbed windows is printed beside it. The
limits leave room over what the code measured before it was made plainer: they guard against a
change that costs far more than it should, not against every microsecond (docs/performance.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limit:
    """One line of the guard."""

    name: str
    """The measurement it reads (a key of the results' ``measurements``)."""
    limit: float
    at_least: bool
    """True: the figure must reach the limit (a rate); False: it must stay at or under it."""
    unit: str
    """``x`` for a ratio, ``B`` for bytes."""
    meaning: str
    """What is compared with what, and why that baseline."""
    made_beforehand: bool = False
    """Span and session lines: each processor alone, replaying spans made before the window (True),
    or the spans made inside the window, as an application makes them (False)."""


GUARD: tuple[Limit, ...] = (
    Limit(
        name="ungoverned_span", limit=1.5, at_least=False, unit="x", made_beforehand=True,
        meaning="bridge / BatchSpanProcessor, CPU per span with ordinary attributes, each processor alone "
        "on spans made beforehand (traces of 100): what the SDK's own processor costs is what an "
        "application already accepts",
    ),
    Limit(
        name="governed_span", limit=1.5, at_least=False, unit="x",
        meaning="what the bridge adds per span carrying one aigp.* event / the whole CPU of such a span "
        "made and exported through a BatchSpanProcessor, spans made in the window (traces of 100: each "
        "run's RunEvent, built and serialised, counts once per 100 spans). Alone, the batch processor "
        "only appends a span to a queue (about 1 µs), so a processor that reads governance cannot be "
        "held to it; the span's own cost with the SDK's processor is what the application pays already",
    ),
    Limit(
        name="governed_session", limit=1.6, at_least=False, unit="x", made_beforehand=True,
        meaning="bridge CPU per governed session (processor alone, sessions made beforehand) / one "
        "hand-built openlineage-python RunEvent of the same content emitted; both serialised by the "
        "same null transport: what writing the event by hand would cost",
    ),
    Limit(
        name="builder_session", limit=2.5, at_least=False, unit="x",
        meaning="builder API on a session of 3 AIGP events + json.dumps / the reference SDK's builder on "
        "the same 3 events + json.dumps (it validates nothing and aggregates nothing)",
    ),
    Limit(
        name="pending_trace_memory", limit=1024.0, at_least=False, unit="B",
        meaning="bytes the bridge keeps per pending governed trace (tracemalloc; the same spans with no "
        "processor subtracted)",
    ),
    Limit(
        name="sustained_sessions", limit=0.75, at_least=True, unit="x",
        meaning="governed sessions per CPU second through one process, every run delivered / the "
        "client-alone ceiling of the same run (the same sessions with no processor + one hand-built "
        "RunEvent emitted each): no bridge that emits through the client can pass 1.0",
    ),
)


def limit_of(name: str) -> Limit:
    return next(limit for limit in GUARD if limit.name == name)


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or not math.isfinite(value) or reference <= 0:
        return None
    return value / reference


def _figures(name: str, data: dict[str, Any]) -> tuple[float | None, float | None] | None:
    """(median figure, best figure) of one measurement, or None when it was not run or skipped."""
    if not data or "skipped" in data:
        return None
    if name == "ungoverned_span":
        extra, median = data["extra_ns_per_item"], data["median_extra_ns_per_item"]
        return _ratio(median["bridge"], median["batch"]), _ratio(extra["bridge"], extra["batch"])
    if name == "governed_span":
        return (_ratio(data["median_extra_ns_per_item"]["bridge"], data["median_ns_per_item"]["batch"]),
                _ratio(data["extra_ns_per_item"]["bridge"], data["min_ns_per_item"]["batch"]))
    if name == "governed_session":
        return (_ratio(data["median_extra_ns_per_item"]["bridge"], data["median_ns_per_item"]["hand_built"]),
                _ratio(data["extra_ns_per_item"]["bridge"], data["min_ns_per_item"]["hand_built"]))
    if name == "builder_session":
        return (_ratio(data["median_ns_per_item"]["bridge"], data["median_ns_per_item"]["reference"]),
                _ratio(data["min_ns_per_item"]["bridge"], data["min_ns_per_item"]["reference"]))
    if name == "pending_trace_memory":
        return data["bridge_bytes_per_trace"], None
    if name == "sustained_sessions":
        rate, ceiling = data["per_cpu_second"], data["ceiling_per_cpu_second"]
        return _ratio(rate["median"], ceiling["median"]), _ratio(rate["best"], ceiling["best"])
    raise ValueError(f"no guard figure for {name!r}")


def verdicts(measurements: dict[str, Any]) -> list[dict[str, Any]]:
    """Each line of the guard whose measurement ran: its figure (median), the best windows' figure,
    the limit and ``met`` (None when the figure is unknown)."""
    found = []
    for limit in GUARD:
        figures = _figures(limit.name, measurements.get(limit.name, {}))
        if figures is None:
            continue
        median, best = figures
        met = None if median is None else (median >= limit.limit if limit.at_least else median <= limit.limit)
        found.append({
            "name": limit.name,
            "meaning": limit.meaning,
            "figure": median,
            "best_windows_figure": best,
            "unit": limit.unit,
            "comparison": ">=" if limit.at_least else "<=",
            "limit": limit.limit,
            "met": met,
        })
    return found
