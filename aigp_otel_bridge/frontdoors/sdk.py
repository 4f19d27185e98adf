"""The SDK adapter: a finished OpenTelemetry SDK span, read through ``ReadableSpan``'s public
properties, as the ``FinishedSpan`` capture reads; on the application's thread.

The only code that reads an SDK span's content; the span processor and the root recorder read
only its ids and its parent's (``span.get_span_context()``, ``span.parent``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from aigp_otel_bridge.frontdoors.capture import ModelsNoted, capture
from aigp_otel_bridge.note import SpanEvent, SpanNote, plain


class SdkSpan:
    """A ``FinishedSpan`` over a ``ReadableSpan``. What capture reads of every span (ids,
    attributes, events) is read once here; the rest only when a span that matters asks for it."""

    __slots__ = ("_span", "attributes", "events", "parent_span_id", "remote_parent", "span_id", "trace_id")

    def __init__(self, span: ReadableSpan) -> None:
        self._span = span
        context = span.context
        parent = span.parent
        self.trace_id: int = context.trace_id if context is not None else 0
        self.span_id: int = context.span_id if context is not None else 0
        self.parent_span_id: int | None = None if parent is None else parent.span_id
        self.remote_parent: bool = parent is not None and parent.is_remote
        attributes = span.attributes  # a read-only view; its ``copy`` is a plain dict of its items
        self.attributes: Mapping[str, Any] = (
            attributes.copy() if isinstance(attributes, MappingProxyType) else plain(attributes)
        )
        self.events: Sequence[SpanEvent] = span.events

    @property
    def name(self) -> str:
        return self._span.name

    @property
    def start_ns(self) -> int | None:
        return self._span.start_time

    @property
    def end_ns(self) -> int | None:
        return self._span.end_time

    @property
    def failed(self) -> bool:
        return self._span.status.status_code is StatusCode.ERROR

    @property
    def status_description(self) -> str | None:
        return self._span.status.description

    @property
    def resource_attributes(self) -> Mapping[str, Any]:
        """The Resource's own attributes: one mapping shared by every span of the process."""
        return self._span.resource.attributes


def capture_span(
    span: ReadableSpan, local_root_of: dict[int, int] | None = None, models_noted: ModelsNoted | None = None
) -> SpanNote | None:
    """The note of a finished SDK span, or None when it matters to no run (see ``capture``)."""
    return capture(SdkSpan(span), local_root_of, models_noted)
