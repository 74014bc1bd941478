"""The check every dashboard query must pass on a live Prometheus (integration and e2e tests)."""

from __future__ import annotations

import math

from order_devtools.observability import prometheus, promql

RATE_WINDOW = "5m"
"""Longer than a test's traffic: every event counts in every rate."""


def assert_panel_query_answers(server: prometheus.Prometheus, query: promql.PanelQuery) -> None:
    """No error, a non-empty result, the labels its legend names, a number somewhere (a quantile
    of a route idle over the window is NaN, a gap in Grafana), shares within [0, 1]."""
    expr = promql.substitute_variables(query.expr, rate_window=RATE_WINDOW)
    result = server.query(expr)
    assert result, f"{query.panel}: no series for {expr}"
    for series in result:
        missing = promql.legend_labels(query.legend) - set(series["metric"])
        assert not missing, f"{query.panel}: legend labels {missing} not in {series['metric']}"
    values = [float(series["value"][1]) for series in result]
    assert any(not math.isnan(v) for v in values), f"{query.panel}: {values}"
    if query.ratio:
        assert all(0 <= v <= 1 for v in values), f"{query.panel}: {values}"
