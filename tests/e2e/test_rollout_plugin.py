"""The rollout resource and its kubectl plugin against a real kube-apiserver (no operator): the
CRD takes and defaults `spec.rollout`, keeps `status.rollout` as written through the status
subresource and prints its columns; `kubectl orderpipeline` (found by kubectl on PATH) prints
that status, follows it with --watch and writes the command annotation the operator parses."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from order_devtools import cluster as local_cluster
from order_operator.rollout import command, judge
from order_operator.rollout import status as rollout_status
from order_operator.v1alpha1 import spec as v1alpha1

from .k8s_helpers import wait_established

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "operator/order_operator/crd/orderpipelines.yaml"
PLUGIN_DIR = REPO / "operator/bin"
EXAMPLE = REPO / "k8s/examples/orderpipeline.yaml"
GROUP, VERSION, PLURAL = v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def crd_installed(kube_cluster: local_cluster.ClusterAccess) -> None:
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_established(kube_cluster, f"{PLURAL}.{GROUP}")


@pytest.fixture
def custom(k8s_api: client.ApiClient, crd_installed: None) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_api)


def manifest(name: str, **rollout: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": v1alpha1.KIND,
        "metadata": {"name": name},
        "spec": {
            "queue": {"name": f"{name}-orders"},
            "tables": {"prefix": f"{name}-"},
            "api": {"image": "order-api:1"},
            "processor": {"image": "order-processor:1"},
            "rollout": {"steps": [{"weight": 10}, {"pause": {}}, {"weight": 50}], **rollout},
        },
    }


def rolling_status() -> dict[str, Any]:
    """What the rollout machine writes: the processor paused at step 2, the API rolled back."""
    analysis = rollout_status.Analysis(
        at=T0,
        result=judge.Result(
            verdict="Pass",
            measures=(
                judge.Measure(
                    "orders-failed",
                    "errorRatio",
                    "q",
                    0.001,
                    "Pass",
                    "canary 1/1000, stable 9/9000",
                ),
            ),
        ),
    )
    processor = rollout_status.RolloutStatus(
        phase="Paused",
        stable_revision="5d8f7c",
        canary_revision="7a9b1e",
        current_step=1,
        target_weight=10,
        planned_share=0.1,
        observed_share=0.097,
        step_started_at=T0,
        last_analysis=analysis,
        message="step 2/3: paused until promoted",
        conditions=({"type": "RolloutProgressing", "status": "True", "reason": "Paused"},),
    )
    api = rollout_status.RolloutStatus(
        phase="Degraded",
        stable_revision="c0ffee",
        failed_revision="bad1",
        abort_reason="GateFailed: http-5xx 0.2 > 0.05",
        message="revision bad1 rolled back: http-5xx 0.2 > 0.05",
    )
    return {
        "observedGeneration": 1,
        "rollout": {"processor": processor.to_dict(), "api": api.to_dict()},
    }


def plugin_env(kube_cluster: local_cluster.ClusterAccess) -> dict[str, str]:
    """kubectl's PATH with the plugin's folder and this Python first (the plugin's `env
    python3` then has the project's dependencies), and no PYTHONPATH: the plugin finds its
    packages itself."""
    env = kube_cluster.env()
    env["PATH"] = os.pathsep.join([str(PLUGIN_DIR), str(Path(sys.executable).parent), env["PATH"]])
    env.pop("PYTHONPATH", None)
    return env


def kubectl_plugin(
    kube_cluster: local_cluster.ClusterAccess, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(kube_cluster.toolchain.kubectl), "orderpipeline", *args],
        env=plugin_env(kube_cluster),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def paused_pipeline(custom: client.CustomObjectsApi, namespace: str) -> tuple[str, dict[str, Any]]:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest("demo")
    )
    assert created["metadata"]["generation"] == 1
    written = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "demo", {"status": rolling_status()}
    )
    return "demo", written


def test_the_apiserver_defaults_the_rollout_and_keeps_its_status(
    custom: client.CustomObjectsApi, namespace: str, paused_pipeline: tuple[str, dict[str, Any]]
) -> None:
    _, written = paused_pipeline
    rollout = written["spec"]["rollout"]
    assert rollout["order"] == ["processor", "api"]
    assert rollout["progressDeadlineSeconds"] == 600
    assert rollout["steps"][1] == {"pause": {}}
    # Nothing pruned: the status reads back into the machine's status as it was written.
    saved = written["status"]["rollout"]
    expected = rolling_status()["rollout"]
    for component in ("processor", "api"):
        read = rollout_status.RolloutStatus.from_dict(saved[component])
        assert read == rollout_status.RolloutStatus.from_dict(expected[component])
    measures = saved["processor"]["lastAnalysis"]["measures"]
    assert measures[0]["value"] == 0.001
    assert "canaryRevision" not in saved["api"]  # null in the merge patch: not stored


def test_the_apiserver_refuses_a_bad_rollout_with_the_cel_message(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    bad = manifest("bad", steps=[{"weight": 10, "pause": {}}])
    with pytest.raises(client.ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, bad)
    assert "a step is either a weight or a pause" in refused.value.body
    short = manifest("short", progressDeadlineSeconds=60)
    short["spec"]["rollout"]["analysis"] = {"prometheus": {"address": "http://prom:9090"}}
    with pytest.raises(client.ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, short)
    assert "must be longer than rollout.analysis.intervalSeconds" in refused.value.body


def test_kubectl_get_prints_each_components_rollout_columns(
    kube_cluster: local_cluster.ClusterAccess,
    namespace: str,
    paused_pipeline: tuple[str, dict[str, Any]],
) -> None:
    table = kube_cluster.kubectl("get", "opl", "-n", namespace).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[5:11] == ["PROCESSOR", "ROLLOUT", "PROCESSOR", "WEIGHT", "API", "ROLLOUT"]
    assert row[0] == "demo"
    assert row[-5:-1] == ["Paused", "10", "Degraded", "0"]


def test_the_plugin_prints_each_components_rollout(
    kube_cluster: local_cluster.ClusterAccess,
    namespace: str,
    paused_pipeline: tuple[str, dict[str, Any]],
) -> None:
    name, _ = paused_pipeline
    printed = kubectl_plugin(kube_cluster, "status", name, "-n", namespace).stdout
    assert printed.splitlines() == [
        f"orderpipeline {namespace}/demo  generation 1 (observed 1)",
        "processor  Paused  step 2/3: paused until promoted",
        "  weight     target 10%  planned 10.0%  observed 9.7%",
        "  revision   stable 5d8f7c  canary 7a9b1e",
        "  analysis   Pass at 2027-01-15T08:00:00Z  failed comparisons 0",
        "    Pass          orders-failed (errorRatio) = 0.001: canary 1/1000, stable 9/9000",
        "  message    step 2/3: paused until promoted",
        "api        Degraded",
        "  revision   stable c0ffee",
        "  aborted    GateFailed: http-5xx 0.2 > 0.05",
        "  failed     revision bad1 (not rolled out again until the template changes or `retry`)",
        "  message    revision bad1 rolled back: http-5xx 0.2 > 0.05",
    ]
    missing = kubectl_plugin(kube_cluster, "status", "nope", "-n", namespace, check=False)
    assert missing.returncode == 1
    assert f"orderpipeline {namespace}/nope not found" in missing.stderr


def annotation(custom: client.CustomObjectsApi, namespace: str, name: str) -> command.Request:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    found = command.from_annotations(body["metadata"].get("annotations"))
    assert found is not None
    return found


def test_the_plugin_writes_commands_the_operator_parses(
    kube_cluster: local_cluster.ClusterAccess,
    custom: client.CustomObjectsApi,
    namespace: str,
    paused_pipeline: tuple[str, dict[str, Any]],
) -> None:
    name, _ = paused_pipeline
    promoted = kubectl_plugin(kube_cluster, "promote", name, "-n", namespace).stdout
    first = annotation(custom, namespace, name)
    assert (first.action, first.component) == ("promote", None)
    # Without --component, promote goes to the component rolling out.
    assert f"promote requested for processor (id {first.id})" in promoted

    kubectl_plugin(
        kube_cluster, "promote", name, "--full", "--component", "processor", "-n", namespace
    )
    full = annotation(custom, namespace, name)
    assert (full.action, full.component) == ("promoteFull", "processor")
    assert full.id != first.id

    retried = kubectl_plugin(kube_cluster, "retry", name, "-n", namespace).stdout
    assert "retry requested for api" in retried
    assert annotation(custom, namespace, name).action == "retry"

    kubectl_plugin(kube_cluster, "abort", name, "-n", namespace)
    aborted = annotation(custom, namespace, name)
    assert aborted.action == "abort"
    # The annotation is the only change: the spec (and so its generation) is untouched.
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert body["metadata"]["generation"] == 1


def test_the_plugin_refuses_a_pipeline_without_a_rollout(
    kube_cluster: local_cluster.ClusterAccess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    plain = manifest("plain")
    del plain["spec"]["rollout"]
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, plain)
    refused = kubectl_plugin(kube_cluster, "promote", "plain", "-n", namespace, check=False)
    assert refused.returncode == 1
    assert "has no spec.rollout" in refused.stderr
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "plain")
    assert command.ANNOTATION not in (body["metadata"].get("annotations") or {})


def test_status_watch_prints_again_on_each_change(
    kube_cluster: local_cluster.ClusterAccess,
    custom: client.CustomObjectsApi,
    namespace: str,
    paused_pipeline: tuple[str, dict[str, Any]],
) -> None:
    name, _ = paused_pipeline
    process = subprocess.Popen(
        [
            str(kube_cluster.toolchain.kubectl),
            "orderpipeline",
            "status",
            name,
            "-n",
            namespace,
            "--watch",
        ],
        env=plugin_env(kube_cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()

    def next_block() -> list[str]:
        block = [lines.get(timeout=30)]
        while True:
            try:
                line = lines.get(timeout=2)
            except queue.Empty:
                return block
            if line == "" and len(block) > 1:
                return block
            block.append(line)

    try:
        assert "processor  Paused  step 2/3: paused until promoted" in next_block()
        progressing = rolling_status()
        progressing["rollout"]["processor"].update(
            phase="Progressing", currentStep=2, targetWeight=50, message="step 3/3: weight 50%"
        )
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": progressing}
        )
        again = next_block()
        assert "processor  Progressing  step 3/3: weight 50%" in again
        assert "  weight     target 50%  planned 10.0%  observed 9.7%" in again
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        assert lines.get(timeout=30) == f"orderpipeline {namespace}/{name} was deleted"
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_local_example_is_accepted_by_the_apiserver(
    kube_cluster: local_cluster.ClusterAccess, namespace: str, crd_installed: None, tmp_path: Path
) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert "rollout" in example["spec"]
    example["metadata"]["namespace"] = namespace
    path = tmp_path / "example.yaml"
    path.write_text(json.dumps(example))
    accepted = kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(path))
    assert "orderpipeline.order-pipeline.dev/demo created (server dry run)" in accepted.stdout
