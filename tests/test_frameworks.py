"""Real agent frameworks with their real instrumentations, governed with the reference AIGP SDK,
through the bridge (contract section 9): each example of ``examples/frameworks`` runs in the
environment of its framework group (tests/framework_envs), offline, against an OpenAI-compatible
stand-in served by the test on loopback. pydantic-ai, whose instrumentation is its own: see
tests/test_pydantic_ai.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.framework_envs import REPO, clean_environment
from tests.schemas import validate_run_event

FRAMEWORKS = REPO / "examples" / "frameworks"
sys.path.insert(0, str(FRAMEWORKS))
from offline_model import MODEL_THAT_RAN, SCRIPT, offline_openai  # noqa: E402

AGENT_NAME = "support_agent"

pytestmark = pytest.mark.timeout(900)  # the first run makes the environments


@pytest.fixture(scope="module")
def model_url() -> Any:
    with offline_openai(SCRIPT) as url:
        yield url


def run_example(python: Path, script: str, model_url: str, lineage: Path) -> list[dict[str, Any]]:
    """Run an example as a user would, its RunEvents written to a file by the OpenLineage client's
    own file transport (configured through the environment, as a user configures it)."""
    environment = clean_environment(
        OFFLINE_MODEL_URL=model_url,
        OPENLINEAGE__TRANSPORT__TYPE="file",
        OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=str(lineage),
        OPENLINEAGE__TRANSPORT__APPEND="true",
    )
    finished = subprocess.run(
        [str(python), str(FRAMEWORKS / script)], env=environment, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert finished.stdout.count("Order 42 has shipped") == 2, finished.stdout  # both runs answered
    return [json.loads(line) for line in lineage.read_text().splitlines() if line.strip()]


def _inputs(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {dataset["name"]: dataset["inputFacets"]["aigp_resource"] for dataset in event["inputs"]}


SET_UPS = [
    pytest.param(
        "agents",
        "openai_agents_openinference.py",
        f"support-bot.{AGENT_NAME}",
        MODEL_THAT_RAN,
        id="openai-agents+OpenInference",
    ),
    pytest.param(
        "agents",
        "openai_agents_openllmetry.py",
        f"support-bot.{AGENT_NAME}",
        MODEL_THAT_RAN,
        id="openai-agents+OpenLLMetry",
    ),
    pytest.param(
        "agents",
        "openai_agents_logfire.py",
        f"support-bot.{AGENT_NAME}",
        MODEL_THAT_RAN,
        id="openai-agents+logfire",
    ),
    pytest.param(
        "agents",
        "langgraph_openinference.py",
        f"support-bot.{AGENT_NAME}",
        MODEL_THAT_RAN,
        id="LangGraph+OpenInference",
    ),
    pytest.param(
        "agents",
        "langgraph_openllmetry.py",
        f"support-bot.{AGENT_NAME}",
        MODEL_THAT_RAN,
        id="LangGraph+OpenLLMetry",
    ),
    # LlamaIndex's spans name no agent (and only the requested model): the root span names the job
    pytest.param(
        "llamaindex",
        "llamaindex_openinference.py",
        "support-bot.FunctionAgent.run",
        "gpt-4o-mini",
        id="LlamaIndex+OpenInference",
    ),
]


@pytest.mark.parametrize(("group", "script", "job", "model"), SET_UPS)
def test_a_governed_agent_run_names_its_agent_tools_and_model(
    framework_pythons: dict[str, Path],
    model_url: str,
    tmp_path: Path,
    group: str,
    script: str,
    job: str,
    model: str,
) -> None:
    events = run_example(framework_pythons[group], script, model_url, tmp_path / "lineage.jsonl")
    for event in events:
        validate_run_event(event)
    # one run per invocation, each complete
    assert [event["eventType"] for event in events] == ["COMPLETE", "COMPLETE"]
    assert len({event["run"]["runId"] for event in events}) == 2
    for event in events:
        assert event["job"]["name"] == job
        inputs = _inputs(event)
        expected = ["policy.support", "tool.lookup_order", "tool.wire_refund", f"model.{model}"]
        assert sorted(inputs) == sorted(expected)
        invoked, denied = inputs["tool.lookup_order"], inputs["tool.wire_refund"]
        assert (invoked["governed"], invoked["enforcementResult"]) == (True, "allowed")
        assert (denied["governed"], denied["enforcementResult"]) == (True, "denied")
        assert "contentHash" in invoked  # the SDK's tool event, named by the tool span it sat on
        model_input = inputs[f"model.{model}"]
        assert (model_input["governed"], model_input["provider"], model_input["resourceType"]) == (
            False,
            "openai",
            "model",
        )
        governance = event["run"]["facets"]["aigp_governance"]
        observed_only = [name for name, facet in inputs.items() if not facet["governed"]]
        assert governance["ungovernedResourceCount"] == len(observed_only) == 1
        # three model requests (a policy inject each), one tool invoked, one denied
        assert (governance["eventCount"], governance["deniedEventCount"]) == (5, 1)
