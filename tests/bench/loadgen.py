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
from collections.abc import Iterable
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


def write_targets(path: Path, url: str, token: str, bodies: Iterable[dict[str, Any]]) -> None:
    """Orders for the API, with the client's bearer token."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    write_posts(path, url, headers, bodies)


def write_posts(
    path: Path, url: str, headers: dict[str, str], bodies: Iterable[dict[str, Any]]
) -> None:
    """vegeta JSON targets: one POST per body, used round-robin."""
    header_lists = {name: [value] for name, value in headers.items()}
    with path.open("w") as out:
        for body in bodies:
            encoded = base64.b64encode(json.dumps(body).encode()).decode()
            target = {"method": "POST", "url": url, "header": header_lists, "body": encoded}
            out.write(json.dumps(target) + "\n")


@dataclass(frozen=True)
class AttackResult:
    rate: float
    """Offered requests per second (0: closed loop, as fast as answered)."""
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
    """Open loop: `rate` requests per second whatever the answers take."""
    return _run(
        vegeta,
        targets,
        [f"-rate={rate}/s", "-workers=32", "-max-workers=2000"],
        seconds=seconds,
        workdir=workdir,
        offered=rate,
    )


def saturate(
    vegeta: Path, targets: Path, *, workers: int, seconds: float, workdir: Path
) -> AttackResult:
    """Closed loop: `workers` connections each sending the next request as soon as the last
    is answered; the highest rate the server sustains from a client that costs almost nothing."""
    return _run(
        vegeta,
        targets,
        ["-rate=0", f"-workers={workers}", f"-max-workers={workers}"],
        seconds=seconds,
        workdir=workdir,
        offered=0,
    )


def _run(
    vegeta: Path,
    targets: Path,
    pacing: list[str],
    *,
    seconds: float,
    workdir: Path,
    offered: int,
) -> AttackResult:
    results = workdir / f"attack-{targets.stem}-{offered}.bin"
    subprocess.run(
        [
            str(vegeta),
            "attack",
            "-format=json",
            f"-targets={targets}",
            *pacing,
            f"-duration={seconds}s",
            "-timeout=10s",
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
        rate=float(offered),
        throughput=float(data["throughput"]),
        success=float(data["success"]),
        p50_ms=latencies["50th"] / 1e6,
        p99_ms=latencies["99th"] / 1e6,
        max_ms=latencies["max"] / 1e6,
        requests=int(data["requests"]),
        status_codes={str(k): int(v) for k, v in data["status_codes"].items()},
    )
