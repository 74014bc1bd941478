"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio

import fastapi
import prometheus_client

from order_api import deps, problems
from order_api import services as services_module

router = fastapi.APIRouter(tags=["health"])

_READINESS_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "The queue or the order store is unreachable (see checks)"}},
)
async def readyz(services: deps.Services) -> dict[str, str]:
    checks = {"queue": _check_queue(services), "table": services.orders.ping()}
    failures: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, _READINESS_TIMEOUT)
        except Exception as exc:  # any failure means not ready; say which and why
            failures[name] = f"{type(exc).__name__}: {exc}"
    if failures:
        raise problems.ProblemError(
            503,
            "not ready: " + "; ".join(f"{k} unreachable ({v})" for k, v in failures.items()),
            headers={"Retry-After": str(services.settings.retry_after_seconds)},
            extra={"checks": {name: failures.get(name, "ok") for name in checks}},
        )
    return {"status": "ready", "queue": "ok", "table": "ok"}


async def _check_queue(services: services_module.ApiServices) -> None:
    url = await services.queue.url()
    await services.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])


@router.get("/metrics", include_in_schema=False)
async def metrics() -> fastapi.Response:
    return fastapi.Response(
        prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
    )
