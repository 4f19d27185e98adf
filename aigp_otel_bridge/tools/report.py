"""The lineage report: one self-contained HTML page that draws the verified runs as a graph.

``aigp-otel-bridge report`` verifies a lineage file (its chains, and with a governance store every
hash, as ``verify`` does) and writes what it found for people: a summary, then each chain as an SVG
graph (a node per run, parent -> child edges, the chain's root) and a card per run with its inputs
marked governed, observed-only or denied, and verified or failed with the reason.

The page needs nothing but itself: no script, inline CSS and SVG only, and a Content-Security-Policy
that forbids the browser to fetch anything, so opening it makes no network request. Everything read
from the files is shown as text: HTML-escaped, with control characters made visible (``printable``).
The layered layout of each chain is computed here, in Python, by ``grandalf`` (the ``report`` extra).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aigp_otel_bridge.tools.chains import Chain, RunLinks, RunRef, canonical_run_id, event_run
from aigp_otel_bridge.tools.runfiles import (
    Located,
    governance_facet_of,
    governed_inputs,
    load_json_file,
    printable,
)
from aigp_otel_bridge.tools.verify import (
    FAILED,
    OK,
    InputFileError,
    Report,
    RunVerification,
    verify_events,
    verify_lineage,
)

Status = Literal["COMPLETE", "FAIL", "RUNNING", "OTHER"]
Marking = Literal["governed", "observed-only", "denied"]
Finding = Literal["verified", "links verified", "failed", "not checked"]

NODE_WIDTH, NODE_HEIGHT = 250, 92
MAX_LABEL = 32
"""Characters of a name shown inside a graph node; the full name is in the node's tooltip and card."""
MAX_LISTED_PROBLEMS = 50
"""Denied or failed inputs listed above a run's (collapsed) input table."""


def text(value: object) -> str:
    """Anything from the files as HTML text: control characters visible, markup escaped."""
    return html.escape(printable(str(value)), quote=True)


def _clip(value: str, limit: int = MAX_LABEL) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ---- what the page shows, computed from the files and the verification ----


@dataclass(frozen=True)
class InputView:
    """One input dataset of a run, as the report shows it."""

    namespace: str
    name: str
    resource_type: str
    version: object
    marking: Marking
    verdict: Finding
    reasons: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.resource_type}:{self.name}" if self.resource_type else self.name


@dataclass(frozen=True)
class RunView:
    """One run (every event with its run id) with its verification."""

    ref: RunRef
    links: RunLinks
    agent: str | None
    status: Status
    event_type: str
    complete: bool
    enforcement: str | None
    denied_count: int
    inputs: tuple[InputView, ...]
    verdict: Finding
    """``failed`` when a link or hash check fails; ``verified`` when its links and hashes pass;
    ``links verified`` without a store; ``not checked`` for a run without a governance facet."""
    reasons: tuple[str, ...]

    @property
    def ungoverned(self) -> int:
        return sum(item.marking == "observed-only" for item in self.inputs)


def _status(event_type: object) -> Status:
    return event_type if event_type in ("COMPLETE", "FAIL", "RUNNING") else "OTHER"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _input_checks(verifications: Sequence[RunVerification]) -> dict[str, list[tuple[str, str]]]:
    """Each input's hash checks by ``type:name``: ``leaf_hash[policy:x]`` belongs to ``policy:x``."""
    found: dict[str, list[tuple[str, str]]] = {}
    for verification in verifications:
        for check in verification.checks:
            base, bracket, rest = check.name.partition("[")
            if bracket and rest.endswith("]"):
                found.setdefault(rest[:-1], []).append((check.status, f"{base}: {check.detail}"))
    return found


