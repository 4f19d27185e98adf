"""Parent links from the spans themselves (bridge contract, sections 8 and 10), for the gateway.

A gateway sees every service's spans of a trace, so it needs no propagated header to link a
callee's run to its caller's: its front door resolves which local root the callee's parent span
belongs to and says so here (``expect``) before it hands the callee's root to the engine, always
after the caller's root. The correlation worker then names the caller's run first; ``link``
remembers every named run's identity and gives a callee's run the ``parent`` facet naming its
caller's run and the top of the chain. In process nothing of this exists (the engine's
``run_chain`` stays None): there the propagated header does the same.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

from aigp_otel_bridge.propagated_links import RunIdentity, RunParent
from aigp_otel_bridge.stages.build import DecidedRun
from aigp_otel_bridge.stages.correlate import ClosedRun


class RunChain:
    """Callers expected for local roots, and the identities of named runs, by (trace, root span).

    Bounded: at most ``max_runs`` of each (the oldest forgotten first; a callee whose caller was
    forgotten is emitted without a ``parent`` facet). ``expect`` is called by the gateway's hold
    thread, ``link`` by the correlation worker.
    """

    def __init__(self, max_runs: int = 10_000) -> None:
        self._max = max_runs
        self._lock = threading.Lock()
        self._callers: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._named: OrderedDict[tuple[int, int], RunParent] = OrderedDict()
        """A run's own identity (``parent``) and the top of its chain (``root``)."""

    def expect(self, trace_id: int, span_id: int, caller_span_id: int) -> None:
        """The local root ``span_id`` was called from the run of the local root ``caller_span_id``."""
        with self._lock:
            self._callers[(trace_id, span_id)] = caller_span_id
            while len(self._callers) > self._max:
                self._callers.popitem(last=False)

    def link(self, closed: ClosedRun, run: DecidedRun) -> DecidedRun:
        """``run`` with its caller's run as ``parent`` when known; remembered as a possible caller."""
        if not isinstance(closed.key, int) or closed.root_span_id is None:
            return run
        key = (closed.key, closed.root_span_id)
        with self._lock:
            caller = self._callers.get(key)
            found = self._named.get((closed.key, caller)) if caller is not None else None
            if run.parent is None and found is not None:
                run = dataclasses.replace(run, parent=RunParent(found.parent, found.root))
            identity = RunIdentity(run.run_id, run.job_namespace, run.job_name)
            self._named[key] = RunParent(identity, run.parent.root if run.parent is not None else identity)
            self._named.move_to_end(key)
            while len(self._named) > self._max:
                self._named.popitem(last=False)
        return run
