"""Local SQS (ElasticMQ) and DynamoDB (Dynoxide) engines, run as child processes without Docker.

Maven Central carries ElasticMQ as a library, not a runnable bundle, so `ensure_installed`
resolves it with a generated pom into a versioned cache directory outside the repo. Dynoxide is a
native binary built once from crates.io with `cargo install --locked` into the same cache.
`running_engines` starts both bound to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import http.client
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from order_devtools import processes

logger = logging.getLogger(__name__)

ELASTICMQ_VERSION = "1.7.1"
ELASTICMQ_MAIN_CLASS = "org.elasticmq.server.Main"
DYNOXIDE_VERSION = "3.2.0"
LOOPBACK_HOST = processes.LOOPBACK_HOST
# ElasticMQ builds queue ARNs from these; any region works for clients on a custom endpoint.
SQS_REGION = "us-east-1"
SQS_ACCOUNT_ID = "000000000000"

# On the 2-core box G1 and SerialGC measured the same within noise (start-up and throughput);
# SerialGC runs no concurrent GC threads beside the clients. C1-only compilation
# (-XX:TieredStopAtLevel=1) is left out: benchmarks need the C2 peak. The class-data archive is
# what shortens start-up.
COMMON_JVM_OPTIONS: tuple[str, ...] = ("-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")
# ElasticMQ keeps every message live until it is deleted, and under an accept burst nobody
# deletes for a while. A heap committed up front with a fixed young generation, survivors
# promoted at once, avoids full collections that stop the queue (docs/performance.md).
ELASTICMQ_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms2g",
    "-Xmx2g",
    "-Xmn128m",
    "-XX:MaxTenuringThreshold=0",
)

STARTUP_TIMEOUT_SECONDS = 90.0
# ElasticMQ can linger after SIGTERM while clients keep idle connections open; every change it
# acknowledged is already on disk (H2 with WRITE_DELAY=0, SQLite for Dynoxide), so a longer
# wait before SIGKILL buys nothing and slows every stop.
STOP_TIMEOUT_SECONDS = 5.0
READINESS_POLL_SECONDS = 0.05
PORT_ATTEMPTS = 3
INSTALLED_MARKER = ".installed"
# Bump when the cache layout changes, so older caches are resolved again.
INSTALL_LAYOUT_VERSION = 2
CLASS_ARCHIVE_NAME = "app-cds.jsa"


@dataclasses.dataclass(frozen=True)
class MavenArtifact:
    group_id: str
    artifact_id: str
    version: str


@dataclasses.dataclass(frozen=True)
class EngineDistribution:
    """ElasticMQ as Maven coordinates plus where its resolved jars live in the cache."""

    name: str
    artifact: MavenArtifact

    @property
    def install_dir(self) -> Path:
        return cache_root() / f"{self.name}-{self.artifact.version}"

    @property
    def lib_dir(self) -> Path:
        return self.install_dir / "lib"


@dataclasses.dataclass(frozen=True)
class CargoCrate:
    """A binary built from crates.io with the crate's own lock file (`--locked`)."""

    name: str
    crate: str
    version: str
    features: tuple[str, ...]
    minimum_rust: tuple[int, int]

    @property
    def install_dir(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def binary(self) -> Path:
        return self.install_dir / "bin" / self.name


ELASTICMQ = EngineDistribution(
    name="elasticmq",
    artifact=MavenArtifact("org.elasticmq", "elasticmq-server_2.13", ELASTICMQ_VERSION),
)
# Only the HTTP server and its CLI over the bundled SQLite: no MCP server, no encryption.
DYNOXIDE = CargoCrate(
    name="dynoxide",
    crate="dynoxide-rs",
    version=DYNOXIDE_VERSION,
    features=("native-sqlite", "http-server", "cli"),
    minimum_rust=(1, 88),
)


def cache_root() -> Path:
    base = os.environ.get("ORDER_PIPELINE_CACHE") or str(Path.home() / ".cache" / "order-pipeline")
    return Path(base) / "engines"


def _progress(message: str) -> None:
    print(f"[engines] {message}", file=sys.stderr, flush=True)


def _require_tool(tool: str) -> str:
    if tool == "java" and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if candidate.exists():
            return str(candidate)
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"{tool!r} is not on PATH; `make java` installs a JRE and Maven")
    return found


