"""Configuration in one place: constructor arguments win over ``AIGP_BRIDGE_*`` variables,
which win over defaults.

A bad environment value is logged, with the value and the default used instead, and replaced
by the default (the OpenTelemetry SDK's convention for environment configuration); a bad
constructor argument raises ``ValueError`` (an unknown name ``TypeError``) at construction,
where the programmer can see it.
"""

from __future__ import annotations

import enum
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from aigp_otel_bridge.semconv import utf8_safe
from aigp_otel_bridge.stages.extract import Limits, RootInfo

_log = logging.getLogger(__name__)

ENV_PREFIX = "AIGP_BRIDGE_"
OPENLINEAGE_NAMESPACE = "OPENLINEAGE_NAMESPACE"

JobNameSetting = str | Callable[[RootInfo], str] | None

DEFAULT_PRODUCER = "https://github.com/aigp-otel-bridge/aigp-otel-bridge"


class Kind(enum.Enum):
    """What a setting accepts; the value is how error messages describe it."""

    POSITIVE_INT = "a positive integer"
    SECONDS = "a positive number of seconds"
    BOOL = "true or false"
    TEXT = "a non-empty UTF-8 string"
    JOB_NAME = "a non-empty UTF-8 string or a callable"
    PATH = "a non-empty UTF-8 path"


def _about(kind: Kind, description: str) -> dict[str, Any]:
    """What a setting accepts and means, kept with its one declaration."""
    return {"kind": kind, "description": description}


@dataclass(frozen=True)
class BridgeConfig:
    """The resolved settings of one bridge (see docs/configuration.md); each declared once, here."""

    job_namespace: str | None = field(default=None, metadata=_about(
        Kind.TEXT, "job namespace; None: OPENLINEAGE_NAMESPACE, else service.namespace, else default"
    ))
    job_name: JobNameSetting = field(default=None, metadata=_about(
        Kind.JOB_NAME, "job name, or a callable of RootInfo; None: <agent>.<root span name>"
    ))
    resource_namespace: str | None = field(default=None, metadata=_about(
        Kind.TEXT, "namespace of the input datasets; None: the job namespace"
    ))
    trace_timeout_s: float = field(default=300.0, metadata=_about(
        Kind.SECONDS, "quiet time after which a governed run is emitted early"
    ))
    schedule_delay_s: float = field(default=1.0, metadata=_about(
        Kind.SECONDS, "longest a finished local root waits for the correlation worker (a flush does not)"
    ))
    max_pending_traces: int = field(default=10_000, metadata=_about(
        Kind.POSITIVE_INT, "runs buffered at once; the least recently active is emitted early"
    ))
    max_records_per_trace: int = field(default=10_000, metadata=_about(
        Kind.POSITIVE_INT, "records kept per run; beyond it, records count only toward the aggregate"
    ))
    emit_ungoverned: bool = field(default=False, metadata=_about(
        Kind.BOOL, "emit a RunEvent for every local root, governed or not"
    ))
    retry_max_backoff_s: float = field(default=30.0, metadata=_about(
        Kind.SECONDS, "longest wait between delivery retries"
    ))
    max_queue_size: int = field(default=2_048, metadata=_about(
        Kind.POSITIVE_INT, "runs awaiting delivery, retries included; when full the oldest is dropped"
        " (the gateway refuses requests instead)"
    ))
    max_intake_size: int = field(default=16_384, metadata=_about(
        Kind.POSITIVE_INT, "span notes and ingested events awaiting the correlation worker"
    ))
    outbox_dir: str | None = field(default=None, metadata=_about(
        Kind.PATH, "folder of the durable SQLite outbox; None keeps failed runs in memory only"
    ))
    outbox_max_events: int = field(default=100_000, metadata=_about(
        Kind.POSITIVE_INT, "runs the outbox holds before it drops its oldest"
    ))
    shutdown_timeout_s: float = field(default=30.0, metadata=_about(
        Kind.SECONDS, "how long shutdown may take to deliver or store what is queued"
    ))
    producer: str = field(default=DEFAULT_PRODUCER, metadata=_about(
        Kind.TEXT, "the producer and _producer URI"
    ))
    max_string_length: int = field(default=Limits.max_string_length, metadata=_about(
        Kind.POSITIVE_INT, "longest accepted name, id or event type"
    ))
    max_array_length: int = field(default=Limits.max_array_length, metadata=_about(
        Kind.POSITIVE_INT, "elements read from one array attribute or Merkle tree"
    ))
    max_inputs_per_run: int = field(default=Limits.max_inputs_per_run, metadata=_about(
        Kind.POSITIVE_INT, "input datasets on one RunEvent"
    ))

    @property
    def limits(self) -> Limits:
        return Limits(self.max_string_length, self.max_array_length, self.max_inputs_per_run)


