"""Dynoxide, the local DynamoDB: a native binary built once from crates.io with
`cargo install --locked` into the cache, served over HTTP."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from order_devtools.engines.engine_process import LOOPBACK_HOST, EngineProcess, answers_http
from order_devtools.engines.install import (
    cache_root,
    install_lock,
    is_installed,
    progress,
    run_checked,
    staging_dir_for,
    versioned_install_dir,
)

DYNOXIDE_VERSION = "3.2.0"


@dataclasses.dataclass(frozen=True)
class CargoCrate:
    """A binary built from crates.io with the crate's own lock file (`--locked`)."""

    name: str
    crate: str
    version: str
    features: tuple[str, ...]
    minimum_rust: tuple[int, int]
    opt_level: str
    """The release profile's optimisation level, overriding the crate's own."""

    @property
    def install_dir(self) -> Path:
        return versioned_install_dir(self.name, f"{self.version}-opt{self.opt_level}")

    @property
    def binary(self) -> Path:
        return self.install_dir / "bin" / self.name


# Only the HTTP server and its CLI over the bundled SQLite: no MCP server, no encryption.
# Built for speed: the crate's release profile optimises for size (opt-level "s"), which made
# its transactions and batch writes slower (docs/performance.md).
DYNOXIDE = CargoCrate(
    name="dynoxide",
    crate="dynoxide-rs",
    version=DYNOXIDE_VERSION,
    features=("native-sqlite", "http-server", "cli"),
    minimum_rust=(1, 88),
    opt_level="3",
)


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


def install() -> None:
    """Build Dynoxide into the cache; cheap when an earlier build is there."""
    _install_cargo(DYNOXIDE)


def _install_cargo(crate: CargoCrate) -> None:
    """Build the crate's binary into its cache dir unless a complete earlier build is there."""
    what = (
        f"{crate.crate}@{crate.version} features={','.join(crate.features)} "
        f"opt-level={crate.opt_level}"
    )
    if is_installed(crate.install_dir, what):
        return
    cargo = _cargo()
    with install_lock(crate.name):
        if is_installed(crate.install_dir, what):
            return
        progress(
            f"building {crate.crate} {crate.version} with cargo into {crate.install_dir} "
            "(first run only; about 5 minutes on 2 cores)"
        )
        started = time.monotonic()
        # A target dir that outlives the attempt: an interrupted build resumes where it stopped.
        target_dir = cache_root() / f".{crate.install_dir.name}-target"
        with staging_dir_for(crate.install_dir, what) as staging_dir:
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
                "--config",
                f"profile.release.opt-level={crate.opt_level}",
            ]
            run_checked(build_command, cwd=staging_dir, what=f"building {crate.crate}")
            (staging_dir / ".crates.toml").unlink(missing_ok=True)
            (staging_dir / ".crates2.json").unlink(missing_ok=True)
            if not os.access(staging_dir / "bin" / crate.name, os.X_OK):
                raise RuntimeError(f"building {crate.crate} produced no bin/{crate.name}")
        shutil.rmtree(target_dir, ignore_errors=True)
        progress(f"{crate.name} ready in {time.monotonic() - started:.1f}s")


def _dynamodb_answers(host: str, port: int) -> bool:
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
    return answers_http(host, port, "POST", "/", body=b"{}", headers=headers)


# glibc's allocator held about a quarter of Dynoxide's CPU in the pipeline; with jemalloc
# (Debian's libjemalloc2, which `make` installs) a transaction costs it less CPU
# (docs/performance.md).
JEMALLOC_PATHS = tuple(
    f"{lib}/libjemalloc.so.2"
    for lib in (
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    )
)


def _allocator_env() -> dict[str, str]:
    """Dynoxide's environment: jemalloc preloaded where the machine has it."""
    for path in JEMALLOC_PATHS:
        if os.path.exists(path):
            return {"LD_PRELOAD": path}
    progress(
        "libjemalloc.so.2 not found: Dynoxide runs on the C library's allocator, which costs "
        "it more CPU (on Debian `make` installs libjemalloc2)"
    )
    return {}


def dynoxide_process(
    state_dir: Path, *, port: int, persistent: bool, host: str = LOOPBACK_HOST
) -> EngineProcess:
    work_dir = state_dir / "dynoxide"

    def build_command(host: str, bound_port: int) -> list[str]:
        # One database whatever credentials or region a client uses, as in one account.
        storage = ["--db-path", str((work_dir / "dynamodb.sqlite").resolve())] if persistent else []
        return [
            str(DYNOXIDE.binary),
            "serve",
            "--host",
            host,
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
        env=_allocator_env(),
        host=host,
    )
