"""The ``aigp-otel-bridge`` command."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
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


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stdout; a reader that went away (``| head``) is no error worth a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (the logging API's name)
        if not isinstance(sys.exc_info()[1], BrokenPipeError):
            super().handleError(record)


def _show_console_events() -> None:
    """The client's console transport logs each event at INFO: make that visible on stdout."""
    handler = _StdoutHandler(sys.stdout)
    handler.setFormatter(_PrettyJson())
    console = logging.getLogger("openlineage.client.transport.console")
    console.addHandler(handler)
    console.setLevel(logging.INFO)
    console.propagate = False


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written, in a few words; None when it can (it is created empty).

    Checked before the demo runs, so that a mistyped folder costs no run and no traceback.
    """
    if not path.parent.is_dir():
        return f"cannot write {path}: the folder {path.parent} does not exist"
    try:
        path.open("w", encoding="utf-8").close()
    except OSError as error:
        return f"cannot write {path}: {error.strerror or error}"
    return None


def _demo(args: argparse.Namespace) -> int:
    started = time.monotonic()  # --timeout bounds the whole demo, loading its libraries included
    from aigp_otel_bridge.tools.demo import run_demo

    for path in (args.store, args.lineage):
        problem = None if path is None else _unwritable(path)
        if problem:
            print(f"aigp-otel-bridge demo: {problem}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _show_console_events()
    left = max(0.0, args.timeout - (time.monotonic() - started))
    result = run_demo(timeout_s=left, store_file=args.store, lineage_file=args.lineage)
    store = f", written to {args.store}" if args.store else ""
    lineage = f", copied to {args.lineage}" if args.lineage else ""
    print()
    print(f"trace id  {result.trace_id}")
    print(f"  AIGP governance store : {result.aigp_events} AIGP events with trace_id {result.trace_id}"
          f"{store}")
    print(f"  OpenTelemetry backend : {result.spans} spans of trace {result.trace_id}")
    print(f"  OpenLineage backend   : run {result.run_id} (job {result.job}), via the '{result.transport}'"
          f" transport{lineage}")
    print(f"  the run was           : {_OUTCOMES[result.outcome]}")
    if args.store and args.lineage:
        print(f"\nprove it: aigp-otel-bridge verify --lineage {args.lineage} --aigp-events {args.store}")
    if not result.delivered:
        print(f"aigp-otel-bridge demo: {_NOT_DELIVERED[result.outcome].format(timeout=args.timeout)}",
              file=sys.stderr)
        return 1
    return 0


_OUTCOMES = {
    "delivered": "delivered",
    "stored": "not delivered: stored in the outbox (aigp-otel-bridge outbox status / replay)",
    "dropped": "not delivered: dropped (counted; the error logged above says why)",
    "undelivered": "not delivered within the timeout: the demo ended while it was still on its way",
}
_NOT_DELIVERED = {
    "stored": "the RunEvent was not delivered (the warning logged above says why); it waits in the"
              " outbox: aigp-otel-bridge outbox status",
    "dropped": "the RunEvent was not delivered: it was dropped (the error logged above says why)",
    "undelivered": "the RunEvent was not delivered within --timeout {timeout:g} s; give it longer"
                   " (the default is 30)",
}
"""What stderr says when the run was not delivered: only what the user can see or do."""


def _content_without_events(command: str, args: argparse.Namespace) -> bool:
    """``--content-dir`` given without ``--aigp-events``: said on stderr, True."""
    if args.content_dir and not args.aigp_events:
        print(f"aigp-otel-bridge {command}: --content-dir needs --aigp-events (the hashes to recompute)",
              file=sys.stderr)
        return True
    return False


def _verify(args: argparse.Namespace) -> int:
    from aigp_otel_bridge.tools.verify import InputFileError, verify_files

    if _content_without_events("verify", args):
        return 2
    try:
        report = verify_files(args.lineage, args.aigp_events, content_dir=args.content_dir)
    except InputFileError as error:
        print(f"aigp-otel-bridge verify: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1


def _report(args: argparse.Namespace) -> int:
    from aigp_otel_bridge.tools.report import report_files
    from aigp_otel_bridge.tools.verify import InputFileError

    if _content_without_events("report", args):
        return 2
    try:
        report = report_files(args.lineage, args.aigp_events, args.output, content_dir=args.content_dir)
    except InputFileError as error:
        print(f"aigp-otel-bridge report: {error}", file=sys.stderr)
        return 2
    assert report.chains is not None
    runs, chains = len(report.chains.runs), len(report.chains.chains)
    verdict = "verified" if report.ok else "FAILED (the report says why)"
    print(f"wrote {args.output}: {runs} run(s) in {chains} chain(s), {verdict}")
    return 0 if report.ok else 1


def _pipe_safe_console() -> Any:
    """A rich console that leaves a closed stdout to ``main`` (rich alone would exit with 1)."""
    from rich.console import Console

    class PipeSafeConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError("the reader of stdout went away")

    return PipeSafeConsole(highlight=False)


def _explain(args: argparse.Namespace) -> int:
    from aigp_otel_bridge.tools.explain import explain_file
    from aigp_otel_bridge.tools.verify import InputFileError

    try:
        explain_file(args.run_event_file, trace_id=args.trace_id, console=_pipe_safe_console())
    except InputFileError as error:
        print(f"aigp-otel-bridge explain: {error}", file=sys.stderr)
        return 2
    return 0


def _outbox_dir(given: str | None) -> str | None:
    """``--dir``, else ``AIGP_BRIDGE_OUTBOX_DIR``: the library's own resolution of ``outbox_dir``."""
    from aigp_otel_bridge.config import resolve

    try:
        return resolve({"outbox_dir": given}).outbox_dir
    except ValueError as error:
        print(f"aigp-otel-bridge outbox: {error}", file=sys.stderr)
        return None


