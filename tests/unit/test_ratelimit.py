"""The per-client token bucket."""

from __future__ import annotations

from order_api import ratelimit


def test_allows_the_limit_then_refuses_with_a_wait() -> None:
    limiter = ratelimit.RateLimiter(per_minute=3)
    assert [limiter.acquire("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a", now=0.0)
    assert 19.9 < wait <= 20.0  # one token every 20 s
    assert ratelimit.retry_after_header(wait) == "20"


def test_clients_have_separate_buckets() -> None:
    limiter = ratelimit.RateLimiter(per_minute=1)
    assert limiter.acquire("a", now=0.0) == 0.0
    assert limiter.acquire("b", now=0.0) == 0.0
    assert limiter.acquire("a", now=0.0) > 0


def test_tokens_refill_over_time_up_to_the_limit() -> None:
    limiter = ratelimit.RateLimiter(per_minute=60)
    for _ in range(60):
        limiter.acquire("a", now=0.0)
    assert limiter.acquire("a", now=0.0) > 0
    assert limiter.acquire("a", now=1.0) == 0.0
    # a long idle period does not bank more than the limit
    granted = sum(limiter.acquire("a", now=10_000.0) == 0.0 for _ in range(100))
    assert granted == 60
