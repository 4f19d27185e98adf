"""``aigp-otel-bridge serve``: the bridge's engine behind OTLP/gRPC and OTLP/HTTP receivers.

Lifecycle: resolve settings (a bad one fails before anything listens), configure the gateway's
own metrics, start the engine, bind and start both receivers, say where it listens and where
lineage goes, then wait for SIGTERM or SIGINT. Stopping is the reverse: the receivers stop
accepting and finish the requests in flight, then the engine decides every pending trace and
delivers its run or stores it in the outbox, and the process exits 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import ssl
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TextIO

from openlineage.client import OpenLineageClient
from opentelemetry import metrics

from aigp_otel_bridge.config import (
    ENV_AUTH_TOKEN,
    ENV_GRPC_ENDPOINT,
    ENV_HTTP_ENDPOINT,
    ENV_LINK_WAIT_S,
    ENV_MAX_CONNECTIONS,
    ENV_MAX_DECODING_BYTES,
    ENV_MAX_HELD_BYTES,
    ENV_MAX_REQUEST_BYTES,
    ENV_READ_TIMEOUT_S,
    ENV_ROOT_WAIT_S,
)
from aigp_otel_bridge.frontdoors.core import BridgeCore
from aigp_otel_bridge.frontdoors.otlp import (
    DEFAULT_LINK_WAIT_S,
    DEFAULT_MAX_DECODING_BYTES,
    DEFAULT_MAX_HELD_BYTES,
    DEFAULT_ROOT_WAIT_S,
    TraceIntake,
)
from aigp_otel_bridge.frontdoors.otlp_grpc import GrpcReceiver
from aigp_otel_bridge.frontdoors.otlp_http import (
    TRACES_PATH,
    HttpReceiver,
    OtlpHttpApp,
    default_max_connections,
)
from aigp_otel_bridge.version import __version__

DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "127.0.0.1:4318"
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_READ_TIMEOUT_S = 30.0
RETRY_AFTER_S = 1
"""What a refused sender is told to wait: the intake drains in milliseconds, and an OTLP exporter
gives up after six refusals, so the wait must stay short."""
_log = logging.getLogger("aigp_otel_bridge")


class GatewayError(Exception):
    """A setting the gateway cannot start with (the message says which and why)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, name: str) -> Endpoint | None:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) or ``none``."""
    text = text.strip()
    if text.lower() == "none":
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise GatewayError(f"{name} must be HOST:PORT or none, not {text!r}")
    return Endpoint(host, int(port))


@dataclass(frozen=True)
class GatewaySettings:
    grpc_endpoint: Endpoint | None
    http_endpoint: Endpoint | None
    auth_token: str | None
    tls: tuple[str, str] | None
    """(certificate file, key file), PEM."""
    max_request_bytes: int
    root_wait_s: float = DEFAULT_ROOT_WAIT_S
    """How long a local root is held for children sent after it."""
    link_wait_s: float = DEFAULT_LINK_WAIT_S
    """How long a callee's root is held, at most, for its caller's root."""
    max_decoding_bytes: int = DEFAULT_MAX_DECODING_BYTES
    """Request bytes read or decoded at once, across requests and both protocols."""
    max_held_bytes: int = DEFAULT_MAX_HELD_BYTES
    """Estimated bytes of the local roots held at once."""
    max_connections: int = 0
    """Open connections per receiver; 0: a third of the file-descriptor limit."""
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    """How long a request's head, then its body, may take to arrive (HTTP), or a connection's
    handshake (gRPC)."""

    def exposed(self) -> list[str]:
        """Why listening as configured is risky: a receiver on a non-loopback address without TLS
        or without a token (empty when both are set or every receiver is on loopback)."""
        missing = [what for what, present in (("TLS", self.tls), ("a token", self.auth_token)) if not present]
        if not missing:
            return []
        return [f"{name} listens on {endpoint.host} without {' or '.join(missing)}"
                for name, endpoint in (("OTLP/gRPC", self.grpc_endpoint), ("OTLP/HTTP", self.http_endpoint))
                if endpoint is not None and not _loopback(endpoint.host)]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) <= 0:
        raise GatewayError(f"{name} must be a positive whole number, not {text!r}")
    return int(text)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise GatewayError(f"{name} must be a number of seconds from 0 to 3600, not {text!r}")
    return value


def gateway_settings(
    *,
    grpc_endpoint: str | None = None,
    http_endpoint: str | None = None,
    auth_token_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    max_request_bytes: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewaySettings:
    """Command-line values win over ``AIGP_BRIDGE_*`` variables, which win over defaults."""
    env = os.environ if environ is None else environ
    grpc_text = grpc_endpoint or env.get(ENV_GRPC_ENDPOINT) or DEFAULT_GRPC_ENDPOINT
    http_text = http_endpoint or env.get(ENV_HTTP_ENDPOINT) or DEFAULT_HTTP_ENDPOINT
    grpc = parse_endpoint(grpc_text, "--grpc-endpoint")
    http = parse_endpoint(http_text, "--http-endpoint")
    if grpc is None and http is None:
        raise GatewayError("both receivers are turned off (--grpc-endpoint none, --http-endpoint none)")
    token = env.get(ENV_AUTH_TOKEN) or None
    if auth_token_file:
        try:
            token = Path(auth_token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise GatewayError(f"cannot read --auth-token-file: {error}") from None
        if not token:
            raise GatewayError(f"--auth-token-file {auth_token_file} is empty")
    if bool(tls_cert_file) != bool(tls_key_file):
        raise GatewayError("TLS needs both --tls-cert-file and --tls-key-file")
    tls = None
    if tls_cert_file and tls_key_file:
        for path in (tls_cert_file, tls_key_file):
            if not Path(path).is_file():
                raise GatewayError(f"TLS file not found: {path}")
        try:  # a certificate and key that do not match fail here, named as such
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls_cert_file, tls_key_file)
        except (ssl.SSLError, OSError) as error:
            raise GatewayError(
                f"--tls-cert-file and --tls-key-file are not a usable certificate and key pair: {error}"
            ) from None
        tls = (tls_cert_file, tls_key_file)
    if max_request_bytes is None:
        text = env.get(ENV_MAX_REQUEST_BYTES, "")
        max_request_bytes = int(text) if text.strip().isdigit() else DEFAULT_MAX_REQUEST_BYTES
    if max_request_bytes <= 0:
        raise GatewayError("--max-request-bytes must be positive")
    read_timeout_s = _seconds(env, ENV_READ_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S)
    if read_timeout_s <= 0:
        raise GatewayError(f"{ENV_READ_TIMEOUT_S} must be more than 0 seconds")
    return GatewaySettings(
        grpc, http, token, tls, max_request_bytes,
        _seconds(env, ENV_ROOT_WAIT_S, DEFAULT_ROOT_WAIT_S),
        _seconds(env, ENV_LINK_WAIT_S, DEFAULT_LINK_WAIT_S),
        _positive_int(env, ENV_MAX_DECODING_BYTES, DEFAULT_MAX_DECODING_BYTES),
        _positive_int(env, ENV_MAX_HELD_BYTES, DEFAULT_MAX_HELD_BYTES),
        _positive_int(env, ENV_MAX_CONNECTIONS, default_max_connections()),
        read_timeout_s,
    )


class Gateway:
    """The engine and both receivers; ``start`` binds, ``stop`` drains and shuts down."""

    def __init__(self, settings: GatewaySettings, client: OpenLineageClient | None = None) -> None:
        self.settings = settings
        self.core = BridgeCore(client, {})
        self._ready = threading.Event()
        self.intake = TraceIntake(
            self.core.engine, root_wait_s=settings.root_wait_s, link_wait_s=settings.link_wait_s,
            max_decoding_bytes=settings.max_decoding_bytes, max_held_bytes=settings.max_held_bytes,
        )
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        """Bind and start the receivers; on a bind or TLS error, undo and raise ``GatewayError``."""
        settings = self.settings
        connections = settings.max_connections or default_max_connections()
        for warning in settings.exposed():
            _log.warning("aigp-otel-bridge serve: %s: anyone who can reach it can send traces"
                         " (set --tls-cert-file/--tls-key-file and a token)", warning)
        try:
            if settings.grpc_endpoint is not None:
                self.grpc = GrpcReceiver(
                    self.intake, str(settings.grpc_endpoint), max_message_bytes=settings.max_request_bytes,
                    auth_token=settings.auth_token, tls=settings.tls, retry_after_s=RETRY_AFTER_S,
                    max_connections=connections, handshake_timeout_s=settings.read_timeout_s,
                )
                self.grpc.start()
            if settings.http_endpoint is not None:
                app = OtlpHttpApp(
                    self.intake, max_body_bytes=settings.max_request_bytes, auth_token=settings.auth_token,
                    ready=self._ready.is_set, retry_after_s=RETRY_AFTER_S,
                    read_timeout_s=settings.read_timeout_s,
                )
                self.http = HttpReceiver(app, settings.http_endpoint.host, settings.http_endpoint.port,
                                         settings.tls, max_connections=connections,
                                         read_timeout_s=settings.read_timeout_s)
                self.http.start()
        except (OSError, ValueError) as error:
            self.stop()
            raise GatewayError(f"cannot start the receivers: {error}") from None
        self._ready.set()

    def stop(self) -> bool:
        """Stop accepting, finish requests in flight, then decide, deliver or store every run.

        True when every run was delivered or stored (``shutdown_timeout_s`` bounds the wait).
        """
        self._ready.clear()
        if self.http is not None:
            self.http.stop()
        if self.grpc is not None:
            self.grpc.stop()
        self.intake.close()
        self.core.shutdown()
        stats = self.core.stats()
        return stats["runs_dropped"] == 0 and stats["build_failures"] == 0

    def describe(self) -> str:
        """The start line: where it listens, how it is protected, where lineage goes."""
        scheme = "https" if self.settings.tls else "http"
        parts = []
        if self.grpc is not None and self.settings.grpc_endpoint is not None:
            parts.append(f"OTLP/gRPC on {self.settings.grpc_endpoint.host}:{self.grpc.port}")
        if self.http is not None and self.settings.http_endpoint is not None:
            endpoint = Endpoint(self.settings.http_endpoint.host, self.http.port)
            parts.append(f"OTLP/HTTP on {scheme}://{endpoint}{TRACES_PATH}")
        security = ", ".join(
            ["TLS" if self.settings.tls else "no TLS",
             "bearer token required" if self.settings.auth_token else "no token"]
        )
        return (f"aigp-otel-bridge {__version__} serving {' and '.join(parts)} ({security});"
                f" lineage via {describe_transport(self.core.client)}")


def describe_transport(client: OpenLineageClient) -> str:
    transport = client.transport
    kind = getattr(transport, "kind", None) or type(transport).__name__
    config = getattr(transport, "config", None)
    values = (getattr(config, name, None) for name in ("url", "log_file_path", "topic"))
    target = next((value for value in values if isinstance(value, str)), None)
    return f"the OpenLineage '{kind}' transport" + (f" to {target}" if target else "")


def configure_metrics(environ: Mapping[str, str] | None = None) -> Any:
    """A global ``MeterProvider`` from ``OTEL_METRICS_EXPORTER``, or None when it is unset or ``none``.

    Each name is looked up in the ``opentelemetry_metrics_exporter`` entry points, as the SDK's own
    configurator does: a ``MetricReader`` (e.g. ``prometheus``) is used as is, a push exporter
    (``otlp``, ``console``) goes behind a ``PeriodicExportingMetricReader``, which reads
    ``OTEL_METRIC_EXPORT_INTERVAL``. The resource comes from ``OTEL_SERVICE_NAME`` /
    ``OTEL_RESOURCE_ATTRIBUTES``; ``service.name`` is ``OTEL_SERVICE_NAME``, else ``aigp-otel-bridge``.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    env = os.environ if environ is None else environ
    names = [name.strip() for name in env.get("OTEL_METRICS_EXPORTER", "none").split(",")]
    names = [name for name in names if name and name.lower() != "none"]
    if not names:
        return None
    readers: list[MetricReader] = []
    for name in names:
        found = list(entry_points(group="opentelemetry_metrics_exporter", name=name))
        if not found:
            raise GatewayError(f"OTEL_METRICS_EXPORTER: no metrics exporter named {name!r} is installed")
        exporter_class = found[0].load()
        if isinstance(exporter_class, type) and issubclass(exporter_class, MetricReader):
            readers.append(exporter_class())
        else:
            readers.append(PeriodicExportingMetricReader(exporter_class()))
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "aigp-otel-bridge"})
    provider = MeterProvider(metric_readers=readers, resource=resource)
    metrics.set_meter_provider(provider)
    return provider


