"""``python -m bench gateway``: the gateway's throughput against two ceilings, in one run.

(a) Ungoverned spans/s received over OTLP/HTTP and OTLP/gRPC, against merely decoding the same
    request bodies with ``opentelemetry-proto`` and visiting every span's attributes (target
    >= 0.8x of that ceiling; requests of 512 spans in traces of 8, from one client, which must get
    no 429: a refused request stops the measurement).
(b) Governed sessions/s (a root, seven children, three AIGP events; the RunEvent written by the
    OpenLineage file transport), against openlineage-python alone building and emitting the
    equivalent RunEvents on the same file transport (target >= 0.5x).
(c) The same governed sessions through a second gateway with an outbox, so that each request's
    governance is journaled (one SQLite transaction with ``fsync``) before it is answered:
    sessions/s with the journal on against off (target >= 0.7x; the two windows take turns to
    come first in a round), and the journal's cost per request, measured directly.

Method: the gateway runs as ``aigp-otel-bridge serve`` in its own process, as users run it; the
requests are encoded before timing by the SDK's own OTLP encoder, and one sender in this process
posts them back to back on one connection. A window runs from the first request to the last
answer for (a), and to the last RunEvent written for (b). The best of ``--rounds`` windows
counts, for every figure alike. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from openlineage.client import OpenLineageClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

from bench import workloads
from bench.setups import RESOURCE

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PRODUCER = "https://github.com/aigp-otel-bridge/aigp-otel-bridge/bench"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _spans(make: Any) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    make(provider.get_tracer("bench.gateway"))
    provider.shutdown()
    return list(memory.get_finished_spans())


SPANS_PER_TRACE = 8
"""Ungoverned traces as agents' short requests make them: a root and seven children."""


