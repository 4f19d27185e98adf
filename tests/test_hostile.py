"""Bad input (bridge contract, section 7).

Whatever arbitrary code puts on spans or hands to the bridge, nothing raises into the application,
every emitted event is schema-valid, and bad values are left out and counted.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigp_otel_bridge.merkle import EMPTY_SHA256, is_sha256_hex, merkle_root
from aigp_otel_bridge.openlineage import (
    build_governance_run_facet,
    build_openlineage_run_event,
    build_resource_input_facets,
)
from aigp_otel_bridge.semconv import SPAN_EVENT_TYPES
from aigp_otel_bridge.stages.extract import Extractor, Limits, record_from_attributes
from tests.conftest import CaptureTransport
from tests.schemas import validate_run_event

HYPOTHESIS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_TEXT = Limits().max_string_length
SURROGATE = "\ud800"
RANK = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
DENIAL_MARKERS = ("DENIED", "VIOLATION", "BLOCKED")
EVENT_TYPE = re.compile(r"[A-Z][A-Z0-9_]*")
NAME_KEYS = ("aigp.policy.name", "aigp.prompt.name")
ARRAY_KEYS = (
    "aigp.policies.names",
    "aigp.prompts.names",
    "aigp.tools.names",
    "aigp.contexts.names",
    "aigp.lineages.names",
    "aigp.memories.names",
    "aigp.models.names",
)
KEYS = (
    "aigp.event.type",
    "aigp.event.category",
    "aigp.governance.hash",
    "aigp.governance.hash_type",
    "aigp.governance.merkle.leaf_count",
    "aigp.data.classification",
    "aigp.enforcement.result",
    "aigp.policy.name",
    "aigp.policy.version",
    "aigp.prompt.name",
    "aigp.prompt.version",
    "aigp.policies.versions",
    "aigp.prompts.versions",
    "aigp.severity",
    "aigp.denial.reason",
    "aigp.sequence.number",
    "aigp.agent.id",
    "aigp.org.id",
    *ARRAY_KEYS,
)


# ---- strategies ----

valid_hashes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
special_texts = st.sampled_from(
    [
        "",
        "public",
        "internal",
        "confidential",
        "restricted",
        "top-secret",
        "PUBLIC",
        "allowed",
        "denied",
        "maybe",
        "sha256",
        "merkle-sha256",
        "md5",
        "policy.trading-limits",
        "INJECT_SUCCESS",
        "INJECT_DENIED",
        "lower_case_type",
        "A" * 64,
        "0" * 63,
        "g" * 64,
        "\x00",
        "\u202e",
    ]
)
texts = st.one_of(
    st.text(max_size=16),
    special_texts,
    valid_hashes,
    st.builds(lambda a, b: a + SURROGATE + b, st.text(max_size=4), st.text(max_size=4)),
    st.integers(MAX_TEXT + 1, 200_000).map(lambda n: "x" * n),
)
scalars = st.one_of(
    texts,
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-3, 5),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
)
otel_values = st.one_of(
    scalars,
    st.lists(texts, max_size=6),
    st.lists(st.integers(-5, 2**63 - 1), max_size=6),
    st.lists(st.booleans(), max_size=3),
    st.lists(st.floats(), max_size=3),
    st.integers(1001, 3000).map(lambda n: [f"tool.t{i}" for i in range(n)]),
)
otel_keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10).map(lambda s: "aigp." + s))
otel_attributes = st.dictionaries(otel_keys, otel_values, max_size=8)
event_names = st.one_of(
    st.sampled_from(sorted(SPAN_EVENT_TYPES)),
    st.text(max_size=12)
    .map(lambda s: "aigp." + s)
    .filter(lambda n: not any(m.lower() in n.lower() for m in ("denied", "violation", "blocked"))),
)
span_events = st.lists(
    st.tuples(
        event_names, otel_attributes.map(lambda a: {k: v for k, v in a.items() if k != "aigp.event.id"})
    ),
    min_size=1,
    max_size=5,
)

json_values = st.recursive(
    st.one_of(st.none(), scalars, valid_hashes),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
merkle_trees = st.fixed_dictionaries(
    {},
    optional={
        "algorithm": json_values,
        "leaf_count": json_values,
        "leaves": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "resource_type": st.one_of(
                            st.sampled_from(["policy", "tool", "Bad Type", ""]), json_values
                        ),
                        "resource_name": st.one_of(texts, json_values),
                        "hash": st.one_of(valid_hashes, texts, json_values),
                    },
                ),
                max_size=4,
            ),
        ),
    },
)
event_times = st.one_of(
    st.sampled_from(
        [
            "2026-01-01T00:00:00.000Z",
            "2026-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-14:00",
            "not a time",
            "",
        ]
    ),
    json_values,
)
AIGP_FIELDS = {
    "event_id": st.one_of(st.uuids().map(str), texts, json_values),
    "event_type": st.one_of(special_texts, texts, json_values),
    "event_time": event_times,
    "agent_id": st.one_of(st.just("agent.trading-bot-v2"), texts, json_values),
    "governance_hash": st.one_of(valid_hashes, texts, json_values),
    "hash_type": st.one_of(special_texts, json_values),
    "data_classification": st.one_of(special_texts, json_values),
    "enforcement_result": st.one_of(special_texts, json_values),
    "policy_name": st.one_of(texts, json_values),
    "policy_version": st.one_of(st.integers(-3, 10), json_values),
    "prompt_name": st.one_of(texts, json_values),
    "prompt_version": st.one_of(st.integers(-3, 10), json_values),
    "governance_merkle_tree": st.one_of(merkle_trees, json_values),
    "annotations": st.one_of(
        st.fixed_dictionaries({"otel_attributes": st.one_of(otel_attributes, json_values)}), json_values
    ),
}
aigp_events = st.fixed_dictionaries({}, optional=AIGP_FIELDS)
TRACE_IDS = ["4bf92f3577b34da6a3ce929d0e0e4736", "trace-0af7651916cd43dd8448eb211c80319c", "", None, 7, ["x"]]
builder_events = st.builds(
    lambda event, trace_id: event if trace_id == "absent" else {**event, "trace_id": trace_id},
    aigp_events,
    st.sampled_from([*TRACE_IDS, "absent"]),
)
builder_inputs = st.one_of(
    builder_events,
    st.lists(st.one_of(builder_events, json_values), max_size=4),
    st.lists(builder_events.map(lambda e: {**e, "trace_id": TRACE_IDS[0]}), min_size=1, max_size=4),
)


# ---- oracles: what the contract says about a record's values ----


def utf8_safe(event: dict[str, Any]) -> bool:
    try:
        json.dumps(event, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_surrogate(value: object) -> bool:
    return isinstance(value, str) and any("\ud800" <= ch <= "\udfff" for ch in value)


def bad_text(value: object, *, surrogates: bool = True) -> bool:
    if not isinstance(value, str) or value == "" or len(value) > MAX_TEXT:
        return True
    return surrogates and has_surrogate(value)


def clearly_invalid(attributes: Mapping[str, Any]) -> bool:
    """True when a value is plainly bad by the contract, so the bridge must count something.

    Lone surrogates are left to their own tests below (one known defect should not hide others).
    """
    hash_value = attributes.get("aigp.governance.hash")
    if hash_value not in (None, "") and not is_sha256_hex(hash_value):
        return True
    classification = attributes.get("aigp.data.classification")
    if classification not in (None, "") and not (isinstance(classification, str) and classification in RANK):
        return True
    enforcement = attributes.get("aigp.enforcement.result")
    if enforcement not in (None, "", "allowed", "denied"):
        return True
    leaf_count = attributes.get("aigp.governance.merkle.leaf_count")
    if leaf_count is not None and (isinstance(leaf_count, bool) or not isinstance(leaf_count, int)):
        return True
    for name_key in NAME_KEYS:
        name = attributes.get(name_key)
        if name is not None and name != "" and bad_text(name, surrogates=False):
            return True
        version = attributes.get(name_key.replace(".name", ".version"))
        bad_version = isinstance(version, bool) or not isinstance(version, int) or version < 0
        if name is not None and not bad_text(name, surrogates=False) and version is not None and bad_version:
            return True
    for array_key in ARRAY_KEYS:
        names = attributes.get(array_key)
        if names is None:
            continue
        if not isinstance(names, (list, tuple)) or any(bad_text(n, surrogates=False) for n in names):
            return True
    return False


def record_view(
    attributes: Mapping[str, Any], event_name: str | None
) -> tuple[bool, str | None, str | None, str]:
    """(denied, valid hash, valid classification, hash type) of one record, by the contract's rules."""
    event_type = attributes.get("aigp.event.type")
    if not (isinstance(event_type, str) and len(event_type) <= MAX_TEXT and EVENT_TYPE.fullmatch(event_type)):
        event_type = SPAN_EVENT_TYPES.get(event_name or "", "")
    enforcement = attributes.get("aigp.enforcement.result")
    denied = enforcement == "denied" or (
        enforcement != "allowed" and any(marker in event_type for marker in DENIAL_MARKERS)
    )
    hash_value = attributes.get("aigp.governance.hash")
    classification = attributes.get("aigp.data.classification")
    hash_type = attributes.get("aigp.governance.hash_type")
    return (
        denied,
        hash_value if is_sha256_hex(hash_value) else None,
        classification if isinstance(classification, str) and classification in RANK else None,
        hash_type if isinstance(hash_type, str) else "",
    )


