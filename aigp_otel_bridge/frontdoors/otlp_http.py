"""The OTLP/HTTP receiver: ``POST /v1/traces`` (protobuf or JSON, optionally gzip) as an ASGI app.

The app is plain ASGI, served by uvicorn (see docs/gateway.md for the choice). Bodies are read as
the stream the server hands over, so chunked requests (the JavaScript exporters send no
``Content-Length``) work, and every limit is enforced while reading: the raw body and the
decompressed body are both capped, and decompression never produces more than the cap plus one
chunk, so a compressed bomb costs bounded memory.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aigp_otel_bridge.frontdoors.otlp import (
    MEDIA_JSON,
    MEDIA_PROTOBUF,
    Admission,
    OtlpDecodeError,
    Outcome,
    TraceIntake,
    bearer_matches,
    decode,
)

TRACES_PATH = "/v1/traces"
HEALTH_PATH = "/health"
_MEDIA_TYPES = {
    MEDIA_PROTOBUF: MEDIA_PROTOBUF,
    "application/protobuf": MEDIA_PROTOBUF,
    MEDIA_JSON: MEDIA_JSON,
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _RefusedError(Exception):
    """A request answered with an error status before it reaches the intake."""

    def __init__(self, status: int, code: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason


def _too_large(limit: int) -> _RefusedError:
    return _RefusedError(413, code_pb2.RESOURCE_EXHAUSTED, f"request body over {limit} bytes", "too_large")


def _bad_request(message: str) -> _RefusedError:
    return _RefusedError(400, code_pb2.INVALID_ARGUMENT, message, "bad_request")


def _unsupported(message: str) -> _RefusedError:
    return _RefusedError(415, code_pb2.INVALID_ARGUMENT, message, "unsupported_media_type")


class _BoundedBody:
    """Collects a body, decompressing gzip as it streams, never holding more than ``limit`` bytes."""

    def __init__(self, limit: int, gzipped: bool) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self._raw = 0

    def feed(self, chunk: bytes) -> None:
        self._raw += len(chunk)
        if self._raw > self.limit:
            raise _too_large(self.limit)
        if self._inflater is None:
            self._keep(chunk)
            return
        data = chunk
        while data:
            out = self._inflater.decompress(data, self.limit - self._size + 1)
            self._keep(out)
            data = self._inflater.unconsumed_tail
            if self._inflater.eof and self._inflater.unused_data:  # a further gzip member follows
                data = self._inflater.unused_data
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def size(self) -> int:
        """Bytes kept so far (decompressed)."""
        return self._size

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.limit:
            raise _too_large(self.limit)
        if data:
            self._parts.append(data)

    def body(self) -> bytes:
        if self._inflater is not None and not self._inflater.eof:
            raise _bad_request("truncated gzip body")
        return b"".join(self._parts)


class OtlpHttpApp:
    """The ASGI application: traces, health, and nothing else.

    A trace request is admitted before its body is read (token, media type, declared size, room in
    the decoding budget), its body must arrive within ``read_timeout_s``, and it is decoded and
    queued on a worker thread, so that the event loop keeps serving other connections and
    ``/health`` meanwhile."""

    def __init__(
        self,
        intake: TraceIntake,
        *,
        max_body_bytes: int,
        auth_token: str | None,
        ready: Callable[[], bool],
        retry_after_s: int = 1,
        read_timeout_s: float = 30.0,
        decoding_threads: int = 2,
    ) -> None:
        self.intake = intake
        self.max_body_bytes = max_body_bytes
        self._token = auth_token.encode() if auth_token else None
        self._ready = ready
        self._retry_after = str(retry_after_s).encode()
        self._read_timeout_s = read_timeout_s
        self._decoders = ThreadPoolExecutor(decoding_threads, thread_name_prefix="aigp-gateway-decode")
        """Where requests are decoded and queued: a few threads (the work is CPU-bound and holds the
        interpreter's lock most of the time), bounded so that waiting requests queue here."""

    def close(self) -> None:
        """Let the decoding threads finish what they took, then end them."""
        self._decoders.shutdown(wait=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            ready = self._ready()
            await _respond(send, 200 if ready else 503, b"ok\n" if ready else b"starting or stopping\n")
        elif path != TRACES_PATH:
            await _respond(send, 404, b"not found\n")
        elif method != "POST":
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"POST")])
        else:
            await self._traces(scope, receive, send)

    async def _traces(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        media_type = _MEDIA_TYPES.get(headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode(
            "latin-1"
        ))
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        budget = self.intake.decoding
        reserved = [0]  # bytes taken from the decoding budget, given back once the request is done
        try:
            authorization = headers.get(b"authorization", b"")
            if self._token is not None and not bearer_matches(authorization, self._token):
                raise _RefusedError(
                    401, code_pb2.UNAUTHENTICATED, "missing or wrong bearer token", "unauthenticated"
                )
            if media_type is None:
                raise _unsupported(f"content type must be {MEDIA_PROTOBUF} or {MEDIA_JSON}")
            if encoding not in (b"identity", b"gzip"):
                raise _unsupported("content encoding must be gzip or identity")
            length = headers.get(b"content-length")
            if length is not None and length.isdigit():
                if int(length) > self.max_body_bytes:
                    raise _too_large(self.max_body_bytes)
                self._reserve(int(length), reserved)
            body = await self._read(receive, encoding == b"gzip", reserved)
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self._decoders, self._decode_and_export, body, media_type)
        except _RefusedError as refused:
            if refused.reason == "busy":
                self.intake.busy("http")
            else:
                self.intake.refused("http", refused.reason)
            extra = [(b"www-authenticate", b"Bearer")] if refused.status == 401 else []
            if refused.status == 429:
                extra.append((b"retry-after", self._retry_after))
            if refused.status == 408:  # a sender this slow holds no connection any longer
                extra.append((b"connection", b"close"))
            await _respond_status(send, refused.status, refused.code, refused.message, media_type, extra)
            return
        finally:
            budget.give_back(reserved[0])
        if outcome.admission is Admission.ACCEPTED:
            response = outcome.response()
            if media_type == MEDIA_JSON:
                await _respond(send, 200, json_format.MessageToJson(response, indent=None).encode(),
                               content_type=MEDIA_JSON)
            else:
                await _respond(send, 200, response.SerializeToString(), content_type=MEDIA_PROTOBUF)
            return
        busy = outcome.admission is Admission.BUSY
        await _respond_status(
            send, 429 if busy else 503, code_pb2.RESOURCE_EXHAUSTED if busy else code_pb2.UNAVAILABLE,
            "intake full, retry later" if busy else "shutting down", media_type,
            [(b"retry-after", self._retry_after)],
        )

    def _reserve(self, size: int, reserved: list[int]) -> None:
        """Take ``size`` more bytes from the decoding budget for this request, or refuse it (429)."""
        if not self.intake.decoding.take(size):
            raise _RefusedError(429, code_pb2.RESOURCE_EXHAUSTED, "decoding budget full, retry later", "busy")
        reserved[0] += size

    def _decode_and_export(self, body: bytes, media_type: str) -> Outcome:
        """On a decoding thread: the CPU-bound part of a request, off the event loop."""
        try:
            decoded = decode(body, media_type)
        except OtlpDecodeError as error:
            raise _bad_request(str(error)) from None
        return self.intake.export(decoded, "http")

    async def _read(self, receive: Receive, gzipped: bool, reserved: list[int]) -> bytes:
        """The body, decompressed; what it keeps beyond what was reserved is taken from the budget.
        The whole body must arrive within the read timeout (a slow sender is cut, 408): one
        deadline for the body, not one per chunk, which would cost a task per chunk."""
        try:
            return await asyncio.wait_for(self._chunks(receive, gzipped, reserved), self._read_timeout_s)
        except asyncio.TimeoutError:
            raise _RefusedError(
                408, code_pb2.DEADLINE_EXCEEDED,
                f"request body not received within {self._read_timeout_s:g} s", "timeout",
            ) from None

    async def _chunks(self, receive: Receive, gzipped: bool, reserved: list[int]) -> bytes:
        collected = _BoundedBody(self.max_body_bytes, gzipped)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _bad_request("client went away")
            try:
                collected.feed(message.get("body", b""))
            except zlib.error as error:
                raise _bad_request(f"bad gzip body: {error}") from None
            if collected.size > reserved[0]:
                self._reserve(collected.size - reserved[0], reserved)
            if not message.get("more_body", False):
                return collected.body()


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope["headers"]}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def _respond_status(
    send: Send, status: int, code: int, message: str, media_type: str | None,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """An error answer carrying a ``google.rpc.Status`` in the request's encoding (OTLP/HTTP)."""
    rpc_status = status_pb2.Status(code=code, message=message)
    if media_type == MEDIA_PROTOBUF:
        await _respond(send, status, rpc_status.SerializeToString(), extra, MEDIA_PROTOBUF)
    else:
        body = json_format.MessageToJson(rpc_status, indent=None).encode()
        await _respond(send, status, body, extra, MEDIA_JSON)


class _RateLimitedLogs(logging.Filter):
    """At most one record per logger and message per interval: under a flood of bad or idle
    connections the server's own warnings (and asyncio's accept errors) must not fill the disk."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self._interval = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                return False
            if len(self._last) > 1024:
                self._last.clear()
            self._last[key] = now
            return True


_LOG_FILTER = _RateLimitedLogs()
_LOGGERS = ("uvicorn.error", "asyncio")


def _guarded_protocol(max_connections: int, read_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (a C parser: a request's head and body cost the event loop
    about half what the pure-Python h11 costs) with what it lacks against hostile clients.

    - A connection past ``max_connections`` is closed as soon as it is accepted, so that a flood
      of connections never takes the process's file descriptors (which the gRPC receiver, the
      outbox and the lineage transport need too).
    - A request's head must arrive within ``read_timeout_s`` of the connection's start, or of the
      keep-alive wait after the previous answer: uvicorn's keep-alive timeout only covers the
      wait for a request's first byte, so a sender trickling a head byte by byte (slowloris)
      would otherwise hold the connection for ever. The body has its own deadline in the app.
    """

    class GuardedProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            if len(self.connections) > max_connections:
                logging.getLogger("uvicorn.error").warning(
                    "OTLP/HTTP connection refused: %d connections open (the cap)", max_connections
                )
                self.transport.abort()
                return
            self._arm(read_timeout_s)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle and self._head_timer is not None:  # a request head arrived
                self._head_timer.cancel()
                self._head_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm(self.timeout_keep_alive + read_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def _arm(self, delay_s: float) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = None
            if not self.transport.is_closing():
                self._head_timer = self.loop.call_later(delay_s, self._head_overdue)

        def _head_overdue(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

    return GuardedProtocol


def default_max_connections() -> int:
    """A third of the file-descriptor limit (less a reserve) per receiver, at most 4 096: both
    receivers at their cap still leave descriptors for files, the outbox and the lineage transport."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, min(4096, (soft - 64) // 3))


class HttpReceiver:
    """uvicorn serving ``OtlpHttpApp`` on a socket bound here (so a bind error is raised here).

    Connections are capped and timed out (``_guarded_protocol``); idle keep-alive connections
    close after ``KEEP_ALIVE_S``."""

    KEEP_ALIVE_S = 5

    def __init__(
        self,
        app: OtlpHttpApp,
        host: str,
        port: int,
        tls: tuple[str, str] | None = None,
        *,
        max_connections: int | None = None,
        read_timeout_s: float = 30.0,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        self.max_connections = max_connections or default_max_connections()
        self._app = app
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, server_header=False,
            http=_guarded_protocol(self.max_connections, read_timeout_s),
            timeout_keep_alive=self.KEEP_ALIVE_S, backlog=min(2048, self.max_connections),
            timeout_graceful_shutdown=10, ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        try:
            config.load()  # a bad certificate or key raises here, not in the server's thread
        except BaseException:
            self._socket.close()
            raise
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if _LOG_FILTER not in logger.filters:
                logger.addFilter(_LOG_FILTER)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="aigp-gateway-http", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        step = 0.01
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > timeout_s:
                raise OSError("the OTLP/HTTP receiver did not start")
            self._thread.join(step)
            waited += step

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), then return."""
        self._server.should_exit = True
        self._thread.join(15.0)
        self._socket.close()
        self._app.close()