def ungoverned_bodies(requests: int, spans_per_request: int) -> list[bytes]:
    """Requests of ungoverned traces of ``SPANS_PER_TRACE`` spans (children whose attributes carry
    nothing the bridge reads), ``spans_per_request`` spans each: every request holds many local
    roots, each lonely (nothing else of its trace is noted), which the gateway keeps for later
    spans of their traces."""
    traces = max(1, spans_per_request // SPANS_PER_TRACE)

    def make(tracer: Any) -> None:
        unread = workloads.UNREAD_ATTRIBUTES
        for _ in range(traces):
            workloads.run_spans(tracer, SPANS_PER_TRACE - 1, None, child_attributes=unread)

    return [encode_spans(_spans(make)).SerializeToString() for _ in range(requests)]


def session_bodies(sessions: int, sessions_per_request: int) -> list[bytes]:
    bodies = []
    for start in range(0, sessions, sessions_per_request):
        count = min(sessions_per_request, sessions - start)
        events = workloads.session_events(count)
        spans = _spans(lambda tracer, events=events: workloads.run_sessions(tracer, events))
        bodies.append(encode_spans(spans).SerializeToString())
    return bodies


def decode_and_visit(bodies: list[bytes]) -> int:
    """The ceiling: parse each request and touch every attribute value of every span."""
    values = 0
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    for key_value in span.attributes:
                        kind = key_value.value.WhichOneof("value")
                        if kind is not None and getattr(key_value.value, kind) is not None:
                            values += 1
    return values


def pending_trace_memory(traces: int) -> float:
    """Bytes the engine keeps per pending governed trace received over OTLP (``tracemalloc``).

    Each trace is one governed child span (one AIGP event) whose root never arrives; requests of
    100 spans are encoded beforehand, then decoded, converted and queued inside the measured
    section, so what a note keeps of its request counts.
    """
    import gc
    import tracemalloc

    from aigp_otel_bridge.config import BridgeConfig
    from aigp_otel_bridge.engine import Engine
    from aigp_otel_bridge.frontdoors.otlp import MEDIA_PROTOBUF, TraceIntake, decode

    def children(tracer: Any, count: int) -> None:
        for _ in range(count):
            name, attributes = workloads.governance_event("aigp.inject.success")
            root = tracer.start_span("agent.session", attributes=workloads.ROOT_ATTRIBUTES)
            child = tracer.start_span("policy.inject", context=set_span_in_context(root),
                                      attributes=workloads.ORDINARY_ATTRIBUTES)
            child.add_event(name, attributes)
            child.end()  # the root never ends: only the child is exported

    bodies = [encode_spans(_spans(lambda tracer: children(tracer, 100))).SerializeToString()
              for _ in range(max(1, traces // 100))]
    count = 100 * len(bodies)
    config = BridgeConfig(trace_timeout_s=3600.0, max_pending_traces=2 * count + 16)
    engine = Engine(config, emit=lambda _: None)
    intake = TraceIntake(engine)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for body in bodies:
        if intake.export(decode(body, MEDIA_PROTOBUF), "bench").admission.value != "accepted":
            raise RuntimeError("the intake refused a request")
    engine.flush(60.0)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    stats = engine.stats.snapshot()
    engine.shutdown(60.0)
    if stats["records"] != count or stats["runs_decided"] != 0:
        raise RuntimeError(f"expected {count} pending traces, got {stats}")
    return kept / count


def journal_cost_ms(bodies: list[bytes], rounds: int) -> float:
    """Milliseconds one request's journal costs on the receiving thread: choosing and encoding its
    governed notes (``Journal.prepare``) and writing them in one transaction (``Journal.write``),
    measured directly on the decoded requests; the best of ``rounds``."""
    from aigp_otel_bridge.frontdoors.otlp import decode_protobuf, notes_from_request
    from aigp_otel_bridge.journal import Journal
    from aigp_otel_bridge.outbox import Outbox

    requests = [notes_from_request(decode_protobuf(body)).notes for body in bodies]
    best = float("inf")
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as directory:
            journal = Journal(Outbox(directory), max_traces=100_000)
            began = time.perf_counter()
            for notes in requests:
                entry = journal.prepare(notes)
                if entry is not None:
                    journal.write(entry)
            best = min(best, (time.perf_counter() - began) / len(requests))
    return 1000 * best


class GatewayUnderTest:
    def __init__(self, lineage: Path, extra_env: dict[str, str] | None = None) -> None:
        self.grpc_port, self.http_port = _free_port(), _free_port()
        self.lineage = lineage
        self._read = 0
        self._lines = 0
        own = ("OPENLINEAGE", "AIGP_BRIDGE", "OTEL_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        env.update({
            "OPENLINEAGE__TRANSPORT__TYPE": "file", "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(lineage),
            "OPENLINEAGE__TRANSPORT__APPEND": "true", "AIGP_BRIDGE_JOB_NAMESPACE": "bench",
            # The hold on local roots (1 s by default) delays every run by the same time, which is
            # latency, not work: without it, the window of (b) measures what the gateway does.
            "AIGP_BRIDGE_ROOT_WAIT_S": "0",
            **(extra_env or {}),
        })
        command = [sys.executable, "-m", "aigp_otel_bridge", "serve", "--grpc-endpoint",
                   f"127.0.0.1:{self.grpc_port}", "--http-endpoint", f"127.0.0.1:{self.http_port}"]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        assert self.process.stdout is not None
        if " serving " not in self.process.stdout.readline():
            self.process.kill()
            raise RuntimeError("the gateway did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)

    def lines(self) -> int:
        """RunEvents written so far (reads only what was appended since the last call)."""
        if not self.lineage.exists():
            return 0
        with self.lineage.open("rb") as lineage:
            lineage.seek(self._read)
            added = lineage.read()
        self._read += len(added)
        self._lines += added.count(b"\n")
        return self._lines


def post_all(port: int, bodies: list[bytes]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/x-protobuf"}
    for body in bodies:
        connection.request("POST", "/v1/traces", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"the gateway answered {response.status}")
    connection.close()


def call_all(port: int, bodies: list[bytes]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        export: Any = channel.unary_unary(EXPORT_METHOD)
        for body in bodies:
            export(body, timeout=60)


def governed_window(gateway: GatewayUnderTest, bodies: list[bytes], expected: int) -> None:
    """Post governed sessions and wait until the gateway has written their RunEvents."""
    post_all(gateway.http_port, bodies)
    _wait_lines(gateway, expected)


def _timed(window: Any) -> float:
    began = time.perf_counter()
    window()
    return time.perf_counter() - began


def _wait_lines(gateway: GatewayUnderTest, count: int) -> None:
    deadline = time.monotonic() + 120
    while gateway.lines() < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {gateway.lines()} of {count} RunEvents were written")
        time.sleep(0.002)


def run(*, rounds: int, requests: int, spans_per_request: int, sessions: int) -> dict[str, Any]:
    spans = requests * spans_per_request
    ungoverned = ungoverned_bodies(requests, spans_per_request)
    with tempfile.TemporaryDirectory() as directory:
        gateway = GatewayUnderTest(Path(directory) / "gateway.jsonl")
        journaled = GatewayUnderTest(Path(directory) / "journaled.jsonl",
                                     {"AIGP_BRIDGE_OUTBOX_DIR": str(Path(directory) / "outbox")})
        # Ungoverned traffic meets the gateway as a user's gateway has it (roots held 1 s): its
        # lonely roots are kept apart, never refused, so one client's stream must flow without a 429.
        held = GatewayUnderTest(Path(directory) / "held.jsonl", {"AIGP_BRIDGE_ROOT_WAIT_S": "1"})
        try:
            post_all(held.http_port, ungoverned[:2])  # warm-up
            call_all(held.grpc_port, ungoverned[:2])
            post_all(journaled.http_port, session_bodies(10, 10))  # warm-up
            names = ("http", "grpc", "decode", "sessions", "journaled", "hand")
            windows: dict[str, list[float]] = {name: [] for name in names}
            hand_path = Path(directory) / "hand.jsonl"
            client = OpenLineageClient(
                config={"transport": {"type": "file", "log_file_path": str(hand_path), "append": True}}
            )
            for round_index in range(rounds):  # interleaved, so that a busy moment hits all alike
                windows["http"].append(_timed(lambda: post_all(held.http_port, ungoverned)))
                windows["grpc"].append(_timed(lambda: call_all(held.grpc_port, ungoverned)))
                windows["decode"].append(_timed(lambda: decode_and_visit(ungoverned)))
                # The journal off and on, in turns first: the first governed window of a round ran
                # up to twice as fast as the second on a busy machine, whichever gateway it was.
                order = [("sessions", gateway), ("journaled", journaled)]
                for name, target in order if round_index % 2 == 0 else order[::-1]:
                    fresh = session_bodies(sessions, 50)  # new trace ids: each round makes new runs
                    expected = target.lines() + sessions
                    windows[name].append(_timed(partial(governed_window, target, fresh, expected)))
                hand = workloads.hand_sessions(workloads.session_events(sessions))
                windows["hand"].append(
                    _timed(lambda hand=hand: workloads.run_hand_built(client, hand, PRODUCER))
                )
        finally:
            gateway.stop()
            journaled.stop()
            held.stop()
    http_s, grpc_s, ceiling_s, sessions_s, journaled_s, hand_s = (
        min(windows[k]) for k in ("http", "grpc", "decode", "sessions", "journaled", "hand"))
    figures: dict[str, Any] = {
        "ungoverned_spans_per_s": {"http": spans / http_s, "grpc": spans / grpc_s,
                                   "decode_and_visit": spans / ceiling_s},
        "governed_sessions_per_s": {"gateway_http": sessions / sessions_s,
                                    "gateway_http_journal_on": sessions / journaled_s,
                                    "openlineage_alone": sessions / hand_s},
        "journal_ms_per_request": journal_cost_ms(session_bodies(sessions, 50), rounds),
    }
    figures["ratios"] = {
        "http_vs_decode": figures["ungoverned_spans_per_s"]["http"] / figures["ungoverned_spans_per_s"][
            "decode_and_visit"],
        "grpc_vs_decode": figures["ungoverned_spans_per_s"]["grpc"] / figures["ungoverned_spans_per_s"][
            "decode_and_visit"],
        "sessions_vs_openlineage": hand_s / sessions_s,
        "journal_on_vs_off": sessions_s / journaled_s,
    }
    figures["pending_trace_bytes"] = pending_trace_memory(sessions * 5)
    figures["settings"] = {"rounds": rounds, "requests": requests, "spans_per_request": spans_per_request,
                           "sessions": sessions, "sessions_per_request": 50, "statistic": "best window"}
    return figures


def table(figures: dict[str, Any]) -> str:
    spans = figures["ungoverned_spans_per_s"]
    sessions = figures["governed_sessions_per_s"]
    ratios = figures["ratios"]
    memory = figures["pending_trace_bytes"]

    def verdict(ratio: float, target: float = 0.5) -> str:
        return "met" if ratio >= target else "not met"

    return "\n".join([
        "gateway                                   rate        ratio  target",
        f"ungoverned spans/s, OTLP/HTTP       {spans['http']:>12,.0f}   {ratios['http_vs_decode']:>6.2f}  "
        f"{verdict(ratios['http_vs_decode'], 0.8)} (0.8x of the ceiling)",
        f"ungoverned spans/s, OTLP/gRPC       {spans['grpc']:>12,.0f}   {ratios['grpc_vs_decode']:>6.2f}  "
        f"{verdict(ratios['grpc_vs_decode'], 0.8)} (0.8x of the ceiling)",
        f"  decode + visit attributes (ceiling) {spans['decode_and_visit']:>10,.0f}",
        f"governed sessions/s, OTLP/HTTP      {sessions['gateway_http']:>12,.0f}   "
        f"{ratios['sessions_vs_openlineage']:>6.2f}  {verdict(ratios['sessions_vs_openlineage'])} (0.5x)",
        f"  openlineage-python alone, same transport {sessions['openlineage_alone']:>6,.0f}",
        f"governed sessions/s, journal on     {sessions['gateway_http_journal_on']:>12,.0f}   "
        f"{ratios['journal_on_vs_off']:>6.2f}  {'met' if ratios['journal_on_vs_off'] >= 0.7 else 'not met'}"
        " (target 0.7x of journal off)",
        f"  the journal's cost per request of 50 sessions (ms) {figures['journal_ms_per_request']:>6.2f}",
        f"memory per pending trace (bytes)    {memory:>12,.0f}   {memory / 1024:>6.2f}  "
        f"{'met' if memory < 1024 else 'not met'} (target < 1 KiB)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness only")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    sizes = dict(rounds=2, requests=2, spans_per_request=50, sessions=20) if args.quick else dict(
        rounds=args.rounds, requests=20, spans_per_request=512, sessions=400)
    figures = run(**sizes)
    print(table(figures))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0
