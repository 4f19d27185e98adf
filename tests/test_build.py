"""Build: run ids, times, job naming and the RunEvent itself (bridge contract, sections 3 and 6)."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from openlineage.client.event_v2 import RunState
from openlineage.client.serde import Serde

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.config import resolve
from aigp_otel_bridge.merkle import EMPTY_SHA256, flat_hash
from aigp_otel_bridge.note import NoteEvent, SpanNote
from aigp_otel_bridge.propagated_links import (
    RUN_ID_NAMESPACE,
    RUN_LINKS,
    RunIdentity,
    RunParent,
    run_id_for_remote_root,
    run_id_for_trace,
)
from aigp_otel_bridge.run_inputs import Overflow
from aigp_otel_bridge.stages.aggregate import aggregate
from aigp_otel_bridge.stages.build import build_run_event, iso_millis, job_name_for, name_run
from aigp_otel_bridge.stages.correlate import ClosedRun, Reason
from aigp_otel_bridge.stages.extract import (
    GovernanceRecord,
    RootInfo,
    record_from_aigp_event,
    record_from_attributes,
    resource_facts,
    root_facts,
)
from tests.factories import two_leaves
from tests.schemas import validate_run_event

TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE = int(TRACE_HEX, 16)
ROOT = 0x00F067AA0BA902B7
ISO_MILLIS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
START_NS = 1_771_151_400_000_000_000  # 2026-02-15T10:30:00Z
END_NS = START_NS + 456_789_123


# --- run ids ------------------------------------------------------------------------------


def test_run_id_of_a_32_hex_trace_id_is_its_canonical_uuid() -> None:
    assert run_id_for_trace(TRACE_HEX) == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    assert run_id_for_trace(TRACE_HEX) == str(uuid.UUID(hex=TRACE_HEX))


def test_run_id_of_an_uppercase_hex_trace_id_is_lowercase() -> None:
    assert run_id_for_trace(TRACE_HEX.upper()) == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"


@pytest.mark.parametrize(
    "text", ["4bf92f35-77b3-4da6-a3ce-929d0e0e4736", "4BF92F35-77B3-4DA6-A3CE-929D0E0E4736"]
)
def test_run_id_of_a_uuid_trace_id_keeps_its_canonical_form(text: str) -> None:
    assert run_id_for_trace(text) == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"


@pytest.mark.parametrize(
    "text",
    [
        "trace-4bf92f35-77b3-4da6-a3ce-929d0e0e4736",
        "not hex at all",
        TRACE_HEX[:31],
        TRACE_HEX + "0",
        "zz" * 16,
    ],
)
def test_other_trace_ids_map_to_a_stable_uuid5(text: str) -> None:
    run_id = run_id_for_trace(text)
    assert run_id == str(uuid.uuid5(RUN_ID_NAMESPACE, text))
    assert run_id == run_id_for_trace(text)
    assert uuid.UUID(run_id).version == 5
    assert run_id == str(uuid.UUID(run_id))


def test_distinct_malformed_trace_ids_get_distinct_run_ids() -> None:
    assert run_id_for_trace("trace-a") != run_id_for_trace("trace-b")


def test_remote_root_run_id_is_its_own_and_stable() -> None:
    remote = run_id_for_remote_root(TRACE_HEX, f"{ROOT:016x}")
    assert remote != run_id_for_trace(TRACE_HEX)
    assert remote == run_id_for_remote_root(TRACE_HEX, f"{ROOT:016x}")
    assert remote != run_id_for_remote_root(TRACE_HEX, f"{ROOT + 1:016x}")
    assert remote == str(uuid.UUID(remote))


# --- times --------------------------------------------------------------------------------


def test_iso_millis_is_utc_with_three_decimals_and_z() -> None:
    assert iso_millis(END_NS) == "2026-02-15T10:30:00.456Z"
    assert iso_millis(0) == "1970-01-01T00:00:00.000Z"
    assert iso_millis(START_NS + 999_999_999) == "2026-02-15T10:30:00.999Z"


def test_iso_millis_of_none_is_now() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    text = iso_millis(None)
    assert ISO_MILLIS.fullmatch(text)
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert moment >= before
    assert moment.year >= 2024


def test_iso_millis_of_an_out_of_range_time_falls_back_to_now() -> None:
    assert ISO_MILLIS.fullmatch(iso_millis(10**30))


# --- job names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent_id", "service", "span", "expected"),
    [
        ("agent.trading-bot-v2", "svc", "invoke", "trading-bot-v2.invoke"),
        ("custom-agent", "svc", "invoke", "custom-agent.invoke"),
        (None, "checkout", "invoke", "checkout.invoke"),
        ("", "checkout", "invoke", "checkout.invoke"),
    ],
)
def test_job_name_for(agent_id: str | None, service: str | None, span: str, expected: str) -> None:
    assert job_name_for(agent_id, service, span) == expected


# --- name_run -----------------------------------------------------------------------------


def _root(
    *,
    error: bool = False,
    attributes: dict[str, Any] | None = None,
    resource: dict[str, Any] | None = None,
    remote_parent: bool = False,
    status_description: str | None = None,
    exception: NoteEvent | None = None,
) -> SpanNote:
    return SpanNote(
        trace_id=TRACE,
        span_id=ROOT,
        parent_span_id=0x1234 if remote_parent else None,
        remote_parent=remote_parent,
        local_root_id=ROOT,
        name="invoke",
        start_ns=START_NS,
        end_ns=END_NS,
        governance_events=(),
        attributes=attributes if attributes is not None else {},
        governed_attributes=False,
        resource=resource if resource is not None else {"service.name": "svc"},
        error=error,
        status_description=status_description,
        exception=exception,
    )


def _finished(
    records: tuple[GovernanceRecord, ...],
    *,
    reason: Reason = Reason.ROOT_ENDED,
    roots: tuple[SpanNote, ...] | None = None,
    resource: dict[str, Any] | None = None,
    key: int | str = TRACE,
) -> ClosedRun:
    """A closed run as correlation hands it over; its resource is its root's, when it has one."""
    roots = (_root(),) if roots is None else roots
    early = reason is not Reason.ROOT_ENDED
    resource = roots[0].resource if roots else resource
    return ClosedRun(
        key=key,
        root_span_id=roots[0].span_id if roots else None,
        root_remote=roots[0].remote_parent if roots else False,
        records=records,
        overflow=Overflow(),
        reason=reason,
        complete=not early,
        root=root_facts(roots[0]) if roots else None,
        first_span_name="retrieve",
        resource=resource_facts(resource if resource is not None else {"service.name": "svc"}),
        first_start_ns=START_NS - 1_000_000,
        last_end_ns=END_NS + 5_000_000_000,
    )