def _inputs(events: Sequence[Mapping[str, Any]], checks: Mapping[str, list[tuple[str, str]]],
            store_checked: bool) -> tuple[InputView, ...]:
    """The run's inputs, the latest event's view of each dataset; problems first, then by name."""
    seen: dict[tuple[str, str], InputView] = {}
    governed = {id(dataset): facet for event in events for dataset, facet in governed_inputs(event)}
    for event in events:
        inputs = event.get("inputs")
        for dataset in inputs if isinstance(inputs, list) else []:
            if not isinstance(dataset, Mapping):
                continue
            namespace, name = str(dataset.get("namespace", "")), str(dataset.get("name", ""))
            facet = governed.get(id(dataset), {})
            resource_type = str(facet.get("resourceType", ""))
            # the label verify's checks carry (``ClaimedResource.label``)
            label = f"{facet.get('resourceType')}:{facet.get('resourceName', dataset.get('name'))}"
            if facet.get("enforcementResult") == "denied":
                marking: Marking = "denied"
            elif facet and facet.get("governed") is not False:
                marking = "governed"
            else:
                marking = "observed-only"
            own = checks.get(label, []) if facet else []
            failed = tuple(detail for status, detail in own if status == FAILED)
            if failed:
                verdict: Finding = "failed"
            elif store_checked and any(status == OK for status, _ in own):
                verdict = "verified"
            else:
                verdict = "not checked"
            seen[(namespace, name)] = InputView(
                namespace, name, resource_type, facet.get("resourceVersion"), marking, verdict, failed
            )
    order = {"failed": 0, "verified": 2, "not checked": 2}
    rank = {"denied": 0, "observed-only": 1, "governed": 2}
    return tuple(sorted(seen.values(), key=lambda i: (order[i.verdict], rank[i.marking], i.label)))


def run_views(lineage: Sequence[Located], report: Report) -> dict[str, RunView]:
    """Every run of the verified lineage file, by run id."""
    assert report.chains is not None
    events: dict[str, list[Mapping[str, Any]]] = {}
    for item in lineage:
        ref = event_run(item.value)
        if ref is not None:
            events.setdefault(ref.run_id, []).append(item.value)
    verifications: dict[str, list[RunVerification]] = {}
    for verification in report.runs:
        if verification.run_id is not None:
            verifications.setdefault(canonical_run_id(verification.run_id), []).append(verification)
    views: dict[str, RunView] = {}
    for links in report.chains.runs:
        run_id = links.run.ref.run_id
        own_events = events.get(run_id, [])
        last = own_events[-1] if own_events else {}
        facets = [f for e in own_events if isinstance(f := governance_facet_of(e), Mapping)]
        facet: Mapping[str, Any] = facets[-1] if facets else {}
        complete = all(f.get("complete") is not False for f in facets)
        # the parts of a run emitted early each count their own records
        parts = facets if not complete else facets[-1:]
        own = verifications.get(run_id, [])
        reasons = [f"{c.name}: {c.detail}" for c in links.checks if c.status == FAILED]
        reasons += [f"{c.name}: {c.detail}" for v in own for c in v.failures]
        if reasons:
            verdict: Finding = "failed"
        elif not report.store_checked:
            verdict = "links verified"
        else:  # a run without an aigp_governance facet makes no claim to prove
            verdict = "verified" if own else "not checked"
        agent, enforcement = facet.get("agentId"), facet.get("enforcementResult")
        if any(part.get("enforcementResult") == "denied" for part in parts):
            enforcement = "denied"
        views[run_id] = RunView(
            ref=links.run.ref,
            links=links,
            agent=agent if isinstance(agent, str) else None,
            status=_status(last.get("eventType")),
            event_type=str(last.get("eventType", "")),
            complete=complete,
            enforcement=enforcement if isinstance(enforcement, str) else None,
            denied_count=sum(_count(part.get("deniedEventCount")) for part in parts),
            inputs=_inputs(own_events, _input_checks(own), report.store_checked),
            verdict=verdict,
            reasons=tuple(reasons),
        )
    return views


# ---- the graph: grandalf lays each chain out in layers, the page draws it as SVG ----


@dataclass(frozen=True)
class GraphNode:
    """A box of the graph: a run of the file, or a run a link names that the file lacks."""

    key: str
    run: RunView | None
    ref: RunRef
    note: str
    """For runs outside the file: why they are drawn (``outside the file``, ``forged or broken``)."""


@dataclass(frozen=True)
class GraphEdge:
    parent: str
    child: str
    broken: bool


@dataclass(frozen=True)
class Placed:
    """A laid-out graph: node centres and edge polylines, in SVG coordinates."""

    width: float
    height: float
    nodes: dict[str, tuple[float, float]]
    edges: list[tuple[GraphEdge, list[tuple[float, float]]]]


