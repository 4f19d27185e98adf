"""Configuration: arguments win over ``AIGP_BRIDGE_*`` variables, which win over defaults (section 6)."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

import pytest

from aigp_otel_bridge.config import SETTINGS, BridgeConfig, Kind, resolve
from aigp_otel_bridge.stages.extract import Limits, RootInfo


def test_defaults_match_the_contract() -> None:
    config = resolve({}, environ={})
    assert config == BridgeConfig()
    assert config.job_namespace is None
    assert config.job_name is None
    assert config.resource_namespace is None
    assert config.trace_timeout_s == 300.0
    assert config.max_pending_traces == 10_000
    assert config.max_records_per_trace == 10_000
    assert config.emit_ungoverned is False
    assert config.retry_max_backoff_s == 30.0
    assert config.limits == Limits()


def test_none_arguments_mean_not_given() -> None:
    config = resolve(
        {"trace_timeout_s": None, "job_namespace": None}, environ={"AIGP_BRIDGE_TRACE_TIMEOUT_S": "5"}
    )
    assert config.trace_timeout_s == 5.0
    assert config.job_namespace is None


def test_environment_wins_over_defaults() -> None:
    environ = {
        "AIGP_BRIDGE_JOB_NAMESPACE": "env.ns",
        "AIGP_BRIDGE_JOB_NAME": "env.job",
        "AIGP_BRIDGE_RESOURCE_NAMESPACE": "env.resources",
        "AIGP_BRIDGE_TRACE_TIMEOUT_S": "12.5",
        "AIGP_BRIDGE_MAX_PENDING_TRACES": "7",
        "AIGP_BRIDGE_MAX_RECORDS_PER_TRACE": "9",
        "AIGP_BRIDGE_EMIT_UNGOVERNED": "true",
        "AIGP_BRIDGE_RETRY_MAX_BACKOFF_S": "2",
    }
    config = resolve({}, environ=environ)
    assert config.job_namespace == "env.ns"
    assert config.job_name == "env.job"
    assert config.resource_namespace == "env.resources"
    assert config.trace_timeout_s == 12.5
    assert config.max_pending_traces == 7
    assert config.max_records_per_trace == 9
    assert config.emit_ungoverned is True
    assert config.retry_max_backoff_s == 2.0


def test_arguments_win_over_environment() -> None:
    environ = {
        "AIGP_BRIDGE_JOB_NAMESPACE": "env.ns",
        "AIGP_BRIDGE_TRACE_TIMEOUT_S": "12.5",
        "AIGP_BRIDGE_MAX_PENDING_TRACES": "7",
        "AIGP_BRIDGE_EMIT_UNGOVERNED": "true",
    }
    arguments = {
        "job_namespace": "arg.ns",
        "trace_timeout_s": 60,
        "max_pending_traces": 3,
        "emit_ungoverned": False,
    }
    config = resolve(arguments, environ=environ)
    assert config.job_namespace == "arg.ns"
    assert config.trace_timeout_s == 60.0
    assert isinstance(config.trace_timeout_s, float)
    assert config.max_pending_traces == 3
    assert config.emit_ungoverned is False


def test_environment_is_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGP_BRIDGE_MAX_RECORDS_PER_TRACE", "42")
    assert resolve({}).max_records_per_trace == 42


def test_empty_environment_values_are_ignored() -> None:
    config = resolve({}, environ={"AIGP_BRIDGE_JOB_NAMESPACE": "", "AIGP_BRIDGE_TRACE_TIMEOUT_S": ""})
    assert config.job_namespace is None
    assert config.trace_timeout_s == 300.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_booleans_are_parsed(raw: str, expected: bool) -> None:
    assert resolve({}, environ={"AIGP_BRIDGE_EMIT_UNGOVERNED": raw}).emit_ungoverned is expected
    assert resolve({"emit_ungoverned": raw}, environ={}).emit_ungoverned is expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("AIGP_BRIDGE_TRACE_TIMEOUT_S", "soon"),
        ("AIGP_BRIDGE_TRACE_TIMEOUT_S", "-1"),
        ("AIGP_BRIDGE_TRACE_TIMEOUT_S", "0"),
        ("AIGP_BRIDGE_TRACE_TIMEOUT_S", "nan"),
        ("AIGP_BRIDGE_MAX_PENDING_TRACES", "many"),
        ("AIGP_BRIDGE_MAX_PENDING_TRACES", "0"),
        ("AIGP_BRIDGE_MAX_PENDING_TRACES", "2.5"),
        ("AIGP_BRIDGE_MAX_RECORDS_PER_TRACE", "-5"),
        ("AIGP_BRIDGE_EMIT_UNGOVERNED", "maybe"),
        ("AIGP_BRIDGE_RETRY_MAX_BACKOFF_S", "forever"),
    ],
)
def test_bad_environment_values_are_logged_and_ignored(
    name: str, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge.config"):
        config = resolve({}, environ={name: raw})
    assert config == BridgeConfig()
    assert any(name in record.getMessage() for record in caplog.records)


def test_one_bad_environment_value_does_not_spoil_the_others(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"AIGP_BRIDGE_MAX_PENDING_TRACES": "lots", "AIGP_BRIDGE_TRACE_TIMEOUT_S": "10"}
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge.config"):
        config = resolve({}, environ=environ)
    assert config.max_pending_traces == 10_000
    assert config.trace_timeout_s == 10.0


def test_unrelated_environment_variables_are_ignored() -> None:
    config = resolve({}, environ={"AIGP_BRIDGE_UNKNOWN_THING": "x", "OTHER": "y"})
    assert config == BridgeConfig()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("trace_timeout_s", 0),
        ("trace_timeout_s", -3.0),
        ("trace_timeout_s", "soon"),
        ("trace_timeout_s", True),
        ("max_pending_traces", 0),
        ("max_pending_traces", -1),
        ("max_pending_traces", 2.5),
        ("max_pending_traces", True),
        ("max_records_per_trace", "lots"),
        ("emit_ungoverned", "maybe"),
        ("emit_ungoverned", 2),
        ("job_namespace", ""),
        ("job_namespace", 5),
        ("job_name", 3),
        ("resource_namespace", ""),
        ("retry_max_backoff_s", 0),
    ],
)
def test_bad_arguments_raise_value_error(name: str, value: Any) -> None:
    with pytest.raises(ValueError):
        resolve({name: value}, environ={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("trace_timeout_s", 0),
        ("trace_timeout_s", "soon"),
        ("max_records_per_trace", "lots"),
        ("max_pending_traces", -1),
        ("emit_ungoverned", "maybe"),
        ("job_namespace", ""),
    ],
)
def test_bad_argument_error_names_the_setting(name: str, value: Any) -> None:
    # The programmer sees this at construction: it must say which argument is wrong.
    with pytest.raises(ValueError, match=name):
        resolve({name: value}, environ={})


def test_bad_argument_raises_even_with_a_good_environment_value() -> None:
    with pytest.raises(ValueError):
        resolve({"max_pending_traces": 0}, environ={"AIGP_BRIDGE_MAX_PENDING_TRACES": "5"})


def test_unknown_settings_raise_type_error() -> None:
    with pytest.raises(TypeError, match="trace_timeout"):
        resolve({"trace_timeout": 5}, environ={})


def test_job_name_may_be_a_callable() -> None:
    def name(root: RootInfo) -> str:
        return root.name

    assert resolve({"job_name": name}, environ={}).job_name is name


def test_numeric_strings_as_arguments_are_converted() -> None:
    config = resolve({"max_pending_traces": "12", "trace_timeout_s": "1.5"}, environ={})
    assert (config.max_pending_traces, config.trace_timeout_s) == (12, 1.5)


def test_limits_follow_the_settings() -> None:
    config = resolve(
        {"max_string_length": 64, "max_array_length": 10, "max_inputs_per_run": 5},
        environ={},
    )
    assert config.limits == Limits(max_string_length=64, max_array_length=10, max_inputs_per_run=5)


def test_openlineage_namespace_ranks_below_the_bridges_own_variable_and_argument() -> None:
    environ = {"OPENLINEAGE_NAMESPACE": "from-openlineage"}
    assert resolve({}, environ).job_namespace == "from-openlineage"
    environ["AIGP_BRIDGE_JOB_NAMESPACE"] = "from-bridge"
    assert resolve({}, environ).job_namespace == "from-bridge"
    assert resolve({"job_namespace": "explicit"}, environ).job_namespace == "explicit"
    assert resolve({}, {}).job_namespace is None  # then service.namespace, else "default", per run


def test_a_bad_environment_value_is_named_with_the_default_used(caplog: pytest.LogCaptureFixture) -> None:
    huge = "x" * 10_000
    environ = {"AIGP_BRIDGE_TRACE_TIMEOUT_S": huge, "AIGP_BRIDGE_MAX_QUEUE_SIZE": "many"}
    with caplog.at_level(logging.WARNING, logger="aigp_otel_bridge.config"):
        resolve({}, environ=environ)
    messages = {record.getMessage() for record in caplog.records}
    timeout = next(m for m in messages if "AIGP_BRIDGE_TRACE_TIMEOUT_S" in m)
    assert "'xxxxxxxx" in timeout and len(timeout) < 300  # the value, cut short
    assert timeout.endswith("using the default, 300.0")
    queue = next(m for m in messages if "AIGP_BRIDGE_MAX_QUEUE_SIZE" in m)
    assert "'many'" in queue and queue.endswith("using the default, 2048")


def test_every_setting_is_declared_once_with_its_kind() -> None:
    assert set(SETTINGS) == {f.name for f in fields(BridgeConfig)}
    assert all(isinstance(kind, Kind) for kind in SETTINGS.values())
