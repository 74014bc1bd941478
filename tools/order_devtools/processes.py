"""The dev tools' child processes: started so that they die with us, stopped politely, their
logs read back; and free loopback ports for them to listen on.

The engines, the services of `make run` and the tests, and the test cluster's components all
start and stop here.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOOPBACK_HOST = "127.0.0.1"
PICKED_PORT_LOW = 20000
"""Ports are picked from here up to the kernel's ephemeral range (see `free_port`)."""

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None

# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so every child is
# forked from this one worker thread, which lives as long as the interpreter does.
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawn")


def _dying_with(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: the kernel sends the child SIGTERM when `parent_pid` dies, even by
    SIGKILL (Linux), and a child whose parent died before that was set exits at once."""

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    own_session: bool = False,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdin closed and its output appended to `log_path`.

    `own_session`: a Ctrl-C meant for this process does not reach the child (which is then
    stopped in order by whoever started it). `die_with_parent=False` for children meant to
    outlive this process (a cluster started by `make cluster-up`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec = _dying_with(os.getpid()) if die_with_parent else None
    with log_path.open("ab") as log_file:
        return _spawner.submit(
            subprocess.Popen,
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
            preexec_fn=preexec,
        ).result()


def stop(process: subprocess.Popen[bytes], *, timeout: float) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; reaped either way.
    Returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def kill(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL (the crash case) and reap."""
    if process.poll() is None:
        process.kill()
        process.wait()
    return process.returncode


def log_tail(log_path: Path, lines: int = 30) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def _ephemeral_port_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = LOOPBACK_HOST) -> int:
    """A free port on `host` (loopback by default) below the ephemeral range.

    Ports the kernel hands out with bind(0) are also used for outgoing connections, and one was
    seen taken by a client socket in the moment between picking it and a server binding it.
    """
    floor = _ephemeral_port_floor()
    candidates = list(range(PICKED_PORT_LOW, max(floor, PICKED_PORT_LOW + 1000)))
    for port in random.sample(candidates, k=min(200, len(candidates))):
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        picked: int = probe.getsockname()[1]
        return picked


def port_is_free(port: int, host: str = LOOPBACK_HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers bind: connections in TIME_WAIT from an earlier run don't count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True
