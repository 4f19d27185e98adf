"""The span exporter: the front door for ``opentelemetry-instrument`` (zero-code) programs.

``OTEL_TRACES_EXPORTER=aigp_openlineage`` (alone or beside ``otlp``) makes the SDK's configurator
build this exporter with no arguments inside a ``BatchSpanProcessor``. Spans reach it in batches
after they end, so it never sees a span start: a local root is recognised when it ends, and
records whose local root it cannot know wait in correlation until a local root of their trace
ends. Settings come from ``AIGP_BRIDGE_*``, the
destination from the OpenLineage client's own configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from openlineage.client import OpenLineageClient
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from aigp_otel_bridge.config import JobNameSetting
from aigp_otel_bridge.frontdoors.core import BridgeCore
from aigp_otel_bridge.frontdoors.propagator import record_roots_of_global_provider


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """``OTEL_SDK_DISABLED=true``, read the way the OpenTelemetry SDK reads it."""
    environ = os.environ if environ is None else environ
    return environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"


class AIGPOpenLineageSpanExporter(SpanExporter):
    """Emits one OpenLineage RunEvent per governed local root span from exported span batches.

    Same arguments as ``AIGPLineageSpanProcessor``; the SDK passes none, so ``client=None``
    means ``OpenLineageClient()`` (``openlineage.yml``, ``OPENLINEAGE_*``). With
    ``OTEL_SDK_DISABLED=true`` it starts no threads and creates no client.
    """

    def __init__(
        self,
        client: OpenLineageClient | None = None,
        job_namespace: str | None = None,
        job_name: JobNameSetting = None,
        **settings: Any,
    ) -> None:
        self._core: BridgeCore | None = None
        if sdk_disabled():
            return
        self._core = BridgeCore(client, {"job_namespace": job_namespace, "job_name": job_name, **settings})
        # It sees no span starts: a recorder on the SDK's provider lets calls propagate their run.
        record_roots_of_global_provider(self._core.config)

    @property
    def enabled(self) -> bool:
        return self._core is not None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Queue the governance data of a batch; the network is never touched here."""
        core = self._core
        if core is None:
            return SpanExportResult.SUCCESS
        if core.engine.stopped:
            return SpanExportResult.FAILURE
        for span in spans:
            core.take_span(span)
        return SpanExportResult.SUCCESS

    def ingest_aigp_event(self, aigp_event: Mapping[str, Any]) -> None:
        """Join a full AIGP event to its trace, as ``AIGPLineageSpanProcessor.ingest_aigp_event``."""
        if self._core is not None:
            self._core.ingest_aigp_event(aigp_event)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every run already decided is handed to ``client.emit``; False on timeout.

        The SDK's ``BatchSpanProcessor.force_flush`` does not call this: it only exports the
        queued spans, whose runs then leave on the bridge's own worker threads.
        """
        return True if self._core is None else self._core.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush everything (pending governed traces as incomplete runs), stop, close the client.

        Called by the ``BatchSpanProcessor`` after its last export, which ``opentelemetry-instrument``
        triggers at interpreter exit; idempotent. It takes no timeout argument on purpose: the
        wait is ``AIGP_BRIDGE_SHUTDOWN_TIMEOUT_S``, the one bound a zero-code user can set.
        """
        if self._core is not None:
            self._core.shutdown()

    def stats(self) -> dict[str, int]:
        """Running totals, as ``AIGPLineageSpanProcessor.stats``; empty when disabled."""
        return {} if self._core is None else self._core.stats()
