"""Start ``aigp-otel-bridge serve`` the way a user does (the console script, a subprocess) on free
loopback ports, with lineage going to the OpenLineage file transport; read back what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.schemas import SCHEMAS_DIR, validate_run_event


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
    ) -> None:
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
        self.process = subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=directory
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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(" serving " in line for line in self.output):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"gateway did not start: {''.join(self.output)}{''.join(self.errors)}")

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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            events = self.lineage()
            if len(events) >= count:
                return events
            time.sleep(0.05)
        raise AssertionError(f"expected {count} RunEvents from the gateway, got {len(self.lineage())}")

    def memory_peak_kib(self) -> int:
        """The process's peak resident set (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc")
