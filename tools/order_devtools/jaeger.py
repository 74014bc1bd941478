"""Jaeger, the local trace backend: built once from the Go module proxy into the engines' cache
(`ensure_jaeger`) and run on loopback for the length of a block (`running_jaeger`).

The module github.com/jaegertracing/jaeger at v1.75.0 holds both the deprecated v1 all-in-one
and the v2 binary, `cmd/jaeger` (an OpenTelemetry Collector distribution, published upstream as
Jaeger v2.12.0). This runs the v2 binary with a config of its own: an OTLP/HTTP receiver, the
in-memory store and the query service (HTTP API `/api/traces`, and the gRPC API it cannot do
without), every listener on 127.0.0.1 at a picked port and nothing else (no gRPC, Jaeger or
Zipkin receivers, no health, metrics, sampling or debug endpoints).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from order_devtools import processes
from order_devtools.engines import engine_process, install

JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER_VERSION = "v1.75.0"
JAEGER_PACKAGE = "./cmd/jaeger"
MINIMUM_GO = (1, 24, 6)
"""The `go` line of the module's go.mod: an older Go refuses to build it."""

API_SERVICE_NAME = "order-api"
PROCESSOR_SERVICE_NAME = "order-processor"
"""The `service.name` the API's and the processor's spans carry (`OTEL_SERVICE_NAME`)."""

INSTALLED_WHAT = f"{JAEGER_MODULE}@{JAEGER_VERSION} package={JAEGER_PACKAGE}"
"""What a complete install's marker records: anything else is built again."""

_VERSION_PACKAGE = f"{JAEGER_MODULE}/internal/version"
_STORE = "memory_store"
_STOP_TIMEOUT_SECONDS = 10.0


def install_dir() -> Path:
    return install.versioned_install_dir("jaeger", JAEGER_VERSION.removeprefix("v"))


def _binary() -> Path:
    return install_dir() / "bin" / "jaeger"


def _go() -> str:
    """The `go` to build with, checked to be new enough for the module."""
    go = shutil.which("go")
    needed = ".".join(map(str, MINIMUM_GO))
    hint = (
        f"Jaeger, the local trace backend, is built once from the Go module proxy with "
        f"Go {needed} or newer; install a Go toolchain and put `go` on PATH"
    )
    if go is None:
        raise RuntimeError(f"'go' is not on PATH. {hint}")
    reported = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=False
    ).stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", reported)
    found = (int(match[1]), int(match[2]), int(match[3] or 0)) if match is not None else (0, 0, 0)
    if found < MINIMUM_GO:
        raise RuntimeError(f"{go} is {reported or 'an unknown version'}, too old. {hint}")
    return go


def _go_env() -> dict[str, str]:
    # GOTOOLCHAIN=local: use the Go found, never download the one go.mod's toolchain line names.
    return {
        **os.environ,
        "GOFLAGS": "-mod=mod -buildvcs=false",
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
    }


def _download_module(go: str, *, cwd: Path) -> dict[str, Any]:
    """`go mod download -json`: the module's source directory (checked against the checksum
    database) and where its tag points."""
    completed = subprocess.run(
        [go, "mod", "download", "-json", f"{JAEGER_MODULE}@{JAEGER_VERSION}"],
        cwd=cwd,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"downloading {JAEGER_MODULE}@{JAEGER_VERSION} failed:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    module: dict[str, Any] = json.loads(completed.stdout)
    if module.get("Error"):
        raise RuntimeError(f"downloading {JAEGER_MODULE}@{JAEGER_VERSION}: {module['Error']}")
    return module


def _version_ldflags(module: dict[str, Any]) -> str:
    """What upstream's Makefile stamps, so `jaeger version` names the release it came from."""
    info = json.loads(Path(module["Info"]).read_text())
    commit = (module.get("Origin") or info.get("Origin") or {}).get("Hash", "")
    return " ".join(
        [
            "-s -w",
            f"-X {_VERSION_PACKAGE}.latestVersion={JAEGER_VERSION}",
            f"-X {_VERSION_PACKAGE}.commitSHA={commit}",
            f"-X {_VERSION_PACKAGE}.date={info.get('Time', '')}",
        ]
    )


def _writable_copy(source: Path, destination: Path) -> None:
    """The module cache is read-only; the build runs in a copy it may write go.sum into."""
    shutil.copytree(source, destination, copy_function=shutil.copyfile)
    for directory, _, _ in os.walk(destination):
        Path(directory).chmod(0o755)


def is_installed() -> bool:
    """Whether the cache holds a complete build of the pinned version."""
    return install.is_installed(install_dir(), INSTALLED_WHAT)


def ensure_jaeger() -> Path:
    """Build Jaeger into the cache unless a complete earlier build is there; its binary."""
    if is_installed():
        return _binary()
    go = _go()
    with install.install_lock("jaeger"):
        if is_installed():
            return _binary()
        install.progress(
            f"building Jaeger {JAEGER_VERSION} ({JAEGER_MODULE}/cmd/jaeger) with go into "
            f"{install_dir()} (first run only; 10 to 20 minutes on 2 cores)"
        )
        started = time.monotonic()
        with install.staging_dir_for(install_dir(), INSTALLED_WHAT) as staging_dir:
            module = _download_module(go, cwd=staging_dir)
            source = staging_dir / "src"
            _writable_copy(Path(module["Dir"]), source)
            built = staging_dir / "bin" / "jaeger"
            install.run_checked(
                [
                    go,
                    "build",
                    "-trimpath",
                    "-ldflags",
                    _version_ldflags(module),
                    "-o",
                    str(built),
                    JAEGER_PACKAGE,
                ],
                cwd=source,
                env=_go_env(),
                what=f"building {JAEGER_MODULE}/cmd/jaeger {JAEGER_VERSION}",
            )
            shutil.rmtree(source)
            _check_version(built)
        install.progress(f"jaeger ready in {time.monotonic() - started:.1f}s")
    return _binary()


def _check_version(binary: Path) -> None:
    reported = subprocess.run(
        [str(binary), "version"], capture_output=True, text=True, check=False
    ).stdout
    try:
        version = json.loads(reported).get("gitVersion")
    except json.JSONDecodeError:
        version = None
    if version != JAEGER_VERSION:
        raise RuntimeError(f"the built {binary} reports {reported.strip()!r}, not {JAEGER_VERSION}")


@dataclass(frozen=True)
class JaegerPorts:
    """Jaeger's three listeners, all on loopback."""

    otlp_http: int
    query_http: int
    query_grpc: int
    """Unused here, but the query service always opens it."""

    @classmethod
    def pick(cls) -> JaegerPorts:
        return cls(
            otlp_http=processes.free_port(),
            query_http=processes.free_port(),
            query_grpc=processes.free_port(),
        )


def config(ports: JaegerPorts, *, max_traces: int = 100_000) -> dict[str, Any]:
    """The collector config: only the listeners named in `ports`, on 127.0.0.1."""
    host = processes.LOOPBACK_HOST
    return {
        "extensions": {
            "jaeger_storage": {"backends": {_STORE: {"memory": {"max_traces": max_traces}}}},
            "jaeger_query": {
                "storage": {"traces": _STORE},
                # On by default in v2: it would export Jaeger's own query spans over OTLP/gRPC
                # to whatever OTEL_EXPORTER_OTLP_ENDPOINT (or localhost:4317) points at.
                "enable_tracing": False,
                "http": {"endpoint": f"{host}:{ports.query_http}"},
                "grpc": {"endpoint": f"{host}:{ports.query_grpc}"},
            },
        },
        "receivers": {
            "otlp": {"protocols": {"http": {"endpoint": f"{host}:{ports.otlp_http}"}}},
        },
        "exporters": {"jaeger_storage_exporter": {"trace_storage": _STORE}},
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"]},
            },
            # `none` removes the collector's own Prometheus endpoint (port 8888 by default).
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
        },
    }


