"""Chain verification: prove the ``parent`` links between the runs of a lineage file.

A run called by another run carries OpenLineage's ``parent`` facet: the caller's run id and job,
and the ``root`` (run and job) at the top of the chain (bridge contract, section 8). Nothing signs
these links, so a forged or broken one must be found from the file itself:

- a run whose parent facet names a job the file holds a run of *in the same trace* must name one
  of those runs (anything else is a forged or broken link); a parent the file does not hold at all
  (a scheduler's run from ``OPENLINEAGE_CONTEXT``, a service whose lineage went elsewhere) is
  reported as *outside*, never failed;
- a parent run the file holds has the job the facet names;
- every run of one chain names the same root, and a root the file holds is that job's run and
  the top of its own chain;
- following parents never comes back to a run (no cycles).

The checks are pure: ``verify_chains`` takes the loaded lineage events and returns the chains.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aigp_otel_bridge.stages.extract import trace_key_of
from aigp_otel_bridge.tools.checks import FAILED, OK, SKIPPED, Check
from aigp_otel_bridge.tools.runfiles import Located, governance_facet_of, printable

LinkKind = Literal["top", "linked", "outside", "broken"]
"""How a run is attached: no parent facet (``top``), to a run of the file (``linked``), to a run
the file does not hold (``outside``), or not usably (``broken``: a failed parent check)."""


@dataclass(frozen=True)
class RunRef:
    """A run as a parent facet names it: run id (canonical UUID when it is one) and job."""

    run_id: str
    namespace: str
    name: str

    @property
    def job(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def label(self) -> str:
        return f"{self.namespace} / {self.name} (run {self.run_id})"

    def to_json(self) -> dict[str, str]:
        return {"runId": self.run_id, "namespace": self.namespace, "name": self.name}


@dataclass(frozen=True)
class LineageRun:
    """One run of the lineage file: every event with its run id, read as one."""

    ref: RunRef
    sources: tuple[str, ...]
    """Where its events were found (``file:line``), in file order."""
    trace_key: int | str | None
    """The correlation key of its ``aigp_governance`` traceId; None for runs of other producers."""
    parent: RunRef | None
    root: RunRef | None
    """The chain's root its parent facet names; None without a parent facet."""
    problems: tuple[str, ...] = ()
    """Why its parent facet cannot be used (malformed, or its events disagree)."""

    @property
    def claimed_root(self) -> RunRef:
        """The top of the chain as this run sees it: its facet's root, else itself."""
        return self.root if self.root is not None else self.ref


@dataclass(frozen=True)
class RunLinks:
    """The outcome for one run: how it is attached and the checks of its links."""

    run: LineageRun
    kind: LinkKind
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.status != FAILED for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "runId": run.ref.run_id,
            "job": {"namespace": run.ref.namespace, "name": run.ref.name},
            "sources": list(run.sources),
            "parent": run.parent.to_json() if run.parent else None,
            "root": run.claimed_root.to_json(),
            "link": self.kind,
            "ok": self.ok,
            "checks": [check.to_json() for check in self.checks],
        }


@dataclass(frozen=True)
class Chain:
    """Runs joined by parent links the file resolves, in file order; ``top`` is the run (or runs,
    after a broken link) whose parent is absent or outside the file."""

    runs: tuple[RunLinks, ...]
    root: RunRef
    """The root its top run names (the first run's when it has no top: a cycle)."""
    root_in_file: bool

    @property
    def ok(self) -> bool:
        return all(run.ok for run in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "root": {**self.root.to_json(), "inFile": self.root_in_file},
            "runs": [run.to_json() for run in self.runs],
        }


@dataclass(frozen=True)
class ChainReport:
    """Every chain of a lineage file; ``links`` counts the runs that have a parent facet."""

    chains: tuple[Chain, ...]
    links: int
    ignored_events: int = 0
    """Events without a run id or a job (dataset or job events): no run to link."""
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems and all(chain.ok for chain in self.chains)

    @property
    def runs(self) -> tuple[RunLinks, ...]:
        return tuple(run for chain in self.chains for run in chain.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runs": len(self.runs),
            "links": self.links,
            "ignoredEvents": self.ignored_events,
            "problems": list(self.problems),
            "chains": [chain.to_json() for chain in self.chains],
        }

    def render(self) -> list[str]:
        """Plain-text lines: each chain with its runs' links, then every failure on one line."""
        lines: list[str] = []
        for number, chain in enumerate(self.chains, start=1):
            where = "in the file" if chain.root_in_file else "outside the file"
            verdict = "verified" if chain.ok else "FAILED"
            size = len(chain.runs)
            lines.append(f"chain {number}: {size} run(s), root {chain.root.label} ({where}): {verdict}")
            for run in chain.runs:
                lines.append(f"  {run.kind.upper():<8} {run.run.ref.label}")
                lines.extend(
                    f"    {check.status.upper():<7} {check.name:<6}  {check.detail}" for check in run.checks
                )
        lines.extend(f"problem: {problem}" for problem in self.problems)
        for run in self.runs:
            lines.extend(
                f"FAILED run {run.run.ref.run_id}: {check.name}: {check.detail}"
                for check in run.checks
                if check.status == FAILED
            )
        failed = sum(not chain.ok for chain in self.chains)
        lines.append(
            f"{len(self.chains) - failed} of {len(self.chains)} chain(s) verified"
            f" ({len(self.runs)} run(s), {self.links} parent link(s))"
        )
        return [printable(line) for line in lines]


