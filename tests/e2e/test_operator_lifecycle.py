"""The OrderPipeline operator end to end: real control plane, real local engines, the operator
as a subprocess with only its own ServiceAccount's permissions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from order_devtools import engines, provision

from .k8s_helpers import wait_for
from .operator_harness import (
    OperatorProcess,
    Pipelines,
    condition,
    has_event,
)

pytestmark = pytest.mark.e2e


def running_pods(api: client.ApiClient, namespace: str, component: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/component={component}"
    )
    return [
        pod
        for pod in pods.items
        if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None
    ]


def queue_url(sqs: Any, name: str) -> str | None:
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        return None


def send_messages(sqs: Any, url: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [
            {"Id": str(index), "MessageBody": json.dumps({"n": start + index})}
            for index in range(min(10, count - start))
        ]
        result = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not result.get("Failed")


def drain(sqs: Any, url: str) -> int:
    drained = 0
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return drained
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(messages)
            ],
        )
        drained += len(messages)


def test_new_pipeline_becomes_ready_with_every_child_present_and_correct(
    pipelines: Pipelines, k8s_api: client.ApiClient, local_engines: engines.Engines
) -> None:
    created = pipelines.create("shop")
    body = pipelines.wait_ready("shop")
    namespace = pipelines.namespace
    queue_name = created["spec"]["queue"]["name"]

    sqs = local_engines.sqs_client()
    main_url, dlq_url = queue_url(sqs, queue_name), queue_url(sqs, f"{queue_name}-dlq")
    assert main_url is not None
    assert dlq_url is not None
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=main_url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": 4,
    }
    assert attributes["VisibilityTimeout"] == "20"
    assert body["status"]["queue"]["dlqArn"] == dlq_arn
    assert body["status"]["queue"]["url"] == main_url

    dynamodb = local_engines.dynamodb_client()
    prefix = created["spec"]["tables"]["prefix"]
    tables = set(dynamodb.list_tables()["TableNames"])
    for suffix in ("orders", "catalog", "idempotency", "velocity", "payments"):
        assert f"{prefix}{suffix}" in tables
    ttl = dynamodb.describe_time_to_live(TableName=f"{prefix}idempotency")
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"

    assert len(running_pods(k8s_api, namespace, "api")) == 2
    assert len(running_pods(k8s_api, namespace, "processor")) == 1
    uid = body["metadata"]["uid"]
    apps = client.AppsV1Api(k8s_api)
    for deployment in apps.list_namespaced_deployment(namespace).items:
        assert deployment.metadata.owner_references[0].uid == uid
        assert "order-pipeline.dev" not in json.dumps(deployment.metadata.labels or {})
    services = client.CoreV1Api(k8s_api).list_namespaced_service(namespace).items
    assert sorted(service.metadata.name for service in services) == [
        "shop-api",
        "shop-processor-metrics",
    ]
    hpa = client.AutoscalingV2Api(k8s_api).read_namespaced_horizontal_pod_autoscaler(
        "shop-api", namespace
    )
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 4)
    pdbs = client.PolicyV1Api(k8s_api).list_namespaced_pod_disruption_budget(namespace).items
    assert sorted(pdb.metadata.name for pdb in pdbs) == ["shop-api", "shop-processor"]
    for condition_type in ("QueuesReady", "TablesReady", "WorkloadsAvailable", "ScalingReady"):
        entry = condition(body, condition_type)
        assert entry is not None
        assert entry["status"] == "True"
        assert entry["observedGeneration"] == body["metadata"]["generation"]


def test_spec_change_rolls_through_to_queue_and_pods(
    pipelines: Pipelines, k8s_api: client.ApiClient, local_engines: engines.Engines
) -> None:
    created = pipelines.create("shop")
    pipelines.wait_ready("shop")
    pipelines.patch(
        "shop",
        {
            "queue": {"visibilityTimeoutSeconds": 45},
            "processor": {"image": "order-processor:v2", "concurrency": 7},
        },
    )
    body = pipelines.wait_ready("shop")
    assert body["status"]["observedGeneration"] == 2
    namespace = pipelines.namespace

    def rolled() -> bool:
        pods = running_pods(k8s_api, namespace, "processor")
        return bool(pods) and all(
            pod.spec.containers[0].image == "order-processor:v2" for pod in pods
        )

    wait_for(rolled, "processor pods on the new image")
    env = {
        entry.name: entry.value
        for entry in client.AppsV1Api(k8s_api)
        .read_namespaced_deployment("shop-processor", namespace)
        .spec.template.spec.containers[0]
        .env
    }
    assert env["CONCURRENCY"] == "7"
    sqs = local_engines.sqs_client()
    url = queue_url(sqs, created["spec"]["queue"]["name"])
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attributes["Attributes"]["VisibilityTimeout"] == "45"


def test_deleted_child_is_recreated_and_drift_is_corrected(
    pipelines: Pipelines, k8s_api: client.ApiClient
) -> None:
    pipelines.create("shop")
    pipelines.wait_ready("shop")
    namespace = pipelines.namespace
    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)
    old_uid = apps.read_namespaced_deployment("shop-processor", namespace).metadata.uid
    core.delete_namespaced_service("shop-api", namespace)
    apps.delete_namespaced_deployment("shop-processor", namespace)

    def recreated() -> bool:
        try:
            core.read_namespaced_service("shop-api", namespace)
            deployment = apps.read_namespaced_deployment("shop-processor", namespace)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return bool(deployment.metadata.uid != old_uid)

    wait_for(recreated, "the deleted Service and Deployment to come back", timeout=30)
    pipelines.wait_ready("shop")

    # Drift in an owned field is taken back on the next pass.
    autoscaling = client.AutoscalingV2Api(k8s_api)
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "shop-api", namespace, {"spec": {"maxReplicas": 9}}
    )
    wait_for(
        lambda: (
            autoscaling.read_namespaced_horizontal_pod_autoscaler(
                "shop-api", namespace
            ).spec.max_replicas
            == 4
        ),
        "the HPA's maxReplicas restored to the spec's 4",
        timeout=30,
    )


def test_backlog_scales_processor_and_draining_scales_back_after_cooldown(
    pipelines: Pipelines, k8s_api: client.ApiClient, local_engines: engines.Engines
) -> None:
    created = pipelines.create("shop")
    pipelines.wait_ready("shop")
    namespace = pipelines.namespace
    apps = client.AppsV1Api(k8s_api)
    sqs = local_engines.sqs_client()
    url = queue_url(sqs, created["spec"]["queue"]["name"])
    assert url is not None

    send_messages(sqs, url, 1000)

    def processor_replicas() -> int:
        return int(apps.read_namespaced_deployment("shop-processor", namespace).spec.replicas)

    wait_for(lambda: processor_replicas() == 10, "processor scaled to ceil(1000/100) = 10")
    wait_for(lambda: len(running_pods(k8s_api, namespace, "processor")) == 10, "10 processor pods")

    def status_reports_full_backlog() -> bool:
        # The replica count may change on a poll that saw part of the batch; a later poll
        # reports all of it.
        body = pipelines.get("shop")
        status = (body or {}).get("status") or {}
        return (status.get("queue") or {}).get("backlog") == 1000 and (
            status.get("processor") or {}
        ).get("desiredReplicas") == 10

    wait_for(status_reports_full_backlog, "status: backlog 1000, desired 10", timeout=20)
    # Sending takes a few polls, so the way up may have steps; the last one reaches 10.
    wait_for(lambda: has_event(k8s_api, namespace, "ScaledUp", "-> 10 "), "a ScaledUp Event")

    assert drain(sqs, url) == 1000
    drained_at = time.monotonic()
    wait_for(lambda: processor_replicas() == 1, "processor scaled back to 1", timeout=60)
    # The cooldown is 5 s and polling 1 s: never back before the cooldown (less a poll).
    assert time.monotonic() - drained_at >= 3
    # Events are posted asynchronously, just after the scale itself.
    wait_for(lambda: has_event(k8s_api, namespace, "ScaledDown", "-> 1 "), "a ScaledDown Event")


def test_delete_with_retain_keeps_queues_and_tables(
    pipelines: Pipelines, k8s_api: client.ApiClient, local_engines: engines.Engines
) -> None:
    created = pipelines.create("shop")
    pipelines.wait_ready("shop")
    pipelines.delete("shop")
    wait_for(lambda: pipelines.get("shop") is None, "the OrderPipeline to go away")
    sqs = local_engines.sqs_client()
    queue_name = created["spec"]["queue"]["name"]
    assert queue_url(sqs, queue_name) is not None
    assert queue_url(sqs, f"{queue_name}-dlq") is not None
    tables = local_engines.dynamodb_client().list_tables()["TableNames"]
    assert f"{created['spec']['tables']['prefix']}orders" in tables
    wait_for(lambda: has_event(k8s_api, pipelines.namespace, "Retained", "kept"), "Retained")


def test_delete_with_delete_policy_and_empty_queues_removes_them(
    pipelines: Pipelines, local_engines: engines.Engines
) -> None:
    created = pipelines.create("shop", queue={"deletionPolicy": "Delete"})
    pipelines.wait_ready("shop")
    pipelines.delete("shop")
    wait_for(lambda: pipelines.get("shop") is None, "the OrderPipeline to go away")
    sqs = local_engines.sqs_client()
    queue_name = created["spec"]["queue"]["name"]
    assert queue_url(sqs, queue_name) is None
    assert queue_url(sqs, f"{queue_name}-dlq") is None
    prefix = created["spec"]["tables"]["prefix"]
    tables = local_engines.dynamodb_client().list_tables()["TableNames"]
    assert not [table for table in tables if table.startswith(prefix)]


def test_delete_with_delete_policy_is_held_while_messages_wait_and_completes_after_drain(
    pipelines: Pipelines, local_engines: engines.Engines
) -> None:
    created = pipelines.create("shop", queue={"deletionPolicy": "Delete"})
    pipelines.wait_ready("shop")
    sqs = local_engines.sqs_client()
    queue_name = created["spec"]["queue"]["name"]
    url = queue_url(sqs, queue_name)
    assert url is not None
    send_messages(sqs, url, 3)
    pipelines.delete("shop")

    def held() -> bool:
        body = pipelines.get("shop")
        blocked = condition(body, "DeletionBlocked") if body else None
        return blocked is not None and "3 message(s)" in blocked["message"]

    wait_for(held, "a DeletionBlocked condition counting 3 messages")
    time.sleep(3)
    assert pipelines.get("shop") is not None
    assert queue_url(sqs, queue_name) is not None

    assert drain(sqs, url) == 3
    wait_for(lambda: pipelines.get("shop") is None, "deletion to complete after the drain")
    assert queue_url(sqs, queue_name) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"processor": {"image": "p", "scaling": {"minReplicas": 5, "maxReplicas": 2}}},
            "processor.scaling.minReplicas must not exceed processor.scaling.maxReplicas",
        ),
        (
            {"queue": {"retentionSeconds": 86400, "dlqRetentionSeconds": 3600}},
            "queue.dlqRetentionSeconds must be longer than queue.retentionSeconds",
        ),
        ({"queue": {"maxReceiveCount": 0}}, "should be greater than or equal to 1"),
        ({"tables": {"prefix": ""}}, "spec.tables.prefix: Invalid value"),
    ],
)
def test_invalid_spec_is_refused_by_the_apiserver_with_the_schemas_message(
    pipelines: Pipelines, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(client.ApiException) as refused:
        pipelines.create("bad", **overrides)
    assert refused.value.status == 422
    assert message in str(refused.value.body)


def test_queue_name_is_immutable(pipelines: Pipelines) -> None:
    pipelines.create("shop")
    with pytest.raises(client.ApiException) as refused:
        pipelines.patch("shop", {"queue": {"name": "renamed"}})
    assert refused.value.status == 422
    assert "queue.name is immutable" in str(refused.value.body)


def test_operator_restarted_mid_reconcile_converges_without_duplicates(
    pipelines: Pipelines,
    order_operator: OperatorProcess,
    k8s_api: client.ApiClient,
    local_engines: engines.Engines,
) -> None:
    created = pipelines.create("shop")
    sqs = local_engines.sqs_client()
    queue_name = created["spec"]["queue"]["name"]
    # Kill it as soon as the first side effect shows, i.e. mid-reconcile.
    wait_for(lambda: queue_url(sqs, f"{queue_name}-dlq") is not None, "the DLQ", timeout=30)
    order_operator.kill()
    order_operator.start()
    body = pipelines.wait_ready("shop")
    namespace = pipelines.namespace

    queues = sqs.list_queues(QueueNamePrefix=queue_name).get("QueueUrls", [])
    assert sorted(url.rsplit("/", 1)[1] for url in queues) == [queue_name, f"{queue_name}-dlq"]
    deployments = client.AppsV1Api(k8s_api).list_namespaced_deployment(namespace).items
    assert sorted(item.metadata.name for item in deployments) == ["shop-api", "shop-processor"]
    types = [entry["type"] for entry in body["status"]["conditions"]]
    assert len(types) == len(set(types))
    assert body["metadata"]["finalizers"] == ["order-pipeline.dev/finalizer"]
    assert "orderpipeline_reconciles_total" in order_operator.metrics()


def test_operator_log_lines_are_json(order_operator: OperatorProcess) -> None:
    lines = [line for line in order_operator.log_tail(50).splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict)


def test_second_pipeline_naming_a_taken_queue_gets_a_condition_not_a_crash_loop(
    pipelines: Pipelines, order_operator: OperatorProcess
) -> None:
    first = pipelines.create("first")
    pipelines.wait_ready("first")
    pipelines.create("second", queue={"name": first["spec"]["queue"]["name"]})

    def conflict_reported() -> bool:
        body = pipelines.get("second")
        queues = condition(body, "QueuesReady") if body else None
        return queues is not None and queues["reason"] == "NameConflict"

    wait_for(conflict_reported, "QueuesReady=False with reason NameConflict on the second")
    body = pipelines.get("second")
    assert body is not None
    ready = condition(body, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert "belongs to OrderPipeline" in ready["message"]
    assert pipelines.is_ready("first")
    assert order_operator.is_alive()


RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def test_development_reload_gives_admitted_reloading_workloads_and_off_takes_it_back(
    order_operator: OperatorProcess,
    k8s_api: client.ApiClient,
    local_engines: engines.Engines,
    make_namespace: Callable[..., str],
) -> None:
    """spec.development.reload on: both Deployments run from an emptyDir copy of /app with a
    reloading command, and their pods (init container included) are admitted in a namespace
    enforcing `restricted`. Off again: the operator's apply removes all of it."""
    namespace = make_namespace(RESTRICTED)
    pipelines = Pipelines(k8s_api, namespace, local_engines)
    pipelines.create("dev", development={"reload": True})
    pipelines.wait_ready("dev")
    apps, core = client.AppsV1Api(k8s_api), client.CoreV1Api(k8s_api)

    def pod_template(name: str) -> dict[str, Any]:
        deployment = apps.read_namespaced_deployment(name, namespace)
        template: dict[str, Any] = k8s_api.sanitize_for_serialization(deployment.spec.template)
        return template

    commands = {"dev-api": "uvicorn", "dev-processor": "watchfiles"}
    for name, reloader in commands.items():
        pod = pod_template(name)["spec"]
        (init,) = pod["initContainers"]
        (container,) = pod["containers"]
        assert [volume["name"] for volume in pod["volumes"]] == ["sources"]
        assert "emptyDir" in pod["volumes"][0]
        assert init["image"] == container["image"]
        assert init["volumeMounts"] == [{"name": "sources", "mountPath": "/sources"}]
        assert container["volumeMounts"] == [{"name": "sources", "mountPath": "/app"}]
        assert container["workingDir"] == "/app"
        assert container["command"][:3] == ["python", "-m", reloader]
        for each in (init, container):
            assert each["securityContext"]["readOnlyRootFilesystem"] is True

    # Admitted under `restricted`: the ReplicaSets' pods exist and run (kwok), init containers too.
    wait_for(
        lambda: (
            len(running_pods(k8s_api, namespace, "api")) == 2
            and len(running_pods(k8s_api, namespace, "processor")) == 1
        ),
        "the dev-mode pods running in the restricted namespace",
    )
    for pod in running_pods(k8s_api, namespace, "api") + running_pods(
        k8s_api, namespace, "processor"
    ):
        assert [init.name for init in pod.spec.init_containers] == ["copy-sources"]
    # The same check directly: the pod template passes admission as it is, and that means
    # something, because the same pod with an init container keeping its capabilities does not.
    template = pod_template("dev-processor")
    pod_manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "dev-mode-probe"},
        "spec": template["spec"],
    }
    core.create_namespaced_pod(namespace, pod_manifest, dry_run="All")
    del pod_manifest["spec"]["initContainers"][0]["securityContext"]["capabilities"]
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(namespace, pod_manifest, dry_run="All")
    assert refused.value.status == 403
    assert "violates PodSecurity" in str(refused.value.body)

    # Off again: the production pod spec, without the dev-mode fields.
    pipelines.patch("dev", {"development": {"reload": False}})
    pipelines.wait_ready("dev")

    def production_spec(name: str) -> bool:
        pod = pod_template(name)["spec"]
        (container,) = pod["containers"]
        return (
            "initContainers" not in pod
            and "volumes" not in pod
            and "command" not in container
            and "workingDir" not in container
            and "volumeMounts" not in container
            and "livenessProbe" in container
        )

    wait_for(lambda: all(production_spec(name) for name in commands), "dev mode removed")


