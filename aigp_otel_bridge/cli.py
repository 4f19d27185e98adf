"""The ``aigp-otel-bridge`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aigp_otel_bridge.version import __version__


class _PrettyJson(logging.Formatter):
    """Indents log messages that are JSON documents (the console transport's RunEvents)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        try:
            return json.dumps(json.loads(message), indent=2, sort_keys=True)
        except ValueError:
            return message


def _show_console_events() -> None:
    """The client's console transport logs each event at INFO: make that visible on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_PrettyJson())
    console = logging.getLogger("openlineage.client.transport.console")
    console.addHandler(handler)
    console.setLevel(logging.INFO)
    console.propagate = False


def _demo(args: argparse.Namespace) -> int:
    from aigp_otel_bridge.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _show_console_events()
    result = run_demo(timeout_s=args.timeout)
    print()
    print(f"trace id  {result.trace_id}")
    print(f"  AIGP governance store : {result.aigp_events} AIGP events with trace_id {result.trace_id}")
    print(f"  OpenTelemetry backend : {result.spans} spans of trace {result.trace_id}")
    print(f"  OpenLineage backend   : run {result.run_id} (job {result.job}), via the '{result.transport}'"
          " transport")
    if not result.delivered:
        print("the RunEvent was not delivered within the timeout; see the log above", file=sys.stderr)
        return 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    from aigp_otel_bridge.verify import InputFileError, verify_files

    try:
        report = verify_files(args.lineage, args.aigp_events, content_dir=args.content_dir)
    except InputFileError as error:
        print(f"aigp-otel-bridge verify: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1


def _explain(args: argparse.Namespace) -> int:
    from aigp_otel_bridge.explain import explain_file
    from aigp_otel_bridge.verify import InputFileError

    try:
        explain_file(args.run_event_file, trace_id=args.trace_id)
    except InputFileError as error:
        print(f"aigp-otel-bridge explain: {error}", file=sys.stderr)
        return 2
    return 0


def _open_outbox(directory: str) -> Any:
    """The outbox in ``directory``; None (after saying why) when there is none to open."""
    from aigp_otel_bridge.outbox import DATABASE_NAME, Outbox, OutboxUnusableError

    if not (Path(directory) / DATABASE_NAME).is_file():
        print(f"aigp-otel-bridge outbox: no outbox in {directory} ({DATABASE_NAME} missing)", file=sys.stderr)
        return None
    try:
        return Outbox(directory, create=False)
    except OutboxUnusableError as error:
        print(f"aigp-otel-bridge outbox: cannot read the outbox: {error}", file=sys.stderr)
        return None


def _outbox_status(args: argparse.Namespace) -> int:
    outbox = _open_outbox(args.dir)
    if outbox is None:
        return 2
    from aigp_otel_bridge.telemetry import bounded

    status = outbox.status()
    if status.last_error is not None:  # rows stored by older versions may hold credentials
        status = replace(status, last_error=bounded(status.last_error))
    if args.json:
        print(json.dumps(status.__dict__))
        return 0
    age = "-" if status.oldest_age_s is None else f"{status.oldest_age_s:.0f} s"
    due = "-" if status.next_attempt_in_s is None else f"in {status.next_attempt_in_s:.0f} s"
    print(f"pending runs   {status.pending}")
    print(f"oldest         {age}")
    print(f"next attempt   {due}")
    print(f"last error     {status.last_error or '-'}")
    return 0


def _outbox_replay(args: argparse.Namespace) -> int:
    from openlineage.client import OpenLineageClient
    from rich.console import Console
    from rich.progress import Progress

    from aigp_otel_bridge.deliver import replay_outbox

    outbox = _open_outbox(args.dir)
    if outbox is None:
        return 2
    client = OpenLineageClient()
    total = outbox.depth()
    console = Console(stderr=True)
    with Progress(console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("replaying", total=total)
        summary = replay_outbox(outbox, client.emit, progress=lambda n: progress.advance(task, n))
    client.close(timeout=10.0)
    left = outbox.depth()
    print(f"delivered {summary.delivered}, failed {summary.failed}, still stored {left}"
          f" (via the '{client.transport.kind}' transport)")
    if summary.last_error:
        print(f"last error: {summary.last_error}")
    return 0 if summary.failed == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aigp-otel-bridge",
        description="Turn AIGP-governed OpenTelemetry traces into OpenLineage RunEvents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a small governed agent session through the bridge and show its RunEvent",
        description=(
            "Runs a governed agent session in-process (a root span, child spans, policy, prompt, tool"
            " and Merkle-proof actions and one denial, made with the reference aigp SDK) through the"
            " span processor. The RunEvent goes wherever the OpenLineage client is configured to send"
            " it (openlineage.yml, OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT__*); with no configuration,"
            " to the console."
        ),
    )
    demo.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery (default 30)")
    demo.set_defaults(handler=_demo)
    verify = commands.add_parser(
        "verify",
        help="prove OpenLineage RunEvents against the AIGP governance store",
        description=(
            "Recomputes each governed RunEvent's aigp_governance facet (governanceHash, hashType,"
            " leafCount, enforcementResult, dataClassification) from the AIGP governance store's events"
            " with the same trace id, and checks every input's leafHash and contentHash against the"
            " store. Exit status: 0 when everything verifies, 1 when a check fails (each failing trace"
            " id and check is named), 2 when an input file cannot be read or parsed."
        ),
    )
    verify.add_argument(
        "--lineage", required=True, metavar="LINEAGE",
        help="OpenLineage RunEvents: JSON lines (the file transport's output) or one JSON document",
    )
    verify.add_argument(
        "--aigp-events", required=True, metavar="STORE",
        help="full AIGP events from the governance store: JSON lines or a JSON array",
    )
    verify.add_argument(
        "--content-dir", metavar="DIR",
        help="governed content files (DIR/<type>/<name> or DIR/<name>): recompute leaf and content hashes",
    )
    verify.add_argument("--json", action="store_true", help="print a machine-readable report")
    verify.set_defaults(handler=_verify)
    explain = commands.add_parser(
        "explain",
        help="show one run's governance from a RunEvent file",
        description=(
            "Shows a governed RunEvent's aigp_governance facet in the terminal: agent, enforcement,"
            " classification, the aggregate governance hash and how it was formed, and each governed"
            " resource with its type, version and hashes."
        ),
    )
    explain.add_argument("run_event_file", metavar="RUN_EVENT_FILE", help="RunEvents: JSON lines or JSON")
    explain.add_argument("--trace-id", metavar="ID", help="the trace to show when the file holds several")
    explain.set_defaults(handler=_explain)
    outbox = commands.add_parser(
        "outbox",
        help="inspect or replay the durable outbox of undelivered RunEvents",
        description=(
            "The outbox (setting outbox_dir / AIGP_BRIDGE_OUTBOX_DIR) keeps RunEvents the lineage"
            " backend could not take until they are delivered. A running bridge replays it in the"
            " background; these commands look at it or replay it now."
        ),
    )
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    status = outbox_commands.add_parser(
        "status", help="pending runs, age of the oldest, last error",
        description="Shows how many runs wait in the outbox, how old the oldest is and the last error.",
    )
    status.add_argument("--dir", required=True, metavar="D", help="the outbox folder")
    status.add_argument("--json", action="store_true", help="print a machine-readable status")
    status.set_defaults(handler=_outbox_status)
    replay = outbox_commands.add_parser(
        "replay", help="deliver the stored runs now through the configured OpenLineage client",
        description=(
            "Tries every stored run once, oldest first, through the OpenLineage client configured by"
            " openlineage.yml / OPENLINEAGE_URL / OPENLINEAGE__TRANSPORT__*; what fails stays stored."
            " Exit status 0 when every run was delivered, 1 when some failed, 2 without an outbox."
        ),
    )
    replay.add_argument("--dir", required=True, metavar="D", help="the outbox folder")
    replay.set_defaults(handler=_outbox_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