def _records() -> tuple[GovernanceRecord, ...]:
    return (
        record_from_attributes(
            {
                sc.EVENT_ID: "e-1",
                sc.GOVERNANCE_HASH: flat_hash("limits"),
                sc.POLICY_NAME: "policy.trading-limits",
                sc.POLICY_VERSION: 4,
                sc.DATA_CLASSIFICATION: "confidential",
                sc.AGENT_ID: "agent.trading-bot-v2",
            },
            event_name="aigp.inject.success",
            time_ns=START_NS + 1,
        ),
        record_from_attributes({sc.EVENT_ID: "e-2"}, event_name="aigp.tool.denied", time_ns=START_NS + 2),
    )


def _named(finished: ClosedRun, **config: Any) -> Any:
    config.setdefault("job_namespace", "finco.trading")
    summary = aggregate(finished.records, finished.overflow)
    return name_run(finished, summary, resolve(config), run_link=RUN_LINKS.run_link)


def test_name_run_complete() -> None:
    run = _named(_finished(_records()))
    assert run.event_type is RunState.COMPLETE
    assert run.event_time_ns == END_NS
    assert run.run_id == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    assert run.trace_id == TRACE_HEX
    assert run.complete is True
    assert run.error is None
    assert run.nominal_start_ns == START_NS
    assert run.job_namespace == "finco.trading"
    assert run.resource_namespace == "finco.trading"


def test_name_run_fail_carries_the_error() -> None:
    root = _root(error=True, status_description="backend down")
    run = _named(_finished(_records(), roots=(root,)))
    assert run.event_type is RunState.FAIL
    assert run.error is not None
    assert run.error.message == "backend down"


