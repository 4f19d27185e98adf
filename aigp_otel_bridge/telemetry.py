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
from dataclasses import asdict, dataclass
from typing import Any

from opentelemetry import metrics

from aigp_otel_bridge.version import __version__

METER_NAME = "aigp_otel_bridge"


@dataclass
class Stats:
    """Running totals of one bridge. Read them with ``processor.stats()``."""

    spans_seen: int = 0
    """Finished spans that carried governance data or were local roots."""
    records: int = 0
    """Governance records taken in (span events, governed span attributes, ingested events)."""
    duplicate_records: int = 0
    """Records seen twice (same ``aigp.event.id``) and joined into one."""
    records_left_out: int = 0
    """Records past ``max_records_per_trace``: not in the inputs, still in the aggregate."""
    invalid_values: int = 0
    """Attribute or field values left out because of their type, shape or size."""
    runs_decided: int = 0
    runs_emitted: int = 0
    """Runs handed to ``client.emit`` without error."""
    emit_failures: int = 0
    """Failed ``client.emit`` attempts (each is retried)."""
    build_failures: int = 0
    """Runs that could not be built into a RunEvent (counted and dropped; a bug if ever seen)."""
    runs_dropped: int = 0
    """Runs given up without an outbox: delivery queue full, or still undelivered at shutdown."""
    runs_stored: int = 0
    """Runs written to the outbox (emit failed, or the delivery queue was full)."""
    runs_replayed: int = 0
    """Runs delivered from the outbox."""
    duplicates_detected: int = 0
    """Runs already waiting in the outbox when stored again (at-least-once delivery)."""
    outbox_dropped: int = 0
    """Oldest outbox rows deleted because the outbox reached its size bound."""
    traces_evicted: int = 0
    traces_timed_out: int = 0
    intake_dropped: int = 0
    """Span notes or ingested events refused because the intake queue was full."""
    ingest_rejected: int = 0
    """``ingest_aigp_event`` calls with something that is not an AIGP event with a trace id."""
    spans_after_shutdown: int = 0
    """Governed spans, root starts or ingested events that arrived after shutdown."""
    outbox_write_failures: int = 0
    """Runs that could not be written to the outbox (disk full, file size limit): counted dropped."""
    outbox_moved_aside: int = 0
    """Unreadable outbox files renamed and replaced by a fresh one."""

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


_COUNTERS = {
    "spans_seen": "Finished spans with governance data or a local-root role",
    "records": "Governance records taken in",
    "invalid_values": "Values left out as invalid",
    "records_left_out": "Records past the per-trace bound",
    "runs_emitted": "Runs handed to the OpenLineage client",
    "emit_failures": "Failed emit attempts (runs failed)",
    "runs_dropped": "Runs given up and counted",
    "runs_stored": "Runs written to the durable outbox",
    "runs_replayed": "Runs delivered from the durable outbox",
    "outbox_dropped": "Outbox rows dropped at the outbox size bound",
    "duplicates_detected": "Runs stored again while already waiting in the outbox",
    "build_failures": "Runs that could not be built",
    "ingest_rejected": "ingest_aigp_event calls without an AIGP event",
    "traces_evicted": "Pending traces evicted by the bound",
    "traces_timed_out": "Governed traces emitted by timeout",
    "intake_dropped": "Spans or events refused by a full intake queue",
    "spans_after_shutdown": "Governance data that arrived after shutdown",
    "outbox_write_failures": "Runs that could not be written to the outbox",
    "outbox_moved_aside": "Unreadable outbox files moved aside",
}


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

        for name, description in _COUNTERS.items():
            meter.create_observable_counter(
                f"aigp_bridge.{name}", callbacks=[counter_callback(name)], description=description
            )
        for name, description in _GAUGES.items():
            meter.create_observable_gauge(
                f"aigp_bridge.{name}", callbacks=[gauge_callback(name)], description=description
            )


_GAUGES = {
    "pending_traces": "Traces buffered now",
    "queue_depth": "Runs waiting for delivery in memory, retries included",
    "intake_depth": "Span notes and events waiting for the correlation worker",
    "outbox_depth": "Runs waiting in the durable outbox",
}

_INSTRUMENTS = _Instruments()


def register_metrics(owner: object, stats: Stats, gauges: dict[str, Callable[[], int]]) -> None:
    """Report ``stats`` and ``gauges`` through the global ``MeterProvider`` while ``owner`` lives."""
    _INSTRUMENTS.add(owner, stats, gauges)


_SECRET_IN_URL = re.compile(r"://[^/\s@'\"]{1,512}@")
_SECRET_FIELD = re.compile(
    r"(?i)(?P<name>authorization|proxy-authorization|api[_-]?key|x-api-key|token|access_token|password"
    r"|passwd|secret|client_secret|signature|sig|bearer)(?P<sep>['\"]?\s*[:=]\s*['\"]?|\s+)"
    r"(?P<scheme>(?:bearer|basic|token)\s+)?[^\s'\",&;)}]+"
)
LOG_TEXT_MAX = 1000
"""Longest message the bridge logs; the rest is cut (a value from arbitrary code can be huge)."""


def redact(text: str) -> str:
    """Credentials in URLs (``user:password@``), headers and query parameters replaced by ``***``."""
    text = _SECRET_IN_URL.sub("://***@", text)
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
