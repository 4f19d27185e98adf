"""Waiting for another thread or process: on a condition, with a deadline, never for a guessed time.

A test that needs "nothing else happened" waits for the point at which the code says it is done
(``force_flush`` returned, a gateway stopped, a counter reached its value) and asserts then.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], object],
    what: str | Callable[[], str],
    timeout_s: float = 30.0,
    *,
    every_s: float = 0.02,
) -> None:
    """Return as soon as ``condition()`` is true; fail with ``what`` (a text, or a function that
    says what was seen) when it is still false after ``timeout_s``. ``condition`` is asked again
    every ``every_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            description = what() if callable(what) else what
            raise AssertionError(f"not within {timeout_s} s: {description}")
        time.sleep(every_s)
