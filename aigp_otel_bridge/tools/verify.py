"""Verification: prove OpenLineage RunEvents against the AIGP governance store.

A RunEvent's ``aigp_governance`` facet is a claim about a trace's governance records. The
store keeps those records as full AIGP events, so the claim can be recomputed with the same
extraction and aggregation code the bridge used (``records_from_aigp_events`` and
``aggregate``) and compared field by field. The checking functions are pure and return
structured results; only ``verify_files`` (through ``runfiles``) and the content-file reader touch
the file system.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.facets import GOVERNANCE_FACET_KEY
from aigp_otel_bridge.merkle import EMPTY_SHA256, flat_hash, is_sha256_hex, leaf_hash, merkle_root
from aigp_otel_bridge.stages.aggregate import RunSummary, aggregate
from aigp_otel_bridge.stages.extract import GovernanceRecord, records_from_aigp_events, trace_key_of
from aigp_otel_bridge.tools.chains import ChainReport, verify_chains
from aigp_otel_bridge.tools.checks import FAILED as FAILED
from aigp_otel_bridge.tools.checks import OK as OK
from aigp_otel_bridge.tools.checks import SKIPPED as SKIPPED
from aigp_otel_bridge.tools.checks import Check as Check
from aigp_otel_bridge.tools.checks import Status as Status
from aigp_otel_bridge.tools.runfiles import InputFileError as InputFileError
from aigp_otel_bridge.tools.runfiles import Located as Located
from aigp_otel_bridge.tools.runfiles import (
    governance_facet_of,
    governed_inputs,
    is_aigp_event,
    is_run_event,
    load_json_file,
    printable,
    read_text,
)
from aigp_otel_bridge.tools.runfiles import parse_json_documents as parse_json_documents

PARTIAL = "not applicable (partial run: complete is false, so the run covers an unknown part of the trace)"


@dataclass(frozen=True)
class RunVerification:
    """All checks of one governed RunEvent."""

    source: str
    """Where the RunEvent was found, ``file:line`` or ``file[index]``."""
    trace_id: str | None
    run_id: str | None
    event_type: str | None
    complete: bool
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.status != FAILED for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if check.status == FAILED)

    def to_json(self) -> dict[str, Any]:
        return {
            "traceId": self.trace_id,
            "runId": self.run_id,
            "eventType": self.event_type,
            "source": self.source,
            "complete": self.complete,
            "ok": self.ok,
            "checks": [check.to_json() for check in self.checks],
        }


@dataclass(frozen=True)
class Report:
    """The outcome for a lineage file: one entry per governed RunEvent (none when no store was
    given), and its chains of runs."""

    runs: tuple[RunVerification, ...]
    ignored_events: int = 0
    """Lineage events without an ``aigp_governance`` run facet (other producers, dataset events)."""
    problems: tuple[str, ...] = field(default_factory=tuple)
    chains: ChainReport | None = None
    store_checked: bool = True
    """False when only the links were verified (no governance store given)."""

    @property
    def ok(self) -> bool:
        """True only when something was verified and nothing failed: no vacuous success."""
        verified = bool(self.runs) or (self.chains is not None and self.chains.links > 0)
        chains_ok = self.chains is None or self.chains.ok
        return verified and chains_ok and not self.problems and all(run.ok for run in self.runs)

    def to_json(self) -> dict[str, Any]:
        document = {
            "ok": self.ok,
            "traces": [run.to_json() for run in self.runs],
            "ignoredEvents": self.ignored_events,
            "problems": list(self.problems),
            "storeChecked": self.store_checked,
        }
        if self.chains is not None:
            document["chains"] = self.chains.to_json()
        return document

    def render(self) -> str:
        """A plain-text report: each run's checks, then every failure as ``trace id: check``."""
        lines: list[str] = []
        for run in self.runs:
            verdict = "verified" if run.ok else "FAILED"
            lines.append(
                f"trace {run.trace_id} (run {run.run_id}, {run.event_type}, {run.source}): {verdict}"
            )
            width = max(len(check.name) for check in run.checks)
            for check in run.checks:
                lines.append(f"  {check.status.upper():<7} {check.name:<{width}}  {check.detail}")
        lines.extend(f"problem: {problem}" for problem in self.problems)
        failed = [run for run in self.runs if not run.ok]
        for run in failed:
            for check in run.failures:
                lines.append(f"FAILED trace {run.trace_id}: {check.name}: {check.detail}")
        if self.chains is not None and (self.chains.links or not self.chains.ok):
            lines.extend(self.chains.render())
        if self.store_checked:
            ignored = f"; {self.ignored_events} event(s) without {GOVERNANCE_FACET_KEY} ignored"
            lines.append(
                f"{len(self.runs) - len(failed)} of {len(self.runs)} governed RunEvent(s) verified"
                + (ignored if self.ignored_events else "")
            )
        return "\n".join(printable(line) for line in lines)  # the data may hold terminal escapes