def _open_outbox(given: str | None) -> Any:
    """The outbox named by ``--dir`` or the environment; None (after saying why) when there is none."""
    from aigp_otel_bridge.outbox import DATABASE_NAME, Outbox, OutboxUnusableError

    directory = _outbox_dir(given)
    if directory is None:
        print("aigp-otel-bridge outbox: no outbox folder: give --dir D or set AIGP_BRIDGE_OUTBOX_DIR",
              file=sys.stderr)
        return None
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

    from aigp_otel_bridge.stages.deliver import replay_outbox
    from aigp_otel_bridge.telemetry import describe

    outbox = _open_outbox(args.dir)
    if outbox is None:
        return 2
    try:  # replaying to the console fallback would be no replay: say what is wrong instead
        client = OpenLineageClient()
    except Exception as error:
        print(f"aigp-otel-bridge outbox replay: the OpenLineage configuration is unusable"
              f" ({describe(error)})", file=sys.stderr)
        return 2
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


def _serve(args: argparse.Namespace) -> int:
    from aigp_otel_bridge.frontdoors.gateway import GatewayError, gateway_settings, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = gateway_settings(
            grpc_endpoint=args.grpc_endpoint, http_endpoint=args.http_endpoint,
            auth_token_file=args.auth_token_file, tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file, max_request_bytes=args.max_request_bytes,
        )
    except GatewayError as error:
        print(f"aigp-otel-bridge serve: {error}", file=sys.stderr)
        return 2
    return serve(settings)


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the gateway: OTLP traces in (gRPC and HTTP), OpenLineage RunEvents out",
        description=(
            "Receives OTLP traces over gRPC and HTTP (protobuf or JSON, optionally gzip) and emits one"
            " RunEvent per governed local root, as the span processor does in process. Lineage goes"
            " wherever the OpenLineage client is configured to send it (openlineage.yml,"
            " OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT__*); every AIGP_BRIDGE_* setting applies."
            " SIGTERM or SIGINT stops intake, decides pending traces, delivers them or stores them in"
            " the outbox, and exits 0. See docs/gateway.md."
        ),
    )
    serve.add_argument("--grpc-endpoint", metavar="HOST:PORT",
                       help="OTLP/gRPC listen address or 'none' (env AIGP_BRIDGE_GRPC_ENDPOINT;"
                            " default 127.0.0.1:4317)")
    serve.add_argument("--http-endpoint", metavar="HOST:PORT",
                       help="OTLP/HTTP listen address or 'none' (env AIGP_BRIDGE_HTTP_ENDPOINT;"
                            " default 127.0.0.1:4318)")
    serve.add_argument("--auth-token-file", metavar="FILE",
                       help="require 'Authorization: Bearer <token>' with the token in FILE"
                            " (env AIGP_BRIDGE_AUTH_TOKEN)")
    serve.add_argument("--tls-cert-file", metavar="PEM", help="serve TLS with this certificate (chain)")
    serve.add_argument("--tls-key-file", metavar="PEM", help="the certificate's private key")
    serve.add_argument("--max-request-bytes", type=int, metavar="N",
                       help="largest request body, also after decompression (env"
                            " AIGP_BRIDGE_MAX_REQUEST_BYTES; default 16 MiB)")
    serve.set_defaults(handler=_serve)