def test_name_run_fail_from_the_recorded_exception() -> None:
    exception = NoteEvent(
        "exception",
        END_NS,
        {
            sc.EXCEPTION_TYPE: "RuntimeError",
            sc.EXCEPTION_MESSAGE: "no quota",
            sc.EXCEPTION_STACKTRACE: "tb",
        },
    )
    run = _named(_finished(_records(), roots=(_root(error=True, exception=exception),)))
    assert run.event_type is RunState.FAIL
    assert (run.error.message, run.error.stack_trace) == ("RuntimeError: no quota", "tb")


@pytest.mark.parametrize("reason", [Reason.TIMEOUT, Reason.EVICTED, Reason.SHUTDOWN])
def test_name_run_running_for_early_runs(reason: Reason) -> None:
    finished = _finished(_records(), reason=reason, roots=())
    run = _named(finished)
    assert run.event_type is RunState.RUNNING
    assert run.complete is False
    assert run.event_time_ns == finished.last_end_ns
    assert run.job_name == "trading-bot-v2.retrieve"  # no root known: the first governed span's name
    assert run.error is None


def test_name_run_remote_parent_root_gets_its_own_run_id() -> None:
    run = _named(_finished(_records(), roots=(_root(remote_parent=True),)))
    assert run.run_id == run_id_for_remote_root(TRACE_HEX, f"{ROOT:016x}")


def test_name_run_takes_job_and_parent_from_the_run_link_it_is_given() -> None:
    """``name_run`` asks the ``run_link`` its caller passes (the engine passes the process's
    registry) for a job fixed earlier and for the run's parent, with the job it named itself."""
    asked: list[tuple[Any, ...]] = []
    caller = RunIdentity("3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b", "finco", "planner.invoke")
    parent = RunParent(caller, caller)

    def run_link(
        trace_id: int | str, span_id: int, remote: bool, job: tuple[str, str]
    ) -> tuple[tuple[str, str], RunParent | None]:
        asked.append((trace_id, span_id, remote, job))
        return ("fixed", "desk.invoke"), parent

    finished = _finished(_records())
    config = resolve({"job_namespace": "finco.trading"})
    run = name_run(finished, aggregate(finished.records), config, run_link=run_link)
    assert asked == [(TRACE, ROOT, False, ("finco.trading", "trading-bot-v2.invoke"))]
    assert (run.job_namespace, run.job_name, run.parent) == ("fixed", "desk.invoke", parent)
    assert run.resource_namespace == "fixed"  # no resource namespace set: the job's


def test_name_run_text_trace_key() -> None:
    run = _named(_finished(_records(), key="trace-abc", roots=(), reason=Reason.TIMEOUT))
    assert run.trace_id == "trace-abc"
    assert run.run_id == str(uuid.uuid5(RUN_ID_NAMESPACE, "trace-abc"))


@pytest.mark.parametrize(
    ("root_attributes", "resource", "records", "expected"),
    [
        (
            {sc.AGENT_ID: "agent.span"},
            {sc.AGENT_ID: "agent.resource", "service.name": "svc"},
            True,
            "agent.span",
        ),
        ({}, {sc.AGENT_ID: "agent.resource", "service.name": "svc"}, True, "agent.resource"),
        ({}, {"service.name": "svc"}, True, "agent.trading-bot-v2"),
        ({}, {"service.name": "svc"}, False, "svc"),
    ],
)
def test_agent_id_precedence(
    root_attributes: dict[str, Any], resource: dict[str, Any], records: bool, expected: str
) -> None:
    root = _root(attributes=root_attributes, resource=resource)
    run = _named(_finished(_records() if records else (), roots=(root,), resource=resource))
    assert run.agent_id == expected


def test_default_job_name_uses_agent_and_root_span() -> None:
    root = _root(attributes={sc.AGENT_ID: "agent.trading-bot-v2"})
    assert _named(_finished(_records(), roots=(root,))).job_name == "trading-bot-v2.invoke"


