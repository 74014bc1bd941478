"""Draw a dashboard from live query results to a PNG (one grid per dashboard, each panel with its
title and unit), so people can see the panels without a Grafana server."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from matplotlib import figure as mpl_figure
from matplotlib import ticker

from order_devtools.observability import prometheus, promql

GRID_WIDTH = 24
"""Grafana's grid: a panel of width 6 is a quarter of the dashboard."""
UNIT_LABELS = {
    "s": "seconds",
    "reqps": "requests/s",
    "ops": "per second",
    "percentunit": "%",
    "short": "",
    "none": "",
}


def legend_text(legend: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend)


def _format_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:g}"


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def columns(panels: list[dict[str, Any]]) -> int:
    """As many as the narrowest panel's width fits across Grafana's grid."""
    narrowest = min(int(panel["gridPos"]["w"]) for panel in panels)
    return max(1, GRID_WIDTH // narrowest)


def render(
    server: prometheus.Prometheus,
    dashboard: dict[str, Any],
    target: Path,
    *,
    start: float,
    end: float,
    rate_window: str,
) -> Path:
    panels = _panels(dashboard)
    across = columns(panels)
    rows = math.ceil(len(panels) / across)
    # A bare Figure renders with Agg on savefig: no pyplot, no display.
    figure = mpl_figure.Figure(figsize=(6 * across, 3.4 * rows))
    axes = figure.subplots(rows, across, squeeze=False)
    step = max(1.0, (end - start) / 200)
    for axis, panel in zip(axes.flat, panels, strict=False):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        axis.set_title(panel["title"], fontsize=11, loc="left")
        if panel["type"] == "stat":
            _draw_stat(server, panel, axis, unit=unit, at=end, rate_window=rate_window)
            continue
        for query in panel["targets"]:
            expr = promql.substitute_variables(query["expr"], rate_window=rate_window)
            for series in server.query_range(expr, start=start, end=end, step=step):
                times = [float(t) - end for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                label = legend_text(query.get("legendFormat", ""), series["metric"])
                axis.plot(times, values, label=label, linewidth=1.4)
        axis.set_xlabel("seconds before the render")
        axis.set_ylabel(UNIT_LABELS.get(unit, unit))
        if unit == "percentunit":
            axis.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1))
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8, loc="upper left")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(dashboard["title"], fontsize=15)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=80)
    return target


def _draw_stat(
    server: prometheus.Prometheus,
    panel: dict[str, Any],
    axis: Any,
    *,
    unit: str,
    at: float,
    rate_window: str,
) -> None:
    lines = []
    for query in panel["targets"]:
        expr = promql.substitute_variables(query["expr"], rate_window=rate_window)
        for series in server.query_range(expr, start=at, end=at, step=1):
            value = float(series["values"][-1][1])
            label = legend_text(query.get("legendFormat", ""), series["metric"])
            lines.append(f"{label}: {_format_value(value, unit)}")
    axis.axis("off")
    axis.text(
        0.5,
        0.5,
        "\n".join(lines) or "no data",
        ha="center",
        va="center",
        fontsize=16 if len(lines) <= 1 else 12,
        transform=axis.transAxes,
    )
