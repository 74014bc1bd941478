"""Deterministic fraud scoring."""

from __future__ import annotations

from order_processor import fraud


def _assess(**overrides: int | str) -> fraud.FraudAssessment:
    values: dict[str, int | str] = {
        "customer_id": "c1",
        "total_cents": 1000,
        "total_quantity": 1,
        "recent_orders": 1,
        "velocity_limit": 5,
        "velocity_window_seconds": 60,
    }
    values.update(overrides)
    return fraud.assess(**values)  # type: ignore[arg-type]


def test_ordinary_order_scores_zero() -> None:
    assert _assess() == fraud.FraudAssessment(score=0, reasons=())


def test_velocity_above_the_limit_rejects_at_the_default_threshold() -> None:
    assert not _assess(recent_orders=5).rejects(70)
    assessment = _assess(recent_orders=9)
    assert assessment.rejects(70)
    assert "9 orders in 60 s" in assessment.reasons


def test_blocked_customer_always_rejects() -> None:
    assert _assess(customer_id="blocked-42").score == 100


def test_rules_add_up_and_cap_at_100() -> None:
    assert _assess(total_cents=250_000).score == 20
    assert _assess(total_cents=250_000, total_quantity=600).score == 40
    assert _assess(total_cents=2_000_000, total_quantity=600, recent_orders=50).score == 100


def test_same_input_same_score() -> None:
    assert _assess(recent_orders=7, total_cents=300_000) == _assess(
        recent_orders=7, total_cents=300_000
    )
