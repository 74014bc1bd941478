"""POST /v1/auth/token: client credentials for a signed access token."""

from __future__ import annotations

import fastapi

from order_api import deps, problems, schemas, security

router = fastapi.APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=schemas.TokenResponse,
    responses={
        400: {"description": "The body is not valid JSON"},
        401: {"description": "Unknown client or wrong secret"},
        413: {"description": "The body is larger than the configured limit"},
        422: {"description": "Invalid body"},
    },
)
async def issue_token(body: schemas.TokenRequest, services: deps.Services) -> schemas.TokenResponse:
    hashed = services.settings.api_clients.get(body.client_id)
    if hashed is None or not security.verify_client_secret(body.client_secret, hashed):
        raise problems.ProblemError(401, "unknown client or wrong secret")
    return schemas.TokenResponse(
        access_token=services.tokens.issue(body.client_id),
        expires_in=services.settings.token_ttl_seconds,
    )