# ---------------------------------------------------------------------------------------------
# Loading (runfiles.py)


def index_store(events: Iterable[Mapping[str, Any]]) -> dict[int | str, list[Mapping[str, Any]]]:
    """Store events by trace key, so that ``4BF9…`` and ``4bf9…`` are one trace (``trace_key_of``)."""
    index: dict[int | str, list[Mapping[str, Any]]] = {}
    for event in events:
        key = trace_key_of(event.get("trace_id"))
        if key is not None:
            index.setdefault(key, []).append(event)
    return index


# ---------------------------------------------------------------------------------------------
# Checking


@dataclass(frozen=True)
class StoreView:
    """What the store says about one trace, computed once with the bridge's own code."""

    events: int
    records: tuple[GovernanceRecord, ...]
    summary: RunSummary
    hashes: frozenset[str]
    """The trace's valid governance hashes (the set H of the contract, section 4)."""
    leaves: dict[tuple[str, str], frozenset[str]]
    """Merkle leaf hashes by (resource type, resource name)."""
    classifications: frozenset[str]

    @classmethod
    def of(cls, events: Sequence[Mapping[str, Any]]) -> StoreView:
        records = tuple(records_from_aigp_events(events))
        summary = aggregate(records, max_inputs=sys.maxsize)
        return cls(
            events=len(events),
            records=records,
            summary=summary,
            hashes=frozenset(r.governance_hash for r in records if r.governance_hash is not None),
            leaves={(r.type, r.name): frozenset(r.leaf_hashes) for r in summary.resources if r.leaf_hashes},
            classifications=frozenset(r.classification for r in records if r.classification is not None),
        )


def _short(value: object) -> str:
    return f"{value[:12]}…" if isinstance(value, str) and len(value) == 64 else repr(value)


def _show(value: object) -> str:
    return "absent" if value is None else repr(value)


def _equal(name: str, claimed: object, recomputed: object, what: str) -> Check:
    if claimed == recomputed:
        return Check(name, OK, f"{_show(claimed)}, {what}")
    return Check(name, FAILED, f"lineage says {_show(claimed)}, the store gives {_show(recomputed)}")


def _tree_leaf_hashes(tree: object) -> list[str] | None:
    """The leaf hashes of a store event's ``governance_merkle_tree``; None when malformed."""
    leaves = tree.get("leaves") if isinstance(tree, Mapping) else None
    if not isinstance(leaves, list) or not leaves:
        return None
    hashes = [leaf.get("hash") if isinstance(leaf, Mapping) else None for leaf in leaves]
    valid = [h for h in hashes if isinstance(h, str) and is_sha256_hex(h)]
    return valid if len(valid) == len(hashes) else None


def store_tree_check(events: Sequence[Mapping[str, Any]]) -> Check:
    """Each store event's Merkle tree must reproduce its own governance hash (spec 8.8.3).

    Without this, a changed leaf in the store would go unnoticed: the aggregate uses only the
    events' governance hashes.
    """
    trees = 0
    wrong: list[str] = []
    for event in events:
        tree = event.get("governance_merkle_tree")
        if tree is None:
            continue
        trees += 1
        label = str(event.get("event_id") or "an event without event_id")
        hashes = _tree_leaf_hashes(tree)
        if hashes is None:
            wrong.append(f"{label}: the tree's leaves are missing or malformed")
            continue
        root = merkle_root(hashes)
        claimed = event.get("governance_hash")
        count = tree.get("leaf_count", len(hashes)) if isinstance(tree, Mapping) else None
        if root != claimed:
            wrong.append(f"{label}: the leaves give root {_short(root)}, the event says {_short(claimed)}")
        elif count != len(hashes):
            wrong.append(f"{label}: leaf_count {count!r} but {len(hashes)} leaves")
    if wrong:
        return Check("store_merkle_trees", FAILED, "; ".join(wrong))
    if not trees:
        return Check("store_merkle_trees", SKIPPED, "no store event of the trace has a Merkle tree")
    return Check("store_merkle_trees", OK, f"{trees} Merkle tree(s) reproduce their events' hashes")


