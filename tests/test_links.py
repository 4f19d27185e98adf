"""Links between runs (bridge contract, section 8): the propagator, its header, the registry of
local roots, ``OPENLINEAGE_CONTEXT`` and the ``parent`` facet, end to end with the reference SDK."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import uuid
from importlib.metadata import entry_points
from typing import Any

import pytest
from aigp import AIGPInstrumentor
from hypothesis import given, settings
from hypothesis import strategies as st
from openlineage.client.serde import Serde
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aigp_otel_bridge import AIGPLineagePropagator
from aigp_otel_bridge.frontdoors.propagator import propagated_parent
from aigp_otel_bridge.propagated_links import (
    HEADER,
    MAX_NAME_LENGTH,
    OPENLINEAGE_CONTEXT,
    RUN_LINKS,
    RunIdentity,
    RunLinks,
    RunParent,
    decode_header,
    encode_header,
    parent_run_facet,
    parse_openlineage_context,
    run_id_for_remote_root,
    run_id_for_trace,
)
from tests.conftest import CaptureTransport
from tests.factories import instrumented_environ
from tests.schemas import _validator, validate_run_event

CALLER = RunIdentity(str(uuid.uuid4()), "finco.trading", "trading-bot.plan")
TOP = RunIdentity(str(uuid.uuid4()), "scheduler", "nightly.dag")
W3C_AND_LINEAGE = CompositePropagator([TraceContextTextMapPropagator(), AIGPLineagePropagator()])


def rejected() -> int:
    return RUN_LINKS.stats.lineage_context_rejected


@pytest.fixture(autouse=True)
def propagation_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process with an ``AIGPLineagePropagator`` (this module makes one at import)."""
    monkeypatch.setattr(RUN_LINKS, "active", True)


# ---- the parent facet ----


@pytest.mark.parametrize("root", [TOP, CALLER], ids=["chain", "caller-is-root"])
def test_parent_facet_is_the_official_parent_run_facet_with_root(root: RunIdentity) -> None:
    facet = Serde.to_dict(parent_run_facet(RunParent(CALLER, root), "https://example.com/p"))
    _validator(facet["_schemaURL"]).validate(facet)
    assert facet["_schemaURL"].endswith("/ParentRunFacet.json#/$defs/ParentRunFacet")
    assert facet["run"]["runId"] == CALLER.run_id
    assert (facet["job"]["namespace"], facet["job"]["name"]) == ("finco.trading", "trading-bot.plan")
    assert facet["root"]["run"]["runId"] == root.run_id
    assert (facet["root"]["job"]["namespace"], facet["root"]["job"]["name"]) == (root.namespace, root.name)


# ---- the header ----

names = st.text(min_size=1, max_size=60).filter(lambda t: t.encode("utf-8", "ignore").decode() == t)
identities = st.builds(RunIdentity, st.uuids().map(str), names, names)


@settings(deadline=None)  # accounting, never timing
@given(identities, identities | st.none())
def test_header_round_trips_and_is_url_safe(parent: RunIdentity, root: RunIdentity | None) -> None:
    link = RunParent(parent, root or parent)
    value = encode_header(link)
    assert decode_header(value) == link
    assert value.startswith("1.")
    assert all(c.isascii() and (c.isalnum() or c in "._~-%") for c in value)


@settings(deadline=None)  # accounting, never timing
@given(st.text(max_size=300) | st.binary(max_size=100) | st.integers() | st.none())
def test_header_decoder_never_raises(value: Any) -> None:
    result = decode_header(value)
    assert result is None or isinstance(result, RunParent)


@settings(deadline=None)  # accounting, never timing
@given(identities, st.integers(0, 200), st.characters())
def test_a_damaged_header_is_rejected_or_still_well_formed(identity: RunIdentity, at: int, c: str) -> None:
    value = encode_header(RunParent(identity, identity))
    damaged = value[:at] + c + value[at + 1 :]
    result = decode_header(damaged)
    if result is not None:  # a lenient decoder, but only ever a well-formed identity
        assert decode_header(encode_header(result)) == result
        for part in (result.parent, result.root):
            assert str(uuid.UUID(part.run_id)) == part.run_id
            assert all(0 < len(text) <= MAX_NAME_LENGTH for text in (part.namespace, part.name))


