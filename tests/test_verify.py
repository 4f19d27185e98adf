"""``aigp-otel-bridge verify``: RunEvents proven against the AIGP governance store.

The data comes from real governed sessions: the reference SDK's instrumentor hands every
full AIGP event to a list (the store) and to the bridge, and the bridge's RunEvents go
through the OpenLineage file transport, exactly as a deployment writes them.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigp_otel_bridge.tools.cli import main
from aigp_otel_bridge.tools.verify import Report, parse_json_documents, verify_events
from tests.sessions import CONTENT, POLICY, SNAPSHOT, Session, run_governed_session
from tests.test_demo import _command


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return run_governed_session(tmp_path_factory.mktemp("session"))


@pytest.fixture(scope="module")
def partial_session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """The second trace evicts the first (bound of one pending trace): two partial RunEvents."""
    return run_governed_session(tmp_path_factory.mktemp("partial"), max_pending_traces=1)


Write = Callable[[list[dict[str, Any]], list[dict[str, Any]]], list[str]]


@pytest.fixture
def files(tmp_path: Path) -> Write:
    """Write lineage and store as JSON lines; returns the verify arguments."""

    def write(lineage: list[dict[str, Any]], store: list[dict[str, Any]]) -> list[str]:
        lineage_file = tmp_path / "lineage.jsonl"
        store_file = tmp_path / "store.jsonl"
        lineage_file.write_text("".join(json.dumps(e) + "\n" for e in lineage))
        store_file.write_text("".join(json.dumps(e) + "\n" for e in store))
        return ["verify", "--lineage", str(lineage_file), "--aigp-events", str(store_file)]

    return write


def _report(lineage: list[dict[str, Any]], store: list[dict[str, Any]], **kwargs: Any) -> Report:
    located = parse_json_documents("\n".join(json.dumps(e) for e in lineage), "lineage")
    return verify_events(located, store, **kwargs)


def _statuses(report: Report, trace_id: str) -> dict[str, str]:
    return {c.name: c.status for run in report.runs if run.trace_id == trace_id for c in run.checks}


def _flip(digest: str, position: int = 0, replacement: str | None = None) -> str:
    """The same hash with one character changed (to another lowercase hex digit)."""
    old = digest[position]
    new = replacement if replacement and replacement != old else ("1" if old == "0" else "0")
    return digest[:position] + new + digest[position + 1 :]


def _governed(lineage: list[dict[str, Any]], trace_id: str) -> dict[str, Any]:
    """The one RunEvent of a trace."""
    (event,) = [e for e in lineage if e["run"]["facets"]["aigp_governance"]["traceId"] == trace_id]
    return event


# ---------------------------------------------------------------------------------------------
# Untouched data


def test_the_session_is_what_the_tests_assume(session: Session) -> None:
    first, second = session.trace_ids
    assert len(session.lineage) == 2
    facet = _governed(session.lineage, first)["run"]["facets"]["aigp_governance"]
    assert facet["hashType"] == "merkle-sha256" and facet["leafCount"] == 3
    assert facet["enforcementResult"] == "denied"
    inputs = {
        (i["inputFacets"]["aigp_resource"]["resourceType"], i["name"]): i["inputFacets"]["aigp_resource"]
        for i in _governed(session.lineage, first)["inputs"]
    }
    assert inputs[("lineage", "lineage.pre-trade")]["leafHash"] == SNAPSHOT.leaf_hash
    assert "contentHash" in inputs[("policy", "policy.trading-limits")]
    assert "leafHash" in inputs[("policy", "policy.trading-limits")]
    assert {e["trace_id"] for e in session.store} == {first, second}


def test_untouched_data_verifies(session: Session, files: Write, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(files(session.lineage, session.store)) == 0
    out = capsys.readouterr().out
    assert "2 of 2 governed RunEvent(s) verified" in out
    assert "FAILED" not in out
    for trace_id in session.trace_ids:
        assert f"trace {trace_id}" in out


def test_json_report_lists_every_check_of_every_trace(
    session: Session, files: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*files(session.lineage, session.store), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert {t["traceId"] for t in report["traces"]} == set(session.trace_ids)
    first = next(t for t in report["traces"] if t["traceId"] == session.trace_ids[0])
    statuses = {c["name"]: c["status"] for c in first["checks"]}
    for name in (
        "store_events", "store_merkle_trees", "governance_hash", "hash_type", "leaf_count",
        "enforcement_result", "data_classification", "event_count", "denied_event_count",
        "leaf_hash[lineage:lineage.pre-trade]", "leaf_hash[policy:policy.trading-limits]",
        "content_hash[policy:policy.trading-limits]", "content_hash[prompt:prompt.trader-system]",
    ):
        assert statuses[name] == "ok", (name, first["checks"])
    for trace in report["traces"]:
        for check in trace["checks"]:
            assert set(check) == {"name", "status", "detail"}
            assert check["status"] in {"ok", "failed", "skipped"}


def test_span_attribute_records_are_not_held_against_the_lineage(session: Session) -> None:
    """The second trace names its tool only on a span: one more record than the store holds."""
    statuses = _statuses(_report(session.lineage, session.store), session.trace_ids[1])
    assert statuses["event_count"] == "skipped"
    assert statuses["governance_hash"] == "ok"


def test_the_console_script_verifies_and_fails(session: Session, files: Write, tmp_path: Path) -> None:
    arguments = files(session.lineage, session.store)
    good = subprocess.run([*_command(), *arguments, "--json"], capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True
    store = copy.deepcopy(session.store)
    store[0]["governance_hash"] = _flip(store[0]["governance_hash"], 5)
    bad = subprocess.run(
        [*_command(), *files(session.lineage, store)], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1
    assert f"FAILED trace {store[0]['trace_id']}: governance_hash" in bad.stdout


def test_trace_ids_match_whatever_their_case(session: Session) -> None:
    store = [{**e, "trace_id": e["trace_id"].upper()} for e in session.store]
    assert _report(session.lineage, store).ok


def test_a_store_with_other_traces_and_a_lineage_with_one(session: Session) -> None:
    unrelated = {**session.store[0], "trace_id": "f" * 32, "event_id": "other"}
    report = _report(session.lineage[:1], [*session.store, unrelated])
    assert report.ok and len(report.runs) == 1


def test_lineage_as_one_json_document_or_array(session: Session, tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    store.write_text(json.dumps(session.store, indent=2))
    single = tmp_path / "one.json"
    single.write_text(json.dumps(session.lineage[0], indent=2))
    array = tmp_path / "all.json"
    array.write_text(json.dumps(session.lineage))
    assert main(["verify", "--lineage", str(single), "--aigp-events", str(store)]) == 0
    assert main(["verify", "--lineage", str(array), "--aigp-events", str(store)]) == 0


def test_events_without_the_governance_facet_are_ignored_but_never_pass_alone(
    session: Session, files: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    other = copy.deepcopy(session.lineage[0])
    del other["run"]["facets"]["aigp_governance"]
    assert main(files([*session.lineage, other], session.store)) == 0
    assert "1 event(s) without aigp_governance ignored" in capsys.readouterr().out
    assert main(files([other], session.store)) == 1
    assert "no RunEvent with an aigp_governance run facet" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Tampering


def _store_hash_locations(store: list[dict[str, Any]]) -> list[tuple[int, int | None]]:
    """(event index, leaf index or None) of every hash the store holds."""
    found: list[tuple[int, int | None]] = []
    for index, event in enumerate(store):
        if event["governance_hash"]:
            found.append((index, None))
        for leaf_index, _ in enumerate((event.get("governance_merkle_tree") or {}).get("leaves", [])):
            found.append((index, leaf_index))
    return found


def _tamper_store(
    store: list[dict[str, Any]], where: tuple[int, int | None], position: int, char: str | None
) -> str:
    index, leaf_index = where
    event = store[index]
    if leaf_index is None:
        event["governance_hash"] = _flip(event["governance_hash"], position, char)
    else:
        leaf = event["governance_merkle_tree"]["leaves"][leaf_index]
        leaf["hash"] = _flip(leaf["hash"], position, char)
    return str(event["trace_id"])


def test_every_hash_of_the_store_is_covered(session: Session) -> None:
    locations = _store_hash_locations(session.store)
    assert len(locations) == 8  # four flat hashes, one Merkle root and its three leaves


@pytest.mark.parametrize("location", range(8))
def test_one_changed_character_in_any_store_hash_is_caught(
    session: Session, files: Write, capsys: pytest.CaptureFixture[str], location: int
) -> None:
    store = copy.deepcopy(session.store)
    where = _store_hash_locations(store)[location]
    trace_id = _tamper_store(store, where, 63, None)
    assert main(files(session.lineage, store)) == 1
    out = capsys.readouterr().out
    assert f"FAILED trace {trace_id}: " in out
    assert "1 of 2 governed RunEvent(s) verified" in out


def test_a_changed_store_hash_names_the_aggregate_check(session: Session) -> None:
    store = copy.deepcopy(session.store)
    trace_id = _tamper_store(store, (0, None), 0, None)
    statuses = _statuses(_report(session.lineage, store), trace_id)
    assert statuses["governance_hash"] == "failed"


def test_a_changed_leaf_in_the_store_fails_its_tree_and_its_input(session: Session) -> None:
    store = copy.deepcopy(session.store)
    proof = next(i for i, e in enumerate(store) if e.get("governance_merkle_tree"))
    leaves = store[proof]["governance_merkle_tree"]["leaves"]
    lineage_leaf = next(i for i, leaf in enumerate(leaves) if leaf["resource_type"] == "lineage")
    trace_id = _tamper_store(store, (proof, lineage_leaf), 10, None)
    statuses = _statuses(_report(session.lineage, store), trace_id)
    assert statuses["store_merkle_trees"] == "failed"
    assert statuses["leaf_hash[lineage:lineage.pre-trade]"] == "failed"
    assert statuses["governance_hash"] == "ok"  # the root itself was left alone


def test_one_changed_character_in_the_lineage_governance_hash_is_caught(
    session: Session, files: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    for trace_id in session.trace_ids:
        lineage = copy.deepcopy(session.lineage)
        facet = _governed(lineage, trace_id)["run"]["facets"]["aigp_governance"]
        facet["governanceHash"] = _flip(facet["governanceHash"], 31)
        assert main(files(lineage, session.store)) == 1
        assert f"FAILED trace {trace_id}: governance_hash: lineage says" in capsys.readouterr().out


def _input_hash_locations(lineage: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    found = []
    for event_index, event in enumerate(lineage):
        for input_index, dataset in enumerate(event["inputs"]):
            for key in ("leafHash", "contentHash"):
                if key in dataset["inputFacets"]["aigp_resource"]:
                    found.append((event_index, input_index, key))
    return found


def test_every_input_hash_is_covered(session: Session) -> None:
    keys = [key for _, _, key in _input_hash_locations(session.lineage)]
    assert keys.count("leafHash") == 3 and keys.count("contentHash") >= 3


@pytest.mark.parametrize("location", range(6))
def test_one_changed_character_in_an_input_hash_is_caught(
    session: Session, files: Write, capsys: pytest.CaptureFixture[str], location: int
) -> None:
    lineage = copy.deepcopy(session.lineage)
    event_index, input_index, key = _input_hash_locations(lineage)[location]
    facet = lineage[event_index]["inputs"][input_index]["inputFacets"]["aigp_resource"]
    facet[key] = _flip(facet[key], 7)
    trace_id = lineage[event_index]["run"]["facets"]["aigp_governance"]["traceId"]
    check = ("leaf_hash" if key == "leafHash" else "content_hash") + (
        f"[{facet['resourceType']}:{facet['resourceName']}]"
    )
    assert main(files(lineage, session.store)) == 1
    assert f"FAILED trace {trace_id}: {check}" in capsys.readouterr().out


def test_a_leaf_claimed_for_the_wrong_resource_is_caught(session: Session) -> None:
    lineage = copy.deepcopy(session.lineage)
    event = _governed(lineage, session.trace_ids[0])
    facets = {d["name"]: d["inputFacets"]["aigp_resource"] for d in event["inputs"]}
    facets["tool.market-data"]["leafHash"] = facets["lineage.pre-trade"]["leafHash"]
    run = next(r for r in _report(lineage, session.store).runs if r.trace_id == session.trace_ids[0])
    (failure,) = run.failures
    assert failure.name == "leaf_hash[tool:tool.market-data]"
    assert "lineage:lineage.pre-trade" in failure.detail


@pytest.mark.parametrize(
    ("field", "value", "check"),
    [
        ("enforcementResult", "allowed", "enforcement_result"),
        ("dataClassification", "public", "data_classification"),
        ("hashType", "sha256", "hash_type"),
        ("leafCount", 4, "leaf_count"),
        ("eventCount", 3, "event_count"),
        ("deniedEventCount", 0, "denied_event_count"),
    ],
)
def test_changed_claims_are_caught(session: Session, field: str, value: object, check: str) -> None:
    lineage = copy.deepcopy(session.lineage)
    _governed(lineage, session.trace_ids[0])["run"]["facets"]["aigp_governance"][field] = value
    report = _report(lineage, session.store)
    assert not report.ok
    assert _statuses(report, session.trace_ids[0])[check] == "failed"


@pytest.mark.parametrize("missing", range(6))
def test_a_missing_store_event_is_caught(
    session: Session, files: Write, capsys: pytest.CaptureFixture[str], missing: int
) -> None:
    assert len(session.store) == 6
    store = [e for i, e in enumerate(session.store) if i != missing]
    assert main(files(session.lineage, store)) == 1
    assert f"FAILED trace {session.store[missing]['trace_id']}: " in capsys.readouterr().out


def test_a_trace_missing_from_the_store_is_named(
    session: Session, files: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = session.trace_ids
    store = [e for e in session.store if e["trace_id"] != second]
    assert main(files(session.lineage, store)) == 1
    out = capsys.readouterr().out
    assert f"FAILED trace {second}: store_events: no AIGP event in the store has this trace id" in out
    assert f"FAILED trace {first}" not in out


_HEX = "0123456789abcdef"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), position=st.integers(0, 63), char=st.sampled_from(_HEX))
def test_property_any_single_character_change_to_any_hash_is_caught(
    session: Session, data: st.DataObject, position: int, char: str
) -> None:
    lineage = copy.deepcopy(session.lineage)
    store = copy.deepcopy(session.store)
    targets: list[tuple[str, Any, Any]] = [("store", where, None) for where in _store_hash_locations(store)]
    for event_index, input_index, key in _input_hash_locations(lineage):
        facet = lineage[event_index]["inputs"][input_index]["inputFacets"]["aigp_resource"]
        targets.append(("dict", facet, key))
    for event in lineage:
        targets.append(("dict", event["run"]["facets"]["aigp_governance"], "governanceHash"))
    kind, where, key = data.draw(st.sampled_from(targets))
    if kind == "store":
        _tamper_store(store, where, position, char)
    else:
        where[key] = _flip(where[key], position, char)
    assert not _report(lineage, store).ok


# ---------------------------------------------------------------------------------------------
# Partial runs


def test_partial_runs_verify_what_they_can(partial_session: Session) -> None:
    first = partial_session.trace_ids[0]
    runs = [e for e in partial_session.lineage if e["run"]["facets"]["aigp_governance"]["traceId"] == first]
    assert [e["run"]["facets"]["aigp_governance"]["complete"] for e in runs] == [False, False]
    report = _report(partial_session.lineage, partial_session.store)
    assert report.ok, report.render()
    early, later = [r for r in report.runs if r.trace_id == first]
    early_checks = {c.name: c for c in early.checks}
    later_checks = {c.name: c for c in later.checks}
    assert early_checks["governance_hash"].status == "ok"  # a single hash: one store event carries it
    assert later_checks["governance_hash"].status == "skipped"  # a Merkle root over an unknown subset
    assert "partial run" in later_checks["governance_hash"].detail
    assert later_checks["hash_type"].status == later_checks["leaf_count"].status == "skipped"
    assert later_checks["leaf_hash[lineage:lineage.pre-trade]"].status == "ok"


def test_partial_runs_still_catch_changed_hashes(partial_session: Session) -> None:
    first = partial_session.trace_ids[0]
    early, later = [
        e for e in partial_session.lineage if e["run"]["facets"]["aigp_governance"]["traceId"] == first
    ]
    lineage = copy.deepcopy([early])
    facet = lineage[0]["run"]["facets"]["aigp_governance"]
    assert facet["hashType"] == "sha256"
    facet["governanceHash"] = _flip(facet["governanceHash"], 3)
    assert not _report(lineage, partial_session.store).ok
    lineage = copy.deepcopy([later])
    resource = next(d for d in lineage[0]["inputs"] if d["name"] == "lineage.pre-trade")
    resource["inputFacets"]["aigp_resource"]["leafHash"] = _flip(SNAPSHOT.leaf_hash, 3)
    assert not _report(lineage, partial_session.store).ok
    lineage = copy.deepcopy([later])
    lineage[0]["run"]["facets"]["aigp_governance"]["dataClassification"] = "restricted"
    assert not _report(lineage, partial_session.store).ok


# ---------------------------------------------------------------------------------------------
# Content files


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "content"
    for (resource_type, name), text in CONTENT.items():
        path = directory / resource_type / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    return directory


def test_content_files_reproduce_leaf_and_content_hashes(session: Session, content_dir: Path) -> None:
    report = _report(session.lineage, session.store, content_dir=content_dir)
    assert report.ok
    statuses = _statuses(report, session.trace_ids[0])
    for key in ("policy:policy.trading-limits", "prompt:prompt.trader-system", "tool:tool.market-data",
                "lineage:lineage.pre-trade"):
        assert statuses[f"content_file[{key}]"] == "ok"


def test_a_flat_content_directory_is_found_too(session: Session, tmp_path: Path) -> None:
    (tmp_path / "policy.trading-limits").write_text(POLICY)
    statuses = _statuses(_report(session.lineage, session.store, content_dir=tmp_path), session.trace_ids[0])
    assert statuses["content_file[policy:policy.trading-limits]"] == "ok"
    assert statuses["content_file[prompt:prompt.trader-system]"] == "skipped"


@pytest.mark.parametrize("resource", sorted(CONTENT))
def test_one_changed_character_in_a_content_file_is_caught(
    session: Session,
    files: Write,
    content_dir: Path,
    capsys: pytest.CaptureFixture[str],
    resource: tuple[str, str],
) -> None:
    path = content_dir / resource[0] / resource[1]
    text = path.read_text()
    path.write_text(text[:-1] + ("X" if text[-1] != "X" else "Y"))
    assert main([*files(session.lineage, session.store), "--content-dir", str(content_dir)]) == 1
    assert f"content_file[{resource[0]}:{resource[1]}]" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["bad\x00name", "x" * 5000])
def test_content_names_no_file_system_takes_are_skipped(session: Session, tmp_path: Path, name: str) -> None:
    lineage = copy.deepcopy(session.lineage[:1])
    facet = lineage[0]["inputs"][0]["inputFacets"]["aigp_resource"]
    facet["resourceName"] = name
    checks = [c for r in _report(lineage, session.store, content_dir=tmp_path).runs for c in r.checks]
    wanted = f"content_file[{facet['resourceType']}:{name}]"
    assert [c.status for c in checks if c.name == wanted] == ["skipped"]


def test_content_names_cannot_escape_the_directory(session: Session, tmp_path: Path) -> None:
    lineage = copy.deepcopy(session.lineage[:1])
    facet = lineage[0]["inputs"][0]["inputFacets"]["aigp_resource"]
    facet["resourceName"] = "../../outside"
    (tmp_path / "outside").write_text("secret")
    directory = tmp_path / "a" / "b"
    directory.mkdir(parents=True)
    checks = [c for r in _report(lineage, session.store, content_dir=directory).runs for c in r.checks]
    (check,) = [c for c in checks if c.name.startswith("content_file[") and "outside" in c.name]
    assert check.status == "skipped"


# ---------------------------------------------------------------------------------------------
# Bad input files


@pytest.fixture
def good_files(session: Session, files: Write) -> Iterator[list[str]]:
    yield files(session.lineage, session.store)


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("--lineage", b"{not json", "not valid JSON at line 1"),
        ("--lineage", b'{"a": 1}\n{"b": \n', ":2: not valid JSON"),
        ("--lineage", b"[1, 2]", "[0]: expected a JSON object, got int"),
        ("--lineage", b"   \n", "the file is empty"),
        ("--aigp-events", b'{"trace_id": "x"}\n"text"\n', ":2: expected a JSON object, got str"),
        ("--aigp-events", b"\xff\xfe{}", "not UTF-8 text"),
        ("--aigp-events", b"42", "expected a JSON object, got int"),
    ],
)
def test_malformed_files_exit_2_with_a_clear_message(
    good_files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    which: str, content: bytes, message: str,
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    arguments = list(good_files)
    arguments[arguments.index(which) + 1] = str(bad)
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("aigp-otel-bridge verify: ")
    assert str(bad) in captured.err and message in captured.err


def test_unreadable_files_exit_2(
    good_files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    arguments = list(good_files)
    arguments[arguments.index("--aigp-events") + 1] = str(missing)
    assert main(arguments) == 2
    assert f"{missing}: cannot read the file" in capsys.readouterr().err
    assert main([*good_files, "--content-dir", str(missing)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_malformed_facet_is_a_failed_check_not_a_crash(session: Session) -> None:
    lineage = copy.deepcopy(session.lineage[:1])
    lineage[0]["run"]["facets"]["aigp_governance"] = "tampered"
    report = _report(lineage, session.store)
    assert not report.ok and report.runs[0].failures[0].name == "facet"
    lineage[0]["run"]["facets"]["aigp_governance"] = {"traceId": 7}
    assert _report(lineage, session.store).runs[0].failures[0].name == "trace_id"
