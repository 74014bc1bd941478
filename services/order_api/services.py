"""The long-lived collaborators of the API, created once in the lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from order_api import batcher as batching
from order_api import metrics, ratelimit, security, stores
from order_api import settings as settings_module
from order_common import aws

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


SQS_DEFAULT_RETENTION_SECONDS = 4 * 86400


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
class ApiServices:
    settings: settings_module.ApiSettings
    sqs: SQSClient
    sqs_hot: aws.SqsHotPath
    queue: QueueLocator
    batcher: batching.SendBatcher | None
    orders: stores.OrderReader
    idempotency: stores.IdempotencyStore
    tokens: security.TokenService
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
