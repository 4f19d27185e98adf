"""The outbox: runs the lineage backend could not take, kept in SQLite and replayed.

What is stored and when (an emit failed, shutdown, a hung backend at exit), replay by a running
bridge, by the next process and by ``aigp-otel-bridge outbox status|replay``, storage faults
(corrupt or unusable files, a file size limit, credentials) and fork under outbox load. The same
faults with and without an outbox, side by side: tests/test_delivery.py; floods:
tests/test_overload.py. The lineage backend is a real HTTP endpoint on loopback where a test needs
one (``tests/backend.py``); waits are on conditions, bounded, and fail with a message.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.openlineage import build_openlineage_run_event
from aigp_otel_bridge.outbox import DATABASE_NAME, LEASE_S, EventKey, NewRow, Outbox
from aigp_otel_bridge.stages import deliver
from aigp_otel_bridge.stages.deliver import Phase
from aigp_otel_bridge.tools.cli import main
from tests.backend import LineageBackend
from tests.conftest import CaptureTransport
from tests.schemas import load_examples
from tests.test_delivery import bridge
from tests.test_faults import governed_session, wait_until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def backend() -> Iterator[LineageBackend]:
    server = LineageBackend(slow_s=1.5)
    yield server
    server.down()


def stored_run_ids(folder: Path) -> set[str]:
    rows = Outbox(folder).take_due(limit=10_000, now=float("inf"))
    return {json.loads(row.payload)["run"]["runId"] for row in rows}


def delivery_phase(processor: AIGPLineageSpanProcessor) -> Phase:
    """Where the bridge's delivery is in its life (shutdown moves it on)."""
    return processor._core.engine._deliverer.phase


# ---- stored, and replayed by the bridge that stored it ----


class GatedTransport(CaptureTransport):
    """Takes every event, each only once the test opens the gate."""

    kind = "gated"

    def __init__(self, fail_times: int = 0) -> None:
        super().__init__(fail_times=fail_times)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def emit(self, event: Any) -> None:
        self.entered.set()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        super().emit(event)


def transport_bridge(
    transport: CaptureTransport, outbox_dir: Path, **settings: Any
) -> tuple[TracerProvider, AIGPLineageSpanProcessor]:
    provider = TracerProvider()
    processor = AIGPLineageSpanProcessor(
        client=OpenLineageClient(transport=transport), job_namespace="faults",  # type: ignore[arg-type]
        outbox_dir=str(outbox_dir), retry_max_backoff_s=0.4, **settings,
    )
    provider.add_span_processor(processor)
    return provider, processor


def one_stored_run(outbox_dir: Path) -> str:
    """An outbox holding one run that a down backend did not take, due now; returns its run id."""
    down = CaptureTransport(fail_times=1_000_000)
    provider, _ = transport_bridge(down, outbox_dir)
    run_id = governed_session(provider.get_tracer("down"), 0)
    provider.shutdown()
    Outbox(outbox_dir).release_all()
    assert Outbox(outbox_dir).depth() == 1
    return run_id


def test_a_clean_shutdown_waits_for_the_stored_run_it_is_replaying_and_deletes_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliver, "STUCK_EMIT_S", 60.0)  # this replay is slow, not hung
    run_id = one_stored_run(tmp_path)
    gated = GatedTransport()
    provider, processor = transport_bridge(gated, tmp_path, shutdown_timeout_s=60.0)
    assert gated.entered.wait(30), "the stored run was never replayed"
    replayed_at_return: list[int] = []

    def close() -> None:
        provider.shutdown()
        replayed_at_return.append(processor.stats()["runs_replayed"])

    closer = threading.Thread(target=close)
    closer.start()
    # the replay is held until shutdown began; a shutdown that does not wait for it returns
    # while it is still held, before the row is delivered and counted
    wait_until(lambda: delivery_phase(processor) is not Phase.RUNNING, "shutdown began")
    gated.gate.set()
    closer.join(60)
    assert not closer.is_alive(), "shutdown never returned"
    assert replayed_at_return == [1], "shutdown returned while a stored run was being replayed"
    assert [event["run"]["runId"] for event in gated.events] == [run_id]
    assert Outbox(tmp_path).depth() == 0, "a clean shutdown left a row it delivered"
    assert processor.stats()["runs_replayed"] == 1


