"""Open-loop load from vegeta (constant arrival rate, no coordinated omission).

vegeta is a Go program; it is built once from the Go module proxy into the cache outside the
repo, like the Kubernetes binaries, and reused.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"


def ensure_vegeta() -> Path:
    cache = Path(os.environ.get("ORDER_PIPELINE_CACHE", Path.home() / ".cache/order-pipeline"))
    binary = cache / f"vegeta-{VEGETA_VERSION}" / "vegeta"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise RuntimeError("the benchmark needs Go (to build vegeta) and none is on PATH")
    subprocess.run(
        ["go", "install", f"{VEGETA_MODULE}@{VEGETA_VERSION}"],
        env={**os.environ, "GOBIN": str(binary.parent), "CGO_ENABLED": "0"},
        check=True,
    )
    return binary


def write_targets(path: Path, url: str, token: str, bodies: list[dict[str, Any]]) -> None:
    """vegeta JSON targets: one POST per body, used round-robin."""
    headers = {"Authorization": [f"Bearer {token}"], "Content-Type": ["application/json"]}
    with path.open("w") as out:
        for body in bodies:
            encoded = base64.b64encode(json.dumps(body).encode()).decode()
            target = {"method": "POST", "url": url, "header": headers, "body": encoded}
            out.write(json.dumps(target) + "\n")


@dataclass(frozen=True)
class AttackResult:
    rate: float
    """Offered requests per second."""
    throughput: float
    """Successful requests per second."""
    success: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    status_codes: dict[str, int]


def attack(
    vegeta: Path, targets: Path, *, rate: int, seconds: float, workdir: Path
) -> AttackResult:
    results = workdir / f"attack-{rate}.bin"
    subprocess.run(
        [
            str(vegeta),
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-rate={rate}/s",
            f"-duration={seconds}s",
            "-timeout=10s",
            "-workers=32",
            "-max-workers=2000",
            "-keepalive=true",
            f"-output={results}",
        ],
        check=True,
    )
    report = subprocess.run(
        [str(vegeta), "report", "-type=json", str(results)],
        check=True,
        capture_output=True,
        text=True,
    )
    results.unlink()
    data = json.loads(report.stdout)
    latencies = data["latencies"]
    return AttackResult(
        rate=float(rate),
        throughput=float(data["throughput"]),
        success=float(data["success"]),
        p50_ms=latencies["50th"] / 1e6,
        p99_ms=latencies["99th"] / 1e6,
        max_ms=latencies["max"] / 1e6,
        requests=int(data["requests"]),
        status_codes={str(k): int(v) for k, v in data["status_codes"].items()},
    )