def _pom_for(artifact: MavenArtifact) -> str:
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>order-pipeline.local</groupId>
  <artifactId>resolve-{artifact.artifact_id.lower()}</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>{artifact.group_id}</groupId>
      <artifactId>{artifact.artifact_id}</artifactId>
      <version>{artifact.version}</version>
    </dependency>
  </dependencies>
</project>
"""


def _run_checked(
    command: Sequence[str], *, cwd: Path, what: str, env: dict[str, str] | None = None
) -> None:
    completed = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.splitlines()[-40:])
        raise RuntimeError(f"{what} failed (exit {completed.returncode}):\n{tail}")


@contextlib.contextmanager
def _install_lock(name: str) -> Iterator[None]:
    """One installer per engine at a time across processes (parallel test sessions, CI)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / f".{name}.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def _installed_marker_text(what: object) -> str:
    return f"{what} layout={INSTALL_LAYOUT_VERSION}\n"


def _is_installed(install_dir: Path, what: object) -> bool:
    try:
        return (install_dir / INSTALLED_MARKER).read_text() == _installed_marker_text(what)
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _staging_dir_for(install_dir: Path, what: object) -> Iterator[Path]:
    """A private directory renamed to `install_dir` (with its marker) when the block succeeds,
    so an interrupted install never leaves a half-filled directory that looks installed."""
    install_dir.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(tempfile.mkdtemp(prefix=f".{install_dir.name}.", dir=install_dir.parent))
    staging_dir.chmod(0o755)
    try:
        yield staging_dir
        (staging_dir / INSTALLED_MARKER).write_text(_installed_marker_text(what))
        shutil.rmtree(install_dir, ignore_errors=True)
        staging_dir.rename(install_dir)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)


def _install_maven(distribution: EngineDistribution) -> None:
    """Resolve the engine's jars into its cache dir unless a complete earlier resolve is there."""
    install_dir, artifact = distribution.install_dir, distribution.artifact
    if _is_installed(install_dir, artifact):
        return
    with _install_lock(distribution.name):
        if _is_installed(install_dir, artifact):  # another process finished while we waited
            return
        _progress(
            f"resolving {artifact.group_id}:{artifact.artifact_id}:{artifact.version} into "
            f"{install_dir} (first run only)"
        )
        started = time.monotonic()
        with _staging_dir_for(install_dir, artifact) as staging_dir:
            (staging_dir / "pom.xml").write_text(_pom_for(artifact))
            resolve_command = [
                _require_tool("mvn"),
                "-q",
                "-B",
                "-f",
                str(staging_dir / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging_dir / 'lib'}",
            ]
            _run_checked(resolve_command, cwd=staging_dir, what=f"resolving {distribution.name}")
            if not any((staging_dir / "lib").glob("*.jar")):
                raise RuntimeError(f"resolving {distribution.name} produced no jars")
        _progress(f"{distribution.name} ready in {time.monotonic() - started:.1f}s")


