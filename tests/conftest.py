"""Shared fixtures: a capturing OpenLineage transport and a TracerProvider with the bridge."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from openlineage.client import OpenLineageClient
from openlineage.client.serde import Serde
from openlineage.client.transport.transport import Config, Transport
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.backend import LineageBackend
from tests.schemas import validate_run_event
from tests.waiting import wait_until


class CaptureTransport(Transport):
    """Keeps every emitted event as the JSON dict a backend would receive."""

    kind = "capture"
    config_class = Config

    made: ClassVar[list[CaptureTransport]] = []
    """Every instance of the running test, so that all it received is validated afterwards."""

    def __init__(self, fail_times: int = 0, delay_s: float = 0.0) -> None:
        CaptureTransport.made.append(self)
        self.events: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_times = fail_times
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def emit(self, event: Any) -> None:
        with self._lock:
            self.attempts += 1
            failing = self.attempts <= self.fail_times
        if self.delay_s:
            time.sleep(self.delay_s)
        if failing:
            raise ConnectionError("lineage backend unavailable")
        with self._lock:
            self.events.append(json.loads(Serde.to_json(event)))

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The events received so far, once there are at least ``count``."""

        def received() -> int:
            with self._lock:
                return len(self.events)

        wait_until(lambda: received() >= count, lambda: f"{count} RunEvents, got {received()}", timeout_s)
        with self._lock:
            return list(self.events)


@pytest.fixture(autouse=True)
def every_emitted_event_is_schema_valid() -> Iterator[None]:
    """After each test, validate every RunEvent that reached a capturing transport or a loopback
    backend against the official schemas: no test can emit an invalid event unnoticed."""
    CaptureTransport.made.clear()
    LineageBackend.made.clear()
    yield
    received = [e for t in CaptureTransport.made for e in t.events]
    received += [e for b in LineageBackend.made for e in b.received]
    for event in received:
        validate_run_event(event)


@pytest.fixture(scope="session")
def framework_pythons() -> dict[str, Path]:
    """The interpreter of each agent-framework group's environment (tests/framework_envs), made
    once per session when missing or out of date."""
    from tests.framework_envs import framework_pythons as made

    return made()


@pytest.fixture
def transport() -> CaptureTransport:
    return CaptureTransport()


@pytest.fixture
def make_bridge(
    transport: CaptureTransport,
) -> Iterator[Callable[..., tuple[TracerProvider, AIGPLineageSpanProcessor]]]:
    """Build a TracerProvider with the bridge registered; both are shut down after the test."""
    made: list[tuple[TracerProvider, AIGPLineageSpanProcessor]] = []

    def make(
        resource: dict[str, Any] | None = None,
        transport_: Transport | None = None,
        **settings: Any,
    ) -> tuple[TracerProvider, AIGPLineageSpanProcessor]:
        attributes = {"service.name": "test-agent"} if resource is None else resource
        provider = TracerProvider(resource=Resource.create(attributes))
        client = OpenLineageClient(transport=transport_ or transport)
        settings.setdefault("job_namespace", "test.ns")
        processor = AIGPLineageSpanProcessor(client=client, **settings)
        provider.add_span_processor(processor)
        made.append((provider, processor))
        return provider, processor

    yield make
    for provider, _ in made:
        provider.shutdown()
