"""How many canary pods, and with what receive concurrency, give a step's weight. Pure.

API: one Service selects stable and canary pods, so the canary's share of requests is about
its share of pods. The HPA keeps owning the stable side; the canary is sized against the
stable side's current replicas. Pods are whole, so a share is only approximate: the count
whose share is nearest the weight is chosen (ties: the smaller), and never zero while the
weight is above zero (1 % gives one pod). The observed share of requests is what gates a
step, not this arithmetic.

Processor: consumers pull, so the canary's share of messages is its share of the receive
concurrency. The queue-depth scaler decides the total (pods x per-pod concurrency); the split
gives some of those stable pods' places to canary pods whose concurrency can be lower than
the stable's, which is how one pod reaches 1-5 %. The total never exceeds what the scaler
asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FULL = 100


def share(canary: int, stable: int) -> float:
    """The canary's fraction of `canary + stable` (0 when both are 0)."""
    total = canary + stable
    return canary / total if total else 0.0


def api_canary_replicas(weight: int, stable_replicas: int, *, limit: int | None = None) -> int:
    """Canary replicas for a weight in percent against the stable side's current replicas.

    100 gives as many as the stable side: promotion then replaces the stable pods (the HPA
    keeps at least its minimum there, so the canary alone never takes all requests). `limit`
    caps the count (e.g. the HPA's maximum), which lowers the share above 50 %.
    """
    if not 0 <= weight <= FULL:
        raise ValueError(f"weight {weight} is not a percentage")
    if weight == 0:
        return 0
    stable = max(stable_replicas, 0)
    if weight == FULL or stable == 0:
        count = max(stable, 1)
    else:
        exact = weight * stable / (FULL - weight)
        candidates = {max(1, math.floor(exact)), max(1, math.ceil(exact))}
        target = weight / FULL
        count = min(candidates, key=lambda c: (abs(share(c, stable) - target), c))
    return count if limit is None else max(1, min(count, limit))


@dataclass(frozen=True)
class ConsumerSplit:
    """Stable and canary consumers of the processor for one weight."""

    stable_pods: int
    canary_pods: int
    canary_concurrency: int
    """Receive concurrency of each canary pod (0 with no canary pod)."""
    stable_concurrency: int

    @property
    def stable_consumers(self) -> int:
        return self.stable_pods * self.stable_concurrency

    @property
    def canary_consumers(self) -> int:
        return self.canary_pods * self.canary_concurrency

    @property
    def total(self) -> int:
        return self.stable_consumers + self.canary_consumers

    @property
    def share(self) -> float:
        return share(self.canary_consumers, self.stable_consumers)


def _split(stable_pods: int, wanted: int, canary_max: int, concurrency: int) -> ConsumerSplit:
    """`wanted` canary consumers over as few pods as the canary's concurrency allows, each
    pod with the same concurrency (one Deployment), rounding down."""
    pods = math.ceil(wanted / canary_max)
    return ConsumerSplit(
        stable_pods=stable_pods,
        canary_pods=pods,
        canary_concurrency=wanted // pods,
        stable_concurrency=concurrency,
    )


def processor_split(
    weight: int,
    desired_pods: int,
    concurrency: int,
    *,
    canary_concurrency: int | None = None,
) -> ConsumerSplit:
    """The split of the scaler's `desired_pods x concurrency` consumers for a weight.

    Stable pods keep their concurrency (it is part of their template); each stable pod given
    up frees `concurrency` places for canary consumers, whose pods run at most
    `canary_concurrency` (the new template's, default the stable's). The most stable pods
    that leave room for the weight's canary consumers are kept, so the total stays as close
    to the scaler's as the weight allows and never above it. Under 100 % at least one stable
    pod stays; when even that leaves no room (a single desired pod), there is no canary pod:
    the step cannot be reached until the scaler asks for more. 100 % gives every place to
    the canary.
    """
    if not 0 <= weight <= FULL:
        raise ValueError(f"weight {weight} is not a percentage")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    canary_max = canary_concurrency or concurrency
    nobody = ConsumerSplit(max(desired_pods, 0), 0, 0, concurrency)
    if weight == 0 or desired_pods < 1:
        return nobody
    budget = desired_pods * concurrency
    if weight == FULL:
        return _split(0, min(budget, desired_pods * canary_max), canary_max, concurrency)
    target = weight / FULL
    for stable_pods in range(desired_pods - 1, 0, -1):
        stable = stable_pods * concurrency
        wanted = max(1, round(target * stable / (1 - target)))
        if stable + wanted <= budget:
            return _split(stable_pods, wanted, canary_max, concurrency)
    return nobody
