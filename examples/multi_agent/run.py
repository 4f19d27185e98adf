"""Three agent processes calling each other over HTTP, the lineage that links their runs, and a
report that proves and draws the chain.

Run: ``python examples/multi_agent/run.py [DIR]`` (needs the ``demo`` and ``report`` extras: from the
clone's root, ``pip install -e ".[demo,report]"``; once the package is published,
``pip install "aigp-otel-bridge[demo,report]"``).

Starts the librarian and the researcher (HTTP servers on free loopback ports), then the planner,
which asks the researcher, which asks the librarian: one trace, three runs. Each process emits its
own RunEvent and keeps its own governance store; the researcher's run carries the ``parent`` facet
naming the planner's run, the librarian's names the researcher's, and both name the planner's run
as the chain's root. Prints the three events and the links, then writes ``DIR/lineage.jsonl``,
``DIR/store.jsonl`` and ``DIR/report.html`` (DIR defaults to a new temporary folder) and verifies:
``aigp-otel-bridge report --lineage DIR/lineage.jsonl --aigp-events DIR/store.jsonl -o DIR/report.html``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

AGENT = Path(__file__).resolve().parent / "agent.py"
ROLES = ("planner", "researcher", "librarian")
"""The chain, from its root down."""


def _serve(role: str, directory: Path, *callee: str) -> tuple[subprocess.Popen[str], str]:
    """Start a serving agent; returns the process and the port it listens on."""
    process = subprocess.Popen(
        [sys.executable, str(AGENT), role, str(directory / f"{role}.jsonl"),
         str(directory / f"{role}.store.jsonl"), *callee],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    if not port.isdigit():
        process.kill()
        raise SystemExit(f"the {role} did not start")
    return process, port


def run_agents(directory: Path) -> list[dict[str, Any]]:
    """The three agents' RunEvents (planner, researcher, librarian); writes ``lineage.jsonl`` and
    ``store.jsonl`` in ``directory``, every agent's lineage and governance store in one file each."""
    librarian, librarian_port = _serve("librarian", directory)
    with librarian:
        researcher, researcher_port = _serve("researcher", directory, librarian_port)
        with researcher:
            subprocess.run(
                [sys.executable, str(AGENT), "planner", str(directory / "planner.jsonl"),
                 str(directory / "planner.store.jsonl"), researcher_port],
                check=True, timeout=120, stdout=subprocess.DEVNULL,
            )
            for role, process in (("researcher", researcher), ("librarian", librarian)):
                if process.wait(timeout=60) != 0:
                    raise SystemExit(f"the {role} failed")
    events = []
    with open(directory / "lineage.jsonl", "w", encoding="utf-8") as lineage, \
            open(directory / "store.jsonl", "w", encoding="utf-8") as store:
        for role in ROLES:
            text = (directory / f"{role}.jsonl").read_text(encoding="utf-8")
            lineage.write(text)
            store.write((directory / f"{role}.store.jsonl").read_text(encoding="utf-8"))
            (event,) = [json.loads(line) for line in text.splitlines() if line.strip()]
            events.append(event)
    return events


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="multi_agent-"))
    directory.mkdir(parents=True, exist_ok=True)
    events = run_agents(directory)
    for role, event in zip(ROLES, events, strict=True):
        print(f"=== RunEvent of the {role} ===")
        print(json.dumps(event, indent=2, sort_keys=True))

    def job(of: dict[str, Any]) -> str:
        return f"{of['job']['namespace']} / {of['job']['name']}"

    print("=== links ===")
    for index in range(1, len(ROLES)):
        caller_role, caller = ROLES[index - 1], events[index - 1]
        role, event = ROLES[index], events[index]
        parent = event["run"]["facets"]["parent"]
        print(f"{role} run {event['run']['runId']} ({job(event)})")
        print(f"  parent run   {parent['run']['runId']} ({job(parent)})")
        print(f"  {caller_role} run  {caller['run']['runId']} ({job(caller)})")
        print(f"  root run     {parent['root']['run']['runId']} ({job(parent['root'])})")

    from aigp_otel_bridge.tools.report import report_files

    lineage, store, page = directory / "lineage.jsonl", directory / "store.jsonl", directory / "report.html"
    report = report_files(lineage, store, page)
    print("=== report ===")
    print(f"aigp-otel-bridge report --lineage {lineage} --aigp-events {store} -o {page}")
    print(f"{page}: {'verified' if report.ok else 'FAILED'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