def owner_tags(body: dict[str, Any]) -> dict[str, str]:
    metadata = body["metadata"]
    return {
        "order-pipeline.dev/owner": f"{metadata['namespace']}/{metadata['name']}",
        "order-pipeline.dev/owner-uid": metadata["uid"],
    }


def table_tags(dynamodb: Any, name: str) -> dict[str, str]:
    arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
    tags = dynamodb.list_tags_of_resource(ResourceArn=arn)["Tags"]
    return {tag["Key"]: tag["Value"] for tag in tags}


TABLE_SUFFIXES = ("orders", "catalog", "idempotency", "velocity", "payments")


def test_a_pipeline_in_another_namespace_naming_the_same_queue_and_tables_touches_none_of_them(
    pipelines: Pipelines,
    k8s_api: client.ApiClient,
    local_engines: engines.Engines,
    make_namespace: Callable[..., str],
) -> None:
    first = pipelines.create("shop")
    pipelines.wait_ready("shop")
    first = pipelines.get("shop") or first
    queue_name, prefix = first["spec"]["queue"]["name"], first["spec"]["tables"]["prefix"]
    tables = {f"{prefix}{suffix}" for suffix in TABLE_SUFFIXES}
    sqs, dynamodb = local_engines.sqs_client(), local_engines.dynamodb_client()
    main_url, dlq_url = queue_url(sqs, queue_name), queue_url(sqs, f"{queue_name}-dlq")
    assert main_url is not None
    assert dlq_url is not None
    send_messages(sqs, main_url, 1)  # an accepted order: it must survive the second one
    before = sqs.get_queue_attributes(QueueUrl=main_url, AttributeNames=["All"])["Attributes"]

    intruders = Pipelines(k8s_api, make_namespace(), local_engines)
    intruders.create(
        "shop",
        queue={"name": queue_name, "visibilityTimeoutSeconds": 99, "deletionPolicy": "Delete"},
        tables={"prefix": prefix},
    )

    def queue_conflict_reported() -> bool:
        body = intruders.get("shop")
        queues = condition(body, "QueuesReady") if body else None
        return queues is not None and queues["reason"] == "NameConflict"

    wait_for(queue_conflict_reported, "QueuesReady NameConflict on the second")
    time.sleep(3)  # a few more of its passes (polling every second)
    intruder = intruders.get("shop")
    assert intruder is not None
    after = sqs.get_queue_attributes(QueueUrl=main_url, AttributeNames=["All"])["Attributes"]
    assert after["VisibilityTimeout"] == before["VisibilityTimeout"] == "20"
    assert after["RedrivePolicy"] == before["RedrivePolicy"]

    intruders.delete("shop")
    wait_for(lambda: intruders.get("shop") is None, "the second OrderPipeline to go away")
    kept = sqs.get_queue_attributes(
        QueueUrl=main_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert kept["ApproximateNumberOfMessages"] == "1"
    assert queue_url(sqs, f"{queue_name}-dlq") == dlq_url
    assert tables <= set(dynamodb.list_tables()["TableNames"])
    wait_for(
        lambda: has_event(k8s_api, intruders.namespace, "NotOwned", "deleted nothing"),
        "a NotOwned Event on the second",
    )
    tables_ready = condition(intruder, "TablesReady")
    assert tables_ready is not None
    assert tables_ready["reason"] == "NameConflict"
    assert f"belongs to OrderPipeline {pipelines.namespace}/shop" in tables_ready["message"]
    # Still the first one's, tagged with its namespace/name and uid.
    for url in (main_url, dlq_url):
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == owner_tags(first)
    for table in tables:
        assert table_tags(dynamodb, table) == owner_tags(first)
    assert pipelines.is_ready("shop")


def test_an_untagged_queue_and_table_are_left_alone_until_the_spec_adopts_them(
    pipelines: Pipelines, local_engines: engines.Engines
) -> None:
    suffix = uuid.uuid4().hex[:8]
    queue_name, prefix = f"handmade-{suffix}", f"h{suffix}-"
    sqs, dynamodb = local_engines.sqs_client(), local_engines.dynamodb_client()
    url = sqs.create_queue(QueueName=queue_name, Attributes={"VisibilityTimeout": "33"})["QueueUrl"]
    provision.create_string_keyed_table(dynamodb, f"{prefix}orders", key="order_id")

    pipelines.create("shop", queue={"name": queue_name}, tables={"prefix": prefix})

    def both_conflicts_reported() -> bool:
        body = pipelines.get("shop") or {}
        found = [condition(body, kind) for kind in ("QueuesReady", "TablesReady")]
        return all(entry is not None and entry["reason"] == "NameConflict" for entry in found)

    wait_for(both_conflicts_reported, "QueuesReady and TablesReady NameConflict")
    time.sleep(2)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "33"
    assert "RedrivePolicy" not in attributes
    assert sqs.list_queue_tags(QueueUrl=url).get("Tags", {}) == {}
    assert table_tags(dynamodb, f"{prefix}orders") == {}
    # No table was created next to the one that is not ours.
    assert f"{prefix}catalog" not in dynamodb.list_tables()["TableNames"]

    pipelines.patch("shop", {"adopt": True})
    body = pipelines.wait_ready("shop")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "20"
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == owner_tags(body)
    assert table_tags(dynamodb, f"{prefix}orders") == owner_tags(body)


def endpoints_of(api: client.ApiClient, namespace: str, service: str) -> int:
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sum(len(item.endpoints or []) for item in slices.items)


HOLD = "e2e.order-pipeline.dev/hold"


def test_delete_stops_the_api_service_and_every_pod_before_removing_queues_and_tables(
    pipelines: Pipelines, k8s_api: client.ApiClient, local_engines: engines.Engines
) -> None:
    created = pipelines.create("shop", queue={"deletionPolicy": "Delete"})
    pipelines.wait_ready("shop")
    namespace = pipelines.namespace
    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)
    wait_for(lambda: endpoints_of(k8s_api, namespace, "shop-api") == 2, "2 API endpoints")
    # A processor pod that cannot finish terminating yet (as one would within its grace
    # period, finishing the messages it holds).
    (held_pod,) = running_pods(k8s_api, namespace, "processor")
    core.patch_namespaced_pod(
        held_pod.metadata.name, namespace, {"metadata": {"finalizers": [HOLD]}}
    )
    queue_name = created["spec"]["queue"]["name"]
    sqs = local_engines.sqs_client()
    try:
        pipelines.delete("shop")

        def stopping() -> bool:
            body = pipelines.get("shop")
            blocked = condition(body, "DeletionBlocked") if body else None
            return blocked is not None and blocked["reason"] == "WorkloadsStopping"

        wait_for(stopping, "DeletionBlocked WorkloadsStopping while the held pod terminates")
        service = core.read_namespaced_service("shop-api", namespace)
        assert service.spec.selector["order-pipeline.dev/serving"] == "stopped"
        wait_for(lambda: endpoints_of(k8s_api, namespace, "shop-api") == 0, "no API endpoint")
        for name in ("shop-api", "shop-processor"):
            assert apps.read_namespaced_deployment(name, namespace).spec.replicas == 0
        assert core.read_namespaced_pod(
            held_pod.metadata.name, namespace
        ).metadata.deletion_timestamp
        time.sleep(3)
        assert pipelines.get("shop") is not None
        assert queue_url(sqs, queue_name) is not None
        assert queue_url(sqs, f"{queue_name}-dlq") is not None
    finally:
        core.patch_namespaced_pod(
            held_pod.metadata.name, namespace, {"metadata": {"finalizers": None}}
        )
    wait_for(lambda: pipelines.get("shop") is None, "deletion to complete once the pod is gone")
    assert queue_url(sqs, queue_name) is None
    assert queue_url(sqs, f"{queue_name}-dlq") is None


