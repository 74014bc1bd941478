"""CPU use of the processes under test, as cores busy over a measured interval."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


class CpuMeter:
    """CPU seconds used by a set of processes (and their children) between start and stop."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    def _times(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, process in self.processes.items():
            total = 0.0
            for p in (process, *process.children(recursive=True)):
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    continue
            totals[name] = total
        return totals

    @contextmanager
    def measure(self, into: dict[str, float]) -> Iterator[None]:
        before, started = self._times(), time.monotonic()
        yield
        after, elapsed = self._times(), time.monotonic() - started
        for name in self.processes:
            into[name] = round((after[name] - before.get(name, 0.0)) / elapsed, 2)
