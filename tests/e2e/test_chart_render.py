"""The Helm chart rendered and linted: `helm lint --strict`, every manifest valid against the
Kubernetes 1.34 schemas offline (OrderPipelines through the real apiserver's dry run), the RBAC
rules the operator's own, labels and selectors, the restricted securityContext, typos refused."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from order_devtools import cluster as local_cluster
from order_devtools.observability import generate as observability_generate
from order_operator import builders
from order_operator.v1alpha1 import spec as v1alpha1

from .k8s_helpers import wait_established

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/order-pipeline"
RBAC_FILE = REPO / "operator/order_operator/rbac/clusterrole.yaml"
KUBERNETES_VERSION = "1.34"


def run_helm(
    helm_path: Path, home: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for variable in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[variable] = str(home / variable.lower())
    result = subprocess.run(
        [str(helm_path), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


def render(helm_path: Path, home: Path, *args: str) -> list[dict[str, Any]]:
    out = run_helm(
        helm_path, home, "template", "rel", str(CHART), "--namespace", "shop", *args
    ).stdout
    return [document for document in yaml.safe_load_all(out) if document]


def render_values(helm_path: Path, home: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Render with `values` as a values file (lists such as `pipelines` do not fit `--set`)."""
    values_file = home / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return render(helm_path, home, "--values", str(values_file))


# The least a pipeline's spec needs.
MINIMAL_SPEC = {"queue": {"name": "q"}, "tables": {"prefix": "t-"}}


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def test_chart_passes_helm_lint_strict(helm_path: Path, tmp_path: Path) -> None:
    result = run_helm(helm_path, tmp_path, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_manifest_is_valid_for_kubernetes_1_34(
    helm_path: Path, tmp_path: Path
) -> None:
    manifests = render(helm_path, tmp_path, "--include-crds")
    kinds = sorted(manifest["kind"] for manifest in manifests)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "OrderPipeline",
        "Pod",
        "Secret",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    checked = []
    for manifest in manifests:
        if manifest["kind"] == "OrderPipeline":
            continue  # no offline schema: the apiserver checks it (test below)
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        checked.append(manifest["kind"])
    assert len(checked) == len(manifests) - 1


def test_offline_validation_rejects_a_broken_manifest(helm_path: Path, tmp_path: Path) -> None:
    """The check above can fail: a typo in a rendered Deployment is reported."""
    deployment = by_kind(render(helm_path, tmp_path), "Deployment")[0]
    deployment["spec"]["strategy"]["tpye"] = "Recreate"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_rendered_pipelines_pass_the_apiservers_dry_run(
    kube_cluster: local_cluster.ClusterAccess, helm_path: Path, tmp_path: Path, namespace: str
) -> None:
    kube_cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    wait_established(kube_cluster, "orderpipelines.order-pipeline.dev")
    pipelines = by_kind(render(helm_path, tmp_path), "OrderPipeline")
    assert [pipeline["metadata"]["name"] for pipeline in pipelines] == ["orders"]
    manifest = tmp_path / "pipelines.yaml"
    pipelines[0]["metadata"]["namespace"] = namespace
    manifest.write_text(yaml.safe_dump_all(pipelines))
    accepted = kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(manifest))
    assert "orderpipeline.order-pipeline.dev/orders created (server dry run)" in accepted.stdout
    # ... and the dry run does refuse what the CRD forbids.
    pipelines[0]["spec"]["queue"]["deletionPolicy"] = "Sometimes"
    manifest.write_text(yaml.safe_dump_all(pipelines))
    refused = kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(manifest), check=False)
    assert refused.returncode != 0
    assert "deletionPolicy" in refused.stderr


def test_cluster_role_grants_exactly_the_operators_rules(helm_path: Path, tmp_path: Path) -> None:
    manifests = render(helm_path, tmp_path)
    (role,) = by_kind(manifests, "ClusterRole")
    assert role["rules"] == yaml.safe_load(RBAC_FILE.read_text())["rules"]
    (binding,) = by_kind(manifests, "ClusterRoleBinding")
    (account,) = by_kind(manifests, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "shop"}
    ]


