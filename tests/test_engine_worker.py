"""The correlation worker's loop: what it processes around a stop request."""

from __future__ import annotations

from typing import Any

import pytest

from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.engine import Engine, StopRequest
from tests.test_correlate import _note


def test_nothing_behind_a_stop_request_is_processed_even_when_stopping_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stop flag is read once per batch: a stop whose last step fails must still end the batch.
    emitted: list[Any] = []
    engine = Engine(BridgeConfig(job_namespace="test"), emitted.append)

    def fail() -> None:
        raise RuntimeError("discarding failed")

    monkeypatch.setattr(engine, "_discard_late", fail)
    with engine._correlating:  # the worker waits: this thread processes the batch itself
        behind = _note(span_id=0x99)
        engine._intake.extend([StopRequest(), behind])
        assert engine._process(256) is False
        assert list(engine._intake) == [behind]
        assert engine.stats.spans_seen == 0
    monkeypatch.undo()
    assert engine.shutdown(5.0)
