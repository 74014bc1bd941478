"""CPU use of the processes under test, as cores busy over a measured interval."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

LOAD_GENERATOR = "load_generator"
"""The benchmark's own children that finished within the interval: vegeta's runs."""
MACHINE = "machine"
"""Every core's busy time (user, system, interrupts), whoever spent it: beside the named
processes it shows whether the machine itself was full."""


class CpuMeter:
    """CPU seconds used by a set of processes (and their children) between start and stop,
    the load generator's, and the whole machine's."""

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
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        totals[LOAD_GENERATOR] = reaped.ru_utime + reaped.ru_stime
        machine = psutil.cpu_times()
        busy = ("user", "nice", "system", "irq", "softirq", "steal")
        totals[MACHINE] = sum(getattr(machine, field) for field in busy)
        return totals

    @contextmanager
    def measure(self, into: dict[str, float]) -> Iterator[None]:
        before, started = self._times(), time.monotonic()
        yield
        after, elapsed = self._times(), time.monotonic() - started
        for name in (*self.processes, LOAD_GENERATOR, MACHINE):
            into[name] = round((after[name] - before.get(name, 0.0)) / elapsed, 2)
