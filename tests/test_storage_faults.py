"""Storage faults never stop the application: a broken outbox is moved aside, refused or counted.

Also: fork under outbox write load, a file size limit while storing, and credentials kept out
of everything the bridge writes.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge import AIGPLineageSpanProcessor
from aigp_otel_bridge.outbox import DATABASE_NAME, Outbox
from aigp_otel_bridge.tools.cli import main
from tests.conftest import CaptureTransport
from tests.test_faults import governed_session

ROOT = Path(__file__).resolve().parents[1]


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


def stored_run_ids(folder: Path) -> set[str]:
    rows = Outbox(folder).take_due(limit=10_000, now=float("inf"))
    return {json.loads(row.payload)["run"]["runId"] for row in rows}


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
from tests.test_storage_faults import DownTransport
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
