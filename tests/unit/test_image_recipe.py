"""What decides whether `make images` rebuilds: the base images' cache keys and the component
images' tags, computed from a staged copy of exactly what each Dockerfile copies.

No build runs here (tests/integration/test_images.py builds and runs the images).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from order_devtools import images
from order_devtools.images import base, components

REPO = Path(__file__).resolve().parents[2]


def test_each_component_is_built_from_its_dockerfile_into_the_local_namespace() -> None:
    assert {
        name: c.dockerfile.relative_to(REPO).as_posix() for name, c in images.COMPONENTS.items()
    } == {
        "api": "services/api.Dockerfile",
        "processor": "services/processor.Dockerfile",
        "operator": "operator/Dockerfile",
    }
    assert images.COMPONENTS["api"].repository == "local.test/order-pipeline/api"


def test_the_staged_context_holds_what_the_dockerfile_copies_and_no_bytecode(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "services" / "order_common", repo / "services" / "order_common")
    shutil.copytree(REPO / "services" / "order_api", repo / "services" / "order_api")
    shutil.copy2(REPO / "requirements-runtime.lock", repo / "requirements-runtime.lock")
    (repo / "services" / "order_api" / "__pycache__").mkdir(exist_ok=True)
    (repo / "services" / "order_api" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"x")
    (repo / "services" / "order_processor").mkdir()
    (repo / "services" / "order_processor" / "service.py").write_text("not copied\n")
    context = tmp_path / "context"
    context.mkdir()

    components.stage_context(images.COMPONENTS["api"].dockerfile, context, repo=repo)

    staged = {p.relative_to(context).parts[:2] for p in context.rglob("*") if p.is_file()}
    assert staged == {
        ("Dockerfile",),
        ("requirements-runtime.lock",),
        ("services", "order_common"),
        ("services", "order_api"),
    }
    assert not list(context.rglob("__pycache__"))


def test_the_tag_follows_the_sources_and_ignores_bytecode(tmp_path: Path) -> None:
    dockerfile = images.COMPONENTS["processor"].dockerfile

    def tag_of(repo: Path) -> str:
        context = tmp_path / f"context-{len(list(tmp_path.iterdir()))}"
        context.mkdir()
        components.stage_context(dockerfile, context, repo=repo)
        return components.context_tag(context)

    repo = tmp_path / "repo"
    for source in components.copied_sources(dockerfile):
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, repo / source)
        else:
            (repo / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / source, repo / source)
    first = tag_of(repo)
    assert len(first) == components.TAG_LENGTH
    assert tag_of(repo) == first, "the same sources must give the same tag"

    cache = repo / "services" / "order_processor" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "workflow.cpython-311.pyc").write_bytes(b"stale")
    assert tag_of(repo) == first, "bytecode is not part of the image's sources"

    workflow = repo / "services" / "order_processor" / "workflow.py"
    workflow.write_text(workflow.read_text() + "\n# changed\n")
    assert tag_of(repo) != first, "a source change must give a new tag (and a rebuild)"


def test_the_dockerfiles_copy_exactly_what_the_dockerignore_admits() -> None:
    """The staged context and a `docker build` context hold the same files."""
    admitted = {
        line.strip()[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip().startswith("!")
    }
    copied = {
        source
        for component in images.COMPONENTS.values()
        for source in components.copied_sources(component.dockerfile)
    }
    assert copied == admitted


def test_base_image_keys_follow_the_package_list_and_the_recipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, build = images.RUNTIME_BASE, images.BUILD_BASE
    assert runtime.key != build.key
    assert runtime.reference == f"local.test/order-pipeline/base:{runtime.key}"
    assert base.BaseRecipe("base", tuple(reversed(runtime.packages))).key == runtime.key
    assert base.BaseRecipe("base", (*runtime.packages, "curl")).key != runtime.key
    key_before = runtime.key
    monkeypatch.setattr(base, "RECIPE_VERSION", base.RECIPE_VERSION + 1)
    assert runtime.key != key_before
