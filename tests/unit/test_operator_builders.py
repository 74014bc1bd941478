"""Manifest builders: labels, ownership, no scaler-owned replicas, env the services read."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from order_operator import builders
from order_operator.v1alpha1 import spec as v1alpha1

OWNER = builders.Owner(name="shop", namespace="team-a", uid="1234")


def make_spec(**overrides: Any) -> v1alpha1.OrderPipelineSpec:
    raw: dict[str, Any] = {
        "aws": {"region": "eu-west-1", "endpoints": {"sqs": "http://127.0.0.1:9324"}},
        "queue": {"name": "shop-orders", "visibilityTimeoutSeconds": 120},
        "tables": {"prefix": "shop-"},
        "api": {"image": "api:1", "env": {"RATE_LIMIT_PER_MINUTE": "50"}},
        "processor": {"image": "processor:1", "concurrency": 8},
    }
    raw.update(overrides)
    return v1alpha1.OrderPipelineSpec.model_validate(raw)


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container["env"]}


def test_no_deployment_carries_replicas_because_scalers_own_them() -> None:
    spec = make_spec()
    for deployment in (
        builders.build_api_deployment(OWNER, spec),
        builders.build_processor_deployment(OWNER, spec),
    ):
        assert "replicas" not in deployment["spec"]


def test_every_child_is_owned_by_the_pipeline_as_controller() -> None:
    children = builders.build_children(OWNER, make_spec())
    assert {child["kind"] for child in children} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for child in children:
        (reference,) = child["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": "order-pipeline.dev/v1alpha1",
            "kind": "OrderPipeline",
            "name": "shop",
            "uid": "1234",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "team-a"


def test_children_carry_their_own_labels_and_selectors_match_pod_labels() -> None:
    for child in builders.build_children(OWNER, make_spec()):
        child_labels = child["metadata"]["labels"]
        assert child_labels["app.kubernetes.io/managed-by"] == "order-operator"
        assert child_labels["app.kubernetes.io/instance"] == "shop"
        if child["kind"] == "Deployment":
            selector = child["spec"]["selector"]["matchLabels"]
            pod_labels = child["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= pod_labels.items()


def test_services_get_queue_and_table_settings_from_the_spec() -> None:
    spec = make_spec()
    api_env = env_of(builders.build_api_deployment(OWNER, spec))
    processor_env = env_of(builders.build_processor_deployment(OWNER, spec))
    for env in (api_env, processor_env):
        assert env["QUEUE_NAME"] == "shop-orders"
        assert env["TABLE_PREFIX"] == "shop-"
        assert env["AWS_REGION"] == "eu-west-1"
        assert env["SQS_ENDPOINT_URL"] == "http://127.0.0.1:9324"
        assert "DYNAMODB_ENDPOINT_URL" not in env
    assert api_env["RATE_LIMIT_PER_MINUTE"] == "50"
    assert processor_env["CONCURRENCY"] == "8"
    assert processor_env["BATCH_SIZE"] == "10"


def test_the_api_gets_its_status_url_base_from_the_pipeline() -> None:
    api = {"image": "api:1", "publicBaseUrl": "https://orders.example/shop"}
    configured = env_of(builders.build_api_deployment(OWNER, make_spec(api=api)))
    assert configured["PUBLIC_BASE_URL"] == "https://orders.example/shop"
    # Unset: the Service's cluster address, never anything a request says.
    unset = env_of(builders.build_api_deployment(OWNER, make_spec()))
    assert unset["PUBLIC_BASE_URL"] == "http://shop-api.team-a.svc"


@pytest.mark.parametrize(
    "url", ["orders.example", "https://orders.example?next=x", "ftp://orders.example"]
)
def test_a_public_base_url_that_is_no_http_base_is_refused(url: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"public_base_url|publicBaseUrl"):
        make_spec(api={"image": "api:1", "publicBaseUrl": url})


def test_probed_and_scraped_ports_listen_on_the_pod_ip_not_loopback() -> None:
    spec = make_spec()
    assert env_of(builders.build_api_deployment(OWNER, spec))["API_HOST"] == "0.0.0.0"
    processor = builders.build_processor_deployment(OWNER, spec)
    assert env_of(processor)["METRICS_HOST"] == "0.0.0.0"
    container = processor["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"


def test_pods_carry_scrape_annotations_naming_a_port_their_container_exposes() -> None:
    spec = make_spec()
    for deployment in (
        builders.build_api_deployment(OWNER, spec),
        builders.build_processor_deployment(OWNER, spec),
    ):
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        (container,) = template["spec"]["containers"]
        exposed = {port["containerPort"] for port in container["ports"]}
        assert int(annotations["prometheus.io/port"]) in exposed


def test_secret_credentials_become_secret_key_refs_never_values() -> None:
    spec = make_spec(aws={"credentials": {"source": "Secret", "secretRef": {"name": "aws"}}})
    env = env_of(builders.build_processor_deployment(OWNER, spec))
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "aws", "key": "AWS_ACCESS_KEY_ID"}}


def test_processor_grace_period_covers_the_visibility_timeout() -> None:
    deployment = builders.build_processor_deployment(OWNER, make_spec())
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 120


def test_hpa_targets_the_api_with_spec_bounds_and_default_cpu_target() -> None:
    hpa = builders.build_api_hpa(
        OWNER, make_spec(api={"image": "a", "autoscaling": {"minReplicas": 3, "maxReplicas": 7}})
    )
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shop-api"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    target = hpa["spec"]["metrics"][0]["resource"]["target"]
    assert target == {"type": "Utilization", "averageUtilization": 70}
    assert hpa["spec"]["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 300}
    quick = make_spec(api={"image": "a", "autoscaling": {"scaleDownStabilizationSeconds": 20}})
    behavior = builders.build_api_hpa(OWNER, quick)["spec"]["behavior"]
    assert behavior["scaleDown"] == {"stabilizationWindowSeconds": 20}


def test_pdbs_use_max_unavailable_and_select_their_component() -> None:
    spec = make_spec(processor={"image": "p", "disruptionBudget": {"maxUnavailable": "50%"}})
    pdb = builders.build_pdb(OWNER, "processor", spec.processor.disruption_budget)
    assert pdb["spec"]["maxUnavailable"] == "50%"
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "processor"
    assert "minAvailable" not in pdb["spec"]


def test_pods_pass_the_restricted_pod_security_standard() -> None:
    pod = builders.build_api_deployment(OWNER, make_spec())["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}


def test_workload_pods_get_no_kubernetes_api_token() -> None:
    """Neither the API nor the processor calls the Kubernetes API: a token in their pods would
    only be something for an intruder to use, also under a named ServiceAccount (IRSA reads its
    own projected token, not this one) and in development mode."""
    credentials = {"credentials": {"serviceAccountName": "orders-irsa"}}
    specs = [
        make_spec(),
        make_spec(aws={"region": "eu-west-1", **credentials}),
        make_spec(development={"reload": True}),
    ]
    for spec in specs:
        for build in workload_builders():
            assert pod_of(build(OWNER, spec))["automountServiceAccountToken"] is False


def pod_of(deployment: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def workload_builders() -> list[Any]:
    return [builders.build_api_deployment, builders.build_processor_deployment]


def test_development_reload_is_off_by_default_and_off_changes_nothing() -> None:
    default, off = make_spec(), make_spec(development={"reload": False})
    assert default.development.reload is False
    for build in workload_builders():
        assert build(OWNER, off) == build(OWNER, default)
        pod = pod_of(build(OWNER, off))
        assert "initContainers" not in pod
        assert "volumes" not in pod
        (container,) = pod["containers"]
        assert "command" not in container  # the image's entrypoint: python -m order_<service>
        assert "workingDir" not in container
        assert "volumeMounts" not in container
        assert "livenessProbe" in container
        assert not [name for name in env_of(build(OWNER, off)) if name.startswith("UVICORN_")]


def test_development_reload_only_adds_the_sources_copy_and_the_reloading_command() -> None:
    """Everything else (image, env, probes but liveness, resources, security) stays as in
    production: dev mode differs only where it has to."""
    production, development = make_spec(), make_spec(development={"reload": True})
    dev_only = {"command", "workingDir", "volumeMounts"}
    for build in workload_builders():
        plain, reloading = build(OWNER, production), build(OWNER, development)
        plain_pod, reloading_pod = pod_of(plain), pod_of(reloading)
        (plain_container,) = plain_pod.pop("containers")
        (container,) = reloading_pod.pop("containers")
        for key in ("initContainers", "volumes"):
            reloading_pod.pop(key)
        assert reloading_pod == plain_pod
        # The release differs with the template; everything else is the same.
        release = {builders.APP_VERSION_ENV} | {
            e["name"] for e in container["env"] if e["name"].startswith("UVICORN_")
        }
        container["env"] = [e for e in container["env"] if e["name"] not in release]
        plain_container["env"] = [e for e in plain_container["env"] if e["name"] not in release]
        assert {k: v for k, v in container.items() if k not in dev_only} == {
            k: v for k, v in plain_container.items() if k != "livenessProbe"
        }
        without_record = {k: v for k, v in reloading["metadata"].items() if k != "annotations"}
        assert without_record == {k: v for k, v in plain["metadata"].items() if k != "annotations"}


def test_development_reload_runs_each_workload_from_a_writable_copy_of_the_image_sources() -> None:
    spec = make_spec(development={"reload": True})
    for build in workload_builders():
        pod = pod_of(build(OWNER, spec))
        (volume,) = pod["volumes"]
        assert volume["name"] == builders.SOURCES_VOLUME
        assert "emptyDir" in volume
        (init,) = pod["initContainers"]
        (container,) = pod["containers"]
        assert init["image"] == container["image"]
        assert init["command"][:2] == ["python", "-c"]
        assert init["command"][-2:] == [builders.SOURCE_DIR, builders.SOURCES_COPY_DIR]
        assert init["volumeMounts"] == [
            {"name": volume["name"], "mountPath": builders.SOURCES_COPY_DIR}
        ]
        assert container["volumeMounts"] == [
            {"name": volume["name"], "mountPath": builders.SOURCE_DIR}
        ]
        assert container["workingDir"] == builders.SOURCE_DIR
        # Sync writes only into the emptyDir: the root filesystem stays read-only everywhere.
        for each in (init, container):
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["runAsNonRoot"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "livenessProbe" not in container


def test_development_reload_commands_reload_from_the_working_directory() -> None:
    spec = make_spec(development={"reload": True})
    api = builders.build_api_deployment(OWNER, spec)
    (api_container,) = pod_of(api)["containers"]
    command = api_container["command"]
    assert command[:4] == ["python", "-m", "uvicorn", "order_api.app:create_served_app"]
    assert "--factory" in command
    assert "--reload" in command
    assert command[command.index("--reload-dir") + 1] == "."
    # The uvicorn CLI binds where `python -m order_api` would.
    api_env = env_of(api)
    assert (api_env["UVICORN_HOST"], api_env["UVICORN_PORT"]) == ("0.0.0.0", "8000")
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"

    processor = builders.build_processor_deployment(OWNER, spec)
    (processor_container,) = pod_of(processor)["containers"]
    command = processor_container["command"]
    assert command[:3] == ["python", "-m", "watchfiles"]
    assert command[-2:] == ["python -m order_processor", "."]
    # watchfiles' SIGINT-then-SIGKILL fits in the pod's grace period.
    timeout = int(command[command.index("--sigint-timeout") + 1])
    assert timeout < pod_of(processor)["terminationGracePeriodSeconds"]


def test_each_components_placement_reaches_its_pods_and_only_its_own() -> None:
    real_node = {
        "nodeSelector": {"type": "real"},
        "tolerations": [{"key": "order-pipeline.dev/real-node", "operator": "Exists"}],
    }
    spec = make_spec(processor={"image": "processor:1", "placement": real_node})
    processor = pod_of(builders.build_processor_deployment(OWNER, spec))
    assert processor["nodeSelector"] == {"type": "real"}
    assert processor["tolerations"] == [
        {"key": "order-pipeline.dev/real-node", "operator": "Exists"}
    ]
    api = pod_of(builders.build_api_deployment(OWNER, spec))
    assert "nodeSelector" not in api
    assert "tolerations" not in api