def test_operator_deployment_is_one_recreated_replica_probed_by_kopf(
    helm_path: Path, tmp_path: Path
) -> None:
    (deployment,) = by_kind(render(helm_path, tmp_path), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    (container,) = spec["template"]["spec"]["containers"]
    health_port = next(port for port in container["ports"] if port["name"] == "health")
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["OPERATOR_LIVENESS_PORT"] == str(health_port["containerPort"])
    assert env["OPERATOR_BIND"] == "0.0.0.0"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_every_pod_meets_the_restricted_pod_security_level(helm_path: Path, tmp_path: Path) -> None:
    manifests = render(helm_path, tmp_path)
    pod_specs = [
        manifest["spec"]["template"]["spec"] for manifest in by_kind(manifests, "Deployment")
    ]
    pod_specs += [manifest["spec"] for manifest in by_kind(manifests, "Pod")]
    assert len(pod_specs) == 2
    for pod in pod_specs:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True


def test_objects_carry_standard_labels_and_selectors_use_the_stable_subset(
    helm_path: Path, tmp_path: Path
) -> None:
    manifests = render(helm_path, tmp_path)
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "order-pipeline", manifest["kind"]
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "order-pipeline-0.1.0"
    (deployment,) = by_kind(manifests, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "order-pipeline",
        "app.kubernetes.io/instance": "rel",
        "app.kubernetes.io/component": "operator",
    }
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_pipelines_come_from_values_with_image_defaults_and_overrides(
    helm_path: Path, tmp_path: Path
) -> None:
    manifests = render_values(
        helm_path,
        tmp_path,
        {
            "images": {"api": {"repository": "shop/api", "tag": "7"}},
            "pipelines": [
                {"name": "eu", "spec": {"queue": {"name": "eu"}, "tables": {"prefix": "eu-"}}},
                {
                    "name": "us",
                    "spec": {
                        "queue": {"name": "us"},
                        "tables": {"prefix": "us-"},
                        "api": {"image": "pinned/api:1"},
                    },
                },
            ],
        },
    )
    specs = {p["metadata"]["name"]: p["spec"] for p in by_kind(manifests, "OrderPipeline")}
    assert specs["eu"]["api"]["image"] == "shop/api:7"
    assert specs["eu"]["processor"]["image"] == "order-pipeline/processor:0.1.0"
    assert specs["us"]["api"]["image"] == "pinned/api:1"
    assert all(p["metadata"]["namespace"] == "shop" for p in by_kind(manifests, "OrderPipeline"))
    # One readiness test pod per pipeline, each against its own API Service.
    tests = by_kind(manifests, "Pod")
    assert sorted(pod["spec"]["containers"][0]["image"] for pod in tests) == [
        "pinned/api:1",
        "shop/api:7",
    ]
    assert all(pod["metadata"]["annotations"]["helm.sh/hook"] == "test" for pod in tests)
    scripts = " ".join(pod["spec"]["containers"][0]["args"][0] for pod in tests)
    assert "http://eu-api.shop.svc/readyz" in scripts
    assert "http://us-api.shop.svc/readyz" in scripts


def test_the_test_pod_runs_where_the_values_place_it(helm_path: Path, tmp_path: Path) -> None:
    placement = {
        "nodeSelector": {"type": "real"},
        "tolerations": [{"key": "order-pipeline.dev/real-node", "operator": "Exists"}],
    }
    (pod,) = by_kind(render_values(helm_path, tmp_path, {"tests": placement}), "Pod")
    assert {key: pod["spec"][key] for key in placement} == placement


def test_each_pipeline_gets_a_generated_api_secret_unless_it_brings_its_own(
    helm_path: Path, tmp_path: Path
) -> None:
    manifests = render_values(
        helm_path,
        tmp_path,
        {
            "pipelines": [
                {"name": "generated", "spec": MINIMAL_SPEC},
                {"name": "own", "spec": {**MINIMAL_SPEC, "api": {"secretRef": {"name": "mine"}}}},
                {"name": "none", "generateApiSecret": False, "spec": MINIMAL_SPEC},
            ]
        },
    )
    (secret,) = by_kind(manifests, "Secret")
    assert secret["metadata"]["name"] == "generated-api-secrets"
    assert sorted(secret["data"]) == ["API_CLIENTS", "JWT_SECRET", "SIGNING_SECRET"]
    assert len(base64.b64decode(secret["data"]["SIGNING_SECRET"])) >= 32
    assert base64.b64decode(secret["data"]["API_CLIENTS"]) == b"{}"
    refs = {
        p["metadata"]["name"]: p["spec"]["api"].get("secretRef")
        for p in by_kind(manifests, "OrderPipeline")
    }
    assert refs == {
        "generated": {"name": "generated-api-secrets"},
        "own": {"name": "mine"},
        "none": None,
    }


def test_service_account_carries_the_cloud_identity_annotations(
    helm_path: Path, tmp_path: Path
) -> None:
    role = "arn:aws:iam::123456789012:role/order-operator"
    manifests = render(
        helm_path, tmp_path, "--set", f"operator.serviceAccount.annotations.iam/role-arn={role}"
    )
    (account,) = by_kind(manifests, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"iam/role-arn": role}


def test_misspelled_value_is_refused_by_the_schema(helm_path: Path, tmp_path: Path) -> None:
    result = run_helm(
        helm_path,
        tmp_path,
        "template",
        "rel",
        str(CHART),
        "--set",
        "operator.replicas=2",
        check=False,
    )
    assert result.returncode != 0
    assert "additional properties 'replicas' not allowed" in result.stderr


def test_operator_watches_all_namespaces_or_only_the_listed_ones(
    helm_path: Path, tmp_path: Path
) -> None:
    (default,) = by_kind(render(helm_path, tmp_path), "Deployment")
    assert "args" not in default["spec"]["template"]["spec"]["containers"][0]
    (narrowed,) = by_kind(
        render(helm_path, tmp_path, "--set", "operator.watchNamespaces={orders-dev,orders-qa}"),
        "Deployment",
    )
    assert narrowed["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--namespace=orders-dev",
        "--namespace=orders-qa",
    ]


def test_chart_with_development_reload_passes_lint_and_the_kubernetes_1_34_schemas(
    helm_path: Path, tmp_path: Path
) -> None:
    linted = run_helm(
        helm_path, tmp_path, "lint", "--strict", str(CHART), "--set", "development.reload=true"
    )
    assert "0 chart(s) failed" in linted.stdout
    manifests = render(helm_path, tmp_path, "--include-crds", "--set", "development.reload=true")
    checked = [m for m in manifests if m["kind"] != "OrderPipeline"]
    assert len(checked) == len(manifests) - 1
    for manifest in checked:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_development_reload_reaches_every_pipeline_and_reloads_the_operator_from_a_copy(
    helm_path: Path, tmp_path: Path
) -> None:
    manifests = render(
        helm_path,
        tmp_path,
        "--set",
        "development.reload=true",
        "--set",
        "operator.watchNamespaces={orders-dev}",
    )
    (pipeline,) = by_kind(manifests, "OrderPipeline")
    assert pipeline["spec"]["development"] == {"reload": True}
    (deployment,) = by_kind(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (container,) = pod["containers"]
    # The same copy as the operator's builders do for the API and the processor.
    assert init["command"] == [
        "python",
        "-c",
        builders.COPY_SOURCES_SCRIPT,
        builders.SOURCE_DIR,
        builders.SOURCES_COPY_DIR,
    ]
    assert init["image"] == container["image"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes["sources"]
    assert init["volumeMounts"] == [{"name": "sources", "mountPath": builders.SOURCES_COPY_DIR}]
    assert {"name": "sources", "mountPath": builders.SOURCE_DIR} in container["volumeMounts"]
    assert container["workingDir"] == builders.SOURCE_DIR
    assert container["command"][:3] == ["python", "-m", "watchfiles"]
    # The watched namespaces move into the restarted command (args would become watched paths).
    assert container["command"][-2:] == ["python -m order_operator --namespace=orders-dev", "."]
    assert "args" not in container
    assert "livenessProbe" not in container
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for each in (init, container):
        context = each["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]


def test_a_pipeline_can_opt_out_of_the_charts_development_reload(
    helm_path: Path, tmp_path: Path
) -> None:
    opted_out = {**MINIMAL_SPEC, "development": {"reload": False}}
    manifests = render_values(
        helm_path,
        tmp_path,
        {
            "development": {"reload": True},
            "pipelines": [
                {"name": "follows", "spec": MINIMAL_SPEC},
                {"name": "opts-out", "spec": opted_out},
            ],
        },
    )
    reload = {
        p["metadata"]["name"]: p["spec"]["development"]["reload"]
        for p in by_kind(manifests, "OrderPipeline")
    }
    assert reload == {"follows": True, "opts-out": False}
    # Off (the default): no development field at all, the CRD's default (false) applies.
    (default,) = by_kind(render(helm_path, tmp_path), "OrderPipeline")
    assert "development" not in default["spec"]


def test_watched_namespaces_get_a_role_each_and_the_cluster_role_only_cluster_scoped_rules(
    helm_path: Path, tmp_path: Path
) -> None:
    manifests = render(
        helm_path, tmp_path, "--set", "operator.watchNamespaces={orders-dev,orders-qa}"
    )
    rules = yaml.safe_load(RBAC_FILE.read_text())["rules"]
    cluster_scoped = [
        rule
        for rule in rules
        if set(rule["resources"]) <= {"customresourcedefinitions", "namespaces"}
    ]
    namespaced = [rule for rule in rules if rule not in cluster_scoped]
    assert cluster_scoped
    assert namespaced
    (cluster_role,) = by_kind(manifests, "ClusterRole")
    assert cluster_role["rules"] == cluster_scoped
    (account,) = by_kind(manifests, "ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "shop"}
    roles = {role["metadata"]["namespace"]: role for role in by_kind(manifests, "Role")}
    bindings = {item["metadata"]["namespace"]: item for item in by_kind(manifests, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == ["orders-dev", "orders-qa"]
    for namespace, role in roles.items():
        assert role["rules"] == namespaced
        assert bindings[namespace]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert bindings[namespace]["subjects"] == [subject]
    for manifest in manifests:
        if manifest["kind"] != "OrderPipeline":
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def admission_policy(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = by_kind(manifests, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(manifests, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    return policy


def test_admission_policy_binds_where_the_operator_watches_and_allows_the_charts_images(
    helm_path: Path, tmp_path: Path
) -> None:
    # Watching all namespaces: the binding matches all of them.
    (everywhere,) = by_kind(render(helm_path, tmp_path), "ValidatingAdmissionPolicyBinding")
    assert "matchResources" not in everywhere["spec"]
    manifests = render_values(
        helm_path,
        tmp_path,
        {
            "images": {"api": {"repository": "registry.example.com/shop/api"}},
            "operator": {"watchNamespaces": ["orders-dev"]},
            "admissionPolicy": {
                "allowedImagePrefixes": ["registry.example.com/tools/"],
                "allowedServiceAccounts": ["orders-irsa"],
                "allowedEndpoints": ["http://elasticmq:9324"],
            },
        },
    )
    policy = admission_policy(manifests)
    variables = {item["name"]: item["expression"] for item in policy["spec"]["variables"]}
    assert json.loads(variables["imagePrefixes"]) == [
        "registry.example.com/shop/api",
        "order-pipeline/processor",
        "registry.example.com/tools",
    ]
    assert json.loads(variables["serviceAccounts"]) == ["orders-irsa"]
    assert json.loads(variables["endpoints"]) == ["http://elasticmq:9324"]
    (binding,) = by_kind(manifests, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["orders-dev"]}
    ]
    disabled = render(helm_path, tmp_path, "--set", "admissionPolicy.enabled=false")
    assert not by_kind(disabled, "ValidatingAdmissionPolicy")
    assert not by_kind(disabled, "ValidatingAdmissionPolicyBinding")


def test_network_policies_are_off_by_default(helm_path: Path, tmp_path: Path) -> None:
    assert not by_kind(render(helm_path, tmp_path), "NetworkPolicy")


def test_network_policies_select_the_operators_pods_and_allow_only_their_traffic(
    helm_path: Path, tmp_path: Path
) -> None:
    ingress_controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}
    }
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitor"}}}
    emulator = {"to": [{"podSelector": {"matchLabels": {"app": "elasticmq"}}}], "ports": []}
    manifests = render_values(
        helm_path,
        tmp_path,
        {
            "operator": {"watchNamespaces": ["orders-dev", "shop"]},
            "networkPolicy": {
                "enabled": True,
                "apiFrom": [ingress_controller],
                "metricsFrom": [prometheus],
                "extraEgress": [emulator],
            },
        },
    )
    policies = by_kind(manifests, "NetworkPolicy")
    for policy in policies:
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    placed = sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies)
    assert placed == [
        ("orders-dev", "rel-order-pipeline-api"),
        ("orders-dev", "rel-order-pipeline-processor"),
        ("shop", "rel-order-pipeline-api"),
        ("shop", "rel-order-pipeline-operator"),
        ("shop", "rel-order-pipeline-processor"),
    ]
    dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    https = {"ports": [{"port": 443, "protocol": "TCP"}]}
    named = {(p["metadata"]["namespace"], p["metadata"]["name"]): p["spec"] for p in policies}

    # The API and processor policies select the pods the operator builds, on the ports they serve.
    test_pods = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/instance": "rel",
                "app.kubernetes.io/component": "test",
            }
        }
    }
    spec = v1alpha1.OrderPipelineSpec.model_validate(
        {**MINIMAL_SPEC, "api": {"image": "a:1"}, "processor": {"image": "p:1"}}
    )
    for namespace in ("orders-dev", "shop"):
        owner = builders.Owner(name="orders", namespace=namespace, uid="1")
        workloads = {
            "api": (builders.build_api_deployment(owner, spec), [ingress_controller, test_pods]),
            "processor": (builders.build_processor_deployment(owner, spec), [prometheus]),
        }
        for component, (deployment, sources) in workloads.items():
            policy = named[(namespace, f"rel-order-pipeline-{component}")]
            pod = deployment["spec"]["template"]
            selector = policy["podSelector"]["matchLabels"]
            assert selector.items() <= pod["metadata"]["labels"].items()
            (rule,) = policy["ingress"]
            assert rule["from"] == sources
            ports = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
            assert [port["port"] for port in rule["ports"]] == [ports.pop()]
            assert policy["egress"] == [dns, https, emulator]

    # The operator's: its metrics to Prometheus; out, the Kubernetes API as well.
    operator = named[("shop", "rel-order-pipeline-operator")]
    (deployment,) = by_kind(manifests, "Deployment")
    pod = deployment["spec"]["template"]
    assert operator["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (rule,) = operator["ingress"]
    assert rule == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [prometheus]}
    assert "metrics" in {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
    kubernetes_api = {"ports": [{"port": 6443, "protocol": "TCP"}]}
    assert operator["egress"] == [dns, https, kubernetes_api, emulator]


def test_network_policies_admit_anyone_to_the_served_ports_without_peers(
    helm_path: Path, tmp_path: Path
) -> None:
    policies = by_kind(
        render(helm_path, tmp_path, "--set", "networkPolicy.enabled=true"), "NetworkPolicy"
    )
    assert len(policies) == 3
    for policy in policies:
        (rule,) = policy["spec"]["ingress"]
        assert "from" not in rule


MONITORING_ON = [
    "--set",
    "monitoring.dashboards.enabled=true",
    "--set",
    "monitoring.rules.enabled=true",
    "--set",
    "monitoring.podMonitors.enabled=true",
    "--set",
    "monitoring.labels.release=kube-prometheus-stack",
]
PROMETHEUS_OPERATOR_APIS = [
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
    "--api-versions",
    "monitoring.coreos.com/v1/PodMonitor",
]


def test_monitoring_ships_the_generated_dashboards_for_grafanas_sidecar(
    helm_path: Path, tmp_path: Path
) -> None:
    config_maps = by_kind(render(helm_path, tmp_path, *MONITORING_ON), "ConfigMap")
    shipped = {}
    for config_map in config_maps:
        kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        ((name, text),) = config_map["data"].items()
        shipped[name] = json.loads(text)
    generated = {
        path.name: json.loads(text)
        for path, text in observability_generate.generated_files().items()
        if path.suffix == ".json"
    }
    assert shipped == generated
    assert {d["uid"] for d in shipped.values()} == {
        "order-pipeline",
        "order-pipeline-operator",
        "order-pipeline-rollouts",
    }


def test_monitoring_ships_rules_and_pod_monitors_only_where_the_operators_api_is_served(
    helm_path: Path, tmp_path: Path
) -> None:
    without = render(helm_path, tmp_path, *MONITORING_ON)
    assert not by_kind(without, "PrometheusRule")
    assert not by_kind(without, "PodMonitor")
    manifests = render(
        helm_path,
        tmp_path,
        *MONITORING_ON,
        *PROMETHEUS_OPERATOR_APIS,
        "--set",
        "monitoring.rules.runbookBaseUrl=https://example.org/order-pipeline/",
    )
    (rule,) = by_kind(manifests, "PrometheusRule")
    expected = observability_generate.load_rules()
    for group in expected["groups"]:
        for item in group["rules"]:
            if "alert" in item:
                link = item["annotations"]["runbook_url"]
                item["annotations"]["runbook_url"] = f"https://example.org/order-pipeline/{link}"
    assert rule["spec"] == expected


def test_pod_monitors_select_the_pods_the_operator_creates_on_their_metrics_ports(
    helm_path: Path, tmp_path: Path
) -> None:
    manifests = render(helm_path, tmp_path, *MONITORING_ON, *PROMETHEUS_OPERATOR_APIS)
    monitors = {m["metadata"]["name"]: m["spec"] for m in by_kind(manifests, "PodMonitor")}
    owner = builders.Owner(name="orders", namespace="shop", uid="1")
    spec = v1alpha1.OrderPipelineSpec.model_validate(
        MINIMAL_SPEC | {"api": {"image": "a:1"}, "processor": {"image": "p:1"}}
    )
    pods = {
        "api": builders.build_api_deployment(owner, spec)["spec"]["template"],
        "processor": builders.build_processor_deployment(owner, spec)["spec"]["template"],
    }
    (operator,) = by_kind(manifests, "Deployment")
    pods["operator"] = operator["spec"]["template"]
    for component, pod in pods.items():
        monitor = monitors[f"rel-order-pipeline-{component}"]
        selector = monitor["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items(), component
        (endpoint,) = monitor["podMetricsEndpoints"]
        (container,) = pod["spec"]["containers"]
        assert endpoint["port"] in {port["name"] for port in container["ports"]}, component
        relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
        assert relabel["job"]["replacement"] == f"order-{component}"
    for component in ("api", "processor"):
        relabel = monitors[f"rel-order-pipeline-{component}"]["podMetricsEndpoints"][0]
        pipeline_label = {r["targetLabel"]: r for r in relabel["relabelings"]}["pipeline"]
        assert pipeline_label["sourceLabels"] == [
            "__meta_kubernetes_pod_label_app_kubernetes_io_instance"
        ]
