"""What the image builds share: their cache directory outside the repository, one build at a
time across processes, and running the Debian tools with their output kept for the error."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

# Debian package of each command the builds run (named in the error when one is missing).
REQUIRED_COMMANDS = {"buildah": "buildah", "mmdebstrap": "mmdebstrap"}


class ImageBuildError(RuntimeError):
    """A build step failed or a prerequisite is missing; the message says which and why."""


def images_cache() -> Path:
    base = os.environ.get("ORDER_PIPELINE_CACHE") or str(Path.home() / ".cache" / "order-pipeline")
    return Path(base) / "images"


def logs_dir() -> Path:
    """The last log of each long step (kept, so a failure can be read in full)."""
    return images_cache() / "logs"


def progress(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def require_commands() -> None:
    """Root and the Debian tools: fail naming what is missing, before anything is written."""
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the images needs root: mmdebstrap and buildah (chroot isolation) create "
            "files owned by other users"
        )
    missing = [
        package for command, package in REQUIRED_COMMANDS.items() if not shutil.which(command)
    ]
    if missing:
        raise ImageBuildError(
            f"missing Debian package(s) {', '.join(missing)}: "
            f"apt-get install --no-install-recommends {' '.join(missing)}"
        )


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One image build at a time across processes: parallel test sessions share the store."""
    images_cache().mkdir(parents=True, exist_ok=True)
    with (images_cache() / ".build.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def run_tool(command: Sequence[str], *, what: str, env: Mapping[str, str] | None = None) -> str:
    """Run one short command; its stdout on success, its output's end in the error otherwise."""
    completed = subprocess.run(
        list(command),
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).splitlines()
        raise ImageBuildError(_failure(what, completed.returncode, output))
    return completed.stdout


def run_logged(
    command: Sequence[str], *, what: str, log: Path, env: Mapping[str, str] | None = None
) -> None:
    """Run one long step (a bootstrap, an image build) with its output in `log`, followed there
    by `tail -f` if wanted; the output's end goes into the error on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as log_file:
        return_code = subprocess.run(
            list(command),
            env=dict(env) if env is not None else None,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    if return_code != 0:
        output = log.read_text(errors="replace").splitlines()
        raise ImageBuildError(_failure(what, return_code, output) + f"\n(whole log: {log})")


def _failure(what: str, return_code: int, output: list[str]) -> str:
    tail = "\n".join(output[-40:])
    return f"{what} failed (exit {return_code}):\n{tail}"