HEX = "0" * 28 + "abcd"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2." + HEX + ".ns.job",  # an unknown version
        "1." + HEX + ".ns",  # too few fields
        "1." + HEX + ".ns.job." + HEX + ".ns",  # a root cut short
        "1." + HEX.upper() + ".ns.job",  # run ids are lowercase hex
        "1." + HEX[:-1] + ".ns.job",
        "1." + HEX + "..job",  # an empty namespace
        "1." + HEX + ".ns.a%2",  # a broken escape
        "1." + HEX + ".ns.%FF%FE",  # not UTF-8
        "1." + HEX + ".ns.a b",  # an unescaped character
        "1." + HEX + ".ns." + "a" * (MAX_NAME_LENGTH + 1),
        "1." + HEX + ".ns." + "j" * 9000,
    ],
)
def test_malformed_headers_are_rejected(value: str) -> None:
    assert decode_header(value) is None


def test_names_are_percent_encoded_and_dots_escaped() -> None:
    link = RunParent(RunIdentity(str(uuid.UUID(int=1)), "ns with space", "bot.plan/é"), TOP)
    value = encode_header(link)
    assert value.split(".")[2:4] == ["ns%20with%20space", "bot%2Eplan%2F%C3%A9"]
    assert len(value.split(".")) == 7
    assert decode_header(value) == link


# ---- OPENLINEAGE_CONTEXT ----


def context_json(parent: RunIdentity, root: RunIdentity | None = None) -> str:
    def part(identity: RunIdentity) -> dict[str, Any]:
        return {
            "run": {"runId": identity.run_id},
            "job": {"namespace": identity.namespace, "name": identity.name},
        }

    document = part(parent)
    if root is not None:
        document["root"] = part(root)
    return json.dumps({"parent": document})


def test_openlineage_context_with_and_without_root() -> None:
    assert parse_openlineage_context(context_json(CALLER, TOP)) == RunParent(CALLER, TOP)
    assert parse_openlineage_context(context_json(CALLER)) == RunParent(CALLER, CALLER)
    upper = context_json(RunIdentity(CALLER.run_id.upper(), "a", "b"))
    assert parse_openlineage_context(upper) == RunParent(
        RunIdentity(CALLER.run_id, "a", "b"), RunIdentity(CALLER.run_id, "a", "b")
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"parent": null}',
        '{"parent": {"run": {"runId": "not-a-uuid"}, "job": {"namespace": "a", "name": "b"}}}',
        '{"parent": {"run": RUN, "job": {"namespace": "", "name": "b"}}}',
        '{"parent": {"run": RUN, "job": {"namespace": "a", "name": 3}}}',
        '{"parent": {"run": RUN, "job": {"namespace": "a"}}}',
        '{"parent": {"run": RUN, "job": {"namespace": "a", "name": "b"}, "root": 1}}',
        '{"parent": {"run": RUN, "job": {"namespace": "a", "name": "b"}, "root": {"run": {}}}}',
        context_json(RunIdentity(CALLER.run_id, "a", "b" * (MAX_NAME_LENGTH + 1))),
    ],
)
def test_malformed_openlineage_context_is_rejected(text: str) -> None:
    text = text.replace("RUN", json.dumps({"runId": CALLER.run_id}))
    assert parse_openlineage_context(text) is None


@settings(deadline=None)  # accounting, never timing
@given(st.text(max_size=200) | st.recursive(st.none() | st.text() | st.integers(), st.lists).map(json.dumps))
def test_openlineage_context_parser_never_raises(text: str) -> None:
    result = parse_openlineage_context(text)
    assert result is None or isinstance(result, RunParent)


# ---- the registry ----


def _ids(span: Any) -> tuple[int, int]:
    context = span.get_span_context()
    return context.trace_id, context.span_id


def _called_root(tracer: Any, trace_id: int, name: str) -> Any:
    """A local root whose parent is remote: a span started from an extracted context."""
    caller = SpanContext(trace_id, 0xCA11E5, is_remote=True, trace_flags=TraceFlags(1))
    return tracer.start_span(name, context=trace.set_span_in_context(NonRecordingSpan(caller)))


