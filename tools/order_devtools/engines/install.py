"""What both engines' installs share: the cache directory outside the repo, a lock per engine
across processes, and staging directories so an interrupted install never looks complete."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

INSTALLED_MARKER = ".installed"
# Bump when the cache layout changes, so older caches are resolved again.
INSTALL_LAYOUT_VERSION = 2


def cache_root() -> Path:
    base = os.environ.get("ORDER_PIPELINE_CACHE") or str(Path.home() / ".cache" / "order-pipeline")
    return Path(base) / "engines"


def versioned_install_dir(name: str, version: str) -> Path:
    """Where one version of one engine is installed, so a new pin never reuses an old install."""
    return cache_root() / f"{name}-{version}"


def progress(message: str) -> None:
    print(f"[engines] {message}", file=sys.stderr, flush=True)


def require_tool(tool: str) -> str:
    if tool == "java" and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if candidate.exists():
            return str(candidate)
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"{tool!r} is not on PATH; `make java` installs a JRE and Maven")
    return found


def run_checked(
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
def install_lock(name: str) -> Iterator[None]:
    """One installer per engine at a time across processes (parallel test sessions, CI)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / f".{name}.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def _installed_marker_text(what: object) -> str:
    return f"{what} layout={INSTALL_LAYOUT_VERSION}\n"


def is_installed(install_dir: Path, what: object) -> bool:
    try:
        return (install_dir / INSTALLED_MARKER).read_text() == _installed_marker_text(what)
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def staging_dir_for(install_dir: Path, what: object) -> Iterator[Path]:
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
