"""The ways in: one module per front door, all onto the same engine.

``processor`` (in-process ``SpanProcessor``), ``exporter`` (the ``opentelemetry-instrument``
traces exporter), ``core`` (what they share) and ``sdk`` (the adapter that turns an SDK span into
a ``SpanNote``). ``otlp`` (the OTLP decoder and adapter), ``otlp_http`` and ``otlp_grpc`` (the
gateway's receivers), ``gateway`` (``aigp-otel-bridge serve``) and ``propagator`` (the run
identity that crosses process boundaries with the trace context).
"""
