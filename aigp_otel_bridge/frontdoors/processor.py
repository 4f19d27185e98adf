"""The span processor: the in-process front door onto the bridge's stages."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from openlineage.client import OpenLineageClient
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from aigp_otel_bridge.config import JobNameSetting
from aigp_otel_bridge.frontdoors.core import BridgeCore
from aigp_otel_bridge.frontdoors.propagator import LocalRootRecorder
from aigp_otel_bridge.propagated_links import RUN_LINKS

OPEN_SPANS_PER_PENDING_RUN = 4
"""Open spans whose local root is remembered, per ``max_pending_traces``: past it (spans that
never end) the map is cleared, and the records of spans then open join their trace's first
run, as a front door without starts does; the usual single-root trace loses nothing by that."""


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
        self._core = BridgeCore(client, {"job_namespace": job_namespace, "job_name": job_name, **settings})
        self.config = self._core.config
        self.client = self._core.client
        self._engine = self._core.engine
        self._local_root_of: dict[int, int] = {}
        """Open span id -> span id of its local root: each span inherits its local parent's."""
        self._max_open_spans = OPEN_SPANS_PER_PENDING_RUN * self.config.max_pending_traces
        self._links = LocalRootRecorder(self.config)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            parent, context = span.parent, span.get_span_context()
            if context is None:
                return
            local_root_of = self._local_root_of
            span_id = context.span_id
            if parent is None or parent.is_remote:
                if len(local_root_of) >= self._max_open_spans:
                    local_root_of.clear()  # spans that never end: see OPEN_SPANS_PER_PENDING_RUN
                local_root_of[span_id] = span_id
                self._engine.put_root_start(context.trace_id, span_id, parent is not None)
                if not self._engine.stopped:  # so that calls under it can propagate its run
                    self._links.root_started(span, parent_context)
            else:
                root = local_root_of.get(parent.span_id)
                if root is not None:
                    local_root_of[span_id] = root
                if RUN_LINKS.active:  # an agent span names the job its root's run propagates
                    self._links.span_started(span)
        except Exception:
            self._engine.log.log(logging.ERROR, "on_start", "could not note a root span", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        note = self._core.take_span(span, self._local_root_of)
        if note is not None and note.local_root:  # every local root is noted; most children are not
            self._links.on_end(span)

    def ingest_aigp_event(self, aigp_event: Mapping[str, Any]) -> None:
        """Join a full AIGP event (the governance store's JSON) to its trace by ``trace_id``, and to
        the local root of its ``span_id`` when that span is still open."""
        self._core.ingest_aigp_event(aigp_event, self._local_root_of)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every run already decided is handed to ``client.emit``; False on timeout."""
        return self._core.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush (pending governed traces are emitted as incomplete runs), then stop. Idempotent."""
        self._core.shutdown()

    def stats(self) -> dict[str, int]:
        """Running totals: records, runs emitted, values left out, drops (see docs/operations)."""
        return self._core.stats()
