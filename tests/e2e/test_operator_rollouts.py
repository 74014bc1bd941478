"""Canary rollouts by the operator on the real control plane: the stable and canary Deployments,
steps, pauses, commands through the annotation, abort and retry, and an operator restarted
mid-rollout. Without an analysis (no Prometheus here: the real-pod tests judge canaries on
real metrics), steps advance on time and commands alone."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client

from .k8s_helpers import wait_for
from .operator_harness import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProcess,
    Pipelines,
    has_event,
)

pytestmark = pytest.mark.e2e

COMMAND_ANNOTATION = f"{GROUP}/rollout-command"
# Processor first (readers before writers); a weight step advances at once without an
# analysis, the indefinite pause holds until promoted.
ROLLOUT = {"steps": [{"weight": 50}, {"pause": {}}], "progressDeadlineSeconds": 600}
# Two processor pods, so the canary has a place without exceeding the scaler's count.
PROCESSOR = {"scaling": {"minReplicas": 2, "maxReplicas": 4, "pollingIntervalSeconds": 1}}


def rollout_of(pipelines: Pipelines, name: str, component: str) -> dict[str, Any]:
    body = pipelines.get(name) or {}
    found: dict[str, Any] = ((body.get("status") or {}).get("rollout") or {}).get(component) or {}
    return found


def wait_phase(
    pipelines: Pipelines, name: str, component: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    wait_for(
        lambda: rollout_of(pipelines, name, component).get("phase") == phase,
        f"{component} rollout {phase}",
        timeout=timeout,
    )
    return rollout_of(pipelines, name, component)


def command(pipelines: Pipelines, name: str, action: str, component: str | None = None) -> None:
    value: dict[str, str] = {"action": action, "id": uuid.uuid4().hex}
    if component is not None:
        value["component"] = component
    pipelines.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        pipelines.namespace,
        PLURAL,
        name,
        {"metadata": {"annotations": {COMMAND_ANNOTATION: json.dumps(value)}}},
    )


def deployment(api: client.ApiClient, namespace: str, name: str) -> client.V1Deployment | None:
    try:
        return client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def image_and_replicas(api: client.ApiClient, namespace: str, name: str) -> tuple[str, int]:
    found = deployment(api, namespace, name)
    assert found is not None, f"no Deployment {name}"
    return found.spec.template.spec.containers[0].image, found.spec.replicas or 0


def started(pipelines: Pipelines, name: str) -> dict[str, Any]:
    pipelines.create(name, rollout=ROLLOUT, processor=PROCESSOR)
    pipelines.wait_ready(name)
    first = wait_phase(pipelines, name, "processor", "Healthy")
    assert first.get("canaryRevision") is None  # the first creation rolls nothing out
    return first


def test_a_processor_change_runs_as_a_canary_and_promote_makes_it_stable(
    pipelines: Pipelines, k8s_api: client.ApiClient
) -> None:
    namespace = pipelines.namespace
    first = started(pipelines, "shop")
    pipelines.patch("shop", {"processor": {"image": "order-processor:v2"}})
    paused = wait_phase(pipelines, "shop", "processor", "Paused")
    assert paused["stableRevision"] == first["stableRevision"]
    assert paused["canaryRevision"] not in (None, first["stableRevision"])
    assert (paused["currentStep"], paused["targetWeight"]) == (1, 50)
    # The scaler's two pods are split: one canary on the new image, one stable on the old.
    wait_for(
        lambda: (
            image_and_replicas(k8s_api, namespace, "shop-processor-canary")
            == ("order-processor:v2", 1)
        ),
        "a canary pod on the new image",
    )
    assert image_and_replicas(k8s_api, namespace, "shop-processor") == ("order-processor:e2e", 1)
    # The API is next in the order: nothing of it changed, so it stays Healthy.
    assert rollout_of(pipelines, "shop", "api")["phase"] == "Healthy"

    command(pipelines, "shop", "promote")
    healthy = wait_phase(pipelines, "shop", "processor", "Healthy")
    assert healthy["stableRevision"] == paused["canaryRevision"]
    wait_for(
        lambda: (
            image_and_replicas(k8s_api, namespace, "shop-processor") == ("order-processor:v2", 2)
        ),
        "the stable Deployment on the new image at the scaler's count",
    )
    wait_for(
        lambda: image_and_replicas(k8s_api, namespace, "shop-processor-canary")[1] == 0,
        "the canary at zero once the stable side rolled out",
    )
    for reason in ("RolloutStarted", "StepCompleted", "Paused", "Promoted"):
        assert has_event(k8s_api, namespace, reason, "processor"), reason


def test_abort_rolls_back_remembers_the_revision_and_retry_rolls_it_out_again(
    pipelines: Pipelines, k8s_api: client.ApiClient
) -> None:
    namespace = pipelines.namespace
    first = started(pipelines, "shop")
    pipelines.patch("shop", {"processor": {"image": "order-processor:bad"}})
    paused = wait_phase(pipelines, "shop", "processor", "Paused")

    command(pipelines, "shop", "abort")
    degraded = wait_phase(pipelines, "shop", "processor", "Degraded")
    assert degraded["failedRevision"] == paused["canaryRevision"]
    assert degraded["stableRevision"] == first["stableRevision"]
    assert degraded["abortReason"].startswith("AbortedByCommand")
    rolled_back = [c for c in degraded["conditions"] if c["type"] == "RolledBack"]
    assert rolled_back
    assert rolled_back[0]["status"] == "True"
    wait_for(
        lambda: image_and_replicas(k8s_api, namespace, "shop-processor-canary")[1] == 0,
        "the canary at zero",
    )
    wait_for(
        lambda: (
            image_and_replicas(k8s_api, namespace, "shop-processor") == ("order-processor:e2e", 2)
        ),
        "the stable side back at the scaler's whole count, on the old image",
    )
    assert has_event(k8s_api, namespace, "RolloutAborted", "processor")
    # The spec still names the failed revision: it is not rolled out again by itself.
    still = rollout_of(pipelines, "shop", "processor")
    assert (still["phase"], still.get("canaryRevision")) == ("Degraded", None)

    command(pipelines, "shop", "retry")
    again = wait_phase(pipelines, "shop", "processor", "Paused")
    assert again["canaryRevision"] == paused["canaryRevision"]
    assert has_event(k8s_api, namespace, "RolloutRetried", "processor")


def test_an_operator_restarted_mid_rollout_continues_from_status(
    pipelines: Pipelines, k8s_api: client.ApiClient, order_operator: OperatorProcess
) -> None:
    namespace = pipelines.namespace
    started(pipelines, "shop")
    pipelines.patch("shop", {"processor": {"image": "order-processor:v3"}})
    paused = wait_phase(pipelines, "shop", "processor", "Paused")
    order_operator.kill()
    order_operator.start()
    # Still paused at the same step with the same canary: status is the rollout's memory.
    wait_for(
        lambda: (
            image_and_replicas(k8s_api, namespace, "shop-processor-canary")
            == ("order-processor:v3", 1)
        ),
        "the canary kept",
    )
    resumed = rollout_of(pipelines, "shop", "processor")
    for key in ("phase", "currentStep", "canaryRevision", "stableRevision", "stepStartedAt"):
        assert resumed[key] == paused[key], key
    command(pipelines, "shop", "promoteFull")
    wait_phase(pipelines, "shop", "processor", "Healthy")
    wait_for(
        lambda: image_and_replicas(k8s_api, namespace, "shop-processor")[0] == "order-processor:v3",
        "the stable side promoted",
    )


def test_the_api_rolls_after_the_processor_and_a_bad_command_gets_a_warning(
    pipelines: Pipelines, k8s_api: client.ApiClient
) -> None:
    namespace = pipelines.namespace
    started(pipelines, "shop")
    pipelines.patch(
        "shop",
        {"processor": {"image": "order-processor:v4"}, "api": {"image": "order-api:v4"}},
    )
    wait_phase(pipelines, "shop", "processor", "Paused")
    api = rollout_of(pipelines, "shop", "api")
    assert api["phase"] == "Progressing"
    assert "waits for the processor" in api["message"]
    assert image_and_replicas(k8s_api, namespace, "shop-api")[0] == "order-api:e2e"

    pipelines.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "shop",
        {"metadata": {"annotations": {COMMAND_ANNOTATION: "promote please"}}},
    )
    wait_for(
        lambda: has_event(k8s_api, namespace, "InvalidCommand", "is not JSON"),
        "a Warning naming what is wrong with the command",
    )
    command(pipelines, "shop", "promote", component="processor")
    wait_phase(pipelines, "shop", "processor", "Healthy")
    api_paused = wait_phase(pipelines, "shop", "api", "Paused")
    assert api_paused["targetWeight"] == 50
    # 50 % against the stable side's two replicas: two canary API pods beside them (the
    # Service selects both tracks).
    wait_for(
        lambda: image_and_replicas(k8s_api, namespace, "shop-api-canary") == ("order-api:v4", 2),
        "the API canary pods",
    )
    command(pipelines, "shop", "promote")
    wait_phase(pipelines, "shop", "api", "Healthy")
    wait_for(
        lambda: image_and_replicas(k8s_api, namespace, "shop-api")[0] == "order-api:v4",
        "the stable API on the new image",
    )