SETTINGS: dict[str, Kind] = {f.name: f.metadata["kind"] for f in fields(BridgeConfig)}
"""Every setting and what it accepts, from the one declaration above."""
ENV_GRPC_ENDPOINT = ENV_PREFIX + "GRPC_ENDPOINT"
ENV_HTTP_ENDPOINT = ENV_PREFIX + "HTTP_ENDPOINT"
ENV_AUTH_TOKEN = ENV_PREFIX + "AUTH_TOKEN"
ENV_MAX_REQUEST_BYTES = ENV_PREFIX + "MAX_REQUEST_BYTES"
ENV_ROOT_WAIT_S = ENV_PREFIX + "ROOT_WAIT_S"
ENV_LINK_WAIT_S = ENV_PREFIX + "LINK_WAIT_S"
ENV_MAX_DECODING_BYTES = ENV_PREFIX + "MAX_DECODING_BYTES"
ENV_MAX_HELD_BYTES = ENV_PREFIX + "MAX_HELD_BYTES"
ENV_MAX_CONNECTIONS = ENV_PREFIX + "MAX_CONNECTIONS"
ENV_READ_TIMEOUT_S = ENV_PREFIX + "READ_TIMEOUT_S"
GATEWAY_VARIABLES: dict[str, str] = {
    ENV_GRPC_ENDPOINT: "OTLP/gRPC HOST:PORT, or none (default 127.0.0.1:4317)",
    ENV_HTTP_ENDPOINT: "OTLP/HTTP HOST:PORT, or none (default 127.0.0.1:4318)",
    ENV_AUTH_TOKEN: "bearer token every request must carry",
    ENV_MAX_REQUEST_BYTES: "largest request body, also after decompression",
    ENV_ROOT_WAIT_S: "seconds a local root waits for children sent after it (default 1)",
    ENV_LINK_WAIT_S: "seconds a callee's root waits, at most, for its caller's root (default 10)",
    ENV_MAX_DECODING_BYTES: "request bytes read or decoded at once, across requests (default 32 MiB)",
    ENV_MAX_HELD_BYTES: "estimated bytes of the local roots held at once (default 64 MiB)",
    ENV_MAX_CONNECTIONS: "open connections per receiver (default: a third of the file-descriptor limit)",
    ENV_READ_TIMEOUT_S: "seconds a request's head, then its body, may take to arrive (default 30)",
}
"""The gateway's own variables (``aigp-otel-bridge serve``; its command-line options win over them)."""
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(BridgeConfig)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SHOWN = 64


def shown(value: object) -> str:
    """A value as a log line or message may show it: its repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _parse(value: Any, kind: type[Any]) -> Any:
    """Text from the environment as a number; anything unparsable stays as it is (and is refused)."""
    if not isinstance(value, str):
        return value
    try:
        return kind(value.strip())
    except ValueError:
        return value


def _accepted(kind: Kind, value: Any) -> tuple[bool, Any]:
    """(accepted, converted value) of one value for a setting of this kind."""
    if kind is Kind.POSITIVE_INT:
        number = _parse(value, int)
        return not isinstance(number, bool) and isinstance(number, int) and number >= 1, number
    if kind is Kind.SECONDS:
        number = _parse(value, float)
        ok = not isinstance(number, bool) and isinstance(number, (int, float)) and 0 < number < math.inf
        return ok, float(number) if ok else number
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return True, value
        word = value.strip().lower() if isinstance(value, str) else None
        return word in _TRUE | _FALSE, word in _TRUE
    if kind is Kind.JOB_NAME and callable(value):
        return True, value
    if kind is Kind.PATH and isinstance(value, os.PathLike):
        value = os.fspath(value)
    return isinstance(value, str) and bool(value) and utf8_safe(value), value


def _convert(name: str, value: Any) -> Any:
    """Check and convert one setting; raises ValueError with a message naming the setting."""
    kind = SETTINGS[name]
    ok, converted = _accepted(kind, value)
    if not ok:
        raise ValueError(f"{name} must be {kind.value}, got {shown(value)}")
    return converted


def resolve(arguments: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> BridgeConfig:
    """Merge constructor arguments (None means "not given") with the environment and defaults."""
    environ = os.environ if environ is None else environ
    unknown = set(arguments) - SETTINGS.keys()
    if unknown:
        raise TypeError(f"unknown bridge settings: {', '.join(sorted(unknown))}")
    settings: dict[str, Any] = {}
    for name in sorted(SETTINGS):
        given = arguments.get(name)
        if given is not None:
            settings[name] = _convert(name, given)
            continue
        env_name = ENV_PREFIX + name.upper()
        raw = environ.get(env_name)
        if raw is None or raw == "":
            continue
        try:
            settings[name] = _convert(name, raw)
        except ValueError as error:
            _log.warning("ignoring %s: %s; using the default, %s", env_name, error, shown(_DEFAULTS[name]))
    if "job_namespace" not in settings:  # the OpenLineage convention, below our own variable
        namespace = environ.get(OPENLINEAGE_NAMESPACE)
        if namespace:
            try:
                settings["job_namespace"] = _convert("job_namespace", namespace)
            except ValueError as error:
                _log.warning(
                    "ignoring %s: %s; using the resource's service.namespace, else 'default'",
                    OPENLINEAGE_NAMESPACE, error,
                )
    return BridgeConfig(**settings)
