"""Pydantic models of a canary rollout's spec: steps, analysis, deadline and order.

The resource's conventions (`resource_model`: camelCase aliases, attribute docstrings as
descriptions, CEL rules for the apiserver): the models are `OrderPipelineSpec.rollout` and
generate its CRD schema. The rules the apiserver checks with CEL are checked here
too, because these models are also built directly (tests, defaults). The words follow Argo
Rollouts and Flagger: steps, weight, pause, analysis, failureLimit, progressDeadlineSeconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

import pydantic

from order_operator import resource_model

Component = Literal["processor", "api"]
COMPONENTS: tuple[Component, ...] = ("processor", "api")

TRACK_LABEL = "track"
"""A label every exported metric carries: `canary` or `stable`."""
VERSION_LABEL = "version"
"""A label every exported metric carries: the revision of the pod template that runs it, a hash
that includes the pipeline's queue and table names, so unique to one pipeline's release."""
Track = Literal["canary", "stable"]


@dataclass(frozen=True)
class Revisions:
    """The revisions a rollout compares: what `{version}` becomes for each track."""

    canary: str
    stable: str

    def of(self, track: Track) -> str:
        return self.canary if track == "canary" else self.stable


class Pause(resource_model.SpecModel):
    duration: int | None = pydantic.Field(default=None, ge=0, le=7 * 86_400)
    """Seconds to stay at the current weight; absent: until promoted (`promote` command)."""


class Step(
    resource_model.SpecModel,
    json_schema_extra=resource_model.rule(
        "has(self.weight) != has(self.pause)", "a step is either a weight or a pause"
    ),
):
    weight: int | None = pydantic.Field(default=None, ge=1, le=100)
    """Percent of requests (API) or of messages (processor) the canary gets; 100 promotes."""
    pause: Pause | None = None

    @pydantic.model_validator(mode="after")
    def _weight_or_pause(self) -> Self:
        if (self.weight is None) == (self.pause is None):
            raise ValueError("a step is either a weight or a pause")
        return self


class Prometheus(resource_model.SpecModel):
    address: str = pydantic.Field(pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    """Base URL of the Prometheus HTTP API that scrapes the components."""


class Series(
    resource_model.SpecModel,
    json_schema_extra=resource_model.rule(
        "has(self.query) != has(self.metric)", "give either query or metric (with matchers)"
    ),
):
    """A per-track count over the analysis window: a PromQL query with placeholders, or a
    counter and label matchers from which the query is built."""

    query: str | None = pydantic.Field(default=None, min_length=1)
    """PromQL; `{version}` becomes the revision of the track read (the canary's or the
    stable's, unique to this pipeline), `{track}` the track's name (`canary` or `stable`,
    shared by every pipeline), `{interval}` the window (e.g. `60s`)."""
    metric: str | None = pydantic.Field(default=None, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    """A counter; the query is `sum(increase(<metric>{<matchers>,version="…"}[<interval>]))`,
    the track's revision as `version`."""
    matchers: str = ""
    """Extra label matchers for `metric`, e.g. `status=~"5.."`."""

    @pydantic.model_validator(mode="after")
    def _query_or_metric(self) -> Self:
        if (self.query is None) == (self.metric is None):
            raise ValueError("give either query or metric (with matchers)")
        return self

    def promql(self, *, track: Track, revisions: Revisions, interval_seconds: int) -> str:
        if self.query is not None:
            return render(
                self.query, track=track, revisions=revisions, interval_seconds=interval_seconds
            )
        own = f'{VERSION_LABEL}="{revisions.of(track)}"'
        selector = ",".join(m for m in (self.matchers, own) if m)
        return f"sum(increase({self.metric}{{{selector}}}[{interval_seconds}s]))"


def render(query: str, *, track: Track, revisions: Revisions, interval_seconds: int) -> str:
    """Fill the placeholders by plain replacement: PromQL's own braces must stay as they are."""
    return (
        query.replace("{version}", revisions.of(track))
        .replace("{track}", track)
        .replace("{interval}", f"{interval_seconds}s")
    )


class Gate(resource_model.SpecModel):
    """A hard limit checked every interval: one breach aborts the rollout at once."""

    name: str = pydantic.Field(pattern=r"^[A-Za-z0-9_-]{1,63}$")
    query: str = pydantic.Field(min_length=1)
    """PromQL returning one number about the canary: `{version}` becomes the canary's revision
    (unique to this pipeline), `{track}` `canary` (shared by every pipeline), `{interval}` the
    interval (e.g. `60s`). No data is inconclusive (the step holds): append `or vector(0)` to a
    count that may be absent."""
    threshold: float
    comparison: Literal["max", "min"] = "max"
    """max: the value must not exceed the threshold; min: it must not fall below it."""


class ErrorRatioComparison(resource_model.SpecModel):
    """Canary against stable over the same window: fails only when the canary's error ratio is
    higher with statistical significance (one-sided Fisher exact test) and by at least the
    minimum effect, so neither noise nor a negligible difference aborts a rollout."""

    name: str = pydantic.Field(default="error-ratio", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    errors: Series
    total: Series
    alpha: float = pydantic.Field(default=0.01, gt=0, lt=1)
    """Significance level of the test."""
    min_absolute_increase: float = pydantic.Field(default=0.002, ge=0, le=1)
    """The canary's ratio must exceed the stable's by at least this much (0.002: 0.2 points)."""
    min_relative_increase: float = pydantic.Field(default=0.5, ge=0)
    """…and be at least (1 + this) times the stable's (0.5: half again as many errors)."""


class LatencyComparison(resource_model.SpecModel):
    """A latency quantile of the canary against the stable's over the same window."""

    name: str = pydantic.Field(default="latency", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    query: str = pydantic.Field(min_length=1)
    """PromQL for the quantile in seconds: `{version}` becomes the revision of the track read
    (unique to this pipeline), `{track}` its name (`canary` or `stable`, shared by every
    pipeline), `{interval}` the window (e.g. `360s`)."""
    samples: Series
    """How many observations the quantile is computed from (too few: inconclusive)."""
    tolerance: float = pydantic.Field(default=0.2, ge=0)
    """The canary may be this fraction slower than the stable (0.2: 20 %)…"""
    tolerance_seconds: float = pydantic.Field(default=0.005, ge=0)
    """…plus this many seconds, so that a millisecond on a fast route fails nothing."""


class Checks(resource_model.SpecModel):
    """What judges one component's canary."""

    gates: list[Gate] = []
    error_ratios: list[ErrorRatioComparison] = []
    latencies: list[LatencyComparison] = []

    @property
    def empty(self) -> bool:
        return not (self.gates or self.error_ratios or self.latencies)


# Probes and scrapes answer on every pod whatever its traffic: counted, they would fill the
# minimum samples of an idle canary and dilute its error ratio.
_CLIENT_ROUTES = 'route!~"/healthz|/readyz|/metrics"'


def _http(matchers: str = "") -> Series:
    return Series(
        metric="http_requests_total", matchers=",".join(m for m in (_CLIENT_ROUTES, matchers) if m)
    )


def _p99(histogram: str, matchers: str = "") -> str:
    selector = ",".join(m for m in (matchers, f'{VERSION_LABEL}="{{version}}"') if m)
    rate = f"rate({histogram}_bucket{{{selector}}}[{{interval}}])"
    return f"histogram_quantile(0.99, sum by (le) ({rate}))"


def _produced(matchers: str = "") -> Series:
    """Orders the processor finished, of those the track's API produced. Selected by
    `producer_version`, the API's revision each message carries: the processor's own `version`
    and `track` are one release for the orders of both API tracks."""
    selector = ",".join(m for m in ('producer_version="{version}"', matchers) if m)
    return Series(
        query=f"sum(increase(orders_processed_by_producer_total{{{selector}}}[{{interval}}]))"
    )


class ApiChecks(Checks):
    """The defaults judge the API on the metrics it exports (5xx ratio and p99 latency) and on
    the processor's outcomes of the orders it produced: a canary that writes orders the
    processor then fails passes every HTTP check."""

    error_ratios: list[ErrorRatioComparison] = [
        ErrorRatioComparison(name="http-5xx", errors=_http('status=~"5.."'), total=_http()),
        # FAILED is the processor's only processing failure; REJECTED (fraud, payment declined,
        # out of stock) is the business saying no, which a release need not change.
        ErrorRatioComparison(
            name="produced-orders-failed",
            errors=_produced('status="FAILED"'),
            total=_produced(),
        ),
    ]
    latencies: list[LatencyComparison] = [
        LatencyComparison(
            name="http-p99",
            query=_p99("http_request_duration_seconds", _CLIENT_ROUTES),
            samples=Series(metric="http_request_duration_seconds_count", matchers=_CLIENT_ROUTES),
        )
    ]


class ProcessorChecks(Checks):
    """The defaults judge the processor on the metrics it exports: failed orders and p99
    processing time."""

    error_ratios: list[ErrorRatioComparison] = [
        ErrorRatioComparison(
            name="orders-failed",
            errors=Series(metric="orders_processed_total", matchers='status="FAILED"'),
            total=Series(metric="orders_processed_total"),
        )
    ]
    latencies: list[LatencyComparison] = [
        LatencyComparison(
            name="processing-p99",
            query=_p99("order_processing_duration_seconds"),
            samples=Series(metric="order_processing_duration_seconds_count"),
            tolerance_seconds=0.05,
        )
    ]


class Analysis(resource_model.SpecModel):
    """How canaries are judged: every interval, the gates, then canary against stable."""

    prometheus: Prometheus
    interval_seconds: int = pydantic.Field(default=60, ge=10, le=3600)
    failure_limit: int = pydantic.Field(default=1, ge=0, le=100)
    """Failed comparisons tolerated in one rollout; one more aborts it. Gates never wait."""
    min_samples: int = pydantic.Field(default=100, ge=1)
    """Requests (API) or messages (processor) each side needs in a window; fewer is
    inconclusive: the step holds, it never passes."""
    api: ApiChecks = ApiChecks()
    processor: ProcessorChecks = ProcessorChecks()

    def checks(self, component: Component) -> Checks:
        return self.api if component == "api" else self.processor


DEFAULT_STEPS = [
    step
    for weight in (5, 25, 50)
    for step in (Step(weight=weight), Step(pause=Pause(duration=120)))
]


class RolloutSpec(
    resource_model.SpecModel,
    json_schema_extra=resource_model.rule(
        "!has(self.analysis) || self.progressDeadlineSeconds > self.analysis.intervalSeconds",
        "rollout.progressDeadlineSeconds must be longer than rollout.analysis.intervalSeconds",
    ),
):
    """A change to a component's pod template rolls out as a canary along these steps; after
    the last one the canary is promoted (it becomes stable)."""

    steps: list[Step] = pydantic.Field(default=DEFAULT_STEPS, min_length=1)
    analysis: Analysis | None = None
    """Absent: steps advance on time, share and commands alone, judged by nothing."""
    progress_deadline_seconds: int = pydantic.Field(default=600, ge=30, le=86_400)
    """How long a step may hold (waiting for its share or a passing analysis) before the
    rollout is aborted as Degraded. Time in a pause does not count."""
    order: list[Component] = pydantic.Field(
        default=["processor", "api"],
        min_length=1,
        max_length=len(COMPONENTS),
        json_schema_extra={
            "x-kubernetes-list-type": "set",
        },
    )
    """Components roll one at a time in this order: readers (processor) before writers (API).
    A component left out is updated in place, without a canary."""
    api_share_tolerance: float = pydantic.Field(default=0.5, gt=0, le=1)
    """An API step advances only when the observed share of requests is within this fraction
    of the planned share (0.5 accepts 2.5 to 7.5 % for 5 %): kube-proxy balances connections,
    not requests."""

    @pydantic.model_validator(mode="after")
    def _deadline_after_interval(self) -> Self:
        # A step needs one whole interval of analysis: a shorter deadline aborts every rollout.
        if self.analysis and self.progress_deadline_seconds <= self.analysis.interval_seconds:
            raise ValueError(
                "rollout.progressDeadlineSeconds must be longer than"
                " rollout.analysis.intervalSeconds"
            )
        return self

    @pydantic.field_validator("order")
    @classmethod
    def _unique(cls, order: list[Component]) -> list[Component]:
        if len(set(order)) != len(order):
            raise ValueError("order lists a component twice")
        return order

    def weight_at(self, index: int) -> int:
        """The weight in force at a step: the last weight at or before it (0 before any)."""
        for step in reversed(self.steps[: index + 1]):
            if step.weight is not None:
                return step.weight
        return 0
