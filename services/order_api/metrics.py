"""Prometheus metrics of the API."""

from __future__ import annotations

import prometheus_client

ORDERS_ACCEPTED = prometheus_client.Counter(
    "orders_accepted_total", "Orders acknowledged by the queue and answered 202"
)
ORDERS_REFUSED = prometheus_client.Counter(
    "orders_refused_total", "Orders not accepted, by reason", ["reason"]
)
SEND_BATCH_SIZE = prometheus_client.Histogram(
    "queue_send_batch_size",
    "Entries per SendMessageBatch call",
    buckets=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
)
HTTP_REQUESTS = prometheus_client.Counter(
    "http_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
HTTP_DURATION = prometheus_client.Histogram(
    "http_request_duration_seconds",
    "HTTP request duration by route and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
