"""The rollout analysis read from a real Prometheus (Debian's `prometheus`): fixed series written
as OpenMetrics, backfilled with `promtool tsdb create-blocks-from openmetrics`, queried at a
fixed time inside them with the default checks' own PromQL, and judged.

Each scenario has its own two hours, so the windows never see each other's samples. Samples are
5 s apart and fall on the interval boundaries, so `increase()` over an interval is exact
(Prometheus 2's ranges include both ends; 3's leave the start out and extrapolate).
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3

from order_devtools import processes
from order_devtools.observability import prometheus
from order_operator import analysis
from order_operator.rollout import judge
from order_operator.rollout import spec as rollout_spec

pytestmark = pytest.mark.integration

BASE = 1_767_225_600
"""2026-01-01T00:00:00Z. Fixed: a TSDB's retention counts from its newest block, not today."""
SCRAPE = 5
INTERVAL = 60
INTERVALS = 6
SLOT = 2 * 3600
"""Each scenario's share of the timeline: a lead interval, then the window."""
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
PROCESSOR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PROBES = 120
"""Probe requests per interval on every pod, whatever its traffic: the defaults leave them out."""
P99_OF_20MS = 0.01 + 0.99 * (0.025 - 0.01)
"""histogram_quantile's answer when every request took 20 ms: linear within (10 ms, 25 ms]."""


@dataclass(frozen=True)
class Side:
    """One track's traffic per interval, the lead interval first, then the window's."""

    ok: Sequence[int]
    errors: Sequence[int] = (0,) * (1 + INTERVALS)
    seconds: float = 0.02


@dataclass(frozen=True)
class Scenario:
    slot: int
    api: Mapping[rollout_spec.Track, Side]
    processor: Mapping[rollout_spec.Track, Side]

    @property
    def start(self) -> int:
        return BASE + self.slot * SLOT

    @property
    def at(self) -> int:
        """The end of the window: the evaluation time."""
        return self.start + (1 + INTERVALS) * INTERVAL


def flat(count: int) -> tuple[int, ...]:
    return (count,) * (1 + INTERVALS)


CLEAN_API: dict[rollout_spec.Track, Side] = {
    "canary": Side(ok=flat(200)),
    "stable": Side(ok=flat(3_800)),
}
CLEAN_PROCESSOR: dict[rollout_spec.Track, Side] = {
    "canary": Side(ok=flat(50)),
    "stable": Side(ok=flat(950)),
}
SPARSE = Scenario(
    slot=0,
    api={
        "canary": Side(ok=flat(200), errors=(0, 0, 1, 2, 1, 0, 0)),
        "stable": Side(ok=flat(3_800)),
    },
    processor=CLEAN_PROCESSOR,
)
CLEAN = Scenario(slot=1, api=CLEAN_API, processor=CLEAN_PROCESSOR)
FEW = Scenario(
    slot=2,
    api={"canary": Side(ok=flat(2)), "stable": Side(ok=flat(3_800))},
    processor={"canary": Side(ok=flat(1)), "stable": Side(ok=flat(950))},
)
SCENARIOS = (SPARSE, CLEAN, FEW)


def cumulative(start: int, per_interval: Sequence[int], *, spread: bool) -> list[tuple[int, int]]:
    """A counter's samples: spread evenly over each interval, or all at its middle (an error
    now and then)."""
    samples = []
    for t in range(start, start + len(per_interval) * INTERVAL + 1, SCRAPE):
        index, offset = divmod(t - start, INTERVAL)
        value = sum(per_interval[:index])
        if index < len(per_interval):
            part = per_interval[index]
            value += part * offset // INTERVAL if spread else (part if offset >= 30 else 0)
        samples.append((t, value))
    return samples


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{key}="{value}"' for key, value in labels.items())


def _series(name: str, labels: Mapping[str, str], samples: Sequence[tuple[int, float]]) -> str:
    return "".join(f"{name}{{{_labels(labels)}}} {v:g} {t}\n" for t, v in samples)


