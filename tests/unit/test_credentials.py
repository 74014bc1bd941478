"""Failed token requests counted per client id and per source over a sliding window."""

from __future__ import annotations

import pytest

from order_api import credentials


def test_a_key_is_blocked_at_the_limit_until_its_oldest_failure_leaves_the_window() -> None:
    window = credentials.FailureWindow(limit=3, window_seconds=60)
    for second in (0, 10, 20):
        assert window.blocked_for("demo", now=second) == 0
        window.record("demo", now=second)
    assert window.blocked_for("demo", now=30) == pytest.approx(30)
    assert window.blocked_for("other", now=30) == 0
    assert window.blocked_for("demo", now=60) == 0  # the failure at 0 has left the window
    window.record("demo", now=60)
    assert window.blocked_for("demo", now=61) == pytest.approx(9)


def test_forgetting_a_key_clears_its_failures() -> None:
    window = credentials.FailureWindow(limit=1, window_seconds=60)
    window.record("demo", now=0)
    assert window.blocked_for("demo", now=1) > 0
    window.forget("demo")
    assert window.blocked_for("demo", now=1) == 0


def test_the_number_of_keys_remembered_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "_KEYS_TRACKED", 3)
    window = credentials.FailureWindow(limit=1, window_seconds=60)
    for key in ("a", "b", "c", "d"):
        window.record(key, now=0)
    assert [window.blocked_for(key, now=1) > 0 for key in "abcd"] == [False, True, True, True]
