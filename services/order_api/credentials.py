"""Checking client credentials for the token endpoint without giving anything away.

A secret is verified in a worker thread (argon2 and PBKDF2 release the GIL), at most
`token_hash_concurrency` at once, so the event loop keeps serving orders while tokens are
issued. An unknown client id is checked against a dummy hash of the same cost, so the answer
takes as long as for a known one.

Failures are counted per client id and per source address in fixed windows held in the
pipeline's DynamoDB, so all replicas together allow each key its number of tries: an attempt
takes a try before the secret is checked (concurrent guesses on several replicas cannot pass the
limit together) and gives it back when the secret was right. Past either limit the endpoint
answers 429 without hashing, and a key found spent is remembered until its window ends, so a
locked-out guesser costs no write.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from order_api import security
from order_api import settings as settings_module

log = logging.getLogger(__name__)

_KEYS_TRACKED = 100_000
"""Client ids and addresses are client input: at most this many are remembered."""


class WrongCredentialsError(Exception):
    """The client id is unknown or the secret is wrong (deliberately not said which)."""


class HashingBusyError(Exception):
    """More token requests wait for a hashing slot than this process queues."""


class TooManyFailuresError(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed attempts; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class CountingWindows(Protocol):
    """Shared counts per subject and fixed window (`stores.CountingWindows`)."""

    @property
    def window_seconds(self) -> int: ...

    def take(
        self, subject: str, *, window_start: int, count: int, limit: int
    ) -> Awaitable[int]: ...

    def give_back(self, subject: str, *, window_start: int, count: int) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Try:
    """One try taken from a key's window, to give back if the attempt did not fail."""

    key: str
    window_start: int


@dataclass
class FailureLimit:
    """At most `limit` failed attempts per key (a client id, an address) in each fixed window."""

    limit: int
    windows: CountingWindows
    clock: Callable[[], float] = time.time
    """Wall-clock time: every replica must agree on where a window starts."""
    _spent_until: dict[str, float] = field(default_factory=dict)

    async def take_try(self, key: str) -> Try:
        """Take one of `key`'s tries; raise TooManyFailuresError when none is left."""
        now = self.clock()
        spent_until = self._spent_until.get(key, 0.0)
        if spent_until > now:
            raise TooManyFailuresError(spent_until - now)
        self._spent_until.pop(key, None)
        seconds = self.windows.window_seconds
        start = int(now) // seconds * seconds
        if await self.windows.take(key, window_start=start, count=1, limit=self.limit):
            return Try(key, start)
        if len(self._spent_until) >= _KEYS_TRACKED:
            del self._spent_until[next(iter(self._spent_until))]  # the longest-known key
        self._spent_until[key] = start + seconds
        raise TooManyFailuresError(start + seconds - now)

    async def give_back(self, taken: Try) -> None:
        await self.windows.give_back(taken.key, window_start=taken.window_start, count=1)


@dataclass
class CredentialChecker:
    clients: Mapping[str, str]
    """client id -> hashed secret (API_CLIENTS)."""
    per_client: FailureLimit
    per_source: FailureLimit
    concurrency: int
    """Secrets hashed at once."""
    queue: int
    """Attempts that may wait for a hashing slot; beyond them HashingBusyError."""
    _hashing: asyncio.Semaphore = field(init=False)
    _pending: int = field(init=False, default=0)
    _dummy_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self._hashing = asyncio.Semaphore(self.concurrency)
        # Hashed with today's parameters: an unknown id costs what a current client's hash does.
        self._dummy_hash = security.hash_client_secret(secrets.token_urlsafe(32))

    @classmethod
    def from_settings(
        cls,
        settings: settings_module.ApiSettings,
        windows: Callable[[str], CountingWindows],
    ) -> CredentialChecker:
        """`windows(name)`: the shared counting windows named `name`."""
        return cls(
            clients=settings.api_clients,
            per_client=FailureLimit(
                settings.token_failures_per_client, windows("token-failures-client")
            ),
            per_source=FailureLimit(
                settings.token_failures_per_source, windows("token-failures-source")
            ),
            concurrency=settings.token_hash_concurrency,
            queue=settings.token_hash_queue,
        )

    async def check(self, client_id: str, secret: str, *, source: str) -> None:
        """Return if `secret` is `client_id`'s. Raise WrongCredentialsError; past a failure
        limit TooManyFailuresError; with too many requests waiting HashingBusyError; or what
        the windows' store raises when it cannot be reached: no secret is checked uncounted.
        Failures are logged (never the secret)."""
        if self._pending >= self.concurrency + self.queue:
            raise HashingBusyError
        self._pending += 1
        try:
            await self._check(client_id, secret, source=source)
        finally:
            self._pending -= 1

    async def _check(self, client_id: str, secret: str, *, source: str) -> None:
        tries: list[tuple[FailureLimit, Try]] = []
        try:
            # The source first: an address spraying client ids is stopped before their windows.
            for limit, key in ((self.per_source, source), (self.per_client, client_id)):
                tries.append((limit, await limit.take_try(key)))
        except TooManyFailuresError:
            log.warning("token refused: too many failures, client %r from %s", client_id, source)
            await _give_back(tries)  # this attempt was not made
            raise
        hashed = self.clients.get(client_id)
        async with self._hashing:
            matches = await asyncio.to_thread(
                security.verify_client_secret, secret, hashed or self._dummy_hash
            )
        if hashed is None or not matches:
            reason = "unknown client" if hashed is None else "wrong secret"
            log.warning("token refused: %s, client %r from %s", reason, client_id, source)
            raise WrongCredentialsError
        await _give_back(tries)  # a right secret is no failure


async def _give_back(tries: list[tuple[FailureLimit, Try]]) -> None:
    for limit, taken in tries:
        await limit.give_back(taken)