def _named(span: Any, agent: str | None = None) -> tuple[str, str]:
    return "ns", f"svc.{span.name}"


def test_registry_propagates_the_local_root_of_the_current_span() -> None:
    links = RunLinks()
    root = TracerProvider().get_tracer("t").start_span("root")
    trace_id, span_id = _ids(root)
    links.root_started(trace_id, span_id, None, root, _named)
    run_id = run_id_for_trace(f"{trace_id:032x}")  # a top-level root: the trace's run
    expected = RunParent(RunIdentity(run_id, "ns", "svc.root"), RunIdentity(run_id, "ns", "svc.root"))
    assert links.propagated(trace_id, span_id) == expected  # the root itself
    assert links.propagated(trace_id, 99) == expected  # a span under it
    assert links.propagated(trace_id + 1, span_id) is None  # another trace
    root.update_name("renamed")  # the job was fixed the first time it was needed
    assert links.propagated(trace_id, 99) == expected
    assert links.run_link(trace_id, span_id, False, ("other", "other.job")) == (("ns", "svc.root"), None)
    root.end()
    links.root_ended(trace_id, span_id)
    assert links.propagated(trace_id, 99) is None  # nothing open any more
    assert links.run_link(trace_id, span_id, False, ("other", "other.job")) == (("ns", "svc.root"), None)


def test_registry_prefers_the_innermost_open_root_of_a_trace_that_re_entered() -> None:
    links = RunLinks()
    tracer = TracerProvider().get_tracer("t")
    outer = tracer.start_span("outer")
    trace_id, outer_id = _ids(outer)
    inner = _called_root(tracer, trace_id, "inner")
    _, inner_id = _ids(inner)
    links.root_started(trace_id, outer_id, None, outer, _named)
    links.root_started(trace_id, inner_id, RunParent(CALLER, TOP), inner, _named)
    callee_run = run_id_for_remote_root(f"{trace_id:032x}", f"{inner_id:016x}")  # its own run
    outer_run = run_id_for_trace(f"{trace_id:032x}")
    assert links.propagated(trace_id, 50) == RunParent(RunIdentity(callee_run, "ns", "svc.inner"), TOP)
    assert links.propagated(trace_id, outer_id).parent.run_id == outer_run  # type: ignore[union-attr]
    inner.end()
    links.root_ended(trace_id, inner_id)
    assert links.propagated(trace_id, 50).parent.run_id == outer_run  # type: ignore[union-attr]
    named = links.run_link(trace_id, inner_id, True, ("ns", "from-spans"))
    assert named == (("ns", "svc.inner"), RunParent(CALLER, TOP))


def test_registry_fixes_nothing_for_a_run_nobody_asked_about_while_it_ran() -> None:
    links = RunLinks()
    tracer = TracerProvider().get_tracer("t")
    root = tracer.start_span("root")
    trace_id, _ = _ids(root)
    called = _called_root(tracer, trace_id, "called")
    _, span_id = _ids(called)
    links.root_started(trace_id, span_id, RunParent(CALLER, TOP), called, _named)
    called.end()
    links.root_ended(trace_id, span_id)
    link = RunParent(CALLER, TOP)
    assert links.run_link(trace_id, span_id, True, ("ns", "from-spans")) == (("ns", "from-spans"), link)
    assert links.run_link("not-otel", 1, True, ("a", "b")) == (("a", "b"), None)


def test_top_level_runs_take_openlineage_context_when_they_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    links = RunLinks()
    monkeypatch.setenv(OPENLINEAGE_CONTEXT, context_json(CALLER, TOP))
    assert links.run_link(7, 1, False, ("a", "b")) == (("a", "b"), RunParent(CALLER, TOP))
    assert links.run_link("trace-text", 0, False, ("a", "b")) == (("a", "b"), RunParent(CALLER, TOP))
    assert links.run_link(7, 1, True, ("a", "b")) == (("a", "b"), None)  # called from elsewhere
    span = TracerProvider().get_tracer("t").start_span("plan")
    trace_id, span_id = _ids(span)
    links.root_started(trace_id, span_id, None, span, _named)
    top = RunIdentity(run_id_for_trace(f"{trace_id:032x}"), "ns", "svc.plan")
    assert links.propagated(trace_id, 1) == RunParent(top, TOP)  # its callees keep the scheduler's root


