"""Two agent processes calling each other over HTTP, and the lineage that links their runs.

Run: ``python examples/multi_agent/run.py`` (needs the ``demo`` extra: from the clone's root,
``pip install -e ".[demo]"``; once the package is published, ``pip install "aigp-otel-bridge[demo]"``).

Starts the researcher (an HTTP server on a free loopback port), then the planner, which asks it a
question. Each process emits its own RunEvent; the researcher's carries the ``parent`` facet naming
the planner's run and job. Prints both events, then the link.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

AGENT = Path(__file__).resolve().parent / "agent.py"


def run_agents(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both agents' RunEvents, (planner, researcher)."""
    planner_file, researcher_file = directory / "planner.jsonl", directory / "researcher.jsonl"
    with subprocess.Popen(
        [sys.executable, str(AGENT), "researcher", str(researcher_file)], stdout=subprocess.PIPE, text=True
    ) as researcher:
        assert researcher.stdout is not None
        port = researcher.stdout.readline().strip()
        if not port.isdigit():
            raise SystemExit("the researcher did not start")
        subprocess.run(
            [sys.executable, str(AGENT), "planner", str(planner_file), port],
            check=True, timeout=120, stdout=subprocess.DEVNULL,
        )
        if researcher.wait(timeout=60) != 0:
            raise SystemExit("the researcher failed")
    (planner,) = [json.loads(line) for line in planner_file.read_text().splitlines() if line.strip()]
    (research,) = [json.loads(line) for line in researcher_file.read_text().splitlines() if line.strip()]
    return planner, research


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        planner, research = run_agents(Path(directory))
    for title, event in (("planner", planner), ("researcher", research)):
        print(f"=== RunEvent of the {title} ===")
        print(json.dumps(event, indent=2, sort_keys=True))
    parent = research["run"]["facets"]["parent"]
    print("=== link ===")
    def job(of: dict[str, Any]) -> str:
        return f"{of['job']['namespace']} / {of['job']['name']}"

    print(f"researcher run {research['run']['runId']} ({job(research)})")
    print(f"  parent run   {parent['run']['runId']} ({job(parent)})")
    print(f"  planner run  {planner['run']['runId']} ({job(planner)})")


if __name__ == "__main__":
    main()
