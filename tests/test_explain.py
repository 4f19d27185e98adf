"""``aigp-otel-bridge explain``: one run's governance, readable in a terminal."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from aigp_otel_bridge.merkle import EMPTY_SHA256
from aigp_otel_bridge.tools.cli import main
from aigp_otel_bridge.tools.explain import how_formed, render_run
from tests.sessions import SNAPSHOT, Session, run_governed_session


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return run_governed_session(tmp_path_factory.mktemp("explain"))


@pytest.fixture
def lineage_file(session: Session, tmp_path: Path) -> Path:
    path = tmp_path / "lineage.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in session.lineage))
    return path


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for a 64-character hash on one line, so the tests can look for whole hashes."""
    monkeypatch.setenv("COLUMNS", "200")


def _first(session: Session) -> dict[str, Any]:
    trace_id = session.trace_ids[0]
    return next(e for e in session.lineage if e["run"]["facets"]["aigp_governance"]["traceId"] == trace_id)


def test_explain_shows_the_runs_governance_and_every_resource(
    session: Session, lineage_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace_id = session.trace_ids[0]
    assert main(["explain", str(lineage_file), "--trace-id", trace_id]) == 0
    out = capsys.readouterr().out
    facet = _first(session)["run"]["facets"]["aigp_governance"]
    for text in (
        "agent.trading-bot-v2", trace_id, "denied", "(1 of 4 records denied)", "confidential",
        facet["governanceHash"], "merkle-sha256",
        "Merkle root (spec 8.8.3) over 3 distinct governance hashes of 4 record(s)",
        "Governed resources (4)",
    ):
        assert text in out, text
    for dataset in _first(session)["inputs"]:
        resource = dataset["inputFacets"]["aigp_resource"]
        row = next(line for line in out.splitlines() if resource["resourceName"] in line)
        assert resource["resourceType"] in row
        if "resourceVersion" in resource:
            version = resource["resourceVersion"]
            assert re.search(rf"│\s+{version}( \(seen [0-9, ]+\))?\s+│", row), row
        for key in ("leafHash", "contentHash"):
            if key in resource:
                assert resource[key] in out
    assert f"leaf    {SNAPSHOT.leaf_hash}" in out


def test_a_file_with_several_traces_needs_a_trace_id(
    session: Session, lineage_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", str(lineage_file)]) == 2
    err = capsys.readouterr().err
    assert "choose one with --trace-id" in err
    for trace_id in session.trace_ids:
        assert trace_id in err


def test_trace_id_matches_whatever_its_case(
    session: Session, lineage_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = session.trace_ids[1]
    assert main(["explain", str(lineage_file), "--trace-id", second.upper()]) == 0
    out = capsys.readouterr().out
    assert second in out and session.trace_ids[0] not in out
    assert "prompt.reviewer" in out and "public" in out


def test_a_single_run_file_needs_no_trace_id(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_first(session), indent=2))
    assert main(["explain", str(path)]) == 0
    assert session.trace_ids[0] in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{broken", "not valid JSON"),
        ('{"eventType": "COMPLETE", "run": {"facets": {}}}', "no RunEvent with an aigp_governance run facet"),
    ],
)
def test_unusable_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["explain", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("aigp-otel-bridge explain: ") and message in captured.err


def test_unknown_trace_id_exits_2(lineage_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(lineage_file), "--trace-id", "0" * 32]) == 2
    assert "no governed RunEvent for trace" in capsys.readouterr().err


def test_how_formed_tells_each_case_of_the_rule() -> None:
    empty = how_formed({"governanceHash": EMPTY_SHA256, "hashType": "sha256", "eventCount": 2}, [])
    assert "SHA-256 of the empty string" in empty and "2 record(s)" in empty
    digest = "ab" * 32
    resources = [{"resourceType": "prompt", "resourceName": "prompt.a", "contentHash": digest}]
    single = how_formed({"governanceHash": digest, "hashType": "sha256", "leafCount": 1}, resources)
    assert "stands for itself" in single and "content hash of prompt:prompt.a" in single
    facet = {"governanceHash": digest, "hashType": "merkle-sha256", "leafCount": 4, "eventCount": 1}
    own = how_formed(facet, [])
    assert "single record's own Merkle root over 4 resource leaves" in own
    partial = how_formed({"governanceHash": digest, "hashType": "sha256", "complete": False}, [])
    assert "only part of the trace" in partial
    assert "only part" not in single


def test_narrow_terminals_fold_hashes_instead_of_cutting_them(session: Session) -> None:
    console = Console(width=70, record=True, highlight=False)
    console.print(render_run(_first(session)))
    text = console.export_text()
    assert "…" not in text
    flattened = re.sub(r"[\s│┃|]", "", text)
    assert _first(session)["run"]["facets"]["aigp_governance"]["governanceHash"] in flattened


def test_explain_survives_a_facet_with_odd_values(session: Session) -> None:
    event = copy.deepcopy(_first(session))
    event["run"]["facets"]["aigp_governance"].update(agentIds=["a", "b"], hashType="sha512")
    event["inputs"][0]["inputFacets"]["aigp_resource"]["observedVersions"] = [1, 2]
    console = Console(width=200, record=True)
    console.print(render_run(event))
    text = console.export_text()
    assert "agents: a, b" in text and "'sha512' is not one the bridge emits" in text and "(seen 1, 2)" in text


def test_each_resource_shows_its_enforcement_and_whether_it_was_governed_or_only_observed(
    session: Session,
) -> None:
    event = copy.deepcopy(_first(session))
    event["inputs"][0]["inputFacets"]["aigp_resource"]["enforcementResult"] = "denied"
    observed = {"resourceType": "tool", "resourceName": "tool.web-search", "governed": False}
    event["inputs"].append({"namespace": "finco.trading", "name": "tool.web-search",
                            "inputFacets": {"aigp_resource": observed}})
    console = Console(width=200, record=True)
    console.print(render_run(event))
    text = console.export_text()
    rows = {
        cells[2]: cells[4:6]
        for line in text.splitlines()
        if len(cells := [cell.strip() for cell in line.split("│")]) > 6 and cells[2]
    }
    first = event["inputs"][0]["name"]
    assert rows.pop(first) == ["denied", "governed"]
    assert rows.pop("tool.web-search") == ["—", "observed"]
    assert rows and all(cells == ["allowed", "governed"] for cells in rows.values())
    governed = len(event["inputs"]) - 1
    assert f"Governed resources ({governed}), observed only (1): used with no governance record" in text


HOSTILE = [
    "[/oops]", "[bold red]shout[/bold red]", "\x1b[2J\x1b[31mred\x1b[0m", "bell\x07", "rtl\u202eevil",
    ":skull:",
]


def test_hostile_names_are_printed_as_text(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = copy.deepcopy(_first(session))
    event["job"]["name"] = HOSTILE[0]
    event["run"]["facets"]["aigp_governance"]["agentId"] = HOSTILE[1]
    event["run"]["facets"]["aigp_governance"]["agentIds"] = HOSTILE
    for dataset, name in zip(event["inputs"], HOSTILE[2:], strict=False):
        dataset["inputFacets"]["aigp_resource"]["resourceName"] = name
    event["inputs"][0]["inputFacets"]["aigp_resource"]["contentHashes"] = 7  # not a list
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(event))
    assert main(["explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[/oops]" in out and "[bold red]shout[/bold red]" in out and ":skull:" in out
    assert "\\x1b[2J\\x1b[31mred" in out and "bell\\x07" in out and "rtl\\u202eevil" in out
    assert not any(ch in out for ch in "\x1b\x07\u202e"), "control characters reached the terminal"


def test_verify_reports_hostile_names_as_text(session: Session, tmp_path: Path) -> None:
    from aigp_otel_bridge.tools.runfiles import Located
    from aigp_otel_bridge.tools.verify import verify_events

    event = copy.deepcopy(_first(session))
    event["run"]["facets"]["aigp_governance"]["traceId"] = "\x1b]0;title\x07" + HOSTILE[0]
    report = verify_events([Located("x", event)], [])
    text = report.render()
    assert "\x1b" not in text and "\x07" not in text and "\\x1b]0;title" in text


def test_endless_or_huge_input_ends_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aigp_otel_bridge.tools.runfiles import InputFileError, load_json_file

    if Path("/dev/zero").exists():
        assert main(["explain", "/dev/zero"]) == 2
        assert "not a text file" in capsys.readouterr().err
    big = tmp_path / "big.json"
    big.write_text("[" + ",".join(["{}"] * 5000) + "]")
    with pytest.raises(InputFileError, match="larger than"):
        load_json_file(big, max_bytes=1024)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["explain", str(deep)]) == 2
    assert "nested too deeply" in capsys.readouterr().err
