"""The OTLP adapter: OTLP/JSON rules, value shapes, local roots from flags or from the request."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.engine import Engine
from aigp_otel_bridge.frontdoors.otlp import (
    OtlpDecodeError,
    decode_json,
    notes_from_request,
    plain_value,
)

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
ROOT = bytes.fromhex("b7ad6b7169203331")
CHILD = bytes.fromhex("00f067aa0ba902b7")
HASH = "a" * 64


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def test_json_hex_ids_int64_strings_and_snake_case() -> None:
    camel = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": TRACE.hex(), "spanId": CHILD.hex(), "parentSpanId": ROOT.hex(), "name": "step",
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000001000000000, "kind": 1,
        "attributes": [{"key": "n", "value": {"intValue": "9007199254740993"}}],
        "unknownField": True,
    }]}]}]}
    snake = {"resource_spans": [{"scope_spans": [{"spans": [{
        "trace_id": TRACE.hex(), "span_id": CHILD.hex(), "parent_span_id": ROOT.hex(), "name": "step",
        "start_time_unix_nano": 1700000000000000000, "end_time_unix_nano": "1700000001000000000", "kind": 1,
        "attributes": [{"key": "n", "value": {"int_value": 9007199254740993}}],
    }]}]}]}
    first, second = (decode_json(json.dumps(doc).encode()) for doc in (camel, snake))
    assert first == second
    span = first.resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, CHILD, ROOT)
    assert span.attributes[0].value.int_value == 9007199254740993


def _one_span(fields: str) -> bytes:
    return b'{"resourceSpans": [{"scopeSpans": [{"spans": [{' + fields.encode() + b"}]}]}]}"


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"resourceSpans": {}}', _one_span('"traceId": "xyz"'),
                                  _one_span('"startTimeUnixNano": "soon"')])
def test_json_that_is_not_otlp_is_refused(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_json(body)


def test_values_take_the_sdk_shapes() -> None:
    array = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(string_value="b")]))
    assert plain_value(array) == ("a", "b")
    assert plain_value(AnyValue(int_value=4)) == 4
    assert plain_value(AnyValue(double_value=0.5)) == 0.5
    assert plain_value(AnyValue(bool_value=True)) is True
    assert plain_value(AnyValue()) is None
    kvlist = AnyValue(kvlist_value=KeyValueList(values=[kv("x", AnyValue(int_value=1))]))
    assert plain_value(kvlist) == {"x": 1}


def span(span_id: bytes, parent: bytes = b"", flags: int = 0, **extra: object) -> Span:
    return Span(trace_id=TRACE, span_id=span_id, parent_span_id=parent, flags=flags, name="s",
                start_time_unix_nano=1, end_time_unix_nano=2, **extra)  # type: ignore[arg-type]


def test_parent_remote_from_flags_else_from_the_request() -> None:
    def remote(child: Span, *others: Span) -> bool:
        notes = notes_from_request(request(child, *others)).notes
        return next(note for note in notes if note.span_id == int.from_bytes(CHILD, "big")).remote_parent

    governed = [kv("aigp.governance.hash", AnyValue(string_value=HASH))]  # so that a child makes a note
    assert remote(span(CHILD, ROOT, 0x300), span(ROOT))
    assert not remote(span(CHILD, bytes([9]) * 8, 0x101, attributes=governed))
    assert not remote(span(CHILD, ROOT, 0, attributes=governed), span(ROOT))
    assert remote(span(CHILD, ROOT, 0))


def request(*spans: Span) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


def test_notes_for_roots_and_governed_spans_only() -> None:
    governed = kv("aigp.governance.hash", AnyValue(string_value=HASH))
    policies = ArrayValue(values=[AnyValue(string_value="policy.a")])
    names = kv("aigp.policies.names", AnyValue(array_value=policies))
    converted = notes_from_request(request(
        span(ROOT, attributes=[kv("gen_ai.agent.name", AnyValue(string_value="trader"))]),
        span(CHILD, ROOT, 0x100, attributes=[kv("plain", AnyValue(int_value=1))]),
        span(bytes.fromhex("1111111111111111"), ROOT, 0x100, attributes=[governed, names]),
        span(bytes.fromhex("2222222222222222"), ROOT, 0x300),
        Span(trace_id=b"\x01", span_id=CHILD),
    ))
    assert (converted.spans, converted.rejected) == (5, 1)
    assert "trace_id" in converted.reason
    root, child, remote_root = converted.notes
    assert (root.local_root, root.remote_parent, dict(root.attributes or {})) == (
        True, False, {"gen_ai.agent.name": "trader"})
    assert (child.local_root, child.governed_attributes) == (False, True)
    expected = {"aigp.governance.hash": HASH, "aigp.policies.names": ("policy.a",)}
    assert dict(child.attributes or {}) == expected
    assert (remote_root.local_root, remote_root.remote_parent) == (True, True)


def test_offer_is_all_or_nothing_and_refused_once_stopped() -> None:
    engine = Engine(BridgeConfig(), emit=lambda event: None)
    notes = notes_from_request(request(span(ROOT))).notes
    assert engine.offer(notes)
    assert engine.shutdown(5.0)
    assert not engine.offer(notes)


# ---- a request's bytes tell when no child span can matter ----

_KEYS = ["http.method", "server.address", "aigp.agent.id", "aigp.org.id", "aigp.governance.hash",
         "gen_ai.tool.name", "gen_ai.request.model", "openinference.span.kind", "traceloop.span.kind",
         "logfire.msg_template", "tool.name"]
_VALUES = ["GET", "TOOL", "LLM", "tool", "aigp.governance.hash"]
_EVENTS = ["exception", "aigp.inject.success", "aigp.agent.started", "log"]


def test_every_name_a_child_is_noted_for_is_looked_for_in_the_bytes() -> None:
    from aigp_otel_bridge import semconv as sc
    from aigp_otel_bridge.frontdoors.otlp import _CHILD_NAME_PARTS, _GOVERNANCE_NAME

    for name in (*sc.MARKER_ROLES, *sc.KIND_KEYS):
        assert any(part in name.encode() for part in _CHILD_NAME_PARTS), name
    assert _GOVERNANCE_NAME.search(b"aigp.governance.hash") is not None
    assert all(_GOVERNANCE_NAME.search(prefix.encode() + b"id") is None for prefix in sc.IDENTITY_PREFIXES)


@given(st.lists(st.tuples(
    st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(_VALUES), max_size=3),
    st.lists(st.sampled_from(_EVENTS), max_size=2),
), min_size=1, max_size=6))
def test_children_judged_from_the_bytes_give_the_notes_reading_every_span_gives(
    children: list[tuple[dict[str, str], list[str]]],
) -> None:
    """Whatever names the children carry, skipping their attribute names when the request's bytes
    hold none that matters notes exactly the spans that reading every name notes."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

    from aigp_otel_bridge.frontdoors.otlp import children_unread

    spans = [span(ROOT, attributes=[kv("aigp.agent.id", AnyValue(string_value="agent.a"))])]
    for index, (attributes, events) in enumerate(children, start=1):
        spans.append(span(index.to_bytes(8, "big"), ROOT, 0x100, attributes=[
            kv(key, AnyValue(string_value=value)) for key, value in attributes.items()
        ], events=[OtlpSpan.Event(name=name, time_unix_nano=1) for name in events]))
    whole = request(*spans)
    unread = children_unread(whole.SerializeToString())
    assert notes_from_request(whole, children_unread=unread).notes == notes_from_request(whole).notes
    if not any(attributes or events for attributes, events in children):
        assert unread  # the root's identity alone is no governance