def serve(settings: GatewaySettings, out: TextIO = sys.stdout) -> int:
    """Run the gateway until SIGTERM or SIGINT; 0 after a clean stop, 1 when it cannot start."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    meter_provider = None
    try:
        meter_provider = configure_metrics()
        gateway = Gateway(settings)
        try:
            gateway.start()
        except GatewayError as error:
            print(f"aigp-otel-bridge serve: {error}", file=sys.stderr)
            return 1
        print(gateway.describe(), file=out, flush=True)
        while not stop.wait(1.0):
            pass
        print("aigp-otel-bridge serve: stopping (finishing requests, deciding pending traces)", file=out,
              flush=True)
        complete = gateway.stop()
        stats = gateway.core.stats()
        delivered, stored, dropped = gateway.core.engine.delivery_tally()
        print(f"aigp-otel-bridge serve: stopped; {delivered} runs emitted, {stored} stored in the"
              f" outbox, {dropped} dropped (of {stats['runs_decided']} decided);"
              f" {stats['runs_replayed']} replayed from the outbox;"
              f" {gateway.intake.busy_refusals} requests refused while the intake was full or delivery"
              " at its bound",
              file=out, flush=True)
        if not complete:
            print("aigp-otel-bridge serve: some runs could not be delivered or stored (see the log)",
                  file=sys.stderr)
        return 0
    finally:
        if meter_provider is not None:
            meter_provider.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
