"""The builder path's shortcuts give exactly what the plain computation gives.

A full AIGP event's fields other than its id and time are read once per distinct value and type
(``records._FIELDS_READ``); run ids and timestamps are written directly.
Each is held here to the straightforward result: a cached read equals a fresh one, an invalid
value is counted every time it is seen, the cache stays bounded and keeps no large value.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openlineage.client.event_v2 import Run, RunState

from aigp_otel_bridge.memo import remember
from aigp_otel_bridge.merkle import flat_hash
from aigp_otel_bridge.openlineage import _session_run, build_openlineage_run_event
from aigp_otel_bridge.propagated_links import run_id_for_trace
from aigp_otel_bridge.stages import extract as records
from aigp_otel_bridge.stages.aggregate import aggregate
from aigp_otel_bridge.stages.build import build_run_event, iso_millis
from aigp_otel_bridge.stages.extract import Limits, record_from_aigp_event, records_from_aigp_events

HASH = flat_hash("policy content")
TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
ISO_MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    records._FIELDS_READ.clear()
    yield
    records._FIELDS_READ.clear()


def _event(number: int = 0, **fields: object) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"00000000-0000-4000-8000-{number:012d}",
        "event_type": "INJECT_SUCCESS",
        "event_time": "2026-02-15T10:30:00.456Z",
        "agent_id": "agent.trading-bot-v2",
        "policy_name": "policy.trading-limits",
        "policy_version": 4,
        "governance_hash": HASH,
        "hash_type": "sha256",
        "data_classification": "confidential",
        "trace_id": TRACE_HEX,
    }
    event.update(fields)
    return event


def _fresh(event: dict[str, Any], limits: Limits = records.DEFAULT_LIMITS) -> records.GovernanceRecord:
    records._FIELDS_READ.clear()
    return record_from_aigp_event(event, limits=limits)


# --- the full-event cache ------------------------------------------------------------------

_VALUES = st.sampled_from(
    [None, "", 0, 1, 4, -1, True, False, 1.0, 0.0, [], ["policy.x"], "policy.a", "agent.a", "x" * 2000,
     "\ud800", "INJECT_DENIED", "allowed", "denied", "maybe", "internal", "merkle-sha256", "sha256", HASH,
     HASH.upper()]
)
_NUMBERS = (0, 1, 4, False, True, 0.0, 1.0, 4.0)
"""Equal values of other types, which equal keys must not confuse."""


@given(st.dictionaries(st.sampled_from(records._CACHED_FIELDS), _VALUES), st.data())
def test_a_cached_read_is_a_fresh_read(fields: dict[str, object], data: st.DataObject) -> None:
    """Whatever was cached first, a later event reads exactly as it would afresh: values that
    are equal but of another type (``1``, ``1.0``, ``True``) are other keys."""
    first = _event(1, **fields)
    second_fields = {
        key: data.draw(st.sampled_from([number for number in _NUMBERS if number == value]))
        if isinstance(value, (int, float)) and value in _NUMBERS else value
        for key, value in fields.items()
    }
    second = _event(2, **second_fields)
    expected = _fresh(second)
    records._FIELDS_READ.clear()
    assert record_from_aigp_event(first) == _fresh(first)
    record_from_aigp_event(first)
    assert record_from_aigp_event(second) == expected
    assert record_from_aigp_event(second) == expected


def test_an_invalid_value_cached_once_is_counted_each_time_it_is_seen() -> None:
    events = [_event(n, governance_hash="not a hash", policy_version=-2) for n in range(3)]
    read = records_from_aigp_events(events)
    assert len(records._FIELDS_READ) == 1
    assert [record.invalid for record in read] == [2, 2, 2]
    assert aggregate(read).invalid == 6


def test_the_event_id_and_time_are_read_for_every_event() -> None:
    first = record_from_aigp_event(_event(1))
    second = record_from_aigp_event(_event(2, event_time="2026-02-15T10:30:01Z"))
    third = record_from_aigp_event(_event(3, event_id="\ud800"))
    assert len(records._FIELDS_READ) == 1
    assert (first.event_id, second.event_id) == (_event(1)["event_id"], _event(2)["event_id"])
    assert second.time_ns == first.time_ns + 544_000_000  # type: ignore[operator]
    assert (third.event_id, third.invalid, first.invalid) == (None, 1, 0)


def test_the_limits_are_part_of_the_key() -> None:
    event = _event(1)
    assert record_from_aigp_event(event).agent_id == "agent.trading-bot-v2"
    narrow = record_from_aigp_event(event, limits=Limits(max_string_length=8))
    assert narrow == _fresh(event, Limits(max_string_length=8))
    assert (narrow.agent_id, narrow.resources) == (None, ())
    assert record_from_aigp_event(event).agent_id == "agent.trading-bot-v2"


def test_the_cache_is_bounded() -> None:
    for number in range(records._FIELDS_READ_MAX + 10):
        record_from_aigp_event(_event(number, policy_version=number + 1))
        assert len(records._FIELDS_READ) <= records._FIELDS_READ_MAX
    assert record_from_aigp_event(_event(0, policy_version=5)).resources[0].version == 5


@pytest.mark.parametrize(
    "fields",
    [
        {"agent_id": "a" * 2000},  # too long: invalid, and not kept
        {"policy_version": 1 << 80},
        {"policy_version": 4.0},
        {"policy_name": ["policy.x"]},  # unhashable
        {"governance_merkle_tree": {"leaf_count": 1, "leaves": []}},  # nested resources: read afresh
        {"annotations": {"all_policies": [{"name": "policy.b", "version": 2}]}},
        {"annotations": {"otel_attributes": {"aigp.tools.names": ["tool.x"]}}},
    ],
)
def test_large_unhashable_or_nested_values_are_read_afresh(fields: dict[str, object]) -> None:
    event = _event(1, **fields)
    expected = _fresh(event)
    assert record_from_aigp_event(event) == expected
    assert record_from_aigp_event(event) == expected
    assert records._FIELDS_READ == {}


def test_annotations_without_resources_are_cached() -> None:
    event = _event(1, annotations={"tool_name": "tool.order-lookup", "otel_attributes": None})
    assert record_from_aigp_event(event) == _fresh(event)
    assert len(records._FIELDS_READ) == 1


def test_a_session_reads_each_repeated_event_once_and_keeps_every_event() -> None:
    events = [_event(n, event_time=f"2026-02-15T10:30:0{n}Z") for n in range(3)]
    summary = _session_run(events, "ns", "job").summary
    assert len(records._FIELDS_READ) == 1
    assert summary.event_count == 3
    assert summary.latest_time_ns - summary.earliest_time_ns == 2_000_000_000  # type: ignore[operator]


# --- times, run ids, run states ------------------------------------------------------------


def _iso_by_float(time_ns: int) -> str:
    """The earlier formula (through a float of seconds): exact while a float holds the seconds to
    well under a microsecond (within 2**32 s of 1970: the years 1834 to 2106)."""
    moment = datetime.fromtimestamp(time_ns // 1_000_000 / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_YEAR_1000_NS = -30_610_224_000 * 10**9
_FLOAT_EXACT_NS = 2**32 * 10**9
_YEAR_10000_NS = 253_402_300_800 * 10**9


@given(st.integers(min_value=_YEAR_1000_NS, max_value=_YEAR_10000_NS - 1))
def test_iso_millis_is_the_utc_time_to_the_millisecond(time_ns: int) -> None:
    text = iso_millis(time_ns)
    assert ISO_MILLIS.fullmatch(text)
    parsed = datetime.fromisoformat(text[:-1] + "+00:00")
    assert (parsed - _EPOCH) // timedelta(milliseconds=1) == time_ns // 1_000_000


@given(st.integers(min_value=-_FLOAT_EXACT_NS, max_value=_FLOAT_EXACT_NS))
def test_iso_millis_writes_what_it_wrote_before(time_ns: int) -> None:
    assert iso_millis(time_ns) == _iso_by_float(time_ns)


@pytest.mark.parametrize("time_ns", [_YEAR_10000_NS, -(10**30), 10**30])
def test_iso_millis_out_of_range_is_now(time_ns: int) -> None:
    moment = datetime.strptime(iso_millis(time_ns), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs((moment - datetime.now(timezone.utc)).total_seconds()) < 60


@given(st.text("0123456789abcdefABCDEF", min_size=32, max_size=32))
def test_run_id_of_an_otel_trace_id_is_its_canonical_uuid(trace_id: str) -> None:
    assert run_id_for_trace(trace_id) == str(uuid.UUID(hex=trace_id))


@pytest.mark.parametrize(
    "run_id",
    ["4BF92F35-77B3-4DA6-A3CE-929D0E0E4736", "{4bf92f35-77b3-4da6-a3ce-929d0e0e4736}",
     "urn:uuid:4bf92f35-77b3-4da6-a3ce-929d0e0e4736", "4bf92f3577b34da6a3ce929d0e0e4736"],
)
def test_run_ids_the_client_accepts_are_accepted(run_id: str) -> None:
    Run(runId=run_id)
    assert build_openlineage_run_event(_event(1), "ns", "job", run_id=run_id)["run"]["runId"] == run_id


@pytest.mark.parametrize(
    "run_id", ["not-a-uuid", "4bf92f35-77b3-4da6-a3ce-929d0e0e473", "4bf92f35-77b3-4da6", "\ud800"]
)
def test_run_ids_the_client_refuses_are_refused(run_id: str) -> None:
    with pytest.raises(ValueError):
        Run(runId=run_id)
    run = _session_run([_event(1)], "ns", "job", run_id=run_id)
    with pytest.raises(ValueError):
        build_run_event(run, "")


@pytest.mark.parametrize("bad", ["complete", "DONE", "", ["COMPLETE"]])
def test_an_unknown_event_type_is_refused_as_the_enum_refuses_it(bad: Any) -> None:
    with pytest.raises(ValueError):
        RunState(bad)
    with pytest.raises(ValueError):
        build_openlineage_run_event(_event(1), "ns", "job", event_type=bad)


def test_a_full_memo_is_emptied_before_the_next_entry() -> None:
    """Every bounded memo of the bridge (``memo.remember``) holds at most its limit: the entry past
    it starts afresh, and what was forgotten is computed again, never answered wrongly."""
    memo: dict[int, str] = {}
    assert [remember(memo, key, f"v{key}", 3) for key in range(3)] == ["v0", "v1", "v2"]
    assert memo == {0: "v0", 1: "v1", 2: "v2"}
    assert remember(memo, 3, "v3", 3) == "v3"
    assert memo == {3: "v3"}
    remember(memo, 3, "again", 3)  # a key already there is replaced, nothing forgotten
    assert memo == {3: "again"}