# ---- reading runs from events ----


def canonical_run_id(run_id: str) -> str:
    """Run ids compare as UUIDs when they are ones (``ABC…`` and ``abc…`` are one run)."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return run_id


def _ref(run: object, job: object) -> RunRef | None:
    if not (isinstance(run, Mapping) and isinstance(job, Mapping)):
        return None
    run_id, namespace, name = run.get("runId"), job.get("namespace"), job.get("name")
    if not all(isinstance(value, str) and value for value in (run_id, namespace, name)):
        return None
    return RunRef(canonical_run_id(str(run_id)), str(namespace), str(name))


def event_run(event: Mapping[str, Any]) -> RunRef | None:
    """The run an event is about, or None for an event without a usable run id and job."""
    return _ref(event.get("run"), event.get("job"))


def _parent_of(event: Mapping[str, Any]) -> tuple[RunRef | None, RunRef | None, str | None]:
    """``(parent, root, problem)`` from an event's ``parent`` facet; all None without one. A facet
    without ``root`` makes the parent the root, as OpenLineage's parent context does."""
    run = event.get("run")
    facets = run.get("facets") if isinstance(run, Mapping) else None
    facet = facets.get("parent") if isinstance(facets, Mapping) else None
    if facet is None:
        return None, None, None
    if not isinstance(facet, Mapping):
        return None, None, "the parent facet is not a JSON object"
    parent = _ref(facet.get("run"), facet.get("job"))
    if parent is None:
        return None, None, "the parent facet lacks a run id, job namespace or job name"
    root_part = facet.get("root")
    if root_part is None:
        return parent, parent, None
    root = _ref(root_part.get("run"), root_part.get("job")) if isinstance(root_part, Mapping) else None
    if root is None:
        return parent, None, "the parent facet's root lacks a run id, job namespace or job name"
    return parent, root, None


def _trace_key(event: Mapping[str, Any]) -> int | str | None:
    facet = governance_facet_of(event)
    return trace_key_of(facet.get("traceId")) if isinstance(facet, Mapping) else None


def lineage_runs(events: Iterable[Located]) -> tuple[list[LineageRun], int]:
    """The runs of a lineage file, in order of first appearance, and how many events name none.

    A run's events (RUNNING, then COMPLETE) must agree on its parent and root; when they do not,
    the run's links are unusable and it says why.
    """
    grouped: dict[str, list[Located]] = {}
    ignored = 0
    for item in events:
        ref = event_run(item.value)
        if ref is None:
            ignored += 1
            continue
        grouped.setdefault(ref.run_id, []).append(item)
    runs: list[LineageRun] = []
    for items in grouped.values():
        parents = {_parent_of(item.value) for item in items}
        problems = sorted({problem for _, _, problem in parents if problem is not None})
        links = {(parent, root) for parent, root, problem in parents if problem is None}
        if len(links) > 1:
            problems.append(f"its {len(items)} events name different parents or roots")
        parent, root = next(iter(links)) if len(links) == 1 and not problems else (None, None)
        keys = [key for item in items if (key := _trace_key(item.value)) is not None]
        runs.append(
            LineageRun(
                ref=event_run(items[-1].value) or RunRef("", "", ""),
                sources=tuple(item.source for item in items),
                trace_key=keys[-1] if keys else None,
                parent=parent,
                root=root,
                problems=tuple(problems),
            )
        )
    return runs, ignored


# ---- checking ----


JobInTrace = tuple[tuple[str, str], int | str]
"""``((namespace, name), trace key)``: the runs of one job in one trace."""


def _parent_check(
    run: LineageRun, by_id: Mapping[str, LineageRun], by_job_and_trace: Mapping[JobInTrace, list[LineageRun]]
) -> tuple[LinkKind, Check]:
    """Is the run's parent facet a true link, an outside one, or a forged or broken one?"""
    if run.problems:
        return "broken", Check("parent", FAILED, "; ".join(run.problems))
    parent = run.parent
    if parent is None:
        return "top", Check("parent", OK, "no parent facet: the top of its chain")
    same_trace = by_job_and_trace.get((parent.job, run.trace_key), []) if run.trace_key is not None else []
    if same_trace and parent.run_id not in {other.ref.run_id for other in same_trace}:
        held = ", ".join(other.ref.run_id for other in same_trace)
        detail = (f"names run {parent.run_id} of job {parent.namespace} / {parent.name}, but the file's"
                  f" run(s) of that job in this trace are {held}: a forged or broken link")
        return "broken", Check("parent", FAILED, detail)
    found = by_id.get(parent.run_id)
    if found is None:
        detail = f"{parent.label} is outside the file (not verified)"
        return "outside", Check("parent", SKIPPED, detail)
    if found.ref.job != parent.job:
        detail = (f"names run {parent.run_id} as of job {parent.namespace} / {parent.name}, but the file"
                  f" holds that run as job {found.ref.namespace} / {found.ref.name}")
        return "broken", Check("parent", FAILED, detail)
    return "linked", Check("parent", OK, f"{parent.label} is in the file ({found.sources[0]})")


