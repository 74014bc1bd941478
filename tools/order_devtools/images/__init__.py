"""The three container images (api, processor, operator) built without a Docker engine or a
registry: `python -m order_devtools.images` (what `make images` runs).

The base images are made from Debian packages with mmdebstrap, the component images from the
repository's Dockerfiles with buildah (chroot isolation, a private store in the cache), and each
result is kept as an OCI archive in the cache outside the repository, under a tag derived from
its sources:

    built = ensure_images()            # {"api": BuiltImage, ...}; instant when nothing changed
    built["api"].reference             # local.test/order-pipeline/api:<tag>
    built["api"].archive               # ~/.cache/order-pipeline/images/oci-archives/api-<tag>.tar

Modules: `cache` (directory, lock, running the tools), `buildah` (the private store and its
host-path hygiene), `base` (the Debian base images), `components` (the three images) and `cli`.
"""

from __future__ import annotations

import time
from pathlib import Path

from order_devtools.images.base import BUILD_BASE, RUNTIME_BASE, ensure_base_image
from order_devtools.images.buildah import Buildah, host_paths_restored
from order_devtools.images.cache import (
    ImageBuildError,
    build_lock,
    images_cache,
    progress,
    require_commands,
)
from order_devtools.images.components import (
    COMPONENTS,
    BuiltImage,
    Component,
    ensure_component_image,
)


def private_buildah() -> Buildah:
    """The buildah store the builds use (for inspecting what they left, e.g. in tests)."""
    return Buildah(images_cache() / "buildah")


def ensure_images() -> dict[str, BuiltImage]:
    """Build what is missing or out of date and return every component's image."""
    require_commands()
    started = time.monotonic()
    with build_lock(), host_paths_restored():
        buildah = private_buildah()
        buildah.prepare()
        for base in (RUNTIME_BASE, BUILD_BASE):
            ensure_base_image(buildah, base)
        built = {name: ensure_component_image(buildah, c) for name, c in COMPONENTS.items()}
    progress(f"images ready in {time.monotonic() - started:.1f} s")
    return built


def image_archives() -> dict[str, Path]:
    """Component name -> its OCI archive (built first if needed)."""
    return {name: image.archive for name, image in ensure_images().items()}


__all__ = [
    "BUILD_BASE",
    "COMPONENTS",
    "RUNTIME_BASE",
    "BuiltImage",
    "Component",
    "ImageBuildError",
    "ensure_images",
    "image_archives",
    "private_buildah",
]