def _cargo() -> str:
    """The cargo to build with, checked to be new enough for every crate built here."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    needed = ".".join(map(str, DYNOXIDE.minimum_rust))
    hint = (
        f"Dynoxide, the local DynamoDB engine, is built once from crates.io with cargo "
        f"(Rust {needed} or newer); install a Rust toolchain with rustup"
    )
    if not os.access(cargo, os.X_OK):
        raise RuntimeError(f"'cargo' is not on PATH. {hint}")
    version = subprocess.run(
        [cargo, "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.match(r"cargo (\d+)\.(\d+)", version)
    if match is None or (int(match[1]), int(match[2])) < DYNOXIDE.minimum_rust:
        found = version.strip() or "an unknown version"
        raise RuntimeError(f"{cargo} is {found}, too old. {hint} (`rustup update`)")
    return cargo


def _install_cargo(crate: CargoCrate) -> None:
    """Build the crate's binary into its cache dir unless a complete earlier build is there."""
    what = f"{crate.crate}@{crate.version} features={','.join(crate.features)}"
    if _is_installed(crate.install_dir, what):
        return
    cargo = _cargo()
    with _install_lock(crate.name):
        if _is_installed(crate.install_dir, what):
            return
        _progress(
            f"building {crate.crate} {crate.version} with cargo into {crate.install_dir} "
            "(first run only; about 5 minutes on 2 cores)"
        )
        started = time.monotonic()
        # A target dir that outlives the attempt: an interrupted build resumes where it stopped.
        target_dir = cache_root() / f".{crate.name}-{crate.version}-target"
        with _staging_dir_for(crate.install_dir, what) as staging_dir:
            build_command = [
                cargo,
                "install",
                crate.crate,
                "--version",
                crate.version,
                "--locked",
                "--no-default-features",
                "--features",
                ",".join(crate.features),
                "--root",
                str(staging_dir),
                "--target-dir",
                str(target_dir),
            ]
            _run_checked(build_command, cwd=staging_dir, what=f"building {crate.crate}")
            (staging_dir / ".crates.toml").unlink(missing_ok=True)
            (staging_dir / ".crates2.json").unlink(missing_ok=True)
            if not os.access(staging_dir / "bin" / crate.name, os.X_OK):
                raise RuntimeError(f"building {crate.crate} produced no bin/{crate.name}")
        shutil.rmtree(target_dir, ignore_errors=True)
        _progress(f"{crate.name} ready in {time.monotonic() - started:.1f}s")


def ensure_installed() -> None:
    """Resolve ElasticMQ and build Dynoxide into the cache; cheap when they are already there."""
    _require_tool("java")
    _install_maven(ELASTICMQ)
    _install_cargo(DYNOXIDE)
    if not _class_archive(ELASTICMQ).exists():
        _train_class_archive()


def _class_archive(distribution: EngineDistribution) -> Path:
    return distribution.install_dir / CLASS_ARCHIVE_NAME


