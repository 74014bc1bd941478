"""The pipeline's service level objectives: what counts as an event, what as a bad one.

Each SLO becomes recording rules (its bad-event ratio and event rate over every burn-rate
window, `rules.py`), multi-window burn-rate alerts and the dashboard's budget panels.
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPE = ("namespace", "pipeline")
"""The labels every pipeline-level series is aggregated by: one pipeline is one namespace and
`pipeline` label (the pods' `app.kubernetes.io/instance`, set by the chart's monitors)."""

BY_SCOPE = f"by ({', '.join(SCOPE)})"


@dataclass(frozen=True)
class Slo:
    name: str
    """Also the `slo` label of its recorded series and the runbook's section."""
    title: str
    objective: float
    """The share of events that must be good, e.g. 0.999."""
    events: str
    """A counter selector (no range) of all events."""
    bad: str | None = None
    """A counter selector of the bad events; None when `good` is given instead."""
    good: str | None = None
    """A counter selector of the good events (a histogram bucket), when bad ones are not
    counted directly."""
    description: str = ""

    @property
    def error_budget(self) -> float:
        return round(1 - self.objective, 10)

    def events_rate(self, window: str) -> str:
        return f"sum {BY_SCOPE} (rate({self.events}[{window}]))"

    def bad_ratio(self, window: str) -> str:
        """Bad events over all events in `window`; 0 (not nothing) when none were bad."""
        total = self.events_rate(window)
        if self.bad is not None:
            bad = f"sum {BY_SCOPE} (rate({self.bad}[{window}]))"
            return f"(\n  {bad}\n  or 0 * {total}\n)\n/\n{total}"
        good = f"sum {BY_SCOPE} (rate({self.good}[{window}]))"
        return f"(\n  {total}\n  - {good}\n)\n/\n{total}"


API_ROUTES = 'route=~"/v1/.*"'
"""The order API proper: not the probes and not `/metrics`."""

SLOS = (
    Slo(
        name="api-availability",
        title="API availability",
        objective=0.999,
        events=f"http_requests_total{{{API_ROUTES}}}",
        bad=f'http_requests_total{{{API_ROUTES}, status=~"5.."}}',
        description="99.9% of API requests are not answered with a 5xx",
    ),
    Slo(
        name="api-latency",
        title="API latency",
        objective=0.99,
        events='http_request_duration_seconds_count{route="/v1/orders", method="POST"}',
        good='http_request_duration_seconds_bucket{route="/v1/orders", method="POST", le="0.25"}',
        description="99% of orders are acknowledged within 250 ms",
    ),
    Slo(
        name="processing-success",
        title="Processing success",
        objective=0.995,
        events="orders_processed_total",
        bad='orders_processed_total{status="FAILED"}',
        description="99.5% of orders reach a final status other than FAILED",
    ),
    Slo(
        name="end-to-end-latency",
        title="End-to-end latency",
        objective=0.99,
        events="order_end_to_end_duration_seconds_count",
        good='order_end_to_end_duration_seconds_bucket{le="10.0"}',
        description="99% of orders reach their final status within 10 s of being accepted",
    ),
)


@dataclass(frozen=True)
class BurnWindows:
    """One multi-window condition: the ratio over both windows above `factor` times the budget."""

    long: str
    short: str
    factor: float


@dataclass(frozen=True)
class BurnAlert:
    """The SRE workbook's alert on an error-budget burn rate, one per severity."""

    suffix: str
    severity: str
    conditions: tuple[BurnWindows, ...]
    for_: str
    meaning: str


BURN_ALERTS = (
    BurnAlert(
        suffix="FastBurn",
        severity="page",
        conditions=(BurnWindows("1h", "5m", 14.4), BurnWindows("6h", "30m", 6)),
        for_="2m",
        meaning="2% of a 30-day error budget spent within an hour, or 5% within six hours",
    ),
    BurnAlert(
        suffix="SlowBurn",
        severity="ticket",
        conditions=(BurnWindows("1d", "2h", 3), BurnWindows("3d", "6h", 1)),
        for_="15m",
        meaning="10% of a 30-day error budget spent within a day, or all of it at this pace",
    ),
)

BUDGET_WINDOW = "30d"
"""The window the error budget is counted over (the dashboard's budget left)."""

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", BUDGET_WINDOW)
"""Every window a ratio is recorded over: the burn alerts' and the budget's."""

MIN_EVENTS_PER_SECOND = 1 / 60
"""The minimum-traffic guard: below one event a minute (averaged over the alert's long window)
a few bad events are not a burn rate worth waking anyone for."""


def ratio_record(window: str) -> str:
    return f"{'_'.join(SCOPE)}:slo_errors:ratio_rate{window}"


def events_record(window: str) -> str:
    return f"{'_'.join(SCOPE)}:slo_events:rate{window}"