def test_a_clean_shutdown_hands_on_the_stored_run_it_could_not_finish(tmp_path: Path) -> None:
    run_id = one_stored_run(tmp_path)
    hung = GatedTransport()
    provider, _ = transport_bridge(hung, tmp_path, shutdown_timeout_s=20.0)
    try:
        assert hung.entered.wait(30), "the stored run was never replayed"
        provider.shutdown()  # gives up on the hung emit
        status = Outbox(tmp_path).status()
        assert status.pending == 1
        assert status.next_attempt_in_s == 0, "the next process must not wait for this process's lease"
    finally:
        hung.gate.set()
    # the hung emit went through after all: its row is deleted (the next process may send it again)
    wait_until(lambda: Outbox(tmp_path).depth() == 0, "the late delivery deleted its row")
    assert [event["run"]["runId"] for event in hung.events] == [run_id]


class StallOnStoringLog(logging.Handler):
    """Holds the delivery thread where it logs that it stores a failed run, until ``shutdown_began``
    says so: a shutdown that no longer waits for that run goes on meanwhile, and is done with the
    outbox before the run reaches it."""

    def __init__(self, shutdown_began: Any) -> None:
        super().__init__()
        self.shutdown_began = shutdown_began
        self.held = False

    def emit(self, record: logging.LogRecord) -> None:
        if "storing the run" in record.getMessage():
            wait_until(self.shutdown_began, "shutdown began while the failed run was held")
            self.held = True


def test_a_run_whose_emit_fails_while_shutdown_waits_for_it_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliver, "STUCK_EMIT_S", 60.0)  # this emit is slow, not hung
    failing = GatedTransport(fail_times=1)
    provider, processor = transport_bridge(failing, tmp_path, shutdown_timeout_s=60.0)
    stall = StallOnStoringLog(lambda: delivery_phase(processor) is not Phase.RUNNING)
    logging.getLogger("aigp_otel_bridge").addHandler(stall)
    try:
        run_id = governed_session(provider.get_tracer("late"), 0)
        assert failing.entered.wait(30), "the run never reached emit"
        closer = threading.Thread(target=provider.shutdown)
        closer.start()
        failing.gate.set()
        closer.join(60)
        assert not closer.is_alive(), "shutdown never returned"
    finally:
        logging.getLogger("aigp_otel_bridge").removeHandler(stall)
    assert stall.held, "the failed run was never logged as being stored"
    assert processor.stats()["runs_dropped"] == 0, "the failed run was dropped instead of stored"
    rows = Outbox(tmp_path).take_due(limit=10, now=float("inf"))
    assert [json.loads(row.payload)["run"]["runId"] for row in rows] == [run_id]


EXITS_WITHOUT_SHUTDOWN = """
import json, sys
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import TracerProvider
from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.test_faults import governed_session
from tests.test_delivery import HungTransport

provider = TracerProvider(shutdown_on_exit=False)  # only the bridge's own atexit runs
processor = AIGPLineageSpanProcessor(
    client=OpenLineageClient(transport=HungTransport()), job_namespace="exit",
    outbox_dir=sys.argv[1], shutdown_timeout_s=5.0,
)
provider.add_span_processor(processor)
print(json.dumps([governed_session(provider.get_tracer("exit"), index) for index in range(3)]))
"""


