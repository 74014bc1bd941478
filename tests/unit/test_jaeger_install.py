"""`ensure_jaeger` reuses a complete install without Go and says what is missing otherwise
(no build, no network: an empty cache and a stand-in `go`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from order_devtools import jaeger
from order_devtools.engines import install


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORDER_PIPELINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_go(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    go = directory / "go"
    go.write_text(f"#!/bin/sh\necho {version}\n")
    go.chmod(0o755)
    return directory


def test_a_complete_install_is_reused_without_go(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with install.staging_dir_for(jaeger.install_dir(), jaeger.INSTALLED_WHAT) as staging:
        (staging / "bin").mkdir()
        (staging / "bin" / "jaeger").write_text("built earlier")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))

    binary = jaeger.ensure_jaeger()

    assert binary == jaeger.install_dir() / "bin" / "jaeger"
    assert binary.read_text() == "built earlier"
    assert empty_cache in binary.parents  # outside the repo, in the cache named by the env


def test_without_go_the_first_build_says_what_to_install(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    with pytest.raises(RuntimeError, match=r"'go' is not on PATH.*Go 1\.24\.6 or newer"):
        jaeger.ensure_jaeger()
    assert not jaeger.install_dir().exists()


def test_a_go_older_than_the_module_needs_is_refused(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(fake_go(tmp_path / "old-go", "go1.24.5")))
    with pytest.raises(RuntimeError, match=r"is go1\.24\.5, too old.*Go 1\.24\.6 or newer"):
        jaeger.ensure_jaeger()
    assert not jaeger.install_dir().exists()
