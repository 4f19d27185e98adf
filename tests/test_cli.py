"""The command line as a user drives it: the demo's files through ``verify``, pipes, the
environment, and the tools' extra."""

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
    assert "was not delivered within --timeout 1 s" in result.stderr


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


_WITHOUT = (
    "import sys; sys.modules[sys.argv.pop(1)] = None; from aigp_otel_bridge.tools.cli import main;"
    " sys.exit(main())"
)


def test_without_rich_the_tools_name_the_extra_to_install(demo_files: tuple[Path, Path, str]) -> None:
    _, lineage, _ = demo_files
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT, "rich", "explain", str(lineage)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'aigp-otel-bridge explain: needs rich, which is not installed: install the "cli" extra'
        ' (in a clone: pip install -e ".[cli]")'
    )


def test_without_the_aigp_sdk_the_demo_names_the_extra_to_install(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT, "aigp", "demo", "--store", "store.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        'aigp-otel-bridge demo: needs aigp, which is not installed: install the "demo" extra'
        ' (in a clone: pip install -e ".[demo]")\n'
    )
    assert not (tmp_path / "store.jsonl").exists()  # stopped before anything was written


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


# ---------------------------------------------------------------------------------------------
# A user's mistakes: one line on stderr and an exit code, never a traceback


def _only_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's own error, the last line of stderr; anything before it is a log record."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "no error message"
    assert all(line.startswith(("WARNING ", "ERROR ")) for line in lines[:-1]), result.stderr
    return lines[-1]


@pytest.mark.parametrize("flag", ["--store", "--lineage"])
def test_demo_into_a_folder_that_does_not_exist_stops_before_running(tmp_path: Path, flag: str) -> None:
    result = _cli("demo", flag, "missing/out.jsonl", cwd=tmp_path, env=_environ(tmp_path))
    assert result.returncode == 2
    assert result.stderr == (
        "aigp-otel-bridge demo: cannot write missing/out.jsonl: the folder missing does not exist\n"
    )
    assert result.stdout == ""  # no session ran, no RunEvent was sent
    assert not (tmp_path / "missing").exists()


def test_demo_into_a_path_that_is_a_folder_says_it_cannot_write_there(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    result = _cli("demo", "--store", "store.jsonl", "--lineage", "out", cwd=tmp_path, env=_environ(tmp_path))
    assert result.returncode == 2
    assert _only_error_line(result).startswith("aigp-otel-bridge demo: cannot write out: ")
    assert result.stdout == ""


def test_a_demo_timeout_too_short_says_which_and_what_to_do(tmp_path: Path, silent_backend: str) -> None:
    # A backend that never answers: no delivery can finish within the timeout, however fast the machine.
    env = _environ(tmp_path, OPENLINEAGE_URL=silent_backend)
    result = _cli("demo", "--timeout", "0.01", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert _only_error_line(result) == (
        "aigp-otel-bridge demo: the RunEvent was not delivered within --timeout 0.01 s;"
        " give it longer (the default is 30)"
    )
    assert "log above" not in result.stdout + result.stderr  # no log above says anything of it


def test_verify_with_the_two_files_swapped_says_so_and_how_to_call_it(
    demo_files: tuple[Path, Path, str],
) -> None:
    store, lineage, _ = demo_files
    folder = store.parent
    result = _cli("verify", "--lineage", store.name, "--aigp-events", lineage.name,
                  cwd=folder, env=_environ(folder))
    assert result.returncode == 2
    line = _only_error_line(result)
    assert line == (
        "aigp-otel-bridge verify: store.jsonl (--lineage) holds AIGP events, not OpenLineage RunEvents;"
        " lineage.jsonl (--aigp-events) holds OpenLineage RunEvents, not AIGP events;"
        " the two files look swapped:"
        " aigp-otel-bridge verify --lineage lineage.jsonl --aigp-events store.jsonl"
    )
    suggested = line.rsplit(": aigp-otel-bridge ", 1)[1].split()
    assert _cli(*suggested, cwd=folder, env=_environ(folder)).returncode == 0  # the hint works


@pytest.mark.parametrize(
    ("lineage_name", "store_name", "wrong"),
    [
        ("store.jsonl", "store.jsonl",
         "store.jsonl (--lineage) holds AIGP events, not OpenLineage RunEvents"),
        ("lineage.jsonl", "lineage.jsonl",
         "lineage.jsonl (--aigp-events) holds OpenLineage RunEvents, not AIGP events"),
    ],
)
def test_verify_given_one_kind_of_file_twice_names_the_wrong_one(
    demo_files: tuple[Path, Path, str], lineage_name: str, store_name: str, wrong: str
) -> None:
    folder = demo_files[0].parent
    result = _cli("verify", "--lineage", lineage_name, "--aigp-events", store_name,
                  cwd=folder, env=_environ(folder))
    assert result.returncode == 2
    assert _only_error_line(result) == (
        f"aigp-otel-bridge verify: {wrong}; --lineage takes RunEvents (demo --lineage FILE),"
        " --aigp-events the store (demo --store FILE)"
    )


def test_explain_given_the_store_says_it_takes_run_events(demo_files: tuple[Path, Path, str]) -> None:
    store = demo_files[0]
    result = _cli("explain", store.name, cwd=store.parent, env=_environ(store.parent))
    assert result.returncode == 2
    assert _only_error_line(result) == (
        "aigp-otel-bridge explain: store.jsonl: no RunEvent with an aigp_governance run facet"
        " (it holds AIGP events: explain takes RunEvents, e.g. demo --lineage FILE)"
    )


def test_explain_shows_the_demos_denied_tool_as_denied(demo_files: tuple[Path, Path, str]) -> None:
    lineage = demo_files[1]
    result = _cli("explain", lineage.name, cwd=lineage.parent, env=_environ(lineage.parent, COLUMNS="200"))
    assert result.returncode == 0, result.stderr
    rows = {
        cells[2]: cells[4:6]
        for line in result.stdout.splitlines()
        if len(cells := [cell.strip() for cell in line.split("│")]) > 6 and cells[2]
    }
    assert rows["tool.wire-transfer"] == ["denied", "governed"]
    for name in ("policy.trading-limits", "prompt.trader-system", "tool.market-data"):
        assert rows[name] == ["allowed", "governed"]
