"""Chain verification (``verify`` walks the parent links) on chains made by real agent processes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from aigp_otel_bridge.tools.chains import verify_chains
from aigp_otel_bridge.tools.runfiles import Located
from aigp_otel_bridge.tools.verify import FAILED, OK, SKIPPED, Report, verify_files
from tests.agent_chains import by_job, read_lines, run_three_agents, write_lines

ORDER = ("planner", "researcher", "librarian")

SCHEDULER = {"run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "scheduler", "name": "nightly.run"}}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a planner -> researcher -> librarian chain (``lineage.jsonl``, ``store.jsonl``)."""
    directory = tmp_path_factory.mktemp("chain")
    run_three_agents(directory)
    return directory


@pytest.fixture(scope="module")
def scheduled_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same chain started by a scheduler: ``OPENLINEAGE_CONTEXT`` names its run as the parent."""
    directory = tmp_path_factory.mktemp("scheduled")
    run_three_agents(directory, OPENLINEAGE_CONTEXT=json.dumps({"parent": SCHEDULER}))
    return directory


def _events(folder: Path) -> dict[str, dict[str, Any]]:
    return by_job(read_lines(folder / "lineage.jsonl"))


def _tampered(folder: Path, tmp_path: Path, change: Any) -> Path:
    """A copy of the chain's lineage with ``change(events by job)`` applied."""
    events = copy.deepcopy(_events(folder))
    change(events)
    return write_lines(tmp_path / "lineage.jsonl", [events[n] for n in ORDER])


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigp_otel_bridge.tools.cli", *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def _links(report: Report) -> dict[str, Any]:
    """Each run's outcome by job: its link kind and its checks by name."""
    assert report.chains is not None
    return {
        links.run.ref.name.split(".")[0]: (links.kind, {c.name: c for c in links.checks})
        for links in report.chains.runs
    }


def test_a_chain_of_three_agent_processes_verifies(chain: Path) -> None:
    events = _events(chain)
    planner, researcher, librarian = (events[name]["run"]["runId"] for name in ORDER)
    report = verify_files(chain / "lineage.jsonl", None)  # the links alone
    assert report.ok, report.render()
    assert report.chains is not None and len(report.chains.chains) == 1 and report.chains.links == 2
    (found,) = report.chains.chains
    assert (found.root.run_id, found.root_in_file) == (planner, True)
    links = _links(report)
    assert [links[name][0] for name in ORDER] == ["top", "linked", "linked"]
    assert all(check.status == OK for _, checks in links.values() for check in checks.values())
    parents = {links.run.ref.run_id: links.run.parent for links in found.runs}
    assert parents[researcher] is not None and parents[researcher].run_id == planner
    assert parents[librarian] is not None and parents[librarian].run_id == researcher

    with_store = verify_files(chain / "lineage.jsonl", chain / "store.jsonl")  # links and every hash
    assert with_store.ok, with_store.render()
    assert len(with_store.runs) == 3  # each run proven against its own agent's store events
    for run in with_store.runs:
        scope = run.checks[0]
        assert (scope.name, scope.status) == ("store_scope", OK)
        assert "of its 6 store event(s)" in scope.detail

    result = _cli("verify", "--lineage", chain / "lineage.jsonl", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["storeChecked"] is False and document["traces"] == []
    assert [run["link"] for run in document["chains"]["chains"][0]["runs"]] == ["top", "linked", "linked"]
    text = _cli("verify", "--lineage", chain / "lineage.jsonl", "--aigp-events", chain / "store.jsonl")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "1 of 1 chain(s) verified (3 run(s), 2 parent link(s))" in text.stdout
    assert "3 of 3 governed RunEvent(s) verified" in text.stdout


def test_a_tampered_parent_run_id_is_a_forged_link(chain: Path, tmp_path: Path) -> None:
    forged = str(uuid.uuid4())

    def forge(events: dict[str, dict[str, Any]]) -> None:
        events["researcher"]["run"]["facets"]["parent"]["run"]["runId"] = forged

    lineage = _tampered(chain, tmp_path, forge)
    report = verify_files(lineage, None)
    assert not report.ok
    kind, checks = _links(report)["researcher"]
    assert kind == "broken" and checks["parent"].status == FAILED
    planner = _events(chain)["planner"]["run"]["runId"]
    assert forged in checks["parent"].detail and planner in checks["parent"].detail
    result = _cli("verify", "--lineage", lineage, "--aigp-events", chain / "store.jsonl")
    assert result.returncode == 1
    researcher = _events(chain)["researcher"]["run"]["runId"]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("FAILED run")]
    assert line.startswith(f"FAILED run {researcher}: parent: names run {forged}")
    assert line.endswith("a forged or broken link")
    assert "3 of 3 governed RunEvent(s) verified" in result.stdout  # the hashes still hold


def test_a_root_that_differs_inside_one_chain_fails(chain: Path, tmp_path: Path) -> None:
    other = str(uuid.uuid4())

    def reroot(events: dict[str, dict[str, Any]]) -> None:
        events["librarian"]["run"]["facets"]["parent"]["root"]["run"]["runId"] = other

    report = verify_files(_tampered(chain, tmp_path, reroot), None)
    assert not report.ok
    links = _links(report)
    kind, checks = links["librarian"]
    assert kind == "linked" and checks["parent"].status == OK  # its parent link itself holds
    assert checks["root"].status == FAILED and other in checks["root"].detail
    assert links["researcher"][1]["root"].status == OK
    json_report = report.to_json()["chains"]
    assert json_report["ok"] is False and len(json_report["chains"]) == 1