def _aggregate_how(view: StoreView) -> str:
    count = len(view.hashes)
    if count == 0:
        return f"no valid governance hash among {view.events} store event(s): SHA-256 of the empty string"
    if count == 1:
        return f"the single distinct governance hash of {view.events} store event(s)"
    return f"Merkle root of {count} distinct governance hashes of {view.events} store event(s)"


def _aggregate_checks(facet: Mapping[str, Any], view: StoreView, complete: bool) -> list[Check]:
    claimed = facet.get("governanceHash")
    summary = view.summary
    if complete:
        how = _aggregate_how(view)
        hash_check = (
            Check("governance_hash", OK, f"{claimed} = {how}")
            if claimed == summary.governance_hash
            else Check(
                "governance_hash",
                FAILED,
                f"lineage says {claimed!r}, the store recomputes {summary.governance_hash} ({how})",
            )
        )
        return [
            hash_check,
            _equal("hash_type", facet.get("hashType"), summary.hash_type, "as recomputed"),
            _equal("leaf_count", facet.get("leafCount"), summary.leaf_count, "as recomputed"),
        ]
    # A partial run's aggregate covers an unknown subset of the trace; only a single-hash
    # aggregate can still be pinned to one store event.
    known = view.hashes | {EMPTY_SHA256}
    if claimed in known:
        hash_check = Check(
            "governance_hash", OK, f"{claimed} is a governance hash of the trace (partial run)"
        )
    elif facet.get("hashType") == "merkle-sha256":
        hash_check = Check("governance_hash", SKIPPED, PARTIAL)
    else:
        hash_check = Check(
            "governance_hash",
            FAILED,
            f"partial run with a single-hash aggregate {claimed!r} that no store event of the trace carries",
        )
    return [hash_check, Check("hash_type", SKIPPED, PARTIAL), Check("leaf_count", SKIPPED, PARTIAL)]


def _consistency_checks(facet: Mapping[str, Any], view: StoreView, complete: bool) -> list[Check]:
    summary = view.summary
    checks: list[Check] = []
    enforcement = facet.get("enforcementResult")
    if complete:
        checks.append(_equal("enforcement_result", enforcement, summary.enforcement, "as in the store"))
    elif enforcement == sc.DENIED:
        checks.append(
            Check("enforcement_result", OK, f"denied; the store holds {summary.denied_count} denied event(s)")
            if summary.denied_count
            else Check("enforcement_result", FAILED, "lineage says denied, the store holds no denied event")
        )
    elif enforcement == sc.ALLOWED:
        checks.append(Check("enforcement_result", SKIPPED, PARTIAL))
    else:
        checks.append(Check("enforcement_result", FAILED, f"not allowed/denied: {enforcement!r}"))

    classification = facet.get("dataClassification")
    if complete:
        checks.append(
            _equal("data_classification", classification, summary.classification, "as in the store")
        )
    elif classification is None:
        checks.append(Check("data_classification", SKIPPED, PARTIAL))
    elif classification in view.classifications:
        checks.append(Check("data_classification", OK, f"{classification!r} occurs in the store's events"))
    else:
        checks.append(
            Check("data_classification", FAILED, f"{classification!r} occurs in no store event of the trace")
        )

    checks.append(_count_check("event_count", facet.get("eventCount"), len(view.records), complete))
    denied = facet.get("deniedEventCount")
    checks.append(_count_check("denied_event_count", denied, summary.denied_count, complete))
    return checks


