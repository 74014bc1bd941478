"""`skaffold dev` file sync, on this machine and without mocks: the exact commands the operator's
builders give the API and processor containers under `spec.development.reload`, run as local
processes (loopback only) in a directory laid out like the pod, pick up a Python file written the
way skaffold syncs it (`tar xmf - -C / --no-same-owner`, per skaffold.yaml's `dev` rules).

What is emulated and how: the container's root is a temporary directory; the image's `/app` is a
copy of the component's packages (what its Dockerfile COPYs, compiled like the image); the emptyDir
is an empty directory at `<root>/app`, filled by running the init container's own command; the
image's ENV (PATH with the venv first, PYTHONPATH=/app) points at the same places.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from order_devtools import local, processes
from order_operator import builders
from order_operator.v1alpha1 import spec as v1alpha1

from .k8s_helpers import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
OWNER = builders.Owner(name="dev", namespace="orders-dev", uid="0")
IMAGES = {"api": "order-pipeline/api", "processor": "order-pipeline/processor"}


def dev_spec() -> v1alpha1.OrderPipelineSpec:
    # Engines on a loopback port nobody listens on: both services start without them (the API
    # answers /healthz, the processor waits for its queue while serving /healthz).
    unreachable = f"http://127.0.0.1:{local.free_port()}"
    return v1alpha1.OrderPipelineSpec.model_validate(
        {
            "aws": {"endpoints": {"sqs": unreachable, "dynamodb": unreachable}},
            "queue": {"name": "dev-orders"},
            "tables": {"prefix": "dev-"},
            "api": {"image": "api:dev"},
            "processor": {"image": "processor:dev", "env": {"PAYMENT_GATEWAY": "simulator"}},
            "development": {"reload": True},
        }
    )


def sync_rules(component: str) -> list[dict[str, str]]:
    """skaffold.yaml's sync rules of one component's artifact, with the `dev` profile applied."""
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    (profile,) = [p for p in config["profiles"] if p["name"] == "dev"]
    patched = jsonpatch.apply_patch(config, profile["patches"])
    (artifact,) = [a for a in patched["build"]["artifacts"] if a["image"] == IMAGES[component]]
    rules: list[dict[str, str]] = artifact["sync"]["manual"]
    return rules


@dataclass
class Pod:
    """One workload container of a dev-mode Deployment, laid out on this machine."""

    root: Path
    """The container's `/`."""
    container: dict[str, Any]
    init_container: dict[str, Any]
    env: dict[str, str]
    log_path: Path

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def sync(self, repo_file: Path, content: str, rules: list[dict[str, str]]) -> None:
        """What skaffold does for a changed file: a tar of `<dest>/<path minus strip>` piped into
        `tar xmf - -C / --no-same-owner` in the container."""
        relative = repo_file.relative_to(REPO).as_posix()
        (rule,) = [rule for rule in rules if relative.startswith(rule["src"].split("/**")[0])]
        name = f"{rule['dest']}/{relative.removeprefix(rule['strip'])}"
        data = content.encode()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))
        subprocess.run(
            ["tar", "xmf", "-", "-C", str(self.root), "--no-same-owner"],
            input=archive.getvalue(), capture_output=True, check=True, timeout=30,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def lay_out_pod(tmp_path: Path, deployment: dict[str, Any], packages: list[str]) -> Pod:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (init,) = pod["initContainers"]
    image_app = tmp_path / "image" / builders.SOURCE_DIR.lstrip("/")
    for package in packages:
        shutil.copytree(
            REPO / "services" / package,
            image_app / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(image_app)], check=True)
    root = tmp_path / "container"
    (root / builders.SOURCE_DIR.lstrip("/")).mkdir(parents=True)  # the emptyDir's mount point
    venv_bin = str(Path(sys.executable).parent)
    image_env = {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root / builders.SOURCE_DIR.lstrip("/")),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }
    container_env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    laid_out = Pod(
        root=root,
        container=container,
        init_container=init,
        env={**image_env, **container_env},
        log_path=tmp_path / "container.log",
    )
    # The init container's own command, its two mounts mapped to these directories.
    mounts = {
        builders.SOURCE_DIR: str(image_app),
        builders.SOURCES_COPY_DIR: str(laid_out.path(builders.SOURCE_DIR)),
    }
    subprocess.run(
        [mounts.get(argument, argument) for argument in init["command"]],
        env=image_env, check=True, timeout=60,
    )  # fmt: skip
    return laid_out


