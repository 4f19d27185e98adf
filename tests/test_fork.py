"""Fork safety: a child process gets fresh workers and none of the parent's pending traces."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from tests.conftest import CaptureTransport


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_emits_its_own_runs_and_not_the_parents(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    provider, processor = make_bridge()
    tracer = provider.get_tracer("fork")
    parent_root = tracer.start_span("parent-session")
    parent_trace = parent_root.get_span_context().trace_id
    from opentelemetry import trace

    with trace.use_span(parent_root, end_on_exit=False), tracer.start_as_current_span("step") as step:
        step.add_event("aigp.tool.invoked", {"aigp.event.id": "parent-1", "aigp.tools.names": ["tool.a"]})
    assert processor.force_flush(5_000)

    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            with tracer.start_as_current_span("child-session") as root:
                root.add_event("aigp.prompt.used", {"aigp.event.id": "child-1"})
                child_trace = f"{root.get_span_context().trace_id:032x}"
            ok = processor.force_flush(10_000)
            traces = [e["run"]["facets"]["aigp_governance"]["traceId"] for e in transport.events]
            code = 0 if ok and traces == [child_trace] else 2
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child did not emit exactly its own run"

    parent_root.end()
    assert processor.force_flush(10_000)
    assert [e["run"]["facets"]["aigp_governance"]["traceId"] for e in transport.events] == [
        f"{parent_trace:032x}"
    ]
