"""No example the repository ships (manifests, chart values, Argo CD values, docs) carries a key
someone could deploy as it is: each says how to generate one instead."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

API_SECRETS = (
    "SIGNING_SECRET",
    "SIGNING_RETIRED_SECRETS",
    "JWT_SECRET",
    "JWT_PRIVATE_KEY",
    "JWT_RETIRED_KEYS",
)
_YAML = [
    *sorted((REPO / "k8s").rglob("*.yaml")),
    *sorted((REPO / "argocd").rglob("*.yaml")),
    REPO / "charts/order-pipeline/values.yaml",
]
_TEXT = [REPO / "README.md", *sorted(REPO.glob("*/**/*.md"))]
_ASSIGNED = re.compile(rf"\b({'|'.join(API_SECRETS)})\b\s*[=:]\s*(\S+)")
_LITERAL = re.compile(r"""["']?[\w+/=.-]{6,}["']?""")
"""A value written out, as opposed to `"$(openssl rand -hex 32)"`, `$VAR` or `<placeholder>`."""


def _shipped_text() -> list[Path]:
    return [
        path for path in _TEXT if ".venv" not in path.parts and "node_modules" not in path.parts
    ]


def _secret_values(node: Any, where: str) -> Iterator[str]:
    """Where a YAML tree holds a Secret's data or an API secret's literal value."""
    if isinstance(node, dict):
        if node.get("kind") == "Secret" and (node.get("data") or node.get("stringData")):
            yield f"{where}: a Secret with data"
        if node.get("name") in API_SECRETS and node.get("value"):
            yield f"{where}: env {node['name']}"
        for key, value in node.items():
            if key in API_SECRETS and isinstance(value, str) and value:
                yield f"{where}: {key}"
            yield from _secret_values(value, where)
    elif isinstance(node, list):
        for item in node:
            yield from _secret_values(item, where)


@pytest.mark.parametrize("path", _YAML, ids=lambda p: str(p.relative_to(REPO)))
def test_no_shipped_manifest_or_values_file_holds_a_secret(path: Path) -> None:
    found = [
        hit
        for document in yaml.safe_load_all(path.read_text())
        for hit in _secret_values(document, str(path.relative_to(REPO)))
    ]
    assert not found


def test_no_shipped_document_writes_out_an_api_key() -> None:
    found = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in _shipped_text()
        for line in path.read_text().splitlines()
        for match in _ASSIGNED.finditer(line)
        if _LITERAL.fullmatch(match.group(2))
    ]
    assert not found


def test_the_checks_recognise_a_written_out_key() -> None:
    manifest = {"kind": "Secret", "stringData": {"SIGNING_SECRET": "change-me-signing-secret"}}
    assert list(_secret_values(manifest, "x"))
    assert list(_secret_values({"env": [{"name": "JWT_SECRET", "value": "abc"}]}, "x"))
    line = "--from-literal=JWT_SECRET=change-me-jwt-secret"
    assert any(_LITERAL.fullmatch(m.group(2)) for m in _ASSIGNED.finditer(line))
    generated = '--from-literal=JWT_SECRET="$(openssl rand -hex 32)"'
    assert not any(_LITERAL.fullmatch(m.group(2)) for m in _ASSIGNED.finditer(generated))