def test_default_job_name_without_agent_uses_service_name() -> None:
    assert _named(_finished((), roots=(_root(),))).job_name == "svc.invoke"


def test_job_name_string_setting_wins() -> None:
    assert _named(_finished(_records()), job_name="fixed.job").job_name == "fixed.job"


def test_job_name_callable_receives_root_info() -> None:
    seen: list[RootInfo] = []

    def name(root: RootInfo) -> str:
        seen.append(root)
        return f"custom.{root.name}"

    root = _root(
        attributes={sc.AGENT_ID: "agent.trading-bot-v2", "http.route": "/invoke"},
        resource={"service.name": "svc", "deployment.environment": "prod"},
    )
    run = _named(_finished(_records(), roots=(root,)), job_name=name)
    assert run.job_name == "custom.invoke"
    (info,) = seen
    assert info.name == "invoke"
    assert info.attributes["http.route"] == "/invoke"
    assert info.resource["deployment.environment"] == "prod"
    assert info.agent_id == "agent.trading-bot-v2"
    assert info.trace_id == TRACE_HEX


def test_raising_job_name_callable_falls_back_to_the_default(caplog: pytest.LogCaptureFixture) -> None:
    def broken(root: RootInfo) -> str:
        raise RuntimeError("bug in user code")

    root = _root(attributes={sc.AGENT_ID: "agent.trading-bot-v2"})
    with caplog.at_level(logging.WARNING):
        run = _named(_finished(_records(), roots=(root,)), job_name=broken)
    assert run.job_name == "trading-bot-v2.invoke"
    assert caplog.records


@pytest.mark.parametrize("returned", ["", None, 42])
def test_job_name_callable_returning_no_name_falls_back(returned: object) -> None:
    root = _root(attributes={sc.AGENT_ID: "agent.trading-bot-v2"})
    run = _named(_finished(_records(), roots=(root,)), job_name=lambda _root: returned)
    assert run.job_name == "trading-bot-v2.invoke"


def test_job_namespace_config_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "from-env")
    resource = {"service.name": "svc", "service.namespace": "from-resource"}
    run = _named(_finished(_records(), roots=(_root(resource=resource),)), job_namespace="explicit")
    assert run.job_namespace == "explicit"


def test_job_namespace_from_openlineage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "from-env")
    resource = {"service.name": "svc", "service.namespace": "from-resource"}
    run = _named(_finished(_records(), roots=(_root(resource=resource),)), job_namespace=None)
    assert run.job_namespace == "from-env"


def test_job_namespace_from_service_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENLINEAGE_NAMESPACE", raising=False)
    resource = {"service.name": "svc", "service.namespace": "from-resource"}
    run = _named(_finished(_records(), roots=(_root(resource=resource),)), job_namespace=None)
    assert run.job_namespace == "from-resource"
    assert run.resource_namespace == "from-resource"


def test_job_namespace_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENLINEAGE_NAMESPACE", raising=False)
    run = _named(_finished(_records()), job_namespace=None)
    assert run.job_namespace == "default"


def test_resource_namespace_setting() -> None:
    run = _named(_finished(_records()), resource_namespace="aigp.resources")
    assert run.job_namespace == "finco.trading"
    assert run.resource_namespace == "aigp.resources"


# --- the RunEvent -------------------------------------------------------------------------


def _event(run: Any) -> dict[str, Any]:
    event = Serde.to_dict(build_run_event(run, "https://example.com/aigp-otel-bridge"))
    validate_run_event(event)
    return event


