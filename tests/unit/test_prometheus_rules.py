"""The shipped Prometheus rules, checked and unit-tested with promtool (Debian's `prometheus`):
every alert fires when it should and stays silent on a short spike (and, for the burn-rate
alerts, on low traffic)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from order_devtools.observability import generate, rules, slos

PIPELINE = {"namespace": "shop", "pipeline": "orders"}
SCOPE = 'namespace="shop", pipeline="orders"'


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: install Debian's `prometheus` package"
    return found


def values(per_minute: Sequence[float]) -> str:
    """A counter's samples, one a minute from 0, growing by `per_minute[i]` in minute i."""
    total = 0.0
    samples = ["0"]
    for increment in per_minute:
        total += increment
        samples.append(f"{total:g}")
    return " ".join(samples)


Traffic = Callable[[Sequence[float], Sequence[float]], list[dict[str, str]]]


def _by_status(metric: str, good: str, bad: str, extra: str = "") -> Traffic:
    def series(good_counts: Sequence[float], bad_counts: Sequence[float]) -> list[dict[str, str]]:
        return [
            {
                "series": f'{metric}{{{extra}status="{good}", {SCOPE}}}',
                "values": values(good_counts),
            },
            {"series": f'{metric}{{{extra}status="{bad}", {SCOPE}}}', "values": values(bad_counts)},
        ]

    return series


def _histogram(metric: str, le: str, extra: str = "") -> Traffic:
    def series(good_counts: Sequence[float], bad_counts: Sequence[float]) -> list[dict[str, str]]:
        counts = [g + b for g, b in zip(good_counts, bad_counts, strict=True)]
        return [
            {"series": f"{metric}_count{{{extra}{SCOPE}}}", "values": values(counts)},
            {
                "series": f'{metric}_bucket{{{extra}le="{le}", {SCOPE}}}',
                "values": values(good_counts),
            },
            {"series": f'{metric}_bucket{{{extra}le="+Inf", {SCOPE}}}', "values": values(counts)},
        ]

    return series


ORDERS_ROUTE = 'route="/v1/orders", method="POST", '
TRAFFIC: dict[str, Traffic] = {
    "api-availability": _by_status("http_requests_total", "202", "503", ORDERS_ROUTE),
    "api-latency": _histogram("http_request_duration_seconds", "0.25", ORDERS_ROUTE),
    "processing-success": _by_status("orders_processed_total", "COMPLETED", "FAILED"),
    "end-to-end-latency": _histogram("order_end_to_end_duration_seconds", "10.0"),
}


def test_every_slo_has_test_traffic() -> None:
    assert set(TRAFFIC) == {slo.name for slo in slos.SLOS}


def _expected(alert: rules.Alert, labels: dict[str, str]) -> dict[str, Any]:
    """The alert as promtool reports it: its labels and its annotations rendered."""
    all_labels = labels | {"severity": alert.severity} | alert.labels

    def render(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: all_labels[m.group(1)], text)

    annotations = alert.rule()["annotations"]
    return {
        "exp_labels": all_labels,
        "exp_annotations": {key: render(value) for key, value in annotations.items()},
    }


def _alert(name: str) -> rules.Alert:
    (found,) = [a for a in rules.alerts() if a.name == name]
    return found


def _run(tmp_path: Path, tests: list[dict[str, Any]]) -> None:
    spec = {
        "rule_files": [str(generate.RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": tests,
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _checks(alert: rules.Alert, at: Sequence[int], expected: list[dict[str, Any]]) -> list[Any]:
    return [
        {"eval_time": f"{minute}m", "alertname": alert.name, "exp_alerts": expected}
        for minute in at
    ]


def test_rules_file_passes_promtool_check() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(generate.RULES_FILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_summary_a_description_and_a_runbook_section() -> None:
    runbook = (generate.REPO / rules.RUNBOOK).read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", runbook, flags=re.MULTILINE)
    }
    for alert in rules.alerts():
        annotations = alert.rule()["annotations"]
        assert annotations["summary"], alert.name
        assert annotations["description"], alert.name
        assert alert.runbook_section in anchors, f"{alert.name}: no runbook section"


@pytest.mark.parametrize("slo", slos.SLOS, ids=lambda slo: slo.name)
def test_burn_rate_alerts_page_on_a_fast_burn_and_ticket_on_a_slow_one(
    slo: slos.Slo, tmp_path: Path
) -> None:
    fast, slow = rules.burn_rate_alerts(slo)
    traffic = TRAFFIC[slo.name]
    per_minute = 1000
    # 20 times the budget for 30 minutes: pages; 5 times for hours: a ticket, never a page.
    fast_bad = per_minute * slo.error_budget * 20
    slow_bad = per_minute * slo.error_budget * 5
    minutes = 240
    labels = PIPELINE | {"slo": slo.name}
    _run(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": traffic([per_minute - fast_bad] * 30, [fast_bad] * 30),
                "alert_rule_test": _checks(fast, [30], [_expected(fast, labels)]),
            },
            {
                "interval": "1m",
                "input_series": traffic([per_minute - slow_bad] * minutes, [slow_bad] * minutes),
                "alert_rule_test": _checks(slow, [60, 240], [_expected(slow, labels)])
                + _checks(fast, [10, 60, 240], []),
            },
        ],
    )


@pytest.mark.parametrize("slo", slos.SLOS, ids=lambda slo: slo.name)
def test_burn_rate_alerts_stay_silent_on_a_short_spike_and_on_low_traffic(
    slo: slos.Slo, tmp_path: Path
) -> None:
    fast, slow = rules.burn_rate_alerts(slo)
    traffic = TRAFFIC[slo.name]
    # Twelve hours of good traffic, then one minute in which half the events are bad.
    history = 720
    good = [1000.0] * (history + 120)
    bad = [0.0] * len(good)
    good[history], bad[history] = 500, 500
    # One event every five minutes, every one of them bad: below the traffic guard.
    sparse = [1.0 if minute % 5 == 0 else 0.0 for minute in range(480)]
    after_spike = [history + offset for offset in (1, 2, 5, 30, 110)]
    _run(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": traffic(good, bad),
                "alert_rule_test": _checks(fast, after_spike, []) + _checks(slow, after_spike, []),
            },
            {
                "interval": "1m",
                "input_series": traffic([0.0] * len(sparse), sparse),
                "alert_rule_test": _checks(fast, [30, 120, 470], [])
                + _checks(slow, [120, 470], []),
            },
        ],
    )


