"""What an installed distribution promises: typed package, one version, a helpful command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import distribution
from importlib.resources import files
from pathlib import Path

from packaging.version import Version

from aigp_otel_bridge import __version__
from aigp_otel_bridge.tools import cli

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


def test_wheel_and_sdist_carry_the_license(tmp_path: Path) -> None:
    """Apache-2.0 asks that every redistribution carries the license text."""
    root = Path(__file__).resolve().parents[1]
    build = (
        "import sys, hatchling.build as b;"
        "print(b.build_wheel(sys.argv[1]));"
        "print(b.build_sdist(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path)],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    wheel_name, sdist_name = result.stdout.split()
    license_text = (root / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    with zipfile.ZipFile(tmp_path / wheel_name) as wheel:
        licenses = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert len(licenses) == 1
        assert wheel.read(licenses[0]).decode("utf-8") == license_text
        metadata = wheel.read(licenses[0].replace("licenses/LICENSE", "METADATA")).decode("utf-8")
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [line for line in requires if "extra ==" not in line]
    assert runtime and not any("rich" in line for line in runtime), "rich belongs to the tools' extra"
    with tarfile.open(tmp_path / sdist_name) as sdist:
        top = sdist_name.removesuffix(".tar.gz")
        member = sdist.extractfile(f"{top}/LICENSE")
        assert member is not None and member.read().decode("utf-8") == license_text
        assert f"{top}/tests/data/NOTICE" in sdist.getnames()



def test_the_floors_constraints_are_the_declared_lower_bounds() -> None:
    """constraints/floors.txt pins each dependency with a lower bound (and those of the cli and demo
    extras) at exactly that bound, so that the floors run of .ci/run tests what pyproject.toml claims."""
    from packaging.requirements import Requirement

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # hatchling, in the test extra, brings tomli on 3.10
        import tomli as tomllib
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    declared: dict[str, str] = {}
    for text in [*project["dependencies"], *extras["cli"], *extras["demo"]]:
        requirement = Requirement(text)
        floor = next((spec.version for spec in requirement.specifier if spec.operator == ">="), None)
        if floor is not None:
            declared[requirement.name] = floor
    pinned: dict[str, str] = {}
    for line in (root / "constraints" / "floors.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[name.strip()] = version.strip()
    assert declared, "no lower bound found in pyproject.toml"
    for name, floor in declared.items():
        assert name in pinned, f"{name} >= {floor} is not pinned in constraints/floors.txt"
        assert Version(pinned[name]) == Version(floor), f"{name}: floor {floor}, pinned {pinned[name]}"
