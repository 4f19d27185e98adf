"""The tools around the runtime: the ``aigp-otel-bridge`` command (``cli``), its ``demo``,
``verify`` and ``explain`` (which share one bounded file loader and one walker over inputs,
``runfiles``). Nothing in the runtime imports them; their optional dependencies (``rich``) live here.
"""