def test_a_cycle_of_parent_links_fails(chain: Path, tmp_path: Path) -> None:
    def loop(events: dict[str, dict[str, Any]]) -> None:
        librarian = events["librarian"]
        parent = copy.deepcopy(events["researcher"]["run"]["facets"]["parent"])
        parent["run"]["runId"], parent["job"] = librarian["run"]["runId"], dict(librarian["job"])
        events["planner"]["run"]["facets"]["parent"] = parent  # the planner called by the librarian

    report = verify_files(_tampered(chain, tmp_path, loop), None)
    assert not report.ok
    for name, (kind, checks) in _links(report).items():
        assert kind == "linked", name
        assert checks["cycle"].status == FAILED
        assert checks["cycle"].detail.count(" -> ") == 3  # a -> b -> c -> a
    assert "cycle: its parent links come back to it" in report.render()


def test_a_parent_outside_the_file_is_reported_not_failed(scheduled_chain: Path) -> None:
    report = verify_files(scheduled_chain / "lineage.jsonl", scheduled_chain / "store.jsonl")
    assert report.ok, report.render()
    links = _links(report)
    kind, checks = links["planner"]
    assert kind == "outside" and checks["parent"].status == SKIPPED
    assert SCHEDULER["run"]["runId"] in checks["parent"].detail
    assert "outside the file" in checks["parent"].detail
    assert report.chains is not None
    (found,) = report.chains.chains
    assert (found.root.run_id, found.root.name, found.root_in_file) == (
        SCHEDULER["run"]["runId"], "nightly.run", False
    )
    assert all(checks["root"].status == OK for _, checks in links.values())
    result = _cli("verify", "--lineage", scheduled_chain / "lineage.jsonl")
    assert result.returncode == 0, result.stdout
    assert "OUTSIDE  acme.agents / planner.planner" in result.stdout


def test_a_callee_whose_caller_is_not_in_the_file_is_outside(chain: Path, tmp_path: Path) -> None:
    events = _events(chain)
    lineage = write_lines(tmp_path / "lineage.jsonl", [events["researcher"], events["librarian"]])
    report = verify_files(lineage, None)
    assert report.ok, report.render()
    assert _links(report)["researcher"][0] == "outside"


def _event(run_id: str, job: str, trace: str, parent: dict[str, Any] | None = None) -> Located:
    facets: dict[str, Any] = {"aigp_governance": {"traceId": trace}}
    if parent is not None:
        facets["parent"] = parent
    value = {"eventType": "COMPLETE", "run": {"runId": run_id, "facets": facets},
             "job": {"namespace": "ns", "name": job}}
    return Located(f"f:{job}", value)


def _parent(run_id: str, job: str, root: str | None = None, root_job: str | None = None) -> dict[str, Any]:
    facet: dict[str, Any] = {"run": {"runId": run_id}, "job": {"namespace": "ns", "name": job}}
    if root is not None:
        facet["root"] = {"run": {"runId": root}, "job": {"namespace": "ns", "name": root_job or job}}
    return facet


def test_a_parent_run_of_another_job_and_malformed_facets_fail() -> None:
    trace, a, b, c, d = "ab" * 16, *(str(uuid.uuid4()) for _ in range(4))
    report = verify_chains([
        _event(a, "plan", trace),
        _event(b, "price", "cd" * 16, _parent(a, "not-plan")),  # another trace: no same-trace run
        _event(c, "book", trace, {"run": {}, "job": {"namespace": "ns"}}),
        Located("f:x", {"run": {"runId": d.upper(), "facets": {"parent": "x"}},
                        "job": {"namespace": "n", "name": "x"}}),
    ])
    outcomes = {run.run.ref.name: run for run in report.runs}
    assert "holds that run as job ns / plan" in outcomes["price"].checks[0].detail
    assert "lacks a run id" in outcomes["book"].checks[0].detail
    assert outcomes["x"].run.ref.run_id == d  # run ids compare as UUIDs, whatever their case
    assert [outcomes[n].kind for n in ("price", "book", "x")] == ["broken"] * 3
    assert not report.ok


def test_the_events_of_one_run_must_agree_on_its_parent() -> None:
    trace, a, b = "ab" * 16, str(uuid.uuid4()), str(uuid.uuid4())
    running = _event(b, "price", trace, _parent(a, "plan"))
    complete = _event(b, "price", trace, _parent(a, "plan", root=str(uuid.uuid4()), root_job="top"))
    report = verify_chains([_event(a, "plan", trace), running, complete])
    price = next(run for run in report.runs if run.run.ref.name == "price")
    assert price.kind == "broken" and "events name different parents" in price.checks[0].detail
    assert price.run.sources == ("f:price", "f:price")


def test_verifying_links_alone_needs_a_link(chain: Path, tmp_path: Path) -> None:
    lineage = write_lines(tmp_path / "one.jsonl", [_events(chain)["planner"]])
    result = _cli("verify", "--lineage", lineage)
    assert result.returncode == 1
    assert "no run in the lineage file has a parent facet" in result.stdout
    refused = _cli("verify", "--lineage", lineage, "--content-dir", tmp_path)
    assert refused.returncode == 2 and "--content-dir needs --aigp-events" in refused.stderr
