"""The OTLP/HTTP receiver: ``POST /v1/traces`` (protobuf or JSON, optionally gzip) as an ASGI app.

The app is plain ASGI, served by uvicorn (see docs/gateway.md for the choice). Bodies are read as
the stream the server hands over, so chunked requests (the JavaScript exporters send no
``Content-Length``) work, and every limit is enforced while reading: the raw body and the
decompressed body are both capped, and decompression never produces more than the cap plus one
chunk, so a compressed bomb costs bounded memory.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from aigp_otel_bridge.frontdoors.otlp import (
    MEDIA_JSON,
    MEDIA_PROTOBUF,
    Admission,
    OtlpDecodeError,
    TraceIntake,
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
    """The ASGI application: traces, health, and nothing else."""

    def __init__(
        self,
        intake: TraceIntake,
        *,
        max_body_bytes: int,
        auth_token: str | None,
        ready: Callable[[], bool],
        retry_after_s: int = 1,
    ) -> None:
        self.intake = intake
        self.max_body_bytes = max_body_bytes
        self._expected_auth = f"Bearer {auth_token}".encode() if auth_token else None
        self._ready = ready
        self._retry_after = str(retry_after_s).encode()

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
        try:
            if self._expected_auth is not None and not hmac.compare_digest(
                headers.get(b"authorization", b""), self._expected_auth
            ):
                raise _RefusedError(
                    401, code_pb2.UNAUTHENTICATED, "missing or wrong bearer token", "unauthenticated"
                )
            if media_type is None:
                raise _unsupported(f"content type must be {MEDIA_PROTOBUF} or {MEDIA_JSON}")
            if encoding not in (b"identity", b"gzip"):
                raise _unsupported("content encoding must be gzip or identity")
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            body = await self._read(receive, encoding == b"gzip")
            try:
                request = decode(body, media_type)
            except OtlpDecodeError as error:
                raise _bad_request(str(error)) from None
        except _RefusedError as refused:
            self.intake.refused("http", refused.reason)
            extra = [(b"www-authenticate", b"Bearer")] if refused.status == 401 else []
            await _respond_status(send, refused.status, refused.code, refused.message, media_type, extra)
            return
        outcome = self.intake.export(request, "http")
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

    async def _read(self, receive: Receive, gzipped: bool) -> bytes:
        collected = _BoundedBody(self.max_body_bytes, gzipped)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _bad_request("client went away")
            try:
                collected.feed(message.get("body", b""))
            except zlib.error as error:
                raise _bad_request(f"bad gzip body: {error}") from None
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


class HttpReceiver:
    """uvicorn serving ``OtlpHttpApp`` on a socket bound here (so a bind error is raised here)."""

    def __init__(self, app: OtlpHttpApp, host: str, port: int, tls: tuple[str, str] | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, server_header=False,
            timeout_graceful_shutdown=10, ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        config.load()  # a bad certificate or key raises here, not in the server's thread
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
