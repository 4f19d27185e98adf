"""The gateway (``aigp-otel-bridge serve``): its receivers, trace assembly, settings, operation,
whole traces across services, the JavaScript SDK's exporters, the example and the benchmark's smoke
run. ``harness.py`` starts a gateway the way a user does and reads back what it wrote."""
