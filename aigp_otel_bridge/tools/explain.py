"""A readable terminal view of one run's governance, rendered with ``rich``.

The RunEvent alone says what was claimed, not whether it is true: ``explain`` describes the
claim (how its aggregate is formed under the contract's rule; per resource, whether it was denied
and whether it was governed or only observed), ``verify`` proves it against the governance store.
Everything taken from the file is shown as plain text: never read as ``rich`` markup, control
characters and terminal escapes shown escaped, long values cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from aigp_otel_bridge.facets import GOVERNANCE_FACET_KEY
from aigp_otel_bridge.merkle import EMPTY_SHA256
from aigp_otel_bridge.stages.extract import trace_key_of
from aigp_otel_bridge.telemetry import shorten
from aigp_otel_bridge.tools.runfiles import (
    InputFileError,
    Located,
    governance_facet_of,
    governed_inputs,
    is_aigp_event,
    load_json_file,
    printable,
)

SHOWN_MAX = 4096
"""Longest value shown; the rest is cut with a note of how much."""
_LISTED_MAX = 20

_ENFORCEMENT_STYLE = {"allowed": "bold green", "denied": "bold red"}
_CLASSIFICATION_STYLE = {"public": "green", "internal": "cyan", "confidential": "yellow", "restricted": "red"}


def select_runs(items: Sequence[Located], trace_id: str | None, name: str) -> list[Located]:
    """The governed RunEvents to show: those of ``trace_id``, else of the file's only trace."""
    governed = [item for item in items if isinstance(governance_facet_of(item.value), Mapping)]
    if not governed:
        aigp = any(is_aigp_event(item.value) for item in items)
        hint = " (it holds AIGP events: explain takes RunEvents, e.g. demo --lineage FILE)" if aigp else ""
        raise InputFileError(f"{name}: no RunEvent with an {GOVERNANCE_FACET_KEY} run facet{hint}")
    traces: dict[object, str] = {}
    for item in governed:
        text = str(_facet(item.value).get("traceId"))
        traces.setdefault(trace_key_of(text) or text, text)
    listed = ", ".join(shorten(text, 80) for text in list(traces.values())[:_LISTED_MAX])
    if len(traces) > _LISTED_MAX:
        listed += f", … ({len(traces) - _LISTED_MAX} more)"
    if trace_id is not None:
        wanted = trace_key_of(trace_id) or trace_id
        chosen = [item for item in governed if _key(item) == wanted]
        if not chosen:
            raise InputFileError(f"{name}: no governed RunEvent for trace {trace_id}; traces: {listed}")
        return chosen
    if len(traces) > 1:
        raise InputFileError(f"{name}: holds {len(traces)} traces; choose one with --trace-id: {listed}")
    return governed


def _facet(event: Mapping[str, Any]) -> Mapping[str, Any]:
    facet = governance_facet_of(event)
    return facet if isinstance(facet, Mapping) else {}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object, style: str = "") -> Text:
    """A value from the file as literal text: no markup, no control characters, bounded."""
    return Text(printable(shorten(str(value), SHOWN_MAX)), style=style)


def _key(item: Located) -> object:
    text = str(_facet(item.value).get("traceId"))
    return trace_key_of(text) or text


def how_formed(facet: Mapping[str, Any], resources: Sequence[Mapping[str, Any]]) -> str:
    """The contract's aggregate rule (section 4), told for this facet's values."""
    digest = facet.get("governanceHash")
    hash_type = facet.get("hashType")
    leaves = facet.get("leafCount")
    events = facet.get("eventCount")
    records = f"{events} record(s)" if isinstance(events, int) else "its records"
    if digest == EMPTY_SHA256 and hash_type == "sha256":
        text = f"None of {records} carried governed content: the aggregate is SHA-256 of the empty string."
    elif hash_type == "sha256":
        owners = [
            f"{r.get('resourceType')}:{r.get('resourceName')}"
            for r in resources
            if digest == r.get("contentHash") or digest in _list(r.get("contentHashes"))
        ]
        owner = f" It is the content hash of {', '.join(owners)}." if owners else ""
        text = f"All of {records} share one governance hash, which stands for itself (leafCount 1).{owner}"
    elif hash_type == "merkle-sha256":
        count = leaves if isinstance(leaves, int) else "an unknown number of"
        rule = "sorted ascending, paired left to right as SHA-256(left + right), an odd last node promoted"
        if events == 1:
            text = f"The single record's own Merkle root over {count} resource leaves ({rule})."
        else:
            text = (
                f"The AIGP Merkle root (spec 8.8.3) over {count} distinct governance hashes of {records},"
                f" {rule}; or, when all records share one hash, that record's own Merkle root over"
                f" {count} leaves."
            )
    else:
        text = f"Hash type {hash_type!r} is not one the bridge emits."
    if facet.get("complete") is False:
        text += " This event covers only part of the trace (complete: false)."
    return text + " `aigp-otel-bridge verify` recomputes it from the governance store."