def test_registry_is_bounded_and_forgets_roots_dropped_without_ending() -> None:
    links = RunLinks(max_roots=3)
    tracer = TracerProvider().get_tracer("t")
    kept = [tracer.start_span(f"r{i}") for i in range(5)]
    for span in kept:
        links.root_started(*_ids(span), None, span, _named)
    traces = [_ids(span)[0] for span in kept]
    assert [links.propagated(t, 1) is not None for t in traces] == [False, False, True, True, True]
    del span, kept  # never ended, dropped by the application
    gc.collect()
    new = tracer.start_span("new")
    links.root_started(*_ids(new), None, new, _named)
    assert all(links.propagated(t, 1) is None for t in traces)
    assert list(links._open) == [_ids(new)[0]]  # the dropped roots are gone, not only hidden


# ---- the propagator's bad input ----


def test_malformed_header_is_ignored_counted_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    before = rejected()
    RUN_LINKS.log._last.clear()
    base = otel_context.set_value("k", "v")
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge"):
        context = AIGPLineagePropagator().extract({HEADER: "1.zz.ns.job"}, base)
    assert context is base
    assert propagated_parent(context) is None
    assert rejected() == before + 1
    assert "malformed aigp-lineage header" in caplog.text


def test_the_propagator_never_raises_into_the_application() -> None:
    class Exploding:
        def get(self, carrier: Any, key: str) -> Any:
            raise RuntimeError("broken getter")

        def keys(self, carrier: Any) -> list[str]:
            raise RuntimeError("broken getter")

    class Refusing:
        def set(self, carrier: Any, key: str, value: str) -> None:
            raise RuntimeError("broken setter")

    propagator = AIGPLineagePropagator()
    assert propagator.extract({}, None, Exploding()) is not None  # type: ignore[arg-type]
    tracer = TracerProvider().get_tracer("t")
    span = tracer.start_span("r")
    RUN_LINKS.root_started(
        span.get_span_context().trace_id,
        span.get_span_context().span_id,
        None,
        span,
        lambda s, agent: (_ for _ in ()).throw(RuntimeError("namer")),
    )
    with trace.use_span(span):
        propagator.inject({}, setter=Refusing())  # type: ignore[arg-type]
        carrier: dict[str, str] = {}
        propagator.inject(carrier)  # a namer that raises: a default name, never an exception
    assert decode_header(carrier[HEADER]) is not None
    carrier = {}
    propagator.inject(carrier)  # no current span: nothing to say
    assert carrier == {}
    assert propagator.fields == {HEADER}


# ---- end to end: caller and callee, W3C trace context + the bridge's propagator ----


def _bridge(make_bridge: Any, aigp: AIGPInstrumentor, service: str) -> tuple[Any, Any]:
    provider, processor = make_bridge(resource={**aigp.get_resource_attributes(), "service.name": service})
    aigp.event_callback = processor.ingest_aigp_event
    return provider.get_tracer(service), processor


