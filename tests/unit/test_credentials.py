"""Failed token requests counted per key (client id, source) in shared fixed windows, against an
in-memory window store; the real store shared by several API processes is tested in
tests/integration/test_rate_limit.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from order_api import credentials, security

WINDOW = 300
WINDOW_START = 6_000_000  # a multiple of the window
T = TypeVar("T")


@dataclass
class SharedWindows:
    """Counts per (key, window); records every call."""

    window_seconds: int = WINDOW
    taken: dict[tuple[str, int], int] = field(default_factory=dict)
    calls: int = 0

    async def take(self, subject: str, *, window_start: int, count: int, limit: int) -> int:
        self.calls += 1
        taken = self.taken.get((subject, window_start), 0)
        granted = min(count, limit - taken)
        self.taken[(subject, window_start)] = taken + granted
        return granted

    async def give_back(self, subject: str, *, window_start: int, count: int) -> None:
        self.calls += 1
        self.taken[(subject, window_start)] -= count


@dataclass
class Clock:
    now: float = WINDOW_START + 0.5

    def __call__(self) -> float:
        return self.now


def _run(step: Awaitable[T]) -> T:
    async def run() -> T:
        return await step

    return asyncio.run(run())


def test_a_key_is_refused_at_the_limit_until_its_window_ends_without_asking_again() -> None:
    windows, clock = SharedWindows(), Clock()
    limit = credentials.FailureLimit(2, windows, clock)
    for _ in range(2):
        _run(limit.take_try("demo"))
    with pytest.raises(credentials.TooManyFailuresError) as refused:
        _run(limit.take_try("demo"))
    assert refused.value.retry_after == pytest.approx(WINDOW - 0.5)
    calls = windows.calls
    clock.now += 100
    with pytest.raises(credentials.TooManyFailuresError):
        _run(limit.take_try("demo"))
    assert windows.calls == calls  # remembered: a locked-out guesser costs no write
    _run(limit.take_try("other"))  # another key has its own tries
    clock.now = WINDOW_START + WINDOW
    _run(limit.take_try("demo"))  # the next window


def test_replicas_sharing_the_windows_allow_the_limit_together() -> None:
    windows = SharedWindows()
    replicas = [credentials.FailureLimit(3, windows, Clock()) for _ in range(3)]
    outcomes = []
    for i in range(6):
        try:
            _run(replicas[i % 3].take_try("demo"))
            outcomes.append("try")
        except credentials.TooManyFailuresError:
            outcomes.append("refused")
    assert outcomes == ["try"] * 3 + ["refused"] * 3


def test_a_try_given_back_does_not_count() -> None:
    limit = credentials.FailureLimit(1, SharedWindows(), Clock())
    for _ in range(3):
        _run(limit.give_back(_run(limit.take_try("demo"))))


def test_the_number_of_keys_remembered_as_spent_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(credentials, "_KEYS_TRACKED", 3)
    windows = SharedWindows()
    limit = credentials.FailureLimit(1, windows, Clock())
    for key in "abcd":
        _run(limit.take_try(key))
        with pytest.raises(credentials.TooManyFailuresError):
            _run(limit.take_try(key))
    calls = windows.calls
    for key in "da":
        with pytest.raises(credentials.TooManyFailuresError):
            _run(limit.take_try(key))
    assert windows.calls == calls + 1  # "d" is remembered; "a" was forgotten and asked again


def test_requests_beyond_the_hashing_queue_are_refused_before_anything_is_counted() -> None:
    windows = SharedWindows()
    checker = credentials.CredentialChecker(
        clients={"demo": security.hash_client_secret("demo-secret-" + "x" * 32)},
        per_client=credentials.FailureLimit(100, windows, Clock()),
        per_source=credentials.FailureLimit(100, windows, Clock()),
        concurrency=1,
        queue=1,
    )

    async def four_at_once() -> list[BaseException | None]:
        attempts = [checker.check("demo", "wrong", source="10.0.0.1") for _ in range(4)]
        return await asyncio.gather(*attempts, return_exceptions=True)

    outcomes = [type(outcome) for outcome in asyncio.run(four_at_once())]
    assert outcomes.count(credentials.WrongCredentialsError) == 2  # hashing and waiting
    assert outcomes.count(credentials.HashingBusyError) == 2
    assert windows.taken == {("10.0.0.1", WINDOW_START): 2, ("demo", WINDOW_START): 2}
