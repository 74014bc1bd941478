"""The analysis judge on fixed vectors: Fisher's exact test, gates, comparisons, verdicts."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Literal

import pytest

from order_operator.rollout import judge
from order_operator.rollout import spec as rollout_spec

MIN_SAMPLES = 100


def exact_fisher_greater(a: int, b: int, c: int, d: int) -> Fraction:
    """The textbook definition with exact integers: sum of hypergeometric terms >= a."""
    row, column, total = a + b, a + c, a + b + c + d
    denominator = math.comb(total, row)
    return sum(
        (
            Fraction(math.comb(column, x) * math.comb(total - column, row - x), denominator)
            for x in range(a, min(row, column) + 1)
        ),
        Fraction(0),
    )


def test_fisher_matches_the_lady_tasting_tea() -> None:
    # Fisher's own example: 3 of 4 cups right, one-sided p = 17/70.
    assert judge.fisher_greater(3, 1, 1, 3) == pytest.approx(17 / 70, rel=1e-12)


def test_fisher_matches_the_published_one_tailed_value() -> None:
    # The dieting/studying table (Wikipedia, "Fisher's exact test"): one-tailed p = 0.001380
    # (0.001346 for the table itself + 0.000034 for the one more extreme).
    assert judge.fisher_greater(11, 3, 1, 9) == pytest.approx(0.001380, abs=5e-7)


def test_fisher_agrees_with_exact_integer_arithmetic_on_every_small_table() -> None:
    for a, b, c, d in itertools.product(range(5), repeat=4):
        expected = float(exact_fisher_greater(a, b, c, d))
        assert judge.fisher_greater(a, b, c, d) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("table", [(4, 296, 0, 5_700), (30, 4_970, 100, 49_900)])
def test_fisher_in_log_space_stays_accurate_at_tens_of_thousands_of_requests(
    table: tuple[int, int, int, int],
) -> None:
    assert judge.fisher_greater(*table) == pytest.approx(
        float(exact_fisher_greater(*table)), rel=1e-8
    )


def test_fisher_is_one_without_canary_errors() -> None:
    assert judge.fisher_greater(0, 500, 10, 4990) == 1.0


def ratio(**fields: float) -> rollout_spec.ErrorRatioComparison:
    return rollout_spec.ErrorRatioComparison.model_validate(
        {"errors": {"metric": "e"}, "total": {"metric": "t"}, **fields}
    )


def compare(
    canary: judge.Counts,
    stable: judge.Counts,
    comparison: rollout_spec.ErrorRatioComparison | None = None,
) -> judge.Measure:
    return judge.judge_error_ratio(
        comparison or ratio(), canary, stable, min_samples=MIN_SAMPLES, query="q"
    )


def test_sparse_canary_errors_against_a_clean_stable_fail() -> None:
    """The rank tests' blind spot: per interval the canary's errors are mostly 0, like the
    stable's, but pooled over the window 4 errors in 300 against 0 in 5700 is no chance."""
    canary = judge.Counts(errors=[0, 1, 2, 1, 0, 0], totals=[50] * 6)
    stable = judge.Counts(errors=[0] * 6, totals=[950] * 6)
    measure = compare(canary, stable)
    assert measure.verdict == judge.FAIL
    assert measure.value == pytest.approx(4 / 300)
    assert "p=" in measure.detail


def test_a_canary_erring_like_the_stable_passes() -> None:
    canary = judge.Counts(errors=[0, 1, 0, 0, 0, 0], totals=[50] * 6)
    stable = judge.Counts(errors=[1, 3, 2, 4, 2, 3], totals=[950] * 6)
    assert compare(canary, stable).verdict == judge.PASS


def test_a_significant_but_negligible_increase_passes() -> None:
    # 0.11 % against 0.10 % over millions: significant, far below 0.2 points and +50 %.
    canary = judge.Counts(errors=[1_100], totals=[1_000_000])
    stable = judge.Counts(errors=[10_000], totals=[10_000_000])
    assert judge.fisher_greater(1_100, 998_900, 10_000, 9_990_000) < 0.01
    assert compare(canary, stable).verdict == judge.PASS


def test_the_relative_minimum_alone_can_hold_back_a_failure() -> None:
    canary = judge.Counts(errors=[120], totals=[2_000])  # 6 %
    stable = judge.Counts(errors=[500], totals=[10_000])  # 5 %: +1 point, +20 %
    assert compare(canary, stable, ratio(minRelativeIncrease=0.5)).verdict == judge.PASS
    strict = ratio(minRelativeIncrease=0.1, alpha=0.05)
    assert compare(canary, stable, strict).verdict == judge.FAIL


def test_too_few_samples_on_either_side_is_inconclusive_even_with_errors() -> None:
    few = judge.Counts(errors=[20], totals=[99])
    many = judge.Counts(errors=[0], totals=[10_000])
    assert compare(few, many).verdict == judge.INCONCLUSIVE
    assert compare(many, few).verdict == judge.INCONCLUSIVE


def test_inconsistent_counts_are_inconclusive_not_a_crash() -> None:
    broken = judge.Counts(errors=[300], totals=[200])
    fine = judge.Counts(errors=[0], totals=[1_000])
    assert compare(broken, fine).verdict == judge.INCONCLUSIVE


def gate(comparison: Literal["max", "min"]) -> rollout_spec.Gate:
    return rollout_spec.Gate(name="dlq", query="q", threshold=0.0, comparison=comparison)


