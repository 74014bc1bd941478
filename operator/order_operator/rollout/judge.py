"""The analysis judge: a canary's verdict from plain numbers read from Prometheus. Pure.

Hard gates are limits: one breach fails the canary at once. Comparisons put the canary against
the stable over the same window. Error ratios use a one-sided Fisher exact test on the pooled
counts of the window plus a minimum effect size: a rank test over per-interval values sees
mostly ties at zero and passes a canary whose errors are sparse; the pooled counts do not.
Latency quantiles are compared with a tolerance. Too few samples, or no data, is
inconclusive: it holds a step and never passes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from order_operator.rollout import spec as rollout_spec

Verdict = Literal["Pass", "Fail", "Inconclusive"]
PASS: Verdict = "Pass"  # noqa: S105 (a verdict, not a password)
FAIL: Verdict = "Fail"
INCONCLUSIVE: Verdict = "Inconclusive"

Kind = Literal["gate", "errorRatio", "latency"]


@dataclass(frozen=True)
class Measure:
    """One check's reading and verdict, as status shows it."""

    name: str
    kind: Kind
    query: str
    value: float | None
    verdict: Verdict
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """Without a value when there is none: inside a list a null would be stored as is."""
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "query": self.query,
            "verdict": self.verdict,
            "detail": self.detail,
        }
        if self.value is not None:
            data["value"] = self.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measure:
        value = data.get("value")
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            query=str(data.get("query", "")),
            value=None if value is None else float(value),
            verdict=data["verdict"],
            detail=str(data.get("detail", "")),
        )


@dataclass(frozen=True)
class Result:
    verdict: Verdict
    measures: tuple[Measure, ...]

    @property
    def gate_failed(self) -> bool:
        """A gate breach aborts at once; a failed comparison counts against failureLimit."""
        return any(m.kind == "gate" and m.verdict == FAIL for m in self.measures)

    @property
    def failed(self) -> tuple[Measure, ...]:
        return tuple(m for m in self.measures if m.verdict == FAIL)

    def summary(self) -> str:
        """The failed (else the inconclusive) measures, one clause each."""
        shown = self.failed or tuple(m for m in self.measures if m.verdict == INCONCLUSIVE)
        return "; ".join(f"{m.name}: {m.detail}" for m in shown) or self.verdict


def combine(measures: Sequence[Measure]) -> Result:
    """Fail if any fails; else inconclusive if any is (or if nothing was measured); else pass."""
    verdicts = {m.verdict for m in measures}
    if FAIL in verdicts:
        verdict = FAIL
    elif INCONCLUSIVE in verdicts or not measures:
        verdict = INCONCLUSIVE
    else:
        verdict = PASS
    return Result(verdict=verdict, measures=tuple(measures))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher exact p-value for the 2x2 table [[a, b], [c, d]]: the chance, with the
    margins fixed, of at least `a` in the top-left cell. Rows are canary and stable, columns
    errors and successes: a small p means the canary errs more than chance explains."""
    if min(a, b, c, d) < 0:
        raise ValueError("counts must not be negative")
    row, column, total = a + b, a + c, a + b + c + d
    top = min(row, column)
    if a > top:
        return 0.0
    if a == 0:
        return 1.0
    # Hypergeometric terms in log space (lgamma): counts reach millions of requests.
    log_all = _log_comb(total, row)
    p = sum(
        math.exp(_log_comb(column, x) + _log_comb(total - column, row - x) - log_all)
        for x in range(a, top + 1)
    )
    return min(1.0, p)


@dataclass(frozen=True)
class Counts:
    """Errors and totals of one track, per interval of the window (pooled by the judge).
    Whole counts: Prometheus' `increase()` extrapolates, the wiring rounds it."""

    errors: Sequence[int]
    totals: Sequence[int]

    @property
    def error_sum(self) -> int:
        return sum(self.errors)

    @property
    def total_sum(self) -> int:
        return sum(self.totals)

    @property
    def ratio(self) -> float:
        return self.error_sum / self.total_sum if self.total_sum else 0.0


def _no_data(reason: str | None) -> str:
    return f"no data: {reason}" if reason else "no data"


def judge_gate(
    gate: rollout_spec.Gate, value: float | None, *, query: str, reason: str | None = None
) -> Measure:
    limit = f"{gate.comparison} {gate.threshold:g}"
    if value is None or math.isnan(value):
        detail = f"{_no_data(reason)} ({limit})"
        return Measure(gate.name, "gate", query, None, INCONCLUSIVE, detail)
    breached = value > gate.threshold if gate.comparison == "max" else value < gate.threshold
    verdict = FAIL if breached else PASS
    return Measure(gate.name, "gate", query, value, verdict, f"{value:g} against {limit}")


