"""Queue-depth scaling arithmetic: ceil(backlog/target) clamped, activation, cooldown."""

from __future__ import annotations

import pytest

from order_operator import scaling
from order_operator.v1alpha1 import spec as v1alpha1


def policy(**fields: int) -> v1alpha1.ProcessorScaling:
    values = {"minReplicas": 1, "maxReplicas": 10, "targetMessagesPerReplica": 100, **fields}
    return v1alpha1.ProcessorScaling.model_validate({**values, "cooldownSeconds": 60})


@pytest.mark.parametrize(
    ("backlog", "expected"),
    [(0, 1), (1, 1), (100, 1), (101, 2), (1000, 10), (999_999, 10)],
)
def test_desired_is_ceil_of_backlog_over_target_clamped(backlog: int, expected: int) -> None:
    assert scaling.desired_replicas(backlog, policy()) == expected


def test_zero_minimum_stays_at_zero_until_backlog_exceeds_activation_threshold() -> None:
    scale_to_zero = policy(minReplicas=0, activationThreshold=5)
    assert scaling.desired_replicas(0, scale_to_zero) == 0
    assert scaling.desired_replicas(5, scale_to_zero) == 0
    assert scaling.desired_replicas(6, scale_to_zero) == 1


def test_in_flight_messages_count_only_when_asked() -> None:
    depth = scaling.QueueDepth(visible=10, in_flight=5, delayed=7)
    assert depth.backlog(count_in_flight=True) == 15
    assert depth.backlog(count_in_flight=False) == 10


def test_scale_up_happens_at_once_regardless_of_history() -> None:
    history = [scaling.Recommendation(at=99.0, replicas=1)]
    decision = scaling.decide(current=1, backlog=1000, scaling=policy(), history=history, now=100.0)
    assert (decision.desired, decision.replicas, decision.reason) == (10, 10, "ScaleUp")


def test_scale_down_waits_for_the_cooldown_then_follows_the_backlog() -> None:
    history = [scaling.Recommendation(at=100.0, replicas=10)]
    during = scaling.decide(current=10, backlog=0, scaling=policy(), history=history, now=130.0)
    assert (during.desired, during.replicas, during.reason) == (1, 10, "CoolingDown")
    after = scaling.decide(current=10, backlog=0, scaling=policy(), history=history, now=161.0)
    assert (after.replicas, after.reason) == (1, "ScaleDown")


def test_scale_down_goes_only_to_the_highest_count_wanted_within_the_window() -> None:
    history = [
        scaling.Recommendation(at=100.0, replicas=10),
        scaling.Recommendation(at=140.0, replicas=4),
    ]
    decision = scaling.decide(current=10, backlog=0, scaling=policy(), history=history, now=165.0)
    assert decision.replicas == 4


def test_steady_backlog_keeps_the_count() -> None:
    decision = scaling.decide(current=3, backlog=250, scaling=policy(), history=[], now=0.0)
    assert (decision.replicas, decision.reason) == (3, "Steady")


def test_prune_history_forgets_what_the_window_no_longer_covers() -> None:
    history = [scaling.Recommendation(10.0, 5), scaling.Recommendation(80.0, 2)]
    assert scaling.prune_history(history, now=100.0, cooldown_seconds=60) == [history[1]]
