"""Configuration in one place: constructor arguments win over ``AIGP_BRIDGE_*`` variables,
which win over defaults.

A bad environment value is logged and replaced by the default (the OpenTelemetry SDK's
convention for environment configuration); a bad constructor argument raises ``ValueError``
at construction, where the programmer can see it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Union

from aigp_otel_bridge.semconv import utf8_safe

if TYPE_CHECKING:
    from aigp_otel_bridge.records import RootInfo

_log = logging.getLogger(__name__)

ENV_PREFIX = "AIGP_BRIDGE_"
OPENLINEAGE_NAMESPACE = "OPENLINEAGE_NAMESPACE"

JobNameSetting = Union[str, "Callable[[RootInfo], str]", None]

DEFAULT_PRODUCER = "https://github.com/aigp-otel-bridge/aigp-otel-bridge"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one value may cost; values past them are left out and counted."""

    max_string_length: int = 1024
    """Longest accepted name, id or event type, in characters."""
    max_array_length: int = 1000
    """Most elements read from one array attribute or Merkle tree."""
    max_inputs_per_run: int = 1000
    """Most input datasets on one RunEvent; further resources are counted."""


@dataclass(frozen=True)
class BridgeConfig:
    """The resolved settings of one bridge (see docs/configuration.md)."""

    job_namespace: str | None = None
    """None (neither given nor in ``AIGP_BRIDGE_JOB_NAMESPACE`` or ``OPENLINEAGE_NAMESPACE``): the
    resource's ``service.namespace``, else ``default``."""
    job_name: JobNameSetting = None
    """None: ``<agent>.<root span name>``."""
    resource_namespace: str | None = None
    """None: the job namespace."""
    trace_timeout_s: float = 300.0
    max_pending_traces: int = 10_000
    max_records_per_trace: int = 10_000
    emit_ungoverned: bool = False
    retry_max_backoff_s: float = 30.0
    max_queue_size: int = 2_048
    """Runs waiting for delivery (including retries) before the oldest is dropped and counted."""
    max_intake_size: int = 16_384
    """Span notes and ingested events waiting for the correlation worker."""
    outbox_dir: str | None = None
    """Folder of the durable SQLite outbox; None keeps failed runs in memory only."""
    outbox_max_events: int = 100_000
    """Runs the outbox holds before it drops its oldest (counted in ``outbox_dropped``)."""
    shutdown_timeout_s: float = 30.0
    """How long ``shutdown`` may take to deliver or store what is queued."""
    producer: str = DEFAULT_PRODUCER
    max_string_length: int = Limits.max_string_length
    max_array_length: int = Limits.max_array_length
    max_inputs_per_run: int = Limits.max_inputs_per_run

    @property
    def limits(self) -> Limits:
        return Limits(self.max_string_length, self.max_array_length, self.max_inputs_per_run)


_POSITIVE_INT = {
    "max_pending_traces",
    "max_records_per_trace",
    "max_queue_size",
    "max_intake_size",
    "outbox_max_events",
    "max_string_length",
    "max_array_length",
    "max_inputs_per_run",
}
_POSITIVE_FLOAT = {"trace_timeout_s", "retry_max_backoff_s", "shutdown_timeout_s"}
_BOOL = {"emit_ungoverned"}
_TEXT = {"job_namespace", "job_name", "resource_namespace", "producer", "outbox_dir"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(value: Any, kind: type[Any]) -> Any:
    """Text from the environment as a number; anything unparsable stays as it is (and is refused)."""
    if not isinstance(value, str):
        return value
    try:
        return kind(value.strip())
    except ValueError:
        return value


def _convert(name: str, value: Any) -> Any:
    """Check and convert one setting; raises ValueError with a message naming the setting."""
    if name in _POSITIVE_INT:
        number = _parse(value, int)
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        return number
    if name in _POSITIVE_FLOAT:
        number = _parse(value, float)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 < number < math.inf:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        return float(number)
    if name in _BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if name == "job_name" and callable(value):
        return value
    if name == "outbox_dir" and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if name in _TEXT:
        if not isinstance(value, str) or not value or not utf8_safe(value):
            raise ValueError(f"{name} must be a non-empty UTF-8 string, got {value!r}")
        return value
    raise ValueError(f"unknown setting {name!r}")


def resolve(arguments: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> BridgeConfig:
    """Merge constructor arguments (None means "not given") with the environment and defaults."""
    environ = os.environ if environ is None else environ
    known = {f.name for f in fields(BridgeConfig)}
    unknown = set(arguments) - known
    if unknown:
        raise TypeError(f"unknown bridge settings: {', '.join(sorted(unknown))}")
    settings: dict[str, Any] = {}
    for name in sorted(known):
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
            _log.warning("ignoring %s: %s; using the default", env_name, error)
    if "job_namespace" not in settings:  # the OpenLineage convention, below our own variable
        namespace = environ.get(OPENLINEAGE_NAMESPACE)
        if namespace:
            try:
                settings["job_namespace"] = _convert("job_namespace", namespace)
            except ValueError as error:
                _log.warning("ignoring %s: %s", OPENLINEAGE_NAMESPACE, error)
    return BridgeConfig(**settings)