def test_delete_reports_what_the_dlq_holds_instead_of_waiting_for_it(
    pipelines: Pipelines, k8s_api: client.ApiClient, local_engines: engines.Engines
) -> None:
    created = pipelines.create("shop", queue={"deletionPolicy": "Delete"})
    pipelines.wait_ready("shop")
    sqs = local_engines.sqs_client()
    queue_name = created["spec"]["queue"]["name"]
    dlq_url = queue_url(sqs, f"{queue_name}-dlq")
    assert dlq_url is not None
    send_messages(sqs, dlq_url, 2)

    pipelines.delete("shop")

    wait_for(lambda: pipelines.get("shop") is None, "deletion to complete despite the DLQ")
    assert queue_url(sqs, f"{queue_name}-dlq") is None
    wait_for(
        lambda: has_event(k8s_api, pipelines.namespace, "Deleted", f"2 of {queue_name}-dlq"),
        "a Deleted Event reporting the 2 messages of the DLQ",
    )


def test_delete_without_its_credentials_secret_ends_with_a_warning_and_keeps_everything(
    pipelines: Pipelines, k8s_api: client.ApiClient, local_engines: engines.Engines
) -> None:
    namespace = pipelines.namespace
    core = client.CoreV1Api(k8s_api)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="aws"),
            string_data={"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"},
        ),
    )
    created = pipelines.create(
        "shop",
        queue={"deletionPolicy": "Delete"},
        aws={"credentials": {"source": "Secret", "secretRef": {"name": "aws"}}},
    )
    pipelines.wait_ready("shop")
    core.delete_namespaced_secret("aws", namespace)

    pipelines.delete("shop")

    wait_for(lambda: pipelines.get("shop") is None, "deletion to end without the Secret")
    wait_for(
        lambda: has_event(k8s_api, namespace, "CredentialsSecretMissing", "kept queues"),
        "a CredentialsSecretMissing Warning",
    )
    assert queue_url(local_engines.sqs_client(), created["spec"]["queue"]["name"]) is not None