def _styled(value: object, styles: Mapping[str, str]) -> Text:
    if value is None:
        return Text("—", style="dim")
    return _text(value, styles.get(str(value), ""))


def _resources(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [facet for _, facet in governed_inputs(event)]


def _observed_only(resource: Mapping[str, Any]) -> bool:
    """An input the agent used with no AIGP record about it (``governed: false``, contract 9)."""
    return resource.get("governed") is False


def _status(resource: Mapping[str, Any]) -> Text:
    if _observed_only(resource):
        return Text("observed", style="yellow")
    return Text("governed", style="green")


def _resources_title(resources: Sequence[Mapping[str, Any]]) -> str:
    observed = sum(1 for resource in resources if _observed_only(resource))
    title = f"Governed resources ({len(resources) - observed})"
    return title + (f", observed only ({observed}): used with no governance record" if observed else "")


def _hash_lines(resource: Mapping[str, Any]) -> Text:
    text = Text()
    kinds = (("leaf", "leafHash", "leafHashes"), ("content", "contentHash", "contentHashes"))
    for label, single, several in kinds:
        values = [resource[single]] if resource.get(single) else []
        many = resource.get(several)
        values += [v for v in many if v not in values] if isinstance(many, list) else []
        for value in values:
            if text:
                text.append("\n")
            text.append(f"{label:<8}", style="dim")
            text.append_text(_text(value))
    return text if text else Text("—", style="dim")


def render_run(event: Mapping[str, Any], source: str = "") -> Group:
    """One run's governance as ``rich`` renderables: summary, aggregate, resources."""
    facet = _facet(event)
    run = _mapping(event.get("run"))
    job = _mapping(event.get("job"))
    resources = _resources(event)

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    agent = _text(facet.get("agentId"))
    agent_ids = facet.get("agentIds")
    if isinstance(agent_ids, list) and agent_ids:
        agent.append_text(_text(f"  (agents: {', '.join(map(str, agent_ids))})", "dim"))
    denied, total = facet.get("deniedEventCount"), facet.get("eventCount")
    enforcement = _styled(facet.get("enforcementResult"), _ENFORCEMENT_STYLE)
    if isinstance(denied, int) and isinstance(total, int):
        enforcement.append(f"  ({denied} of {total} records denied)", style="dim")
    summary.add_row("agent", agent)
    summary.add_row("trace id", _text(facet.get("traceId")))
    summary.add_row("run id", _text(run.get("runId")))
    summary.add_row("job", _text(f"{job.get('namespace')}/{job.get('name')}"))
    summary.add_row("event", _text(f"{event.get('eventType')} at {event.get('eventTime')}"))
    summary.add_row("enforcement", enforcement)
    summary.add_row("classification", _styled(facet.get("dataClassification"), _CLASSIFICATION_STYLE))
    summary.add_row("complete", Text("yes" if facet.get("complete") is not False else "no (partial run)"))
    if source:
        summary.add_row("source", _text(source))

    aggregate = Table.grid(padding=(0, 2))
    aggregate.add_column(style="bold")
    aggregate.add_column(overflow="fold")
    aggregate.add_row("governanceHash", _text(facet.get("governanceHash")))
    aggregate.add_row("hashType", _text(facet.get("hashType")))
    aggregate.add_row("leafCount", _text(facet.get("leafCount", "—")))
    aggregate.add_row("formed", _text(how_formed(facet, resources)))

    table = Table(title=_resources_title(resources), title_justify="left", expand=False)
    table.add_column("type", style="cyan", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("enforcement", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("hashes", overflow="fold")
    for resource in resources:
        version = resource.get("resourceVersion")
        shown = "—" if version is None else str(version)
        observed = resource.get("observedVersions")
        if isinstance(observed, list) and observed:
            shown += f" (seen {', '.join(map(str, observed))})"
        table.add_row(
            _text(resource.get("resourceType")), _text(resource.get("resourceName")), _text(shown),
            _styled(resource.get("enforcementResult"), _ENFORCEMENT_STYLE), _status(resource),
            _hash_lines(resource),
        )

    return Group(
        Panel(summary, title="AIGP governance", title_align="left"),
        Panel(aggregate, title="Aggregate proof", title_align="left"),
        table,
    )


def explain_file(path: str | Path, *, trace_id: str | None = None, console: Console | None = None) -> None:
    """Print the governance of the run(s) of one trace in a RunEvent file."""
    chosen = select_runs(load_json_file(path), trace_id, str(path))
    out = console or Console(highlight=False, markup=False, emoji=False)
    for item in chosen:
        out.print(render_run(item.value, item.source))
