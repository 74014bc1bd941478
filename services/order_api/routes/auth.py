"""POST /v1/auth/token: client credentials for a signed access token."""

from __future__ import annotations

import math

import fastapi

from order_api import credentials, deps, problems, schemas, stores

router = fastapi.APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=schemas.TokenResponse,
    responses={
        400: {"description": "The body is not valid JSON"},
        401: {"description": "Unknown client or wrong secret"},
        413: {"description": "The body is larger than the configured limit"},
        422: {"description": "Invalid body"},
        429: {"description": "Too many failed attempts for this client or from this address"},
        503: {"description": "Too many token requests waiting, or failures cannot be counted"},
    },
)
async def issue_token(
    body: schemas.TokenRequest, request: fastapi.Request, services: deps.Services
) -> schemas.TokenResponse:
    source = request.client.host if request.client else "unknown"
    try:
        await services.credentials.check(body.client_id, body.client_secret, source=source)
    except credentials.TooManyFailuresError as exc:
        raise problems.ProblemError(
            429,
            "too many failed attempts for this client or from this address; retry later",
            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
        ) from exc
    except credentials.HashingBusyError as exc:
        raise problems.ProblemError(
            503, "too many token requests are waiting; retry shortly", headers={"Retry-After": "1"}
        ) from exc
    except stores.StoreUnavailableError as exc:
        raise problems.ProblemError(
            503,
            "failed attempts cannot be counted (their table is unavailable); retry later",
            headers={"Retry-After": str(services.settings.retry_after_seconds)},
        ) from exc
    except credentials.WrongCredentialsError as exc:
        raise problems.ProblemError(401, "unknown client or wrong secret") from exc
    return schemas.TokenResponse(
        access_token=services.tokens.issue(body.client_id),
        expires_in=services.settings.token_ttl_seconds,
    )
