"""buildah with everything of its own under the image cache: the image store, its run state, its
configuration and its temporary files, so a build reads no host container configuration and
leaves nothing in /var/lib/containers. Builds run with chroot isolation: no daemon, no container
runtime, no network namespace (RUN steps use the host's network).

buildah 1.28 still writes one fixed host path whatever its flags say (FIXED_HOST_PATHS):
`host_paths_restored` removes what the build created there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from order_devtools.images.cache import ImageBuildError, run_logged, run_tool

# overlay on the cache's file system (ext4 here); vfs would copy every layer in full.
STORAGE_DRIVER = "overlay"
# Fixed host paths buildah 1.28 would write whatever --root and --runroot say. As root, the
# blob-info cache always goes to /var/lib/containers/cache (containers/image offers no option for
# it in buildah); the network backend's /etc/cni/net.d/cni.lock and /run/containers/networks are
# avoided by the private containers.conf and listed in case a version writes them anyway.
FIXED_HOST_PATHS = (
    Path("/var/lib/containers/cache"),
    Path("/etc/cni/net.d/cni.lock"),
    Path("/run/containers/networks"),
)


@dataclass(frozen=True)
class Buildah:
    """One private buildah installation: store, state and configuration under `home`."""

    home: Path

    @property
    def root(self) -> Path:
        return self.home / "root"

    @property
    def runroot(self) -> Path:
        return self.home / "runroot"

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def policy(self) -> Path:
        return self.config_dir / "policy.json"

    def prepare(self) -> None:
        """Write the private configuration (local images only, nothing signed to check)."""
        for directory in (self.root, self.runroot, self.config_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "storage.conf").write_text(
            "[storage]\n"
            f'driver = "{STORAGE_DRIVER}"\n'
            f'graphroot = "{self.root}"\n'
            f'runroot = "{self.runroot}"\n'
        )
        # No search registries: an unqualified or unknown name fails instead of being looked up.
        (self.config_dir / "registries.conf").write_text("unqualified-search-registries = []\n")
        (self.config_dir / "containers.conf").write_text(
            "[network]\n"
            f'network_config_dir = "{self.home / "cni"}"\n'
            "[engine]\n"
            f'tmp_dir = "{self.tmp_dir}"\n'
        )
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))

    def environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(
            CONTAINERS_STORAGE_CONF=str(self.config_dir / "storage.conf"),
            CONTAINERS_REGISTRIES_CONF=str(self.config_dir / "registries.conf"),
            CONTAINERS_CONF=str(self.config_dir / "containers.conf"),
            # Layer blobs are staged in TMPDIR (/var/tmp otherwise).
            TMPDIR=str(self.tmp_dir),
        )
        return environment

    def command(self, *arguments: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            STORAGE_DRIVER,
            *arguments,
        ]

    def run(self, *arguments: str, what: str) -> str:
        return run_tool(self.command(*arguments), what=what, env=self.environment())

    def run_logged(self, arguments: Sequence[str], *, what: str, log: Path) -> None:
        run_logged(self.command(*arguments), what=what, log=log, env=self.environment())

    def has_image(self, reference: str) -> bool:
        listed = self.run("images", "--noheading", "--format", "{{.Name}}:{{.Tag}}", what="list")
        return reference in listed.split()

    def image_references(self, repository: str) -> list[str]:
        listed = self.run("images", "--noheading", "--format", "{{.Name}}:{{.Tag}}", what="list")
        return [line for line in listed.split() if line.rpartition(":")[0] == repository]

    def import_rootfs(self, rootfs_tar: Path, reference: str, *, config: Sequence[str]) -> None:
        """A one-layer image of a root file system tarball, with `config` (buildah config flags)."""
        container = self.run(
            "from", "--signature-policy", str(self.policy), "scratch", what="buildah from scratch"
        ).strip()
        try:
            self.run("add", container, str(rootfs_tar), "/", what=f"adding {rootfs_tar}")
            self.run("config", *config, container, what="buildah config")
            self.run(
                "commit",
                "--signature-policy",
                str(self.policy),
                container,
                reference,
                what=f"committing {reference}",
            )
        finally:
            self.run("rm", container, what="removing the working container")

    def export_oci_archive(self, reference: str, archive: Path) -> None:
        """`reference` as an OCI archive whose index names it in full (what `ctr images import`
        files it under), written beside `archive` and renamed, so a half-written archive never
        looks done."""
        partial = archive.with_name(f".{archive.name}.partial")
        partial.unlink(missing_ok=True)
        self.run(
            "push",
            "--signature-policy",
            str(self.policy),
            "--quiet",
            reference,
            f"oci-archive:{partial}:{reference}",
            what=f"exporting {reference}",
        )
        partial.rename(archive)


@contextlib.contextmanager
def host_paths_restored(paths: Sequence[Path] = FIXED_HOST_PATHS) -> Iterator[None]:
    """Remove each of `paths`, and each parent directory, that the block created: shared host
    state that another tool had before is left alone."""
    existing_before = {
        candidate
        for path in paths
        for candidate in (path, *path.parents)
        if candidate.exists() or candidate.is_symlink()
    }
    try:
        yield
    finally:
        for path in paths:
            for candidate in (path, *path.parents):
                if candidate in existing_before or candidate == Path("/"):
                    break
                _remove(candidate)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        if path.is_mount():
            raise ImageBuildError(f"{path} is a mount point; it was not removed")
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
