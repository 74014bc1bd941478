"""The three images `make images` builds (buildah, no Docker engine, no registry), checked as a
node gets them: each OCI archive's manifest and config are read, its layers are unpacked into
a root file system, and the image's own Python runs there as the image's user on a read-only
root, the way the chart's pods run it. A private containerd imports every archive.

The first run builds the Debian base images and the dependency layers (minutes, once); later
runs find the archives in the cache (docs/images.md).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tarfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from order_devtools import images
from order_devtools.images import buildah as image_buildah

# A cold build (Debian bootstrap, pip install of the lock) takes minutes on 2 cores.
pytestmark = pytest.mark.timeout(3600)

ENTRY_MODULES = {"api": "order_api", "processor": "order_processor", "operator": "order_operator"}
# What each component's process imports to serve: importing it proves the dependencies work.
SERVING_MODULES = {
    "api": "order_api.app",
    "processor": "order_processor.service",
    "operator": "order_operator.handlers",
}
IMAGE_USER = "10001:10001"


@dataclass(frozen=True)
class ImageArchive:
    """An OCI archive: index.json naming one image manifest, which names the image config and
    the layer tarballs, all as blobs addressed by digest."""

    path: Path

    def _member(self, name: str) -> bytes:
        with tarfile.open(self.path) as archive:
            member = archive.extractfile(name)
            assert member is not None, f"{name} missing from {self.path}"
            return member.read()

    def _blob(self, digest: str) -> dict[str, Any]:
        algorithm, _, encoded = digest.partition(":")
        document: dict[str, Any] = json.loads(self._member(f"blobs/{algorithm}/{encoded}"))
        return document

    @property
    def index_entry(self) -> dict[str, Any]:
        entries: list[dict[str, Any]] = json.loads(self._member("index.json"))["manifests"]
        assert len(entries) == 1, entries
        return entries[0]

    @property
    def names(self) -> list[str]:
        return [self.index_entry["annotations"]["org.opencontainers.image.ref.name"]]

    @property
    def manifest(self) -> dict[str, Any]:
        return self._blob(self.index_entry["digest"])

    @property
    def layers(self) -> list[str]:
        return [layer["digest"] for layer in self.manifest["layers"]]

    @property
    def config(self) -> dict[str, Any]:
        return self._blob(self.manifest["config"]["digest"])

    def unpack(self, rootfs: Path, scratch: Path) -> None:
        """Apply the layers in order, whiteouts included, as a container runtime does (GNU tar
        as root keeps owners, modes, links and times exactly)."""
        subprocess.run(["tar", "-x", "-C", str(scratch), "-f", str(self.path)], check=True)
        rootfs.mkdir(parents=True)
        for digest in self.layers:
            algorithm, _, encoded = digest.partition(":")
            layer = scratch / "blobs" / algorithm / encoded
            listing = subprocess.run(
                ["tar", "-t", "-f", str(layer)], capture_output=True, text=True, check=True
            ).stdout
            for name in listing.splitlines():
                directory, _, base = name.rstrip("/").rpartition("/")
                if base == ".wh..wh..opq":
                    for child in (rootfs / directory).iterdir():
                        _remove(child)
                elif base.startswith(".wh."):
                    _remove(rootfs / directory / base.removeprefix(".wh."))
            subprocess.run(
                ["tar", "-x", "-C", str(rootfs), "-f", str(layer), "--exclude=.wh.*"], check=True
            )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class UnpackedImage:
    component: str
    rootfs: Path
    config: dict[str, Any]

    @property
    def environment(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config["config"]["Env"])

    def run(self, *command: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """`command` in the image, as its user, with its environment, on a read-only root."""
        confined = (
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && '
            'exec chroot --userspec="$1" "$0" "${@:2}"'
        )
        return subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "bash",
                "-c",
                confined,
                str(self.rootfs),
                self.config["config"]["User"],
                *command,
            ],
            env={**self.environment, **extra_env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def fixed_host_paths_before() -> set[Path]:
    return {path for path in image_buildah.FIXED_HOST_PATHS if path.exists()}


@pytest.fixture(scope="module")
def built_images(fixed_host_paths_before: set[Path]) -> dict[str, images.BuiltImage]:
    try:
        return images.ensure_images()
    except images.ImageBuildError as exc:
        pytest.fail(f"make images failed: {exc}")


@pytest.fixture(scope="module")
def unpacked(
    built_images: dict[str, images.BuiltImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, UnpackedImage]]:
    root = tmp_path_factory.mktemp("images")
    result: dict[str, UnpackedImage] = {}
    for name, image in built_images.items():
        archive = ImageArchive(image.archive)
        (root / f"{name}.archive").mkdir()
        archive.unpack(root / name, root / f"{name}.archive")
        shutil.rmtree(root / f"{name}.archive")
        result[name] = UnpackedImage(name, root / name, archive.config)
    yield result
    shutil.rmtree(root, ignore_errors=True)


def test_every_component_has_an_archive_named_by_its_reference(
    built_images: dict[str, images.BuiltImage],
) -> None:
    assert set(built_images) == {"api", "processor", "operator"}
    for name, image in built_images.items():
        assert image.reference == f"local.test/order-pipeline/{name}:{image.tag}"
        assert image.archive.is_file()
        assert ImageArchive(image.archive).names == [image.reference]


def test_the_images_share_the_base_and_dependency_layers(
    built_images: dict[str, images.BuiltImage],
) -> None:
    """Only the sources' layer differs, so a node imports and stores the rest once."""
    layers = {name: ImageArchive(image.archive).layers for name, image in built_images.items()}
    assert {len(found) for found in layers.values()} == {3}, layers
    assert len({tuple(found[:2]) for found in layers.values()}) == 1, layers
    assert len({found[2] for found in layers.values()}) == 3, layers


