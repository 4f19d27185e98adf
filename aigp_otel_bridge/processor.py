"""The span processor: the in-process front door onto the bridge's stages."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from openlineage.client import OpenLineageClient
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from aigp_otel_bridge.config import JobNameSetting, resolve
from aigp_otel_bridge.engine import Engine
from aigp_otel_bridge.records import capture_span, record_from_aigp_event, trace_key_of

_log = logging.getLogger("aigp_otel_bridge")


class AIGPLineageSpanProcessor(SpanProcessor):
    """Emits one OpenLineage RunEvent per governed local root span, off the application's thread.

    Register it in a ``TracerProvider``; pass full AIGP events to ``ingest_aigp_event`` (it fits
    ``AIGPInstrumentor(event_callback=...)``) to join the governance store's view to the spans.
    """

    def __init__(
        self,
        client: OpenLineageClient | None = None,
        job_namespace: str | None = None,
        job_name: JobNameSetting = None,
        **settings: Any,
    ) -> None:
        self.config = resolve({"job_namespace": job_namespace, "job_name": job_name, **settings})
        self._owns_client = client is None
        self.client = client if client is not None else OpenLineageClient()
        self._engine = Engine(self.config, self.client.emit)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            parent = span.parent
            if parent is None or parent.is_remote:
                context = span.get_span_context()
                self._engine.put_root_start(context.trace_id, context.span_id, parent is not None)
        except Exception:
            self._engine.log.log(logging.ERROR, "on_start", "could not note a root span", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        if self._engine.stopped:
            return
        try:
            note = capture_span(span)
        except Exception:
            self._engine.log.log(logging.ERROR, "on_end", "could not read a finished span", exc_info=True)
            return
        if note is not None:
            self._engine.put_span(note)

    def ingest_aigp_event(self, aigp_event: Mapping[str, Any]) -> None:
        """Join a full AIGP event (the governance store's JSON) to its trace by ``trace_id``."""
        if self._engine.stopped:
            return
        try:
            key = trace_key_of(aigp_event.get("trace_id")) if isinstance(aigp_event, Mapping) else None
            if key is None:
                self._engine.stats.ingest_rejected += 1
                self._engine.log.log(
                    logging.WARNING, "ingest", "ignored an AIGP event without a string trace_id: %s",
                    type(aigp_event).__name__,
                )
                return
            self._engine.put_event(key, record_from_aigp_event(aigp_event, limits=self.config.limits))
        except Exception:
            self._engine.log.log(logging.ERROR, "ingest", "could not read an AIGP event", exc_info=True)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every run already decided is handed to ``client.emit``; False on timeout."""
        try:
            return self._engine.flush(timeout_millis / 1000)
        except Exception:
            _log.exception("force_flush failed")
            return False

    def shutdown(self) -> None:
        """Flush (pending governed traces are emitted as incomplete runs), then stop. Idempotent."""
        try:
            delivered = self._engine.shutdown(timeout_s=30.0)
            if not delivered:
                _log.warning("aigp-otel-bridge shut down with undelivered runs (counted in stats)")
            if self._owns_client:
                self.client.close(timeout=5.0)
        except Exception:
            _log.exception("shutdown failed")

    def stats(self) -> dict[str, int]:
        """Running totals: records, runs emitted, values left out, drops (see docs/operations)."""
        return self._engine.stats.snapshot()
