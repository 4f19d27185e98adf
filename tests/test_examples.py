"""The runnable examples in ``examples/``, run as a user runs them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aigp import AIGPInstrumentor
from openlineage.client import OpenLineageClient
from openlineage.client.transport.kafka import KafkaConfig
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aigp_otel_bridge import AIGPLineageSpanProcessor
from tests.conftest import CaptureTransport
from tests.schemas import validate_run_event
from tests.waiting import wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_quickstart_prints_one_valid_run_event() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    events = _json_lines(result.stdout + result.stderr)
    assert len(events) == 1
    validate_run_event(events[0])  # type: ignore[arg-type]
    assert events[0]["job"]["name"] == "trading-bot-v2.invoke"  # type: ignore[index]


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENAI_INPUTS = [
    "model.gpt-4o-2024-08-06", "policy.research-sources", "prompt.research-system", "tool.search_papers"
]


def test_genai_agent_prints_one_valid_run_event_named_after_the_genai_agent() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "genai_agent.py")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    (event,) = _json_lines(result.stdout + result.stderr)
    validate_run_event(event)  # type: ignore[arg-type]
    assert event["job"]["name"] == "research-assistant.invoke_agent"  # type: ignore[index]
    assert sorted(d["name"] for d in event["inputs"]) == GENAI_INPUTS  # type: ignore[attr-defined]


def test_genai_and_aigp_namespaces_coexist_on_the_same_spans() -> None:
    """The gen_ai.* spans reach the tracing backend untouched; the bridge takes only names from them."""
    spans = InMemorySpanExporter()
    transport = CaptureTransport()
    _load_example("genai_agent").main(client=OpenLineageClient(transport=transport), span_exporter=spans)
    (event,) = transport.events
    validate_run_event(event)
    finished = spans.get_finished_spans()
    by_operation = {span.attributes["gen_ai.operation.name"] for span in finished if span.attributes}
    assert by_operation == {"invoke_agent", "chat", "execute_tool"}
    chat = next(s for s in finished if s.name == "chat gpt-4o" and s.events)
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 412
    assert {e.name for e in chat.events} == {"aigp.model.loaded", "aigp.prompt.used"}
    aigp_events = sum(1 for span in finished for e in span.events if e.name.startswith("aigp."))
    governed_spans = sum(1 for span in finished if any(k.startswith("aigp.") for k in span.attributes or {}))
    governance = event["run"]["facets"]["aigp_governance"]
    assert governance["eventCount"] == aigp_events + governed_spans
    assert sorted(d["name"] for d in event["inputs"]) == GENAI_INPUTS
    facets = {d["name"]: d["inputFacets"]["aigp_resource"] for d in event["inputs"]}
    # The tool is named by its execute_tool span and governed by the SDK event on it.
    assert facets["tool.search_papers"]["governed"] is True
    assert facets["tool.search_papers"]["contentHash"]
    assert facets["model.gpt-4o-2024-08-06"]["provider"] == "openai"
    assert governance["ungovernedResourceCount"] == 0
    # Names only: token counts and other gen_ai.* values stay in the tracing backend.
    assert ": 412" not in json.dumps(event)  # input tokens of the first chat
    assert not any(key.startswith("gen_ai") for key in json.dumps(event).split('"'))


class _LineageBackend(ThreadingHTTPServer):
    """A loopback stand-in for Marquez: records the JSON bodies POSTed to /api/v1/lineage."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _LineageHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.bodies) >= count,
                   lambda: f"{count} RunEvents at the backend, got {len(self.bodies)}", timeout_s)
        return list(self.bodies)


