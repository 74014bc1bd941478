"""Image archives as containerd imports them: the image names a docker-archive or an OCI
archive carries, and the fully qualified form Kubernetes resolves an image name to."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from order_devtools.cluster.errors import ClusterError

# The annotations containerd reads an OCI archive's image names from, in its order.
_OCI_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


def image_names(archive_path: Path) -> list[str]:
    """The names of the images in a docker-archive (manifest.json RepoTags) or an OCI archive
    (index.json annotations), as written in the archive."""
    try:
        with tarfile.open(archive_path, mode="r:*") as archive:
            members = {member.name.removeprefix("./"): member for member in archive.getmembers()}
            if "manifest.json" in members:
                manifest: list[dict[str, Any]] = json.loads(
                    _read(archive, members["manifest.json"])
                )
                return [tag for image in manifest for tag in image.get("RepoTags") or []]
            if "index.json" in members:
                index: dict[str, Any] = json.loads(_read(archive, members["index.json"]))
                names = []
                for descriptor in index.get("manifests", []):
                    annotations = descriptor.get("annotations") or {}
                    for key in _OCI_NAME_ANNOTATIONS:
                        if annotations.get(key):
                            names.append(str(annotations[key]))
                            break
                return names
    except (OSError, tarfile.TarError, json.JSONDecodeError) as error:
        raise ClusterError(f"{archive_path} is not a readable image archive: {error}") from error
    raise ClusterError(
        f"{archive_path} is neither a docker-archive (manifest.json) "
        "nor an OCI archive (index.json)"
    )


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = archive.extractfile(member)
    if extracted is None:
        raise ClusterError(f"{member.name} in the image archive is not a file")
    return extracted.read()


def is_full_reference(name: str) -> bool:
    """Whether `name` is an image reference rather than a bare tag ("latest"), which containerd
    would file under a made-up "import-<date>" name."""
    return any(separator in name for separator in "/:@")


def normalized_reference(name: str) -> str:
    """The reference Kubernetes (the CRI) looks an image up by: "app:1" is
    "docker.io/library/app:1", "x/app" is "docker.io/x/app:latest"."""
    first, _, rest = name.partition("/")
    has_domain = bool(rest) and ("." in first or ":" in first or first == "localhost")
    if not has_domain:
        name = f"docker.io/{name}" if rest else f"docker.io/library/{name}"
    last_component = name.rsplit("/", 1)[-1]
    if "@" not in name and ":" not in last_component:
        name += ":latest"
    return name
