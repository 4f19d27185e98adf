"""The OTLP/gRPC receiver: the ``TraceService/Export`` method of ``opentelemetry-proto`` on grpcio.

The method is registered with a raw-bytes deserializer so that an undecodable request is answered
``INVALID_ARGUMENT`` (grpcio's own deserialization failure would be ``INTERNAL``). A full intake is
answered ``RESOURCE_EXHAUSTED`` with a ``google.rpc.RetryInfo`` detail, shutting down with
``UNAVAILABLE``: both are retried by OTLP exporters.
"""

from __future__ import annotations

import hmac
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from aigp_otel_bridge.frontdoors.otlp import Admission, OtlpDecodeError, TraceIntake, decode_protobuf

SERVICE_NAME: str = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name


class _TraceService:
    def __init__(self, intake: TraceIntake, auth_token: str | None, retry_after_s: int) -> None:
        self.intake = intake
        self._expected_auth = f"Bearer {auth_token}" if auth_token else None
        self._retry_after_s = retry_after_s

    def export(self, body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        if self._expected_auth is not None and not self._authorized(context):
            self.intake.refused("grpc", "unauthenticated")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            request = decode_protobuf(body)
        except OtlpDecodeError as error:
            self.intake.refused("grpc", "bad_request")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        outcome = self.intake.export(request, "grpc")
        if outcome.admission is Admission.BUSY:
            context.set_trailing_metadata((("grpc-status-details-bin", self._retry_details()),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "intake full, retry later")
        if outcome.admission is Admission.STOPPED:
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        return outcome.response()

    def _authorized(self, context: grpc.ServicerContext) -> bool:
        assert self._expected_auth is not None
        for key, value in context.invocation_metadata():
            if key == "authorization" and isinstance(value, str):
                return hmac.compare_digest(value.encode(), self._expected_auth.encode())
        return False

    def _retry_details(self) -> bytes:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=self._retry_after_s)))
        status = status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED, message="intake full, retry later", details=[detail]
        )
        return bytes(status.SerializeToString())


class GrpcReceiver:
    """A grpcio server with the OTLP trace service on one endpoint."""

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
    ) -> None:
        service = _TraceService(intake, auth_token, retry_after_s)
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
        ]
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="aigp-gateway-grpc"),
            handlers=[handler],
            options=options,
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