def test_a_second_run_with_unchanged_sources_reuses_every_archive(
    built_images: dict[str, images.BuiltImage],
) -> None:
    modified = {name: image.archive.stat().st_mtime_ns for name, image in built_images.items()}
    started = time.monotonic()
    again = images.ensure_images()
    elapsed = time.monotonic() - started
    assert again == built_images
    assert {name: image.archive.stat().st_mtime_ns for name, image in again.items()} == modified
    assert elapsed < 30, f"an unchanged build took {elapsed:.1f} s"


@pytest.mark.parametrize("component", sorted(ENTRY_MODULES))
def test_the_image_config_runs_the_module_as_a_numeric_non_root_user(
    unpacked: dict[str, UnpackedImage], component: str
) -> None:
    config = unpacked[component].config["config"]
    assert config["Entrypoint"] == ["python", "-m", ENTRY_MODULES[component]]
    # No arguments inherited from the base image's CMD (argparse in the operator would refuse).
    assert not config.get("Cmd"), config.get("Cmd")
    assert config["User"] == IMAGE_USER
    environment = unpacked[component].environment
    assert environment["PATH"].split(":")[0] == "/opt/venv/bin"
    assert environment["PYTHONPATH"] == "/app"
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    assert environment["HOME"] == "/tmp"


@pytest.mark.parametrize("component", sorted(ENTRY_MODULES))
def test_python_311_imports_the_component_on_a_read_only_root_from_current_bytecode(
    unpacked: dict[str, UnpackedImage], component: str
) -> None:
    """Every module the serving code imports from /app and the venv has bytecode that matches
    its source: on the pods' read-only root nothing could be recompiled and kept."""
    check = textwrap.dedent(
        """
        import importlib, importlib.util, os, struct, sys
        importlib.import_module(sys.argv[1])
        checked, stale = 0, []
        for module in list(sys.modules.values()):
            origin = getattr(module, "__file__", None) or ""
            if not origin.endswith(".py") or not origin.startswith(("/app/", "/opt/venv/")):
                continue
            checked += 1
            try:
                with open(importlib.util.cache_from_source(origin), "rb") as pyc:
                    flags, mtime, size = struct.unpack("<III", pyc.read(16)[4:16])
            except FileNotFoundError:
                stale.append(origin)
                continue
            source = os.stat(origin)
            if flags == 0 and (mtime, size) != (int(source.st_mtime), source.st_size):
                stale.append(origin)
        print(sys.version_info[0], sys.version_info[1], os.getuid(), checked, len(stale))
        print("\\n".join(stale[:10]))
        """
    )
    result = unpacked[component].run("python", "-c", check, SERVING_MODULES[component])
    assert result.returncode == 0, result.stderr
    major, minor, uid, checked, stale = result.stdout.split("\n", 1)[0].split()
    assert (major, minor) == ("3", "11")
    assert uid == "10001"
    assert int(checked) > 100, result.stdout
    assert stale == "0", f"modules without current bytecode:\n{result.stdout}"