class _LineageHandler(BaseHTTPRequestHandler):
    server: _LineageBackend

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path != "/api/v1/lineage":
            self.send_response(404)
        else:
            self.server.paths.append(self.path)
            self.server.bodies.append(json.loads(body))
            self.send_response(201)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[_LineageBackend]:
    server = _LineageBackend()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_http_backend_config_delivers_to_the_lineage_endpoint(
    backend: _LineageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load((EXAMPLES / "http_backend.yml").read_text())
    assert config["transport"]["url"] == "http://localhost:5000"  # what the guide tells users
    config["transport"]["url"] = backend.url
    config_file = tmp_path / "openlineage.yml"
    config_file.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config_file))

    bridge = AIGPLineageSpanProcessor(job_namespace="http.example")  # its own OpenLineageClient()
    provider = TracerProvider()
    provider.add_span_processor(bridge)
    aigp = AIGPInstrumentor(agent_id="agent.http", org_id="org.o", event_callback=bridge.ingest_aigp_event)
    with provider.get_tracer("t").start_as_current_span("invoke") as root:
        aigp.inject_success("policy.http", 1, "policy text")
    provider.shutdown()

    (event,) = backend.wait_for(1)
    validate_run_event(event)
    assert backend.paths == ["/api/v1/lineage"]
    assert event["run"]["facets"]["aigp_governance"]["traceId"] == f"{root.get_span_context().trace_id:032x}"
    assert event["job"]["namespace"] == "http.example"


def test_zero_code_agent_reaches_the_backend_named_by_openlineage_url(
    backend: _LineageBackend, tmp_path: Path
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENLINEAGE", "AIGP_"))}
    environ.update(
        HOME=str(tmp_path), OPENLINEAGE_URL=backend.url, OTEL_TRACES_EXPORTER="aigp_openlineage",
        OTEL_SERVICE_NAME="support-agent", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
    )
    result = subprocess.run(
        [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable,
         str(EXAMPLES / "zero_code" / "agent.py")],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    governed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("governed")}
    events = backend.wait_for(3)
    assert {e["run"]["facets"]["aigp_governance"]["traceId"] for e in events} == governed
    for event in events:
        validate_run_event(event)


def test_kafka_example_is_a_valid_kafka_transport_config() -> None:
    """Not run against a broker; the file must still be what the client's Kafka transport reads."""
    config = yaml.safe_load((EXAMPLES / "kafka.yml").read_text())
    transport = config["transport"]
    assert transport["type"] == "kafka"
    parsed = KafkaConfig.from_dict(dict(transport))
    assert parsed.topic == "openlineage.events" and parsed.flush is True
    assert "bootstrap.servers" in parsed.config
    assert all(isinstance(value, str) for value in parsed.config.values()), "librdkafka takes strings"


def test_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    """The README's first Python block, pasted into a file and run, sends one valid RunEvent."""
    import re

    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    quick_start = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)[0]
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start, encoding="utf-8")
    events_file = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env.update(
        OPENLINEAGE__TRANSPORT__TYPE="file",
        OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=str(events_file),
        OPENLINEAGE__TRANSPORT__APPEND="true",
    )
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    (event,) = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    validate_run_event(event)
    assert event["job"]["name"] == "trading-bot-v2.invoke"
    assert [d["name"] for d in event["inputs"]] == ["policy.trading-limits"]


