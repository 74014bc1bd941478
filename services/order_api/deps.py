"""FastAPI dependencies, as `Annotated` aliases used by the routers."""

from __future__ import annotations

import time
from typing import Annotated

import fastapi

from order_api import problems, ratelimit, security
from order_api import services as services_module


async def get_services(request: fastapi.Request) -> services_module.ApiServices:
    services: services_module.ApiServices = request.app.state.services
    return services


Services = Annotated[services_module.ApiServices, fastapi.Depends(get_services)]


async def bearer_token(request: fastapi.Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise problems.ProblemError(
            401,
            "the Authorization header must be 'Bearer <access token>'",
            headers={"WWW-Authenticate": 'Bearer error="invalid_request"'},
        )
    return token.strip()


async def optional_client(
    services: Services, token: Annotated[str | None, fastapi.Depends(bearer_token)]
) -> str | None:
    """The authenticated client id, or None when no token was sent."""
    if token is None:
        return None
    try:
        client_id = services.tokens.verify(token)
    except security.InvalidTokenError as exc:
        raise problems.ProblemError(
            401, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from exc
    wait = services.rate_limiter.acquire(client_id, now=time.monotonic())
    if wait > 0:
        raise problems.ProblemError(
            429,
            f"rate limit of {services.settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": ratelimit.retry_after_header(wait)},
        )
    return client_id


OptionalClient = Annotated[str | None, fastapi.Depends(optional_client)]


async def required_client(client_id: OptionalClient) -> str:
    if client_id is None:
        raise problems.ProblemError(
            401,
            "this endpoint needs a bearer token from POST /v1/auth/token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return client_id


Client = Annotated[str, fastapi.Depends(required_client)]
