"""The Grafana dashboards (Pipeline, Operator, Rollouts), built with grafana-foundation-sdk.

Panels are declared as small specs (title, unit, queries with their legends) and turned into the
Grafana 11 dashboard model by the SDK's builders; `generate.py` writes them into the chart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog import encoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_model

from order_devtools.observability import rules, slos

RATE = "$__rate_interval"
"""Grafana's rate window (at least four scrape intervals); tests substitute a fixed one."""

SCOPE = 'namespace=~"$namespace", pipeline=~"$pipeline"'
"""The pipeline dashboard's variables, in every selector."""

DATASOURCE = dashboard_model.DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "stat"] = "timeseries"
    ratio: bool = False
    """A share between 0 and 1 (the axis is fixed to that range)."""
    description: str = ""
    width: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    scoped: bool = True
    """Whether it has the namespace and pipeline variables."""
    tags: tuple[str, ...] = field(default=("order-pipeline",))


def quantiles(histogram: str, selector: str, by: str = "") -> tuple[Query, ...]:
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group})"
            f" (rate({histogram}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def share(bad: str, total: str, legend: str) -> Query:
    """`bad` over `total` (two counter selectors): 0, not nothing, when nothing was bad."""
    return Query(f"(sum(rate({bad}[{RATE}])) or vector(0))\n/\nsum(rate({total}[{RATE}]))", legend)


API = f'route=~"/v1/.*", {SCOPE}'