@contextlib.contextmanager
def running(pod: Pod, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """The workload container's command, in its working directory, until SIGTERM (as on pod
    deletion)."""
    process = processes.spawn(
        pod.container["command"],
        log_path=pod.log_path,
        env={**pod.env, **env},
        cwd=pod.path(pod.container["workingDir"]),
    )
    try:
        yield process
    finally:
        processes.stop(process, timeout=30)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())
    except OSError:
        return 0, b""


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def test_init_container_copies_the_image_sources_with_their_times(tmp_path: Path) -> None:
    deployment = builders.build_api_deployment(OWNER, dev_spec())
    pod = lay_out_pod(tmp_path, deployment, ["order_api", "order_common"])
    image_app = tmp_path / "image/app"
    copied = pod.path(builders.SOURCE_DIR)
    originals = sorted(p.relative_to(image_app) for p in image_app.rglob("*") if p.is_file())
    assert sorted(p.relative_to(copied) for p in copied.rglob("*") if p.is_file()) == originals
    assert Path("order_api/app.py") in originals
    # Same modification times, so the image's compiled bytecode stays valid for the copies.
    for relative in originals:
        assert (copied / relative).stat().st_mtime_ns == (image_app / relative).stat().st_mtime_ns


def test_api_in_dev_mode_serves_a_synced_change_without_a_restart_of_the_container(
    tmp_path: Path,
) -> None:
    deployment = builders.build_api_deployment(OWNER, dev_spec())
    pod = lay_out_pod(tmp_path, deployment, ["order_api", "order_common"])
    port = local.free_port()
    marker = uuid.uuid4().hex
    url = f"http://127.0.0.1:{port}"
    secrets = {"SIGNING_SECRET": "s" * 32, "JWT_SECRET": "j" * 32, "API_CLIENTS": "{}"}
    # In the pod these come from the Secret (envFrom) and the builder's UVICORN_* values; only
    # the bind address and port differ here.
    assert pod.env["UVICORN_HOST"] == "0.0.0.0"
    with running(pod, UVICORN_HOST="127.0.0.1", UVICORN_PORT=str(port), **secrets) as process:
        wait_for(lambda: get(f"{url}/healthz")[0] == 200, f"the API up; log: {pod.log()}")
        assert get(f"{url}/dev-reload-marker")[0] == 404
        workers = children(process.pid)
        assert workers

        app_py = REPO / "services/order_api/app.py"
        route = f"app.add_api_route('/dev-reload-marker', lambda: {{'marker': {marker!r}}})"
        changed = pod.path("/app/order_api/app.py").read_text() + (
            "\n\n_served_app = create_served_app\n\n\n"
            "def create_served_app() -> fastapi.FastAPI:  # type: ignore[no-redef]\n"
            "    app = _served_app()\n"
            f"    {route}\n"
            "    return app\n"
        )
        pod.sync(app_py, changed, sync_rules("api"))

        def serves_the_marker() -> bool:
            status, body = get(f"{url}/dev-reload-marker")
            return status == 200 and json.loads(body) == {"marker": marker}

        wait_for(serves_the_marker, f"the synced route served; log: {pod.log()}", timeout=60)
        assert process.poll() is None  # the same container process, its worker reloaded
        now = children(process.pid)
        # The old worker is gone and a new one serves (beside multiprocessing's resource tracker).
        assert workers - now
        assert now - workers
        assert "order_api/app.py" in pod.log()  # uvicorn names the change it reloaded for
        assert get(f"{url}/healthz")[0] == 200
    assert process.returncode == 0, pod.log()


def test_processor_in_dev_mode_restarts_on_a_synced_change(tmp_path: Path) -> None:
    deployment = builders.build_processor_deployment(OWNER, dev_spec())
    pod = lay_out_pod(tmp_path, deployment, ["order_processor", "order_common"])
    metrics_port = local.free_port()
    health = f"http://127.0.0.1:{metrics_port}/healthz"
    marker = uuid.uuid4().hex
    assert pod.env["METRICS_HOST"] == "0.0.0.0"  # in the pod; here only loopback
    with running(
        pod, METRICS_HOST="127.0.0.1", METRICS_PORT=str(metrics_port), WAIT_TIME_SECONDS="1"
    ) as process:
        wait_for(lambda: get(health)[0] == 200, f"the processor up; log: {pod.log()}")
        (first,) = children(process.pid)

        init_py = REPO / "services/order_processor/__init__.py"
        announce = f"print('dev-reload-marker {marker}', _os.getpid(), flush=True)"
        changed = (
            pod.path("/app/order_processor/__init__.py").read_text()
            + f"\nimport os as _os\n\n{announce}\n"
        )
        pod.sync(init_py, changed, sync_rules("processor"))

        wait_for(
            lambda: f"dev-reload-marker {marker}" in pod.log(),
            f"the processor restarted with the synced code; log: {pod.log()}",
            timeout=60,
        )
        found = re.search(rf"dev-reload-marker {marker} (\d+)", pod.log())
        assert found is not None
        restarted = int(found[1])
        assert restarted != first
        assert children(process.pid) == {restarted}
        assert not Path(f"/proc/{first}").exists()
        wait_for(lambda: get(health)[0] == 200, f"the restarted processor healthy: {pod.log()}")
        assert process.poll() is None
    assert process.returncode == 0, pod.log()
