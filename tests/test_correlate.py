"""Correlation: the state machine that decides when a trace's run is emitted (contract, section 2).

The ``Correlator`` is driven with explicit clocks: no sleeping, no threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.config import BridgeConfig
from aigp_otel_bridge.merkle import flat_hash, merkle_root
from aigp_otel_bridge.note import SpanNote
from aigp_otel_bridge.propagated_links import RUN_LINKS, run_id_for_remote_root, run_id_for_trace
from aigp_otel_bridge.stages.aggregate import aggregate
from aigp_otel_bridge.stages.build import name_run
from aigp_otel_bridge.stages.correlate import ClosedRun, Correlator, Reason
from aigp_otel_bridge.stages.extract import (
    Extractor,
    GovernanceRecord,
    record_from_aigp_event,
    record_from_attributes,
    trace_key_of,
)
from aigp_otel_bridge.telemetry import Stats

TIMEOUT = 300.0
TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
OTHER = 0x0AF7651916CD43DD8448EB211C80319C
THIRD = 0x11111111111111111111111111111111
ROOT = 0x00F067AA0BA902B7
CHILD = 0x53995C3F42CD8AD8


def _correlator(stats: Stats, **overrides: Any) -> Correlator:
    settings: dict[str, Any] = {
        "trace_timeout_s": TIMEOUT,
        "max_pending_traces": 100,
        "max_records_per_trace": 100,
        "emit_ungoverned": False,
    }
    settings.update(overrides)
    return Correlator(stats=stats, **settings)


def _note(
    trace_id: int = TRACE,
    span_id: int = CHILD,
    *,
    local_root: bool = False,
    remote_parent: bool = False,
    local_root_id: int | None = None,
    name: str = "step",
    start_ns: int = 1_000,
    end_ns: int = 2_000,
    resource: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> SpanNote:
    return SpanNote(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=None if local_root and not remote_parent else ROOT if not local_root else 0x77,
        remote_parent=remote_parent,
        local_root_id=span_id if local_root else local_root_id,
        name=name,
        start_ns=start_ns,
        end_ns=end_ns,
        governance_events=(),
        attributes=attributes,
        governed_attributes=False,
        resource=resource if resource is not None else {"service.name": "svc"},
    )


def _end(
    correlator: Correlator, note: SpanNote, records: Sequence[GovernanceRecord], now: float
) -> list[ClosedRun]:
    """End a span: the note as extraction reads it, with the given records."""
    return list(correlator.span_ended(replace(Extractor().span(note), records=list(records)), now))


def _root(trace_id: int = TRACE, span_id: int = ROOT, **kwargs: Any) -> SpanNote:
    kwargs.setdefault("name", "invoke")
    return _note(trace_id, span_id, local_root=True, **kwargs)


def _governed(event_id: str | None = None, content: str = "policy", **attributes: Any) -> GovernanceRecord:
    values: dict[str, Any] = {sc.GOVERNANCE_HASH: flat_hash(content)}
    if event_id is not None:
        values[sc.EVENT_ID] = event_id
    values.update(attributes)
    return record_from_attributes(values, event_name="aigp.inject.success")


@pytest.fixture
def stats() -> Stats:
    return Stats()


# --- root end -----------------------------------------------------------------------------


def test_governed_trace_emits_once_when_its_only_local_root_ends(stats: Stats) -> None:
    correlator = _correlator(stats)
    assert correlator.root_started(TRACE, ROOT, False, now=0.0) == []
    assert _end(correlator, _note(name="retrieve"), [_governed("e-1")], now=1.0) == []
    assert len(correlator) == 1

    finished = _end(correlator, _root(end_ns=5_000), [], now=2.0)

    assert len(finished) == 1
    (run,) = finished
    assert run.key == TRACE
    assert run.reason is Reason.ROOT_ENDED
    assert run.complete is True
    assert [r.event_id for r in run.records] == ["e-1"]
    assert (run.root_span_id, run.root_remote) == (ROOT, False)
    assert run.root is not None and run.root.span_id == ROOT
    assert run.first_span_name == "retrieve"
    assert run.last_end_ns == 5_000
    assert len(correlator) == 0
    assert correlator.expire(now=10_000.0) == []
    assert correlator.drain() == []
    assert stats.records == 1


def test_records_on_the_root_itself_are_enough(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    (run,) = _end(correlator, _root(), [_governed()], now=1.0)
    assert run.complete is True
    assert len(run.records) == 1


def test_each_local_root_of_a_trace_is_its_own_run(stats: Stats) -> None:
    """A caller and its callee in one process: one trace, two local roots, two runs."""
    correlator = _correlator(stats)
    callee = 0x1111222233334444
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    correlator.root_started(TRACE, callee, True, now=0.5)  # its parent is remote
    _end(correlator, _note(local_root_id=ROOT), [_governed("caller-1")], now=1.0)
    _end(correlator, _note(span_id=0x42, local_root_id=callee), [_governed("callee-1")], now=1.5)

    # The callee ends first: only its own run is closed.
    (callee_run,) = _end(correlator, _root(span_id=callee, remote_parent=True, end_ns=3_000), [], now=2.0)
    (caller_run,) = _end(correlator, _root(end_ns=4_000), [], now=3.0)

    assert [r.event_id for r in callee_run.records] == ["callee-1"]
    assert [r.event_id for r in caller_run.records] == ["caller-1"]
    assert (callee_run.root_span_id, callee_run.root_remote) == (callee, True)
    config = BridgeConfig(job_namespace="ns")
    callee_named = name_run(callee_run, aggregate(callee_run.records), config, run_link=RUN_LINKS.run_link)
    caller_named = name_run(caller_run, aggregate(caller_run.records), config, run_link=RUN_LINKS.run_link)
    assert callee_named.run_id == run_id_for_remote_root(f"{TRACE:032x}", f"{callee:016x}")
    assert caller_named.run_id == run_id_for_trace(f"{TRACE:032x}")
    assert callee_run.complete and caller_run.complete
    assert len(correlator) == 0


def test_records_of_an_unknown_local_root_join_the_traces_first_root(stats: Stats) -> None:
    """Full AIGP events and notes whose front door could not tell their root go to the first."""
    correlator = _correlator(stats)
    second = 0x1111222233334444
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    correlator.root_started(TRACE, second, True, now=0.1)
    correlator.event_ingested(TRACE, record_from_aigp_event(_full_event("full")), now=0.2)
    _end(correlator, _note(), [_governed("unknown-root")], now=0.3)
    assert _end(correlator, _root(span_id=second, remote_parent=True), [], now=0.4) == []  # ungoverned
    (first_run,) = _end(correlator, _root(), [], now=0.5)
    assert {r.event_id for r in first_run.records} == {"full", "unknown-root"}


def test_without_starts_waiting_records_join_the_first_root_to_end(stats: Stats) -> None:
    """The exporter sees no starts: records wait unattributed until a root of their trace ends."""
    correlator = _correlator(stats)
    _end(correlator, _note(), [_governed("child")], now=0.0)
    correlator.event_ingested(TRACE, record_from_aigp_event(_full_event("full")), now=0.1)
    assert len(correlator) == 1
    (run,) = _end(correlator, _root(name="invoke"), [_governed("own")], now=0.2)
    assert [r.event_id for r in run.records] == ["child", "full", "own"]
    assert run.first_span_name == "step"
    assert (run.root_span_id, run.complete) == (ROOT, True)
    assert stats.records == 3
    assert len(correlator) == 0


def test_a_trace_with_a_local_root_run_id_is_the_trace_id(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    (run,) = _end(correlator, _root(), [_governed()], now=1.0)
    config = BridgeConfig(job_namespace="ns")
    decided = name_run(run, aggregate(run.records), config, run_link=RUN_LINKS.run_link)
    assert decided.run_id == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"


def test_ungoverned_trace_emits_nothing(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    assert _end(correlator, _note(), [], now=1.0) == []
    assert _end(correlator, _root(), [], now=2.0) == []
    assert len(correlator) == 0


def test_ungoverned_trace_emits_when_asked(stats: Stats) -> None:
    correlator = _correlator(stats, emit_ungoverned=True)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    finished = _end(correlator, _root(), [], now=1.0)
    assert len(finished) == 1
    assert finished[0].records == ()
    assert finished[0].complete is True
    assert finished[0].reason is Reason.ROOT_ENDED


def test_traces_are_kept_apart(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    correlator.root_started(OTHER, ROOT, False, now=0.0)
    _end(correlator, _note(TRACE), [_governed("mine")], now=1.0)
    _end(correlator, _note(OTHER), [_governed("theirs")], now=1.0)
    (run,) = _end(correlator, _root(OTHER), [], now=2.0)
    assert run.key == OTHER
    assert [r.event_id for r in run.records] == ["theirs"]
    assert len(correlator) == 1


# --- timeout ------------------------------------------------------------------------------


def test_timeout_emits_an_incomplete_run_and_later_records_start_a_new_buffer(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    _end(correlator, _note(name="early", end_ns=7_000), [_governed("e-1", "a")], now=10.0)

    assert correlator.expire(now=10.0 + TIMEOUT - 0.001) == []
    finished = correlator.expire(now=10.0 + TIMEOUT)

    assert len(finished) == 1
    (early,) = finished
    assert early.reason is Reason.TIMEOUT
    assert early.complete is False
    assert early.first_span_name == "early"
    assert early.last_end_ns == 7_000
    assert [r.event_id for r in early.records] == ["e-1"]
    assert stats.traces_timed_out == 1
    assert len(correlator) == 0

    # The application's root was still open; later records of the trace go to a new buffer.
    _end(correlator, _note(name="late"), [_governed("e-2", "b")], now=400.0)
    (late,) = _end(correlator, _root(), [], now=401.0)
    assert late.reason is Reason.ROOT_ENDED
    assert late.complete is False
    assert [r.event_id for r in late.records] == ["e-2"]


def test_activity_pushes_the_deadline(stats: Stats) -> None:
    correlator = _correlator(stats)
    _end(correlator, _note(), [_governed("e-1")], now=0.0)
    _end(correlator, _note(), [_governed("e-2")], now=100.0)
    assert correlator.expire(now=TIMEOUT + 50.0) == []
    (run,) = correlator.expire(now=TIMEOUT + 100.0)
    assert run.reason is Reason.TIMEOUT
    assert len(run.records) == 2


def test_timeout_of_an_ungoverned_trace_emits_nothing(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    assert correlator.expire(now=TIMEOUT + 1.0) == []
    assert len(correlator) == 0
    assert stats.traces_timed_out == 0


def test_expire_only_decides_quiet_traces(stats: Stats) -> None:
    correlator = _correlator(stats)
    _end(correlator, _note(TRACE), [_governed("old")], now=0.0)
    _end(correlator, _note(OTHER), [_governed("new")], now=200.0)
    (run,) = correlator.expire(now=TIMEOUT + 1.0)
    assert run.key == TRACE
    assert len(correlator) == 1


# --- eviction -----------------------------------------------------------------------------


def test_eviction_takes_the_least_recently_active_trace(stats: Stats) -> None:
    correlator = _correlator(stats, max_pending_traces=2)
    _end(correlator, _note(TRACE), [_governed("a")], now=0.0)
    _end(correlator, _note(OTHER), [_governed("b")], now=1.0)
    _end(correlator, _note(TRACE), [_governed("a2")], now=2.0)  # TRACE is now the most recent

    finished = _end(correlator, _note(THIRD), [_governed("c")], now=3.0)

    assert len(finished) == 1
    (evicted,) = finished
    assert evicted.key == OTHER
    assert evicted.reason is Reason.EVICTED
    assert evicted.complete is False
    assert [r.event_id for r in evicted.records] == ["b"]
    assert stats.traces_evicted == 1
    assert len(correlator) == 2


def test_root_started_can_evict(stats: Stats) -> None:
    correlator = _correlator(stats, max_pending_traces=1)
    _end(correlator, _note(TRACE), [_governed("a")], now=0.0)
    (evicted,) = correlator.root_started(OTHER, ROOT, False, now=1.0)
    assert evicted.key == TRACE
    assert evicted.reason is Reason.EVICTED


def test_ungoverned_evictions_emit_nothing(stats: Stats) -> None:
    correlator = _correlator(stats, max_pending_traces=1)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    assert correlator.root_started(OTHER, ROOT, False, now=1.0) == []
    assert len(correlator) == 1


def test_evicted_trace_continues_as_an_incomplete_run(stats: Stats) -> None:
    correlator = _correlator(stats, max_pending_traces=1)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    _end(correlator, _note(TRACE), [_governed("a")], now=1.0)
    (evicted,) = _end(correlator, _note(OTHER), [_governed("b")], now=2.0)
    assert evicted.key == TRACE

    # TRACE's root ends: its new buffer evicts OTHER, then is decided itself.
    finished = _end(correlator, _root(TRACE), [_governed("a2")], now=3.0)
    assert [(run.key, run.reason) for run in finished] == [
        (OTHER, Reason.EVICTED),
        (TRACE, Reason.ROOT_ENDED),
    ]
    assert [run.complete for run in finished] == [False, False]
    assert [r.event_id for r in finished[1].records] == ["a2"]
    assert stats.traces_evicted == 2


def test_continuation_after_eviction_ends_incomplete(stats: Stats) -> None:
    correlator = _correlator(stats, max_pending_traces=2)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    _end(correlator, _note(TRACE), [_governed("a")], now=1.0)
    _end(correlator, _note(OTHER), [_governed("b")], now=2.0)
    (evicted,) = _end(correlator, _note(THIRD), [_governed("c")], now=3.0)
    assert evicted.key == TRACE
    finished = _end(correlator, _root(TRACE), [_governed("a2")], now=4.0)
    assert [(run.key, run.reason) for run in finished] == [
        (OTHER, Reason.EVICTED),
        (TRACE, Reason.ROOT_ENDED),
    ]
    assert finished[1].complete is False
    assert [r.event_id for r in finished[1].records] == ["a2"]


def test_a_run_after_a_complete_one_is_complete_again(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    (first,) = _end(correlator, _root(), [_governed("a")], now=1.0)
    correlator.root_started(TRACE, ROOT + 1, False, now=2.0)
    (second,) = _end(correlator, _root(span_id=ROOT + 1), [_governed("b")], now=3.0)
    assert first.complete is True
    assert second.complete is True


# --- record bound -------------------------------------------------------------------------


def test_records_past_the_bound_are_counted_but_still_aggregated(stats: Stats) -> None:
    correlator = _correlator(stats, max_records_per_trace=2)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    records = [
        _governed("e-1", "one", **{sc.POLICY_NAME: "policy.one"}),
        _governed("e-2", "two"),
        _governed("e-3", "three", **{sc.DATA_CLASSIFICATION: "restricted", sc.POLICY_NAME: "policy.three"}),
        record_from_attributes(
            {sc.EVENT_ID: "e-4", sc.GOVERNANCE_HASH: flat_hash("four")}, event_name="aigp.tool.denied"
        ),
    ]
    _end(correlator, _note(), records, now=1.0)
    (run,) = _end(correlator, _root(), [], now=2.0)

    assert len(run.records) == 2
    assert run.overflow.count == 2
    assert stats.records_left_out == 2
    assert stats.records == 4
    summary = aggregate(run.records, run.overflow)
    assert summary.event_count == 4
    assert summary.leaf_count == 4
    assert summary.governance_hash == merkle_root({flat_hash(c) for c in ("one", "two", "three", "four")})
    assert summary.enforcement == "denied"
    assert summary.denied_count == 1
    assert summary.classification == "restricted"
    assert [r.name for r in summary.resources] == ["policy.one"]  # left-out records give no inputs


def test_records_without_event_ids_are_all_kept(stats: Stats) -> None:
    correlator = _correlator(stats)
    _end(correlator, _note(), [_governed(None, "x"), _governed(None, "x")], now=0.0)
    (run,) = _end(correlator, _root(), [], now=1.0)
    assert len(run.records) == 2
    assert stats.duplicate_records == 0


# --- a run's records: the only one held as itself, a dict from the second on ----------------


def test_the_only_record_then_its_duplicate_then_more_keep_arrival_order(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    first = _governed("a", "first")
    _end(correlator, _note(), [first], now=1.0)
    correlator.event_ingested(TRACE, record_from_aigp_event(_full_event("a")), now=2.0)
    _end(correlator, _note(span_id=CHILD + 1), [_governed(None, "anonymous"), _governed("b", "b")], now=3.0)
    _end(correlator, _note(span_id=CHILD + 2), [_governed("a", "again"), _governed(None, "x")], now=4.0)
    (run,) = _end(correlator, _root(), [], now=5.0)

    assert [r.event_id for r in run.records] == ["a", None, "b", None]
    assert run.records[0].governance_hash == flat_hash("full")  # the full event won, in place
    assert run.records[0].event_type == "INJECT_DENIED"
    assert stats.duplicate_records == 2
    assert stats.records == 6


def test_a_duplicate_of_the_only_record_is_joined_even_at_the_bound(stats: Stats) -> None:
    correlator = _correlator(stats, max_records_per_trace=1)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    _end(correlator, _note(), [_governed("a", "span")], now=1.0)
    correlator.event_ingested(TRACE, record_from_aigp_event(_full_event("a")), now=2.0)
    _end(correlator, _note(span_id=CHILD + 1), [_governed("b", "b"), _governed(None, "c")], now=3.0)
    (run,) = _end(correlator, _root(), [], now=4.0)

    assert [(r.event_id, r.governance_hash) for r in run.records] == [("a", flat_hash("full"))]
    assert run.overflow.count == 2
    assert stats.duplicate_records == 1
    assert stats.records_left_out == 2


def test_an_anonymous_only_record_is_kept_beside_later_anonymous_ones(stats: Stats) -> None:
    correlator = _correlator(stats)
    _end(correlator, _note(), [_governed(None, "x")], now=0.0)
    _end(correlator, _note(span_id=CHILD + 1), [_governed(None, "x"), _governed(None, "y")], now=1.0)
    (run,) = _end(correlator, _root(), [], now=2.0)
    assert [r.governance_hash for r in run.records] == [flat_hash("x"), flat_hash("x"), flat_hash("y")]
    assert stats.duplicate_records == 0


def test_a_late_record_joins_an_ended_run_that_held_one(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    (ended,) = _end(correlator, _root(), [_governed("a", "a")], now=1.0)
    correlator.event_ingested(TRACE, record_from_aigp_event(_full_event("late")), now=2.0)
    (late,) = correlator.settle()
    assert ended.root is not None and late.root == ended.root
    assert late.reason is Reason.LATE
    assert [r.event_id for r in late.records] == ["a", "late"]


def test_timeouts_and_eviction_follow_the_latest_activity(stats: Stats) -> None:
    correlator = _correlator(stats, max_pending_traces=3)
    for now, trace in enumerate((TRACE, OTHER, THIRD)):
        _end(correlator, _note(trace), [_governed(f"{trace:x}")], now=float(now))
    _end(correlator, _note(TRACE, span_id=CHILD + 1), [], now=3.0)  # no record: no activity
    _end(correlator, _note(OTHER, span_id=CHILD + 1), [_governed("o2")], now=4.0)
    _end(correlator, _note(OTHER, span_id=CHILD + 2), [_governed("o3")], now=5.0)  # already the latest
    _end(correlator, _note(TRACE, span_id=CHILD + 2), [_governed("t2")], now=6.0)

    # Least recently active first: THIRD (2.0), then OTHER (5.0), then TRACE (6.0).
    (evicted,) = correlator.root_started(0x42, ROOT, False, now=7.0)
    assert evicted.key == THIRD and evicted.reason is Reason.EVICTED
    timed_out = correlator.expire(now=5.5 + TIMEOUT)
    assert [run.key for run in timed_out] == [OTHER]
    assert [r.event_id for r in timed_out[0].records] == [f"{OTHER:x}", "o2", "o3"]
    assert [run.key for run in correlator.drain()] == [TRACE]
    assert len(correlator) == 0


# --- full AIGP events ---------------------------------------------------------------------


def _full_event(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "INJECT_DENIED",
        "trace_id": f"{TRACE:032x}",
        "governance_hash": flat_hash("full"),
        "hash_type": "sha256",
        "data_classification": "restricted",
        "policy_name": "policy.full",
        "policy_version": 2,
    }


@pytest.mark.parametrize("full_first", [True, False], ids=["event-then-span", "span-then-event"])
def test_full_event_and_span_event_with_the_same_id_are_one_record(stats: Stats, full_first: bool) -> None:
    correlator = _correlator(stats)
    event = _full_event("evt-1")
    key = trace_key_of(event["trace_id"])
    assert key == TRACE
    full = record_from_aigp_event(event)
    span = record_from_attributes(
        {
            sc.EVENT_ID: "evt-1",
            sc.GOVERNANCE_HASH: flat_hash("span"),
            sc.DATA_CLASSIFICATION: "internal",
            sc.AGENT_ID: "agent.from-span",
            "aigp.tools.names": ["tool.search"],
        },
        event_name="aigp.inject.success",
    )
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    if full_first:
        correlator.event_ingested(key, full, now=1.0)
        _end(correlator, _note(), [span], now=2.0)
    else:
        _end(correlator, _note(), [span], now=1.0)
        correlator.event_ingested(key, full, now=2.0)
    (run,) = _end(correlator, _root(), [], now=3.0)

    assert len(run.records) == 1
    (record,) = run.records
    assert record.governance_hash == flat_hash("full")
    assert record.event_type == "INJECT_DENIED"
    assert record.denied is True
    assert record.classification == "restricted"
    assert record.agent_id == "agent.from-span"  # the full event has none: the span fills the gap
    assert {(r.type, r.name) for r in record.resources} == {
        ("policy", "policy.full"),
        ("tool", "tool.search"),
    }
    assert stats.duplicate_records == 1
    assert stats.records == 2


def test_a_repeated_span_event_is_one_record(stats: Stats) -> None:
    correlator = _correlator(stats)
    first = _governed("dup", "first")
    again = _governed("dup", "second")
    _end(correlator, _note(), [first, again], now=0.0)
    (run,) = _end(correlator, _root(), [], now=1.0)
    assert run.records == (first,)
    assert stats.duplicate_records == 1


def test_ingested_events_alone_make_a_governed_trace(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    correlator.event_ingested(TRACE, record_from_aigp_event(_full_event("a")), now=1.0)
    (run,) = _end(correlator, _root(), [], now=2.0)
    assert run.complete is True
    assert len(run.records) == 1


def test_ingested_event_with_a_text_trace_id_times_out_on_its_own(stats: Stats) -> None:
    correlator = _correlator(stats)
    key = trace_key_of("trace-not-hex")
    assert key == "trace-not-hex"
    correlator.event_ingested(key, record_from_aigp_event(_full_event("a")), now=0.0)
    (run,) = correlator.expire(now=TIMEOUT)
    assert run.key == "trace-not-hex"
    assert run.reason is Reason.TIMEOUT
    assert run.complete is False


# --- shutdown and stats -------------------------------------------------------------------


def test_drain_decides_every_governed_pending_trace(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    _end(correlator, _note(TRACE), [_governed("a")], now=1.0)
    _end(correlator, _note(OTHER), [_governed("b")], now=1.0)
    correlator.root_started(THIRD, ROOT, False, now=1.0)  # ungoverned: nothing to emit

    finished = correlator.drain()

    assert sorted(run.key for run in finished) == sorted([TRACE, OTHER])
    assert all(run.reason is Reason.SHUTDOWN for run in finished)
    assert all(run.complete is False for run in finished)
    assert len(correlator) == 0
    assert correlator.drain() == []


def test_invalid_values_are_counted(stats: Stats) -> None:
    correlator = _correlator(stats)
    bad = record_from_attributes(
        {sc.GOVERNANCE_HASH: "NOT-HEX", sc.DATA_CLASSIFICATION: "secret"}, event_name="aigp.inject.success"
    )
    _end(correlator, _note(), [bad], now=0.0)
    assert stats.invalid_values == 2
    assert stats.records == 1


def test_first_start_and_last_end_cover_every_span(stats: Stats) -> None:
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    _end(correlator, _note(start_ns=500, end_ns=9_000), [_governed()], now=1.0)
    (run,) = _end(correlator, _root(start_ns=100, end_ns=8_000), [], now=2.0)
    assert isinstance(run, ClosedRun)
    assert (run.first_start_ns, run.last_end_ns) == (100, 9_000)


@pytest.mark.parametrize(
    ("starts", "ends"),
    [
        ((0, 2**64 - 1), (2**64 - 1, 0)),  # the edges of unsigned 64-bit nanoseconds
        ((2**64, 5), (2**64 + 7, 6)),  # beyond them: kept exactly all the same
        ((-3, 4), (-1, 9)),
    ],
)
def test_first_start_and_last_end_are_exact_whatever_the_values(
    stats: Stats, starts: tuple[int, int], ends: tuple[int, int]
) -> None:
    correlator = _correlator(stats)
    _end(correlator, _note(start_ns=starts[0], end_ns=ends[0]), [_governed()], now=1.0)
    _end(correlator, _note(span_id=CHILD + 1, start_ns=starts[1], end_ns=ends[1]), [_governed()], now=2.0)
    (pending,) = correlator.drain()
    assert (pending.first_start_ns, pending.last_end_ns) == (min(starts), max(ends))


def test_a_continuation_whose_root_has_a_remote_parent_keeps_both(stats: Stats) -> None:
    correlator = _correlator(stats, max_pending_traces=1)
    correlator.root_started(TRACE, ROOT, True, now=0.0)
    _end(correlator, _note(TRACE, local_root_id=ROOT), [_governed("a")], now=1.0)
    (evicted,) = _end(correlator, _note(OTHER), [_governed("b")], now=2.0)
    assert (evicted.key, evicted.root_remote) == (TRACE, True)
    (other,) = correlator.root_started(TRACE, ROOT, True, now=3.0)
    assert other.key == OTHER
    (finished,) = _end(correlator, _root(TRACE, remote_parent=True), [], now=4.0)
    assert (finished.key, finished.reason) == (TRACE, Reason.ROOT_ENDED)
    assert (finished.root_remote, finished.complete) == (True, False)


# --- whatever the order: nothing lost, nothing in the wrong run ---------------------------

_TRACES = st.sampled_from([TRACE, OTHER])
_ROOTS = st.sampled_from([ROOT, 0x1111, 0x2222])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("start"), _TRACES, _ROOTS, st.booleans()),
        st.tuples(st.just("child"), _TRACES, st.none() | _ROOTS, st.booleans()),
        st.tuples(st.just("event"), _TRACES, st.none() | _ROOTS, st.booleans()),
        st.tuples(st.just("end"), _TRACES, _ROOTS, st.booleans()),
        st.tuples(st.just("wait"), _TRACES, _ROOTS, st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, max_pending=st.integers(1, 4))
def test_every_record_reaches_exactly_one_run_and_a_named_root_is_respected(
    ops: list[tuple[str, int, int | None, bool]], max_pending: int
) -> None:
    stats = Stats()
    correlator = _correlator(stats, max_pending_traces=max_pending)
    closed: list[ClosedRun] = []
    wanted_root: dict[str, int] = {}
    now = 0.0
    for position, (kind, trace, root, governed_root) in enumerate(ops):
        now += 1.0
        event_id = f"r{position}"
        if kind == "start":
            assert root is not None
            closed += correlator.root_started(trace, root, False, now)
        elif kind == "child":
            child = _note(trace, 0x5000 + position, local_root_id=root)
            closed += _end(correlator, child, [_governed(event_id)], now)
        elif kind == "event":
            event = {**_full_event(event_id), "trace_id": f"{trace:032x}"}
            closed += correlator.event_ingested(trace, record_from_aigp_event(event), now, root)
        elif kind == "end":
            assert root is not None
            records = [_governed(event_id)] if governed_root else []
            closed += _end(correlator, _root(trace, root), records, now)
            if governed_root:
                wanted_root[event_id] = root
        else:
            closed += correlator.expire(now + TIMEOUT)
        if kind in ("child", "event") and root is not None:
            wanted_root[event_id] = root
    closed += correlator.drain()

    # A late event repeats its run's earlier records (its aggregate covers all of them): each
    # record belongs to exactly one run, and only late events of that run repeat it.
    first = [run for run in closed if run.reason is not Reason.LATE]
    seen = [(r.event_id, run) for run in first for r in run.records]
    late_only = {r.event_id for run in closed if run.reason is Reason.LATE for r in run.records}
    late_only -= {event_id for event_id, _ in seen}
    added = stats.records
    assert len(seen) + len(late_only) == added == len({event_id for event_id, _ in seen} | late_only)
    for position, run in enumerate(closed):
        if run.reason is Reason.LATE:
            ended = [  # the terminal events of that run before it (a root id may recur here)
                c for c in closed[:position]
                if c.reason is Reason.ROOT_ENDED
                and (c.run_key, c.root_span_id) == (run.run_key, run.root_span_id)
            ]
            assert ended
            assert {r.event_id for r in ended[-1].records} <= {r.event_id for r in run.records}
    assert stats.records_left_out == sum(run.overflow.count for run in first) == 0
    for event_id, run in seen:
        if event_id in wanted_root:
            assert run.root_span_id == wanted_root[event_id]
            assert run.key in (TRACE, OTHER)
    assert len(correlator) == 0


_NS = st.one_of(st.integers(0, 10**6), st.integers(2**64 - 3, 2**64 + 3), st.integers(-3, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_NS, _NS), min_size=1, max_size=6))
def test_first_start_and_last_end_are_exact_in_any_order_of_any_values(spans: list[tuple[int, int]]) -> None:
    # A span starting after the first (the usual child) only moves the end: a shortcut of its own.
    correlator = _correlator(Stats())
    for position, (start, end) in enumerate(spans):
        note = _note(span_id=CHILD + position, local_root_id=ROOT, start_ns=start, end_ns=end)
        _end(correlator, note, [_governed(f"e{position}")], now=1.0)
    (run,) = _end(correlator, _root(start_ns=spans[0][0], end_ns=spans[0][1]), [], now=2.0)
    assert (run.first_start_ns, run.last_end_ns) == (min(s for s, _ in spans), max(e for _, e in spans))


def test_spans_of_interleaved_runs_each_reach_their_own_run(stats: Stats) -> None:
    # The spans of the run last active take a shortcut to it: interleaved traces and a second
    # local root of one trace must still reach their own runs, in the order they became active.
    correlator = _correlator(stats)
    second_root = 0x2222
    for trace, root in ((TRACE, ROOT), (OTHER, ROOT), (TRACE, second_root)):
        correlator.root_started(trace, root, False, now=0.0)
    order = [(TRACE, ROOT), (TRACE, ROOT), (OTHER, ROOT), (TRACE, second_root), (TRACE, ROOT), (OTHER, ROOT)]
    for position, (trace, root) in enumerate(order):
        note = _note(trace, CHILD + position, local_root_id=root, start_ns=10, end_ns=20 + position)
        _end(correlator, note, [_governed(f"{trace:x}-{root:x}-{position}")], now=float(position))
    closed = correlator.expire(5.0 + TIMEOUT - 0.5)  # quiet since 4.0 or before; 5.0 still active
    assert [(run.key, run.root_span_id) for run in closed] == [(TRACE, second_root), (TRACE, ROOT)]
    closed += _end(correlator, _root(OTHER), [], now=6.0)
    for run in closed:
        prefix = f"{run.key:x}-{run.root_span_id:x}-"
        assert all((r.event_id or "").startswith(prefix) for r in run.records)
    assert sorted(len(run.records) for run in closed) == [1, 2, 3]
    assert stats.records == len(order)


# --- a request sent again; a root before its children (the gateway) ---------------------------


def test_records_a_run_already_holds_sent_again_add_no_event(stats: Stats) -> None:
    correlator = _correlator(stats)
    _end(correlator, _note(local_root_id=ROOT), [_governed("e-1")], now=1.0)
    (run,) = _end(correlator, _root(), [_governed("e-2", "b")], now=1.0)
    assert run.reason is Reason.ROOT_ENDED
    # An exporter retries the whole request after a lost answer: the child, then the root.
    assert _end(correlator, _note(local_root_id=ROOT), [_governed("e-1")], now=2.0) == []
    assert _end(correlator, _root(), [_governed("e-2", "b")], now=2.0) == []
    assert correlator.settle() == []
    assert stats.duplicate_records == 2
    # A record it does not hold still comes late, as an OTHER event of the same run.
    _end(correlator, _note(local_root_id=ROOT), [_governed("e-3", "c")], now=3.0)
    (late,) = correlator.settle()
    assert late.reason is Reason.LATE
    assert sorted(r.event_id or "" for r in late.records) == ["e-1", "e-2", "e-3"]


def test_a_root_sent_again_without_records_adds_no_event_even_when_ungoverned_runs_emit(
    stats: Stats,
) -> None:
    correlator = _correlator(stats, emit_ungoverned=True)
    (run,) = _end(correlator, _root(), [], now=1.0)
    assert run.reason is Reason.ROOT_ENDED
    assert _end(correlator, _root(), [], now=2.0) == []


def test_an_ungoverned_root_before_its_children_makes_their_run_with_its_status_and_job(
    stats: Stats,
) -> None:
    correlator = _correlator(stats, remember_ungoverned_roots=True)
    root = _root(name="plan")
    assert _end(correlator, root, [], now=1.0) == []  # nothing governed yet: no event
    _end(correlator, _note(local_root_id=ROOT, name="policy"), [_governed("e-1")], now=5.0)
    _end(correlator, _note(span_id=0x99, local_root_id=ROOT), [_governed("e-2", "b")], now=5.0)
    (run,) = correlator.settle()
    assert run.reason is Reason.ROOT_ENDED  # the run's terminal event, not a late one
    assert run.complete is True
    assert run.root is not None and run.root.span_id == ROOT
    assert [r.event_id for r in run.records] == ["e-1", "e-2"]
    assert stats.late_events == 0
    summary = aggregate(run.records, run.overflow, max_inputs=10)
    job = name_run(run, summary, BridgeConfig(job_namespace="ns"), run_link=RUN_LINKS.run_link)
    assert job.job_name.endswith("plan")
    correlator.named(run, (job.job_namespace, job.job_name))
    # Later records are late records of that run, which names the same job.
    _end(correlator, _note(span_id=0x98, local_root_id=ROOT), [_governed("e-3", "c")], now=6.0)
    (late,) = correlator.settle()
    assert late.reason is Reason.LATE and late.job == (job.job_namespace, job.job_name)


def test_ungoverned_roots_are_remembered_apart_and_bounded(stats: Stats) -> None:
    correlator = _correlator(stats, remember_ungoverned_roots=True, max_pending_traces=2)
    assert _end(correlator, _root(OTHER), [_governed("e-0")], now=1.0)
    for trace in (TRACE, THIRD, 0x22222222222222222222222222222222):  # three quiet roots, bound 2
        _end(correlator, _root(trace), [], now=1.0)
    _end(correlator, _note(TRACE, local_root_id=ROOT), [_governed("e-1")], now=2.0)
    assert correlator.settle() == []  # the oldest quiet root was forgotten: a pending run instead
    _end(correlator, _note(OTHER, local_root_id=ROOT), [_governed("e-2", "b")], now=2.0)
    (late,) = correlator.settle()  # the governed run is still remembered
    assert late.reason is Reason.LATE and late.key == OTHER
    # Without the setting (in process) nothing is remembered of an ungoverned root.
    plain = _correlator(Stats())
    _end(plain, _root(), [], now=1.0)
    _end(plain, _note(local_root_id=ROOT), [_governed("e-1")], now=2.0)
    assert plain.settle() == []
    (timed_out,) = plain.expire(2.0 + TIMEOUT + 1)
    assert timed_out.reason is Reason.TIMEOUT


def test_a_quiet_root_made_a_run_keeps_the_bound_of_ended_runs(stats: Stats) -> None:
    # Its first records make it an ended run: one ended run too many pushes the oldest out, and
    # the late records waiting in that one go out first, as when any ended run is remembered.
    correlator = _correlator(stats, remember_ungoverned_roots=True, max_pending_traces=1)
    assert _end(correlator, _root(OTHER), [_governed("e-0")], now=1.0)
    _end(correlator, _note(OTHER, local_root_id=ROOT), [_governed("e-1", "b")], now=2.0)  # waits
    assert _end(correlator, _root(TRACE), [], now=2.0) == []  # a quiet root
    (late,) = _end(correlator, _note(TRACE, local_root_id=ROOT), [_governed("e-2", "c")], now=3.0)
    assert late.reason is Reason.LATE and late.key == OTHER
    assert stats.ended_runs_forgotten == 1 and stats.late_events == 1
    (run,) = correlator.settle()
    assert run.reason is Reason.ROOT_ENDED and run.key == TRACE
    assert stats.late_events == 1


def test_forgotten_quiet_roots_expire_with_the_timeout(stats: Stats) -> None:
    correlator = _correlator(stats, remember_ungoverned_roots=True)
    _end(correlator, _root(), [], now=1.0)
    correlator.expire(1.0 + TIMEOUT + 1)
    _end(correlator, _note(local_root_id=ROOT), [_governed("e-1")], now=TIMEOUT + 3)
    assert correlator.settle() == []
