"""The bridge's own telemetry: plain counters, exposed as OpenTelemetry metrics, and
rate-limited log lines.

Counters are plain integers bumped by the bridge's threads; OpenTelemetry reads them through
observable instruments, so counting costs nothing extra on the hot path and the metrics are a
no-op unless the application configured a ``MeterProvider``. Metrics create no spans, so the
bridge's telemetry never feeds back into itself.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from opentelemetry import metrics

from aigp_otel_bridge.version import __version__

METER_NAME = "aigp_otel_bridge"


def _counter(description: str) -> Any:
    """Declare a counter once: its meaning is the metric's description and the docs' entry."""
    return field(default=0, metadata={"description": description})


@dataclass
class Stats:
    """Running totals of one bridge. Read them with ``processor.stats()``; each is also the
    observable counter ``aigp_bridge.<name>``."""

    spans_seen: int = _counter("finished spans that carried governance data or were local roots")
    records: int = _counter(
        "governance records taken in (span events, governed span attributes, ingested events)"
    )
    duplicate_records: int = _counter("records seen twice (same aigp.event.id) and joined into one")
    records_left_out: int = _counter(
        "records past max_records_per_trace: not in the inputs, still in the aggregate"
    )
    invalid_values: int = _counter("values left out because of their type, shape or size")
    runs_decided: int = _counter("runs correlated and summarised, handed to delivery")
    runs_emitted: int = _counter("runs handed to client.emit without error")
    emit_failures: int = _counter("failed client.emit attempts (each is retried)")
    build_failures: int = _counter("runs that could not be built into a RunEvent (a bug if ever seen)")
    runs_dropped: int = _counter(
        "runs given up without an outbox: delivery queue full, or undelivered at shutdown"
    )
    runs_stored: int = _counter("runs written to the outbox (emit failed, or the delivery queue was full)")
    runs_replayed: int = _counter("runs delivered from the outbox")
    duplicates_detected: int = _counter("runs stored again while already waiting in the outbox")
    outbox_dropped: int = _counter("oldest outbox rows deleted at the outbox size bound")
    traces_evicted: int = _counter("pending runs emitted early because max_pending_traces was reached")
    traces_timed_out: int = _counter("governed runs emitted early after trace_timeout_s of quiet")
    late_events: int = _counter(
        "OTHER events for runs that received records after their COMPLETE/FAIL (aggregate over all)"
    )
    ended_runs_forgotten: int = _counter(
        "ended runs forgotten before trace_timeout_s because max_pending_traces later runs ended:"
        " their late records start a new run"
    )
    ingest_rejected: int = _counter("ingest_aigp_event calls without an AIGP event with a trace id")
    lineage_context_rejected: int = _counter(
        "malformed propagated aigp-lineage values or OPENLINEAGE_CONTEXT ignored (process-wide)"
    )
    spans_after_shutdown: int = _counter("governed spans or ingested events that arrived after shutdown")
    outbox_write_failures: int = _counter(
        "runs that could not be written to the outbox (disk full, file size limit): counted dropped"
    )
    outbox_moved_aside: int = _counter("unreadable outbox files renamed and replaced by a fresh one")

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


COUNTERS: dict[str, str] = {f.name: f.metadata["description"] for f in fields(Stats)}
"""Every counter and its meaning, from the one declaration above."""

GAUGES: dict[str, str] = {
    "pending_traces": "runs buffered by correlation now",
    "queue_depth": "runs waiting for delivery in memory, retries included",
    "intake_depth": "span notes and events waiting for the correlation worker",
    "outbox_depth": "runs waiting in the durable outbox",
}
"""Every gauge and its meaning; the engine supplies one reading per name."""


class _Instruments:
    """The process's ``aigp_bridge.*`` instruments, created once, reporting every bridge.

    The SDK keeps only the first instrument registered under a name, so each bridge cannot
    register its own: counters report the sum over live bridges plus the final totals of
    retired ones (so they never go down), gauges the sum over live bridges.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, tuple[Stats, dict[str, Callable[[], int]]]] = {}
        self._retired = Stats()
        self._created = False

    def add(self, owner: object, stats: Stats, gauges: dict[str, Callable[[], int]]) -> None:
        with self._lock:
            self._live[id(owner)] = (stats, gauges)
            if not self._created:
                self._create()
                self._created = True
        weakref.finalize(owner, self._retire, id(owner))

    def _retire(self, key: int) -> None:
        with self._lock:
            retired = self._live.pop(key, None)
            if retired is not None:
                for name, value in retired[0].snapshot().items():
                    setattr(self._retired, name, getattr(self._retired, name) + value)

    def _total(self, name: str) -> int:
        with self._lock:
            live = [stats for stats, _ in self._live.values()]
            return int(getattr(self._retired, name)) + sum(int(getattr(stats, name)) for stats in live)

    def _gauge(self, name: str) -> int:
        with self._lock:
            reads = [gauges[name] for _, gauges in self._live.values() if name in gauges]
        return sum(int(read()) for read in reads)

    def _create(self) -> None:
        meter = metrics.get_meter(METER_NAME, __version__)

        def counter_callback(name: str) -> Callable[[Any], Iterable[metrics.Observation]]:
            return lambda _options: [metrics.Observation(self._total(name))]

        def gauge_callback(name: str) -> Callable[[Any], Iterable[metrics.Observation]]:
            return lambda _options: [metrics.Observation(self._gauge(name))]

        for name, description in COUNTERS.items():
            meter.create_observable_counter(
                f"aigp_bridge.{name}", callbacks=[counter_callback(name)], description=description
            )
        for name, description in GAUGES.items():
            meter.create_observable_gauge(
                f"aigp_bridge.{name}", callbacks=[gauge_callback(name)], description=description
            )


