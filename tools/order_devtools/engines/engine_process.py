"""One engine as a child process on a fixed loopback port: started, checked to answer its API
(and to be the one listening), stopped; `start_together` boots several at once."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from order_devtools import processes

logger = logging.getLogger(__name__)

LOOPBACK_HOST = processes.LOOPBACK_HOST
STARTUP_TIMEOUT_SECONDS = 90.0
# ElasticMQ can linger after SIGTERM while clients keep idle connections open; every change it
# acknowledged is already on disk (H2 with WRITE_DELAY=0, SQLite for Dynoxide), so a longer
# wait before SIGKILL buys nothing and slows every stop.
STOP_TIMEOUT_SECONDS = 5.0
READINESS_POLL_SECONDS = 0.05
PORT_ATTEMPTS = 3


def listens_on(pid: int, port: int) -> bool:
    """Whether `pid` owns the listening socket on `port` (true when /proc cannot tell)."""
    listening_inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "0A":  # 0A: LISTEN
                listening_inodes.add(fields[9])
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return True
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            target = os.readlink(descriptor)
            if target.startswith("socket:[") and target[8:-1] in listening_inodes:
                return True
    return False


def answers_http(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=2.0)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class PortTakenError(RuntimeError):
    """The engine's port was in use when it tried to bind."""


class EngineProcess:
    """One engine process on a fixed port of `host` (loopback unless pods must reach it);
    restarts reuse the port and the data dir."""

    def __init__(
        self,
        *,
        name: str,
        port: int,
        build_command: Callable[[str, int], list[str]],
        answers: Callable[[str, int], bool],
        log_path: Path,
        work_dir: Path,
        port_taken_markers: Sequence[str] = ("Address already in use",),
        env: dict[str, str] | None = None,
        host: str = LOOPBACK_HOST,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port if port else processes.free_port(host)
        # A port we picked may be re-picked until the first start succeeds; after that,
        # restarts must keep it because clients hold the endpoint.
        self.may_choose_port = not port
        self._port_taken_markers = tuple(port_taken_markers)
        self._log_offset = 0
        self._build_command = build_command
        self._answers = answers
        self._log_path = log_path
        self._work_dir = work_dir
        self._env = env or {}
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self.last_startup_seconds: float | None = None

    def __repr__(self) -> str:
        return f"EngineProcess(name={self.name!r}, endpoint={self.endpoint!r}, pid={self.pid})"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self._log_path

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the engine (no-op if it runs) and wait until it answers its API."""
        start_together([self])

    def choose_new_port(self) -> None:
        self.port = processes.free_port(self.host)

    def spawn(self) -> None:
        """Launch the engine without waiting, so several engines can boot at the same time."""
        if self.is_running():
            return
        if not processes.port_is_free(self.port, self.host):
            raise PortTakenError(f"{self.name}: port {self.host}:{self.port} is already in use")
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self._log_path.stat().st_size if self._log_path.exists() else 0
        command = self._build_command(self.host, self.port)
        with self._log_path.open("ab") as log_file:
            log_file.write(f"--- starting {self.name}: {' '.join(command)}\n".encode())
        self._started_at = time.monotonic()
        # Own session: a Ctrl-C meant for the runner must not kill the engines before the
        # runner has stopped what uses them.
        self._process = processes.spawn(
            command,
            log_path=self._log_path,
            env={**os.environ, **self._env},
            cwd=self._work_dir,
            own_session=True,
        )
        logger.info("%s started as pid %s on %s", self.name, self.pid, self.endpoint)

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        process = self._process
        if process is None:
            raise RuntimeError(f"{self.name} was never started")
        deadline = time.monotonic() + timeout
        while not self._answers(self.host, self.port):
            if self._log_says_port_taken():
                # ElasticMQ keeps running without a listener when its bind fails.
                self.stop()
                raise PortTakenError(
                    f"{self.name}: port {self.host}:{self.port} was taken before it bound; "
                    f"log {self._log_path}:\n{processes.log_tail(self._log_path, lines=5)}"
                )
            if process.poll() is not None:
                self._process = None
                raise RuntimeError(
                    f"{self.name} exited with {process.returncode} while starting; "
                    f"log {self._log_path}:\n{processes.log_tail(self._log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not answer on {self.endpoint} within {timeout:.0f}s; "
                    f"log {self._log_path}:\n{processes.log_tail(self._log_path)}"
                )
            time.sleep(READINESS_POLL_SECONDS)
        if not listens_on(process.pid, self.port):
            self.stop()
            raise PortTakenError(f"{self.name}: another process answers on {self.host}:{self.port}")
        self.last_startup_seconds = time.monotonic() - self._started_at
        logger.info(
            "%s answers on %s after %.2fs", self.name, self.endpoint, self.last_startup_seconds
        )

    def _log_says_port_taken(self) -> bool:
        try:
            with self._log_path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                fresh = log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return False
        return any(marker in fresh for marker in self._port_taken_markers)

    def request_stop(self) -> None:
        """Send SIGTERM without waiting (lets several engines shut down at the same time)."""
        if self.is_running() and self._process is not None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM (the engines flush their stores on it), wait, then SIGKILL; always reaps."""
        process = self._process
        if process is None:
            return
        processes.stop(process, timeout=timeout)
        self._process = None
        logger.info("%s stopped (exit %s)", self.name, process.returncode)


def start_together(engines: Sequence[EngineProcess]) -> None:
    """Boot the engines in parallel and wait for all; a port picked by us that turns out taken is
    replaced and that engine retried. On failure every engine given is stopped."""
    pending = list(engines)
    try:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            retry: list[EngineProcess] = []
            spawned: list[EngineProcess] = []
            for engine in pending:
                try:
                    engine.spawn()
                    spawned.append(engine)
                except PortTakenError:
                    if not engine.may_choose_port or attempt == PORT_ATTEMPTS:
                        raise
                    retry.append(engine)
            for engine in spawned:
                try:
                    engine.wait_until_ready()
                except PortTakenError:
                    if not engine.may_choose_port or attempt == PORT_ATTEMPTS:
                        raise
                    retry.append(engine)
            for engine in retry:
                logger.warning("%s: port %s was taken; trying another", engine.name, engine.port)
                engine.choose_new_port()
            pending = retry
            if not pending:
                break
    except BaseException:
        for engine in engines:
            engine.request_stop()
        for engine in engines:
            engine.stop()
        raise
    for engine in engines:
        engine.may_choose_port = False