def _count_check(name: str, claimed: object, stored: int, complete: bool) -> Check:
    """Counts may legitimately exceed the store's: span-attribute records never reach it."""
    if claimed is None:
        return Check(name, SKIPPED, "not in the facet")
    if not isinstance(claimed, int) or isinstance(claimed, bool) or claimed < 0:
        return Check(name, FAILED, f"not a count: {claimed!r}")
    if claimed < stored and complete:
        return Check(name, FAILED, f"lineage counts {claimed}, the store holds {stored} for the trace")
    if claimed == stored:
        return Check(name, OK, f"{claimed}, as in the store")
    if claimed < stored:
        return Check(name, OK, f"{claimed} of the store's {stored} (partial run)")
    return Check(
        name,
        SKIPPED,
        f"lineage counts {claimed}, the store holds {stored}: records the store never sees (span"
        " attributes) or missing store events; missing events with content fail governance_hash",
    )


def _hash_list(facet: Mapping[str, Any], single: str, several: str) -> list[object]:
    values: list[object] = []
    if single in facet:
        values.append(facet[single])
    many = facet.get(several)
    if isinstance(many, list):
        values.extend(many)
    elif many is not None:
        values.append(many)
    return values


@dataclass(frozen=True)
class ClaimedResource:
    """One input's ``aigp_resource`` claim."""

    type: str
    name: str
    leaf_hashes: tuple[object, ...]
    content_hashes: tuple[object, ...]

    @property
    def label(self) -> str:
        return f"{self.type}:{self.name}"


def claimed_resources(event: Mapping[str, Any]) -> list[ClaimedResource]:
    """The governed resources a RunEvent names in its inputs' ``aigp_resource`` facets."""
    return [
        ClaimedResource(
            type=str(facet.get("resourceType")),
            name=str(facet.get("resourceName", dataset.get("name"))),
            leaf_hashes=tuple(_hash_list(facet, "leafHash", "leafHashes")),
            content_hashes=tuple(_hash_list(facet, "contentHash", "contentHashes")),
        )
        for dataset, facet in governed_inputs(event)
    ]


def _input_checks(resources: Sequence[ClaimedResource], view: StoreView) -> list[Check]:
    checks: list[Check] = []
    for resource in resources:
        key = (resource.type, resource.name)
        for claimed in resource.leaf_hashes:
            name = f"leaf_hash[{resource.label}]"
            if claimed in view.leaves.get(key, ()):
                detail = f"{_short(claimed)} is a Merkle leaf of this resource in the store"
                checks.append(Check(name, OK, detail))
                continue
            owners = sorted(f"{t}:{n}" for (t, n), leaves in view.leaves.items() if claimed in leaves)
            where = f"; the store has it for {', '.join(owners)}" if owners else ""
            detail = f"{_short(claimed)} is not among the store's Merkle leaves{where}"
            checks.append(Check(name, FAILED, detail))
        for claimed in resource.content_hashes:
            name = f"content_hash[{resource.label}]"
            if claimed in view.hashes:
                checks.append(Check(name, OK, f"{_short(claimed)} is a governance hash in the store"))
            else:
                checks.append(
                    Check(name, FAILED, f"{_short(claimed)} is not among the store's governance hashes")
                )
    return checks


def _content_file(content_dir: Path, resource: ClaimedResource) -> tuple[Path | None, str]:
    """``<dir>/<type>/<name>``, else ``<dir>/<name>``; never a path outside the directory."""
    root = content_dir.resolve()
    tried: list[str] = []
    for candidate in (content_dir / resource.type / resource.name, content_dir / resource.name):
        try:
            resolved = candidate.resolve()
            if not resolved.is_relative_to(root):
                continue
            tried.append(str(candidate))
            if resolved.is_file():
                return resolved, str(candidate)
        except (OSError, ValueError):  # a name no file system accepts (NUL, too long)
            continue
    return None, " or ".join(tried) or "no usable path for this name"


def content_checks(resources: Sequence[ClaimedResource], content_dir: Path) -> list[Check]:
    """Recompute each input's hashes from its governed content file, byte for byte."""
    checks: list[Check] = []
    for resource in resources:
        name = f"content_file[{resource.label}]"
        if not (resource.leaf_hashes or resource.content_hashes):
            continue
        path, where = _content_file(content_dir, resource)
        if path is None:
            checks.append(Check(name, SKIPPED, f"no content file ({where})"))
            continue
        try:
            content = read_text(path, allow_nul=True)
        except InputFileError as error:
            checks.append(Check(name, FAILED, f"cannot read as UTF-8 text: {error}"))
            continue
        wrong: list[str] = []
        if resource.content_hashes and flat_hash(content) not in resource.content_hashes:
            wrong.append(f"SHA-256(content) = {_short(flat_hash(content))} is not the input's contentHash")
        leaf = leaf_hash(resource.type, resource.name, content)
        if resource.leaf_hashes and leaf not in resource.leaf_hashes:
            wrong.append(f"the leaf SHA-256(type:name:content) = {_short(leaf)} is not the input's leafHash")
        if wrong:
            checks.append(Check(name, FAILED, f"{where}: " + "; ".join(wrong)))
        else:
            checks.append(Check(name, OK, f"{where} reproduces the input's hashes"))
    return checks


