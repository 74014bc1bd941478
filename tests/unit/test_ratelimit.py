"""The rate limiter's slices of a shared window, against an in-memory window store.

The store keeps the real one's contract (a conditional add that never passes the limit); the
real store, and several API processes sharing it, are tested in
tests/integration/test_rate_limit.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from order_api import ratelimit, stores

WINDOW_START = 6_000_000  # a multiple of the window


@dataclass
class SharedWindows:
    """Counts per (client, window); records every call as (client, window, count asked)."""

    taken: dict[tuple[str, int], int] = field(default_factory=dict)
    calls: list[tuple[str, int, int]] = field(default_factory=list)
    down: bool = False

    async def take(self, client_id: str, *, window_start: int, count: int, limit: int) -> int:
        self.calls.append((client_id, window_start, count))
        await asyncio.sleep(0)  # a real call yields to the other requests
        if self.down:
            raise stores.StoreUnavailableError("injected")
        taken = self.taken.get((client_id, window_start), 0)
        granted = min(count, limit - taken)
        self.taken[(client_id, window_start)] = taken + granted
        return granted


@dataclass
class Clock:
    now: float = WINDOW_START + 0.5

    def __call__(self) -> float:
        return self.now


def _limiter(
    per_minute: int, windows: SharedWindows, clock: Clock | None = None
) -> ratelimit.RateLimiter:
    return ratelimit.RateLimiter(per_minute=per_minute, windows=windows, clock=clock or Clock())


def _grants(limiter: ratelimit.RateLimiter, client_id: str, requests: int) -> list[float]:
    async def run() -> list[float]:
        return [await limiter.acquire(client_id) for _ in range(requests)]

    return asyncio.run(run())


def test_slices_double_up_to_a_twentieth_of_the_limit() -> None:
    windows = SharedWindows()
    assert _grants(_limiter(200, windows), "a", 40) == [0.0] * 40
    assert [count for _, _, count in windows.calls] == [1, 2, 4, 8, 10, 10, 10]
    assert windows.taken == {("a", WINDOW_START): 45}  # 5 held for the next requests


def test_replicas_together_grant_exactly_the_limit() -> None:
    windows = SharedWindows()
    replicas = [_limiter(100, windows) for _ in range(3)]
    granted = sum(_grants(replica, "a", 1).count(0.0) for _ in range(100) for replica in replicas)
    assert granted == 100
    assert windows.taken == {("a", WINDOW_START): 100}


def test_a_spent_window_is_remembered_until_it_ends() -> None:
    windows, clock = SharedWindows(), Clock()
    limiter = _limiter(3, windows, clock)
    assert _grants(limiter, "a", 3) == [0.0] * 3
    calls = len(windows.calls)
    clock.now = WINDOW_START + 20.5
    assert _grants(limiter, "a", 5) == [pytest.approx(39.5)] * 5  # one asks, then none do
    assert len(windows.calls) == calls + 1
    clock.now = WINDOW_START + 60.0
    assert _grants(limiter, "a", 1) == [0.0]  # the next window
    assert windows.calls[-1] == ("a", WINDOW_START + 60, 1)


def test_clients_have_their_own_windows() -> None:
    windows = SharedWindows()
    limiter = _limiter(1, windows)
    assert _grants(limiter, "a", 2)[0] == 0.0
    assert _grants(limiter, "b", 1) == [0.0]
    assert _grants(limiter, "a", 1)[0] > 0


def test_concurrent_requests_wait_for_one_slice_instead_of_each_writing() -> None:
    windows = SharedWindows()
    limiter = _limiter(1000, windows)

    async def run() -> list[float]:
        return list(await asyncio.gather(*(limiter.acquire("a") for _ in range(3))))

    assert asyncio.run(run()) == [0.0] * 3
    assert [count for _, _, count in windows.calls] == [1, 2]


def test_an_unreachable_store_lets_nobody_through() -> None:
    windows = SharedWindows(down=True)
    with pytest.raises(stores.StoreUnavailableError):
        _grants(_limiter(100, windows), "a", 1)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert ratelimit.retry_after_header(39.5) == "40"
    assert ratelimit.retry_after_header(0.01) == "1"
