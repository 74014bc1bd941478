"""API configuration, from the environment (pydantic-settings)."""

from __future__ import annotations

import functools
from typing import Literal

import pydantic

from order_common import settings as common_settings


class ApiSettings(common_settings.AwsSettings):
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    """HS256 signs with `jwt_secret`; RS256 signs with `jwt_private_key` and verifies with
    `jwt_public_key`."""

    jwt_secret: pydantic.SecretStr | None = None
    jwt_private_key: pydantic.SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str = "order-pipeline"
    jwt_audience: str = "order-pipeline-api"
    token_ttl_seconds: int = pydantic.Field(default=3600, ge=60, le=86400)

    api_clients: dict[str, str] = {}
    """client_id -> hashed secret (`pbkdf2_sha256$<iterations>$<salt>$<hash>`), as JSON.
    Empty (the default) means no client can log in: there are no default credentials."""

    signing_secret: pydantic.SecretStr
    """Key for status-URL signatures and order-id ownership tags; required, no default."""

    status_url_ttl_seconds: int = pydantic.Field(default=7 * 86400, ge=60)
    public_base_url: str | None = None
    """Base of the status URLs handed out; None uses the request's own base URL."""

    rate_limit_per_minute: int = pydantic.Field(default=100, ge=1)
    """Authenticated requests per client per minute (a fixed window, on the minute), shared by
    every API replica and never exceeded: the count is kept in the idempotency table. A client
    over it gets 429 with Retry-After (the window's end); if the table cannot be reached, 503."""

    idempotency_ttl_seconds: int = pydantic.Field(default=86400, ge=60)
    """How long an Idempotency-Key is remembered (and replayed)."""

    idempotency_in_progress_seconds: int = pydantic.Field(default=30, ge=1)
    """After this, a first request that never finished no longer blocks its key."""

    batch_max_wait_ms: float = pydantic.Field(default=5.0, ge=0)
    """How long the send batcher waits to fill a SendMessageBatch of 10."""

    send_timeout_seconds: float = pydantic.Field(default=5.0, gt=0)
    """Longest a request waits for the queue's acknowledgement before answering 503."""

    retry_after_seconds: int = 1
    """Poll interval suggested to clients in Retry-After on 202, and on 503."""

    max_body_bytes: int = 64 * 1024


@functools.cache
def get_settings() -> ApiSettings:
    return ApiSettings()  # type: ignore[call-arg,unused-ignore]  # required fields come from env
