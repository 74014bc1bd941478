"""The pipeline's storage, defined once: its tables and the defaults of its queues.

The services address the tables by these names; the operator and the local provisioning create
them, and the queues, from these shapes and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    suffix: str
    """The table's name after the pipeline's table prefix."""
    key: str
    """The string hash key; no table has a sort key."""
    ttl_attribute: str | None = None
    """The epoch-seconds attribute DynamoDB's TTL deletes expired items by."""

    def name(self, prefix: str) -> str:
        return f"{prefix}{self.suffix}"


ORDERS = Table("orders", key="order_id")
CATALOG = Table("catalog", key="sku")
IDEMPOTENCY = Table("idempotency", key="key", ttl_attribute="expires_at")
VELOCITY = Table("velocity", key="customer_id", ttl_attribute="expires_at")
"""Keyed by `<client_id>#<customer_id>`: customers are counted per client. The attribute keeps
its name so that tables created before keep working (their old items expire within minutes)."""
PAYMENTS = Table("payments", key="order_id")
"""The simulated gateway's ledger (a real gateway keeps its own)."""

TABLES = (ORDERS, CATALOG, IDEMPOTENCY, VELOCITY, PAYMENTS)


def dlq_name(queue_name: str) -> str:
    return f"{queue_name}-dlq"


@dataclass(frozen=True)
class QueueConfig:
    """How the orders queue and its DLQ are set up; the defaults are the project's."""

    visibility_timeout_seconds: int = 30
    max_receive_count: int = 3
    """Receives before the redrive policy moves a message to the DLQ."""
    retention_seconds: int = 4 * 86_400  # SQS's own default
    dlq_retention_seconds: int = 14 * 86_400  # SQS's maximum: time to look at what failed


QUEUE_DEFAULTS = QueueConfig()
