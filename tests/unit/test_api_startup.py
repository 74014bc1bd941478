"""`python -m order_api` refuses to start, with a message naming the variable, on a weak key,
a key missing for the chosen algorithm, or no PUBLIC_BASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from order_devtools import processes

VALID = {
    "SIGNING_SECRET": "s" * 32,
    "JWT_SECRET": "j" * 32,
    "PUBLIC_BASE_URL": "https://orders.example",
}
_NOWHERE = "http://127.0.0.1:9"
"""AWS endpoints for an API that (wrongly) starts: loopback, nothing listens, nothing leaves."""
_NOT_STARTED_WITHIN = 20
"""Refusing takes about a second; a process still running by then is serving."""


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str] | None:
    """Run the API; None when it is still running (serving) after _NOT_STARTED_WITHIN s."""
    inherited = {k: v for k, v in os.environ.items() if k not in VALID and k != "JWT_ALGORITHM"}
    port = str(processes.free_port())
    try:
        return subprocess.run(
            [sys.executable, "-m", "order_api"],
            env={
                **inherited,
                "API_PORT": port,
                "SQS_ENDPOINT_URL": _NOWHERE,
                "DYNAMODB_ENDPOINT_URL": _NOWHERE,
                **env,
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=_NOT_STARTED_WITHIN,
        )
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SIGNING_SECRET": "change-me-signing-secret"}, "SIGNING_SECRET: must be at least 32"),
        ({"JWT_SECRET": "change-me-jwt-secret"}, "JWT_SECRET: must be at least 32 bytes"),
        ({"JWT_SECRET": None}, "JWT_SECRET is required with JWT_ALGORITHM=HS256"),
        ({"JWT_ALGORITHM": "RS256"}, "JWT_PRIVATE_KEY and JWT_PUBLIC_KEY are required"),
        ({"PUBLIC_BASE_URL": None}, "PUBLIC_BASE_URL is required"),
    ],
    ids=["short-signing-secret", "short-jwt-secret", "no-jwt-secret", "rs256-no-keys", "no-base"],
)
def test_the_api_refuses_to_start_with_a_clear_message(
    change: dict[str, str | None], message: str
) -> None:
    env = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    finished = _start(env)
    assert finished is not None, f"the API started serving with {change}"
    assert finished.returncode != 0
    assert "refusing to start, the configuration is invalid" in finished.stderr
    assert message in finished.stderr
    assert "Traceback" not in finished.stderr
