"""Where the status URLs handed out point: the configured public base, else the request's host."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import fastapi
import pytest

from order_api.routes import orders


def _request(headers: list[tuple[bytes, bytes]], *, root_path: str = "") -> fastapi.Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "path": "/v1/orders",
        "root_path": root_path,
        "query_string": b"",
        "headers": headers,
        "server": ("10.0.0.7", 8000),
    }
    return fastapi.Request(scope)


def _services(public_base_url: str | None) -> Any:
    return SimpleNamespace(settings=SimpleNamespace(public_base_url=public_base_url))


@pytest.mark.parametrize(
    ("headers", "root_path"),
    [
        ([(b"host", b"shop.example:8443")], ""),
        ([(b"host", b"shop.example")], "/api"),
        ([(b"host", b"shop.example")], "/api/"),
        ([(b"host", b"[::1]:8000")], ""),
        ([], ""),  # HTTP/1.0 without Host: the server address
        # Host headers Starlette refuses (then uses the server address); never echoed as given
        ([(b"host", b"shop.example@evil.example")], ""),
        ([(b"host", b"evil.example/x#")], ""),
        ([(b"host", b"shop.example:99999")], ""),
    ],
)
def test_without_a_public_base_the_url_is_what_starlette_calls_the_base(
    headers: list[tuple[bytes, bytes]], root_path: str
) -> None:
    request = _request(headers, root_path=root_path)
    expected = str(request.base_url).rstrip("/")
    assert orders._base_url(_services(None), request) == expected
    assert "evil" not in expected
    again = _request(headers, root_path=root_path)  # the remembered answer is the same
    assert orders._base_url(_services(None), again) == expected


def test_a_public_base_wins_over_the_request_host() -> None:
    request = _request([(b"host", b"internal:8000")])
    base = orders._base_url(_services("https://orders.example/"), request)
    assert base == "https://orders.example"
