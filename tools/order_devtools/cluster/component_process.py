"""Handles on the component processes that survive the command that started them: a pid plus
its start time, so `down` (another process, maybe days later) stops exactly those processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client

from order_devtools import processes
from order_devtools.cluster.errors import ClusterError


def process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` since boot, or None when it is gone (or a zombie).

    Stored next to every pid so `down` never signals an unrelated process that reused the pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces or parentheses; fields after it are fixed.
    fields_after_name = stat.rsplit(")", 1)[1].split()
    if fields_after_name[0] == "Z":
        return None
    return int(fields_after_name[19])


# What a request to an API server that is still starting may raise; waits retry on all of them.
_NOT_READY_YET = (
    OSError,
    ClusterError,
    KeyError,
    ValueError,
    client.ApiException,
    urllib3.exceptions.HTTPError,
)


@dataclass
class ComponentProcess:
    name: str
    pid: int
    start_ticks: int
    log_path: str
    popen: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "log_path": self.log_path,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComponentProcess:
        return cls(
            str(data["name"]), int(data["pid"]), int(data["start_ticks"]), str(data["log_path"])
        )

    def is_alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return process_start_ticks(self.pid) == self.start_ticks

    def log_tail(self, lines: int = 30) -> str:
        return processes.log_tail(Path(self.log_path), lines)

    def stop(self, grace_seconds: float = 10.0) -> None:
        # Signals by pid, not through `processes.stop`: a cluster loaded from its state file has
        # no Popen, and the start-time check must pass before every signal.
        if not self.is_alive():
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            self._reap()
            if not self.is_alive():
                return
            time.sleep(0.05)
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self._reap(block=True)

    def _reap(self, block: bool = False) -> None:
        if self.popen is None:
            return
        if block:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        else:
            self.popen.poll()


def spawn_component(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str],
    *,
    exit_with_parent: bool,
) -> ComponentProcess:
    log_path = log_dir / f"{name}.log"
    # A session of its own: Ctrl-C in the terminal that ran `up` must not stop the cluster.
    popen = processes.spawn(
        argv, log_path=log_path, env=env, own_session=True, die_with_parent=exit_with_parent
    )
    start_ticks = process_start_ticks(popen.pid)
    if start_ticks is None:
        popen.wait()
        raise ClusterError(f"{name} exited immediately; see {log_path}")
    return ComponentProcess(name, popen.pid, start_ticks, str(log_path), popen)


def wait_until(
    description: str,
    condition: Callable[[], bool],
    deadline: float,
    components: Sequence[ComponentProcess],
) -> None:
    """Poll `condition` until it holds; fail naming `description` (with the components' logs)
    at `deadline` (monotonic) or as soon as one of `components` has exited."""
    last_error = ""
    while True:
        for component in components:
            if not component.is_alive():
                raise ClusterError(
                    f"{component.name} exited while waiting for {description}; "
                    f"last lines of {component.log_path}:\n{component.log_tail()}"
                )
        try:
            if condition():
                return
        except _NOT_READY_YET as error:
            last_error = str(error)
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {component.name} ({component.log_path}):\n{component.log_tail(15)}"
                for component in components
            )
            raise ClusterError(f"timed out waiting for {description} ({last_error})\n{logs}")
        time.sleep(0.1)


def free_loopback_ports(count: int) -> list[int]:
    """`count` distinct free ports (free_port alone may hand out the same one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = processes.free_port()
        if port not in ports:
            ports.append(port)
    return ports