@pytest.mark.parametrize(
    ("comparison", "value", "verdict"),
    [
        ("max", 0.0, judge.PASS),
        ("max", 1.0, judge.FAIL),
        ("min", 1.0, judge.PASS),
        ("min", -0.5, judge.FAIL),
        ("max", None, judge.INCONCLUSIVE),
        ("max", math.nan, judge.INCONCLUSIVE),
    ],
)
def test_gate_verdicts(
    comparison: Literal["max", "min"], value: float | None, verdict: judge.Verdict
) -> None:
    assert judge.judge_gate(gate(comparison), value, query="q").verdict == verdict


LATENCY = rollout_spec.LatencyComparison(
    query="q", samples=rollout_spec.Series(metric="c"), tolerance=0.2, toleranceSeconds=0.01
)


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [
        (0.100, 0.100, judge.PASS),
        (0.130, 0.100, judge.PASS),  # limit 0.1 * 1.2 + 0.01 = 0.13
        (0.131, 0.100, judge.FAIL),
        (0.012, 0.001, judge.FAIL),
        (0.011, 0.001, judge.PASS),  # the absolute slack: limit 0.0112
        (None, 0.100, judge.INCONCLUSIVE),
    ],
)
def test_latency_quantile_within_tolerance(
    canary: float | None, stable: float, verdict: judge.Verdict
) -> None:
    reading = judge.LatencyReading(canary, stable, canary_samples=500, stable_samples=5000)
    measure = judge.judge_latency(LATENCY, reading, min_samples=MIN_SAMPLES, query="q")
    assert measure.verdict == verdict


def test_latency_with_too_few_samples_is_inconclusive() -> None:
    reading = judge.LatencyReading(0.5, 0.1, canary_samples=10, stable_samples=5000)
    measure = judge.judge_latency(LATENCY, reading, min_samples=MIN_SAMPLES, query="q")
    assert measure.verdict == judge.INCONCLUSIVE


REVISIONS = rollout_spec.Revisions(canary="c0ffee1234", stable="5ab1e5ab1e")
CHECKS = rollout_spec.Checks(
    gates=[
        rollout_spec.Gate(
            name="dlq-bound",
            query='sum(increase(x{track="{track}",v="{version}"}[{interval}])) or vector(0)',
            threshold=0,
        )
    ],
    error_ratios=[ratio()],
    latencies=[LATENCY],
)
GOOD = judge.Readings(
    gates={"dlq-bound": 0.0},
    error_ratios={
        "error-ratio": (
            judge.Counts(errors=[0], totals=[500]),
            judge.Counts(errors=[3], totals=[9_500]),
        )
    },
    latencies={"latency": judge.LatencyReading(0.1, 0.1, 500, 9_500)},
)


def run(readings: judge.Readings) -> judge.Result:
    return judge.judge(
        CHECKS, readings, min_samples=MIN_SAMPLES, revisions=REVISIONS, interval_seconds=60
    )


def test_every_check_passing_passes_and_each_measure_is_reported() -> None:
    result = run(GOOD)
    assert result.verdict == judge.PASS
    assert [(m.name, m.kind, m.verdict) for m in result.measures] == [
        ("dlq-bound", "gate", judge.PASS),
        ("error-ratio", "errorRatio", judge.PASS),
        ("latency", "latency", judge.PASS),
    ]
    (gate_measure, ratio_measure, _) = result.measures
    # The canary's queries, as sent: its track and its revision.
    assert gate_measure.query == (
        'sum(increase(x{track="canary",v="c0ffee1234"}[60s])) or vector(0)'
    )
    assert ratio_measure.query == (
        '(sum(increase(e{version="c0ffee1234"}[60s])))'
        ' / (sum(increase(t{version="c0ffee1234"}[60s])))'
    )
    assert ratio_measure.value == 0.0


def test_a_gate_breach_fails_and_is_marked_as_a_gate_failure() -> None:
    result = run(judge.Readings(**{**GOOD.__dict__, "gates": {"dlq-bound": 2.0}}))
    assert (result.verdict, result.gate_failed) == (judge.FAIL, True)
    assert result.summary() == "dlq-bound: 2 against max 0"


def test_a_failed_comparison_fails_without_being_a_gate_failure() -> None:
    bad = {
        "error-ratio": (
            judge.Counts(errors=[25], totals=[500]),
            judge.Counts(errors=[3], totals=[9_500]),
        )
    }
    result = run(judge.Readings(**{**GOOD.__dict__, "error_ratios": bad}))
    assert (result.verdict, result.gate_failed) == (judge.FAIL, False)


def test_a_missing_reading_is_inconclusive_never_a_pass() -> None:
    result = run(judge.Readings(**{**GOOD.__dict__, "latencies": {}}))
    assert result.verdict == judge.INCONCLUSIVE
    assert result.summary() == "latency: no data"


def test_a_missing_reading_shows_why_it_is_missing() -> None:
    """The wiring says why it has no number (Prometheus down, an error, no series): status
    shows it, so a person sees why the step holds."""
    readings = judge.Readings(
        missing={
            ("gate", "dlq-bound"): "Prometheus unreachable",
            ("errorRatio", "error-ratio"): "no series",
            ("latency", "latency"): "HTTP 503",
        }
    )
    result = run(readings)
    assert result.verdict == judge.INCONCLUSIVE
    assert [m.detail for m in result.measures] == [
        "no data: Prometheus unreachable (max 0)",
        "no data: no series",
        "no data: HTTP 503",
    ]


def test_nothing_measured_is_inconclusive() -> None:
    assert judge.combine([]).verdict == judge.INCONCLUSIVE


def test_a_measure_survives_the_round_trip_through_status() -> None:
    missing = run(judge.Readings(**{**GOOD.__dict__, "latencies": {}}))
    for measure in (*run(GOOD).measures, *missing.measures):
        assert judge.Measure.from_dict(measure.to_dict()) == measure
    # In a list a null would be stored as is and refused by a non-nullable schema.
    assert "value" not in missing.measures[-1].to_dict()
