"""Self-telemetry: counters and gauges under ``aigp_bridge.*`` through the OTel metrics API,
and log lines that stay few however bad the input is."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from aigp_otel_bridge.telemetry import RateLimitedLog
from tests.conftest import CaptureTransport

_reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))


def _collected() -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = _reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else []:
        for scope in resource_metrics.scope_metrics:
            if scope.scope.name == "aigp_otel_bridge":
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(p.value for p in metric.data.data_points)
    return found


def test_counters_and_gauges_reach_a_configured_meter_provider(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    provider, processor = make_bridge()
    tracer = provider.get_tracer("telemetry")
    with tracer.start_as_current_span("invoke") as root:
        root.add_event("aigp.inject.success", {"aigp.event.id": "m-1", "aigp.data.classification": "secret"})
    assert processor.force_flush(10_000)
    collected = _collected()
    for name in ("records", "runs_emitted", "invalid_values", "spans_seen", "runs_dropped"):
        assert f"aigp_bridge.{name}" in collected, name
    for name in ("pending_traces", "queue_depth", "intake_depth", "outbox_depth"):
        assert f"aigp_bridge.{name}" in collected, name
    assert max(collected["aigp_bridge.runs_emitted"]) >= 1
    assert max(collected["aigp_bridge.invalid_values"]) >= 1  # "secret" is no classification


def test_the_bridge_never_feeds_back_into_itself(make_bridge: Any, transport: CaptureTransport) -> None:
    provider, processor = make_bridge()
    with provider.get_tracer("telemetry").start_as_current_span("invoke") as root:
        root.add_event("aigp.prompt.used", {"aigp.event.id": "m-2"})
    assert processor.force_flush(10_000)
    _collected()  # collecting metrics must make no spans and no runs
    assert processor.force_flush(10_000)
    assert len(transport.events) == 1
    assert processor.stats()["spans_seen"] == 1


def test_rate_limited_log_says_once_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RateLimitedLog(logging.getLogger("aigp_otel_bridge.test"), interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge.test"):
        for _ in range(500):
            log.log(logging.WARNING, "bad", "bad value")
        log.log(logging.WARNING, "other", "another kind")
    assert [r.getMessage() for r in caplog.records] == ["bad value", "another kind"]
    log._last["bad"] -= 7200  # the interval has passed
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge.test"):
        log.log(logging.WARNING, "bad", "bad value")
    assert caplog.records[-1].getMessage() == "bad value (499 similar messages suppressed)"


def test_hostile_input_floods_no_logs(make_bridge: Any, caplog: pytest.LogCaptureFixture) -> None:
    provider, processor = make_bridge()
    tracer = provider.get_tracer("telemetry")
    with caplog.at_level(logging.DEBUG, logger="aigp_otel_bridge"):
        for index in range(200):
            processor.ingest_aigp_event({"no": "trace id", "n": index})  # type: ignore[arg-type]
            with tracer.start_as_current_span("invoke") as root:
                root.add_event("aigp.tool.invoked", {"aigp.governance.hash": "not-a-hash"})
        assert processor.force_flush(10_000)
    assert processor.stats()["ingest_rejected"] == 200
    assert len([r for r in caplog.records if r.name.startswith("aigp_otel_bridge")]) <= 3
