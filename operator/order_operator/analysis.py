"""Read a component's analysis window from Prometheus' HTTP API: the judge's readings and the
canary's observed share (the I/O before the pure `rollout.judge`).

Each track is read by its revision (`{version}`, the `version` label of the default checks):
the revision hashes the pipeline's queue and table names, so two pipelines, or any other app
with the same metric names and a `track` label, in one Prometheus never mix their numbers.

The window is `intervals` intervals ending at `at`. Error ratios are read per interval with one
range query per series and track (step = the interval, ending at `at`): Prometheus evaluates
`increase(x[interval])` at each step, so the intervals abut without overlap or gap, and one
request reads the whole window instead of one per interval. `increase()` extrapolates; the
counts are rounded to whole numbers. Gates are instant queries over the last interval; latency
quantiles and their sample counts are instant queries over the whole window, the one the error
counts are pooled over.

Nothing here raises for Prometheus' sake: down, slow, an error response or a bad query becomes
"no data: <reason>" for the checks it concerns, which the judge calls inconclusive (the step
holds) and status shows. The only host contacted is the spec's address; redirects are not
followed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3 import exceptions as urllib3_exceptions

from order_operator.rollout import judge
from order_operator.rollout import spec as rollout_spec

DEFAULT_TIMEOUT_SECONDS = 10.0
"""Per query: a pass reads about a dozen, and a slow Prometheus must not stall the operator."""

SHARE_SERIES: Mapping[rollout_spec.Component, rollout_spec.Series] = {
    "api": rollout_spec.Series(
        metric="http_requests_total", matchers='route!~"/healthz|/readyz|/metrics"'
    ),
    "processor": rollout_spec.Series(metric="orders_processed_total"),
}
"""What the observed share counts: client requests (probes and scrapes reach every pod whatever
its weight) and finished orders, the totals the default error ratios count."""


class NoData(Exception):
    """Why a query gave no number; it becomes the check's "no data: <reason>"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Prometheus:
    """A client of one Prometheus HTTP API for one pass. After a connection failure the rest
    of the pass's queries fail at once with the same reason instead of each waiting."""

    def __init__(
        self,
        address: str,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._headers = dict(headers or {})
        self._pool = pool or urllib3.PoolManager()
        self._down: str | None = None

    def _get(self, path: str, fields: Mapping[str, str]) -> Any:
        if self._down is not None:
            raise NoData(self._down)
        url = f"{self.address}{path}"
        # Prometheus gives up on the query a little before we give up on the answer, so a
        # slow query ends there rather than running on for no one (plain seconds: Prometheus
        # takes no fractions in its duration syntax).
        fields = {**fields, "timeout": f"{self.timeout_seconds * 0.9:.3f}"}
        try:
            response = self._pool.request(
                "GET",
                url,
                fields=dict(fields),
                headers=self._headers,
                timeout=urllib3.Timeout(total=self.timeout_seconds),
                retries=False,
                redirect=False,
            )
        except urllib3_exceptions.NewConnectionError as error:
            self._down = f"Prometheus unreachable at {self.address}: {_short(str(error))}"
            raise NoData(self._down) from error
        except urllib3_exceptions.ConnectTimeoutError as error:
            self._down = f"Prometheus unreachable at {self.address}: connect timed out"
            raise NoData(self._down) from error
        except urllib3_exceptions.TimeoutError as error:
            raise NoData(f"Prometheus did not answer within {self.timeout_seconds:g}s") from error
        except urllib3_exceptions.HTTPError as error:
            raise NoData(f"Prometheus request failed: {_short(str(error))}") from error
        return _data(response)

    def _query_fields(self, query: str, at: float) -> dict[str, str]:
        return {"query": query, "time": f"{at:.3f}"}

    def instant(self, query: str, *, at: float) -> float | None:
        """The single number a query gives at `at`; None when it gives no series."""
        data = self._get("/api/v1/query", self._query_fields(query, at))
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return _number(result)
        if kind != "vector" or not isinstance(result, list):
            raise NoData(f"expected a vector, got {kind}")
        if not result:
            return None
        if len(result) > 1:
            raise NoData(f"{len(result)} series, expected one (aggregate with sum)")
        return _number(result[0].get("value"))

    def per_interval(
        self, query: str, *, at: float, interval_seconds: int, intervals: int
    ) -> list[float] | None:
        """The query at the end of each interval of the window, oldest first: 0 where it gives
        nothing at that step; None when it gives no series at all."""
        start = at - (intervals - 1) * interval_seconds
        fields = {
            "query": query,
            "start": f"{start:.3f}",
            "end": f"{at:.3f}",
            "step": f"{interval_seconds}s",
        }
        data = self._get("/api/v1/query_range", fields)
        kind, result = data.get("resultType"), data.get("result")
        if kind != "matrix" or not isinstance(result, list):
            raise NoData(f"expected a matrix, got {kind}")
        if not result:
            return None
        if len(result) > 1:
            raise NoData(f"{len(result)} series, expected one (aggregate with sum)")
        values = [0.0] * intervals
        for point in result[0].get("values", []):
            index = round((float(point[0]) - start) / interval_seconds)
            if 0 <= index < intervals:
                values[index] = _number(point)
        return values


def _data(response: urllib3.BaseHTTPResponse) -> Any:
    """The `data` of a successful answer; otherwise why not."""
    if 300 <= response.status < 400:
        where = response.headers.get("Location", "?")
        raise NoData(f"HTTP {response.status} to {where}: redirects are not followed")
    try:
        body = response.json()
    except ValueError:
        text = response.data.decode("utf-8", "replace")
        raise NoData(f"HTTP {response.status}: {_short(text) or 'empty answer'}") from None
    if not isinstance(body, dict):
        raise NoData(f"HTTP {response.status}: not a Prometheus answer")
    if body.get("status") != "success":
        kind = body.get("errorType", "error")
        raise NoData(f"Prometheus answered {kind}: {_short(str(body.get('error', '')))}")
    return body.get("data", {})


def _number(value: Any) -> float:
    """A sample's `[time, "value"]` as a float (Prometheus writes NaN and ±Inf as strings)."""
    try:
        return float(value[1])
    except (TypeError, ValueError, IndexError) as error:
        raise NoData(f"not a sample: {_short(str(value))}") from error


def _count(value: float) -> int:
    if not math.isfinite(value):
        raise NoData(f"a count that is not a number: {value}")
    return max(0, round(value))


@dataclass(frozen=True)
class Window:
    """One component's analysis window as read from Prometheus."""

    at: float
    """When the window ended (the evaluation time)."""
    readings: judge.Readings
    observed_share: float | None
    """The canary's share of requests (API) or finished orders (processor) in the last
    interval; None when it could not be read."""
    share_missing: str | None = None
    """Why there is no observed share."""


def read_window(
    server: Prometheus,
    checks: rollout_spec.Checks,
    *,
    component: rollout_spec.Component,
    revisions: rollout_spec.Revisions,
    interval_seconds: int,
    intervals: int,
    at: float,
) -> Window:
    """Every check's reading for the window of `intervals` intervals ending at `at`, each track
    read by its revision."""
    if intervals < 1:
        raise ValueError("a window has at least one interval")
    window_seconds = interval_seconds * intervals
    gates: dict[str, float | None] = {}
    ratios: dict[str, tuple[judge.Counts, judge.Counts]] = {}
    latencies: dict[str, judge.LatencyReading] = {}
    missing: dict[tuple[judge.Kind, str], str] = {}

    for gate in checks.gates:
        query = rollout_spec.render(
            gate.query, track="canary", revisions=revisions, interval_seconds=interval_seconds
        )
        try:
            gates[gate.name] = server.instant(query, at=at)
        except NoData as error:
            gates[gate.name] = None
            missing["gate", gate.name] = error.reason
        else:
            if gates[gate.name] is None:
                missing["gate", gate.name] = "the query gave no series"

    for comparison in checks.error_ratios:
        try:
            ratios[comparison.name] = (
                _counts(
                    server, comparison, "canary", revisions, interval_seconds, intervals, at=at
                ),
                _counts(
                    server, comparison, "stable", revisions, interval_seconds, intervals, at=at
                ),
            )
        except NoData as error:
            missing["errorRatio", comparison.name] = error.reason

    for latency in checks.latencies:
        try:
            latencies[latency.name] = _latency(server, latency, revisions, window_seconds, at=at)
        except NoData as error:
            missing["latency", latency.name] = error.reason

    share, share_missing = _share(server, component, revisions, interval_seconds, at=at)
    readings = judge.Readings(
        gates=gates, error_ratios=ratios, latencies=latencies, missing=missing
    )
    return Window(at=at, readings=readings, observed_share=share, share_missing=share_missing)


def _counts(
    server: Prometheus,
    comparison: rollout_spec.ErrorRatioComparison,
    track: rollout_spec.Track,
    revisions: rollout_spec.Revisions,
    interval_seconds: int,
    intervals: int,
    *,
    at: float,
) -> judge.Counts:
    def per_interval(series: rollout_spec.Series) -> list[float] | None:
        query = series.promql(track=track, revisions=revisions, interval_seconds=interval_seconds)
        return server.per_interval(
            query, at=at, interval_seconds=interval_seconds, intervals=intervals
        )

    totals = per_interval(comparison.total)
    if totals is None:
        raise NoData(f"no {track} series for the total")
    # The services create an error series at its first error: none means no errors.
    errors = per_interval(comparison.errors) or [0.0] * intervals
    return judge.Counts(errors=[_count(v) for v in errors], totals=[_count(v) for v in totals])


def _latency(
    server: Prometheus,
    latency: rollout_spec.LatencyComparison,
    revisions: rollout_spec.Revisions,
    window_seconds: int,
    *,
    at: float,
) -> judge.LatencyReading:
    quantiles: list[float | None] = []
    samples: list[int] = []
    tracks: Sequence[rollout_spec.Track] = ("canary", "stable")
    for track in tracks:
        query = rollout_spec.render(
            latency.query, track=track, revisions=revisions, interval_seconds=window_seconds
        )
        # NaN (no observation in the window) passes through: the judge calls it no data.
        quantiles.append(server.instant(query, at=at))
        count_query = latency.samples.promql(
            track=track, revisions=revisions, interval_seconds=window_seconds
        )
        count = server.instant(count_query, at=at)
        if count is None:
            raise NoData(f"no {track} series for the sample count")
        samples.append(_count(count))
    if quantiles[0] is None or quantiles[1] is None:
        which = "canary" if quantiles[0] is None else "stable"
        raise NoData(f"no {which} series for the quantile")
    return judge.LatencyReading(
        canary=quantiles[0],
        stable=quantiles[1],
        canary_samples=samples[0],
        stable_samples=samples[1],
    )


def _share(
    server: Prometheus,
    component: rollout_spec.Component,
    revisions: rollout_spec.Revisions,
    interval_seconds: int,
    *,
    at: float,
) -> tuple[float | None, str | None]:
    series = SHARE_SERIES[component]
    tracks: Sequence[rollout_spec.Track] = ("canary", "stable")
    try:
        canary, stable = [
            server.instant(
                series.promql(track=track, revisions=revisions, interval_seconds=interval_seconds),
                at=at,
            )
            for track in tracks
        ]
    except NoData as error:
        return None, error.reason
    if canary is None or stable is None:
        return None, f"no {'canary' if canary is None else 'stable'} series for the share"
    total = canary + stable
    if not math.isfinite(total) or total <= 0:
        return None, "nothing counted in the last interval"
    return canary / total, None


def read(
    analysis: rollout_spec.Analysis,
    component: rollout_spec.Component,
    *,
    revisions: rollout_spec.Revisions,
    intervals: int,
    at: float,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    pool: urllib3.PoolManager | None = None,
) -> Window:
    """`read_window` with what the spec says: its Prometheus, interval and component checks."""
    server = Prometheus(analysis.prometheus.address, timeout_seconds=timeout_seconds, pool=pool)
    return read_window(
        server,
        analysis.checks(component),
        component=component,
        revisions=revisions,
        interval_seconds=analysis.interval_seconds,
        intervals=intervals,
        at=at,
    )
