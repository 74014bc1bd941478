"""Velocity windows: which window an order lands in, and how recent orders are estimated."""

from __future__ import annotations

import pytest

from order_processor import velocity

WINDOWS = velocity.Windows(seconds=60)


def test_an_order_lands_in_the_window_that_started_at_the_last_multiple() -> None:
    assert WINDOWS.current(now=120.0) == "w120"
    assert WINDOWS.current(now=179.9) == "w120"
    assert WINDOWS.current(now=180.0) == "w180"
    assert WINDOWS.previous(now=179.9) == "w60"


def test_windows_before_the_previous_are_dropped_and_the_item_expires_after_two() -> None:
    assert WINDOWS.stale(now=600.5) == ["w480", "w420", "w360", "w300"]
    assert WINDOWS.expires_at(now=600.5) == 720


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (600.0, 3 + 10),  # the previous window still wholly inside the last minute
        (615.0, 3 + 8),  # three quarters of it: ceil(7.5)
        (630.0, 3 + 5),
        (659.0, 3 + 1),  # a sixtieth of it still counts (rounded up)
    ],
)
def test_the_previous_window_counts_by_how_much_of_it_overlaps(now: float, expected: int) -> None:
    assert WINDOWS.estimate(in_current=3, in_previous=10, now=now) == expected


def test_a_customers_orders_in_one_batch_count_in_arrival_order() -> None:
    # The history (read after the batch's orders were written) holds 2 earlier orders + 3 new.
    assert velocity.in_arrival_order(5, ["a", "b", "c"]) == {"a": 3, "b": 4, "c": 5}


def test_a_batch_counts_at_least_itself_when_the_history_missed_it() -> None:
    assert velocity.in_arrival_order(0, ["a", "b"]) == {"a": 1, "b": 2}
