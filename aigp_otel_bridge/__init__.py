"""aigp-otel-bridge: AIGP-governed OpenTelemetry traces become OpenLineage RunEvents.

One RunEvent per governed local root span, joined to the AIGP governance store and the
OTel backend by one trace id.
"""

from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.frontdoors.exporter import AIGPOpenLineageSpanExporter
from aigp_otel_bridge.frontdoors.processor import AIGPLineageSpanProcessor
from aigp_otel_bridge.frontdoors.propagator import AIGPLineagePropagator
from aigp_otel_bridge.stages.extract import Limits, RootInfo
from aigp_otel_bridge.version import __version__

__all__ = [
    "AIGPLineagePropagator",
    "AIGPLineageSpanProcessor",
    "AIGPOpenLineageSpanExporter",
    "BridgeConfig",
    "Limits",
    "RootInfo",
    "__version__",
]