def _cycles(parent_of: Mapping[str, str]) -> dict[str, list[str]]:
    """Each run on a cycle of parent links, with the cycle as seen from it (run ids)."""
    on_cycle: dict[str, list[str]] = {}
    settled: set[str] = set()
    for start in parent_of:
        path: list[str] = []
        seen: dict[str, int] = {}
        current: str | None = start
        while current is not None and current not in settled and current not in seen:
            seen[current] = len(path)
            path.append(current)
            current = parent_of.get(current)
        if current is not None and current in seen:
            cycle = path[seen[current]:]
            for index, member in enumerate(cycle):
                on_cycle[member] = cycle[index:] + cycle[:index]
        settled.update(path)
    return on_cycle


def _components(ids: Sequence[str], parent_of: Mapping[str, str]) -> list[list[str]]:
    """Runs joined by resolved parent links (in either direction), each in file order."""
    group = {run_id: run_id for run_id in ids}

    def find(run_id: str) -> str:
        while group[run_id] != run_id:
            group[run_id] = group[group[run_id]]
            run_id = group[run_id]
        return run_id

    for child, parent in parent_of.items():
        group[find(child)] = find(parent)
    members: dict[str, list[str]] = {}
    for run_id in ids:
        members.setdefault(find(run_id), []).append(run_id)
    return list(members.values())


def _root_checks(members: Sequence[LineageRun], kinds: Mapping[str, LinkKind],
                 by_id: Mapping[str, LineageRun]) -> tuple[RunRef, bool, dict[str, Check]]:
    """The chain's root (named by its top run) and each run's root check."""
    tops = [run for run in members if kinds[run.ref.run_id] != "linked"]
    reference = (tops or list(members))[0].claimed_root
    held = by_id.get(reference.run_id)
    checks: dict[str, Check] = {}
    for run in members:
        claimed = run.claimed_root
        if claimed != reference:
            top = f"its chain's top run {tops[0].ref.run_id}" if tops else "its chain"
            detail = f"names root {claimed.label}, but {top} names root {reference.label}"
            checks[run.ref.run_id] = Check("root", FAILED, detail)
        elif held is not None and held.ref.job != reference.job:
            detail = (f"the root {reference.run_id} is in the file as job {held.ref.namespace} /"
                      f" {held.ref.name}, not {reference.namespace} / {reference.name}")
            checks[run.ref.run_id] = Check("root", FAILED, detail)
        elif held is not None and held.claimed_root.run_id != held.ref.run_id:
            detail = (f"the root {reference.run_id} is in the file but is not the top of a chain: it names"
                      f" root {held.claimed_root.run_id}")
            checks[run.ref.run_id] = Check("root", FAILED, detail)
        else:
            where = f"in the file ({held.sources[0]})" if held is not None else "outside the file"
            checks[run.ref.run_id] = Check("root", OK, f"{reference.label}, {where}")
    return reference, held is not None, checks


def verify_chains(events: Iterable[Located]) -> ChainReport:
    """Check every run's parent link, its chain's root and the absence of cycles."""
    runs, ignored = lineage_runs(events)
    by_id = {run.ref.run_id: run for run in runs}
    by_job_and_trace: dict[JobInTrace, list[LineageRun]] = {}
    for run in runs:
        if run.trace_key is not None:
            by_job_and_trace.setdefault((run.ref.job, run.trace_key), []).append(run)
    kinds: dict[str, LinkKind] = {}
    parent_checks: dict[str, Check] = {}
    parent_of: dict[str, str] = {}
    for run in runs:
        kind, check = _parent_check(run, by_id, by_job_and_trace)
        kinds[run.ref.run_id], parent_checks[run.ref.run_id] = kind, check
        if kind == "linked" and run.parent is not None:
            parent_of[run.ref.run_id] = run.parent.run_id
    cycles = _cycles(parent_of)
    chains: list[Chain] = []
    for ids in _components([run.ref.run_id for run in runs], parent_of):
        members = [by_id[run_id] for run_id in ids]
        root, root_in_file, root_checks = _root_checks(members, kinds, by_id)
        linked: list[RunLinks] = []
        for run in members:
            checks = [parent_checks[run.ref.run_id]]
            cycle = cycles.get(run.ref.run_id)
            if cycle is not None:
                loop = " -> ".join([*cycle, cycle[0]])
                checks.append(Check("cycle", FAILED, f"its parent links come back to it: {loop}"))
            else:
                checks.append(root_checks[run.ref.run_id])
            linked.append(RunLinks(run, kinds[run.ref.run_id], tuple(checks)))
        chains.append(Chain(tuple(linked), root, root_in_file))
    links = sum(run.parent is not None or bool(run.problems) for run in runs)
    problems = () if runs else ("no RunEvent with a run id and a job in the lineage file",)
    return ChainReport(tuple(chains), links, ignored, problems)