def _gauge(series: str, samples: str) -> dict[str, str]:
    return {"series": series, "values": samples}


def test_dead_letter_queue_alert_fires_on_a_dead_letter_but_not_on_a_blip(tmp_path: Path) -> None:
    alert = _alert("OrderDeadLetterQueueNotEmpty")
    dlq = f'order_queue_messages{{queue="dead-letter", state="in_flight", {SCOPE}}}'
    _run(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [_gauge(dlq, "0x9 1x20")],
                "alert_rule_test": _checks(alert, [5], [])
                + _checks(alert, [15, 25], [_expected(alert, PIPELINE)]),
            },
            {
                "interval": "1m",
                "input_series": [_gauge(dlq, "0x9 1 0x20")],
                "alert_rule_test": _checks(alert, [10, 11, 12, 20], []),
            },
        ],
    )


def test_processing_stalled_fires_when_a_backlog_is_not_worked_off(tmp_path: Path) -> None:
    alert = _alert("OrderProcessingStalled")
    backlog = f'order_queue_messages{{queue="orders", state="visible", {SCOPE}}}'
    processed = f'orders_processed_total{{status="COMPLETED", {SCOPE}}}'
    _run(
        tmp_path,
        [
            {  # a backlog and nothing finishing: stalled
                "interval": "1m",
                "input_series": [_gauge(backlog, "50x40"), _gauge(processed, "100x40")],
                "alert_rule_test": _checks(alert, [5], [])
                + _checks(alert, [25, 40], [_expected(alert, PIPELINE)]),
            },
            {  # a backlog being worked off: busy, not stalled
                "interval": "1m",
                "input_series": [_gauge(backlog, "50x40"), _gauge(processed, "0+30x40")],
                "alert_rule_test": _checks(alert, [25, 40], []),
            },
            {  # a short pause (a processor restarting): silent
                "interval": "1m",
                "input_series": [
                    _gauge(backlog, "50x40"),
                    _gauge(processed, "0+30x20 600x5 630+30x14"),
                ],
                "alert_rule_test": _checks(alert, [25, 30, 40], []),
            },
        ],
    )


def test_operator_alerts_fire_on_lasting_failures_only(tmp_path: Path) -> None:
    errors = _alert("OrderOperatorReconcileErrors")
    not_ready = _alert("OrderPipelineNotReady")
    error_series = (
        'orderpipeline_reconcile_errors_total{job="order-operator", error="ApiException"}'
    )
    ready = 'orderpipeline_ready{job="order-operator", namespace="shop", name="orders"}'
    _run(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [_gauge(error_series, "0+2x40"), _gauge(ready, "0x40")],
                "alert_rule_test": _checks(errors, [10], [])
                + _checks(
                    errors,
                    [30],
                    [_expected(errors, {"job": "order-operator", "error": "ApiException"})],
                )
                + _checks(
                    not_ready, [30], [_expected(not_ready, {"namespace": "shop", "name": "orders"})]
                ),
            },
            {  # one failed pass, and a pipeline not Ready for five minutes while it rolls out
                "interval": "1m",
                "input_series": [
                    _gauge(error_series, "0x4 1x35"),
                    _gauge(ready, "0x5 1x35"),
                ],
                "alert_rule_test": _checks(errors, [5, 10, 20, 30], [])
                + _checks(not_ready, [5, 10, 30], []),
            },
        ],
    )


def test_scrape_alerts_fire_when_a_target_is_down_or_gone(tmp_path: Path) -> None:
    down = _alert("OrderScrapeTargetDown")
    missing = _alert("OrderScrapeTargetMissing")
    api = 'up{job="order-api", instance="10.0.0.1:8000"}'
    operator = 'up{job="order-operator", instance="10.0.0.2:9090"}'
    _run(
        tmp_path,
        [
            {  # the API fails its scrapes; no operator target at all
                "interval": "1m",
                "input_series": [_gauge(api, "1x4 0x20")],
                "alert_rule_test": _checks(
                    down,
                    [15],
                    [_expected(down, {"job": "order-api", "instance": "10.0.0.1:8000"})],
                )
                + _checks(missing, [15], [_expected(missing, {"job": "order-operator"})]),
            },
            {  # two failed scrapes, both jobs present: silent
                "interval": "1m",
                "input_series": [_gauge(api, "1x4 0 0 1x20"), _gauge(operator, "1x30")],
                "alert_rule_test": _checks(down, [6, 7, 15], []) + _checks(missing, [15], []),
            },
        ],
    )


def test_every_alert_is_unit_tested_here() -> None:
    source = Path(__file__).read_text()
    burn = {a.name for slo in slos.SLOS for a in rules.burn_rate_alerts(slo)}
    for alert in rules.alerts():
        assert alert.name in burn or f'"{alert.name}"' in source, alert.name


def test_slo_windows_include_every_burn_alert_window() -> None:
    used = {w for a in slos.BURN_ALERTS for c in a.conditions for w in (c.long, c.short)}
    assert used <= set(slos.WINDOWS)
