#!/usr/bin/env python3
"""Write a container image that holds one static binary as a docker-archive tarball (what
`docker load` reads) or an OCI archive (`--format oci`, what `buildah push oci-archive:` writes);
`ctr images import` reads both. No daemon, registry or image tool needed.

    single-binary-image.py --binary pause --path /pause --name localhost/x/pause:3.10 \
        --user 65535:65535 --output pause.tar [--arg ...] [--format docker|oci]

The archive is reproducible: fixed timestamps and owners, so the same binary gives the same
image ID. Used by build.sh for the pause image and by the real-node tests for their probe image.
Standard library only (build.sh runs it with the system python3).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    archive.addfile(info, io.BytesIO(data))


def layer_tar(binary: bytes, path_in_image: str) -> bytes:
    """One layer: the binary at `path_in_image` (and its parent directories), owned by root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        parts = Path(path_in_image.lstrip("/")).parts
        for depth in range(1, len(parts)):
            directory = tarfile.TarInfo("/".join(parts[:depth]))
            directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 0
            layer.addfile(directory)
        _add_bytes(layer, "/".join(parts), binary, mode=0o755)
    return buffer.getvalue()


def image_archive(
    *, binary: bytes, path_in_image: str, name: str, user: str, args: list[str], oci: bool = False
) -> bytes:
    layer = layer_tar(binary, path_in_image)
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": [path_in_image],
            "Cmd": args or None,
            "User": user,
            "Env": ["PATH=/"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"{Path(__file__).name}"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    if oci:
        return _oci_archive(name, layer, config_bytes)
    manifest = [
        {
            "Config": f"{config_digest}.json",
            "RepoTags": [name],
            "Layers": [f"{layer_digest}/layer.tar"],
        }
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, f"{config_digest}.json", config_bytes)
        _add_bytes(archive, f"{layer_digest}/layer.tar", layer)
        _add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
    return buffer.getvalue()


def _oci_archive(name: str, layer: bytes, config: bytes) -> bytes:
    """An OCI image layout in a tar, named by the index's ref.name annotation."""

    def descriptor(media_type: str, data: bytes) -> dict[str, object]:
        return {
            "mediaType": media_type,
            "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
            "size": len(data),
        }

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        },
        sort_keys=True,
    ).encode()
    manifest_descriptor = descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": name}
    index = {"schemaVersion": 2, "manifests": [manifest_descriptor]}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        for blob in (layer, config, manifest):
            _add_bytes(archive, f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
        _add_bytes(archive, "index.json", json.dumps(index, sort_keys=True).encode())
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, required=True, help="the static binary")
    parser.add_argument("--path", required=True, help="where it goes in the image (entrypoint)")
    parser.add_argument("--name", required=True, help="full image reference, e.g. localhost/x:1")
    parser.add_argument("--user", default="65535:65535", help="uid:gid the image runs as")
    parser.add_argument("--arg", action="append", default=[], help="default arguments (Cmd)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--format", choices=("docker", "oci"), default="docker")
    options = parser.parse_args()
    data = image_archive(
        binary=options.binary.read_bytes(),
        path_in_image=options.path,
        name=options.name,
        user=options.user,
        args=options.arg,
        oci=options.format == "oci",
    )
    temporary = options.output.with_name(options.output.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(options.output)


if __name__ == "__main__":
    main()
