"""Prometheus metrics of the processor."""

from __future__ import annotations

import prometheus_client

from order_common import contract

ORDERS_PROCESSED = prometheus_client.Counter(
    "orders_processed_total", "Orders that reached a final status, by status", ["status"]
)
# Every final status from the start: a series born at its first order would hide that order
# from rate() (Prometheus sees no increase into a series' first sample).
for _status in sorted(contract.FINAL_STATUSES):
    ORDERS_PROCESSED.labels(_status.value)
ORDERS_BY_PRODUCER = prometheus_client.Counter(
    "orders_processed_by_producer_total",
    "Orders that reached a final status, by the version of the API that queued them",
    ["producer_version", "status"],
)
# A counter of its own, not a label on orders_processed_total: that one's series all exist
# from the start, which a label whose values arrive with the messages cannot give.
MAX_PRODUCER_VERSIONS = 16
"""Distinct producer versions counted per process; any further one counts as `other`, so a
long-lived processor's series stay bounded however many releases it outlives."""
_producers: set[str] = set()


def count_by_producer(producer_version: str, status: str) -> None:
    if producer_version not in _producers:
        if len(_producers) >= MAX_PRODUCER_VERSIONS:
            producer_version = "other"
        else:
            _producers.add(producer_version)
            # Every final status from a producer's first order on: a series born at its first
            # increment hides that order from increase(), and an API canary is judged by its
            # first FAILED orders.
            for final in sorted(contract.FINAL_STATUSES):
                ORDERS_BY_PRODUCER.labels(producer_version, final.value)
    ORDERS_BY_PRODUCER.labels(producer_version, status).inc()


PROCESSING_DURATION = prometheus_client.Histogram(
    "order_processing_duration_seconds",
    "Time from receiving a message to its outcome",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END_DURATION = prometheus_client.Histogram(
    "order_end_to_end_duration_seconds",
    "Time from the API accepting an order to its final status",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
AGE_AT_RECEIVE = prometheus_client.Histogram(
    "order_message_age_at_receive_seconds",
    "Time a message waited in the queue before this receive (since it was sent)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
QUEUE_MESSAGES = prometheus_client.Gauge(
    "order_queue_messages",
    "Messages in the orders queue and its dead-letter queue, by state (visible: waiting;"
    " in_flight: received, not yet deleted; delayed), as the queue last reported them",
    ["queue", "state"],
)
RECEIVE_BATCH_SIZE = prometheus_client.Histogram(
    "queue_receive_batch_size",
    "Messages per ReceiveMessage call",
    buckets=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
)
MESSAGES_RETRIED = prometheus_client.Counter(
    "messages_retried_total", "Messages left for redelivery, by cause", ["cause"]
)
MESSAGES_DEAD_LETTERED = prometheus_client.Counter(
    "messages_dead_lettered_total", "Unparseable messages moved to the DLQ at once"
)
IN_FLIGHT = prometheus_client.Gauge("messages_in_flight", "Messages being processed now")
POLLERS = prometheus_client.Gauge(
    "processor_pollers", "Receive loops running now (more while receives come back full)"
)
LAST_POLL = prometheus_client.Gauge(
    "processor_last_poll_timestamp_seconds", "When a receive loop last completed a poll"
)
BATCH_STEP_FALLBACKS = prometheus_client.Counter(
    "batch_step_fallbacks_total",
    "Receive batches whose shared step (reservation, velocity, completion) went order by order",
    ["step"],
)
TRANSACTION_CONFLICTS = prometheus_client.Counter(
    "dynamodb_transaction_conflicts_total",
    "Transactions that collided with another on the same items and were tried again",
)
REFUNDS = prometheus_client.Counter(
    "payment_refunds_total", "Charges refunded because their order ended FAILED"
)
DEAD_LETTERS_RECORDED = prometheus_client.Counter(
    "dead_letters_recorded_total",
    "Orders found in the DLQ and recorded FAILED by the reconciler",
    ["outcome"],
)
VISIBILITY_EXTENSION_FAILURES = prometheus_client.Counter(
    "visibility_extension_failures_total",
    "Failed visibility extensions, per message (each is tried again well before it expires)",
)