def judge_error_ratio(
    comparison: rollout_spec.ErrorRatioComparison,
    canary: Counts,
    stable: Counts,
    *,
    min_samples: int,
    query: str,
) -> Measure:
    """Fail only with significance (p < alpha) and an effect at least the minimum."""
    name = comparison.name
    for track, counts in (("canary", canary), ("stable", stable)):
        if counts.error_sum > counts.total_sum or counts.error_sum < 0:
            return Measure(
                name,
                "errorRatio",
                query,
                None,
                INCONCLUSIVE,
                f"{track} counts are inconsistent ({counts.error_sum} errors of "
                f"{counts.total_sum})",
            )
    seen = (
        f"canary {canary.error_sum}/{canary.total_sum}, stable {stable.error_sum}/"
        f"{stable.total_sum}"
    )
    if min(canary.total_sum, stable.total_sum) < min_samples:
        return Measure(
            name, "errorRatio", query, None, INCONCLUSIVE, f"{seen}: fewer than {min_samples}"
        )
    p = fisher_greater(
        canary.error_sum,
        canary.total_sum - canary.error_sum,
        stable.error_sum,
        stable.total_sum - stable.error_sum,
    )
    increase = canary.ratio - stable.ratio
    large = (
        increase >= comparison.min_absolute_increase
        and canary.ratio >= stable.ratio * (1 + comparison.min_relative_increase)
        and increase > 0
    )
    significant = p < comparison.alpha
    verdict = FAIL if significant and large else PASS
    detail = (
        f"{seen} ({canary.ratio:.4%} vs {stable.ratio:.4%}), p={p:.3g}"
        f"{' < ' if significant else ' >= '}{comparison.alpha:g}"
    )
    return Measure(name, "errorRatio", query, canary.ratio, verdict, detail)


@dataclass(frozen=True)
class LatencyReading:
    canary: float | None
    stable: float | None
    canary_samples: int
    stable_samples: int


def judge_latency(
    comparison: rollout_spec.LatencyComparison,
    reading: LatencyReading,
    *,
    min_samples: int,
    query: str,
) -> Measure:
    name = comparison.name
    samples = f"{reading.canary_samples} vs {reading.stable_samples} samples"
    if min(reading.canary_samples, reading.stable_samples) < min_samples:
        return Measure(
            name, "latency", query, None, INCONCLUSIVE, f"{samples}: fewer than {min_samples}"
        )
    canary, stable = reading.canary, reading.stable
    if canary is None or stable is None or math.isnan(canary) or math.isnan(stable):
        return Measure(name, "latency", query, None, INCONCLUSIVE, f"no data ({samples})")
    limit = stable * (1 + comparison.tolerance) + comparison.tolerance_seconds
    verdict = FAIL if canary > limit else PASS
    detail = f"canary {canary:.4g}s, stable {stable:.4g}s, limit {limit:.4g}s"
    return Measure(name, "latency", query, canary, verdict, detail)


@dataclass(frozen=True)
class Readings:
    """What the wiring read from Prometheus for one component's window, by check name. A
    check without a reading is inconclusive."""

    gates: Mapping[str, float | None] = field(default_factory=dict)
    error_ratios: Mapping[str, tuple[Counts, Counts]] = field(default_factory=dict)
    """(canary, stable) per comparison."""
    latencies: Mapping[str, LatencyReading] = field(default_factory=dict)
    missing: Mapping[tuple[Kind, str], str] = field(default_factory=dict)
    """Why a check has no reading, by (kind, name): Prometheus down, an error, no series. The
    measure's detail shows it, so status says why a step holds."""

    def reason(self, kind: Kind, name: str) -> str | None:
        return self.missing.get((kind, name))


def judge(
    checks: rollout_spec.Checks,
    readings: Readings,
    *,
    min_samples: int,
    revisions: rollout_spec.Revisions,
    interval_seconds: int,
    window_seconds: int | None = None,
) -> Result:
    """Every check of a component on one window's readings. Gates and error counts are read
    per interval; latency quantiles over the whole window (default one interval), which is
    what their queries show: the canary's, as read with its revision."""
    measures: list[Measure] = []
    for gate in checks.gates:
        query = rollout_spec.render(
            gate.query, track="canary", revisions=revisions, interval_seconds=interval_seconds
        )
        value = readings.gates.get(gate.name)
        reason = readings.reason("gate", gate.name)
        measures.append(judge_gate(gate, value, query=query, reason=reason))
    for comparison in checks.error_ratios:
        errors = comparison.errors.promql(
            track="canary", revisions=revisions, interval_seconds=interval_seconds
        )
        total = comparison.total.promql(
            track="canary", revisions=revisions, interval_seconds=interval_seconds
        )
        query = f"({errors}) / ({total})"
        pair = readings.error_ratios.get(comparison.name)
        if pair is None:
            detail = _no_data(readings.reason("errorRatio", comparison.name))
            measures.append(
                Measure(comparison.name, "errorRatio", query, None, INCONCLUSIVE, detail)
            )
            continue
        measures.append(judge_error_ratio(comparison, *pair, min_samples=min_samples, query=query))
    for latency in checks.latencies:
        query = rollout_spec.render(
            latency.query,
            track="canary",
            revisions=revisions,
            interval_seconds=window_seconds or interval_seconds,
        )
        reading = readings.latencies.get(latency.name)
        if reading is None:
            detail = _no_data(readings.reason("latency", latency.name))
            measures.append(Measure(latency.name, "latency", query, None, INCONCLUSIVE, detail))
            continue
        measures.append(judge_latency(latency, reading, min_samples=min_samples, query=query))
    return combine(measures)
