"""The runnable examples in ``examples/``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.schemas import validate_run_event

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
