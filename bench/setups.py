"""What every measurement shares: the null transport, the dropping exporter, the providers.

Three span-processing configurations are compared in each measurement:

- ``none``: a ``TracerProvider`` with no span processor, or replayed to the SDK's base
  ``SpanProcessor``, whose hooks do nothing (the floor);
- ``batch``: the SDK's ``BatchSpanProcessor`` with an exporter that drops every batch;
- ``bridge``: ``AIGPLineageSpanProcessor`` with an ``OpenLineageClient`` on a null transport.

A fresh provider (and processor, client, transport) is made for every timed window and shut down
after it, outside the window.

The span and session ratios of the guard measure a processor alone: ``made_beforehand`` makes and ends a
workload's spans before the window (recording the starts and ends a processor sees, with each
start's parent context), and ``replay`` hands that sequence to the processor under test inside
it, so that the window holds the processor's work and none of the application's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.serde import Serde
from openlineage.client.transport.transport import Config, Transport
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

from aigp_otel_bridge import AIGPLineageSpanProcessor

CONFIGS: tuple[str, ...] = ("none", "batch", "bridge")
"""The span-processing configurations, in the order each round runs them."""

RESOURCE = Resource.create({"service.name": "bench-agent", "service.namespace": "bench"})
"""One resource for every provider (``Resource.create`` runs detectors: do it once)."""

JOB_NAMESPACE = "bench"


class NullTransport(Transport):
    """Delivers nowhere, but does what every real transport must: serialise the event.

    ``Serde.to_json`` is what the HTTP, Kafka, file and console transports all call first;
    the text is then thrown away. Counts events and bytes so runs can be checked.
    """

    kind = "bench-null"
    config_class = Config

    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0
        self.last_json = ""
        self._lock = threading.Lock()

    def emit(self, event: Any) -> None:
        text = Serde.to_json(event)
        with self._lock:
            self.events += 1
            self.bytes += len(text)
            self.last_json = text


class DropExporter(SpanExporter):
    """A span exporter that drops every batch (after counting it)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Setup:
    """One configuration's provider, tracer and whatever can be checked after a window."""

    config: str
    provider: TracerProvider
    tracer: Tracer
    processor: SpanProcessor
    """The configuration's processor (``none``: the SDK's base class, whose hooks do nothing)."""
    exporter: DropExporter | None = None
    bridge: AIGPLineageSpanProcessor | None = None
    transport: NullTransport | None = None
    problems: list[str] = field(default_factory=list)

    def flush(self) -> None:
        if not self.provider.force_flush(60_000):
            self.problems.append(f"{self.config}: force_flush timed out")

    def shutdown(self) -> None:
        self.provider.shutdown()

    def check(self, *, spans: int | None = None, runs: int | None = None) -> list[str]:
        """Problems that would make the window's figure wrong (drops, missing runs)."""
        problems = list(self.problems)
        if self.exporter is not None and spans is not None and self.exporter.spans != spans:
            problems.append(f"batch: exported {self.exporter.spans} spans of {spans}")
        if self.bridge is not None:
            stats = self.bridge.stats()
            for counter in ("runs_dropped", "build_failures", "emit_failures"):
                if stats[counter]:
                    problems.append(f"bridge: {counter} = {stats[counter]}")
            if runs is not None and self.transport is not None and self.transport.events != runs:
                problems.append(f"bridge: emitted {self.transport.events} runs, expected {runs}")
        return problems


def null_client() -> tuple[OpenLineageClient, NullTransport]:
    transport = NullTransport()
    return OpenLineageClient(transport=transport), transport


def make_setup(
    config: str, *, queue_hint: int = 0, processor: type[AIGPLineageSpanProcessor] | None = None,
    **bridge_settings: Any,
) -> Setup:
    """A fresh provider for ``config``; ``queue_hint`` sizes the batch queue so it never drops.
    ``processor``: the bridge class of another checkout (``python -m bench compare``)."""
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    setup = Setup(config, provider, provider.get_tracer("bench"), SpanProcessor())
    if config == "batch":
        setup.exporter = DropExporter()
        setup.processor = BatchSpanProcessor(setup.exporter, max_queue_size=max(2048, queue_hint + 64))
    elif config == "bridge" or processor is not None:
        client, setup.transport = null_client()
        bridge_class = processor or AIGPLineageSpanProcessor
        setup.bridge = bridge_class(client, job_namespace=JOB_NAMESPACE, **bridge_settings)
        setup.processor = setup.bridge
    elif config != "none":
        raise ValueError(f"unknown configuration {config!r}")
    if setup.exporter is not None or setup.bridge is not None:
        provider.add_span_processor(setup.processor)
    return setup


Step = tuple[Span, Context | None] | ReadableSpan
"""One call a processor sees: a start (the span and the parent context it started in, for
``on_start``) or an end (the ended span the SDK hands to ``on_end``)."""


class _Recorder(SpanProcessor):
    """Records the calls a processor would see, in order."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.steps.append((span, parent_context))

    def on_end(self, span: ReadableSpan) -> None:
        self.steps.append(span)


def made_beforehand(work: Callable[[Tracer], None]) -> list[Step]:
    """The spans of ``work``, made and ended now on a provider of their own: the sequence of starts
    and ends that ``replay`` hands to a processor later."""
    recorder = _Recorder()
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(recorder)
    work(provider.get_tracer("bench"))
    provider.shutdown()
    return recorder.steps


def replay(processor: SpanProcessor, steps: list[Step]) -> None:
    """What a provider does with each span, for ``processor`` alone: ``on_start`` and ``on_end``
    in the order the spans were made."""
    for step in steps:
        if isinstance(step, tuple):
            processor.on_start(*step)
        else:
            processor.on_end(step)