def chain_graph(chain: Chain, views: Mapping[str, RunView]) -> tuple[list[GraphNode], list[GraphEdge]]:
    """The chain's runs, the outside parents and root they name, and the parent -> child edges."""
    nodes: dict[str, GraphNode] = {}
    edges: list[GraphEdge] = []
    for links in chain.runs:
        ref = links.run.ref
        nodes[ref.run_id] = GraphNode(ref.run_id, views[ref.run_id], ref, "")
    for links in chain.runs:
        parent = links.run.parent
        if parent is None:
            continue
        broken = links.kind == "broken"
        key = parent.run_id if parent.run_id in nodes and not broken else f"named:{links.run.ref.run_id}"
        if key not in nodes:
            note = "named by a forged or broken link" if broken else "outside the file"
            nodes[key] = GraphNode(key, None, parent, note)
        edges.append(GraphEdge(key, links.run.ref.run_id, broken))
    root = chain.root
    if not chain.root_in_file and all(node.ref.run_id != root.run_id for node in nodes.values()):
        key = f"root:{root.run_id}"
        nodes[key] = GraphNode(key, None, root, "the chain's root, outside the file")
        for node in list(nodes.values()):
            if node.run is None and node.note == "outside the file":
                edges.append(GraphEdge(key, node.key, False))
    return list(nodes.values()), edges


class _Box:
    """What grandalf needs of a vertex's drawing: its size, and where it puts the centre."""

    def __init__(self) -> None:
        self.w, self.h = NODE_WIDTH, NODE_HEIGHT
        self.xy: tuple[float, float] = (0.0, 0.0)


class _Route:
    """What grandalf needs of an edge's drawing: where it puts the polyline."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.points = [(float(x), float(y)) for x, y in points]


def layout(nodes: Sequence[GraphNode], edges: Sequence[GraphEdge]) -> Placed:
    """Sugiyama layered layout (grandalf): parents above children, crossings reduced, long or
    reversed (cycle) edges routed around the boxes; each connected part placed beside the last."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout

    vertices = {node.key: Vertex(node.key) for node in nodes}
    for vertex in vertices.values():
        vertex.view = _Box()
    made = []
    for edge in edges:
        link = Edge(vertices[edge.parent], vertices[edge.child])
        link.view = _Route()
        made.append((edge, link))
    graph = Graph(list(vertices.values()), [link for _, link in made])
    gap_x, gap_y, margin = 40, 60, 20
    centres: dict[str, tuple[float, float]] = {}
    offset, height = float(margin), 0.0
    for part in graph.C:
        sugiyama = SugiyamaLayout(part)
        sugiyama.xspace, sugiyama.yspace = gap_x, gap_y
        tops = [v for v in part.sV if not v.e_in()]
        sugiyama.init_all(roots=tops or None)
        sugiyama.draw()
        xs = [v.view.xy[0] for v in part.sV]
        ys = [v.view.xy[1] for v in part.sV]
        left, top = min(xs) - NODE_WIDTH / 2, min(ys) - NODE_HEIGHT / 2
        for vertex in part.sV:
            x, y = vertex.view.xy
            centres[vertex.data] = (x - left + offset, y - top + margin)
        for _, link in made:
            if link in part.sE:
                link.view.points = [(x - left + offset, y - top + margin) for x, y in link.view.points]
        offset += max(xs) - min(xs) + NODE_WIDTH + gap_x
        height = max(height, max(ys) - min(ys) + NODE_HEIGHT)
    # grandalf routes every edge from its first vertex (the parent), through its bends
    routed = [
        (edge, [centres[edge.parent], *link.view.points[1:-1], centres[edge.child]]) for edge, link in made
    ]
    return Placed(offset - gap_x + margin, height + 2 * margin, centres, routed)


