"""Deterministic fraud rules: the same order and history always score the same."""

from __future__ import annotations

from dataclasses import dataclass

LARGE_ORDER_CENTS = 200_000
HUGE_ORDER_CENTS = 1_000_000
BULK_QUANTITY = 500
BLOCKED_CUSTOMER_PREFIX = "blocked-"


@dataclass(frozen=True)
class FraudAssessment:
    score: int
    reasons: tuple[str, ...]

    def rejects(self, threshold: int) -> bool:
        return self.score >= threshold


def assess(
    *,
    customer_id: str,
    total_cents: int,
    total_quantity: int,
    recent_orders: int,
    velocity_limit: int,
    velocity_window_seconds: int,
) -> FraudAssessment:
    """Score 0-100 from simple rules; `recent_orders` includes this order."""
    score = 0
    reasons: list[str] = []
    if customer_id.startswith(BLOCKED_CUSTOMER_PREFIX):
        score += 100
        reasons.append("customer is blocked")
    if recent_orders > velocity_limit:
        score += 40 + 10 * min(3, recent_orders - velocity_limit - 1)
        reasons.append(f"{recent_orders} orders in {velocity_window_seconds} s")
    if total_cents >= HUGE_ORDER_CENTS:
        score += 50
        reasons.append("very large total")
    elif total_cents >= LARGE_ORDER_CENTS:
        score += 20
        reasons.append("large total")
    if total_quantity >= BULK_QUANTITY:
        score += 20
        reasons.append("bulk quantity")
    return FraudAssessment(score=min(score, 100), reasons=tuple(reasons))