def _call_chain(make_bridge: Any) -> tuple[dict[str, str], dict[str, str], str]:
    """Caller -> callee -> second callee, each a bridge of its own, one trace; returns the two
    carriers and the denial reason the callee recorded."""
    caller_sdk = AIGPInstrumentor(agent_id="agent.planner")
    callee_sdk = AIGPInstrumentor(agent_id="agent.pricer")
    caller_tracer, _ = _bridge(make_bridge, caller_sdk, "planner")
    callee_tracer, _ = _bridge(make_bridge, callee_sdk, "pricer")
    last_tracer, _ = _bridge(make_bridge, AIGPInstrumentor(agent_id="agent.ledger"), "ledger")
    reason = "wire transfers need human approval"
    outbound: dict[str, str] = {}
    onward: dict[str, str] = {}
    with caller_tracer.start_as_current_span("plan"):
        caller_sdk.inject_success("policy.trading-limits", 4, "Max position: $10M per instrument.")
        with caller_tracer.start_as_current_span("call pricer", kind=trace.SpanKind.CLIENT):
            W3C_AND_LINEAGE.inject(outbound)
        incoming = W3C_AND_LINEAGE.extract(outbound)  # the callee's side of the call
        with callee_tracer.start_as_current_span("price", context=incoming, kind=trace.SpanKind.SERVER):
            callee_sdk.prompt_used("prompt.pricer", 2, "Price it.")
            callee_sdk.inject_denied("policy.wire", reason)
            W3C_AND_LINEAGE.inject(onward)
            with last_tracer.start_as_current_span("book", context=W3C_AND_LINEAGE.extract(onward)) as book:
                book.add_event("aigp.tool.invoked", {"aigp.governance.hash": "a" * 64})
    return outbound, onward, reason


def _by_job(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["job"]["name"]: event for event in events}


