"""Start ``aigp-otel-bridge serve`` the way a user does (the console script, a subprocess) on free
loopback ports, with lineage going to the OpenLineage file transport; read back what it wrote.

Also what the gateway's tests share: the runs the in-process processor gives for the same sessions
(``record_spans``), to compare the gateway's with, and a raw OTLP/HTTP request (``post``)."""

from __future__ import annotations

import http.client
import json
import os
import resource as os_resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openlineage.client import OpenLineageClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.conftest import CaptureTransport
from tests.governed_spans import governed_session, instrumentor, resource
from tests.schemas import SCHEMAS_DIR, validate_run_event
from tests.waiting import wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command() -> list[str]:
    script = Path(sys.executable).parent / "aigp-otel-bridge"
    if script.exists():
        return [str(script)]
    found = shutil.which("aigp-otel-bridge")
    return [found] if found else [sys.executable, "-m", "aigp_otel_bridge"]


class GatewayProcess:
    """One gateway subprocess; ``lineage()`` reads the RunEvents its file transport wrote."""

    def __init__(
        self,
        directory: Path,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        grpc: bool = True,
        http: bool = True,
        lineage_path: Path | None = None,
        transport_env: dict[str, str] | None = None,
        open_files: int | None = None,
    ) -> None:
        """``open_files``: the gateway's file-descriptor limit (``ulimit -n``), when given."""
        self.directory = directory
        self.grpc_port = free_port() if grpc else None
        self.http_port = free_port() if http else None
        self.lineage_path = lineage_path or directory / f"lineage-{self.grpc_port or self.http_port}.jsonl"
        own = ("OPENLINEAGE", "AIGP_BRIDGE", "OTEL_")
        environment = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        lineage_env = transport_env if transport_env is not None else {
            "OPENLINEAGE__TRANSPORT__TYPE": "file",
            "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(self.lineage_path),
            "OPENLINEAGE__TRANSPORT__APPEND": "true",
        }
        # A callee whose caller never comes (a remote parent outside the test) waits 3 s, not 10.
        environment.update({
            **lineage_env, "AIGP_BRIDGE_JOB_NAMESPACE": "test.ns", "AIGP_BRIDGE_LINK_WAIT_S": "3",
            "PYTHONUNBUFFERED": "1",
        })
        environment.update(env or {})
        command = [
            *_command(), "serve",
            "--grpc-endpoint", f"127.0.0.1:{self.grpc_port}" if grpc else "none",
            "--http-endpoint", f"127.0.0.1:{self.http_port}" if http else "none",
            *(args or []),
        ]
        def limit_open_files() -> None:
            _, hard = os_resource.getrlimit(os_resource.RLIMIT_NOFILE)
            os_resource.setrlimit(os_resource.RLIMIT_NOFILE, (open_files, hard))

        self.process = subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=directory, preexec_fn=limit_open_files if open_files is not None else None,
        )
        self.output: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(self.process.stdout, self.output), daemon=True),
            threading.Thread(target=self._collect, args=(self.process.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_ready(self, timeout_s: float = 30.0) -> GatewayProcess:
        """Once the start line is printed; fails at once when the process exits instead."""

        def serving() -> bool:
            return any(" serving " in line for line in self.output)

        def said() -> str:
            return f"gateway did not start: {''.join(self.output)}{''.join(self.errors)}"

        wait_until(lambda: serving() or self.process.poll() is not None, said, timeout_s, every_s=0.05)
        if not serving():
            raise AssertionError(said())
        return self

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def lineage(self) -> list[dict[str, Any]]:
        """Every RunEvent written so far, each validated against the official schemas."""
        if not self.lineage_path.exists():
            return []
        events = [json.loads(line) for line in self.lineage_path.read_text().splitlines() if line.strip()]
        if SCHEMAS_DIR.is_dir():
            for event in events:
                validate_run_event(event)
        return events

    def wait_lineage(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """The RunEvents written so far, once there are at least ``count``."""
        return wait_lineage([self], count, timeout_s)

    def memory_peak_kib(self) -> int:
        """The process's peak resident set (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc")


def lineage(gateways: list[GatewayProcess]) -> list[dict[str, Any]]:
    """Every RunEvent the gateways wrote so far."""
    return [event for gateway in gateways for event in gateway.lineage()]


def wait_lineage(
    gateways: list[GatewayProcess], count: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The RunEvents the gateways wrote so far, once there are at least ``count``."""
    received: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal received
        received = lineage(gateways)
        return len(received) >= count

    wait_until(enough, lambda: f"{count} RunEvents from the gateways, got {len(received)}", timeout_s,
               every_s=0.05)
    return received


def record_spans(sessions: list[dict[str, bool]]) -> tuple[list[ReadableSpan], list[dict[str, Any]]]:
    """Run governed sessions through the in-process processor; return their spans and RunEvents."""
    transport = CaptureTransport()
    aigp = instrumentor()
    provider = TracerProvider(resource=resource(aigp))
    memory = InMemorySpanExporter()
    client = OpenLineageClient(transport=transport)
    processor = AIGPLineageSpanProcessor(client=client, job_namespace="test.ns")
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.gateway")
    for options in sessions:
        governed_session(tracer, aigp, **options)
    assert processor.force_flush(30_000)
    provider.shutdown()
    return list(memory.get_finished_spans()), transport.wait_for(len(sessions))


SESSIONS = [{}, {"fail": True}, {"remote_parent": True}]
"""A governed session, one that fails, and one whose root has a remote parent."""


def by_run(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["run"]["runId"]: event for event in events}


def post(
    gateway: GatewayProcess, body: bytes | Iterator[bytes], content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One OTLP/HTTP request (chunked when ``body`` is an iterator): status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    try:
        all_headers = {"Content-Type": content_type, **(headers or {})}
        if isinstance(body, bytes):
            connection.request("POST", "/v1/traces", body=body, headers=all_headers)
        else:
            connection.request("POST", "/v1/traces", body=body, headers=all_headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()
