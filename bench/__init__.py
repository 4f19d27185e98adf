"""Benchmark harness of aigp-otel-bridge: run ``python -m bench`` (see ``bench/__main__.py``)."""
