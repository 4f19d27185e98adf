"""Which tool a tool-less record is about, whatever order the spans end in (contract section 9)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from aigp_otel_bridge.note import SpanNote
from aigp_otel_bridge.stages.aggregate import aggregate
from aigp_otel_bridge.stages.correlate import ClosedRun, Correlator, Reason, ToolAttribution
from aigp_otel_bridge.stages.extract import Extractor
from aigp_otel_bridge.telemetry import Stats
from tests.test_correlate import ROOT, TRACE, _correlator, _end, _governed, _note, _root

TOOL_SPAN, MIDDLE, LEAF, OTHER_TOOL = 0xA1, 0xA2, 0xA3, 0xA4


def _span(span_id: int, parent: int, attributes: dict[str, Any] | None = None, start_ns: int = 1000
          ) -> SpanNote:
    note = _note(span_id=span_id, local_root_id=ROOT, attributes=attributes, start_ns=start_ns)
    return replace(note, parent_span_id=parent)


def _tool(name: str) -> dict[str, object]:
    return {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}


def _tools_of(run: ClosedRun) -> dict[str, tuple[bool, tuple[str, ...]]]:
    """tool input -> (governed, content hashes)."""
    summary = aggregate(run.records, run.overflow, observed=run.observed)
    return {r.name: (r.governed, r.content_hashes) for r in summary.resources if r.type == "tool"}


def _close(correlator: Correlator) -> ClosedRun:
    (run,) = _end(correlator, _root(), [], now=9.0)
    return run


def test_tool_attribution_passes_waiting_records_up_until_a_tool_span_claims_them() -> None:
    tools = ToolAttribution()
    assert tools.span_ended(LEAF, MIDDLE, ["a"]) == (None, [])  # MIDDLE not seen: "a" waits
    assert tools.span_ended(MIDDLE, TOOL_SPAN, ["b"]) == (None, [])  # "a" moves up beside "b"
    assert tools.tool_span_ended(TOOL_SPAN, "tool.query_db") == ["b", "a"]
    assert tools.tool_span_ended(TOOL_SPAN, "tool.query_db") == []  # claimed once
    # A later child of the tool span finds it at once.
    assert tools.span_ended(OTHER_TOOL, TOOL_SPAN, ["c"]) == ("tool.query_db", ["c"])
    tools.span_ended(0xB1, 0xB2, ["d"])
    tools.child_of_root_ended(0xB2)  # right under the root: "d" has no tool ancestor
    assert tools.tool_span_ended(0xB2, "tool.other") == []


def test_a_record_deep_under_a_tool_span_is_about_it_when_the_spans_between_reach_correlation() -> None:
    correlator = _correlator(Stats())
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    record = _governed("deep", content="rows")
    _end(correlator, _span(LEAF, MIDDLE), [record], now=1.0)
    # The middle span is a chat span: it reaches correlation and passes the record up.
    _end(correlator, _span(MIDDLE, TOOL_SPAN, {"gen_ai.request.model": "m"}), [], now=2.0)
    _end(correlator, _span(TOOL_SPAN, ROOT, _tool("query_db")), [], now=3.0)
    tools = _tools_of(_close(correlator))
    assert tools == {"tool.query_db": (True, (record.governance_hash,))}


def test_a_tool_span_that_ended_before_its_child_still_claims_the_childs_record() -> None:
    correlator = _correlator(Stats())
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    _end(correlator, _span(TOOL_SPAN, ROOT, _tool("async_job")), [], now=1.0)
    record = _governed("child", content="job")
    _end(correlator, _span(LEAF, TOOL_SPAN), [record], now=2.0)
    assert _tools_of(_close(correlator)) == {"tool.async_job": (True, (record.governance_hash,))}


def test_the_nearest_tool_wins_and_a_record_naming_a_tool_keeps_it() -> None:
    correlator = _correlator(Stats())
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    inner = _governed("inner", content="inner")
    named = _governed("named", content="named", **{"aigp.tools.names": ["tool.explicit"]})
    _end(correlator, _span(LEAF, OTHER_TOOL), [inner, named], now=1.0)
    _end(correlator, _span(OTHER_TOOL, TOOL_SPAN, _tool("inner_tool")), [], now=2.0)
    _end(correlator, _span(TOOL_SPAN, ROOT, _tool("outer_tool")), [], now=3.0)
    tools = _tools_of(_close(correlator))
    assert tools["tool.inner_tool"] == (True, (inner.governance_hash,))
    assert tools["tool.outer_tool"] == (False, ())  # observed only
    assert tools["tool.explicit"][0] is True


def test_an_execute_tool_root_takes_every_tool_less_record_of_its_run() -> None:
    correlator = _correlator(Stats())
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    record = _governed("r", content="served")
    _end(correlator, _span(LEAF, ROOT), [record], now=1.0)
    (run,) = _end(correlator, _root(attributes=_tool("remote_tool")), [], now=2.0)
    assert _tools_of(run) == {"tool.remote_tool": (True, (record.governance_hash,))}


def test_records_under_an_unseen_span_stay_tool_less_and_nothing_is_lost() -> None:
    """The documented limit: a plain span between the record and the tool never reaches correlation."""
    stats = Stats()
    correlator = _correlator(stats)
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    record = _governed("lost-link", content="x")
    _end(correlator, _span(LEAF, MIDDLE), [record], now=1.0)
    _end(correlator, _span(TOOL_SPAN, ROOT, _tool("query_db")), [], now=3.0)
    run = _close(correlator)
    assert run.reason is Reason.ROOT_ENDED and len(run.records) == 1
    assert _tools_of(run) == {"tool.query_db": (False, ())}
    assert stats.records == 1


def test_the_job_task_candidate_is_the_earliest_started_agent_span_under_the_root() -> None:
    correlator = _correlator(Stats())
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    agent = "gen_ai.agent.name"
    _end(correlator, _span(LEAF, MIDDLE, {agent: "inner"}, start_ns=1_500), [], now=1.0)
    _end(correlator, _span(MIDDLE, ROOT, {agent: "outer"}, start_ns=1_100), [_governed("g")], now=2.0)
    _end(correlator, _span(OTHER_TOOL, ROOT, {agent: "later"}, start_ns=1_900), [], now=3.0)
    assert _close(correlator).agent_name == "outer"


def test_many_waiting_records_under_two_tools_each_find_theirs() -> None:
    """Past eight waiting records the run keeps them grouped by span: every one still lands."""
    correlator = _correlator(Stats())
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    first = [_governed(f"a{i}", content=f"a{i}") for i in range(7)]
    second = [_governed(f"b{i}", content=f"b{i}") for i in range(7)]
    for index, record in enumerate(first):
        _end(correlator, _span(0x100 + index, TOOL_SPAN), [record], now=1.0)
    for index, record in enumerate(second):
        _end(correlator, _span(0x200 + index, OTHER_TOOL), [record], now=1.5)
    _end(correlator, _span(TOOL_SPAN, ROOT, _tool("first_tool")), [], now=2.0)
    _end(correlator, _span(OTHER_TOOL, ROOT, _tool("second_tool")), [], now=3.0)
    tools = _tools_of(_close(correlator))
    assert tools["tool.first_tool"] == (True, tuple(sorted(r.governance_hash for r in first)))
    assert tools["tool.second_tool"] == (True, tuple(sorted(r.governance_hash for r in second)))


@pytest.mark.parametrize("event_id", ["first", None], ids=["with-id", "anonymous"])
def test_the_only_record_made_about_a_tool_stays_so_when_more_arrive(event_id: str | None) -> None:
    correlator = _correlator(Stats())
    correlator.root_started(TRACE, ROOT, False, now=0.0)
    first = _governed(event_id, content="first")
    _end(correlator, _span(LEAF, TOOL_SPAN), [first], now=1.0)  # waits for its tool ancestor
    _end(correlator, _span(TOOL_SPAN, ROOT, _tool("query_db")), [], now=2.0)
    second = _governed(None, content="second")
    _end(correlator, _span(MIDDLE, ROOT), [second], now=3.0)
    run = _close(correlator)
    assert [r.governance_hash for r in run.records] == [first.governance_hash, second.governance_hash]
    assert _tools_of(run) == {"tool.query_db": (True, (first.governance_hash,))}


def test_a_model_seen_before_on_another_run_is_still_observed_where_it_is_new() -> None:
    # A chat span naming a model its run has seen is not observed again; the same facts on a run
    # in another state (another model seen, a tool, nothing yet) must still add what they name.
    correlator = _correlator(Stats(), emit_ungoverned=True)
    extractor = Extractor()
    chat = {"gen_ai.request.model": "m", "gen_ai.provider.name": "p"}
    other = 0x0AF7651916CD43DD8448EB211C80319C

    def end(trace: int, span_id: int, attributes: dict[str, Any]) -> None:
        note = replace(_note(trace, span_id, local_root_id=ROOT, attributes=attributes), parent_span_id=ROOT)
        correlator.span_ended(extractor.span(note), 1.0)

    end(TRACE, 0x10, chat)
    end(TRACE, 0x11, chat)  # seen before on this run: nothing new
    end(other, 0x12, {"gen_ai.request.model": "n"})
    end(other, 0x13, chat)  # the same facts, on a run that has not seen them
    end(TRACE, 0x14, _tool("lookup"))
    end(TRACE, 0x15, chat)  # the same facts again, on a run whose state has changed since
    (first,) = _end(correlator, _root(TRACE), [], now=2.0)
    (second,) = _end(correlator, _root(other), [], now=2.0)
    assert first.observed == (("model", "model.m", "p"), ("tool", "tool.lookup", None))
    assert second.observed == (("model", "model.m", "p"), ("model", "model.n", None))


def test_observations_past_the_bound_are_counted_on_every_run_that_sees_them() -> None:
    # Runs that see the same models are alike: each run past the bound counts its own.
    stats = Stats()
    correlator = _correlator(stats, max_records_per_trace=1, emit_ungoverned=True)
    extractor = Extractor()
    other = 0x0AF7651916CD43DD8448EB211C80319C
    for trace in (TRACE, other):
        for span_id, model in ((0x10, "m"), (0x11, "n"), (0x12, "n")):
            note = replace(
                _note(trace, span_id, local_root_id=ROOT, attributes={"gen_ai.request.model": model}),
                parent_span_id=ROOT,
            )
            correlator.span_ended(extractor.span(note), 1.0)
    runs = [*_end(correlator, _root(TRACE), [], now=2.0), *_end(correlator, _root(other), [], now=2.0)]
    assert [run.observed for run in runs] == [(("model", "model.m", None),)] * 2
    assert stats.invalid_values == 4  # "n" twice on each run, past the bound of one


def test_many_runs_each_keep_exactly_the_models_they_saw() -> None:
    correlator = _correlator(Stats(), emit_ungoverned=True, max_pending_traces=1000)
    extractor = Extractor()
    traces = range(1, 130)
    for trace in traces:  # a model of its own, then one every run shares
        for span_id, model in ((0x10, f"m{trace}"), (0x11, "shared")):
            note = replace(
                _note(trace, span_id, local_root_id=ROOT, attributes={"gen_ai.request.model": model}),
                parent_span_id=ROOT,
            )
            correlator.span_ended(extractor.span(note), 1.0)
    for trace in traces:
        (run,) = _end(correlator, _root(trace), [], now=2.0)
        wanted = sorted([("model", f"model.m{trace}", None), ("model", "model.shared", None)])
        assert run.observed == tuple(wanted)
