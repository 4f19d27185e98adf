"""What an installed distribution promises: typed package, one version, a helpful command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import distribution
from importlib.resources import files
from pathlib import Path

from aigp_otel_bridge import __version__, cli

SCRIPT = Path(sys.executable).parent / "aigp-otel-bridge"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it."""
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


def test_distribution_is_typed_and_versioned_from_one_place() -> None:
    dist = distribution("aigp-otel-bridge")
    assert dist.version == __version__
    classifiers = dist.metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("License :: ") for c in classifiers)
    assert files("aigp_otel_bridge").joinpath("py.typed").is_file()


def test_traces_exporter_entry_point_is_in_the_distribution() -> None:
    entries = {(e.group, e.name): e.value for e in distribution("aigp-otel-bridge").entry_points}
    assert entries[("opentelemetry_traces_exporter", "aigp_openlineage")] == (
        "aigp_otel_bridge.frontdoors.exporter:AIGPOpenLineageSpanExporter"
    )


def test_version_flag_prints_the_package_version() -> None:
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["aigp-otel-bridge", __version__]


def test_help_explains_every_command() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    subcommands = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    described = {action.dest: action.help for action in subcommands._choices_actions}
    assert set(described) == set(subcommands.choices), "every command is listed with a description"
    assert "demo" in described
    text = " ".join(result.stdout.split())
    for name, description in described.items():
        assert description, f"command {name!r} has no help text"
        assert f"{name} {' '.join(description.split())}" in text, f"--help does not explain {name!r}"
