"""The long-lived collaborators of the API, created once in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import async_lru

from order_api import batcher as batching
from order_api import credentials as credentials_module
from order_api import metrics, ratelimit, security, stores
from order_api import settings as settings_module
from order_common import aws, records

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


log = logging.getLogger(__name__)

SQS_DEFAULT_RETENTION_SECONDS = 4 * 86400
_READINESS_TIMEOUT_SECONDS = 2.0
_STATUS_READS_KEPT = 10_000


@dataclass
class QueueLocator:
    """Resolves the queue URL on first use, so the API starts (not ready) while SQS is down."""

    client: SQSClient
    queue_name: str
    _url: str | None = None
    _lock: asyncio.Lock | None = None
    _retention_seconds: int | None = None

    async def url(self) -> str:
        if self._url is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._url is None:
                    try:
                        response = await self.client.get_queue_url(QueueName=self.queue_name)
                    except Exception as exc:  # unreachable or missing: not accepting
                        raise batching.QueueUnavailableError(str(exc)) from exc
                    self._url = response["QueueUrl"]
        return self._url

    async def retention_seconds(self) -> int | None:
        """How long the queue keeps a message (its MessageRetentionPeriod); None while the
        queue cannot be asked."""
        if self._retention_seconds is None:
            try:
                attributes = await self.client.get_queue_attributes(
                    QueueUrl=await self.url(), AttributeNames=["MessageRetentionPeriod"]
                )
                # SQS always reports it; ElasticMQ never does, and then SQS's default applies.
                reported = attributes.get("Attributes", {}).get("MessageRetentionPeriod")
                self._retention_seconds = int(reported or SQS_DEFAULT_RETENTION_SECONDS)
            except Exception:  # unknown for now; the caller says less
                return None
        return self._retention_seconds


@dataclass
class Readiness:
    """Whether the queue and the orders table answer.

    /readyz needs no credentials, so the verdict is shared: concurrent probes wait for one
    check, and its answer is reused for `reuse_seconds`, whatever the number of callers.
    """

    queue: QueueLocator
    sqs: SQSClient
    orders: stores.OrderReader
    reuse_seconds: float
    verdict: Callable[[], Awaitable[dict[str, str]]] = field(init=False)
    """check name -> "ok" or "unreachable" (why goes to the log, not to the caller)."""

    def __post_init__(self) -> None:
        self.verdict = async_lru.alru_cache(maxsize=1, ttl=self.reuse_seconds)(self._check)

    async def _check(self) -> dict[str, str]:
        checks = {"queue": self._check_queue(), "table": self.orders.ping()}
        verdict: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check, _READINESS_TIMEOUT_SECONDS)
                verdict[name] = "ok"
            except Exception as exc:  # any failure means not ready
                log.warning("not ready: %s unreachable: %s: %s", name, type(exc).__name__, exc)
                verdict[name] = "unreachable"
        return verdict

    async def _check_queue(self) -> None:
        url = await self.queue.url()
        await self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])


def shared_order_reads(
    orders: stores.OrderReader, *, reuse_seconds: float
) -> Callable[[str], Awaitable[records.OrderRecord | None]]:
    """`orders.get`, with concurrent reads of one order sharing one call and its answer
    reused for `reuse_seconds`: a signed status URL needs no token, so nothing else bounds
    how often it can make the API read the table."""

    async def read(order_id: str) -> records.OrderRecord | None:
        return await orders.get(order_id)

    return async_lru.alru_cache(maxsize=_STATUS_READS_KEPT, ttl=reuse_seconds)(read)


@dataclass
class ApiServices:
    settings: settings_module.ApiSettings
    sqs: SQSClient
    sqs_hot: aws.SqsHotPath
    queue: QueueLocator
    batcher: batching.SendBatcher | None
    orders: stores.OrderReader
    signed_order_reads: Callable[[str], Awaitable[records.OrderRecord | None]]
    """Reads for signed status URLs: see `shared_order_reads`."""
    readiness: Readiness
    idempotency: stores.IdempotencyStore
    tokens: security.TokenService
    credentials: credentials_module.CredentialChecker
    signer: security.Signer
    rate_limiter: ratelimit.RateLimiter

    async def send_batcher(self) -> batching.SendBatcher:
        if self.batcher is None:
            url = await self.queue.url()
            self.batcher = batching.SendBatcher(
                client=self.sqs_hot,
                queue_url=url,
                max_wait=self.settings.batch_max_wait_ms / 1000,
                on_batch_sent=metrics.SEND_BATCH_SIZE.observe,
            )
        return self.batcher
