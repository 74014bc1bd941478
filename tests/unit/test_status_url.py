"""Where the status URLs handed out point: always the configured PUBLIC_BASE_URL."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from order_api import security, settings
from order_api.routes import orders


def _services(public_base_url: str) -> Any:
    configured = settings.ApiSettings.model_validate(
        {"signing_secret": "s" * 32, "jwt_secret": "j" * 32, "public_base_url": public_base_url}
    )
    return SimpleNamespace(settings=configured, signer=security.Signer.from_settings(configured))


@pytest.mark.parametrize(
    ("configured", "base"),
    [
        ("https://orders.example", "https://orders.example"),
        ("https://orders.example/", "https://orders.example"),
        ("https://shop.example:8443/api/", "https://shop.example:8443/api"),
    ],
)
def test_the_status_url_is_the_public_base_with_a_signed_query(configured: str, base: str) -> None:
    services = _services(configured)
    order_id = services.signer.new_order_id("demo")
    url = httpx.URL(orders._status_url(services, order_id))
    assert str(url).startswith(f"{base}/v1/orders/{order_id}?")
    assert url.params["kid"] == services.signer.current_kid
    assert services.signer.verify_status(
        order_id,
        int(url.params["expires"]),
        url.params["sig"],
        kid=url.params["kid"],
        now=time.time(),
    )
