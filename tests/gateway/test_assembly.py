"""The gateway's trace assembly on its own: the span index across requests, the hold's bound, and
callers handed over before their callees (which then carry the ``parent`` facet)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.engine import Engine
from aigp_otel_bridge.frontdoors.assembly import held_bytes
from aigp_otel_bridge.frontdoors.otlp import DEFAULT_MAX_HELD_BYTES, TraceIntake, notes_from_request
from aigp_otel_bridge.propagated_links import run_id_for_remote_root, run_id_for_trace
from tests.conftest import CaptureTransport
from tests.waiting import wait_until

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TRACE_ID = int.from_bytes(TRACE, "big")
CALLER, CALL, CALLEE, WORK = (bytes([n]) * 8 for n in (1, 2, 3, 4))
KNOWN, REMOTE = 0x100, 0x300
GOVERNED = [KeyValue(key="aigp.governance.hash", value=AnyValue(string_value="c" * 64))]


def span(
    span_id: bytes, parent: bytes = b"", flags: int = 0, name: str = "s", governed: bool = False,
    trace: bytes = TRACE,
) -> Span:
    return Span(trace_id=trace, span_id=span_id, parent_span_id=parent, flags=flags, name=name,
                start_time_unix_nano=1, end_time_unix_nano=2, attributes=GOVERNED if governed else [])


def request(service: str, *spans: Span) -> ExportTraceServiceRequest:
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )


@pytest.fixture
def transport() -> CaptureTransport:
    return CaptureTransport()


@pytest.fixture
def make_intake(transport: CaptureTransport) -> Iterator[Any]:
    made: list[TraceIntake] = []

    def make(
        root_wait_s: float = 60.0, link_wait_s: float = 60.0, max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
        **settings: Any,
    ) -> TraceIntake:
        engine = Engine(BridgeConfig(job_namespace="test.ns", **settings),
                        OpenLineageClient(transport=transport).emit)
        made.append(TraceIntake(engine, root_wait_s=root_wait_s, link_wait_s=link_wait_s,
                                max_held_bytes=max_held_bytes))
        return made[-1]

    yield make
    for intake in made:
        intake.close()
        intake.engine.shutdown(5.0)


def send(intake: TraceIntake, service: str, *spans: Span) -> bool:
    converted = notes_from_request(request(service, *spans), seen=intake.assembly.seen_in_resource)
    return intake.assembly.admit(converted.notes, converted.links, converted.resources, converted.presumed)


def test_local_roots_resolve_across_requests_in_any_order(make_intake: Any) -> None:
    intake = make_intake()
    assembly = intake.assembly
    assert send(intake, "caller", span(WORK, CALL, KNOWN))  # a grandchild, before its parent
    assert assembly.local_root(TRACE_ID, int.from_bytes(WORK, "big")) is None
    assert send(intake, "caller", span(CALL, CALLER, KNOWN), span(CALLER))
    assert assembly.local_root(TRACE_ID, int.from_bytes(WORK, "big")) == int.from_bytes(CALLER, "big")
    assert send(intake, "callee", span(CALLEE, CALL, REMOTE))  # its parent is in another service
    assert assembly.local_root(TRACE_ID, int.from_bytes(CALLEE, "big")) == int.from_bytes(CALLEE, "big")


def test_held_roots_are_bounded_in_bytes(make_intake: Any) -> None:
    (note,) = notes_from_request(request("a", span(CALLER, governed=True))).notes
    intake = make_intake(max_held_bytes=2 * held_bytes(note))
    assert send(intake, "a", span(CALLER, governed=True), span(CALL, governed=True))
    assert intake.assembly.bytes_held == 2 * held_bytes(note)
    assert not send(intake, "a", span(CALLEE, governed=True), span(WORK, governed=True))  # nothing kept
    assert len(intake.assembly) == 2
    others = (bytes([7]) * 16, bytes([8]) * 16)  # traces nothing governed was noted of
    assert send(intake, "a", *(span(CALLEE, trace=trace) for trace in others))  # lonely: never refused
    assert len(intake.assembly) == 2
    intake.close()
    assert intake.assembly.bytes_held == 0
    assert not send(intake, "a", span(CALLEE))  # stopping


def test_an_empty_hold_takes_any_request(make_intake: Any) -> None:
    intake = make_intake(max_held_bytes=1)
    assert send(intake, "a", span(CALLER, governed=True), span(CALL, governed=True))  # nothing else held
    assert not send(intake, "a", span(CALLEE, governed=True))


def test_stopping_hands_callers_over_before_callees_which_name_them(
    make_intake: Any, transport: CaptureTransport
) -> None:
    """The callee's root arrives first (spans end bottom-up); at close both are handed over,
    the caller first, and the callee's run carries the caller's run as parent and root."""
    intake = make_intake()
    assert send(intake, "callee", span(CALLEE, CALL, REMOTE, name="price", governed=True))
    assert send(intake, "caller", span(CALL, CALLER, KNOWN), span(CALLER, name="plan", governed=True))
    intake.close()
    assert intake.engine.flush(10.0)
    runs = {event["job"]["name"]: event for event in transport.wait_for(2)}
    caller, callee = runs["caller.plan"], runs["callee.price"]
    trace_hex = TRACE.hex()
    assert caller["run"]["runId"] == run_id_for_trace(trace_hex)
    assert "parent" not in caller["run"]["facets"]
    assert callee["run"]["runId"] == run_id_for_remote_root(trace_hex, CALLEE.hex())
    parent = callee["run"]["facets"]["parent"]
    assert (parent["run"]["runId"], parent["job"]["name"]) == (caller["run"]["runId"], "caller.plan")
    assert parent["root"]["run"]["runId"] == caller["run"]["runId"]


def test_a_callee_whose_caller_never_comes_goes_without_a_parent(
    make_intake: Any, transport: CaptureTransport
) -> None:
    intake = make_intake(root_wait_s=0.01, link_wait_s=0.05)
    assert send(intake, "callee", span(CALLEE, CALL, REMOTE, name="price", governed=True))
    wait_until(lambda: len(intake.assembly) == 0, "the hold's thread to hand the callee over", 10)
    assert len(intake.assembly) == 0  # handed over by the hold's thread, not at close
    assert intake.engine.flush(10.0)
    (event,) = transport.wait_for(1)
    assert event["eventType"] == "COMPLETE"
    assert "parent" not in event["run"]["facets"]


def test_without_flags_a_presumed_root_whose_parent_arrives_is_a_child(
    make_intake: Any, transport: CaptureTransport
) -> None:
    intake = make_intake()
    assert send(intake, "svc", span(WORK, CALLER, 0, name="policy", governed=True))  # parent unseen
    assert send(intake, "svc", span(CALLER, name="plan"))
    intake.close()
    assert intake.engine.flush(10.0)
    (event,) = transport.wait_for(1)
    assert event["job"]["name"] == "svc.plan"
    assert event["run"]["runId"] == run_id_for_trace(TRACE.hex())


def test_lonely_roots_are_kept_within_the_bound_and_held_again_when_their_trace_is_noted(
    make_intake: Any, transport: CaptureTransport
) -> None:
    """Ungoverned roots of five traces, in a bound that keeps three: the two oldest are forgotten.
    A governed child arriving later for a kept root makes that root's run (its job, COMPLETE);
    one for a forgotten root makes an incomplete run of its own."""
    traces = [bytes([n]) * 16 for n in range(1, 6)]
    (note,) = notes_from_request(request("svc", span(CALLER, name="plan", trace=traces[0]))).notes
    intake = make_intake(root_wait_s=0.01, max_held_bytes=3 * held_bytes(note))
    for trace in traces:
        assert send(intake, "svc", span(CALLER, name="plan", trace=trace))
    assert len(intake.assembly) == 0  # lonely: none held
    for trace in (traces[0], traces[-1]):
        assert send(intake, "svc", span(WORK, CALLER, KNOWN, name="policy", governed=True, trace=trace))
    wait_until(lambda: len(intake.assembly) == 0, "the hold to hand the kept root over", 10)
    intake.close()
    intake.engine.shutdown(10.0)
    runs = {event["run"]["runId"]: event for event in transport.wait_for(2)}
    kept, forgotten = (runs[run_id_for_trace(trace.hex())] for trace in (traces[-1], traces[0]))
    assert (kept["eventType"], kept["job"]["name"]) == ("COMPLETE", "svc.plan")
    assert kept["run"]["facets"]["aigp_governance"]["complete"] is True
    assert forgotten["eventType"] == "RUNNING"
    assert forgotten["run"]["facets"]["aigp_governance"]["complete"] is False
