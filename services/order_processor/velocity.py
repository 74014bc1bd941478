"""How many orders a customer placed recently: the arithmetic, apart from the storage.

Each customer's item holds one set of order ids per fixed window (attribute `w<start>`); an
order is added to the window it is processed in, so a redelivery adds nothing. Reading, the
previous window counts by how much of it still overlaps the last `seconds` (a sliding-window
estimate), so a burst straddling a window boundary is still seen.

Customers are counted per client: a customer id is the client's own name for its customer, so
the same id at two clients is two customers, and one client's orders never count against
another's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_STALE_WINDOWS_DROPPED = 4
"""Windows before the previous one removed on each write (older ones have expired anyway)."""


def customer_key(client_id: str, customer_id: str) -> str:
    """The velocity item of a customer as one client names it.

    Unambiguous: customer ids cannot hold a '#' (the API's schema), so the last '#' separates
    the two.
    """
    return f"{client_id}#{customer_id}"


@dataclass(frozen=True)
class Windows:
    seconds: int

    def start(self, now: float) -> int:
        return int(now) // self.seconds * self.seconds

    def current(self, now: float) -> str:
        return f"w{self.start(now)}"

    def previous(self, now: float) -> str:
        return f"w{self.start(now) - self.seconds}"

    def stale(self, now: float) -> list[str]:
        """Attributes of the windows before the previous one: dropped on the next write."""
        start = self.start(now)
        return [f"w{start - k * self.seconds}" for k in range(2, 2 + _STALE_WINDOWS_DROPPED)]

    def expires_at(self, now: float) -> int:
        """When the item stops mattering: once its current window is no longer the previous."""
        return self.start(now) + 2 * self.seconds

    def estimate(self, in_current: int, in_previous: int, now: float) -> int:
        """Orders within the last `seconds`: all of the current window, and the previous one
        in proportion to how much of it is still inside."""
        overlap = 1 - (now - self.start(now)) / self.seconds
        return in_current + math.ceil(in_previous * overlap)


def in_arrival_order(history: int, order_ids: Sequence[str]) -> dict[str, int]:
    """Each of one customer's orders in a batch -> the count it is judged by.

    `history` is the customer's estimate, read after the batch's own orders were added to the
    window (or before, if that write was lost: it then counts at least the batch). The first
    order sees the history up to itself, the last sees them all.
    """
    total = max(history, len(order_ids))
    return {
        order_id: total - (len(order_ids) - 1 - position)
        for position, order_id in enumerate(order_ids)
    }
