"""The three component images, built with buildah from the repository's Dockerfiles.

Each build reads a staged copy of exactly what its Dockerfile copies (the same files the
`.dockerignore` admits), and the image's tag is a digest of that copy, the Dockerfile and the
base images: the same sources give the same tag and reuse the archive already exported, any
change gives a new tag and a build in which buildah's layer cache keeps the dependency layers.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from order_devtools.images.base import BUILD_BASE, IMAGE_NAMESPACE, RUNTIME_BASE
from order_devtools.images.buildah import Buildah
from order_devtools.images.cache import ImageBuildError, images_cache, logs_dir, progress

REPO_ROOT = Path(__file__).resolve().parents[3]
# Files the Dockerfiles' COPY takes but `.dockerignore` keeps out of a build context.
IGNORED_NAMES = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc", ".pyo")
TAG_LENGTH = 16
# Archives (and tags) kept per component, the newest first.
KEPT_TAGS = 3


@dataclass(frozen=True)
class Component:
    """One image: its name (the chart's `images.<name>`) and its Dockerfile in the repo."""

    name: str
    dockerfile: Path

    @property
    def repository(self) -> str:
        return f"{IMAGE_NAMESPACE}/{self.name}"

    def archive(self, tag: str) -> Path:
        return images_cache() / "oci-archives" / f"{self.name}-{tag}.tar"


COMPONENTS = {
    component.name: component
    for component in (
        Component("api", REPO_ROOT / "services" / "api.Dockerfile"),
        Component("processor", REPO_ROOT / "services" / "processor.Dockerfile"),
        Component("operator", REPO_ROOT / "operator" / "Dockerfile"),
    )
}


@dataclass(frozen=True)
class BuiltImage:
    """A built image: its reference (inside the archive too) and its OCI archive file, which
    `ctr -n k8s.io images import` loads under that reference."""

    component: str
    repository: str
    tag: str
    archive: Path

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


def copied_sources(dockerfile: Path) -> list[str]:
    """The repository paths a Dockerfile's COPY instructions take from the build context."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources: list[str] = []
    for line in joined.splitlines():
        words = line.split()
        if len(words) < 3 or words[0].upper() != "COPY":
            continue
        if any(word.startswith("--from") for word in words[1:-1]):
            continue
        sources.extend(word.rstrip("/") for word in words[1:-1] if not word.startswith("--"))
    return sources


def stage_context(dockerfile: Path, destination: Path, *, repo: Path = REPO_ROOT) -> None:
    """Copy what `dockerfile` copies from `repo` (bytecode caches left out) into `destination`,
    with the Dockerfile itself as `Dockerfile`."""
    shutil.copy2(dockerfile, destination / "Dockerfile")
    for source in copied_sources(dockerfile):
        origin = repo / source
        target = destination / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(
                origin,
                target,
                ignore=shutil.ignore_patterns(*IGNORED_NAMES, *(f"*{s}" for s in IGNORED_SUFFIXES)),
            )
        elif origin.is_file():
            shutil.copy2(origin, target)
        else:
            raise ImageBuildError(f"{dockerfile} copies {source}, which is not in the repository")


def context_tag(context: Path) -> str:
    """A digest of the staged context (paths, contents, executable bits; the Dockerfile is part
    of it) and of the base images' references."""
    digest = hashlib.sha256()
    for base in (RUNTIME_BASE, BUILD_BASE):
        digest.update(base.reference.encode() + b"\n")
    for path in sorted(context.rglob("*")):
        if path.is_dir():
            continue
        relative = path.relative_to(context).as_posix().encode()
        mode = b"x" if path.stat().st_mode & 0o111 else b"-"
        content = path.read_bytes()
        for part in (relative, mode, content):
            digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:TAG_LENGTH]


def ensure_component_image(buildah: Buildah, component: Component) -> BuiltImage:
    """The component's archive for the current sources: reused when its tag is exported already,
    built (and older tags of the component removed) otherwise."""
    with _staged(component) as context:
        tag = context_tag(context)
        built = BuiltImage(component.name, component.repository, tag, component.archive(tag))
        if built.archive.is_file():
            return built
        started = time.monotonic()
        progress(f"building {built.reference} (log: {logs_dir() / f'{component.name}.log'})")
        buildah.run_logged(
            [
                "bud",
                "--signature-policy",
                str(buildah.policy),
                "--isolation",
                "chroot",
                "--layers",
                "--pull=never",
                "--build-arg",
                f"BASE_IMAGE={RUNTIME_BASE.reference}",
                "--build-arg",
                f"BUILD_BASE_IMAGE={BUILD_BASE.reference}",
                # pip in the build stage trusts what this machine trusts (a proxy's CA included);
                # a RUN-time mount, so it is in no layer.
                "--volume",
                f"{_host_ca_bundle()}:/etc/ssl/certs/ca-certificates.crt:ro",
                "--file",
                str(context / "Dockerfile"),
                "--tag",
                built.reference,
                str(context),
            ],
            what=f"building {built.reference}",
            log=logs_dir() / f"{component.name}.log",
        )
        built.archive.parent.mkdir(parents=True, exist_ok=True)
        buildah.export_oci_archive(built.reference, built.archive)
    _forget_older_tags(buildah, built)
    progress(f"{built.reference} built in {time.monotonic() - started:.0f} s")
    return built


@contextlib.contextmanager
def _staged(component: Component) -> Iterator[Path]:
    scratch = images_cache() / "contexts"
    scratch.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix=f"{component.name}.", dir=scratch))
    try:
        stage_context(component.dockerfile, context)
        yield context
    finally:
        shutil.rmtree(context, ignore_errors=True)


def _host_ca_bundle() -> Path:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise ImageBuildError(
        "no CA bundle on this machine (Debian package ca-certificates): pip in the build stage "
        "needs it to verify the package index"
    )


def _forget_older_tags(buildah: Buildah, built: BuiltImage) -> None:
    """Beyond the newest KEPT_TAGS archives of the component, archives and tags go (buildah's
    untagged layer cache stays). Several are kept because checkouts on one machine share the
    cache: one must not delete the archive another has just been handed."""
    archives = sorted(
        built.archive.parent.glob(f"{built.component}-*.tar"),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    kept_tags = {path.stem.removeprefix(f"{built.component}-") for path in archives[:KEPT_TAGS]}
    kept_tags.add(built.tag)
    for archive in archives[KEPT_TAGS:]:
        archive.unlink(missing_ok=True)
    for reference in buildah.image_references(built.repository):
        if reference.rpartition(":")[2] not in kept_tags:
            buildah.run("rmi", reference, what=f"removing {reference}")