def verify_run_event(
    event: Mapping[str, Any],
    store_index: Mapping[int | str, Sequence[Mapping[str, Any]]],
    *,
    source: str = "",
    content_dir: Path | None = None,
) -> RunVerification:
    """Check one RunEvent's governance claims against the store's events for its trace."""
    facet = governance_facet_of(event)
    run = event.get("run")
    run_id = run.get("runId") if isinstance(run, Mapping) else None
    event_type = event.get("eventType")

    def result(trace_id: str | None, complete: bool, checks: list[Check]) -> RunVerification:
        return RunVerification(
            source=source,
            trace_id=trace_id,
            run_id=run_id if isinstance(run_id, str) else None,
            event_type=event_type if isinstance(event_type, str) else None,
            complete=complete,
            checks=tuple(checks),
        )

    if not isinstance(facet, Mapping):
        return result(None, True, [Check("facet", FAILED, f"{GOVERNANCE_FACET_KEY} is not a JSON object")])
    trace_id = facet.get("traceId")
    complete = facet.get("complete") is not False
    key = trace_key_of(trace_id) if isinstance(trace_id, str) else None
    if key is None or not isinstance(trace_id, str):
        unusable = Check("trace_id", FAILED, f"the facet's traceId is unusable: {trace_id!r}")
        return result(None, complete, [unusable])
    resources = claimed_resources(event)
    checks: list[Check] = []
    events = store_index.get(key, ())
    if events:
        view = StoreView.of(events)
        invalid = f"; {view.summary.invalid} value(s) left out as invalid" if view.summary.invalid else ""
        checks.append(Check("store_events", OK, f"{len(events)} AIGP event(s) with this trace id{invalid}"))
        checks.append(store_tree_check(events))
        checks += _aggregate_checks(facet, view, complete)
        checks += _consistency_checks(facet, view, complete)
        checks += _input_checks(resources, view)
    else:
        checks.append(Check("store_events", FAILED, "no AIGP event in the store has this trace id"))
    if content_dir is not None:
        checks += content_checks(resources, content_dir)
    return result(trace_id, complete, checks)


def _trace_and_run(event: Mapping[str, Any]) -> tuple[int | str | None, object]:
    facet = governance_facet_of(event)
    run = event.get("run")
    trace = trace_key_of(facet.get("traceId")) if isinstance(facet, Mapping) else None
    return trace, run.get("runId") if isinstance(run, Mapping) else None


def runs_per_trace(lineage: Sequence[Located]) -> dict[int | str, int]:
    """How many distinct governed runs the lineage file holds of each trace."""
    runs: dict[int | str, set[object]] = {}
    for item in lineage:
        trace, run_id = _trace_and_run(item.value)
        if trace is not None:
            runs.setdefault(trace, set()).add(str(run_id).lower())
    return {trace: len(ids) for trace, ids in runs.items()}


def agent_scope(
    event: Mapping[str, Any],
    store_index: Mapping[int | str, Sequence[Mapping[str, Any]]],
    runs_of_trace: Mapping[int | str, int],
) -> tuple[Mapping[int | str, Sequence[Mapping[str, Any]]], Check | None]:
    """The store events a run is checked against: its trace's, or, when the file holds several
    runs of the trace (a chain of agents calling each other), only those of the run's own agents.

    A run covers the records of its own local root, and the store cannot say which span belongs
    to which root; it does say which agent recorded each event (``agent_id``), and the run's facet
    names its agents (``agentId``, ``agentIds``).
    """
    trace, _ = _trace_and_run(event)
    if trace is None or runs_of_trace.get(trace, 0) < 2:
        return store_index, None
    facet = governance_facet_of(event)
    named: list[object] = []
    if isinstance(facet, Mapping):
        many = facet.get("agentIds")
        named = [facet.get("agentId"), *(many if isinstance(many, list) else ())]
    agents = {agent for agent in named if isinstance(agent, str)}
    events = store_index.get(trace, ())
    own = [e for e in events if isinstance(agent := e.get("agent_id"), str) and agent in agents]
    shown = ", ".join(sorted(agents)) or "none named"
    detail = (f"the file holds {runs_of_trace[trace]} runs of this trace: checked against the {len(own)}"
              f" of its {len(events)} store event(s) recorded by this run's agent(s) ({shown})")
    return {trace: own}, Check("store_scope", OK if own else SKIPPED, detail)


