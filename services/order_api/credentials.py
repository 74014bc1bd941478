"""Checking client credentials for the token endpoint without giving anything away.

A secret is verified in a worker thread (argon2 and PBKDF2 release the GIL), at most
`token_hash_concurrency` at once, so the event loop keeps serving orders while tokens are
issued. An unknown client id is checked against a dummy hash of the same cost, so the answer
takes as long as for a known one. Failures are counted per client id and per source address;
past either limit the endpoint answers 429 without hashing at all.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from order_api import security
from order_api import settings as settings_module

log = logging.getLogger(__name__)

_KEYS_TRACKED = 100_000
"""Client ids and addresses are client input: at most this many are remembered."""


class WrongCredentialsError(Exception):
    """The client id is unknown or the secret is wrong (deliberately not said which)."""


class TooManyFailuresError(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed attempts; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass
class FailureWindow:
    """Failures per key (a client id, an address) over a sliding window of `window_seconds`."""

    limit: int
    window_seconds: float
    _failures: dict[str, collections.deque[float]] = field(default_factory=dict)

    def blocked_for(self, key: str, *, now: float) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        times = self._failures.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window_seconds - now

    def record(self, key: str, *, now: float) -> None:
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= _KEYS_TRACKED:
                del self._failures[next(iter(self._failures))]  # the longest-known key
            times = self._failures[key] = collections.deque(maxlen=self.limit)
        times.append(now)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


@dataclass
class CredentialChecker:
    clients: Mapping[str, str]
    """client id -> hashed secret (API_CLIENTS)."""
    per_client: FailureWindow
    per_source: FailureWindow
    concurrency: int
    _hashing: asyncio.Semaphore = field(init=False)
    _dummy_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self._hashing = asyncio.Semaphore(self.concurrency)
        # Hashed with today's parameters: an unknown id costs what a current client's hash does.
        self._dummy_hash = security.hash_client_secret(secrets.token_urlsafe(32))

    @classmethod
    def from_settings(cls, settings: settings_module.ApiSettings) -> CredentialChecker:
        window = settings.token_failure_window_seconds
        return cls(
            clients=settings.api_clients,
            per_client=FailureWindow(settings.token_failures_per_client, window),
            per_source=FailureWindow(settings.token_failures_per_source, window),
            concurrency=settings.token_hash_concurrency,
        )

    async def check(self, client_id: str, secret: str, *, source: str) -> None:
        """Return if `secret` is `client_id`'s; raise WrongCredentialsError or, past a failure
        limit, TooManyFailuresError. Failures are logged (never the secret)."""
        now = time.monotonic()
        wait = max(
            self.per_client.blocked_for(client_id, now=now),
            self.per_source.blocked_for(source, now=now),
        )
        if wait > 0:
            log.warning("token refused: too many failures, client %r from %s", client_id, source)
            raise TooManyFailuresError(wait)
        hashed = self.clients.get(client_id)
        async with self._hashing:
            matches = await asyncio.to_thread(
                security.verify_client_secret, secret, hashed or self._dummy_hash
            )
        now = time.monotonic()
        if hashed is None or not matches:
            self.per_client.record(client_id, now=now)
            self.per_source.record(source, now=now)
            reason = "unknown client" if hashed is None else "wrong secret"
            log.warning("token refused: %s, client %r from %s", reason, client_id, source)
            raise WrongCredentialsError
        self.per_client.forget(client_id)
