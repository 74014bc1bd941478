"""The rollout analysis read from a real Prometheus (Debian's `prometheus`): fixed series written
as OpenMetrics, backfilled with `promtool tsdb create-blocks-from openmetrics`, queried at a
fixed time inside them with the default checks' own PromQL, and judged.

Each scenario has its own two hours, so the windows never see each other's samples; two
pipelines may share a scenario's hours, as they share a Prometheus. Every series carries the
`version` and `track` its pods export; the checks select by `version`, each track's revision.
Samples are 5 s apart and fall on the interval boundaries, so `increase()` over an interval is
exact (Prometheus 2's ranges include both ends; 3's leave the start out and extrapolate).
"""

from __future__ import annotations

import contextlib
import hashlib
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
from order_operator import analysis, rollouts
from order_operator.rollout import judge
from order_operator.rollout import spec as rollout_spec
from order_operator.rollout import status as rollout_status

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


NONE = (0,) * (1 + INTERVALS)


@dataclass(frozen=True)
class Side:
    """One track's traffic per interval, the lead interval first, then the window's."""

    ok: Sequence[int]
    errors: Sequence[int] = NONE
    seconds: float = 0.02
    failed_orders: Sequence[int] = NONE
    """API only: of its `ok` (accepted orders), how many the processor ended FAILED…"""
    rejected_orders: Sequence[int] = NONE
    """…and REJECTED; the rest COMPLETED."""