@dataclass(frozen=True)
class RunningJaeger:
    """A Jaeger started by `running_jaeger`."""

    otlp_endpoint: str
    """OTLP/HTTP base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`; the SDK appends `/v1/traces`)."""
    query_url: str
    """Base URL of the query service: the HTTP API under `/api/` and the UI page."""
    pid: int
    log_path: Path

    def otlp_env(self, service_name: str) -> dict[str, str]:
        """The OpenTelemetry SDK environment that sends a service's spans here."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": service_name,
        }


class _JaegerProcess(engine_process.EngineProcess):
    """Jaeger as an engine process whose port is the query API's; the other two ports are
    picked again with it when one turns out taken."""

    def __init__(self, binary: Path, state_dir: Path) -> None:
        self.ports = JaegerPorts.pick()
        self._binary = binary
        self._config_path = state_dir / "jaeger.yaml"
        super().__init__(
            name="jaeger",
            port=self.ports.query_http,
            build_command=self._command,
            answers=self._answers,
            log_path=state_dir / "jaeger.log",
            work_dir=state_dir,
            # Go's net error text, lower case unlike the JVM's.
            port_taken_markers=("address already in use",),
        )
        self.may_choose_port = True

    def choose_new_port(self) -> None:
        self.ports = JaegerPorts.pick()
        self.port = self.ports.query_http

    def _command(self, host: str, port: int) -> list[str]:
        self._config_path.write_text(yaml.safe_dump(config(self.ports), sort_keys=False))
        return [str(self._binary), "--config", str(self._config_path)]

    def _answers(self, host: str, port: int) -> bool:
        # Extensions start before the pipeline, so the query API can answer while the receiver
        # is not listening yet; an empty export is accepted only once it is.
        return engine_process.answers_http(
            host, port, "GET", "/api/services"
        ) and engine_process.answers_http(
            host,
            self.ports.otlp_http,
            "POST",
            "/v1/traces",
            body=b"{}",
            headers={"Content-Type": "application/json"},
        )


@contextlib.contextmanager
def running_jaeger(state_dir: Path) -> Iterator[RunningJaeger]:
    """Jaeger on 127.0.0.1 at picked ports for the duration of the block, traces in memory, its
    config and log in `state_dir`; builds it first if the cache has none."""
    binary = ensure_jaeger()
    state_dir.mkdir(parents=True, exist_ok=True)
    jaeger = _JaegerProcess(binary, state_dir)
    engine_process.start_together([jaeger])
    try:
        assert jaeger.pid is not None
        host = processes.LOOPBACK_HOST
        yield RunningJaeger(
            otlp_endpoint=f"http://{host}:{jaeger.ports.otlp_http}",
            query_url=f"http://{host}:{jaeger.ports.query_http}",
            pid=jaeger.pid,
            log_path=jaeger.log_path,
        )
    finally:
        jaeger.stop(timeout=_STOP_TIMEOUT_SECONDS)
