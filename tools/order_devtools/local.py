"""Run the API and the processor as real processes against local engines.

Shared by `make run`, the integration tests and the benchmark, so all three start the
services exactly the same way (the way a container would: `python -m ...` + environment).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from order_api import security
from order_common import settings as common_settings
from order_devtools import processes

free_port = processes.free_port


@dataclass(frozen=True)
class LocalPipeline:
    """Where one local pipeline's queue and tables are, and the secrets its API uses."""

    sqs_endpoint: str
    dynamodb_endpoint: str
    queue_name: str = "orders"
    table_prefix: str = ""
    signing_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    clients: Mapping[str, str] = field(default_factory=lambda: {"demo": "demo-secret"})
    """Plain client secrets (local only); the API receives them hashed."""

    def aws_settings(self) -> common_settings.AwsSettings:
        """The same queue and tables, for code in this process (provisioning, checks)."""
        return common_settings.AwsSettings(
            sqs_endpoint_url=self.sqs_endpoint,
            dynamodb_endpoint_url=self.dynamodb_endpoint,
            queue_name=self.queue_name,
            table_prefix=self.table_prefix,
        )

    def common_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
            "SQS_ENDPOINT_URL": self.sqs_endpoint,
            "DYNAMODB_ENDPOINT_URL": self.dynamodb_endpoint,
            "QUEUE_NAME": self.queue_name,
            "TABLE_PREFIX": self.table_prefix,
        }

    def api_env(self, port: int, **overrides: str) -> dict[str, str]:
        hashed = {c: security.hash_client_secret(s) for c, s in self.clients.items()}
        return {
            **self.common_env(),
            "API_PORT": str(port),
            # The API listens on loopback (API_HOST's default): its status URLs point there.
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "SIGNING_SECRET": self.signing_secret,
            "JWT_SECRET": self.jwt_secret,
            "API_CLIENTS": json.dumps(hashed),
            **overrides,
        }

    def processor_env(self, metrics_port: int, **overrides: str) -> dict[str, str]:
        return {
            **self.common_env(),
            "METRICS_PORT": str(metrics_port),
            "PAYMENT_GATEWAY": "simulator",  # local runs charge no card
            **overrides,
        }


@dataclass
class ServiceProcess:
    """One `python -m <module>` service process with its own log file."""

    module: str
    env: Mapping[str, str]
    log_path: Path
    health_url: str
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> None:
        self.process = processes.spawn(
            [sys.executable, "-m", self.module],
            log_path=self.log_path,
            env={**os.environ, **self.env},
        )
        self.wait_healthy(timeout=timeout)

    def wait_healthy(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=1):  # noqa: S310 - loopback
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise TimeoutError(f"{self.module} not healthy after {timeout} s: {self.log_tail()}")

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); return the exit code."""
        return processes.stop(self.process, timeout=timeout) if self.process else None

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process is not None:
            processes.kill(self.process)

    def log_tail(self, lines: int = 30) -> str:
        return processes.log_tail(self.log_path, lines)


def api_process(pipeline: LocalPipeline, port: int, log_dir: Path, **env: str) -> ServiceProcess:
    return ServiceProcess(
        module="order_api",
        env=pipeline.api_env(port, **env),
        log_path=log_dir / f"api-{port}.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
    )


def processor_process(
    pipeline: LocalPipeline, metrics_port: int, log_dir: Path, **env: str
) -> ServiceProcess:
    return ServiceProcess(
        module="order_processor",
        env=pipeline.processor_env(metrics_port, **env),
        log_path=log_dir / f"processor-{metrics_port}.log",
        health_url=f"http://127.0.0.1:{metrics_port}/healthz",
    )