def test_the_bridges_own_atexit_stores_what_a_hung_backend_holds(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", EXITS_WITHOUT_SHUTDOWN, str(tmp_path)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    run_ids = set(json.loads(result.stdout.splitlines()[-1]))
    rows = Outbox(tmp_path).take_due(limit=100, now=float("inf"))
    assert {json.loads(row.payload)["run"]["runId"] for row in rows} == run_ids


# ---- replayed by the next process ----


PRODUCER = """
import json, sys, time, uuid
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import TracerProvider
from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.backend import LineageBackend
from tests.test_faults import governed_session

backend = LineageBackend.__new__(LineageBackend)
backend.port = int(sys.argv[1])
processor = AIGPLineageSpanProcessor(
    client=OpenLineageClient(config=backend.client_config()), job_namespace="faults",
    outbox_dir=sys.argv[2], retry_max_backoff_s=0.4,
)
provider = TracerProvider()
provider.add_span_processor(processor)
run_ids = [governed_session(provider.get_tracer("producer"), i) for i in range(10)]
flushed = processor.force_flush(30_000)
print(json.dumps({"flushed": flushed, "run_ids": run_ids}), flush=True)
time.sleep(600)
"""


def test_process_killed_after_force_flush_a_new_process_delivers_every_run(
    backend: LineageBackend, tmp_path: Path
) -> None:
    outbox_dir = tmp_path / "outbox"
    root = Path(__file__).resolve().parents[1]
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(backend.port), str(outbox_dir)],
        cwd=root, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert producer.stdout is not None
        report = json.loads(producer.stdout.readline())
    finally:
        producer.send_signal(signal.SIGKILL)
        producer.wait(timeout=30)
    assert producer.returncode == -signal.SIGKILL
    assert report["flushed"], "force_flush must return True once every run is durably stored"

    runs = len(report["run_ids"])
    assert Outbox(outbox_dir).depth() == runs, "each run is stored once"

    backend.up()
    provider, processor = bridge(backend, outbox_dir)  # a new process would do the same
    # a row the producer was replaying when it was killed is leased until LEASE_S runs out
    backend.wait_for_runs(set(report["run_ids"]), timeout_s=LEASE_S + 30)

    def all_replayed() -> bool:
        return bool(processor.stats()["runs_replayed"] == runs)

    # a run may reach the backend while the client still sees its emit fail (an answer late on a
    # loaded machine): that row stays and is sent again; a row is counted once it is deleted
    wait_until(all_replayed, "every stored run replayed", timeout_s=LEASE_S + 30)
    assert Outbox(outbox_dir).depth() == 0
    assert processor.force_flush(10_000)
    provider.shutdown()


# ---- aigp-otel-bridge outbox status | replay ----


_CLEAN = ("OPENLINEAGE", "AIGP_BRIDGE_", "OTEL_")


