"""kopf handlers: the only module that imports kopf.

Create/update/resume run one reconcile pass at once; a per-object daemon repeats the pass every
`processor.scaling.pollingIntervalSeconds` (sooner while something is still progressing): it
takes the scaling step and re-applies the children, so drift is corrected and a deleted child
comes back. Deletion is held by kopf's finalizer until `reconcile.finalize` says it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kubernetes import client

from order_operator import aws, conditions, decide, kube, metrics, observe, reconcile
from order_operator.v1alpha1 import spec as v1alpha1

logger = logging.getLogger(__name__)

PREFIX = v1alpha1.GROUP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own prefixes, so another kopf operator's finalizer or state never gets confused
    # with ours.
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Watches can go idle without an error; reconnect regularly.
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 10
    # Events come from our own decisions; kopf posts only warnings and errors.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 16
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    memo.kube = kube.Kube(kube.api_client())
    memo.cache = observe.ClientCache()


def _memory(memo: kopf.Memo) -> reconcile.PipelineMemory:
    memory: reconcile.PipelineMemory = memo.setdefault("pipeline", reconcile.PipelineMemory())
    return memory


def _post(body: Mapping[str, Any], event: decide.Event) -> None:
    kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message)


def _set_ready(metadata: Mapping[str, Any], *, ready: bool) -> None:
    metrics.PIPELINES_READY.labels(namespace=metadata["namespace"], name=metadata["name"]).set(
        1 if ready else 0
    )


def _run_pass(body: Mapping[str, Any], memo: kopf.Memo, trigger: str) -> reconcile.Outcome:
    api: kube.Kube = memo.kube
    memory = _memory(memo)
    metadata = body["metadata"]
    started = time.monotonic()
    with memory.lock:
        # Read the object fresh: the status this pass merges into must be the latest one.
        latest = api.read_pipeline(metadata["namespace"], metadata["name"]) or body
        if latest.get("metadata", {}).get("deletionTimestamp"):
            return reconcile.Outcome(status={}, ready=False)
        try:
            outcome = reconcile.reconcile(latest, kube=api, cache=memo.cache, memory=memory)
            api.patch_status(metadata["namespace"], metadata["name"], outcome.status)
        except Exception as error:
            metrics.RECONCILES.labels(trigger=trigger, result="error").inc()
            metrics.RECONCILE_ERRORS.labels(error=type(error).__name__).inc()
            # A pipeline whose passes fail is not known Ready: OrderPipelineNotReady sees it.
            _set_ready(metadata, ready=False)
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
    metrics.RECONCILES.labels(
        trigger=trigger, result="ready" if outcome.ready else "progressing"
    ).inc()
    _set_ready(metadata, ready=outcome.ready)
    for event in outcome.events:
        _post(latest, event)
    return outcome


def _reconcile_or_retry(body: Mapping[str, Any], memo: kopf.Memo, trigger: str) -> None:
    try:
        _run_pass(body, memo, trigger)
    except client.ApiException as error:
        if (
            error.status is not None
            and 400 <= error.status < 500
            and error.status
            not in (
                404,
                409,
                429,
            )
        ):
            raise kopf.PermanentError(f"Kubernetes refused a child: {error.reason}") from error
        raise kopf.TemporaryError(f"Kubernetes API: {error.reason}", delay=5) from error


@kopf.on.create(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def on_create(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _reconcile_or_retry(body, memo, "create")


@kopf.on.update(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, field="spec")
def on_update(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _reconcile_or_retry(body, memo, "update")


@kopf.on.resume(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def on_resume(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _reconcile_or_retry(body, memo, "resume")


@kopf.daemon(
    v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, cancellation_timeout=10, initial_delay=1
)
async def poll(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Scaling and drift correction every polling interval, for as long as the object lives.

    Async on purpose: a sync daemon would hold one executor thread for the object's whole life,
    so a few more pipelines than threads would starve every handler. Only the pass itself
    runs in a thread.
    """
    while not stopped:
        delay: float
        try:
            spec = v1alpha1.OrderPipelineSpec.model_validate(body["spec"])
            delay = float(spec.processor.scaling.polling_interval_seconds)
            outcome = await asyncio.to_thread(_run_pass, body, memo, "poll")
            if outcome.retry_after is not None:
                delay = min(delay, outcome.retry_after)
        except Exception:
            metadata = body["metadata"]
            logger.exception(
                "poll of %s/%s failed", metadata.get("namespace"), metadata.get("name")
            )
            delay = 5.0
        await asyncio.sleep(delay)


@kopf.on.delete(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    api: kube.Kube = memo.kube
    metadata = body["metadata"]
    try:
        result = reconcile.finalize(body, kube=api, cache=memo.cache)
    except client.ApiException as error:
        raise kopf.TemporaryError(f"Kubernetes API: {error.reason}", delay=5) from error
    except aws.Transient as error:
        raise kopf.TemporaryError(str(error), delay=5) from error
    _post(body, result.event)
    if result.done:
        # Gone: no series left behind to alert on.
        with contextlib.suppress(KeyError):
            metrics.PIPELINES_READY.remove(metadata["namespace"], metadata["name"])
        return
    held = result.blocked or conditions.deletion_blocked(result.event.reason, result.event.message)
    spec = v1alpha1.OrderPipelineSpec.model_validate(body["spec"])
    status = body.get("status") or {}
    blocked = conditions.merge(
        status.get("conditions") or [],
        [held],
        generation=int(metadata.get("generation", 0)),
        now=reconcile.now_iso(),
    )
    api.patch_status(metadata["namespace"], metadata["name"], {"conditions": blocked})
    raise kopf.TemporaryError(held.message, delay=spec.processor.scaling.polling_interval_seconds)


def run(
    *,
    namespaces: list[str],
    liveness_endpoint: str,
    stop_flag: threading.Event | None = None,
) -> None:
    """Run the operator in the foreground (blocks until stopped)."""
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=False)
    kopf.run(
        # kopf names itself after the login user otherwise, and the image's numeric user has no
        # passwd entry: getpass would fail at start. In a pod the hostname is the pod's name.
        identity=socket.gethostname(),  # type: ignore[arg-type]  # kopf's unexported NewType of str
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness_endpoint,
        stop_flag=stop_flag,
    )
