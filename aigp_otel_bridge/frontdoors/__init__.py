"""The ways in: one module per front door, all onto the same engine.

``processor`` (in-process ``SpanProcessor``), ``exporter`` (the ``opentelemetry-instrument``
traces exporter), ``core`` (what they share) and ``sdk`` (the adapter that turns an SDK span into
a ``SpanNote``). An OTLP receiver and its adapter belong here too.
"""
