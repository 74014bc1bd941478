"""The base images, made from Debian packages with mmdebstrap (no registry is needed): Debian
bookworm's Python 3.11, the version the lock targets.

Two of them, so the running image carries no installer: `base` (Python alone) under every image,
and `build-base` (Python and pip) for the stage that creates the virtualenv from the hashed lock.
Each root file system is cached under a key made of its recipe and package list; the image
imported from it into buildah's store carries the same key in its tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from order_devtools.images.buildah import Buildah
from order_devtools.images.cache import images_cache, logs_dir, progress, run_logged

SUITE = "bookworm"
# Only the Essential packages (no apt: nothing is installed in an image later) and the includes.
VARIANT = "essential"
# /bin, /lib and /sbin as links into /usr from the start, so apt needs no `usrmerge` (and perl).
HOOK_DIR = Path("/usr/share/mmdebstrap/hooks/merged-usr")
IMAGE_NAMESPACE = "local.test/order-pipeline"
# Documentation, manual pages and translations are of no use in a container.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
# Bump when the recipe changes in a way the package list does not show.
RECIPE_VERSION = 1
RUNTIME_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Machine-local apt sources are used when they are for the same Debian release.
HOST_OS_RELEASE = Path("/etc/os-release")
HOST_APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


@dataclass(frozen=True)
class BaseRecipe:
    """One Debian root file system: `packages` on top of the minimal base variant."""

    name: str
    packages: tuple[str, ...]

    @property
    def key(self) -> str:
        recipe = {
            "recipe": RECIPE_VERSION,
            "suite": SUITE,
            "variant": VARIANT,
            "hooks": HOOK_DIR.name,
            "packages": sorted(self.packages),
            "dpkg": list(DPKG_OPTIONS),
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def reference(self) -> str:
        return f"{IMAGE_NAMESPACE}/{self.name}:{self.key}"

    @property
    def rootfs_tar(self) -> Path:
        return images_cache() / "base" / f"{self.name}-{self.key}.tar"


# `python` on PATH as the Dockerfiles call it (the virtualenv's interpreter links to it), and the
# C++ runtime some wheels link (frozenlist, else it falls back to pure Python without a word).
RUNTIME_BASE = BaseRecipe("base", ("python3", "python-is-python3", "libstdc++6"))
BUILD_BASE = BaseRecipe("build-base", (*RUNTIME_BASE.packages, "python3-pip"))


def ensure_base_image(buildah: Buildah, recipe: BaseRecipe) -> str:
    """The recipe's image in buildah's store (bootstrapped and imported only when missing)."""
    if buildah.has_image(recipe.reference):
        return recipe.reference
    if not recipe.rootfs_tar.is_file():
        _bootstrap(recipe)
    progress(f"importing {recipe.rootfs_tar.name} as {recipe.reference}")
    buildah.import_rootfs(
        recipe.rootfs_tar,
        recipe.reference,
        config=(
            "--env",
            f"PATH={RUNTIME_PATH}",
            "--cmd",
            "python3",
            "--os",
            "linux",
            "--created-by",
            f"mmdebstrap --variant={VARIANT} --include={','.join(recipe.packages)} {SUITE}",
        ),
    )
    return recipe.reference


def _bootstrap(recipe: BaseRecipe) -> None:
    started = time.monotonic()
    progress(
        f"bootstrapping {recipe.name}: Debian {SUITE} {VARIANT} + {', '.join(recipe.packages)}"
    )
    target = recipe.rootfs_tar
    target.parent.mkdir(parents=True, exist_ok=True)
    with _scratch_dir(target.parent) as scratch:
        partial = scratch / target.name
        command = [
            "mmdebstrap",
            f"--variant={VARIANT}",
            f"--hook-dir={HOOK_DIR}",
            f"--include={','.join(recipe.packages)}",
            *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
            SUITE,
            str(partial),
            *_host_sources(),
        ]
        run_logged(
            command,
            what=f"mmdebstrap ({recipe.name})",
            log=logs_dir() / f"mmdebstrap-{recipe.name}.log",
        )
        partial.rename(target)
    progress(f"{recipe.name} bootstrapped in {time.monotonic() - started:.0f} s")


def _host_sources() -> list[str]:
    """This machine's apt source files (its mirror or proxy) when it runs the same release;
    mmdebstrap's default mirror otherwise."""
    try:
        os_release = HOST_OS_RELEASE.read_text()
    except FileNotFoundError:
        return []
    if f"VERSION_CODENAME={SUITE}" not in os_release.split():
        return []
    sources: list[Path] = []
    for location in HOST_APT_SOURCES:
        if location.is_dir():
            sources.extend(sorted(location.glob("*.list")) + sorted(location.glob("*.sources")))
        elif location.is_file() and location.read_text().strip():
            sources.append(location)
    return [str(path) for path in sources]


@contextlib.contextmanager
def _scratch_dir(parent: Path) -> Iterator[Path]:
    scratch = Path(tempfile.mkdtemp(prefix=".bootstrap.", dir=parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