def governs(attributes: Mapping[str, Any]) -> bool:
    return any(k.startswith("aigp.") and not k.startswith(("aigp.agent.", "aigp.org.")) for k in attributes)


def check_output(event: dict[str, Any], *, utf8: bool = True) -> None:
    """Schema-valid, names within bounds and (unless told otherwise) encodable as UTF-8.

    The property tests pass ``utf8=False``: lone surrogates get their own named tests below, so that
    one known defect does not hide every other property.
    """
    validate_run_event(event)
    if utf8:
        assert utf8_safe(event), "the RunEvent carries text that cannot be encoded as UTF-8"
    for dataset in event["inputs"]:
        name = dataset["inputFacets"]["aigp_resource"]["resourceName"]
        assert isinstance(name, str) and 0 < len(name) <= MAX_TEXT


# ---- span attributes and span events through the real OTel API ----


@HYPOTHESIS
@given(root_attributes=otel_attributes, events=span_events)
def test_arbitrary_attribute_values_never_break_the_bridge(
    make_bridge: Any, transport: CaptureTransport, root_attributes: dict[str, Any], events: list[Any]
) -> None:
    provider, processor = _bridge(make_bridge, transport, max_inputs_per_run=50)
    tracer = provider.get_tracer("hostile")
    before = len(transport.events)
    invalid_before = processor.stats()["invalid_values"]

    with tracer.start_as_current_span("invoke") as root:
        root.set_attributes(root_attributes)
        with tracer.start_as_current_span("step") as step:
            for name, attributes in events:
                step.add_event(name, attributes)

    assert processor.force_flush(timeout_millis=10_000)
    emitted = transport.events[before:]
    assert len(emitted) == 1, f"one governed trace, {len(emitted)} RunEvents"
    (event,) = emitted
    check_output(event, utf8=False)

    records = [record_view(e.attributes, e.name) for e in step.events]
    if governs(root.attributes):
        records.append(record_view(root.attributes, None))
    governance = event["run"]["facets"]["aigp_governance"]
    assert governance["eventCount"] == len(records)
    assert governance["deniedEventCount"] == sum(r[0] for r in records)
    assert governance["enforcementResult"] == ("denied" if any(r[0] for r in records) else "allowed")
    hashes = {r[1] for r in records if r[1] is not None}
    if not hashes:
        assert (governance["governanceHash"], governance["hashType"]) == (EMPTY_SHA256, "sha256")
    elif len(hashes) == 1:
        assert governance["governanceHash"] == next(iter(hashes))
        if all(r[3] != "merkle-sha256" for r in records if r[1] in hashes):
            assert (governance["hashType"], governance["leafCount"]) == ("sha256", 1)
    else:
        assert governance["governanceHash"] == merkle_root(hashes)
        assert (governance["hashType"], governance["leafCount"]) == ("merkle-sha256", len(hashes))
    ranks = [RANK[r[2]] for r in records if r[2] is not None]
    expected_classification = next((c for c, n in RANK.items() if ranks and n == max(ranks)), None)
    assert governance.get("dataClassification") == expected_classification

    bad = [e.attributes for e in step.events] + ([root.attributes] if governs(root.attributes) else [])
    if any(clearly_invalid(a) for a in bad):
        assert processor.stats()["invalid_values"] > invalid_before, "a bad value was not counted"


