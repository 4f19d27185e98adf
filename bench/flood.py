"""One flood in this (fresh) process: governed sessions as fast as one thread makes them.

``python -m bench flood --config bridge --sessions 20000`` prints one JSON object: resident set
before the flood, its peak (``VmHWM``, or ``ru_maxrss`` where there is no ``/proc``), after the
flood and after ``force_flush``, and where every session went: ``produced`` (sessions made),
``delivered`` (runs the transport took), ``stored`` (rows in the outbox, with ``--outbox``) and
``dropped`` (runs the bridge counted as given up). ``--root-attribute-kib N`` puts an N KiB string
attribute on every root span (what a prompt or a payload logged on the root costs);
``--backend-down`` makes every emit fail, so that everything must be stored or counted.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openlineage.client.transport.transport import Config, Transport
from opentelemetry.trace import set_span_in_context

from aigp_otel_bridge.outbox import Outbox
from bench import workloads
from bench.setups import NullTransport, make_setup

_COUNTERS = ("spans_seen", "runs_decided", "runs_emitted", "runs_stored", "runs_dropped")
_POOL = 1_000
"""Distinct sessions of events made up front; the flood cycles through them."""


class DownTransport(Transport):
    """A lineage backend that refuses every event."""

    kind = "bench-down"
    config_class = Config

    def __init__(self) -> None:
        self.events = 0

    def emit(self, event: Any) -> None:
        raise ConnectionError("lineage backend down")


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


def run_sessions(tracer: Any, sessions: list[list[Any]], root_attribute_kib: int) -> None:
    """``workloads.run_sessions``, with a distinct ``root_attribute_kib`` KiB string on each root."""
    if not root_attribute_kib:
        workloads.run_sessions(tracer, sessions)
        return
    filler = "p" * (root_attribute_kib * 1024 - 8)
    for index, child_events in enumerate(sessions):
        attributes = {**workloads.ROOT_ATTRIBUTES, "app.payload": f"{index:08d}" + filler}  # a new string
        root = tracer.start_span("agent.session", attributes=attributes)
        context = set_span_in_context(root)
        for (name, _), event in zip(workloads.SESSION_CHILDREN, child_events, strict=True):
            span = tracer.start_span(name, context=context, attributes=workloads.ORDINARY_ATTRIBUTES)
            if event is not None:
                span.add_event(event[0], event[1])
            span.end()
        root.end()


def flood(
    config: str,
    sessions: int,
    *,
    outbox: bool = False,
    root_attribute_kib: int = 0,
    backend_down: bool = False,
) -> dict[str, Any]:
    pool = workloads.session_events(min(sessions, _POOL))
    events = [pool[i % len(pool)] for i in range(sessions)]
    folder = tempfile.mkdtemp(prefix="aigp-flood-") if outbox and config == "bridge" else None
    settings: dict[str, Any] = {"outbox_dir": folder} if folder else {}
    setup = make_setup(config, **settings)
    if backend_down and setup.bridge is not None:
        down = DownTransport()
        setup.bridge.client.transport = down
    gc.collect()
    before = memory_kib()
    start = time.perf_counter()
    run_sessions(setup.tracer, events, root_attribute_kib)
    produced_s = time.perf_counter() - start
    after_flood = memory_kib()
    setup.flush()
    flushed_s = time.perf_counter() - start
    after_flush = memory_kib()
    setup.shutdown()  # what is still queued is delivered, stored or counted now
    stats = setup.bridge.stats() if setup.bridge is not None else {}
    transport = setup.transport
    delivered = transport.events if isinstance(transport, NullTransport) and not backend_down else 0
    stored = Outbox(folder).depth() if folder else 0
    return {
        "config": config + ("+outbox" if folder else "") + ("+down" if backend_down else ""),
        "sessions": sessions,
        "root_attribute_kib": root_attribute_kib,
        "rss_before_kib": before["rss"],
        "rss_after_flood_kib": after_flood["rss"],
        "rss_after_flush_kib": after_flush["rss"],
        "peak_kib": after_flush["peak"],
        "peak_growth_kib": after_flush["peak"] - before["rss"],
        "flood_seconds": produced_s,
        "flush_seconds": flushed_s,
        "produced": sessions if setup.bridge is not None else 0,
        "delivered": delivered,
        "stored": stored,
        "dropped": stats.get("runs_dropped", 0),
        "bridge_stats": {k: stats[k] for k in _COUNTERS if k in stats},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench flood", description=__doc__)
    parser.add_argument("--config", choices=("none", "batch", "bridge"), default="bridge")
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--outbox", action="store_true", help="bridge with an outbox (temporary folder)")
    parser.add_argument("--backend-down", action="store_true", help="every emit fails")
    parser.add_argument("--root-attribute-kib", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    result = flood(
        args.config, args.sessions, outbox=args.outbox, root_attribute_kib=args.root_attribute_kib,
        backend_down=args.backend_down,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
