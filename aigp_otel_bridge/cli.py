"""The ``aigp-otel-bridge`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