def _histogram(
    name: str,
    labels: Mapping[str, str],
    counts: Sequence[tuple[int, int]],
    seconds: float,
    buckets: Sequence[float],
) -> str:
    """Every observation takes `seconds`: the buckets from there up hold them all."""
    text = ""
    for le in (*buckets, float("inf")):
        bucket = [(t, c if seconds <= le else 0) for t, c in counts]
        text += _series(f"{name}_bucket", {**labels, "le": f"{le:g}"}, bucket)
    text += _series(f"{name}_count", labels, counts)
    text += _series(f"{name}_sum", labels, [(t, c * seconds) for t, c in counts])
    return text


def openmetrics(scenarios: Sequence[Scenario]) -> str:
    """The series the services export, named and labelled as they name them, plus `track`."""
    requests, durations, orders, processing = "", "", "", ""
    for scenario in scenarios:
        start = scenario.start
        for track, side in scenario.api.items():
            route = {"route": "/orders", "method": "POST", "track": track}
            requests += _series(
                "http_requests_total",
                {**route, "status": "202"},
                cumulative(start, side.ok, spread=True),
            )
            # Like the service: a 5xx series exists from its first error on.
            if any(side.errors):
                requests += _series(
                    "http_requests_total",
                    {**route, "status": "500"},
                    cumulative(start, side.errors, spread=False),
                )
            probe = {"route": "/healthz", "method": "GET", "track": track}
            probes = cumulative(start, flat(PROBES), spread=True)
            requests += _series("http_requests_total", {**probe, "status": "200"}, probes)
            served = [
                (t, a + b)
                for (t, a), (_, b) in zip(
                    cumulative(start, side.ok, spread=True),
                    cumulative(start, side.errors, spread=False),
                    strict=True,
                )
            ]
            durations += _histogram(
                "http_request_duration_seconds", route, served, side.seconds, API_BUCKETS
            )
            # Probes answer at once: counted, they would pull the quantile down.
            durations += _histogram(
                "http_request_duration_seconds", probe, probes, 0.001, API_BUCKETS
            )
        for track, side in scenario.processor.items():
            completed = cumulative(start, side.ok, spread=True)
            failed = cumulative(start, side.errors, spread=False)
            orders += _series(
                "orders_processed_total", {"status": "COMPLETED", "track": track}, completed
            )
            orders += _series(
                "orders_processed_total", {"status": "FAILED", "track": track}, failed
            )
            finished = [(t, a + b) for (t, a), (_, b) in zip(completed, failed, strict=True)]
            processing += _histogram(
                "order_processing_duration_seconds",
                {"track": track},
                finished,
                side.seconds,
                PROCESSOR_BUCKETS,
            )
    return (
        "# TYPE http_requests counter\n"
        + requests
        + "# TYPE http_request_duration_seconds histogram\n"
        + durations
        + "# TYPE orders_processed counter\n"
        + orders
        + "# TYPE order_processing_duration_seconds histogram\n"
        + processing
        + "# EOF\n"
    )


