"""Lineage snapshots: deterministic text and the AIGP leaf hash an agent puts into its proof."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openlineage.client.event_v2 import Dataset, InputDataset, Job, Run, RunEvent, RunState
from openlineage.client.generated.schema_dataset import SchemaDatasetFacet, SchemaDatasetFacetFields

from aigp_otel_bridge.snapshot import LineageSnapshot, lineage_snapshot, serialise
from aigp_otel_bridge.tools.verify import verify_events
from tests.sessions import SNAPSHOT, Session, run_governed_session

PRODUCER = "https://example.com/agent"


def _quotes() -> InputDataset:
    schema = SchemaDatasetFacet(
        fields=[
            SchemaDatasetFacetFields(name="symbol", type="string"),
            SchemaDatasetFacetFields(name="px", type="double"),
        ],
        producer=PRODUCER,
    )
    return InputDataset(namespace="s3://finco", name="quotes/2026-01-02", facets={"schema": schema})


def _independent_leaf(name: str, content: str) -> str:
    return hashlib.sha256(f"lineage:{name}:{content}".encode()).hexdigest()


def test_a_snapshot_is_compact_sorted_json_with_its_leaf_and_content_hash() -> None:
    snapshot = lineage_snapshot(_quotes(), name="lineage.pre-trade")
    assert isinstance(snapshot, LineageSnapshot)
    assert snapshot.content.startswith('{"facets":{"schema":{"_producer":')
    assert ", " not in snapshot.content and ": " not in snapshot.content and "\n" not in snapshot.content
    assert json.loads(snapshot.content)["name"] == "quotes/2026-01-02"
    px = json.loads(snapshot.content)["facets"]["schema"]["fields"][1]
    assert (px["name"], px["type"]) == ("px", "double")
    assert snapshot.leaf_hash == _independent_leaf("lineage.pre-trade", snapshot.content)
    assert snapshot.content_hash == hashlib.sha256(snapshot.content.encode()).hexdigest()
    assert snapshot.resource == ("lineage", "lineage.pre-trade", snapshot.content)


def test_the_same_lineage_always_gives_the_same_hash() -> None:
    first = lineage_snapshot([_quotes(), Dataset(namespace="db", name="positions")], name="lineage.x")
    again = lineage_snapshot([_quotes(), Dataset(namespace="db", name="positions")], name="lineage.x")
    assert first == again
    assert lineage_snapshot([Dataset(namespace="db", name="positions")], name="lineage.y") != first


def test_order_of_datasets_and_the_name_are_committed_to() -> None:
    a, b = Dataset(namespace="db", name="a"), Dataset(namespace="db", name="b")
    ab, ba = lineage_snapshot([a, b], name="lineage.x"), lineage_snapshot([b, a], name="lineage.x")
    assert ab.leaf_hash != ba.leaf_hash
    assert ab.leaf_hash != lineage_snapshot([a, b], name="lineage.z").leaf_hash


def test_objects_and_equal_dicts_serialise_alike() -> None:
    dataset = _quotes()
    as_dict = dict(reversed(list(json.loads(serialise(dataset)).items())))
    assert next(iter(as_dict)) == "namespace"
    assert serialise(dataset) == serialise(as_dict) == serialise([as_dict])[1:-1]


def test_a_whole_run_event_can_be_snapshotted() -> None:
    event = RunEvent(
        eventType=RunState.START,
        eventTime="2026-01-02T09:30:00.000Z",
        run=Run(runId=str(uuid.UUID(int=7))),
        job=Job(namespace="finco", name="pricing"),
        inputs=[_quotes()],
        producer=PRODUCER,
    )
    content = json.loads(lineage_snapshot(event, name="lineage.upstream").content)
    assert content["eventType"] == "START"  # enums as their values
    assert content["run"]["runId"] == "00000000-0000-0000-0000-000000000007"
    assert "outputs" in content and None not in content.values()


@pytest.mark.parametrize("bad", ["some text", b"bytes", 42, [object()], [{"x": float("nan")}]])
def test_anything_but_lineage_objects_or_json_data_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        lineage_snapshot(bad, name="lineage.x")


def test_a_name_is_required() -> None:
    with pytest.raises(ValueError, match="name"):
        lineage_snapshot([], name="")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=6), _json, max_size=6), st.randoms(use_true_random=False))
def test_property_key_order_never_changes_the_hash(data: dict[str, Any], random: Any) -> None:
    keys = list(data)
    random.shuffle(keys)
    shuffled = {key: data[key] for key in keys}
    first, second = lineage_snapshot(data, name="lineage.p"), lineage_snapshot(shuffled, name="lineage.p")
    assert first.content == second.content and first.leaf_hash == second.leaf_hash
    assert first.leaf_hash == _independent_leaf("lineage.p", first.content)
    reloaded = json.loads(first.content)
    assert json.dumps(reloaded, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == first.content


@given(st.text(max_size=20))
def test_property_text_is_kept_as_utf8_not_escaped(text: str) -> None:
    content = lineage_snapshot({"note": text}, name="lineage.t").content
    assert json.loads(content) == {"note": text}
    if text and all(ch.isprintable() and ch not in '"\\' for ch in text):
        assert text in content


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return run_governed_session(tmp_path_factory.mktemp("snapshot"))


def test_the_reference_sdk_puts_the_same_leaf_into_its_merkle_proof(session: Session) -> None:
    """The session proved ``SNAPSHOT.resource`` with ``multi_resource_governance_proof``."""
    (proof,) = [e for e in session.store if e.get("governance_merkle_tree")]
    leaves = {leaf["resource_name"]: leaf["hash"] for leaf in proof["governance_merkle_tree"]["leaves"]}
    assert leaves["lineage.pre-trade"] == SNAPSHOT.leaf_hash


def test_the_snapshot_verifies_end_to_end_from_its_content(session: Session, tmp_path: Path) -> None:
    from aigp_otel_bridge.tools.verify import parse_json_documents

    (tmp_path / "lineage").mkdir()
    (tmp_path / "lineage" / "lineage.pre-trade").write_text(SNAPSHOT.content, encoding="utf-8")
    located = parse_json_documents("\n".join(json.dumps(e) for e in session.lineage), "lineage")
    report = verify_events(located, session.store, content_dir=tmp_path)
    checks = {c.name: c.status for run in report.runs for c in run.checks}
    assert checks["leaf_hash[lineage:lineage.pre-trade]"] == "ok"
    assert checks["content_file[lineage:lineage.pre-trade]"] == "ok"
    (tmp_path / "lineage" / "lineage.pre-trade").write_text(
        serialise([Dataset(namespace="s3://finco", name="quotes/2026-01-03")]), encoding="utf-8"
    )
    report = verify_events(located, session.store, content_dir=tmp_path)
    checks = {c.name: c.status for run in report.runs for c in run.checks}
    assert checks["content_file[lineage:lineage.pre-trade]"] == "failed"