def verify_events(
    lineage: Sequence[Located],
    store: Iterable[Mapping[str, Any]],
    *,
    content_dir: Path | None = None,
) -> Report:
    """Verify every governed RunEvent of a lineage file against a store's events."""
    store_index = index_store(store)
    shared = runs_per_trace(lineage)
    runs: list[RunVerification] = []
    ignored = 0
    for item in lineage:
        if governance_facet_of(item.value) is None:
            ignored += 1
            continue
        index, scope = agent_scope(item.value, store_index, shared)
        verified = verify_run_event(item.value, index, source=item.source, content_dir=content_dir)
        runs.append(verified if scope is None else replace(verified, checks=(scope, *verified.checks)))
    problems = () if runs else (f"no RunEvent with an {GOVERNANCE_FACET_KEY} run facet in the lineage file",)
    return Report(runs=tuple(runs), ignored_events=ignored, problems=problems, chains=verify_chains(lineage))


def verify_lineage(lineage: Sequence[Located]) -> Report:
    """Verify only the links between the runs of a lineage file (no store: no hash is checked).

    A file in which no run has a parent facet has nothing to verify, which is not a success.
    """
    chains = verify_chains(lineage)
    problems = () if chains.links else ("no run in the lineage file has a parent facet: no link to verify",)
    return Report(
        runs=(), ignored_events=chains.ignored_events, problems=problems, chains=chains, store_checked=False
    )


def verify_files(
    lineage_path: str | Path, store_path: str | Path | None, *, content_dir: str | Path | None = None
) -> Report:
    """Load the files (``InputFileError`` when unusable) and verify the lineage's links and, with a
    store, every governed RunEvent against it."""
    directory = Path(content_dir) if content_dir is not None else None
    if directory is not None and not directory.is_dir():
        raise InputFileError(f"{directory}: not a directory")
    lineage = load_json_file(lineage_path)
    if store_path is None:
        return verify_lineage(lineage)
    store = [item.value for item in load_json_file(store_path)]
    mistake = swapped_files(str(lineage_path), [item.value for item in lineage], str(store_path), store)
    if mistake is not None:
        raise InputFileError(mistake)
    return verify_events(lineage, store, content_dir=directory)


def swapped_files(
    lineage_name: str,
    lineage: Sequence[Mapping[str, Any]],
    store_name: str,
    store: Sequence[Mapping[str, Any]],
) -> str | None:
    """What is wrong when a file holds the other kind of document (AIGP events given as lineage, or
    RunEvents as the store), with the command to try; None when each file holds its own kind."""
    lineage_holds_aigp = not any(governance_facet_of(d) is not None for d in lineage) and any(
        is_aigp_event(d) for d in lineage
    )
    store_holds_lineage = not any(is_aigp_event(d) for d in store) and any(is_run_event(d) for d in store)
    if not (lineage_holds_aigp or store_holds_lineage):
        return None
    wrong = []
    if lineage_holds_aigp:
        wrong.append(f"{lineage_name} (--lineage) holds AIGP events, not OpenLineage RunEvents")
    if store_holds_lineage:
        wrong.append(f"{store_name} (--aigp-events) holds OpenLineage RunEvents, not AIGP events")
    hint = (
        "the two files look swapped: aigp-otel-bridge verify"
        f" --lineage {shlex.quote(store_name)} --aigp-events {shlex.quote(lineage_name)}"
        if lineage_holds_aigp and store_holds_lineage
        else "--lineage takes RunEvents (demo --lineage FILE), --aigp-events the store (demo --store FILE)"
    )
    return "; ".join(wrong) + f"; {hint}"
