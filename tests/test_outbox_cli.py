"""``aigp-otel-bridge outbox status|replay``: look at and replay the durable outbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.outbox import Outbox
from aigp_otel_bridge.tools.cli import main
from tests.backend import LineageBackend
from tests.test_faults import governed_session


@pytest.fixture
def backend() -> Iterator[LineageBackend]:
    server = LineageBackend()
    yield server
    server.down()


def filled_outbox(backend: LineageBackend, folder: Path, runs: int) -> set[str]:
    """Runs made while the backend is down: all of them end up in the outbox."""
    processor = AIGPLineageSpanProcessor(
        client=OpenLineageClient(config=backend.client_config()), job_namespace="cli",
        outbox_dir=str(folder), retry_max_backoff_s=60.0,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    run_ids = {governed_session(provider.get_tracer("cli"), i) for i in range(runs)}
    assert processor.force_flush(20_000)
    provider.shutdown()
    return run_ids


def test_status_reports_pending_runs_age_and_last_error(
    backend: LineageBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filled_outbox(backend, tmp_path, runs=3)
    assert main(["outbox", "status", "--dir", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["pending"] == 3
    assert status["oldest_age_s"] >= 0
    assert "ConnectionError" in status["last_error"]


def test_replay_delivers_through_the_configured_client_and_empties_the_outbox(
    backend: LineageBackend, tmp_path: Path
) -> None:
    run_ids = filled_outbox(backend, tmp_path, runs=5)
    backend.up()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env.update(OPENLINEAGE_URL=backend.url, HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "aigp_otel_bridge", "outbox", "replay", "--dir", str(tmp_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "delivered 5, failed 0, still stored 0" in result.stdout
    assert backend.run_ids() == run_ids
    assert Outbox(tmp_path).status().pending == 0


def test_replay_keeps_what_fails_and_says_so(backend: LineageBackend, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    filled_outbox(backend, tmp_path, runs=2)
    for name in [n for n in os.environ if n.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", backend.url)  # still down
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__RETRY__TOTAL", "0")
    monkeypatch.chdir(tmp_path)
    assert main(["outbox", "replay", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "delivered 0, failed 2, still stored 2" in out and "last error" in out


def test_commands_without_an_outbox_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["outbox", "status", "--dir", str(tmp_path / "nothing")]) == 2
    assert "no outbox in" in capsys.readouterr().err
