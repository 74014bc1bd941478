"""Small helpers shared by the e2e tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(
    condition: Callable[[], bool], description: str, timeout: float = 60, interval: float = 0.2
) -> None:
    """Poll `condition` until it holds; fail the test with `description` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {description}")
        time.sleep(interval)
