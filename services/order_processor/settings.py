"""Processor configuration, from the environment (pydantic-settings)."""

from __future__ import annotations

import functools
import re

import pydantic

from order_common import settings as common_settings

SIMULATED_PAYMENTS = "simulator"
_FACTORY_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class ProcessorSettings(common_settings.AwsSettings, common_settings.ReleaseSettings):
    payment_gateway: str = pydantic.Field(default="", validate_default=True)
    """Who charges the cards: `package.module:factory` (a callable taking these settings and
    returning a `payments.PaymentGateway`), or `simulator` for local runs, which charges
    nothing. Unset: the processor refuses to start rather than guess."""

    concurrency: int = pydantic.Field(default=80, ge=1, le=1000)
    """The most messages processed at once by this process: its pollers, each with a receive
    batch of `batch_size`, grow towards it while receives come back full."""

    batch_size: int = pydantic.Field(default=10, ge=1, le=10)
    """Messages per ReceiveMessage call (SQS allows at most 10)."""

    wait_time_seconds: int = pydantic.Field(default=20, ge=0, le=20)
    """Long-poll wait of each ReceiveMessage."""

    receive_linger_ms: float = pydantic.Field(default=20.0, ge=0, le=1000)
    """After a partial batch, how long a poller waits before receiving again: the others keep
    long-polling, and under load its next batch is fuller (fewer requests per order)."""

    shutdown_grace_seconds: float = pydantic.Field(default=20.0, ge=0)
    """On SIGTERM, how long in-flight messages may finish before they are released."""

    fraud_threshold: int = pydantic.Field(default=70, ge=1, le=100)
    """Orders scoring at or above this are REJECTED."""

    velocity_window_seconds: int = pydantic.Field(default=60, ge=1)
    velocity_limit: int = pydantic.Field(default=5, ge=1)
    """More orders than this by one customer within the window add to the fraud score."""

    payment_attempts: int = pydantic.Field(default=3, ge=1, le=10)
    """In-process attempts at a payment that fails transiently, before the message is retried."""

    receives_without_redrive: int = pydantic.Field(default=5, ge=1, le=1000)
    """Receives after which an order that keeps failing ends FAILED, when the queue has no
    redrive policy (with one, the policy's maxReceiveCount decides and the DLQ keeps it)."""

    dead_letter_recheck_seconds: int = pydantic.Field(default=12 * 3600, ge=1, le=12 * 3600)
    """How long a DLQ message stays hidden once its order is recorded FAILED (it is checked
    again when it reappears; SQS allows at most 12 h)."""

    catalog_cache_seconds: float = pydantic.Field(default=5.0, ge=0)
    """How long catalog prices are reused; stock is always checked by the reservation itself."""

    queue_depth_interval_seconds: float = pydantic.Field(default=15.0, gt=0, le=300)
    """How often the queue depths (`order_queue_messages`) are read: one GetQueueAttributes
    per queue each time, whatever the traffic."""

    @pydantic.field_validator("payment_gateway")
    @classmethod
    def _names_a_gateway(cls, value: str) -> str:
        if value != SIMULATED_PAYMENTS and not _FACTORY_PATH.fullmatch(value):
            raise ValueError(
                "set PAYMENT_GATEWAY to your gateway's factory as 'package.module:factory',"
                f" or to '{SIMULATED_PAYMENTS}' for local runs (no card is charged);"
                f" got {value!r}"
            )
        return value

    metrics_port: int = pydantic.Field(default=9100, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"


@functools.cache
def get_settings() -> ProcessorSettings:
    return ProcessorSettings()