def test_callee_run_points_to_the_caller_run_and_the_chain_root(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    outbound, onward, reason = _call_chain(make_bridge)
    events = _by_job(transport.wait_for(3))
    caller, callee, last = events["planner.plan"], events["pricer.price"], events["ledger.book"]
    assert "parent" not in caller["run"]["facets"]  # top-level, no OPENLINEAGE_CONTEXT
    trace_hex = caller["run"]["facets"]["aigp_governance"]["traceId"]
    assert caller["run"]["runId"] == run_id_for_trace(trace_hex)
    parent = callee["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == caller["run"]["runId"]
    assert parent["job"] == {"namespace": "test.ns", "name": "planner.plan", "facets": {}}
    assert parent["root"]["run"]["runId"] == caller["run"]["runId"]
    assert parent["root"]["job"]["name"] == "planner.plan"
    callee_root_hex = onward["traceparent"].split("-")[2]  # injected directly under the callee's root
    assert callee["run"]["runId"] == run_id_for_remote_root(trace_hex, callee_root_hex)
    assert outbound["traceparent"].split("-")[1] == trace_hex  # one trace across the call
    # the second hop: its parent is the callee, its root still the caller
    last_parent = last["run"]["facets"]["parent"]
    assert last_parent["run"]["runId"] == callee["run"]["runId"]
    assert last_parent["job"]["name"] == "pricer.price"
    assert last_parent["root"]["run"]["runId"] == caller["run"]["runId"]
    # headers never carry governance content
    for carrier in (outbound, onward):
        assert set(carrier) == {"traceparent", HEADER}
        hashes = [e["run"]["facets"]["aigp_governance"]["governanceHash"] for e in transport.events]
        for secret in (reason, "policy.trading-limits", "policy.wire", "prompt.pricer", "a" * 64, *hashes):
            assert secret not in carrier[HEADER]


def test_openlineage_context_makes_top_level_runs_children_and_keeps_its_root(
    make_bridge: Any, transport: CaptureTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPENLINEAGE_CONTEXT, context_json(CALLER, TOP))
    _call_chain(make_bridge)
    events = _by_job(transport.wait_for(3))
    caller_parent = events["planner.plan"]["run"]["facets"]["parent"]
    assert caller_parent["run"]["runId"] == CALLER.run_id
    assert caller_parent["job"]["name"] == CALLER.name
    assert caller_parent["root"]["run"]["runId"] == TOP.run_id
    assert caller_parent["root"]["job"] == {"namespace": "scheduler", "name": "nightly.dag", "facets": {}}
    for callee in ("pricer.price", "ledger.book"):
        assert events[callee]["run"]["facets"]["parent"]["root"]["run"]["runId"] == TOP.run_id
    assert (
        events["pricer.price"]["run"]["facets"]["parent"]["run"]["runId"]
        == events["planner.plan"]["run"]["runId"]
    )


def test_openlineage_context_without_root_makes_the_parent_the_root(
    make_bridge: Any, transport: CaptureTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPENLINEAGE_CONTEXT, context_json(CALLER))
    _call_chain(make_bridge)
    events = _by_job(transport.wait_for(3))
    for name in events:
        assert events[name]["run"]["facets"]["parent"]["root"]["run"]["runId"] == CALLER.run_id


def test_malformed_openlineage_context_is_ignored_counted_and_warned(
    make_bridge: Any,
    transport: CaptureTransport,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(OPENLINEAGE_CONTEXT, '{"parent": {"run": {"runId": "nope"}}}')
    before = rejected()
    RUN_LINKS.log._last.clear()
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge"):
        _call_chain(make_bridge)
        events = _by_job(transport.wait_for(3))
    assert "parent" not in events["planner.plan"]["run"]["facets"]
    assert (
        events["pricer.price"]["run"]["facets"]["parent"]["root"]["run"]["runId"]
        == events["planner.plan"]["run"]["runId"]
    )
    assert rejected() == before + 1  # parsed once per value, however many runs start
    _, processor = make_bridge()
    assert processor.stats()["lineage_context_rejected"] == rejected()  # also in every bridge's stats
    assert "malformed OPENLINEAGE_CONTEXT" in caplog.text


def test_the_propagated_job_name_is_the_job_name_emitted(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    """The caller's root changes after propagating; its run still emits the name it propagated."""
    sdk = AIGPInstrumentor(agent_id="agent.planner")
    tracer, _ = _bridge(make_bridge, sdk, "planner")
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span("plan") as root:
        W3C_AND_LINEAGE.inject(carrier)
        root.update_name("renamed-later")
        sdk.inject_success("policy.trading-limits", 4, "limits")
    (event,) = transport.wait_for(1)
    propagated = decode_header(carrier[HEADER])
    assert propagated is not None
    assert event["job"]["name"] == propagated.parent.name == "planner.plan"
    assert event["run"]["runId"] == propagated.parent.run_id


# ---- zero-code: the entry point ----


def test_entry_point_registers_the_propagator() -> None:
    (point,) = entry_points(group="opentelemetry_propagator", name="aigp_lineage")
    assert point.load() is AIGPLineagePropagator


def test_otel_propagators_names_it() -> None:
    code = "from opentelemetry import propagate; print(sorted(propagate.get_global_textmap().fields))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"OTEL_PROPAGATORS": "tracecontext,baggage,aigp_lineage", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    fields = json.loads(result.stdout.replace("'", '"'))
    assert fields == sorted(["traceparent", "tracestate", "baggage", HEADER])


AGENT_SCRIPT = """
import json
from opentelemetry import propagate, trace

tracer = trace.get_tracer("agent")
carrier = {}
with tracer.start_as_current_span("plan") as plan:
    plan.add_event("aigp.tool.invoked", {"aigp.governance.hash": "b" * 64})
    with tracer.start_as_current_span("call"):
        propagate.inject(carrier)
    with tracer.start_as_current_span("price", context=propagate.extract(carrier)) as price:
        price.add_event("aigp.tool.invoked", {"aigp.governance.hash": "c" * 64})
print(json.dumps(carrier))
"""


def test_zero_code_propagation_under_opentelemetry_instrument(tmp_path: Any) -> None:
    """The exporter alone (no processor in code) still lets calls carry the caller's run."""
    events_file = tmp_path / "events.jsonl"
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    environ = instrumented_environ(
        tmp_path,
        OTEL_TRACES_EXPORTER="aigp_openlineage",
        OTEL_PROPAGATORS="tracecontext,baggage,aigp_lineage",
        OTEL_SERVICE_NAME="planner",
        OPENLINEAGE_CONTEXT=context_json(CALLER, TOP),
        OPENLINEAGE__TRANSPORT__TYPE="file",
        OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=str(events_file),
        OPENLINEAGE__TRANSPORT__APPEND="true",
    )
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    result = subprocess.run(
        [instrument, sys.executable, str(script)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    carrier = json.loads(result.stdout)
    assert set(carrier) == {"traceparent", HEADER}
    events = {e["job"]["name"]: e for e in map(json.loads, events_file.read_text().splitlines())}
    for event in events.values():
        validate_run_event(event)
    plan, price = events["planner.plan"], events["planner.price"]
    assert plan["run"]["facets"]["parent"]["run"]["runId"] == CALLER.run_id
    assert price["run"]["facets"]["parent"]["run"]["runId"] == plan["run"]["runId"]
    assert price["run"]["facets"]["parent"]["job"]["name"] == "planner.plan"
    assert price["run"]["facets"]["parent"]["root"]["run"]["runId"] == TOP.run_id


# ---- two processes, one HTTP call ----

_PROCESS_SETUP = """
import json, sys
from openlineage.client import OpenLineageClient
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from aigp import AIGPInstrumentor
from aigp_otel_bridge import AIGPLineagePropagator, AIGPLineageSpanProcessor

service, events_file = sys.argv[1], sys.argv[2]
propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), AIGPLineagePropagator()]))
transport = {"type": "file", "log_file_path": events_file, "append": True}
client = OpenLineageClient(config={"transport": transport})
processor = AIGPLineageSpanProcessor(client=client, job_namespace="agents")
provider = TracerProvider(resource=Resource.create({"service.name": service}))
provider.add_span_processor(processor)
tracer = provider.get_tracer(service)
aigp = AIGPInstrumentor(agent_id="agent." + service, event_callback=processor.ingest_aigp_event)
"""

CALLEE = (
    _PROCESS_SETUP
    + """
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        context = propagate.extract({k.lower(): v for k, v in self.headers.items()})
        with tracer.start_as_current_span("price", context=context, kind=trace.SpanKind.SERVER):
            aigp.inject_denied("policy.wire", "wire transfers need human approval")
        self.send_response(200)
        self.end_headers()

server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.handle_request()
provider.shutdown()
"""
)

CALLER_SCRIPT = (
    _PROCESS_SETUP
    + """
import urllib.request

with tracer.start_as_current_span("plan"):
    aigp.inject_success("policy.trading-limits", 4, "Max position: $10M per instrument.")
    with tracer.start_as_current_span("call pricer", kind=trace.SpanKind.CLIENT):
        headers = {}
        propagate.inject(headers)
        request = urllib.request.Request("http://127.0.0.1:" + sys.argv[3], data=b"{}", headers=headers)
        urllib.request.urlopen(request, timeout=30).read()
print(json.dumps(headers))
provider.shutdown()
"""
)


def test_two_agent_processes_joined_by_http(tmp_path: Any) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENLINEAGE"))}
    environ["HOME"] = str(tmp_path)
    caller_file, callee_file = tmp_path / "caller.jsonl", tmp_path / "callee.jsonl"
    with subprocess.Popen(
        [sys.executable, "-c", CALLEE, "pricer", str(callee_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        cwd=tmp_path,
    ) as callee:
        assert callee.stdout is not None
        port = callee.stdout.readline().strip()
        assert port.isdigit(), callee.stderr.read() if callee.stderr else ""
        caller = subprocess.run(
            [sys.executable, "-c", CALLER_SCRIPT, "planner", str(caller_file), port],
            capture_output=True,
            text=True,
            timeout=120,
            env=environ,
            cwd=tmp_path,
            check=False,
        )
        assert caller.returncode == 0, caller.stderr
        assert callee.wait(timeout=60) == 0
    headers = json.loads(caller.stdout)
    (plan,) = [json.loads(line) for line in caller_file.read_text().splitlines()]
    (price,) = [json.loads(line) for line in callee_file.read_text().splitlines()]
    for event in (plan, price):
        validate_run_event(event)
    assert "parent" not in plan["run"]["facets"]
    parent = price["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == plan["run"]["runId"]
    assert (parent["job"]["namespace"], parent["job"]["name"]) == ("agents", plan["job"]["name"])
    assert parent["root"]["run"]["runId"] == plan["run"]["runId"]
    assert price["run"]["runId"] != plan["run"]["runId"]
    assert price["run"]["facets"]["aigp_governance"]["enforcementResult"] == "denied"
    assert "wire" not in headers[HEADER] and "approval" not in headers[HEADER]


def test_without_a_propagator_open_roots_are_not_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RUN_LINKS, "active", False)
    from aigp_otel_bridge.config import BridgeConfig
    from aigp_otel_bridge.frontdoors.propagator import LocalRootRecorder

    recorder = LocalRootRecorder(BridgeConfig())
    root = TracerProvider().get_tracer("t").start_span("root")
    recorder.on_start(root)
    assert RUN_LINKS.propagated(*_ids(root)) is None
    AIGPLineagePropagator()  # a propagator exists from now on
    recorder.on_start(root)
    assert RUN_LINKS.propagated(*_ids(root)) is not None
    root.end()
    recorder.on_end(root)
    assert RUN_LINKS.propagated(*_ids(root)) is None


def test_an_open_root_emitted_early_keeps_its_job_name_when_it_completes(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    sdk = AIGPInstrumentor(agent_id="agent.planner")
    provider, _ = make_bridge(
        resource={**sdk.get_resource_attributes(), "service.name": "planner"}, trace_timeout_s=0.2
    )
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("plan"):
        with tracer.start_as_current_span("step"):
            sdk.inject_success("policy.trading-limits", 4, "limits")
        (running,) = transport.wait_for(1)
        sdk.prompt_used("prompt.analyst", 3, "prompt")
    running, completed = transport.wait_for(2)
    assert (running["eventType"], completed["eventType"]) == ("RUNNING", "COMPLETE")
    assert running["run"]["runId"] == completed["run"]["runId"]
    assert running["job"] == completed["job"]
    assert running["job"]["name"] == "planner.plan"  # the open root named it, once



# ---- one agent, one job (contract section 9) ----


def _serve_plan(make_bridge: Any, *, call_pricer: bool) -> dict[str, str]:
    """An agent served under a web framework's span: ``POST /plan`` (the local root), under it the
    planner agent's span (named as it starts, as GenAI instrumentations do), governance, and
    perhaps a call to another agent. Returns the call's headers (empty when it made none)."""
    sdk = AIGPInstrumentor(agent_id="agent.planner")
    tracer, _ = _bridge(make_bridge, sdk, "planner")
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span("POST /plan", kind=trace.SpanKind.SERVER):
        agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
        with tracer.start_as_current_span("invoke_agent planner", attributes=agent):
            sdk.inject_success("policy.trading-limits", 4, "Max position: $10M per instrument.")
            if call_pricer:
                with tracer.start_as_current_span("call pricer", kind=trace.SpanKind.CLIENT):
                    W3C_AND_LINEAGE.inject(carrier)
    return carrier


def test_an_agent_under_a_server_span_keeps_one_job_whether_or_not_it_called_another_agent(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    carrier = _serve_plan(make_bridge, call_pricer=True)
    (called,) = transport.wait_for(1)
    _serve_plan(make_bridge, call_pricer=False)
    _, alone = transport.wait_for(2)
    assert called["job"] == alone["job"]
    assert called["job"]["name"] == "planner.planner"  # the agent, not the server span
    propagated = decode_header(carrier[HEADER])
    assert propagated is not None
    assert (propagated.parent.name, propagated.parent.run_id) == ("planner.planner", called["run"]["runId"])


def test_an_agent_named_only_when_its_span_ends_propagates_the_root_s_job_and_keeps_it(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    """An instrumentation that names the agent at the end of its span (OpenInference's): a call made
    under it cannot know the agent yet, so the run keeps the job it propagated (one job per run)."""
    sdk = AIGPInstrumentor(agent_id="agent.planner")
    tracer, _ = _bridge(make_bridge, sdk, "planner")
    carrier: dict[str, str] = {}
    unnamed = {"openinference.span.kind": "AGENT"}
    with (
        tracer.start_as_current_span("POST /plan", kind=trace.SpanKind.SERVER),
        tracer.start_as_current_span("planner", attributes=unnamed) as agent,
    ):
        sdk.inject_success("policy.trading-limits", 4, "Max position: $10M per instrument.")
        W3C_AND_LINEAGE.inject(carrier)
        agent.set_attribute("agent.name", "planner")
    (event,) = transport.wait_for(1)
    propagated = decode_header(carrier[HEADER])
    assert propagated is not None
    assert event["job"]["name"] == propagated.parent.name == "planner.POST /plan"

