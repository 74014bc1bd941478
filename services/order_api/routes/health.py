"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import fastapi

from order_api import deps, problems
from order_common import exposition

router = fastapi.APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "The queue or the order store is unreachable (see checks)"}},
)
async def readyz(services: deps.Services) -> dict[str, str]:
    verdict = await services.readiness.verdict()
    failing = [name for name, state in verdict.items() if state != "ok"]
    if failing:
        raise problems.ProblemError(
            503,
            "not ready: " + ", ".join(f"{name} unreachable" for name in failing),
            headers={"Retry-After": str(services.settings.retry_after_seconds)},
            extra={"checks": verdict},
        )
    return {"status": "ready", **verdict}


@router.get("/metrics", include_in_schema=False)
async def metrics(services: deps.Services) -> fastapi.Response:
    settings = services.settings
    return fastapi.Response(
        exposition.render(version=settings.app_version, track=settings.rollout_track),
        media_type=exposition.CONTENT_TYPE,
    )
