"""The pipeline's Prometheus rules: SLO recording rules, burn-rate alerts and the alerts on
dead letters, stalls, the operator and lost scrape targets.

One source for the plain rules file and the chart's PrometheusRule (both carry the same
`groups`). Every alert links to a section of docs/runbook.md (`runbook_url`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from order_devtools.observability import slos
from order_devtools.observability.slos import BY_SCOPE

RUNBOOK = "docs/runbook.md"
"""Relative to the repository; the chart can prefix it (`monitoring.runbookBaseUrl`)."""

JOBS = {"api": "order-api", "processor": "order-processor", "operator": "order-operator"}
"""The `job` label of each component's targets (the chart's monitors set it; a hand-written
scrape config should too)."""

_WHERE = "{{ $labels.namespace }}/{{ $labels.pipeline }}"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    summary: str
    description: str
    runbook_section: str
    """The anchor of its section in the runbook (the heading, GitHub-slugged)."""
    severity: str
    for_: str = "5m"
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK}#{self.runbook_section}"

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity} | self.labels,
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url,
            },
        }


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def burn_rate_alerts(slo: slos.Slo) -> list[Alert]:
    alerts = []
    for burn in slos.BURN_ALERTS:
        selector = f'{{slo="{slo.name}"}}'
        conditions = []
        for windows in burn.conditions:
            threshold = f"({windows.factor} * {slo.error_budget})"
            conditions.append(
                "(\n"
                f"  {slos.ratio_record(windows.long)}{selector} > {threshold}\n"
                f"  and {slos.ratio_record(windows.short)}{selector} > {threshold}\n"
                f"  and {slos.events_record(windows.long)}{selector}"
                f" >= {slos.MIN_EVENTS_PER_SECOND:.4f}\n"
                ")"
            )
        alerts.append(
            Alert(
                name=f"Order{_camel(slo.name)}{burn.suffix}",
                expr="\nor\n".join(conditions),
                summary=f"{slo.title} of {_WHERE} is burning its error budget",
                description=(
                    f"SLO: {slo.description}. Bad events are arriving faster than the budget"
                    f" allows: {burn.meaning}."
                ),
                runbook_section=slo.name,
                severity=burn.severity,
                for_=burn.for_,
                labels={"slo": slo.name},
            )
        )
    return alerts


def dead_letter_depth() -> str:
    """Messages in the DLQ, visible or not (recorded ones are hidden for hours)."""
    return (
        f"sum {BY_SCOPE} (\n"
        f'  max by (namespace, pipeline, state) (order_queue_messages{{queue="dead-letter"}})\n'
        ")"
    )


OPERATIONAL_ALERTS = (
    Alert(
        name="OrderDeadLetterQueueNotEmpty",
        expr=f"{dead_letter_depth()} > 0",
        for_="1m",
        summary=f"Orders of {_WHERE} are in the dead-letter queue",
        description=(
            "Messages that could not be processed (unparseable, or failed maxReceiveCount"
            " times) are in the DLQ. Their orders are recorded FAILED; the messages stay there"
            " until someone inspects them and redrives or deletes them."
        ),
        runbook_section="dead-letter-queue-not-empty",
        severity="ticket",
    ),
    Alert(
        name="OrderProcessingStalled",
        expr=(
            f'max {BY_SCOPE} (order_queue_messages{{queue="orders", state="visible"}}) > 0\n'
            f"unless on (namespace, pipeline)\n"
            f"sum {BY_SCOPE} (increase(orders_processed_total[10m])) > 0"
        ),
        for_="10m",
        summary=f"Orders of {_WHERE} are waiting but none is being processed",
        description=(
            "The orders queue has had visible messages for 10 minutes and no order reached"
            " a final status in that time."
        ),
        runbook_section="processing-stalled",
        severity="page",
    ),
    Alert(
        name="OrderOperatorReconcileErrors",
        expr="sum by (job, error) (increase(orderpipeline_reconcile_errors_total[10m])) > 0",
        for_="15m",
        summary="The OrderPipeline operator keeps failing to reconcile ({{ $labels.error }})",
        description=(
            "Reconcile passes have raised {{ $labels.error }} for at least 15 minutes;"
            " changes to OrderPipelines are not being applied."
        ),
        runbook_section="operator-reconcile-errors",
        severity="ticket",
    ),
    Alert(
        name="OrderPipelineNotReady",
        expr="max by (namespace, name) (orderpipeline_ready) == 0",
        for_="15m",
        summary="OrderPipeline {{ $labels.namespace }}/{{ $labels.name }} is not Ready",
        description=(
            "The operator has reported the pipeline not Ready for 15 minutes: see its"
            " conditions (`kubectl describe orderpipeline`)."
        ),
        runbook_section="pipeline-not-ready",
        severity="ticket",
    ),
    Alert(
        name="OrderScrapeTargetDown",
        expr=f'up{{job=~"{"|".join(JOBS.values())}"}} == 0',
        summary="Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }}",
        description=(
            "The target has failed every scrape for 5 minutes: its metrics, and the alerts"
            " built on them, are blind."
        ),
        runbook_section="scrape-target-down-or-missing",
        severity="page",
    ),
    Alert(
        name="OrderScrapeTargetMissing",
        # The processor may be scaled to zero on purpose; the API and the operator never are.
        expr=(f'absent(up{{job="{JOBS["api"]}"}})\nor\nabsent(up{{job="{JOBS["operator"]}"}})'),
        for_="10m",
        summary="Prometheus has no {{ $labels.job }} target at all",
        description=(
            "No target of the job has been discovered for 10 minutes: the pods are gone, or"
            " their monitor no longer selects them."
        ),
        runbook_section="scrape-target-down-or-missing",
        severity="page",
    ),
)


def alerts() -> list[Alert]:
    return [alert for slo in slos.SLOS for alert in burn_rate_alerts(slo)] + list(
        OPERATIONAL_ALERTS
    )


def recording_rules(windows: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per SLO and window: the event rate and the bad-event ratio, labelled `slo`."""
    records = []
    for slo in slos.SLOS:
        for window in windows:
            records.append(
                {
                    "record": slos.events_record(window),
                    "expr": slo.events_rate(window),
                    "labels": {"slo": slo.name},
                }
            )
            records.append(
                {
                    "record": slos.ratio_record(window),
                    "expr": slo.bad_ratio(window),
                    "labels": {"slo": slo.name},
                }
            )
    return records


def groups() -> dict[str, Any]:
    """The `groups` document: a Prometheus rules file and a PrometheusRule's `spec` alike."""
    return {
        "groups": [
            {"name": "order-pipeline-slos", "rules": recording_rules(slos.WINDOWS)},
            {"name": "order-pipeline-alerts", "rules": [a.rule() for a in alerts()]},
        ]
    }