def test_readme_quick_start_pasted_as_is_prints_its_run_event(tmp_path: Path) -> None:
    """With no OpenLineage configuration at all, the pasted block shows the RunEvent it made."""
    import re

    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    script = tmp_path / "quick_start.py"
    script.write_text(re.findall(r"```python\n(.*?)```", readme, re.DOTALL)[0], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env["HOME"] = str(tmp_path)  # no ~/.openlineage/openlineage.yml
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    (event,) = _json_lines(result.stdout + result.stderr)
    validate_run_event(event)  # type: ignore[arg-type]
    governance = event["run"]["facets"]["aigp_governance"]  # type: ignore[index]
    assert governance["agentId"] == "agent.trading-bot-v2" and governance["eventCount"] == 1


def test_multi_agent_example_links_the_callee_run_to_the_caller_run(tmp_path: Path) -> None:
    """Three agent processes over HTTP (W3C trace context and the bridge's propagator), one command,
    ending with a verified report of the chain."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "multi_agent" / "run.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=180, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENLINEAGE"))},
    )
    assert result.returncode == 0, result.stderr
    planner, research, librarian = _json_blocks(result.stdout)
    for event in (planner, research, librarian):
        validate_run_event(event)
    assert (planner["job"]["name"], research["job"]["name"]) == ("planner.planner", "researcher.researcher")
    assert "parent" not in planner["run"]["facets"]
    parent = research["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == planner["run"]["runId"] == parent["root"]["run"]["runId"]
    assert (parent["job"]["namespace"], parent["job"]["name"]) == ("acme.agents", "planner.planner")
    assert f"parent run   {planner['run']['runId']} (acme.agents / planner.planner)" in result.stdout
    onward = librarian["run"]["facets"]["parent"]
    assert onward["run"]["runId"] == research["run"]["runId"]
    assert onward["root"]["run"]["runId"] == planner["run"]["runId"]
    tools = {d["name"]: d["inputFacets"]["aigp_resource"] for d in research["inputs"]}
    assert tools["tool.search_filings"]["governed"] is True
    assert tools["model.gpt-4o-2024-08-06"]["governed"] is False
    denied = {d["name"]: d["inputFacets"]["aigp_resource"] for d in librarian["inputs"]}
    assert denied["tool.download_archive"]["enforcementResult"] == "denied"
    assert f"{tmp_path / 'report.html'}: verified" in result.stdout
    assert "<svg" in (tmp_path / "report.html").read_text(encoding="utf-8")


def _json_blocks(text: str) -> list[dict[str, Any]]:
    """The pretty-printed JSON documents in ``text`` (each starts with ``{`` on its own line)."""
    decoder = json.JSONDecoder()
    found = []
    for index, line in enumerate(lines := text.splitlines()):
        if line == "{":
            found.append(decoder.raw_decode("\n".join(lines[index:]))[0])
    return found


def test_zero_code_readme_block_runs_as_written_and_leaves_nothing_in_the_clone(tmp_path: Path) -> None:
    """The example's shell block, run from the repository root as its README says (the install line
    aside): three RunEvents, one per governed trace, in a file outside the clone."""
    import re

    root = EXAMPLES.parent
    readme = (EXAMPLES / "zero_code" / "README.md").read_text(encoding="utf-8")
    block = re.findall(r"```sh\n(.*?)```", readme, re.DOTALL)[0]
    script = "\n".join(line for line in block.splitlines() if not line.startswith("pip install"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENLINEAGE", "AIGP_"))}
    environ.update(HOME=str(tmp_path), TMPDIR=str(tmp_path),
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")]))
    before = sorted(os.listdir(root))
    result = subprocess.run(["bash", "-euc", script], cwd=root, env=environ, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(root)) == before
    governed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("governed")}
    events = _json_lines(result.stdout)
    assert len(governed) == len(events) == 3
    assert {e["run"]["facets"]["aigp_governance"]["traceId"] for e in events} == governed  # type: ignore[index]
    for event in events:
        validate_run_event(event)  # type: ignore[arg-type]


@pytest.mark.timeout(900)  # the first run makes the framework environments
@pytest.mark.parametrize(
    ("group", "script"),
    [("agents", "openai_agents_openinference.py"), ("agents", "langgraph_openinference.py")],
)
def test_a_framework_example_prints_a_run_event_per_agent_run_offline(
    framework_pythons: dict[str, Path], group: str, script: str
) -> None:
    """Run as a user runs it, in its framework's environment: it serves its own stand-in for the
    OpenAI API on loopback (no network, no key) and the bridge prints its RunEvents on the console."""
    from tests.framework_envs import clean_environment

    result = subprocess.run(
        [str(framework_pythons[group]), str(EXAMPLES / "frameworks" / script)],
        env=clean_environment(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    events = _json_lines(result.stdout + result.stderr)
    assert len(events) == 2
    for event in events:
        validate_run_event(event)  # type: ignore[arg-type]
        assert event["job"]["name"] == "support-bot.support_agent"  # type: ignore[index]
        inputs = {d["name"]: d["inputFacets"]["aigp_resource"] for d in event["inputs"]}  # type: ignore[attr-defined]
        assert inputs["tool.wire_refund"]["enforcementResult"] == "denied"
        assert inputs["model.gpt-4o-mini-2024-07-18"]["governed"] is False
