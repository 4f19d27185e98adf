"""The command line as a user drives it: the demo's files through ``verify``, pipes, the
environment, and the tools' extra. The ``outbox`` commands: tests/test_outbox.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aigp_otel_bridge.outbox import Outbox
from aigp_otel_bridge.tools.cli import EXIT_BROKEN_PIPE
from tests.backend import LineageBackend
from tests.schemas import validate_run_event

_CLEAN = ("OPENLINEAGE", "AIGP_BRIDGE_", "OTEL_")


def _environ(home: Path, **extra: str) -> dict[str, str]:
    """The user's environment without OpenLineage or bridge settings, and no ~/.openlineage."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_CLEAN)}
    return {**environ, "HOME": str(home), **extra}


def _cli(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigp_otel_bridge", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def _json_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``demo --store --lineage`` as the README shows it: the two files and the demo's output."""
    folder = tmp_path_factory.mktemp("demo")
    result = _cli(
        "demo", "--store", "store.jsonl", "--lineage", "lineage.jsonl", cwd=folder, env=_environ(folder)
    )
    assert result.returncode == 0, result.stderr
    return folder / "store.jsonl", folder / "lineage.jsonl", result.stdout


def test_the_demo_writes_the_store_and_the_lineage_it_names(demo_files: tuple[Path, Path, str]) -> None:
    store, lineage, output = demo_files
    (event,) = _json_lines(lineage)
    validate_run_event(event)  # type: ignore[arg-type]
    trace_id = event["run"]["facets"]["aigp_governance"]["traceId"]
    aigp_events = _json_lines(store)
    assert len(aigp_events) == 5 and {e["trace_id"] for e in aigp_events} == {trace_id}
    assert f"5 AIGP events with trace_id {trace_id}, written to store.jsonl" in output
    assert "copied to lineage.jsonl" in output and "the run was           : delivered" in output
    assert '"aigp_governance"' in output  # the console transport's copy, printed


def test_the_demo_store_round_trips_through_verify(demo_files: tuple[Path, Path, str]) -> None:
    store, lineage, _ = demo_files
    result = _cli("verify", "--lineage", lineage.name, "--aigp-events", store.name,
                  cwd=store.parent, env=_environ(store.parent))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 of 1 governed RunEvent(s) verified" in result.stdout


@pytest.fixture
def silent_backend() -> Iterator[str]:
    """An HTTP backend that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_demo_that_could_not_deliver_says_so_and_fails(tmp_path: Path, silent_backend: str) -> None:
    # The backend would hold every attempt for the transport's 5 s timeout and retries; the
    # demo's --timeout bounds it all (the subprocess limit only guards against a hang).
    env = _environ(tmp_path, OPENLINEAGE_URL=silent_backend)
    result = _cli("demo", "--timeout", "1", cwd=tmp_path, env=env, timeout=25)
    assert result.returncode == 1
    assert "the run was           : not delivered within the timeout" in result.stdout
    assert "was not delivered (undelivered)" in result.stderr


def test_a_demo_whose_run_went_to_the_outbox_says_stored(tmp_path: Path) -> None:
    refused = LineageBackend()  # never started: connections are refused
    env = _environ(tmp_path, OPENLINEAGE_URL=refused.url, AIGP_BRIDGE_OUTBOX_DIR=str(tmp_path / "outbox"))
    result = _cli("demo", "--timeout", "10", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "not delivered: stored in the outbox" in result.stdout
    assert Outbox(tmp_path / "outbox").depth() == 1


@pytest.mark.parametrize("command", ["verify", "explain"])
def test_output_into_a_closed_pipe_is_no_error(demo_files: tuple[Path, Path, str], command: str) -> None:
    """``… | head -1``: the reader goes away before the command writes."""
    store, lineage, _ = demo_files
    args = ["verify", "--lineage", str(lineage), "--aigp-events", str(store)] if command == "verify" else [
        "explain", str(lineage)
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "aigp_otel_bridge", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_environ(store.parent),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as head does after its first line
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) == EXIT_BROKEN_PIPE
    assert errors == ""


_WITHOUT_RICH = (
    "import sys; sys.modules['rich'] = None; from aigp_otel_bridge.tools.cli import main; sys.exit(main())"
)


def test_without_rich_the_tools_name_the_extra_to_install(demo_files: tuple[Path, Path, str]) -> None:
    _, lineage, _ = demo_files
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_RICH, "explain", str(lineage)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'aigp-otel-bridge explain: needs rich, which is not installed: pip install "aigp-otel-bridge[cli]"'
    )


def test_an_instrumented_application_does_not_import_rich() -> None:
    code = (
        "import sys, aigp_otel_bridge, aigp_otel_bridge.frontdoors.processor,"
        " aigp_otel_bridge.frontdoors.exporter;"
        "from aigp_otel_bridge import AIGPLineageSpanProcessor;"
        "AIGPLineageSpanProcessor().shutdown();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