def cli_environ(home: Path, **extra: str) -> dict[str, str]:
    """The user's environment without OpenLineage or bridge settings, and no ~/.openlineage."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_CLEAN)}
    return {**environ, "HOME": str(home), **extra}


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigp_otel_bridge", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


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


def stored_example_run(folder: Path) -> dict[str, object]:
    event = build_openlineage_run_event(load_examples()["inject-success-otel.json"], "cli", "agent.invoke")
    outbox = Outbox(folder)
    key = EventKey(str(event["run"]["runId"]), str(event["eventType"]), str(event["eventTime"]))
    outbox.store([NewRow(key, json.dumps(event))])
    outbox.close()
    return event


def test_outbox_status_reads_the_folder_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stored_example_run(tmp_path)
    monkeypatch.setenv("AIGP_BRIDGE_OUTBOX_DIR", str(tmp_path))
    assert main(["outbox", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == 1
    assert main(["outbox", "status", "--dir", str(tmp_path / "elsewhere")]) == 2  # --dir wins
    assert "no outbox in" in capsys.readouterr().err


def test_outbox_replay_reads_the_folder_from_the_environment(tmp_path: Path) -> None:
    event = stored_example_run(tmp_path / "outbox")
    backend = LineageBackend().up()
    try:
        env = cli_environ(
            tmp_path, OPENLINEAGE_URL=backend.url, AIGP_BRIDGE_OUTBOX_DIR=str(tmp_path / "outbox")
        )
        result = run_cli("outbox", "replay", cwd=tmp_path, env=env)
    finally:
        backend.down()
    assert result.returncode == 0, result.stderr
    assert "delivered 1, failed 0, still stored 0" in result.stdout
    assert backend.run_ids() == {event["run"]["runId"]}


def test_outbox_without_a_folder_says_how_to_name_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIGP_BRIDGE_OUTBOX_DIR", raising=False)
    assert main(["outbox", "status"]) == 2
    assert "give --dir D or set AIGP_BRIDGE_OUTBOX_DIR" in capsys.readouterr().err


def test_outbox_replay_with_a_malformed_url_says_so_and_keeps_the_runs(tmp_path: Path) -> None:
    stored_example_run(tmp_path / "outbox")
    malformed = "http://user:pw-s3cret@bad host"
    env = cli_environ(tmp_path, OPENLINEAGE_URL=malformed, AIGP_BRIDGE_OUTBOX_DIR="outbox")
    result = run_cli("outbox", "replay", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "the OpenLineage configuration is unusable (ValueError: " in result.stderr
    assert "http://***@bad host" in result.stderr and "pw-s3cret" not in result.stderr
    assert "Traceback" not in result.stderr
    assert Outbox(tmp_path / "outbox").depth() == 1


# ---- storage faults ----


class DownTransport(CaptureTransport):
    """A backend that is down; its error names the URL it was given, credentials included.

    It takes no lock: a lock held by another thread when a process forks stays held in the child.
    """

    kind = "down"

    def __init__(self, url: str = "http://127.0.0.1:9") -> None:
        super().__init__()
        self.url = url

    def emit(self, event: Any) -> None:
        raise ConnectionError(f"cannot reach {self.url} (headers {{'Authorization': 'Bearer tok-9f8e7d'}})")


def durable_bridge(
    folder: Path | None, transport: CaptureTransport | None = None, **settings: Any
) -> tuple[TracerProvider, AIGPLineageSpanProcessor]:
    processor = AIGPLineageSpanProcessor(
        client=OpenLineageClient(transport=transport or DownTransport()), job_namespace="storage",
        outbox_dir=None if folder is None else str(folder), **settings,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider, processor


def test_a_corrupt_outbox_is_moved_aside_and_a_fresh_one_used(tmp_path: Path) -> None:
    garbage = b"this is not a database" * 100
    (tmp_path / DATABASE_NAME).write_bytes(garbage)
    provider, processor = durable_bridge(tmp_path)
    run_id = governed_session(provider.get_tracer("corrupt"), 0)
    assert processor.force_flush(20_000)
    assert processor.stats()["outbox_moved_aside"] == 1
    (kept,) = [p for p in tmp_path.iterdir() if ".unreadable-" in p.name]
    assert kept.read_bytes() == garbage, "the unreadable file is kept, not deleted"
    assert stored_run_ids(tmp_path) == {run_id}
    provider.shutdown()


def test_new_outbox_files_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "outbox"
    provider, processor = durable_bridge(folder)
    governed_session(provider.get_tracer("private"), 0)
    assert processor.force_flush(20_000)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / DATABASE_NAME).stat().st_mode) == 0o600
    provider.shutdown()


def unusable_folders(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / DATABASE_NAME).symlink_to(tmp_path / "elsewhere.sqlite3")
    return {"file": a_file, "symlink": linked}


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_an_unusable_outbox_argument_raises_value_error(tmp_path: Path, kind: str) -> None:
    folder = unusable_folders(tmp_path)[kind]
    with pytest.raises(ValueError, match="outbox_dir"):
        durable_bridge(folder)
    assert not (tmp_path / "elsewhere.sqlite3").exists(), "a symlink at the database path is never followed"


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_an_unusable_outbox_from_the_environment_warns_and_delivers_from_memory(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIGP_BRIDGE_OUTBOX_DIR", str(unusable_folders(tmp_path)[kind]))
    transport = CaptureTransport()
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge"):
        provider, processor = durable_bridge(None, transport)
    assert any("AIGP_BRIDGE_OUTBOX_DIR" in r.getMessage() for r in caplog.records)
    run_id = governed_session(provider.get_tracer("env"), 0)
    assert processor.force_flush(10_000)
    assert [e["run"]["runId"] for e in transport.events] == [run_id]
    provider.shutdown()


def test_outbox_status_on_a_broken_file_says_so_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / DATABASE_NAME).write_bytes(os.urandom(4096))
    assert main(["outbox", "status", "--dir", str(tmp_path)]) == 2
    assert "cannot read the outbox" in capsys.readouterr().err


def test_a_password_in_the_url_is_never_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cr3t-pa55"
    transport = DownTransport(f"https://user:{secret}@lineage.example/api/v1/lineage?api_key=k3y-1234")
    with caplog.at_level(logging.DEBUG, logger="aigp_otel_bridge"):
        provider, processor = durable_bridge(tmp_path, transport)
        governed_session(provider.get_tracer("secret"), 0)
        assert processor.force_flush(20_000)
        provider.shutdown()
    assert main(["outbox", "status", "--dir", str(tmp_path), "--json"]) == 0
    status = capsys.readouterr().out
    written = [r.getMessage() for r in caplog.records] + [status]
    written += [str(Outbox(tmp_path).status().last_error)]
    assert any("lineage.example" in text for text in written), "the error itself is still reported"
    for text in written:
        for credential in (secret, "k3y-1234", "tok-9f8e7d"):
            assert credential not in text, text


FILE_SIZE_LIMITED = """
import json, resource, sys
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import TracerProvider
from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.test_outbox import DownTransport
from tests.test_faults import governed_session

