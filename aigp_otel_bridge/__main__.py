"""``python -m aigp_otel_bridge``: the ``aigp-otel-bridge`` command."""

from aigp_otel_bridge.tools.cli import main

raise SystemExit(main())
