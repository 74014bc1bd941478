"""FastAPI dependencies, as `Annotated` aliases used by the routers."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi

from order_api import problems, ratelimit, security, stores
from order_api import services as services_module


async def get_services(request: fastapi.Request) -> services_module.ApiServices:
    return services_of(request)


Services = Annotated[services_module.ApiServices, fastapi.Depends(get_services)]


def _bearer_token(request: fastapi.Request) -> str | None:
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


async def _authenticate(request: fastapi.Request) -> str | None:
    """The client id of a valid bearer token (rate-limited), or None when none was sent."""
    token = _bearer_token(request)
    if token is None:
        return None
    services = services_of(request)
    try:
        client_id = services.tokens.verify(token)
    except security.InvalidTokenError as exc:
        raise problems.ProblemError(
            401, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from exc
    try:
        wait = await services.rate_limiter.acquire(client_id)
    except stores.StoreUnavailableError as exc:
        # Unchecked is not an option: the limit would be gone for everyone.
        raise problems.ProblemError(
            503,
            "the rate limit cannot be checked (its table is unavailable): nothing was accepted,"
            " retry later",
            headers={"Retry-After": str(services.settings.retry_after_seconds)},
        ) from exc
    if wait > 0:
        raise problems.ProblemError(
            429,
            f"rate limit of {services.settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": ratelimit.retry_after_header(wait)},
        )
    return client_id


# Dependencies are `async def` so FastAPI runs them on the event loop, not in a thread pool.
async def optional_client(request: fastapi.Request) -> str | None:
    return await _authenticate(request)


async def required_client(request: fastapi.Request) -> str:
    return await authenticated_client(request)


async def authenticated_client(request: fastapi.Request) -> str:
    """The client id of the request's valid bearer token; 401 without one, 429 over the limit,
    503 when the limit cannot be checked.

    Plain coroutine for routes that skip dependency solving on the hot path.
    """
    client_id = await _authenticate(request)
    if client_id is None:
        raise problems.ProblemError(
            401,
            "this endpoint needs a bearer token from POST /v1/auth/token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return client_id


def services_of(request: fastapi.Request) -> services_module.ApiServices:
    services: services_module.ApiServices = request.app.state.services
    return services


OptionalClient = Annotated[str | None, fastapi.Depends(optional_client)]
Client = Annotated[str, fastapi.Depends(required_client)]

BEARER_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, garbled or expired bearer token"},
    429: {"description": "Rate limit exceeded"},
}
"""The errors of a route that authenticates a bearer token, for its `responses=`."""