processor = AIGPLineageSpanProcessor(
    client=OpenLineageClient(transport=DownTransport()), job_namespace="fsize", outbox_dir=sys.argv[1],
)
provider = TracerProvider()
provider.add_span_processor(processor)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
for index in range(300):
    governed_session(provider.get_tracer("fsize"), index)
flushed = processor.force_flush(60_000)
provider.shutdown()
print(json.dumps({"flushed": flushed, **processor.stats()}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_a_file_size_limit_while_storing_is_counted_and_never_crashes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED, str(tmp_path)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.splitlines()[-1])
    assert stats["outbox_write_failures"] > 0, "a 64 KiB limit cannot hold 300 runs"
    assert stats["runs_stored"] + stats["duplicates_detected"] + stats["runs_dropped"] == 300
    assert stats["runs_dropped"] == stats["outbox_write_failures"]
    assert not stats["flushed"], "force_flush reports the loss"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_100_forks_under_outbox_write_load_every_child_exits_with_its_run_stored_or_counted(
    tmp_path: Path,
) -> None:
    provider, processor = durable_bridge(tmp_path)
    tracer = provider.get_tracer("fork")
    parent_runs = [governed_session(tracer, index) for index in range(20)]
    children: dict[int, str] = {}
    for index in range(100):
        parent_runs.append(governed_session(tracer, index))  # keeps the storage thread writing
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                dropped_before = processor.stats()["runs_dropped"]  # the parent's, inherited
                run_id = governed_session(tracer, index)
                flushed = processor.force_flush(30_000)
                provider.shutdown()
                dropped = processor.stats()["runs_dropped"] - dropped_before
                with open(tmp_path / f"child-{os.getpid()}", "w") as out:
                    out.write(json.dumps({"run_id": run_id, "flushed": flushed, "dropped": dropped}))
                code = 0
            finally:
                os._exit(code)
        children[pid] = ""
    deadline = time.monotonic() + 240
    codes: dict[int, int] = {}
    while len(codes) < len(children) and time.monotonic() < deadline:
        for pid in children:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    hung = [pid for pid in children if pid not in codes]
    for pid in hung:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert not hung, f"{len(hung)} of 100 children never exited"
    assert set(codes.values()) == {0}, f"children failed: {sorted(set(codes.values()))}"
    assert processor.force_flush(60_000)
    stored = stored_run_ids(tmp_path)
    reports = [json.loads((tmp_path / f"child-{pid}").read_text()) for pid in children]
    for report in reports:  # stored (the usual case), or counted by a child forked mid-write; a
        # loaded machine may make a child's flush time out, never its run vanish
        assert report["run_id"] in stored or report["dropped"] == 1, report
    assert any(report["run_id"] in stored for report in reports), "a child forked between writes stores"
    assert set(parent_runs) <= stored
    provider.shutdown()


# ---- the journal of acknowledged governance (the gateway, with an outbox) ----


def light_requests(sessions: int) -> list[Any]:
    """One OTLP request per light governed session (root and governed child), as a gateway gets them."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.governed_spans import instrumentor, light_session, resource

    aigp = instrumentor()
    provider = TracerProvider(resource=resource(aigp))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.journal")
    requests = []
    for _ in range(sessions):
        light_session(tracer, aigp)
        requests.append(encode_spans(memory.get_finished_spans()))
        memory.clear()
    return requests


def test_journaled_notes_come_back_as_they_were() -> None:
    from aigp_otel_bridge.journal import dump_notes, load_notes
    from aigp_otel_bridge.note import NoteEvent, SpanNote

    note = SpanNote(
        trace_id=2**127 + 5, span_id=2**63 + 7, parent_span_id=None, remote_parent=False, local_root_id=None,
        name="invoke", start_ns=1, end_ns=2,
        governance_events=(NoteEvent("aigp.inject.success", 3, {"aigp.policies.names": ("a", "b")}),),
        attributes={"n": 1, "f": 0.5, "b": True, "raw": b"\x00\x01", "kv": {"x": ("y",)}},
        governed_attributes=True, resource={"service.name": "svc"}, error=True, status_description="boom",
        exception=NoteEvent("exception", None, {"exception.type": "ValueError"}),
    )
    assert load_notes(dump_notes([note])) == [note]


def test_a_settled_run_is_compacted_only_once_every_earlier_batch_is_written(tmp_path: Path) -> None:
    """A run may settle before its own request's rows are written (the answer is still pending):
    its mark waits, so that the rows written afterwards do not outlive the delete meant for them."""
    from aigp_otel_bridge.frontdoors.otlp import notes_from_request
    from aigp_otel_bridge.journal import Journal, mark_for

    outbox = Outbox(tmp_path)
    journal = Journal(outbox, max_traces=100)
    first, second = (notes_from_request(request).notes for request in light_requests(2))
    entry_1, entry_2 = journal.prepare(first), journal.prepare(second)
    assert entry_1 is not None and entry_2 is not None
    assert (entry_1.marker.batch, entry_2.marker.batch) == (1, 2)
    journal.forget([[mark_for(key, entry_1.marker.batch) for key in entry_1.marker.runs()]])
    journal.write(entry_2)  # batch 1 is not written yet: its run's mark must wait for it
    assert {row.batch for row in outbox.journal_rows()} == {2}
    journal.write(entry_1)  # written, then deleted in the same transaction (applied early, it would stay)
    assert {row.batch for row in outbox.journal_rows()} == {2}
    journal.forget([[mark_for(key, entry_2.marker.batch) for key in entry_2.marker.runs()]])
    journal.close()
    assert outbox.journal_rows() == []
    assert journal.prepare([note for note in first if not note.local_root]) is not None  # a known trace
    assert Journal(outbox, max_traces=100).prepare(second[:0]) is None


def test_a_journal_left_by_a_killed_gateway_becomes_runs_at_the_next_start(tmp_path: Path) -> None:
    """What a gateway acknowledged and journaled but never delivered (it was killed): the next
    start replays it. A session whose root had arrived is COMPLETE; one whose root had not is
    RUNNING with ``complete: false`` at the trace timeout. Delivered, the rows are compacted."""
    from aigp_otel_bridge.config import BridgeConfig
    from aigp_otel_bridge.engine import Engine
    from aigp_otel_bridge.frontdoors.otlp import notes_from_request
    from aigp_otel_bridge.journal import Journal

    whole, rootless = (notes_from_request(request).notes for request in light_requests(2))
    rootless = [note for note in rootless if not note.local_root]
    killed = Journal(Outbox(tmp_path), max_traces=100)
    for notes in (whole, rootless):
        entry = killed.prepare(notes)
        assert entry is not None
        killed.write(entry)
    transport = CaptureTransport()
    config = BridgeConfig(outbox_dir=str(tmp_path), trace_timeout_s=0.5, job_namespace="test.ns")
    engine = Engine(config, emit=OpenLineageClient(transport=transport).emit)
    try:
        engine.acknowledging()
        events = transport.wait_for(2)
    finally:
        assert engine.shutdown(10.0)
    states = [(event["eventType"], event["run"]["facets"]["aigp_governance"]["complete"]) for event in events]
    assert sorted(states) == [("COMPLETE", True), ("RUNNING", False)]
    assert Outbox(tmp_path).journal_rows() == []


def test_a_request_whose_governance_cannot_be_journaled_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aigp_otel_bridge.config import BridgeConfig
    from aigp_otel_bridge.engine import Engine
    from aigp_otel_bridge.frontdoors.otlp import Admission, Decoded, TraceIntake
    from aigp_otel_bridge.journal import load_notes

    engine = Engine(BridgeConfig(outbox_dir=str(tmp_path)), emit=lambda event: None)
    intake = TraceIntake(engine, root_wait_s=0.0)
    try:
        def disk_full(*args: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Outbox, "journal_write", disk_full)
        first, second = light_requests(2)
        assert intake.export(Decoded(first), "test").admission is Admission.BUSY
        monkeypatch.undo()
        assert intake.export(Decoded(second), "test").admission is Admission.ACCEPTED
        rows = Outbox(tmp_path).journal_rows()  # the second session: one run, its root and child
        assert len(rows) == 1 and len(load_notes(rows[0].payload)) == 2
    finally:
        intake.close()
        engine.shutdown(10.0)