def _class_archive_options(distribution: EngineDistribution) -> list[str]:
    archive = _class_archive(distribution)
    return [f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []


def _train_class_archive() -> None:
    """Boot ElasticMQ once with -XX:ArchiveClassesAtExit to record an AppCDS archive.

    Loading the engine classes from that archive instead of ~100 jars cuts JVM start-up by
    roughly 40% on the 2-core box. The archive embeds the classpath, so it is recorded from the
    final install dir; a JVM that finds it stale ignores it with a warning and starts normally.
    """
    _progress("recording a class-data archive for faster ElasticMQ start-up (first run only)")
    started = time.monotonic()
    archive = _class_archive(ELASTICMQ)
    partial = archive.with_name(f"{CLASS_ARCHIVE_NAME}.{os.getpid()}.partial")
    recording = [f"-XX:ArchiveClassesAtExit={partial}", "-Xlog:cds=off"]
    with tempfile.TemporaryDirectory(prefix="engines-cds-") as scratch:
        sqs = elasticmq_process(Path(scratch), port=0, persistent=True, extra_jvm_options=recording)
        try:
            sqs.start()
        except RuntimeError as error:
            logger.warning("recording the class-data archive failed; starting without: %s", error)
        finally:
            sqs.stop()
    if partial.exists():
        partial.replace(archive)
    _progress(f"class-data archive recorded in {time.monotonic() - started:.1f}s")


# --- processes ---------------------------------------------------------------------------------


def _listens_on(pid: int, port: int) -> bool:
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


def _answers(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bool:
    connection = http.client.HTTPConnection(LOOPBACK_HOST, port, timeout=2.0)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _sqs_answers(port: int) -> bool:
    return _answers(port, "GET", "/?Action=ListQueues")


def _dynamodb_answers(port: int) -> bool:
    headers = {
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Content-Type": "application/x-amz-json-1.0",
        # Dynoxide checks that a request is signed the way DynamoDB wants it (a credential
        # scope and a date), not the signature itself.
        "X-Amz-Date": "20240101T000000Z",
        "Authorization": (
            "AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=0"
        ),
    }
    return _answers(port, "POST", "/", body=b"{}", headers=headers)


class PortTakenError(RuntimeError):
    """The engine's port was in use when it tried to bind."""


class EngineProcess:
    """One engine process on a fixed loopback port; restarts reuse the port and the data dir."""

    def __init__(
        self,
        *,
        name: str,
        port: int,
        build_command: Callable[[int], list[str]],
        answers: Callable[[int], bool],
        log_path: Path,
        work_dir: Path,
        port_taken_markers: Sequence[str] = ("Address already in use",),
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port if port else processes.free_port()
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
        return f"http://{LOOPBACK_HOST}:{self.port}"

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
        self.port = processes.free_port()

    def spawn(self) -> None:
        """Launch the engine without waiting, so several engines can boot at the same time."""
        if self.is_running():
            return
        if not processes.port_is_free(self.port):
            raise PortTakenError(f"{self.name}: port {LOOPBACK_HOST}:{self.port} is already in use")
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self._log_path.stat().st_size if self._log_path.exists() else 0
        command = self._build_command(self.port)
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
        while not self._answers(self.port):
            if self._log_says_port_taken():
                # ElasticMQ keeps running without a listener when its bind fails.
                self.stop()
                raise PortTakenError(
                    f"{self.name}: port {LOOPBACK_HOST}:{self.port} was taken before it bound; "
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
        if not _listens_on(process.pid, self.port):
            self.stop()
            raise PortTakenError(
                f"{self.name}: another process answers on {LOOPBACK_HOST}:{self.port}"
            )
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


@dataclasses.dataclass
class Engines:
    sqs: EngineProcess
    dynamodb: EngineProcess

    @property
    def sqs_endpoint(self) -> str:
        return self.sqs.endpoint

    @property
    def dynamodb_endpoint(self) -> str:
        return self.dynamodb.endpoint

    def all(self) -> tuple[EngineProcess, EngineProcess]:
        return (self.sqs, self.dynamodb)

    def start(self) -> None:
        """Start both, booting them in parallel."""
        start_together(self.all())

    def stop(self) -> None:
        for engine in self.all():
            engine.request_stop()
        for engine in self.all():
            engine.stop()


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


def _hocon_string(value: str) -> str:
    return json.dumps(value)


def elasticmq_config(*, port: int, data_dir: Path | None) -> str:
    """HOCON for ElasticMQ; queues come from CreateQueue calls, not from this file."""
    if data_dir is None:
        storage = "messages-storage { enabled = false }"
    else:
        database = f"jdbc:h2:file:{data_dir.resolve() / 'elasticmq'};WRITE_DELAY=0"
        # The SQL store keeps queue metadata (attributes, redrive policy) as well as messages;
        # ElasticMQ uses the file-based queues-storage only when the SQL store is off.
        storage = (
            "messages-storage {\n"
            "  enabled = true\n"
            '  driver-class = "org.h2.Driver"\n'
            f"  uri = {_hocon_string(database)}\n"
            "  prune-data-on-init = false\n"
            "}"
        )
    return f"""include classpath("application.conf")

node-address {{
  protocol = "http"
  host = {_hocon_string(LOOPBACK_HOST)}
  port = {port}
  context-path = ""
}}
rest-sqs {{
  enabled = true
  bind-port = {port}
  bind-hostname = {_hocon_string(LOOPBACK_HOST)}
  sqs-limits = strict
}}
generate-node-address = false
queues-storage {{ enabled = false }}
{storage}
aws {{
  region = {_hocon_string(SQS_REGION)}
  accountId = {_hocon_string(SQS_ACCOUNT_ID)}
}}
# Pekko sizes this pool for at least 8 threads; on a small machine shared with the services each
# request then wakes several of them. One thread per two cores cut ElasticMQ's CPU per call by
# about 30% at 300-2,000 SendMessageBatch calls/s on 2 cores, p99 unchanged.
pekko.actor.default-dispatcher.fork-join-executor {{
  parallelism-min = 1
  parallelism-factor = 0.5
}}
"""


def elasticmq_process(
    state_dir: Path,
    *,
    port: int,
    persistent: bool,
    extra_jvm_options: Sequence[str] = (),
) -> EngineProcess:
    work_dir = state_dir / "elasticmq"
    config_path = work_dir / "elasticmq.conf"

    def build_command(bound_port: int) -> list[str]:
        data_dir = work_dir if persistent else None
        config_path.write_text(elasticmq_config(port=bound_port, data_dir=data_dir))
        return [
            _require_tool("java"),
            *COMMON_JVM_OPTIONS,
            *ELASTICMQ_JVM_OPTIONS,
            *(extra_jvm_options or _class_archive_options(ELASTICMQ)),
            f"-Dconfig.file={config_path}",
            "-cp",
            f"{ELASTICMQ.lib_dir}/*",
            ELASTICMQ_MAIN_CLASS,
        ]

    return EngineProcess(
        name="elasticmq",
        port=port,
        build_command=build_command,
        answers=_sqs_answers,
        log_path=state_dir / "elasticmq.log",
        work_dir=work_dir,
    )


def dynoxide_process(state_dir: Path, *, port: int, persistent: bool) -> EngineProcess:
    work_dir = state_dir / "dynoxide"

    def build_command(bound_port: int) -> list[str]:
        # One database whatever credentials or region a client uses, as in one account.
        storage = ["--db-path", str((work_dir / "dynamodb.sqlite").resolve())] if persistent else []
        return [
            str(DYNOXIDE.binary),
            "serve",
            "--host",
            LOOPBACK_HOST,
            "--port",
            str(bound_port),
            *storage,
        ]

    return EngineProcess(
        name="dynoxide",
        port=port,
        build_command=build_command,
        answers=_dynamodb_answers,
        log_path=state_dir / "dynoxide.log",
        work_dir=work_dir,
    )


@contextlib.contextmanager
def running_engines(
    state_dir: Path,
    *,
    sqs_port: int = 0,
    dynamodb_port: int = 0,
    persistent: bool = True,
) -> Iterator[Engines]:
    """Both engines on loopback for the duration of the block; port 0 picks a free port.

    persistent=True keeps queues, messages and tables under `state_dir` across stop()/start()
    (and across runs with the same dir); persistent=False keeps everything in memory.
    """
    ensure_installed()
    state_dir.mkdir(parents=True, exist_ok=True)
    engines = Engines(
        sqs=elasticmq_process(state_dir, port=sqs_port, persistent=persistent),
        dynamodb=dynoxide_process(state_dir, port=dynamodb_port, persistent=persistent),
    )
    engines.start()
    try:
        yield engines
    finally:
        engines.stop()


# --- `python -m order_devtools.engines` -------------------------------------------------------


def _repo_state_dir() -> Path:
    repo_root = Path(__file__).resolve().parents[2]
    if not (repo_root / "pyproject.toml").exists():
        repo_root = Path.cwd()
    return repo_root / ".run" / "engines"


def _port_from_env(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    return int(raw) if raw else default


class _StopRequested(Exception):
    pass


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def request_stop(signum: int, frame: object) -> None:
        # Ignore repeats so a second Ctrl-C cannot cut the engines' own shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _StopRequested

    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    ensure_installed()
    state_dir = _repo_state_dir()
    try:
        with running_engines(
            state_dir,
            sqs_port=_port_from_env("SQS_PORT", 9324),
            dynamodb_port=_port_from_env("DYNAMODB_PORT", 8001),
            persistent=True,
        ) as engines:
            print(
                f"SQS (ElasticMQ {ELASTICMQ_VERSION}):     {engines.sqs_endpoint}\n"
                f"DynamoDB (Dynoxide {DYNOXIDE_VERSION}):  {engines.dynamodb_endpoint}\n"
                f"data and logs: {state_dir}\n\n"
                f"export AWS_ENDPOINT_URL_SQS={engines.sqs_endpoint}\n"
                f"export AWS_ENDPOINT_URL_DYNAMODB={engines.dynamodb_endpoint}\n\n"
                "Ctrl-C stops both.",
                flush=True,
            )
            stop_event = threading.Event()
            while not stop_event.wait(1.0):
                for engine in engines.all():
                    if not engine.is_running():
                        logger.error("%s exited on its own; see %s", engine.name, engine.log_path)
                        return 1
    except _StopRequested:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
