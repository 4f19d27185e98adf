"""A loopback OpenLineage HTTP endpoint (``POST /api/v1/lineage``) whose health a test controls.

It binds 127.0.0.1 only. ``down()`` closes the socket (connection refused), ``up()`` listens again
on the same port; ``script`` lists how the next requests fail (``503``, ``500``, ``slow``);
``delay_s`` makes every request slow but successful (a backend that is up and behind).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from tests.waiting import wait_until


class LineageBackend:
    made: ClassVar[list[LineageBackend]] = []
    """Every instance of the running test (tests/conftest.py validates what they received)."""

    def __init__(self, slow_s: float = 2.0) -> None:
        LineageBackend.made.append(self)
        self.received: list[dict[str, Any]] = []
        self.requests = 0
        self.script: deque[str] = deque()
        self.slow_s = slow_s
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        self.port = probe.server_address[1]
        probe.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_config(self, timeout_s: float = 1.0) -> dict[str, Any]:
        """OpenLineage client config: the http transport, no retries of its own (the bridge retries)."""
        return {
            "transport": {
                "type": "http", "url": self.url, "timeout": timeout_s,
                "retry": {"total": 0, "connect": 0, "read": 0, "status": 0},
            }
        }

    def up(self) -> LineageBackend:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with backend._lock:
                    backend.requests += 1
                    mode = backend.script.popleft() if backend.script else "ok"
                if backend.delay_s:
                    time.sleep(backend.delay_s)
                if mode == "slow":
                    time.sleep(backend.slow_s)
                    mode = "503"
                if self.path != "/api/v1/lineage":
                    mode = "404"
                if mode != "ok":
                    self.send_response(int(mode))
                    self.end_headers()
                    return
                with backend._lock:
                    backend.received.append(json.loads(body))
                self.send_response(201)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def run_ids(self) -> set[str]:
        with self._lock:
            return {event["run"]["runId"] for event in self.received}

    def wait_for_runs(self, run_ids: set[str], timeout_s: float = 30.0) -> None:
        def missing() -> str:
            never = run_ids - self.run_ids()
            return f"{len(never)} of {len(run_ids)} runs never reached the backend: {sorted(never)[:3]}"

        wait_until(lambda: run_ids <= self.run_ids(), missing, timeout_s, every_s=0.05)
