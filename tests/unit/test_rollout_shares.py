"""Replica and concurrency arithmetic of canary steps, over targets x 1-50 stable replicas."""

from __future__ import annotations

import pytest

from order_operator.rollout import shares

TARGETS = (1, 5, 25, 50, 100)
STABLE = range(1, 51)
CONCURRENCY = 40


@pytest.mark.parametrize("weight", TARGETS)
@pytest.mark.parametrize("stable", STABLE)
def test_api_canary_is_at_least_one_pod_and_the_nearest_share(weight: int, stable: int) -> None:
    canary = shares.api_canary_replicas(weight, stable)
    assert canary >= 1
    if weight == 100:
        assert canary == stable
        return
    target = weight / 100
    error = abs(shares.share(canary, stable) - target)
    # No other count comes nearer (ties go to the smaller count), except that zero is never
    # chosen while the weight is above zero.
    for other in range(1, 3 * stable + 2):
        assert error <= abs(shares.share(other, stable) - target) + 1e-12, other
        if other < canary:
            assert error < abs(shares.share(other, stable) - target), other


@pytest.mark.parametrize(
    ("weight", "stable", "canary"),
    [
        (1, 1, 1),  # 1 % still gets a pod: 50 % observed, which the share gate reports
        (1, 50, 1),
        (5, 2, 1),
        (5, 19, 1),  # exactly 5 %
        (5, 50, 3),  # 3/53 = 5.7 % is nearer than 2/52 = 3.8 %
        (25, 3, 1),  # exactly 25 %
        (25, 10, 3),  # 3/13 = 23.1 % is nearer than 4/14 = 28.6 %
        (50, 7, 7),
        (50, 50, 50),
        (100, 10, 10),
    ],
)
def test_api_canary_replicas_worked_examples(weight: int, stable: int, canary: int) -> None:
    assert shares.api_canary_replicas(weight, stable) == canary


def test_api_zero_weight_is_no_canary_and_a_limit_caps_the_count() -> None:
    assert shares.api_canary_replicas(0, 10) == 0
    assert shares.api_canary_replicas(75, 10) == 30
    assert shares.api_canary_replicas(75, 10, limit=12) == 12


def test_weights_outside_0_to_100_are_refused() -> None:
    for weight in (-1, 101):
        with pytest.raises(ValueError, match="percentage"):
            shares.api_canary_replicas(weight, 3)
        with pytest.raises(ValueError, match="percentage"):
            shares.processor_split(weight, 3, CONCURRENCY)


@pytest.mark.parametrize("weight", TARGETS)
@pytest.mark.parametrize("desired", STABLE)
def test_processor_split_never_exceeds_the_scalers_total(weight: int, desired: int) -> None:
    split = shares.processor_split(weight, desired, CONCURRENCY)
    budget = desired * CONCURRENCY
    assert split.total <= budget
    assert split.stable_concurrency == CONCURRENCY
    assert 0 <= split.canary_concurrency <= CONCURRENCY
    if weight == 100:
        assert (split.stable_pods, split.canary_pods, split.total) == (0, desired, budget)
        return
    if desired == 1:
        # One pod's worth of consumers cannot be shared without exceeding it: no canary.
        assert (split.stable_pods, split.canary_pods) == (1, 0)
        return
    assert split.stable_pods >= 1
    assert split.canary_pods >= 1
    assert split.canary_concurrency >= 1
    # Whole consumers, one concurrency per canary pod: off by at most one consumer per canary
    # pod plus one for rounding.
    assert abs(split.share - weight / 100) <= (split.canary_pods + 1) / split.total, split


@pytest.mark.parametrize(
    ("weight", "desired"),
    # While the weight's consumers fit in one pod: 1 % of up to 50 pods, 5 % of up to 19.
    [(1, desired) for desired in range(2, 51)] + [(5, desired) for desired in range(2, 20)],
)
def test_one_canary_pod_with_a_lower_concurrency_reaches_small_shares(
    weight: int, desired: int
) -> None:
    split = shares.processor_split(weight, desired, CONCURRENCY)
    assert split.canary_pods == 1
    assert split.canary_concurrency < CONCURRENCY
    # The stable side gives up exactly one pod for it.
    assert split.stable_pods == desired - 1


@pytest.mark.parametrize(
    ("weight", "desired", "stable_pods", "canary_pods", "canary_concurrency"),
    [
        (1, 2, 1, 1, 1),  # 1 of 41 consumers: 2.4 %, the nearest one pod can get
        (5, 2, 1, 1, 2),  # 2 of 42: 4.8 %
        (5, 10, 9, 1, 19),  # 19 of 379: 5.0 %
        (25, 2, 1, 1, 13),  # 13 of 53: 24.5 %
        (5, 50, 47, 3, 33),  # 99 of 1979: 5 % of 2000 does not fit in one pod
        (25, 10, 7, 3, 31),  # 93 of 373: the rest of the 400 unused, never more
        (50, 3, 1, 1, 40),  # 40 of 80: the share before throughput (the backlog grows,
        # so the scaler asks for more)
        (50, 10, 5, 5, 40),  # 200 of 400
    ],
)
def test_processor_split_worked_examples(
    weight: int, desired: int, stable_pods: int, canary_pods: int, canary_concurrency: int
) -> None:
    split = shares.processor_split(weight, desired, CONCURRENCY)
    assert (split.stable_pods, split.canary_pods, split.canary_concurrency) == (
        stable_pods,
        canary_pods,
        canary_concurrency,
    )


def test_a_lower_canary_concurrency_spreads_the_canary_over_more_pods() -> None:
    split = shares.processor_split(50, 10, CONCURRENCY, canary_concurrency=10)
    assert (split.canary_pods, split.canary_concurrency) == (20, 10)
    assert split.total <= 10 * CONCURRENCY


def test_no_consumers_wanted_means_no_canary() -> None:
    assert shares.processor_split(25, 0, CONCURRENCY).total == 0
    assert shares.processor_split(0, 5, CONCURRENCY).canary_pods == 0
