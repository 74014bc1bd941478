"""Queue-depth scaling arithmetic for the processor (KEDA's aws-sqs-queue semantics), pure.

Desired replicas = ceil(backlog / targetMessagesPerReplica) clamped to [min, max]; with
minReplicas 0 the processor wakes (0 -> 1) only when the backlog exceeds the activation
threshold. Scaling up happens at once; scaling down follows the highest count recommended
during the cooldown window (the HPA's stabilisation window), so a brief dip never removes
consumers that are needed a moment later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from order_operator.v1alpha1 import spec as v1alpha1


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int = 0

    def backlog(self, *, count_in_flight: bool) -> int:
        return self.visible + (self.in_flight if count_in_flight else 0)

    @property
    def messages(self) -> int:
        """Every message the queue holds: visible, in flight and delayed."""
        return self.visible + self.in_flight + self.delayed


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    desired: int
    """What the backlog asks for right now (clamped)."""
    replicas: int
    """What to set now: `desired` when scaling up, the stabilised count when scaling down."""
    reason: str


def desired_replicas(backlog: int, scaling: v1alpha1.ProcessorScaling) -> int:
    """ceil(backlog / target) clamped to [min, max], with the activation threshold for 0 -> 1."""
    active = backlog > scaling.activation_threshold
    if not active:
        return scaling.min_replicas
    wanted = math.ceil(backlog / scaling.target_messages_per_replica)
    floor = max(scaling.min_replicas, 1)
    return max(floor, min(scaling.max_replicas, wanted))


def stabilised_replicas(
    history: Sequence[Recommendation], *, now: float, cooldown_seconds: float, desired: int
) -> int:
    """The highest recommendation within the cooldown window (including this one)."""
    window_start = now - cooldown_seconds
    in_window = [entry.replicas for entry in history if entry.at >= window_start]
    return max([desired, *in_window])


def decide(
    *,
    current: int,
    backlog: int,
    scaling: v1alpha1.ProcessorScaling,
    history: Sequence[Recommendation],
    now: float,
) -> Decision:
    desired = desired_replicas(backlog, scaling)
    if desired >= current:
        reason = "ScaleUp" if desired > current else "Steady"
        return Decision(desired=desired, replicas=desired, reason=reason)
    # Never below the minimum, whatever the history says.
    held = stabilised_replicas(
        history, now=now, cooldown_seconds=scaling.cooldown_seconds, desired=desired
    )
    replicas = max(min(held, current), scaling.min_replicas)
    reason = "ScaleDown" if replicas < current else "CoolingDown"
    return Decision(desired=desired, replicas=replicas, reason=reason)


def prune_history(
    history: Sequence[Recommendation], *, now: float, cooldown_seconds: float
) -> list[Recommendation]:
    """Forget recommendations older than the cooldown window; they can no longer hold a count."""
    return [entry for entry in history if entry.at >= now - cooldown_seconds]
