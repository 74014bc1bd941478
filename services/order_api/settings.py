"""API configuration, from the environment (pydantic-settings).

Everything a deployment could get dangerously wrong is refused here, so `python -m order_api`
stops at start with a message naming the variable instead of serving with a weak key.
"""

from __future__ import annotations

import functools
import urllib.parse
from typing import Annotated, Literal

import pydantic

from order_common import settings as common_settings

MIN_SECRET_BYTES = 32
"""Shortest HMAC key accepted (RFC 7518 3.2: at least the hash's size for HS256)."""

DEFAULT_KEY_ID = "1"


def _long_enough(secret: pydantic.SecretStr) -> pydantic.SecretStr:
    length = len(secret.get_secret_value().encode())
    if length < MIN_SECRET_BYTES:
        raise ValueError(
            f"must be at least {MIN_SECRET_BYTES} bytes, got {length};"
            " generate one with `openssl rand -hex 32`"
        )
    return secret


HmacSecret = Annotated[pydantic.SecretStr, pydantic.AfterValidator(_long_enough)]
"""A symmetric key: at least MIN_SECRET_BYTES."""

KeyId = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
"""A key id (`kid`): names one key of a key ring, carried in what the key signed."""


class ApiSettings(common_settings.AwsSettings, common_settings.ReleaseSettings):
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    """HS256 signs with `jwt_secret`; RS256 signs with `jwt_private_key` and verifies with
    `jwt_public_key`."""

    jwt_secret: HmacSecret | None = None
    jwt_private_key: pydantic.SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_key_id: KeyId = DEFAULT_KEY_ID
    """`kid` of the current JWT key, written into every token's header."""

    jwt_retired_keys: dict[KeyId, pydantic.SecretStr] = {}
    """kid -> a previous JWT key that still verifies tokens (HS256: its secret, RS256: its
    public key), as JSON. Tokens live `token_ttl_seconds`: drop a key that much after it
    stopped signing."""

    jwt_issuer: str = "order-pipeline"
    jwt_audience: str = "order-pipeline-api"
    token_ttl_seconds: int = pydantic.Field(default=3600, ge=60, le=86400)

    api_clients: dict[str, str] = {}
    """client_id -> hashed secret, as JSON (`python -m order_api.security hash` prints one:
    argon2id; older `pbkdf2_sha256$...` hashes still verify). Empty (the default) means no
    client can log in: there are no default credentials."""

    token_hash_concurrency: int = pydantic.Field(default=2, ge=1, le=64)
    """Client secrets verified at once per process (each takes ~19 MiB and one core for
    ~40 ms, in a worker thread); further token requests wait their turn."""

    token_hash_queue: int = pydantic.Field(default=16, ge=0)
    """Token requests that may wait for a hashing slot per process; more answer 503 with
    Retry-After, so a flood of them cannot pile up unbounded latency and memory."""

    token_failure_window_seconds: int = pydantic.Field(default=300, ge=10)
    """Fixed window over which failed token requests are counted, by all replicas together
    (in the idempotency table)."""

    token_failures_per_client: int = pydantic.Field(default=10, ge=1)
    """Failed token requests for one client id within a window before that id answers 429
    (even with the right secret) until the window ends."""

    token_failures_per_source: int = pydantic.Field(default=30, ge=1)
    """Failed token requests from one source address within a window before it answers 429.
    The address is the peer's, or X-Forwarded-For's from the proxies in uvicorn's
    FORWARDED_ALLOW_IPS."""

    signing_secret: HmacSecret
    """Key for status-URL signatures and order-id ownership tags; required, no default."""

    signing_key_id: KeyId = DEFAULT_KEY_ID
    """`kid` of `signing_secret`, carried in every status URL."""

    signing_retired_secrets: dict[KeyId, HmacSecret] = {}
    """kid -> a previous signing secret that still verifies status URLs and order-id tags, as
    JSON. Keep one as long as its status URLs (`status_url_ttl_seconds`) and the order ids it
    tagged are in use."""

    status_url_ttl_seconds: int = pydantic.Field(default=7 * 86400, ge=60)
    public_base_url: str | None = None
    """Base of the status URLs handed out (scheme, host, optional path), e.g.
    `https://orders.example.com`: required, the API never builds them from a request's Host
    header. The operator sets it from the OrderPipeline; local runs use their own address."""

    status_read_cache_seconds: float = pydantic.Field(default=1.0, ge=0)
    """How long a signed status URL's read of an order is reused, so a URL polled in a loop
    costs at most one table read per order per period (0: no reuse)."""

    readiness_cache_seconds: float = pydantic.Field(default=1.0, ge=0)
    """How long /readyz reuses its verdict, so probing it in a loop cannot hammer SQS and
    DynamoDB (0: check every time)."""

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

    @pydantic.field_validator("jwt_retired_keys")
    @classmethod
    def _retired_hmac_keys_long_enough(
        cls, keys: dict[str, pydantic.SecretStr], info: pydantic.ValidationInfo
    ) -> dict[str, pydantic.SecretStr]:
        if info.data.get("jwt_algorithm") == "HS256":
            for key in keys.values():
                _long_enough(key)
        return keys

    @pydantic.field_validator("public_base_url")
    @classmethod
    def _an_absolute_http_base(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an absolute http(s) URL, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError("must have no query or fragment")
        return url.rstrip("/")

    @pydantic.model_validator(mode="after")
    def _keys_and_base_url_present(self) -> ApiSettings:
        if self.jwt_algorithm == "HS256" and self.jwt_secret is None:
            raise ValueError("JWT_SECRET is required with JWT_ALGORITHM=HS256")
        if self.jwt_algorithm == "RS256" and (
            self.jwt_private_key is None or self.jwt_public_key is None
        ):
            raise ValueError("JWT_PRIVATE_KEY and JWT_PUBLIC_KEY are required with RS256")
        if self.jwt_key_id in self.jwt_retired_keys:
            raise ValueError(f"JWT_RETIRED_KEYS reuses the current JWT_KEY_ID {self.jwt_key_id}")
        if self.signing_key_id in self.signing_retired_secrets:
            raise ValueError(
                f"SIGNING_RETIRED_SECRETS reuses the current SIGNING_KEY_ID {self.signing_key_id}"
            )
        if self.public_base_url is None:
            raise ValueError(
                "PUBLIC_BASE_URL is required: the base of the status URLs clients follow"
                " (e.g. https://orders.example.com); the API never takes it from a request's"
                " Host header"
            )
        return self


def describe(error: pydantic.ValidationError) -> str:
    """The configuration errors, one per line, named by environment variable."""
    lines = []
    for detail in error.errors():
        variable = "_".join(str(part) for part in detail["loc"][:1]).upper()
        message = detail["msg"].removeprefix("Value error, ")
        lines.append(f"{variable}: {message}" if variable else message)
    return "\n".join(lines)


@functools.cache
def get_settings() -> ApiSettings:
    return ApiSettings()  # type: ignore[call-arg,unused-ignore]  # required fields come from env
