"""Stable and canary Deployments: revisions, release stamps, selectors, and a stable
Deployment built before tracks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from order_common import settings as common_settings
from order_operator import builders
from order_operator.rollout import spec as rollout_spec
from tests.unit.test_operator_builders import OWNER, make_spec

COMPONENTS = rollout_spec.COMPONENTS


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_revision_names_the_template_whatever_its_key_order(component: str) -> None:
    template = builders.pod_template(OWNER, make_spec(), component)  # type: ignore[arg-type]
    revision = builders.template_revision(template)
    assert builders.template_revision(reordered(template)) == revision
    assert len(revision) == builders.REVISION_LENGTH
    # Fit for the version label of pods and metrics, and for APP_VERSION.
    assert common_settings.ReleaseSettings(app_version=revision).app_version == revision


@pytest.mark.parametrize(
    ("component", "change"),
    [
        ("api", {"api": {"image": "api:2"}}),
        ("api", {"api": {"image": "api:1", "env": {"RATE_LIMIT_PER_MINUTE": "60"}}}),
        ("api", {"api": {"image": "api:1", "resources": {"limits": {"memory": "1Gi"}}}}),
        ("processor", {"processor": {"image": "processor:2", "concurrency": 8}}),
        ("processor", {"processor": {"image": "processor:1", "concurrency": 9}}),
        ("processor", {"processor": {"image": "processor:1", "env": {"FRAUD_THRESHOLD": "80"}}}),
    ],
)
def test_a_change_to_the_template_changes_the_revision(
    component: rollout_spec.Component, change: dict[str, Any]
) -> None:
    before = builders.template_revision(builders.pod_template(OWNER, make_spec(), component))
    after = builders.pod_template(OWNER, make_spec(**change), component)
    assert builders.template_revision(after) != before


@pytest.mark.parametrize("component", COMPONENTS)
def test_replicas_a_canary_concurrency_and_the_stamp_leave_the_revision_alone(
    component: rollout_spec.Component,
) -> None:
    template = builders.pod_template(OWNER, make_spec(), component)
    revision = builders.template_revision(template)
    concurrency = 2 if component == "processor" else None
    stable = builders.build_deployment(OWNER, component, template)
    canary = builders.build_canary_deployment(
        OWNER, component, template, replicas=3, concurrency=concurrency
    )
    for deployment, track in ((stable, "stable"), (canary, "canary")):
        assert pod_labels(deployment)[builders.VERSION_LABEL] == revision
        assert pod_labels(deployment)[rollout_spec.TRACK_LABEL] == track
        assert env_of(deployment)["APP_VERSION"] == revision
        assert env_of(deployment)["ROLLOUT_TRACK"] == track
        assert builders.running_revision(deployment) == revision
    # Stamping a stamped template again does not stack the variables.
    restamped = builders.stamp(stable["spec"]["template"], track="canary")
    names = [e["name"] for e in restamped["spec"]["containers"][0]["env"]]
    assert names.count("APP_VERSION") == names.count("ROLLOUT_TRACK") == 1


def test_the_stable_deployments_are_what_the_operator_applied_before_plus_the_release() -> None:
    spec = make_spec()
    children = builders.build_children(OWNER, spec)
    deployments = [c for c in children if c["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == ["shop-api", "shop-processor"]
    for deployment, component in zip(deployments, COMPONENTS[::-1], strict=True):
        assert "replicas" not in deployment["spec"]
        # The selector of every Deployment created before canaries: immutable, so unchanged.
        assert deployment["spec"]["selector"]["matchLabels"] == builders.selector_labels(
            OWNER, component
        )
        assert env_of(deployment)["ROLLOUT_TRACK"] == "stable"
    assert not [c for c in children if c["metadata"]["name"].endswith("-canary")]


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_canary_runs_the_plan_s_replicas_beside_the_stable_owned_by_the_pipeline(
    component: rollout_spec.Component,
) -> None:
    spec = make_spec()
    template = builders.pod_template(OWNER, spec, component)
    concurrency = 3 if component == "processor" else None
    canary = builders.build_canary_deployment(
        OWNER, component, template, replicas=2, concurrency=concurrency
    )
    assert canary["metadata"]["name"] == f"shop-{component}-canary"
    assert canary["metadata"]["namespace"] == "team-a"
    assert canary["metadata"]["ownerReferences"] == [OWNER.reference()]
    assert canary["spec"]["replicas"] == 2
    assert builders.TEMPLATE_ANNOTATION not in canary["metadata"].get("annotations", {})
    stable = builders.build_deployment(OWNER, component, template)
    # Same pods but for the release labels and variables (and the canary's concurrency).
    strip = {"APP_VERSION", "ROLLOUT_TRACK", "CONCURRENCY"}
    canary_pod, stable_pod = canary["spec"]["template"], stable["spec"]["template"]
    for pod in (canary_pod, stable_pod):
        (container,) = pod["spec"]["containers"]
        container["env"] = [e for e in container["env"] if e["name"] not in strip]
        pod["metadata"]["labels"].pop("track")
    assert canary_pod == stable_pod


def test_the_canary_processor_gets_the_plan_s_concurrency_the_stable_the_spec_s() -> None:
    spec = make_spec()  # concurrency 8
    template = builders.pod_template(OWNER, spec, "processor")
    canary = builders.build_canary_deployment(
        OWNER, "processor", template, replicas=1, concurrency=2
    )
    assert env_of(canary)["CONCURRENCY"] == "2"
    assert env_of(builders.build_processor_deployment(OWNER, spec))["CONCURRENCY"] == "8"
    with pytest.raises(ValueError, match="receive concurrency"):
        builders.build_canary_deployment(
            OWNER, "api", builders.pod_template(OWNER, spec, "api"), replicas=1, concurrency=2
        )


def test_the_canary_selects_only_its_pods_and_services_and_pdbs_select_both() -> None:
    spec = make_spec()
    children = {(c["kind"], c["metadata"]["name"]): c for c in builders.build_children(OWNER, spec)}
    for component in COMPONENTS:
        template = builders.pod_template(OWNER, spec, component)
        stable = builders.build_deployment(OWNER, component, template)
        canary = builders.build_canary_deployment(OWNER, component, template, replicas=1)
        stable_selector = stable["spec"]["selector"]["matchLabels"]
        canary_selector = canary["spec"]["selector"]["matchLabels"]
        assert selects(stable_selector, pod_labels(stable))
        assert selects(canary_selector, pod_labels(canary))
        assert not selects(canary_selector, pod_labels(stable))
        name = f"shop-{component}"
        pdb = children[("PodDisruptionBudget", name)]["spec"]["selector"]["matchLabels"]
        service_name = name if component == "api" else f"{name}-metrics"
        service = children[("Service", service_name)]["spec"]["selector"]
        for deployment in (stable, canary):
            assert selects(pdb, pod_labels(deployment))
            assert selects(service, pod_labels(deployment))
    hpa = children[("HorizontalPodAutoscaler", "shop-api")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shop-api"


def test_a_stable_deployment_records_its_template_and_runs_it_during_a_rollout() -> None:
    old_spec, new_spec = make_spec(), make_spec(api={"image": "api:2"})
    old = builders.api_pod_template(OWNER, old_spec)
    new = builders.api_pod_template(OWNER, new_spec)
    live = json.loads(json.dumps(builders.build_deployment(OWNER, "api", old)))
    assert builders.recorded_template(live) == old
    old_revision = builders.template_revision(old)
    # A rollout runs: the spec asks for `new`, the plan keeps `old` on the stable side.
    kept = builders.stable_template(new, stable_revision=old_revision, live=live)
    assert kept == old
    assert builders.build_deployment(OWNER, "api", kept) == live
    # Promoted, or settled on the spec's revision: the spec's template.
    promoted = builders.stable_template(new, stable_revision=old_revision, live=live, promote=True)
    assert promoted == new
    new_revision = builders.template_revision(new)
    assert builders.stable_template(new, stable_revision=new_revision, live=live) == new


def test_a_deployment_from_before_revisions_has_none_and_no_recorded_template() -> None:
    legacy = {
        "metadata": {"name": "shop-api"},
        "spec": {
            "selector": {"matchLabels": builders.selector_labels(OWNER, "api")},
            "template": {"metadata": {"labels": builders.labels(OWNER, "api")}},
        },
    }
    assert builders.running_revision(legacy) is None
    assert builders.recorded_template(legacy) is None
    assert builders.running_revision(None) is None
    new = builders.api_pod_template(OWNER, make_spec())
    assert builders.stable_template(new, stable_revision="0123456789", live=legacy) == new


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_stable_deployment_of_a_plan_stays_at_its_revision_until_promoted(
    component: rollout_spec.Component,
) -> None:
    old_spec = make_spec()
    new_spec = make_spec(**{component: {"image": f"{component}:2"}})
    live = json.loads(
        json.dumps(
            builders.build_stable_deployment(
                OWNER, old_spec, component, stable_revision="none", live=None
            )
        )
    )
    old_revision = builders.running_revision(live)
    assert old_revision is not None
    during = builders.build_stable_deployment(
        OWNER, new_spec, component, stable_revision=old_revision, live=live
    )
    assert during == live
    promoted = builders.build_stable_deployment(
        OWNER, new_spec, component, stable_revision=old_revision, live=live, promote=True
    )
    assert promoted == builders.build_deployment(
        OWNER, component, builders.pod_template(OWNER, new_spec, component)
    )
    assert builders.running_revision(promoted) != old_revision