def test_complete_run_event_is_schema_valid_and_carries_the_proof() -> None:
    run = _named(_finished(_records(), roots=(_root(attributes={sc.AGENT_ID: "agent.trading-bot-v2"}),)))
    event = _event(run)
    assert event["eventType"] == "COMPLETE"
    assert event["eventTime"] == "2026-02-15T10:30:00.456Z"
    assert event["run"]["runId"] == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    assert event["job"] == {
        "namespace": "finco.trading",
        "name": "trading-bot-v2.invoke",
        "facets": event["job"]["facets"],
    }
    job_type = event["job"]["facets"]["jobType"]
    assert (job_type["processingType"], job_type["integration"], job_type["jobType"]) == (
        "BATCH",
        "AIGP",
        "AGENT",
    )
    facet = event["run"]["facets"]["aigp_governance"]
    assert facet["governanceHash"] == flat_hash("limits")
    assert facet["hashType"] == "sha256"
    assert facet["leafCount"] == 1
    assert facet["enforcementResult"] == "denied"
    assert facet["dataClassification"] == "confidential"
    assert facet["eventCount"] == 2
    assert facet["deniedEventCount"] == 1
    assert facet["complete"] is True
    assert facet["traceId"] == TRACE_HEX
    assert facet["specVersion"] == "0.8.0"
    assert "errorMessage" not in event["run"]["facets"]
    (dataset,) = event["inputs"]
    assert (dataset["namespace"], dataset["name"]) == ("finco.trading", "policy.trading-limits")
    resource = dataset["inputFacets"]["aigp_resource"]
    assert (resource["resourceType"], resource["resourceVersion"]) == ("policy", 4)
    assert resource["contentHash"] == flat_hash("limits")
    assert "leafHash" not in resource or resource["leafHash"] is None
    nominal = event["run"]["facets"]["nominalTime"]
    assert nominal["nominalStartTime"] == "2026-02-15T10:30:00.000Z"


def test_fail_run_event_has_an_error_message() -> None:
    run = _named(_finished(_records(), roots=(_root(error=True, status_description="backend down"),)))
    event = _event(run)
    assert event["eventType"] == "FAIL"
    error = event["run"]["facets"]["errorMessage"]
    assert error["message"] == "backend down"
    assert error["programmingLanguage"] == "python"


def test_running_run_event_is_incomplete_and_valid() -> None:
    event = _event(_named(_finished(_records(), reason=Reason.TIMEOUT, roots=())))
    assert event["eventType"] == "RUNNING"
    assert event["run"]["facets"]["aigp_governance"]["complete"] is False
    assert event["eventTime"] == iso_millis(END_NS + 5_000_000_000)


def test_ungoverned_run_event_uses_the_empty_hash_and_is_valid() -> None:
    event = _event(_named(_finished(())))
    facet = event["run"]["facets"]["aigp_governance"]
    assert facet["governanceHash"] == EMPTY_SHA256
    assert facet["hashType"] == "sha256"
    assert "leafCount" not in facet or facet["leafCount"] is None
    assert event["inputs"] == []


def test_merkle_run_event_with_leaf_hashes_and_several_agents_is_valid() -> None:
    leaves = two_leaves()
    full = record_from_aigp_event(
        {
            "event_id": "full-1",
            "event_type": "GOVERNANCE_PROOF",
            "agent_id": "agent.other",
            "governance_hash": flat_hash("root"),
            "hash_type": "merkle-sha256",
            "governance_merkle_tree": {"algorithm": "sha256", "leaf_count": 2, "leaves": leaves},
        }
    )
    event = _event(_named(_finished((*_records(), full))))
    facet = event["run"]["facets"]["aigp_governance"]
    assert facet["hashType"] == "merkle-sha256"
    assert facet["leafCount"] == 2
    assert facet["agentIds"] == ["agent.other", "agent.trading-bot-v2"]
    by_name = {d["name"]: d["inputFacets"]["aigp_resource"] for d in event["inputs"]}
    assert by_name["policy.a"]["leafHash"] == leaves[0]["hash"]
    assert by_name["prompt.b"]["leafHash"] == leaves[1]["hash"]
    assert [d["name"] for d in event["inputs"]] == ["policy.a", "policy.trading-limits", "prompt.b"]


def test_several_observed_versions_are_valid() -> None:
    records = (
        record_from_attributes(
            {sc.POLICY_NAME: "policy.a", sc.POLICY_VERSION: 1}, event_name="aigp.inject.success"
        ),
        record_from_attributes(
            {sc.POLICY_NAME: "policy.a", sc.POLICY_VERSION: 3}, event_name="aigp.inject.success"
        ),
    )
    event = _event(_named(_finished(records)))
    resource = event["inputs"][0]["inputFacets"]["aigp_resource"]
    assert resource["resourceVersion"] == 3
    assert resource["observedVersions"] == [1, 3]