def revision(pipeline: str, component: rollout_spec.Component, track: rollout_spec.Track) -> str:
    """A pod template's revision as the operator names it: a short hash, unique per pipeline."""
    return hashlib.sha256(f"{pipeline}/{component}/{track}".encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Scenario:
    slot: int
    api: Mapping[rollout_spec.Track, Side]
    processor: Mapping[rollout_spec.Track, Side]
    pipeline: str = "orders"

    @property
    def start(self) -> int:
        return BASE + self.slot * SLOT

    @property
    def at(self) -> int:
        """The end of the window: the evaluation time."""
        return self.start + (1 + INTERVALS) * INTERVAL

    def revisions(self, component: rollout_spec.Component) -> rollout_spec.Revisions:
        return rollout_spec.Revisions(
            canary=revision(self.pipeline, component, "canary"),
            stable=revision(self.pipeline, component, "stable"),
        )


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
# Another pipeline in the same hours as CLEAN, with the same metric names and tracks: a canary
# that errs on both components, and another share.
NEIGHBOUR = Scenario(
    slot=1,
    pipeline="returns",
    api={
        "canary": Side(ok=flat(300), errors=flat(6)),
        "stable": Side(ok=flat(2_700)),
    },
    processor={
        "canary": Side(ok=flat(100), errors=flat(5)),
        "stable": Side(ok=flat(900)),
    },
)
# Clean HTTP on both API tracks; the canary's orders then fail in the processor (3 % against
# 0.05 %), and both have their orders rejected alike.
PRODUCED_FAILING = Scenario(
    slot=3,
    api={
        "canary": Side(ok=flat(200), failed_orders=flat(6), rejected_orders=flat(10)),
        "stable": Side(ok=flat(3_800), failed_orders=flat(2), rejected_orders=flat(190)),
    },
    processor=CLEAN_PROCESSOR,
)
# A REJECTED order is the business saying no (fraud, a declined card, no stock), not a failure.
PRODUCED_REJECTED = Scenario(
    slot=4,
    api={
        "canary": Side(ok=flat(200), rejected_orders=flat(40)),
        "stable": Side(ok=flat(3_800)),
    },
    processor=CLEAN_PROCESSOR,
)
SCENARIOS = (SPARSE, CLEAN, FEW, NEIGHBOUR, PRODUCED_FAILING, PRODUCED_REJECTED)


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
    """The series the services export, named and labelled as they name them, with the
    `version` and `track` of the pods that export them."""
    requests, durations, orders, processing, produced = "", "", "", "", ""
    for scenario in scenarios:
        start = scenario.start
        # During an API rollout the processor is one release for the orders of both API tracks.
        processor_pod = {
            "version": revision(scenario.pipeline, "processor", "stable"),
            "track": "stable",
        }
        for track, side in scenario.api.items():
            pod = {"version": revision(scenario.pipeline, "api", track), "track": track}
            route = {"route": "/orders", "method": "POST", **pod}
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
            probe = {"route": "/healthz", "method": "GET", **pod}
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
            outcomes = {
                "COMPLETED": [
                    ok - failed - rejected
                    for ok, failed, rejected in zip(
                        side.ok, side.failed_orders, side.rejected_orders, strict=True
                    )
                ],
                "FAILED": side.failed_orders,
                "REJECTED": side.rejected_orders,
            }
            for status, counts in outcomes.items():
                # A producer's series exists from its first order with that outcome on.
                if any(counts):
                    labels = {**processor_pod, "producer_version": pod["version"], "status": status}
                    produced += _series(
                        "orders_processed_by_producer_total",
                        labels,
                        cumulative(start, counts, spread=True),
                    )
        for track, side in scenario.processor.items():
            pod = {"version": revision(scenario.pipeline, "processor", track), "track": track}
            completed = cumulative(start, side.ok, spread=True)
            failed = cumulative(start, side.errors, spread=False)
            orders += _series("orders_processed_total", {"status": "COMPLETED", **pod}, completed)
            orders += _series("orders_processed_total", {"status": "FAILED", **pod}, failed)
            finished = [(t, a + b) for (t, a), (_, b) in zip(completed, failed, strict=True)]
            processing += _histogram(
                "order_processing_duration_seconds",
                pod,
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
        + "# TYPE orders_processed_by_producer counter\n"
        + produced
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
    scenario: Scenario,
    checks: rollout_spec.Checks | None = None,
    pool: urllib3.PoolManager | None = None,
    at: float | None = None,
) -> tuple[analysis.Window, judge.Result]:
    """The window of one pipeline's component ending at the scenario's `at` (or at `at`)."""
    checks = checks or analysis_spec.checks(component)
    server = analysis.Prometheus(analysis_spec.prometheus.address, timeout_seconds=5, pool=pool)
    revisions = scenario.revisions(component)
    window = analysis.read_window(
        server,
        checks,
        component=component,
        revisions=revisions,
        interval_seconds=analysis_spec.interval_seconds,
        intervals=INTERVALS,
        at=scenario.at if at is None else at,
    )
    result = judge.judge(
        checks,
        window.readings,
        min_samples=analysis_spec.min_samples,
        revisions=revisions,
        interval_seconds=analysis_spec.interval_seconds,
        window_seconds=analysis_spec.interval_seconds * INTERVALS,
    )
    return window, result


def verdicts(result: judge.Result) -> dict[str, judge.Verdict]:
    return {m.name: m.verdict for m in result.measures}


def test_sparse_canary_errors_are_counted_per_interval_and_fail_the_canary(
    server: prometheus.Prometheus,
) -> None:
    window, result = read_and_judge(spec(server), "api", SPARSE)
    canary, stable = window.readings.error_ratios["http-5xx"]
    assert list(canary.errors) == [0, 1, 2, 1, 0, 0]
    assert list(canary.totals) == [200, 201, 202, 201, 200, 200]
    assert list(stable.errors) == [0] * INTERVALS
    assert list(stable.totals) == [3_800] * INTERVALS
    assert result.verdict == judge.FAIL
    assert verdicts(result) == {
        "http-5xx": judge.FAIL,
        "produced-orders-failed": judge.PASS,
        "http-p99": judge.PASS,
    }
    assert not result.gate_failed


def test_equal_clean_tracks_pass_for_both_components(server: prometheus.Prometheus) -> None:
    for component in rollout_spec.COMPONENTS:
        window, result = read_and_judge(spec(server), component, CLEAN)
        assert result.verdict == judge.PASS, result.summary()
        assert not window.readings.missing
    window, _ = read_and_judge(spec(server), "api", CLEAN)
    latency = window.readings.latencies["http-p99"]
    assert latency.canary == pytest.approx(P99_OF_20MS)
    assert latency.stable == pytest.approx(P99_OF_20MS)
    # Client requests only: the probes' 120 per interval are not samples.
    assert (latency.canary_samples, latency.stable_samples) == (200 * INTERVALS, 3_800 * INTERVALS)


def test_too_few_canary_samples_is_inconclusive(server: prometheus.Prometheus) -> None:
    for component in rollout_spec.COMPONENTS:
        _, result = read_and_judge(spec(server), component, FEW)
        assert result.verdict == judge.INCONCLUSIVE, component
        assert all("fewer than 100" in m.detail for m in result.measures), result.summary()


def test_the_observed_share_counts_client_requests_and_finished_orders(
    server: prometheus.Prometheus,
) -> None:
    api, _ = read_and_judge(spec(server), "api", CLEAN)
    processor = analysis.read(
        spec(server),
        "processor",
        revisions=CLEAN.revisions("processor"),
        intervals=INTERVALS,
        at=CLEAN.at,
    )
    # 200 of 4000 requests and 50 of 1000 orders; probes (equal on both sides) would give 16 %.
    assert api.observed_share == pytest.approx(0.05)
    assert processor.observed_share == pytest.approx(0.05)
    assert api.share_missing is None


def test_two_pipelines_in_one_prometheus_each_read_only_their_own_series(
    server: prometheus.Prometheus,
) -> None:
    """Same metric names, same tracks, same hours: the revision tells them apart."""
    for component in rollout_spec.COMPONENTS:
        window, result = read_and_judge(spec(server), component, CLEAN)
        assert result.verdict == judge.PASS, (component, result.summary())
        assert window.observed_share == pytest.approx(0.05), component
    orders, _ = read_and_judge(spec(server), "api", CLEAN)
    canary, stable = orders.readings.error_ratios["http-5xx"]
    assert (list(canary.errors), list(canary.totals)) == ([0] * INTERVALS, [200] * INTERVALS)
    assert list(stable.totals) == [3_800] * INTERVALS

    returns, result = read_and_judge(spec(server), "api", NEIGHBOUR)
    canary, stable = returns.readings.error_ratios["http-5xx"]
    assert (list(canary.errors), list(canary.totals)) == ([6] * INTERVALS, [306] * INTERVALS)
    assert list(stable.totals) == [2_700] * INTERVALS
    assert returns.observed_share == pytest.approx(306 / 3_006)
    assert verdicts(result)["http-5xx"] == judge.FAIL
    returns, result = read_and_judge(spec(server), "processor", NEIGHBOUR)
    assert returns.observed_share == pytest.approx(105 / 1_005)
    assert verdicts(result)["orders-failed"] == judge.FAIL


def test_a_reconcile_pass_reads_the_revisions_its_rollout_status_names(
    server: prometheus.Prometheus,
) -> None:
    """The wiring: the canary and stable revisions in status are what is read and shown."""
    rollout = rollout_spec.RolloutSpec(analysis=spec(server))
    revisions = NEIGHBOUR.revisions("api")
    status = rollout_status.RolloutStatus(
        phase=rollout_status.PROGRESSING,
        stable_revision=revisions.stable,
        canary_revision=revisions.canary,
        current_step=0,
        target_weight=10,
        step_started_at=NEIGHBOUR.at - INTERVALS * INTERVAL,
    )
    reading, share = rollouts._analyse(rollouts.Memory(), rollout, "api", status, NEIGHBOUR.at)
    assert reading is not None
    measures = {m.name: m for m in reading.result.measures}
    assert measures["http-5xx"].verdict == judge.FAIL
    assert measures["http-5xx"].detail.startswith("canary 36/1836, stable 0/16200")
    assert f'version="{revisions.canary}"' in measures["http-5xx"].query
    assert share == pytest.approx(306 / 3_006)


def test_an_api_canary_whose_orders_fail_in_the_processor_fails(
    server: prometheus.Prometheus,
) -> None:
    """Its HTTP answers are as clean as the stable's: only the processor's outcomes of the
    orders it produced show it."""
    window, result = read_and_judge(spec(server), "api", PRODUCED_FAILING)
    canary, stable = window.readings.error_ratios["produced-orders-failed"]
    # Rejections are in the totals, never in the errors.
    assert (list(canary.errors), list(canary.totals)) == ([6] * INTERVALS, [200] * INTERVALS)
    assert (list(stable.errors), list(stable.totals)) == ([2] * INTERVALS, [3_800] * INTERVALS)
    assert result.verdict == judge.FAIL
    assert verdicts(result) == {
        "http-5xx": judge.PASS,
        "produced-orders-failed": judge.FAIL,
        "http-p99": judge.PASS,
    }
    produced = {m.name: m for m in result.measures}["produced-orders-failed"]
    assert f'producer_version="{PRODUCED_FAILING.revisions("api").canary}"' in produced.query


def test_an_api_canary_whose_orders_are_rejected_more_passes(
    server: prometheus.Prometheus,
) -> None:
    window, result = read_and_judge(spec(server), "api", PRODUCED_REJECTED)
    canary, _ = window.readings.error_ratios["produced-orders-failed"]
    assert (canary.error_sum, canary.total_sum) == (0, 200 * INTERVALS)
    assert result.verdict == judge.PASS, result.summary()


GATES = rollout_spec.Checks(
    gates=[
        rollout_spec.Gate(
            name="p99-under-10ms",
            query=(
                "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
                '{route="/orders",version="{version}"}[{interval}])))'
            ),
            threshold=0.01,
        ),
        rollout_spec.Gate(
            name="no-5xx",
            query=(
                'sum(increase(http_requests_total{status=~"5..",version="{version}"}[{interval}]))'
                " or vector(0)"
            ),
            threshold=0,
        ),
        rollout_spec.Gate(
            name="5xx-by-track",
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
    window, result = read_and_judge(spec(server), "api", CLEAN, GATES)
    measures = {m.name: m for m in result.measures}
    assert window.readings.gates["p99-under-10ms"] == pytest.approx(P99_OF_20MS)
    assert measures["p99-under-10ms"].verdict == judge.FAIL
    assert result.gate_failed
    # `or vector(0)`: no 5xx series at all is a count of 0, which passes.
    assert (measures["no-5xx"].verdict, measures["no-5xx"].value) == (judge.PASS, 0.0)
    # `{track}` alone is every pipeline's canary: the neighbour's 5xx count here.
    assert measures["5xx-by-track"].query.startswith(
        'sum(increase(http_requests_total{status=~"5..",track="canary"}[60s]))'
    )
    assert (measures["5xx-by-track"].verdict, measures["5xx-by-track"].value) == (judge.FAIL, 6.0)
    # Without it, no series is no data: inconclusive, never 0.
    assert window.readings.gates["absent"] is None
    assert measures["absent"].verdict == judge.INCONCLUSIVE
    assert measures["absent"].detail == "no data: the query gave no series (max 0)"
    assert measures["bad-query"].verdict == judge.INCONCLUSIVE
    assert measures["bad-query"].detail.startswith("no data: Prometheus answered bad_data: ")


def test_a_window_without_series_is_inconclusive_with_the_reason(
    server: prometheus.Prometheus,
) -> None:
    window, result = read_and_judge(spec(server), "api", CLEAN, at=BASE - SLOT)
    assert result.verdict == judge.INCONCLUSIVE
    assert [m.detail for m in result.measures] == [
        "no data: no canary series for the total",
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
    window, result = read_and_judge(spec(stopped), "api", CLEAN, checks, pool)
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
        window, result = read_and_judge(analysis_spec, "processor", CLEAN)
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
