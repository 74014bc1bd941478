"""The operator's Prometheus metrics."""

from __future__ import annotations

import prometheus_client

RECONCILES = prometheus_client.Counter(
    "orderpipeline_reconciles_total",
    "Reconcile passes by trigger and result",
    ["trigger", "result"],
)
RECONCILE_ERRORS = prometheus_client.Counter(
    "orderpipeline_reconcile_errors_total", "Reconcile passes that raised, by error type", ["error"]
)
RECONCILE_DURATION = prometheus_client.Histogram(
    "orderpipeline_reconcile_duration_seconds",
    "Duration of one reconcile pass",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCALING_DECISIONS = prometheus_client.Counter(
    "orderpipeline_scaling_decisions_total", "Processor replica changes", ["direction"]
)
# Both directions from the start: a series born at its first change would hide it from rate().
for _direction in ("ScaledUp", "ScaledDown"):  # the Event reasons decide.py posts
    SCALING_DECISIONS.labels(direction=_direction)
PIPELINES_READY = prometheus_client.Gauge(
    "orderpipeline_ready", "1 when the OrderPipeline is Ready", ["namespace", "name"]
)
