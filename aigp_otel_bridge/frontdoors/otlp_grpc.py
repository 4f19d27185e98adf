"""The OTLP/gRPC receiver: the ``TraceService/Export`` method of ``opentelemetry-proto`` on grpcio.

The method is registered with a raw-bytes deserializer so that an undecodable request is answered
``INVALID_ARGUMENT`` (grpcio's own deserialization failure would be ``INTERNAL``). A full intake is
answered ``RESOURCE_EXHAUSTED`` with a ``google.rpc.RetryInfo`` detail, as is a request that
finds the decoding budget full; shutting down is ``UNAVAILABLE``: both are retried by OTLP
exporters. The bearer token is checked from the call's metadata before its message is read
(``_TokenCheck``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from aigp_otel_bridge.frontdoors.otlp import (
    MEDIA_PROTOBUF,
    Admission,
    OtlpDecodeError,
    TraceIntake,
    bearer_matches,
    decode,
)

SERVICE_NAME: str = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name


class _TraceService:
    def __init__(self, intake: TraceIntake, retry_after_s: int) -> None:
        self.intake = intake
        self._retry_after_s = retry_after_s

    def export(self, body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        budget = self.intake.decoding
        if not budget.take(len(body)):
            self.intake.busy("grpc")
            self._retry_later(context, "decoding budget full, retry later")
        try:
            try:
                decoded = decode(body, MEDIA_PROTOBUF)
            except OtlpDecodeError as error:
                self.intake.refused("grpc", "bad_request")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            outcome = self.intake.export(decoded, "grpc")
        finally:
            budget.give_back(len(body))
        if outcome.admission is Admission.BUSY:
            self._retry_later(context, "intake full, retry later")
        if outcome.admission is Admission.STOPPED:
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        return outcome.response()

    def _retry_later(self, context: grpc.ServicerContext, message: str) -> NoReturn:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=self._retry_after_s)))
        status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


class _TokenCheck(grpc.ServerInterceptor):
    """Checks the bearer token from a call's metadata before its message is read.

    A call without the right token gets a handler that takes its message as a stream it never
    reads and aborts ``UNAUTHENTICATED`` at once: grpcio reads a unary call's message before
    calling its handler, so refusing in the unary handler would first receive the whole message."""

    def __init__(self, intake: TraceIntake, token: str) -> None:
        self._intake = intake
        self._token = token.encode()
        self._refuse: grpc.RpcMethodHandler[Any, Any] = grpc.stream_unary_rpc_method_handler(
            self._unauthenticated
        )

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                text = value if isinstance(value, bytes) else str(value).encode()
                if bearer_matches(text, self._token):
                    return continuation(handler_call_details)
                break
        return self._refuse

    def _unauthenticated(self, _requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._intake.refused("grpc", "unauthenticated")
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


class GrpcReceiver:
    """A grpcio server with the OTLP trace service on one endpoint.

    Bounds: ``max_message_bytes`` per message (grpcio refuses larger ones as it reads them),
    ``max_workers`` calls handled at once and at most four times as many admitted (grpcio answers
    the rest ``RESOURCE_EXHAUSTED``, which exporters retry), ``max_connections`` connections, a
    connection must finish its HTTP/2 (and TLS) handshake within ``handshake_timeout_s``, and one
    without calls for ``IDLE_S`` is closed (a client's channel reconnects when it next exports).
    HTTP/2 windows stay at 64 KiB per call (no bandwidth-delay probing), so a call refused from its
    metadata has sent at most that much ahead."""

    IDLE_S = 300

    def __init__(
        self,
        intake: TraceIntake,
        endpoint: str,
        *,
        max_message_bytes: int,
        auth_token: str | None,
        tls: tuple[str, str] | None = None,
        max_workers: int = 8,
        retry_after_s: int = 1,
        max_connections: int = 1024,
        handshake_timeout_s: float = 30.0,
    ) -> None:
        service = _TraceService(intake, retry_after_s)
        handler = grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    service.export, response_serializer=ExportTraceServiceResponse.SerializeToString
                )
            },
        )
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.max_allowed_incoming_connections", max_connections),
            ("grpc.server_handshake_timeout_ms", int(handshake_timeout_s * 1000)),
            ("grpc.max_connection_idle_ms", int(self.IDLE_S * 1000)),
            ("grpc.http2.bdp_probe", 0),  # a 64 KiB window per call: what a refused call sends ahead
        ]
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="aigp-gateway-grpc"),
            handlers=[handler],
            interceptors=[_TokenCheck(intake, auth_token)] if auth_token else None,
            options=options,
            maximum_concurrent_rpcs=4 * max_workers,
        )
        try:
            if tls is None:
                port = self._server.add_insecure_port(endpoint)
            else:
                certificate, key = (Path(path).read_bytes() for path in tls)
                credentials = grpc.ssl_server_credentials([(key, certificate)])
                port = self._server.add_secure_port(endpoint, credentials)
        except RuntimeError:  # grpcio raises this when it cannot bind
            port = 0
        if not port:
            raise OSError(f"cannot listen on {endpoint}")
        self.port: int = port

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float = 10.0) -> None:
        """Refuse new calls and wait (bounded) for those in flight."""
        self._server.stop(grace_s).wait(grace_s + 1)
