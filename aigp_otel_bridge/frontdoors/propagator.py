"""``AIGPLineagePropagator``: the caller's run identity crosses a call with the trace context.

An OpenTelemetry ``TextMapPropagator`` (entry point ``aigp_lineage``, group
``opentelemetry_propagator``), used beside W3C trace context, e.g.
``OTEL_PROPAGATORS=tracecontext,baggage,aigp_lineage``. On inject it writes one header,
``aigp-lineage``, naming the run of the current local root (run id, job namespace and name) and
the top run of the chain; on extract it reads that header into the context, where the span
processor finds it when the callee's local root starts. It carries run ids and job names only:
never governance hashes, denial reasons or the names of governed resources.

Nothing here raises into the application: a malformed header is ignored, counted and warned
about (rate-limited).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.frontdoors.sdk import capture_span
from aigp_otel_bridge.propagated_links import HEADER, RUN_LINKS, RunParent, decode_header, encode_header
from aigp_otel_bridge.stages.build import job_of
from aigp_otel_bridge.stages.extract import ROLE_KEYS, Limits, agent_name_of, resource_facts, root_facts

_PARENT_KEY = otel_context.create_key("aigp-lineage-parent")


def propagated_parent(context: Context | None = None) -> RunParent | None:
    """The caller's run identity extracted into ``context`` (default: the current one), if any."""
    value = otel_context.get_value(_PARENT_KEY, context)
    return value if isinstance(value, RunParent) else None


class AIGPLineagePropagator(TextMapPropagator):
    """Propagates the caller's OpenLineage run identity and the chain's root (never governance)."""

    def __init__(self) -> None:
        RUN_LINKS.active = True  # from now on, local roots are noted so that calls can carry them

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        if context is None:
            context = otel_context.get_current()
        try:
            values = getter.get(carrier, HEADER)
            if not values:
                return context
            parent = decode_header(values[0])
            if parent is None:
                RUN_LINKS.rejected(f"{HEADER} header")
                return context
            return otel_context.set_value(_PARENT_KEY, parent, context)
        except Exception:
            RUN_LINKS.log.log(logging.ERROR, "propagator", "could not extract %s", HEADER, exc_info=True)
            return context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        try:
            span_context = trace.get_current_span(context).get_span_context()
            if not span_context.is_valid:
                return
            link = RUN_LINKS.propagated(span_context.trace_id, span_context.span_id)
            if link is not None:
                setter.set(carrier, HEADER, encode_header(link))
        except Exception:
            RUN_LINKS.log.log(logging.ERROR, "propagator", "could not inject %s", HEADER, exc_info=True)

    @property
    def fields(self) -> set[str]:
        return {HEADER}


def job_at_start(config: BridgeConfig, span: Any, agent_name: str | None = None) -> tuple[str, str]:
    """The job of a local root that is still running, by the rule its run is named with later
    (``agent_name``: the first agent started under it, which is the outermost one): ``RUN_LINKS``
    asks for it the first time the root's identity is needed and keeps it for the run."""
    note = capture_span(span)
    if note is None:  # not a local root after all: the run is named when it closes
        raise ValueError("not a local root")
    limits = config.limits
    root, resource = root_facts(note, limits), resource_facts(note.resource, limits)
    agent_id = root.agent_id or resource.agent_id or resource.service_name or "unknown_service"
    return job_of(config, root, resource, agent_id, f"{note.trace_id:032x}", agent_name=agent_name)


def agent_named_at_start(span: Any, limits: Limits) -> str | None:
    """The agent a span names as it starts, in any convention (``gen_ai.agent.name``, ...): what
    a call made under it must carry as its caller's task before the span's end says so."""
    attributes = span.attributes
    if not attributes or ROLE_KEYS.isdisjoint(attributes):
        return None
    return agent_name_of(attributes, limits)


class LocalRootRecorder(SpanProcessor):
    """Notes the run of each local root in ``RUN_LINKS`` while it is open, so that calls made under
    it can propagate its identity. Part of ``AIGPLineageSpanProcessor``; on its own, it gives a
    program whose bridge sees no span starts (the span exporter) the same propagation."""

    def __init__(self, config: BridgeConfig) -> None:
        self._name_job = partial(job_at_start, config)
        self._limits = config.limits

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        parent = span.parent
        if parent is None or parent.is_remote:
            self.root_started(span, parent_context)
        else:
            self.span_started(span)

    def span_started(self, span: Any) -> None:
        """Note an agent span that names its agent as it starts, so that a call made under it
        propagates the job its run will be emitted with. Nothing to do in a process without an
        ``AIGPLineagePropagator``. Never raises."""
        if not RUN_LINKS.active:
            return
        try:
            agent = agent_named_at_start(span, self._limits)
            if agent is not None:
                RUN_LINKS.agent_started(span.get_span_context().trace_id, agent)
        except Exception:
            RUN_LINKS.log.log(logging.ERROR, "on_start", "could not note an agent span", exc_info=True)

    def root_started(self, span: Any, parent_context: Context | None) -> None:
        """Register a local root's run: its parent is the caller whose identity the context carries,
        else, for a top-level root, the process's ``OPENLINEAGE_CONTEXT``. Nothing to do in a
        process without an ``AIGPLineagePropagator``. Never raises."""
        if not RUN_LINKS.active:
            return
        try:
            context = span.get_span_context()
            parent = propagated_parent(parent_context)
            RUN_LINKS.root_started(context.trace_id, context.span_id, parent, span, self._name_job)
        except Exception:
            RUN_LINKS.log.log(logging.ERROR, "on_start", "could not note a local root", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            parent = span.parent
            if (parent is None or parent.is_remote) and span.context is not None:
                RUN_LINKS.root_ended(span.context.trace_id, span.context.span_id)
        except Exception:
            RUN_LINKS.log.log(logging.ERROR, "on_end", "could not note a root's end", exc_info=True)


def record_roots_of_global_provider(config: BridgeConfig) -> bool:
    """Add a ``LocalRootRecorder`` to the global SDK ``TracerProvider``, if one is set (as
    ``opentelemetry-instrument`` does before it builds exporters). True when added."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return False
    provider.add_span_processor(LocalRootRecorder(config))
    return True
