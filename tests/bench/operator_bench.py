"""Operator benchmark: time-to-Ready of a new OrderPipeline and reconcile throughput.

    .venv/bin/python -m tests.bench.operator_bench [--samples 3] [--pipelines 20] [--seconds 60]

Starts its own control plane (order_devtools.cluster) and in-memory engines, runs the operator
as its own ServiceAccount (as the e2e tests do), then measures
1. time from `create` to `Ready=True` (observedGeneration current) for single pipelines, one
   after another;
2. a burst: `--pipelines` created at once, time until all are Ready (pipelines per minute);
3. steady state: reconcile passes per minute with all of them polling every second, read from
   the operator's own `orderpipeline_reconciles_total`.
Not a test: it prints numbers for docs/operator.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client, config

from order_devtools import cluster as local_cluster
from order_devtools import engines
from tests.e2e.operator_harness import GROUP, PLURAL, VERSION, operator_running, pipeline_manifest


def _ready(custom: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    body: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"]["generation"]:
        return False
    return any(
        entry["type"] == "Ready" and entry["status"] == "True"
        for entry in status.get("conditions") or []
    )


def _create(
    custom: client.CustomObjectsApi, namespace: str, name: str, running: engines.Engines
) -> None:
    manifest = pipeline_manifest(name, running, suffix=uuid.uuid4().hex[:8])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)


def _wait_all_ready(
    custom: client.CustomObjectsApi, namespace: str, names: list[str], timeout: float = 600
) -> None:
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        pending = {name for name in pending if not _ready(custom, namespace, name)}
        if time.monotonic() > deadline:
            raise SystemExit(f"not Ready after {timeout:.0f} s: {sorted(pending)}")
        time.sleep(0.2)


def _reconciles(metrics_text: str) -> float:
    return sum(
        float(match.group(1))
        for match in re.finditer(
            r"^orderpipeline_reconciles_total\{[^}]*\} (\S+)$", metrics_text, re.M
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--pipelines", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    engines.ensure_installed()
    toolchain = local_cluster.ensure_toolchain()
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as scratch:
        root = Path(scratch)
        kube_cluster = local_cluster.start_cluster(root / "cluster", toolchain=toolchain)
        try:
            api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
            custom = client.CustomObjectsApi(api)
            core = client.CoreV1Api(api)
            with (
                engines.running_engines(root / "engines", persistent=False) as running,
                operator_running(kube_cluster, api, root) as operator,
            ):
                namespace = f"bench-{uuid.uuid4().hex[:6]}"
                core.create_namespace(
                    client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
                )
                samples = []
                for index in range(args.samples):
                    started = time.monotonic()
                    _create(custom, namespace, f"single-{index}", running)
                    _wait_all_ready(custom, namespace, [f"single-{index}"])
                    samples.append(time.monotonic() - started)
                print(
                    "time to Ready, one new pipeline: "
                    + ", ".join(f"{sample:.1f}" for sample in samples)
                    + f" s (median {statistics.median(samples):.1f} s)"
                )
                names = [f"burst-{index}" for index in range(args.pipelines)]
                started = time.monotonic()
                for name in names:
                    _create(custom, namespace, name, running)
                _wait_all_ready(custom, namespace, names)
                burst = time.monotonic() - started
                print(
                    f"burst: {len(names)} new pipelines all Ready in {burst:.1f} s "
                    f"({len(names) / burst * 60:.0f} pipelines/min to Ready)"
                )
                total = len(names) + args.samples
                before = _reconciles(operator.metrics())
                time.sleep(args.seconds)
                passes = _reconciles(operator.metrics()) - before
                print(
                    f"steady state: {total} pipelines polling every 1 s: "
                    f"{passes / args.seconds * 60:.0f} reconcile passes/min "
                    f"(each: queues, tables, 7 children applied, depth read, status)"
                )
        finally:
            kube_cluster.stop(remove_state=True)


if __name__ == "__main__":
    main()
