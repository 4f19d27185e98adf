"""The shortcuts give exactly what the plain computation gives.

Run ids and timestamps are written directly, and each is held here to
the straightforward result; a bounded memo forgets, and never answers wrongly.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openlineage.client.event_v2 import Run, RunState

from aigp_otel_bridge.memo import BoundedMemo
from aigp_otel_bridge.openlineage import _session_run, build_openlineage_run_event
from aigp_otel_bridge.propagated_links import run_id_for_trace
from aigp_otel_bridge.stages.build import build_run_event, iso_millis
from tests.factories import store_event

TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
ISO_MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _event(number: int = 0, **fields: object) -> dict[str, Any]:
    return store_event(number, **{"trace_id": TRACE_HEX, **fields})


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
    """Every bounded memo of the bridge (``memo.BoundedMemo``) holds at most its limit: the entry
    past it starts afresh, and what was forgotten is computed again, never answered wrongly."""
    memo: BoundedMemo[int, str] = BoundedMemo(3)
    assert [memo.remember(key, f"v{key}") for key in range(3)] == ["v0", "v1", "v2"]
    assert [(key, memo.get(key)) for key in memo] == [(0, "v0"), (1, "v1"), (2, "v2")]
    assert memo.remember(3, "v3") == "v3"
    assert (list(memo), memo.get(0), 3 in memo) == ([3], None, True)
    memo.remember(3, "again")  # a key already there is replaced, nothing forgotten
    assert (len(memo), memo.get(3)) == (1, "again")