# ---- HTML ----

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header,main{padding:16px 24px}header{background:#fff;border-bottom:1px solid #d8dce3}
h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 8px}h3{font-size:15px;margin:0}
.summary{display:flex;flex-wrap:wrap;gap:8px;margin:0;padding:0;list-style:none}
.summary li{background:#eef1f5;border-radius:6px;padding:6px 10px}.summary b{font-size:16px}
.result{font-weight:600;border-radius:6px;padding:6px 10px;display:inline-block;margin-top:8px}
.result.ok{background:#dff3e4;color:#145a2a}.result.failed{background:#fbe0e0;color:#8a1111}
.result.partial{background:#fff3d6;color:#6b4a00}
.graph{overflow:auto;background:#fff;border:1px solid #d8dce3;border-radius:6px;max-height:80vh}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}svg .job{font-weight:600;font-size:13px}
.node rect{fill:#fff;stroke:#6b7686;stroke-width:1.5}.node.root rect{stroke-width:3;stroke:#2f5fb3}
.node.failed rect{fill:#fdeeee;stroke:#c62828}
.node.verified rect,.node.links-verified rect{fill:#effaf1;stroke:#2e7d32}
.node.root.failed rect{stroke:#c62828}.node.outside rect{fill:#f6f7f9;stroke-dasharray:6 4}
.node.root rect{stroke-width:3.5}.node.forged rect{fill:#fdeeee;stroke:#c62828;stroke-dasharray:6 4}
.edge{fill:none;stroke:#6b7686;stroke-width:1.5}.edge.broken{stroke:#c62828;stroke-dasharray:5 4}
.card{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:12px 16px;margin:12px 0}
.card.failed{border-color:#c62828;border-width:2px}.card:target{outline:3px solid #2f5fb3}
.badge{display:inline-block;border-radius:4px;padding:1px 6px;font-size:12px;font-weight:600;
margin-right:4px;background:#eef1f5}.badge.failed,.badge.denied,.badge.FAIL{background:#fbe0e0;color:#8a1111}
.badge.verified,.badge.links-verified,.badge.COMPLETE{background:#dff3e4;color:#145a2a}.badge.RUNNING,.badge.partial{background:#fff3d6}
.badge.observed-only{background:#e8e6f7;color:#3b2f86}.badge.governed{background:#e1ecfa;color:#1c4680}
.name{word-break:break-all;font-family:ui-monospace,monospace;font-size:13px}
.reasons{color:#8a1111;margin:6px 0;padding-left:20px}.meta{color:#4a5361;margin:4px 0}
table{border-collapse:collapse;width:100%;margin-top:8px}td,th{text-align:left;padding:3px 8px;
border-bottom:1px solid #eef1f5;vertical-align:top}tr.denied td,tr.failed td{background:#fdf3f3}
summary{cursor:pointer;margin-top:6px}.legend{color:#4a5361;font-size:13px}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _node_svg(node: GraphNode, centre: tuple[float, float], root: RunRef) -> str:
    x, y = centre[0] - NODE_WIDTH / 2, centre[1] - NODE_HEIGHT / 2
    run = node.run
    is_root = node.ref.run_id == root.run_id
    classes = ["node", "run" if run else "outside"]
    if run is None and node.note.startswith("named by a forged"):
        classes.append("forged")
    if is_root:
        classes.append("root")
    if run is not None:
        classes.append(run.verdict.replace(" ", "-"))
    job = f"{node.ref.namespace} / {node.ref.name}"
    title = [job, f"run {node.ref.run_id}"]
    if run is not None:
        denied = sum(i.marking == "denied" for i in run.inputs)
        mark = {"failed": "✗ FAILED", "verified": "✓ verified", "links verified": "✓ links verified",
                "not checked": "not checked"}[run.verdict]
        lines = [
            f"agent {_clip(run.agent or '-')}",
            f"{run.status}{'' if run.complete else ' · partial'} · inputs {len(run.inputs)}"
            + (f" · denied {denied}" if denied else ""),
            mark + (" · root" if is_root else ""),
        ]
        title += run.reasons
    else:
        lines = [node.note, f"run {node.ref.run_id[:18]}…", "root" if is_root else ""]
    body = "".join(
        f'<text x="{x + 10:.0f}" y="{y + 40 + 17 * index:.0f}">{text(line)}</text>'
        for index, line in enumerate(lines)
    )
    anchor_open = f'<a href="#run-{text(node.key)}">' if run is not None else ""
    anchor_close = "</a>" if run is not None else ""
    return (
        f'<g class="{" ".join(classes)}" data-run-id="{text(node.ref.run_id)}" data-job="{text(job)}">'
        f"{anchor_open}<title>{chr(10).join(map(text, title))}</title>"
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="8"/>'
        f'<text class="job" x="{x + 10:.0f}" y="{y + 20:.0f}">{text(_clip(node.ref.name))}</text>'
        f"{body}{anchor_close}</g>"
    )


def _edge_svg(edge: GraphEdge, points: list[tuple[float, float]], nodes: Mapping[str, GraphNode]) -> str:
    """From the parent box's edge facing the next point to the child box's edge facing the last
    bend, through grandalf's bends (edges that skip layers, or go up in a cycle)."""
    (x0, y0), (x1, y1), bends = points[0], points[-1], points[1:-1]
    after, before = (bends or [points[-1]])[0], (bends or [points[0]])[-1]
    half = NODE_HEIGHT / 2
    start = (x0, y0 + half if after[1] >= y0 else y0 - half)
    end = (x1, y1 - half - 3 if before[1] <= y1 else y1 + half + 3)
    path = "M" + " L".join(f"{x:.0f},{y:.0f}" for x, y in [start, *bends, end])
    parent, child = nodes[edge.parent].ref.run_id, nodes[edge.child].ref.run_id
    return (
        f'<path class="edge{" broken" if edge.broken else ""}" d="{path}" marker-end="url(#arrow)"'
        f' data-parent="{text(parent)}" data-child="{text(child)}"/>'
    )


def chain_svg(chain: Chain, views: Mapping[str, RunView]) -> str:
    nodes, edges = chain_graph(chain, views)
    placed = layout(nodes, edges)
    by_key = {node.key: node for node in nodes}
    marker = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8"'
        ' orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#6b7686"/></marker></defs>'
    )
    drawn = [_edge_svg(edge, points, by_key) for edge, points in placed.edges]
    drawn += [_node_svg(node, placed.nodes[node.key], chain.root) for node in nodes]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{placed.width:.0f}"'
        f' height="{placed.height:.0f}" viewBox="0 0 {placed.width:.0f} {placed.height:.0f}">'
        f"{marker}{''.join(drawn)}</svg>"
    )


def _badge(kind: str, label: str | None = None) -> str:
    return f'<span class="badge {text(kind)}">{text(label or kind)}</span>'


def _input_row(item: InputView) -> str:
    classes = " ".join(c for c in ("input", item.marking, "failed" if item.verdict == "failed" else "") if c)
    version = "" if item.version is None else text(item.version)
    verdict = item.verdict.replace(" ", "-")
    return (
        f'<tr class="{classes}" data-marking="{item.marking}" data-verification="{verdict}">'
        f"<td>{_badge(item.marking)}</td><td>{text(item.resource_type or '-')}</td>"
        f'<td class="name">{text(item.name)}</td><td>{version}</td>'
        f"<td>{_badge(verdict, item.verdict)}</td>"
        f"<td>{'<br>'.join(text(r) for r in item.reasons)}</td></tr>"
    )


def _run_card(run: RunView, root: RunRef) -> str:
    links = run.links
    parent = links.run.parent
    relation = {
        "top": "top of its chain (no parent facet)",
        "linked": f"called by {parent.label if parent else ''}",
        "outside": f"called by {parent.label if parent else ''}, outside the file",
        "broken": "its parent link is forged or broken",
    }[links.kind]
    marked = {m: sum(i.marking == m for i in run.inputs) for m in ("governed", "observed-only", "denied")}
    failed_inputs = sum(i.verdict == "failed" for i in run.inputs)
    problems = [i for i in run.inputs if i.marking == "denied" or i.verdict == "failed"]
    listed = "".join(
        f"<li>{_badge(i.marking)}{_badge('failed') if i.verdict == 'failed' else ''}"
        f'<span class="name">{text(i.label)}</span>'
        f"{''.join(' — ' + text(r) for r in i.reasons)}</li>"
        for i in problems[:MAX_LISTED_PROBLEMS]
    )
    more = len(problems) - MAX_LISTED_PROBLEMS
    listed += f"<li>and {more} more in the table below</li>" if more > 0 else ""
    reasons = "".join(f"<li>{text(r)}</li>" for r in run.reasons)
    summary = (
        f"{len(run.inputs)} input(s): {marked['governed']} governed, {marked['observed-only']} observed-only,"
        f" {marked['denied']} denied" + (f"; {failed_inputs} failed verification" if failed_inputs else "")
    )
    rows = "".join(_input_row(i) for i in run.inputs)
    table = (
        f'<details class="inputs"><summary>{text(summary)}</summary><table><thead><tr><th>marked</th>'
        f"<th>type</th><th>name</th><th>version</th><th>verification</th><th>reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
        if run.inputs
        else '<p class="meta">no inputs</p>'
    )
    verdict_class = run.verdict.replace(" ", "-")
    return (
        f'<section class="card run {verdict_class}" id="run-{text(run.ref.run_id)}"'
        f' data-run-id="{text(run.ref.run_id)}" data-verdict="{verdict_class}">'
        f'<h3><span class="name">{text(run.ref.namespace)} / {text(run.ref.name)}</span></h3>'
        f'<p class="meta">{_badge(verdict_class, run.verdict)}{_badge(run.status)}'
        f"{'' if run.complete else _badge('partial')}"
        f"{_badge('denied') if run.enforcement == 'denied' else ''}"
        f"{_badge('root') if run.ref.run_id == root.run_id else ''}"
        f" agent <span class=\"name\">{text(run.agent or '-')}</span>, run {text(run.ref.run_id)}"
        f" ({text(run.event_type or '?')}, {text(', '.join(links.run.sources))})</p>"
        f'<p class="meta">{text(relation)}</p>'
        f"{f'<ul class=reasons>{reasons}</ul>' if reasons else ''}"
        f"{f'<ul class=problems>{listed}</ul>' if listed else ''}{table}</section>"
    )


def _chain_section(number: int, chain: Chain, views: Mapping[str, RunView]) -> str:
    where = "in the file" if chain.root_in_file else "outside the file"
    verdict = "verified" if chain.ok else "FAILED"
    cards = "".join(_run_card(views[links.run.ref.run_id], chain.root) for links in chain.runs)
    failed = sum(views[links.run.ref.run_id].verdict == "failed" for links in chain.runs)
    failing = f" · {failed} run(s) failed" if failed else ""
    return (
        f'<section class="chain" id="chain-{number}" data-ok="{str(chain.ok).lower()}">'
        f"<h2>Chain {number}: {len(chain.runs)} run(s) · links {verdict}{failing}</h2>"
        f'<p class="meta">root: <span class="name">{text(chain.root.label)}</span> ({where})</p>'
        f'<div class="graph">{chain_svg(chain, views)}</div>{cards}</section>'
    )


def render_html(lineage: Sequence[Located], report: Report, *, title: str = "Verified lineage") -> str:
    """The whole page for a verified lineage file."""
    assert report.chains is not None
    views = run_views(lineage, report)
    runs = list(views.values())
    failed = [run for run in runs if run.verdict == "failed"]
    denied = sum(run.denied_count for run in runs)
    ungoverned = sum(run.ungoverned for run in runs)
    if report.problems:
        result_class, result = "failed", "NOT VERIFIED: " + "; ".join(report.problems)
    elif not report.ok:
        result_class, result = "failed", f"FAILED: {len(failed)} of {len(runs)} run(s) fail"
    elif report.store_checked:
        result_class, result = "ok", f"verified: every link and every governance hash of {len(runs)} run(s)"
    else:
        result_class, result = "partial", "links verified; hashes not checked (no governance store given)"
    stats = [
        ("runs", len(runs)),
        ("chains", len(report.chains.chains)),
        ("parent links", report.chains.links),
        ("denied actions", denied),
        ("ungoverned resources", ungoverned),
        ("failed runs", len(failed)),
    ]
    summary = "".join(f'<li data-stat="{name}"><b>{value}</b> {name}</li>' for name, value in stats)
    chains = enumerate(report.chains.chains, start=1)
    sections = "".join(_chain_section(number, chain, views) for number, chain in chains)
    legend = (
        '<p class="legend">Each box is a run (job, agent, status, inputs); arrows go from the calling'
        " run to the run it called; the thick box marked root is the chain's root; dashed boxes are runs the"
        " file does not hold. Green: verified, red: failed. Click a run for its inputs.</p>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)}</title><style>{STYLE}</style></head><body>"
        f'<header><h1>{text(title)}</h1><ul class="summary">{summary}</ul>'
        f'<div class="result {result_class}" id="result" data-ok="{str(report.ok).lower()}">'
        f"{text(result)}</div>"
        f"{legend}</header><main>{sections}</main></body></html>"
    )


def build_report(
    lineage: Sequence[Located], store: Iterable[Mapping[str, Any]] | None, *, content_dir: Path | None = None
) -> tuple[Report, str]:
    """Verify the lineage (its links, and with a store every hash) and render the page."""
    if store is None:
        report = verify_lineage(lineage)
    else:
        report = verify_events(lineage, store, content_dir=content_dir)
    return report, render_html(lineage, report)


def report_files(
    lineage_path: str | Path,
    store_path: str | Path | None,
    output: str | Path,
    *,
    content_dir: str | Path | None = None,
) -> Report:
    """Read the files (``InputFileError`` when unusable), write the page to ``output``, return the
    verification it shows."""
    directory = Path(content_dir) if content_dir is not None else None
    if directory is not None and not directory.is_dir():
        raise InputFileError(f"{directory}: not a directory")
    lineage = load_json_file(lineage_path)
    store = None if store_path is None else [item.value for item in load_json_file(store_path)]
    report, page = build_report(lineage, store, content_dir=directory)
    try:
        Path(output).write_text(page, encoding="utf-8")
    except OSError as error:
        raise InputFileError(f"{output}: cannot write the report: {error.strerror or error}") from None
    return report

