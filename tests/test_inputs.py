"""Per-input truth (bridge contract, section 5) with the reference SDK, in every mode: spans only,
spans joined to the store's full events, and the builder API on the store's events alone."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aigp import AIGPInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from aigp_otel_bridge.openlineage import build_openlineage_run_event, build_resource_input_facets
from tests.conftest import CaptureTransport
from tests.schemas import validate_run_event
from tests.test_processor import facet, flushed, governed_bridge, inputs_by_key, new_instrumentor

POLICY = "Max position: $10M per instrument."
PROMPT = "You are a careful trading assistant."
COMBINED = "limits + risk controls, rendered together"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _session(aigp: AIGPInstrumentor, tracer: Any) -> None:
    """A used policy, the same policy later denied, a denied policy never used, an unversioned
    prompt and a multi-policy inject without a Merkle tree (one versioned policy, one not)."""
    with tracer.start_as_current_span("invoke"):
        aigp.inject_success("policy.trading-limits", 4, POLICY)
        aigp.inject_denied("policy.trading-limits", "position too large")
        aigp.inject_denied("policy.pii", "customer data is out of scope")
        aigp.prompt_used("prompt.trader-system", 0, PROMPT)
        aigp.multi_policy_inject(
            [{"name": "policy.limits-v2", "version": 2}, {"name": "policy.risk-controls"}], COMBINED
        )


def _check(inputs: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert set(inputs) == {
        ("policy", "policy.trading-limits"),
        ("policy", "policy.pii"),
        ("prompt", "prompt.trader-system"),
        ("policy", "policy.limits-v2"),
        ("policy", "policy.risk-controls"),
    }
    assert {key: i["enforcementResult"] for key, i in inputs.items()} == {
        ("policy", "policy.trading-limits"): "denied",  # used once, denied once: denied
        ("policy", "policy.pii"): "denied",
        ("prompt", "prompt.trader-system"): "allowed",
        ("policy", "policy.limits-v2"): "allowed",
        ("policy", "policy.risk-controls"): "allowed",
    }
    assert all(i["governed"] is True for i in inputs.values())
    assert {key: i.get("resourceVersion") for key, i in inputs.items()} == {
        ("policy", "policy.trading-limits"): 4,
        ("policy", "policy.pii"): None,  # a denial carries no version: the SDK writes 0
        ("prompt", "prompt.trader-system"): None,  # prompt_used(..., 0, ...): no version
        ("policy", "policy.limits-v2"): 2,
        ("policy", "policy.risk-controls"): None,
    }
    assert inputs[("policy", "policy.trading-limits")]["contentHash"] == sha256_hex(POLICY)
    assert inputs[("prompt", "prompt.trader-system")]["contentHash"] == sha256_hex(PROMPT)
    combined = sha256_hex(COMBINED)
    for resource in inputs.values():  # the combined hash is no single policy's own content
        assert combined not in (resource.get("contentHash"), *resource.get("contentHashes", ()))


@pytest.mark.parametrize("joined", [False, True], ids=["spans", "spans+store"])
def test_denied_and_unversioned_resources_in_both_modes(
    make_bridge: Any, transport: CaptureTransport, joined: bool
) -> None:
    aigp = new_instrumentor()
    _, processor, tracer = governed_bridge(make_bridge, aigp, joined=joined)
    _session(aigp, tracer)
    (event,) = flushed(processor, transport)
    _check(inputs_by_key(event))
    assert facet(event)["ungovernedResourceCount"] == 0
    assert facet(event)["deniedEventCount"] == 2


def test_the_builders_give_the_same_inputs_from_the_store_alone() -> None:
    store: list[dict[str, Any]] = []
    aigp = AIGPInstrumentor(agent_id="agent.trading-bot-v2", event_callback=store.append)
    _session(aigp, TracerProvider().get_tracer("test"))
    event = build_openlineage_run_event(store, job_namespace="finco", job_name="trading-bot.invoke")
    validate_run_event(event)
    _check(inputs_by_key(event))
    assert event["run"]["facets"]["aigp_governance"]["ungovernedResourceCount"] == 0
    assert [f["enforcementResult"] for f in build_resource_input_facets(store[1])] == ["denied"]


def test_span_mode_and_store_mode_agree(make_bridge: Any, transport: CaptureTransport) -> None:
    """The same session, once from spans alone and once joined to the store: identical inputs."""
    seen = []
    for joined in (False, True):
        aigp = new_instrumentor()
        _, processor, tracer = governed_bridge(make_bridge, aigp, joined=joined)
        _session(aigp, tracer)
        assert processor.force_flush(10_000)
        seen.append(sorted(
            (d["name"], {k: v for k, v in d["inputFacets"]["aigp_resource"].items() if k[0] != "_"})
            for d in transport.events[-1]["inputs"]
        ))
    assert seen[0] == seen[1]
