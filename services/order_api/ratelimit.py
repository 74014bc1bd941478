"""One rate limit per client, shared by every API replica and never exceeded.

The limit holds per fixed window of a minute. A window's count lives in the pipeline's DynamoDB
(`stores.CountingWindows`), and a replica takes permits from it in slices with one conditional
write each: the write adds the slice only if the count stays within the limit, so the replicas
together never hand out more than the limit, whatever their number. A replica then grants from
its slice in memory, so most requests cost no call at all.

Slices start at one permit in each window and double while the client keeps coming, up to a
twentieth of the limit: permits a replica holds when the client's requests move to another
replica are at most that slice, and the load balancer's next requests to it use them. Once the
window is spent the replica remembers it until the window ends: a client over the limit costs
no write.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

WINDOW_SECONDS = 60
_LARGEST_SLICE_SHARE = 20
"""A slice is at most 1/20 of the limit: what one replica may hold unused."""


class WindowStore(Protocol):
    def take(self, client_id: str, *, window_start: int, count: int, limit: int) -> Awaitable[int]:
        """Take up to `count` of the window's `limit` permits; return how many were taken
        (fewer when fewer are left, 0 when the window is spent)."""
        ...


@dataclass
class _ClientWindow:
    """What this replica knows of one client's current window."""

    start: int
    permits: int = 0
    """Taken from the shared window and not yet granted."""
    next_slice: int = 1
    spent: bool = False
    """The shared window has no permit left: refuse until it ends, without asking."""
    leasing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One slice taken at a time per client: concurrent requests wait for it, not each write."""


@dataclass
class RateLimiter:
    per_minute: int
    windows: WindowStore
    clock: Callable[[], float] = time.time
    """Wall-clock time: every replica must agree on where a window starts."""
    _clients: dict[str, _ClientWindow] = field(default_factory=dict)

    @property
    def largest_slice(self) -> int:
        return max(1, self.per_minute // _LARGEST_SLICE_SHARE)

    async def acquire(self, client_id: str) -> float:
        """Grant one request; return 0 if allowed, else the seconds until the window ends.

        Raises what the window store raises when it cannot be reached: nobody is let through
        unchecked.
        """
        while True:
            now = self.clock()
            window = self._window(client_id, now)
            if window.permits > 0:
                window.permits -= 1
                return 0.0
            if window.spent:
                return window.start + WINDOW_SECONDS - now
            async with window.leasing:
                if window.permits == 0 and not window.spent:
                    await self._take_slice(client_id, window)
            # Granted from the slice on the next pass; a window that ended meanwhile is
            # replaced by the next one.

    def _window(self, client_id: str, now: float) -> _ClientWindow:
        start = int(now) // WINDOW_SECONDS * WINDOW_SECONDS
        window = self._clients.get(client_id)
        if window is None or window.start != start:
            window = self._clients[client_id] = _ClientWindow(start)
        return window

    async def _take_slice(self, client_id: str, window: _ClientWindow) -> None:
        wanted = min(window.next_slice, self.largest_slice)
        taken = await self.windows.take(
            client_id, window_start=window.start, count=wanted, limit=self.per_minute
        )
        if taken == 0:
            window.spent = True
        window.permits += taken
        window.next_slice = min(2 * wanted, self.largest_slice)


def retry_after_header(wait_seconds: float) -> str:
    return str(max(1, math.ceil(wait_seconds)))