def test_every_native_extension_finds_its_shared_libraries(
    unpacked: dict[str, UnpackedImage],
) -> None:
    """The wheels' compiled modules load against the base image's system libraries, including
    those the serving code imports only later (the images share this layer)."""
    load_all = textwrap.dedent(
        """
        import ctypes, pathlib
        failed, loaded = [], 0
        for library in sorted(pathlib.Path("/opt/venv").rglob("*.so*")):
            try:
                ctypes.CDLL(str(library))
                loaded += 1
            except OSError as error:
                failed.append(f"{library}: {error}")
        print(loaded)
        print("\\n".join(failed))
        """
    )
    result = unpacked["operator"].run("python", "-c", load_all)
    assert result.returncode == 0, result.stderr
    loaded, _, failed = result.stdout.partition("\n")
    assert int(loaded) > 20, result.stdout
    assert not failed.strip(), failed


@pytest.mark.parametrize("component", sorted(ENTRY_MODULES))
def test_the_running_image_carries_no_pip(
    unpacked: dict[str, UnpackedImage], component: str
) -> None:
    result = unpacked[component].run("python", "-c", "import pip")
    assert result.returncode != 0
    assert "No module named 'pip'" in result.stderr
    rootfs = unpacked[component].rootfs
    assert not [path for path in (rootfs / "usr" / "bin").glob("pip*")]
    assert not [path for path in (rootfs / "opt" / "venv" / "bin").glob("pip*")]


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        ("api", "order-api: refusing to start, the configuration is invalid"),
        ("processor", "order-processor: invalid configuration"),
    ],
)
def test_the_entrypoint_without_configuration_stops_with_its_startup_error(
    unpacked: dict[str, UnpackedImage], component: str, expected: str
) -> None:
    """The real start, before anything binds a port: nothing is configured, so it must say so."""
    image = unpacked[component]
    result = image.run(*image.config["config"]["Entrypoint"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stderr


def test_the_operator_entrypoint_answers_help(unpacked: dict[str, UnpackedImage]) -> None:
    # Its real start binds the metrics port on all interfaces first, so only --help runs here.
    image = unpacked["operator"]
    result = image.run(*image.config["config"]["Entrypoint"], "--help")
    assert result.returncode == 0, result.stderr
    assert "--namespace" in result.stdout


def test_the_build_leaves_no_fixed_host_path_behind(
    built_images: dict[str, images.BuiltImage], fixed_host_paths_before: set[Path]
) -> None:
    left = {path for path in image_buildah.FIXED_HOST_PATHS if path.exists()}
    assert left <= fixed_host_paths_before, (
        f"left behind by buildah: {left - fixed_host_paths_before}"
    )


def test_containerd_imports_every_archive_under_its_reference(
    built_images: dict[str, images.BuiltImage], tmp_path: Path
) -> None:
    """`ctr images import` of the node's containerd (Debian's 1.6) reads the archives and
    unpacks their layers."""
    for command, package in (("containerd", "containerd"), ("ctr", "containerd")):
        if shutil.which(command) is None:
            pytest.fail(f"{command} is missing: apt-get install {package}")
    with private_containerd(tmp_path) as address:
        for image in built_images.values():
            subprocess.run(
                [
                    "ctr",
                    "--address",
                    address,
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    str(image.archive),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
        listed = subprocess.run(
            ["ctr", "--address", address, "-n", "k8s.io", "images", "ls", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
    assert {image.reference for image in built_images.values()} <= set(listed), listed


@contextlib.contextmanager
def private_containerd(directory: Path) -> Iterator[str]:
    """containerd with its root, state and socket in `directory`, without the CRI plugin."""
    socket = directory / "containerd.sock"
    config = directory / "config.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            version = 2
            root = "{directory / "root"}"
            state = "{directory / "state"}"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]
            [grpc]
              address = "{socket}"
            [ttrpc]
              address = "{socket}.ttrpc"
            [plugins."io.containerd.internal.v1.opt"]
              path = "{directory / "opt"}"
            """
        )
    )
    log = (directory / "containerd.log").open("w")
    daemon = subprocess.Popen(
        ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert daemon.poll() is None, (directory / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not open its socket in 30 s"
            time.sleep(0.1)
        yield str(socket)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        log.close()
        # Snapshots are overlay mounts only while containers run; none ran here.
        shutil.rmtree(directory / "root", ignore_errors=True)