_INSTRUMENTS = _Instruments()


def register_metrics(owner: object, stats: Stats, gauges: dict[str, Callable[[], int]]) -> None:
    """Report ``stats`` and ``gauges`` through the global ``MeterProvider`` while ``owner`` lives."""
    _INSTRUMENTS.add(owner, stats, gauges)


_SECRET_IN_URL = re.compile(r"://[^/?#@\n]{1,512}@")
"""The user information of a URL; a malformed URL may hold spaces anywhere before its ``@``."""
_QUERY = re.compile(r"\?[^\s=?#]+=\S*")
"""A URL's query string: where API keys and tokens travel, whatever their parameter's name."""
_SECRET_FIELD = re.compile(
    r"(?i)(?P<name>authorization|proxy-authorization|api[_-]?key|x-api-key|token|access_token|password"
    r"|passwd|secret|client_secret|signature|sig|bearer)(?P<sep>['\"]?\s*[:=]\s*['\"]?|\s+)"
    r"(?P<scheme>(?:bearer|basic|token)\s+)?[^\s'\",&;)}]+"
)
LOG_TEXT_MAX = 1000
"""Longest message the bridge logs; the rest is cut (a value from arbitrary code can be huge)."""


def redact(text: str) -> str:
    """Credentials in URLs (``user:password@``, query strings), headers and fields replaced by ``***``."""
    text = _QUERY.sub("?***", _SECRET_IN_URL.sub("://***@", text))
    return _SECRET_FIELD.sub(lambda m: f"{m['name']}{m['sep']}{m['scheme'] or ''}***", text)


def shorten(text: str, limit: int = LOG_TEXT_MAX) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def describe(error: BaseException) -> str:
    """An exception as ``Type: message``, credentials redacted, bounded in size."""
    return bounded(f"{type(error).__name__}: {error}")


def bounded(text: str) -> str:
    """Text fit for a log line or the outbox: cut first (so that redacting stays cheap), then
    redacted, then cut to ``LOG_TEXT_MAX``."""
    head = redact(text[: LOG_TEXT_MAX * 4])
    if len(text) <= LOG_TEXT_MAX * 4:
        return shorten(head)
    return f"{head[:LOG_TEXT_MAX]}… ({len(text) - LOG_TEXT_MAX} more characters)"


class RateLimitedLog:
    """Logs each kind of message at most once per interval, saying how many were suppressed.

    Every message is formatted here, redacted (credentials) and cut to ``LOG_TEXT_MAX``.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = f"{message} {args!r}"
        text = bounded(text)
        if suppressed:
            text += f" ({suppressed} similar messages suppressed)"
        self._logger.log(level, "%s", text, exc_info=exc_info)