def backfilled(workdir: Path, scenarios: Sequence[Scenario]) -> None:
    """The TSDB `prometheus.running` opens, filled with the scenarios' series."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "series.om"
    source.write_text(openmetrics(scenarios))
    subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(source),
            str(workdir / "data"),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[prometheus.Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    backfilled(workdir, SCENARIOS)
    with prometheus.running(workdir, targets=[], rule_files=[]) as running:
        yield running


def spec(server: prometheus.Prometheus, **fields: object) -> rollout_spec.Analysis:
    return rollout_spec.Analysis.model_validate(
        {"prometheus": {"address": server.url}, "intervalSeconds": INTERVAL, **fields}
    )


def read_and_judge(
    analysis_spec: rollout_spec.Analysis,
    component: rollout_spec.Component,
    at: float,
    checks: rollout_spec.Checks | None = None,
    pool: urllib3.PoolManager | None = None,
) -> tuple[analysis.Window, judge.Result]:
    checks = checks or analysis_spec.checks(component)
    server = analysis.Prometheus(analysis_spec.prometheus.address, timeout_seconds=5, pool=pool)
    window = analysis.read_window(
        server,
        checks,
        component=component,
        interval_seconds=analysis_spec.interval_seconds,
        intervals=INTERVALS,
        at=at,
    )
    result = judge.judge(
        checks,
        window.readings,
        min_samples=analysis_spec.min_samples,
        interval_seconds=analysis_spec.interval_seconds,
        window_seconds=analysis_spec.interval_seconds * INTERVALS,
    )
    return window, result


def verdicts(result: judge.Result) -> dict[str, judge.Verdict]:
    return {m.name: m.verdict for m in result.measures}


def test_sparse_canary_errors_are_counted_per_interval_and_fail_the_canary(
    server: prometheus.Prometheus,
) -> None:
    window, result = read_and_judge(spec(server), "api", SPARSE.at)
    canary, stable = window.readings.error_ratios["http-5xx"]
    assert list(canary.errors) == [0, 1, 2, 1, 0, 0]
    assert list(canary.totals) == [200, 201, 202, 201, 200, 200]
    assert list(stable.errors) == [0] * INTERVALS
    assert list(stable.totals) == [3_800] * INTERVALS
    assert result.verdict == judge.FAIL
    assert verdicts(result) == {"http-5xx": judge.FAIL, "http-p99": judge.PASS}
    assert not result.gate_failed


def test_equal_clean_tracks_pass_for_both_components(server: prometheus.Prometheus) -> None:
    for component in rollout_spec.COMPONENTS:
        window, result = read_and_judge(spec(server), component, CLEAN.at)
        assert result.verdict == judge.PASS, result.summary()
        assert not window.readings.missing
    window, _ = read_and_judge(spec(server), "api", CLEAN.at)
    latency = window.readings.latencies["http-p99"]
    assert latency.canary == pytest.approx(P99_OF_20MS)
    assert latency.stable == pytest.approx(P99_OF_20MS)
    # Client requests only: the probes' 120 per interval are not samples.
    assert (latency.canary_samples, latency.stable_samples) == (200 * INTERVALS, 3_800 * INTERVALS)


def test_too_few_canary_samples_is_inconclusive(server: prometheus.Prometheus) -> None:
    for component in rollout_spec.COMPONENTS:
        _, result = read_and_judge(spec(server), component, FEW.at)
        assert result.verdict == judge.INCONCLUSIVE, component
        assert all("fewer than 100" in m.detail for m in result.measures), result.summary()


def test_the_observed_share_counts_client_requests_and_finished_orders(
    server: prometheus.Prometheus,
) -> None:
    api, _ = read_and_judge(spec(server), "api", CLEAN.at)
    processor = analysis.read(spec(server), "processor", intervals=INTERVALS, at=CLEAN.at)
    # 200 of 4000 requests and 50 of 1000 orders; probes (equal on both sides) would give 16 %.
    assert api.observed_share == pytest.approx(0.05)
    assert processor.observed_share == pytest.approx(0.05)
    assert api.share_missing is None


GATES = rollout_spec.Checks(
    gates=[
        rollout_spec.Gate(
            name="p99-under-10ms",
            query=(
                "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
                '{route="/orders",track="{track}"}[{interval}])))'
            ),
            threshold=0.01,
        ),
        rollout_spec.Gate(
            name="no-5xx",
            query=(
                'sum(increase(http_requests_total{status=~"5..",track="{track}"}[{interval}]))'
                " or vector(0)"
            ),
            threshold=0,
        ),
        rollout_spec.Gate(
            name="absent",
            query='sum(increase(orders_processed_total{status="LOST",track="{track}"}[{interval}]))',
            threshold=0,
        ),
        rollout_spec.Gate(name="bad-query", query="sum(rate(x[{interval}])", threshold=0),
    ]
)


def test_gates_breached_passed_absent_and_malformed(server: prometheus.Prometheus) -> None:
    window, result = read_and_judge(spec(server), "api", CLEAN.at, GATES)
    measures = {m.name: m for m in result.measures}
    assert window.readings.gates["p99-under-10ms"] == pytest.approx(P99_OF_20MS)
    assert measures["p99-under-10ms"].verdict == judge.FAIL
    assert result.gate_failed
    # `or vector(0)`: no 5xx series at all is a count of 0, which passes.
    assert (measures["no-5xx"].verdict, measures["no-5xx"].value) == (judge.PASS, 0.0)
    # Without it, no series is no data: inconclusive, never 0.
    assert window.readings.gates["absent"] is None
    assert measures["absent"].verdict == judge.INCONCLUSIVE
    assert measures["absent"].detail == "no data: the query gave no series (max 0)"
    assert measures["bad-query"].verdict == judge.INCONCLUSIVE
    assert measures["bad-query"].detail.startswith("no data: Prometheus answered bad_data: ")


def test_a_window_without_series_is_inconclusive_with_the_reason(
    server: prometheus.Prometheus,
) -> None:
    window, result = read_and_judge(spec(server), "api", BASE - SLOT)
    assert result.verdict == judge.INCONCLUSIVE
    assert [m.detail for m in result.measures] == [
        "no data: no canary series for the total",
        "no data: no canary series for the sample count",
    ]
    assert window.observed_share is None
    assert window.share_missing == "no canary series for the share"


def assert_all_inconclusive(
    window: analysis.Window, result: judge.Result, reason: str, checks: rollout_spec.Checks
) -> None:
    assert result.verdict == judge.INCONCLUSIVE
    count = len(checks.gates) + len(checks.error_ratios) + len(checks.latencies)
    assert len(result.measures) == count
    for measure in result.measures:
        assert measure.verdict == judge.INCONCLUSIVE
        assert measure.detail.startswith(f"no data: {reason}"), measure.detail
    assert window.observed_share is None
    assert window.share_missing is not None
    assert window.share_missing.startswith(reason)


class CountingPool(urllib3.PoolManager):
    """Counts the requests it is asked to send."""

    sent = 0

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
        self.sent += 1
        return super().urlopen(method, url, redirect=redirect, **kw)


def test_a_stopped_prometheus_makes_every_check_inconclusive_at_once(tmp_path: Path) -> None:
    with prometheus.running(tmp_path, targets=[], rule_files=[]) as stopped:
        pass
    checks = rollout_spec.Checks.model_validate(
        {**rollout_spec.ApiChecks().model_dump(), "gates": GATES.gates}
    )
    pool = CountingPool()
    window, result = read_and_judge(spec(stopped), "api", CLEAN.at, checks, pool)
    assert_all_inconclusive(window, result, f"Prometheus unreachable at {stopped.url}", checks)
    # One attempt: the pass's other queries do not each wait for an unreachable server.
    assert pool.sent == 1


class _BadGateway(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def bad_gateway() -> Iterator[str]:
    """A proxy in front of a Prometheus that is not there: answers, but not Prometheus'."""
    with http.server.ThreadingHTTPServer((processes.LOOPBACK_HOST, 0), _BadGateway) as proxy:
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://{processes.LOOPBACK_HOST}:{proxy.server_address[1]}"
        finally:
            proxy.shutdown()


def test_an_answer_that_is_not_prometheus_is_no_data_with_its_status() -> None:
    with bad_gateway() as address:
        analysis_spec = rollout_spec.Analysis.model_validate({"prometheus": {"address": address}})
        window, result = read_and_judge(analysis_spec, "processor", CLEAN.at)
    reason = "HTTP 502: <html><body>502 Bad Gateway</body></html>"
    assert_all_inconclusive(window, result, reason, analysis_spec.checks("processor"))


def test_a_prometheus_that_does_not_answer_times_out_per_query() -> None:
    # Accepts connections (the kernel's backlog) and never answers.
    with socket.socket() as silent:
        silent.bind((processes.LOOPBACK_HOST, 0))
        silent.listen(16)
        address = f"http://{processes.LOOPBACK_HOST}:{silent.getsockname()[1]}"
        server = analysis.Prometheus(address, timeout_seconds=0.3)
        began = time.monotonic()
        with pytest.raises(analysis.NoData, match=r"did not answer within 0.3s"):
            server.instant("vector(1)", at=CLEAN.at)
        assert time.monotonic() - began < 2
