"""The OpenLineage client the bridge makes when none is given, and its fallback.

A deployment's OpenLineage configuration (``OPENLINEAGE_URL``, ``openlineage.yml``,
``OPENLINEAGE__TRANSPORT__*``) is read by the client's constructor, which raises on a malformed
value. A typo in a deployment must not stop the application: the bridge warns, naming the
problem, and sends its RunEvents to the console transport, where governance stays visible in the
logs, the same place the client sends them when it has no configuration at all.
"""

from __future__ import annotations

import logging

from openlineage.client import OpenLineageClient
from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport

from aigp_otel_bridge.telemetry import RateLimitedLog, describe

_log = RateLimitedLog(logging.getLogger("aigp_otel_bridge"))


def default_client() -> OpenLineageClient:
    """``OpenLineageClient()`` as configured; the console transport when that configuration fails."""
    try:
        return OpenLineageClient()
    except Exception as error:
        _log.log(
            logging.WARNING, "client-config",
            "the OpenLineage configuration is unusable (%s); RunEvents go to the console"
            " transport (logger openlineage.client.transport.console, level INFO) until it is fixed",
            describe(error),
        )
        return OpenLineageClient(transport=ConsoleTransport(ConsoleConfig()))