PIPELINE = Dashboard(
    uid="order-pipeline",
    title="Order pipeline",
    description="API, processor, queue and SLOs of one order pipeline",
    rows=(
        Row(
            "API",
            (
                Panel(
                    "Requests by status",
                    "reqps",
                    (
                        Query(
                            f"sum by (status) (rate(http_requests_total{{{API}}}[{RATE}]))",
                            "{{status}}",
                        ),
                    ),
                ),
                Panel(
                    "Error ratio",
                    "percentunit",
                    (
                        share(
                            f'http_requests_total{{{API}, status=~"5.."}}',
                            f"http_requests_total{{{API}}}",
                            "5xx",
                        ),
                        share(
                            f'http_requests_total{{{API}, status=~"4.."}}',
                            f"http_requests_total{{{API}}}",
                            "4xx",
                        ),
                    ),
                    ratio=True,
                ),
                Panel(
                    "Latency",
                    "s",
                    quantiles("http_request_duration_seconds", API, by="route"),
                ),
                Panel(
                    "Rate limited (429)",
                    "reqps",
                    (
                        Query(
                            "sum by (route)"
                            f' (rate(http_requests_total{{{SCOPE}, status="429"}}[{RATE}]))',
                            "{{route}}",
                        ),
                    ),
                ),
                Panel(
                    "Orders accepted and refused",
                    "reqps",
                    (
                        Query(f"sum(rate(orders_accepted_total{{{SCOPE}}}[{RATE}]))", "accepted"),
                        Query(
                            f"sum by (reason) (rate(orders_refused_total{{{SCOPE}}}[{RATE}]))",
                            "refused: {{reason}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Processor",
            (
                Panel(
                    "Orders processed by status",
                    "ops",
                    (
                        Query(
                            f"sum by (status) (rate(orders_processed_total{{{SCOPE}}}[{RATE}]))",
                            "{{status}}",
                        ),
                    ),
                ),
                Panel(
                    "Failed share",
                    "percentunit",
                    (
                        share(
                            f'orders_processed_total{{{SCOPE}, status="FAILED"}}',
                            f"orders_processed_total{{{SCOPE}}}",
                            "FAILED",
                        ),
                    ),
                    ratio=True,
                ),
                Panel(
                    "Processing duration",
                    "s",
                    quantiles("order_processing_duration_seconds", SCOPE),
                    description="From receiving a message to its outcome",
                ),
                Panel(
                    "Retries by cause",
                    "ops",
                    (
                        Query(
                            f"sum by (cause) (rate(messages_retried_total{{{SCOPE}}}[{RATE}]))",
                            "{{cause}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Queue and end to end",
            (
                Panel(
                    "End-to-end latency (accepted → final)",
                    "s",
                    quantiles("order_end_to_end_duration_seconds", SCOPE),
                ),
                Panel(
                    "Backlog",
                    "short",
                    (
                        Query(
                            f'max by (state) (order_queue_messages{{{SCOPE}, queue="orders"}})',
                            "{{state}}",
                        ),
                    ),
                    description="Messages in the orders queue: visible (waiting), in flight",
                ),
                Panel(
                    "Age at receive",
                    "s",
                    quantiles("order_message_age_at_receive_seconds", SCOPE),
                    description="How long messages waited in the queue before a receive",
                ),
                Panel(
                    "Dead-letter queue depth",
                    "short",
                    (
                        Query(
                            "sum(max by (state)"
                            f' (order_queue_messages{{{SCOPE}, queue="dead-letter"}}))',
                            "messages",
                        ),
                    ),
                    kind="stat",
                ),
            ),
        ),
        Row(
            "SLOs",
            (
                Panel(
                    f"Error budget left ({slos.BUDGET_WINDOW})",
                    "percentunit",
                    tuple(
                        Query(
                            f"1 - max({slos.ratio_record(slos.BUDGET_WINDOW)}"
                            f'{{{SCOPE}, slo="{slo.name}"}}) / {slo.error_budget}',
                            slo.title,
                        )
                        for slo in slos.SLOS
                    ),
                    kind="stat",
                    width=12,
                ),
                Panel(
                    "Burn rate (1 h)",
                    "none",
                    tuple(
                        Query(
                            f"max({slos.ratio_record('1h')}"
                            f'{{{SCOPE}, slo="{slo.name}"}}) / {slo.error_budget}',
                            slo.title,
                        )
                        for slo in slos.SLOS
                    ),
                    description="1: the budget lasts exactly the window; 14.4 pages",
                    width=12,
                ),
            ),
        ),
    ),
)

OPERATOR_JOB = f'job="{rules.JOBS["operator"]}"'

OPERATOR = Dashboard(
    uid="order-pipeline-operator",
    title="Order pipeline operator",
    description="Reconciles, errors, scaling decisions and readiness of the OrderPipelines",
    scoped=False,
    rows=(
        Row(
            "Reconciles",
            (
                Panel(
                    "Reconciles by result",
                    "ops",
                    (
                        Query(
                            "sum by (result)"
                            f" (rate(orderpipeline_reconciles_total{{{OPERATOR_JOB}}}[{RATE}]))",
                            "{{result}}",
                        ),
                    ),
                ),
                Panel(
                    "Reconcile errors by type",
                    "ops",
                    (
                        Query(
                            "sum by (error) (rate(orderpipeline_reconcile_errors_total"
                            f"{{{OPERATOR_JOB}}}[{RATE}]))",
                            "{{error}}",
                        ),
                    ),
                ),
                Panel(
                    "Reconcile duration",
                    "s",
                    quantiles("orderpipeline_reconcile_duration_seconds", OPERATOR_JOB),
                ),
            ),
        ),
        Row(
            "Pipelines",
            (
                Panel(
                    "Scaling decisions",
                    "short",
                    (
                        Query(
                            "sum by (direction) (increase(orderpipeline_scaling_decisions_total"
                            f"{{{OPERATOR_JOB}}}[{RATE}]))",
                            "{{direction}}",
                        ),
                    ),
                    description="Processor replica changes made by the queue-depth scaler",
                ),
                Panel(
                    "Pipelines Ready",
                    "short",
                    (Query(f"orderpipeline_ready{{{OPERATOR_JOB}}}", "{{namespace}}/{{name}}"),),
                    description="1: Ready; 0: not",
                ),
                Panel(
                    "Pipelines not Ready",
                    "short",
                    (
                        Query(
                            f"count(orderpipeline_ready{{{OPERATOR_JOB}}} == 0) or vector(0)",
                            "not Ready",
                        ),
                    ),
                    kind="stat",
                ),
            ),
        ),
    ),
)

CLIENT = f'route!~"/healthz|/readyz|/metrics", {SCOPE}'
"""Client requests, as the rollout's defaults count them: probes and scrapes reach every pod
whatever its weight, so they would pull an idle canary's share toward its pod count."""

RELEASE = "track, version"
RELEASE_LEGEND = "{{track}} {{version}}"


def rate_by(selector: str, *, by: str = RELEASE) -> str:
    return f"sum by ({by}) (rate({selector}[{RATE}]))"


def p99_by_release(histogram: str, selector: str) -> Query:
    buckets = rate_by(f"{histogram}_bucket{{{selector}}}", by=f"le, {RELEASE}")
    return Query(f"histogram_quantile(0.99, {buckets})", RELEASE_LEGEND)


def release_share(selector: str) -> Query:
    """Each release's part of the whole, as the operator observes a canary's share."""
    return Query(
        f"{rate_by(selector)}\n/ ignoring ({RELEASE}) group_left\nsum(rate({selector}[{RATE}]))",
        RELEASE_LEGEND,
    )


def ratio_by(bad: str, total: str, *, by: str, legend: str) -> Query:
    """`bad` over `total` per `by`: 0, not a missing line, for a side with nothing bad (a
    labelled counter is born at its first event, so a healthy canary has no 5xx series)."""
    return Query(
        f"(\n  {rate_by(bad, by=by)}\n  or 0 * {rate_by(total, by=by)}\n)"
        f"\n/\n{rate_by(total, by=by)}",
        legend,
    )


ROLLOUTS = Dashboard(
    uid="order-pipeline-rollouts",
    title="Order pipeline rollouts",
    description=(
        "Canary against stable during a rollout: every panel split by track and version;"
        " shares are of the selected pipelines, so pick one"
    ),
    tags=("order-pipeline", "rollouts"),
    rows=(
        Row(
            "API by release",
            (
                Panel(
                    "Client requests",
                    "reqps",
                    (Query(rate_by(f"http_requests_total{{{CLIENT}}}"), RELEASE_LEGEND),),
                    width=6,
                ),
                Panel(
                    "Share of client requests",
                    "percentunit",
                    (release_share(f"http_requests_total{{{CLIENT}}}"),),
                    ratio=True,
                    description=(
                        "The canary's observed share: a step advances when it is within"
                        " apiShareTolerance of the step's weight"
                    ),
                    width=6,
                ),
                Panel(
                    "5xx ratio",
                    "percentunit",
                    (
                        ratio_by(
                            f'http_requests_total{{{CLIENT}, status=~"5.."}}',
                            f"http_requests_total{{{CLIENT}}}",
                            by=RELEASE,
                            legend=RELEASE_LEGEND,
                        ),
                    ),
                    ratio=True,
                    width=6,
                ),
                Panel(
                    "p99 latency",
                    "s",
                    (p99_by_release("http_request_duration_seconds", CLIENT),),
                    width=6,
                ),
            ),
        ),
        Row(
            "Processor by release",
            (
                Panel(
                    "Finished orders by status",
                    "ops",
                    (
                        Query(
                            rate_by(f"orders_processed_total{{{SCOPE}}}", by=f"{RELEASE}, status"),
                            f"{RELEASE_LEGEND}: {{{{status}}}}",
                        ),
                    ),
                    width=6,
                ),
                Panel(
                    "Share of finished orders",
                    "percentunit",
                    (release_share(f"orders_processed_total{{{SCOPE}}}"),),
                    ratio=True,
                    description=(
                        "The canary's observed share of messages, set by its share of receive"
                        " concurrency"
                    ),
                    width=6,
                ),
                Panel(
                    "FAILED ratio",
                    "percentunit",
                    (
                        ratio_by(
                            f'orders_processed_total{{{SCOPE}, status="FAILED"}}',
                            f"orders_processed_total{{{SCOPE}}}",
                            by=RELEASE,
                            legend=RELEASE_LEGEND,
                        ),
                    ),
                    ratio=True,
                    width=6,
                ),
                Panel(
                    "p99 processing time",
                    "s",
                    (p99_by_release("order_processing_duration_seconds", SCOPE),),
                    description="From receiving a message to its outcome",
                    width=6,
                ),
            ),
        ),
        Row(
            "Orders by the API version that queued them",
            (
                Panel(
                    "Outcomes by producer version",
                    "ops",
                    (
                        Query(
                            rate_by(
                                f"orders_processed_by_producer_total{{{SCOPE}}}",
                                by="producer_version, status",
                            ),
                            "{{producer_version}}: {{status}}",
                        ),
                    ),
                    description=(
                        "How the orders each API version queued ended, whichever processor"
                        " finished them: what an API canary's orders come to"
                    ),
                    width=12,
                ),
                Panel(
                    "FAILED ratio by producer version",
                    "percentunit",
                    (
                        ratio_by(
                            f'orders_processed_by_producer_total{{{SCOPE}, status="FAILED"}}',
                            f"orders_processed_by_producer_total{{{SCOPE}}}",
                            by="producer_version",
                            legend="{{producer_version}}",
                        ),
                    ),
                    ratio=True,
                    width=12,
                ),
            ),
        ),
    ),
)

DASHBOARDS = (PIPELINE, OPERATOR, ROLLOUTS)


def _panel(spec: Panel) -> timeseries.Panel | stat.Panel:
    built: timeseries.Panel | stat.Panel = (
        timeseries.Panel() if spec.kind == "timeseries" else stat.Panel()
    )
    built.title(spec.title).unit(spec.unit).datasource(DATASOURCE).height(8).span(spec.width)
    if spec.description:
        built.description(spec.description)
    if spec.ratio:
        built.min(0).max(1)
    if isinstance(built, timeseries.Panel):
        built.legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    for index, query in enumerate(spec.queries):
        built.with_target(
            prometheus.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
    return built


def _variables(spec: Dashboard) -> list[Any]:
    variables: list[Any] = [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
    ]
    if spec.scoped:
        for name, query in (
            ("namespace", "label_values(http_requests_total, namespace)"),
            (
                "pipeline",
                'label_values(http_requests_total{namespace=~"$namespace"}, pipeline)',
            ),
        ):
            variables.append(
                dashboard.QueryVariable(name)
                .label(name.capitalize())
                .query(query)
                .datasource(DATASOURCE)
                .include_all(True)
                .all_value(".*")
                .multi(True)
                .refresh(dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            )
    return variables


def build(spec: Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model (what Grafana imports)."""
    built = (
        dashboard.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
    )
    for variable in _variables(spec):
        built.with_variable(variable)
    for row in spec.rows:
        built.with_row(dashboard.Row(row.title))
        for panel in row.panels:
            built.with_panel(_panel(panel))
    model: dict[str, Any] = json.loads(json.dumps(built.build(), cls=encoder.JSONEncoder))
    return model
