"""Prometheus metrics of the API."""

from __future__ import annotations

import functools

import prometheus_client

ORDERS_ACCEPTED = prometheus_client.Counter(
    "orders_accepted_total", "Orders acknowledged by the queue and answered 202"
)
ORDERS_REFUSED = prometheus_client.Counter(
    "orders_refused_total", "Orders not accepted, by reason", ["reason"]
)
REFUSAL_REASONS = ("queue_unavailable", "queue_uncertain")
# Each reason from the start: a series born at its first refusal would hide it from rate().
for _reason in REFUSAL_REASONS:
    ORDERS_REFUSED.labels(_reason)
SEND_BATCH_SIZE = prometheus_client.Histogram(
    "queue_send_batch_size",
    "Entries per SendMessageBatch call",
    buckets=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
)
RATE_LIMIT_WRITES = prometheus_client.Counter(
    "rate_limit_window_writes_total",
    "UpdateItem calls on shared counting windows, by limit (rate-limit: a client's requests;"
    " token-failures: failed token requests) and outcome (taken; short: fewer left than asked;"
    " given_back: an attempt that did not count)",
    ["limit", "outcome"],
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


@functools.lru_cache(maxsize=256)
def http_series(
    route: str, method: str, status: str
) -> tuple[prometheus_client.Counter, prometheus_client.Histogram]:
    """The request counter and duration histogram of one route, method and status.

    Looking a labelled series up through `labels()` costs a few µs per call (argument checks,
    a lock); every request records two, so they are kept here.
    """
    return HTTP_REQUESTS.labels(route, method, status), HTTP_DURATION.labels(route, method)
