"""aigp-otel-bridge: AIGP-governed OpenTelemetry traces become OpenLineage RunEvents.

One RunEvent per governed local root span, joined to the AIGP governance store and the
OTel backend by one trace id.
"""

from aigp_otel_bridge.config import BridgeConfig, Limits
from aigp_otel_bridge.frontdoors.propagator import AIGPLineagePropagator
from aigp_otel_bridge.processor import AIGPLineageSpanProcessor
from aigp_otel_bridge.records import RootInfo
from aigp_otel_bridge.version import __version__

__all__ = [
    "AIGPLineagePropagator",
    "AIGPLineageSpanProcessor",
    "BridgeConfig",
    "Limits",
    "RootInfo",
    "__version__",
]
