"""Start-up objects leave the cyclic collector's sight; new ones stay in it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from order_common import memory


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_objects_alive_at_start_up_are_frozen_and_later_cycles_still_collected() -> None:
    kept = [object() for _ in range(1000)]
    memory.freeze_startup_objects()
    assert gc.get_freeze_count() >= len(kept)

    class Node:
        other: Node | None = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the collector can free
    del a, b
    assert gc.collect() > 0