def _add_verified_files(command: argparse.ArgumentParser, *, store_help: str) -> None:
    """The files ``verify`` and ``report`` both read: the lineage, the store, the content."""
    command.add_argument(
        "--lineage", required=True, metavar="LINEAGE",
        help="OpenLineage RunEvents: JSON lines (the file transport's output) or one JSON document",
    )
    command.add_argument("--aigp-events", metavar="STORE", help=store_help)
    command.add_argument(
        "--content-dir", metavar="DIR",
        help="governed content files (DIR/<type>/<name> or DIR/<name>): recompute leaf and content hashes",
    )


def _add_report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="draw the verified lineage as one self-contained HTML page",
        description=(
            "Verifies the lineage file as verify does (its chains of runs, and with --aigp-events every"
            " governance hash) and writes one HTML page that needs nothing else to open (no script, no"
            " network request): a summary, each chain as a graph of its runs (job, agent, status) with"
            " parent -> child edges and the chain's root, and each run's inputs marked governed,"
            " observed-only or denied, and verified or failed with the reason. Exit status as verify's:"
            " 0 verified, 1 a check failed (the page is written and shows it), 2 an unusable file."
        ),
    )
    _add_verified_files(
        report, store_help="full AIGP events from the governance store: also verify every hash"
    )
    report.add_argument("-o", "--output", required=True, type=Path, metavar="HTML", help="the page to write")
    report.set_defaults(handler=_report)


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


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
            " and Merkle-proof actions and one denied tool call, made with the reference aigp SDK;"
            " tool calls are GenAI execute_tool spans) through the span processor. The RunEvent goes"
            " wherever the OpenLineage client is configured to send it (openlineage.yml,"
            " OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT__*); with no configuration, to the console."
        ),
    )
    demo.add_argument(
        "--timeout", type=_seconds, default=30.0,
        help="seconds the whole demo may take, delivery included (default 30)",
    )
    demo.add_argument(
        "--store", type=Path, metavar="FILE",
        help="write the governance store (the session's full AIGP events) to FILE, as JSON lines",
    )
    demo.add_argument(
        "--lineage", type=Path, metavar="FILE",
        help="also write the RunEvent to FILE, as JSON lines (for verify --lineage FILE --aigp-events STORE)",
    )
    demo.set_defaults(handler=_demo)
    verify = commands.add_parser(
        "verify",
        help="prove OpenLineage RunEvents against the AIGP governance store",
        description=(
            "Recomputes each governed RunEvent's aigp_governance facet (governanceHash, hashType,"
            " leafCount, enforcementResult, dataClassification) from the AIGP governance store's events"
            " with the same trace id, and checks every input's leafHash and contentHash against the"
            " store. It also verifies the chains of runs: each parent facet names the file's run of"
            " that job in the same trace (a parent outside the file is reported, not failed), every"
            " run of a chain names the same root, and no parent links form a cycle. With --lineage"
            " alone only the chains are verified. Exit status: 0 when everything verifies, 1 when a"
            " check fails (each failing trace id or run and check is named), 2 when an input file"
            " cannot be read or parsed or holds the other kind of document (AIGP events given as"
            " --lineage, RunEvents as --aigp-events)."
        ),
    )
    _add_verified_files(
        verify,
        store_help="full AIGP events from the governance store: JSON lines or a JSON array (without it,"
        " only the links between runs are verified)",
    )
    verify.add_argument("--json", action="store_true", help="print a machine-readable report")
    verify.set_defaults(handler=_verify)
    _add_report(commands)
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
    status.add_argument("--dir", metavar="D", help="the outbox folder (default: AIGP_BRIDGE_OUTBOX_DIR)")
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
    replay.add_argument("--dir", metavar="D", help="the outbox folder (default: AIGP_BRIDGE_OUTBOX_DIR)")
    replay.set_defaults(handler=_outbox_replay)
    _add_serve(commands)
    return parser


EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a command whose reader went away (``| head -1``)."""

_EXTRAS = {"rich": "cli", "grandalf": "report", "aigp": "demo"}
"""Packages only the tools use, and the extra that installs each."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early: say nothing more, and let no flush at exit fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ModuleNotFoundError as missing:
        package = (missing.name or "").partition(".")[0]
        if package not in _EXTRAS:
            raise
        print(
            f"aigp-otel-bridge {args.command}: needs {package}, which is not installed: install the"
            f' "{_EXTRAS[package]}" extra (in a clone: pip install -e ".[{_EXTRAS[package]}]")',
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