_CURRENT: list[Any] = [None, None]


def _bridge(make_bridge: Any, transport: CaptureTransport, **settings: Any) -> Any:
    """One bridge per test function (its fixtures live as long as the test), reused by every example."""
    if _CURRENT[0] is not transport:  # a new test: the fixtures are new
        _CURRENT[:] = [transport, make_bridge(**settings)]
    return _CURRENT[1]


BAD_VALUES = [
    pytest.param({"aigp.governance.hash": "XYZ"}, id="short-hash"),
    pytest.param({"aigp.governance.hash": "A" * 64}, id="uppercase-hash"),
    pytest.param({"aigp.governance.hash": 12345}, id="int-hash"),
    pytest.param({"aigp.governance.hash": ["a" * 64]}, id="array-hash"),
    pytest.param({"aigp.data.classification": "top-secret"}, id="unknown-classification"),
    pytest.param({"aigp.data.classification": 3}, id="int-classification"),
    pytest.param({"aigp.enforcement.result": "maybe"}, id="unknown-enforcement"),
    pytest.param({"aigp.governance.merkle.leaf_count": "three"}, id="text-leaf-count"),
    pytest.param({"aigp.policy.name": "policy.x", "aigp.policy.version": -1}, id="negative-version"),
    pytest.param({"aigp.policy.name": "policy.x", "aigp.policy.version": True}, id="bool-version"),
    pytest.param({"aigp.policy.name": "policy.x", "aigp.policy.version": "4"}, id="text-version"),
    pytest.param({"aigp.policy.name": 42}, id="int-name"),
    pytest.param({"aigp.policy.name": "p" * 100_000}, id="huge-name"),
    pytest.param({"aigp.tools.names": "tool.not-an-array"}, id="text-instead-of-array"),
    pytest.param({"aigp.tools.names": ["tool.ok", "", "t" * 5000]}, id="bad-array-elements"),
    pytest.param(
        {"aigp.prompts.names": ["prompt.a"], "aigp.prompts.versions": [-2]}, id="negative-array-version"
    ),
]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_each_bad_value_is_left_out_and_counted(
    make_bridge: Any, transport: CaptureTransport, bad: dict[str, Any]
) -> None:
    provider, processor = make_bridge()
    tracer = provider.get_tracer("hostile")
    with tracer.start_as_current_span("invoke") as root:
        root.add_event("aigp.inject.success", {"aigp.event.type": "INJECT_SUCCESS", **bad})
    assert processor.force_flush(timeout_millis=10_000)
    (event,) = transport.events
    check_output(event)
    assert processor.stats()["invalid_values"] > 0, "the bad value was not counted"
    governance = event["run"]["facets"]["aigp_governance"]
    assert governance["eventCount"] == 1
    assert governance["enforcementResult"] == "allowed"  # a bad enforcement value counts as absent
    assert governance["governanceHash"] == EMPTY_SHA256
    assert "dataClassification" not in governance
    assert "leafCount" not in governance
    emitted = {
        (d["inputFacets"]["aigp_resource"]["resourceType"], d["name"]): d["inputFacets"]["aigp_resource"]
        for d in event["inputs"]
    }
    for key, value in bad.items():
        if key.endswith(".name") and not bad_text(value):
            kind = key.split(".")[1]
            assert "resourceVersion" not in emitted[(kind, value)], "a bad version was kept"
        elif key.endswith(".names") and isinstance(value, (list, tuple)):
            kind = {"policies": "policy", "prompts": "prompt", "tools": "tool"}[key.split(".")[1]]
            kept = {name for (t, name) in emitted if t == kind}
            assert kept == {v for v in value if not bad_text(v)}
            assert all("resourceVersion" not in emitted[(kind, v)] for v in kept)
        elif key.endswith(".name") or key.endswith(".names"):
            assert event["inputs"] == [], "a bad resource name was kept"


