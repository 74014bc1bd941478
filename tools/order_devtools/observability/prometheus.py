"""A real Prometheus (Debian's `prometheus` package) on loopback, for tests and renders: a
config written to a work directory, the pipeline's rules loaded, 1 s scrapes of given targets."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from order_devtools import processes

BINARY = "prometheus"
DEBIAN_PACKAGE = "prometheus"


@dataclass(frozen=True)
class Target:
    job: str
    address: str
    """host:port of its `/metrics`."""
    labels: Mapping[str, str]


class QueryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Prometheus:
    url: str
    log_path: Path

    def _get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise QueryError(f"{path} {params}: {response.status_code} {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: `{"metric": {...}, "value": [t, "v"]}` per series."""
        data = self._get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, expr: str, *, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        data = self._get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step)
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups


def binary() -> str:
    found = shutil.which(BINARY)
    if found is None:
        raise FileNotFoundError(f"{BINARY} is missing: install Debian's `{DEBIAN_PACKAGE}` package")
    return found


def config(targets: Sequence[Target], rule_files: Sequence[Path]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {"targets": [t.address], "labels": dict(t.labels)}
                    for t in targets
                    if t.job == job
                ],
            }
            for job in sorted({t.job for t in targets})
        ],
    }


@contextlib.contextmanager
def running(
    workdir: Path, *, targets: Sequence[Target], rule_files: Sequence[Path]
) -> Iterator[Prometheus]:
    """Prometheus listening on 127.0.0.1 only, its data in `workdir`; stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config(targets, rule_files), sort_keys=False))
    port = processes.free_port()
    log_path = workdir / "prometheus.log"
    process = processes.spawn(
        [
            binary(),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={processes.LOOPBACK_HOST}:{port}",
            "--log.level=warn",
        ],
        log_path=log_path,
    )
    server = Prometheus(url=f"http://{processes.LOOPBACK_HOST}:{port}", log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {processes.log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready: {processes.log_tail(log_path)}")
            time.sleep(0.2)
        yield server
    finally:
        processes.stop(process, timeout=10)
