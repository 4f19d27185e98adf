"""Virtual environments for the agent frameworks the suite runs for real (tests/test_frameworks.py).

The frameworks pin clashing versions of ``openai`` (openai-agents wants 3.x, llama-index-llms-openai
2.x), so each group gets an environment of its own, made once from its requirements file (``<name>.txt``
here) and the project (installed editable, with the ``test`` extra's ``aigp``) and kept under
``.venv-frameworks/`` until its requirements, the project's dependencies or the interpreter change.
The groups are installed concurrently (pip waits mostly on downloads); a lock keeps two test
processes from building the same environment at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).resolve().parent
ROOT = REPO / ".venv-frameworks"
GROUPS = ("agents", "llamaindex")


def _stamp(name: str) -> str:
    """What an environment was made from: the interpreter, its requirements, the project's."""
    digest = hashlib.sha256()
    digest.update(sys.version.encode())
    digest.update((REQUIREMENTS / f"{name}.txt").read_bytes())
    digest.update((REPO / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def _python(home: Path) -> Path:
    return home / "bin" / "python"


def framework_pythons() -> dict[str, Path]:
    """The interpreter of each group's environment, made or brought up to date first."""
    ROOT.mkdir(exist_ok=True)
    version = f"py{sys.version_info.major}.{sys.version_info.minor}"
    homes = {name: ROOT / f"{version}-{name}" for name in GROUPS}
    with open(ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stale = [name for name, home in homes.items() if _read_stamp(home) != _stamp(name)]
        installs = {}
        for name in stale:
            venv.EnvBuilder(clear=True, with_pip=True).create(homes[name])
            installs[name] = subprocess.Popen(
                [
                    str(_python(homes[name])),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    str(REQUIREMENTS / f"{name}.txt"),
                    "-e",
                    f"{REPO}[demo]",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        for name, install in installs.items():
            output, _ = install.communicate()
            if install.returncode != 0:
                raise RuntimeError(f"could not make the {name} environment:\n{output[-4000:]}")
            (homes[name] / "stamp").write_text(_stamp(name))
    return {name: _python(home) for name, home in homes.items()}


def _read_stamp(home: Path) -> str | None:
    try:
        return (home / "stamp").read_text()
    except OSError:
        return None


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment a framework script runs in: none of the caller's OpenTelemetry, OpenLineage,
    OpenAI or logfire settings (no key, nothing sent anywhere), the project first on the path."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "OPENLINEAGE", "OPENAI_", "LOGFIRE_", "AIGP_BRIDGE_"))
    }
    return kept | {"PYTHONPATH": str(REPO)} | extra