def test_a_bad_enforcement_value_counts_as_absent_so_the_type_decides(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    provider, processor = make_bridge()
    with provider.get_tracer("hostile").start_as_current_span("invoke") as root:
        root.add_event("aigp.inject.denied", {"aigp.enforcement.result": "maybe"})
        root.add_event("aigp.inject.success", {"aigp.enforcement.result": "DENIED"})
    assert processor.force_flush(timeout_millis=10_000)
    (event,) = transport.events
    check_output(event)
    governance = event["run"]["facets"]["aigp_governance"]
    assert governance["deniedEventCount"] == 1
    assert governance["enforcementResult"] == "denied"
    assert processor.stats()["invalid_values"] >= 2


def test_non_identity_aigp_attribute_on_the_root_span_is_a_record(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    provider, processor = make_bridge()
    with provider.get_tracer("hostile").start_as_current_span("invoke") as root:
        root.set_attribute("aigp.data.classification", "restricted")
        root.set_attribute("aigp.agent.id", "agent.root-bot")
    assert processor.force_flush(timeout_millis=10_000)
    (event,) = transport.events
    check_output(event)
    assert event["run"]["facets"]["aigp_governance"]["eventCount"] == 1
    assert event["run"]["facets"]["aigp_governance"]["dataClassification"] == "restricted"
    assert event["job"]["name"] == "root-bot.invoke"


# ---- non-UTF-8-safe text (lone surrogates) ----


def test_lone_surrogate_in_a_resource_name_is_left_out(make_bridge: Any, transport: CaptureTransport) -> None:
    provider, processor = make_bridge()
    with provider.get_tracer("hostile").start_as_current_span("invoke") as root:
        root.add_event(
            "aigp.prompt.used", {"aigp.prompt.name": "prompt." + SURROGATE, "aigp.prompt.version": 1}
        )
        root.add_event("aigp.tool.invoked", {"aigp.tools.names": ["tool.ok", "tool." + SURROGATE]})
    assert processor.force_flush(timeout_millis=10_000)
    (event,) = transport.events
    validate_run_event(event)
    assert [d["name"] for d in event["inputs"]] == ["tool.ok"]
    assert utf8_safe(event)
    assert processor.stats()["invalid_values"] >= 2


def test_lone_surrogate_in_the_agent_id_does_not_reach_the_run_event(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    provider, processor = make_bridge(resource={"service.name": "svc"})
    with provider.get_tracer("hostile").start_as_current_span("invoke") as root:
        root.set_attribute("aigp.agent.id", "agent.bot" + SURROGATE)
        root.add_event("aigp.inject.success", {"aigp.agent.id": SURROGATE})
    assert processor.force_flush(timeout_millis=10_000)
    (event,) = transport.events
    validate_run_event(event)
    assert utf8_safe(event), (
        f"job {event['job']['name']!r}, agent {event['run']['facets']['aigp_governance']}"
    )


def test_ingested_event_with_a_lone_surrogate_trace_id_is_still_emitted(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    _, processor = make_bridge()
    processor.ingest_aigp_event({"trace_id": "trace-" + SURROGATE, "event_type": "INJECT_SUCCESS"})
    processor.shutdown()
    assert processor.stats()["build_failures"] == 0
    (event,) = transport.events  # a malformed trace id maps to a name-based run id; the run is not lost
    validate_run_event(event)
    assert uuid.UUID(event["run"]["runId"]).version == 5
    assert utf8_safe(event)


def test_builders_leave_lone_surrogates_out(transport: CaptureTransport) -> None:
    event = {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "event_type": "INJECT_SUCCESS",
        "policy_name": "policy." + SURROGATE,
        "agent_id": "agent." + SURROGATE,
    }
    built = build_openlineage_run_event(event, "ns", "job")
    validate_run_event(built)
    assert built["inputs"] == []
    assert utf8_safe(built)


def test_thousands_of_events_on_one_span_with_a_small_record_bound(
    make_bridge: Any, transport: CaptureTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "5000")
    provider, processor = make_bridge(max_records_per_trace=1000)
    count = 3000
    hashes = [hashlib.sha256(f"content {n}".encode()).hexdigest() for n in range(count)]
    with provider.get_tracer("hostile").start_as_current_span("invoke") as root:
        for n, digest in enumerate(hashes):
            name = "aigp.inject.denied" if n % 10 == 0 else "aigp.inject.success"
            attributes: dict[str, Any] = {
                "aigp.event.id": str(uuid.UUID(int=n + 1)),
                "aigp.governance.hash": digest,
                "aigp.policy.name": f"policy.p{n % 50}",
            }
            if n == count - 1:  # only a record past the bound carries the highest classification
                attributes["aigp.data.classification"] = "restricted"
            root.add_event(name, attributes)
    assert len(root.events) == count
    assert processor.force_flush(timeout_millis=30_000)
    (event,) = transport.events
    check_output(event)
    governance = event["run"]["facets"]["aigp_governance"]
    assert governance["eventCount"] == count
    assert governance["deniedEventCount"] == count // 10
    assert governance["governanceHash"] == merkle_root(set(hashes))
    assert governance["leafCount"] == count
    assert governance["dataClassification"] == "restricted"
    assert processor.stats()["records_left_out"] == count - 1000


def test_a_long_array_is_cut_and_counted(make_bridge: Any, transport: CaptureTransport) -> None:
    provider, processor = make_bridge(max_array_length=100, max_inputs_per_run=100)
    with provider.get_tracer("hostile").start_as_current_span("invoke") as root:
        root.add_event("aigp.tool.invoked", {"aigp.tools.names": [f"tool.t{n}" for n in range(5000)]})
    assert processor.force_flush(timeout_millis=10_000)
    (event,) = transport.events
    check_output(event)
    assert 0 < len(event["inputs"]) <= 100
    assert processor.stats()["invalid_values"] > 0


# ---- full AIGP events and the builders ----


def _trace_of(value: object) -> object:
    return value.get("trace_id") if isinstance(value, Mapping) else None


@HYPOTHESIS
@given(
    events=st.lists(aigp_events, max_size=4),
    trace_choices=st.lists(st.sampled_from(["root", "root", "absent", "other"]), min_size=4, max_size=4),
    others=st.lists(json_values, min_size=4, max_size=4),
    garbage=json_values,
)
def test_arbitrary_dicts_to_ingest_never_raise(
    make_bridge: Any,
    transport: CaptureTransport,
    events: list[dict[str, Any]],
    trace_choices: list[str],
    others: list[Any],
    garbage: Any,
) -> None:
    provider, processor = _bridge(make_bridge, transport, max_inputs_per_run=50)
    tracer = provider.get_tracer("hostile")
    before = len(transport.events)
    rejected_before = processor.stats()["ingest_rejected"]
    with tracer.start_as_current_span("invoke") as root:
        root_hex = f"{root.get_span_context().trace_id:032x}"
        handed: list[Any] = []
        for event, choice, other in zip(events, trace_choices, others, strict=False):
            if choice == "root":
                event = {**event, "trace_id": root_hex}
            elif choice == "other":
                event = {**event, "trace_id": other}
            handed.append(event)
        handed.append(garbage)
        for value in handed:
            assert processor.ingest_aigp_event(value) is None
    assert processor.force_flush(timeout_millis=10_000)
    emitted = transport.events[before:]
    joined = [v for v in handed if isinstance(v, Mapping) and v.get("trace_id") == root_hex]
    assert len([e for e in emitted if e["run"]["facets"]["aigp_governance"]["traceId"] == root_hex]) == (
        1 if joined else 0
    )
    for event in emitted:
        check_output(event, utf8=False)
    refused = [  # no text trace id, or one past max_string_length (the default 1024)
        v for v in handed if not (isinstance(t := _trace_of(v), str) and 0 < len(t) <= 1024)
    ]
    assert processor.stats()["ingest_rejected"] - rejected_before == len(refused)


def test_traces_known_only_from_ingested_events_are_emitted_valid_at_shutdown(
    make_bridge: Any, transport: CaptureTransport
) -> None:
    _, processor = make_bridge()
    weird = ["trace-0af7651916cd43dd8448eb211c80319c", "x" * 1024, "not hex at all", "0" * 32]
    for trace_id in [*weird, "x" * 1025]:  # past max_string_length: refused and counted
        processor.ingest_aigp_event(
            {"trace_id": trace_id, "event_type": "INJECT_SUCCESS", "governance_hash": 5}
        )
    processor.shutdown()
    assert len(transport.events) == len(weird)
    assert processor.stats()["ingest_rejected"] == 1
    assert max(len(e["run"]["facets"]["aigp_governance"]["traceId"]) for e in transport.events) == 1024
    for event in transport.events:
        check_output(event)
        assert event["eventType"] == "RUNNING"
        assert event["run"]["facets"]["aigp_governance"]["complete"] is False
    assert processor.stats()["invalid_values"] >= len(weird)


def _refusal_expected(value: Any) -> bool:
    session = [value] if isinstance(value, Mapping) else list(value)
    if not session or not all(isinstance(e, Mapping) for e in session):
        return True
    ids = [e.get("trace_id") for e in session]
    return any(i != ids[0] for i in ids) or not isinstance(ids[0], str) or not ids[0]


def _skeleton(run_facet: dict[str, Any] | None, input_facets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "eventType": "COMPLETE",
        "eventTime": "2026-01-01T00:00:00.000Z",
        "producer": "https://example.com/tests",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4()), "facets": {"aigp_governance": run_facet} if run_facet else {}},
        "job": {"namespace": "ns", "name": "job"},
        "inputs": [
            {"namespace": "ns", "name": f"r{n}", "inputFacets": {"aigp_resource": facet}}
            for n, facet in enumerate(input_facets)
        ],
        "outputs": [],
    }


@HYPOTHESIS
@given(value=builder_inputs)
def test_builders_refuse_only_bad_trace_ids_and_otherwise_emit_valid_output(value: Any) -> None:
    calls = [
        lambda: check_output(build_openlineage_run_event(value, "ns", "job"), utf8=False),
        lambda: check_output(_skeleton(build_governance_run_facet(value), []), utf8=False),
        lambda: check_output(_skeleton(None, build_resource_input_facets(value)), utf8=False),
    ]
    for call in calls:
        try:
            call()
        except (ValueError, TypeError):
            assert _refusal_expected(value), "a builder refused a session with one valid trace id"


@HYPOTHESIS
@given(
    event_names,
    otel_attributes,
    st.one_of(st.none(), st.text(max_size=8), st.integers(0, 3)),
    st.sampled_from([list, tuple]),
)
def test_a_span_event_read_from_the_cache_is_the_record_read_afresh(
    event_name: str, attributes: dict[str, Any], event_id: object, sequence: type
) -> None:
    """The worker validates repeated span events once; every record it returns, on a miss or a
    hit, is the one ``record_from_attributes`` reads, with every invalid value counted again."""
    attributes = {k: sequence(v) if isinstance(v, list) else v for k, v in attributes.items()}
    if event_id is not None:
        attributes["aigp.event.id"] = event_id
    extractor = Extractor()
    fresh = record_from_attributes(attributes, event_name=event_name, time_ns=7)
    assert extractor.event_record(attributes, event_name, 7) == fresh
    assert extractor.event_record(dict(attributes), event_name, 7) == fresh
