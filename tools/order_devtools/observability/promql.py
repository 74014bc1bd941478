"""PromQL as the dashboards and rules use it: parsed with a real parser (promql-parser),
Grafana's variables replaced, the metric names and compared quantities found."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import promql_parser

COMPARISONS = {">", "<", ">=", "<=", "==", "!="}


def parse(expr: str) -> promql_parser.Expr:
    return promql_parser.parse(expr)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(parse(expr), pre_visit=visit)
    return found


def metric_names(expr: str) -> set[str]:
    return {selector.name for selector in selectors(expr) if selector.name}


def compared_quantities(expr: str) -> list[str]:
    """What an alert expression compares with a constant (`x > 0` gives `x`) and what it asks
    to be absent (`absent(x)` gives `x`): the series that must exist for the alert to work."""
    found: list[str] = []

    def visit(node: Any) -> None:
        if (
            isinstance(node, promql_parser.BinaryExpr)
            and str(node.op) in COMPARISONS
            and not metric_names(str(node.rhs))
        ):
            found.append(str(node.lhs))
        elif isinstance(node, promql_parser.Call) and node.func.name == "absent":
            found.extend(str(argument) for argument in node.args)

    promql_parser.walk(parse(expr), pre_visit=visit)
    return found


def substitute_variables(expr: str, *, rate_window: str) -> str:
    """A Grafana panel query as Prometheus runs it: every pipeline, `rate_window` for
    `$__rate_interval`."""
    expr = expr.replace("$__rate_interval", rate_window)
    return re.sub(r"\$\{?(namespace|pipeline)\}?", ".*", expr)


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    unit: str
    ratio: bool
    expr: str
    legend: str


def panel_queries(dashboard: dict[str, Any]) -> Iterator[PanelQuery]:
    """Every query of a dashboard's JSON model, with its panel's title and unit."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        ratio = defaults.get("min") == 0 and defaults.get("max") == 1
        for target in panel["targets"]:
            yield PanelQuery(
                panel=panel["title"],
                unit=defaults.get("unit", ""),
                ratio=ratio,
                expr=target["expr"],
                legend=target.get("legendFormat", ""),
            )


def legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
