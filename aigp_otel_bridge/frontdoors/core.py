"""What every front door shares: settings, the client, the engine, flush and shutdown.

The span processor and the span exporter differ only in how spans reach them (one at a time at
``on_end``, or in batches from a ``BatchSpanProcessor``); everything after ``capture_span`` is
this one object (``take_span``), so both give the same RunEvents. The gateway holds one too, but
hands its engine notes of its own: ``frontdoors/otlp.py`` fills the same ``SpanNote`` from OTLP
spans and offers whole requests to ``core.engine``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from openlineage.client import OpenLineageClient
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan

from aigp_otel_bridge.client import default_client
from aigp_otel_bridge.config import BridgeConfig, resolve
from aigp_otel_bridge.engine import Engine
from aigp_otel_bridge.frontdoors.capture import MODELS_NOTED_MAX, ModelsNoted
from aigp_otel_bridge.frontdoors.sdk import capture_span
from aigp_otel_bridge.note import SpanNote
from aigp_otel_bridge.propagated_links import RUN_LINKS
from aigp_otel_bridge.stages.extract import record_from_aigp_event, span_key_of, trace_key_of

_log = logging.getLogger("aigp_otel_bridge")


def _suppressed(emit: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap ``emit`` so instrumented HTTP or Kafka libraries make no spans while delivering.

    Under ``opentelemetry-instrument`` the client's ``requests`` calls would otherwise become
    spans that return to the bridge as traces of their own.
    """

    def emit_quietly(event: Any) -> None:
        token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            emit(event)
        finally:
            otel_context.detach(token)

    return emit_quietly


NO_SPAN_CURRENT = (
    "ignored governance recorded with no span current: the AIGP event has no trace_id, so it"
    " cannot join a trace's run. Pass the span to the AIGP SDK (span=...), or use an"
    " instrumentation that makes its spans current (docs/frameworks.md)"
)


def _why_rejected(aigp_event: object) -> tuple[str, str, str]:
    """(rate-limit kind, message, argument) of the warning for an event without a usable trace id:
    most often the SDK's event recorded with no span current (an empty ``trace_id``)."""
    if not isinstance(aigp_event, Mapping):
        return "ingest", "ignored an AIGP event that is not a mapping: %s", type(aigp_event).__name__
    trace_id = aigp_event.get("trace_id")
    if trace_id is None or trace_id == "":
        return "ingest-no-span", "%s", NO_SPAN_CURRENT
    return "ingest", "ignored an AIGP event whose trace_id is a %s, not a string", type(trace_id).__name__


class BridgeCore:
    """Resolved settings, the OpenLineage client (closed only if created here) and the engine.

    Delivery always runs with instrumentation suppressed: spans an instrumented ``requests`` or
    Kafka client would make while sending must not come back to the bridge as traces.
    """

    def __init__(
        self,
        client: OpenLineageClient | None,
        arguments: Mapping[str, Any],
    ) -> None:
        # Settings first: a bad argument raises before any client or thread exists.
        self.config: BridgeConfig = resolve(arguments)
        self.owns_client = client is None
        self.client: OpenLineageClient = client if client is not None else default_client()
        from_environment = arguments.get("outbox_dir") is None  # an unusable folder then only warns
        self.engine = Engine(
            self.config, _suppressed(self.client.emit), outbox_from_environment=from_environment
        )
        self.models_noted: ModelsNoted = ModelsNoted(MODELS_NOTED_MAX)
        """(trace, model names) whose span was noted: a repeat is not noted again."""

    def take_span(self, span: ReadableSpan, local_root_of: dict[int, int] | None = None) -> SpanNote | None:
        """Capture one finished span and queue it (nothing once stopped); never raises into the caller.

        ``local_root_of``: open span id -> its local root, from a front door that sees starts.
        Returns the note queued, None for a span that matters to no run (or could not be read).
        """
        try:
            note = capture_span(span, local_root_of, self.models_noted)
        except Exception:
            self.engine.log.log(logging.ERROR, "on_end", "could not read a finished span", exc_info=True)
            return None
        if note is not None:
            self.engine.put_span(note)
        return note

    def ingest_aigp_event(
        self, aigp_event: Mapping[str, Any], local_root_of: dict[int, int] | None = None
    ) -> None:
        """Join a full AIGP event (the governance store's JSON) to its trace by ``trace_id``, and to
        the local root of its ``span_id`` when that span is open (``local_root_of``)."""
        engine = self.engine
        if engine.stopped:
            return
        try:
            key = trace_key_of(aigp_event.get("trace_id")) if isinstance(aigp_event, Mapping) else None
            if key is None:
                engine.stats.ingest_rejected += 1
                engine.log.log(logging.WARNING, *_why_rejected(aigp_event))
                return
            local_root_id = None
            if local_root_of is not None:
                span_id = span_key_of(aigp_event.get("span_id"))
                local_root_id = local_root_of.get(span_id) if span_id is not None else None
            record = record_from_aigp_event(aigp_event, limits=self.config.limits)
            engine.put_event(key, record, local_root_id)
        except Exception:
            engine.log.log(logging.ERROR, "ingest", "could not read an AIGP event", exc_info=True)

    def force_flush(self, timeout_millis: float) -> bool:
        """Wait until every run already decided is handed to ``client.emit``; False on timeout."""
        try:
            return self.engine.flush(timeout_millis / 1000)
        except Exception:
            _log.exception("force_flush failed")
            return False

    def shutdown(self) -> None:
        """Flush (pending governed traces go out as incomplete runs), stop, close an owned client.

        Bounded by ``shutdown_timeout_s`` (``AIGP_BRIDGE_SHUTDOWN_TIMEOUT_S``).
        """
        try:
            delivered = self.engine.shutdown(timeout_s=self.config.shutdown_timeout_s)
            if not delivered:
                _log.warning("aigp-otel-bridge shut down with undelivered runs (counted in stats)")
            if self.owns_client:
                self.client.close(timeout=5.0)
        except Exception:
            _log.exception("shutdown failed")

    def stats(self) -> dict[str, int]:
        lineage = RUN_LINKS.stats.lineage_context_rejected  # counted by the process-wide propagation
        return {**self.engine.stats.snapshot(), "lineage_context_rejected": lineage}
