"""The accept route served before the router: which requests it takes, and how errors answer."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from order_api import problems
from order_api.routes import orders

HANDLERS = {problems.ProblemError: problems._on_problem}


def _scope(method: str, path: str, *, root_path: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "server": ("127.0.0.1", 8000),
        # No services: a request without a token is refused before any is used.
        "app": SimpleNamespace(state=SimpleNamespace(services=None)),
    }


def _serve(
    scope: dict[str, Any], handlers: dict[Any, Any] = HANDLERS
) -> tuple[list[str], list[dict[str, Any]]]:
    """Pass one request through the fast path; return what the inner app saw and what was sent."""
    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(f"{scope['method']} {scope['path']}")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(orders.AcceptFastPath(inner, handlers=handlers)(scope, receive, send))
    return reached, sent


@pytest.mark.parametrize(
    ("method", "path", "root_path"),
    [
        ("GET", "/v1/orders/o-1", ""),
        ("DELETE", "/v1/orders/o-1", ""),
        ("POST", "/v1/orders/", ""),
        ("GET", "/v1/orders", ""),
        ("POST", "/v1/orders", "/shop"),  # mounted under a prefix: the router matches it
    ],
)
def test_other_requests_go_on_to_the_router(method: str, path: str, root_path: str) -> None:
    reached, sent = _serve(_scope(method, path, root_path=root_path))
    assert reached == [f"{method} {path}"]
    assert sent == []


def test_the_accept_route_is_served_without_the_router_and_errors_use_the_apps_handlers() -> None:
    scope = _scope("POST", "/v1/orders")
    reached, sent = _serve(scope)
    assert reached == []
    start, body = sent
    assert start["status"] == 401
    assert (b"content-type", problems.PROBLEM_JSON.encode()) in start["headers"]
    assert (b"www-authenticate", b"Bearer") in start["headers"]
    assert orjson.loads(body["body"])["detail"].startswith("this endpoint needs a bearer token")
    assert scope["route"].path == "/v1/orders"  # labels the HTTP metrics as the router would


def test_an_error_no_handler_knows_goes_on_to_the_server_error_middleware() -> None:
    with pytest.raises(problems.ProblemError):
        _serve(_scope("POST", "/v1/orders"), handlers={})


def test_the_apps_500_handler_is_left_to_the_server_error_middleware() -> None:
    # There it answers and the exception is re-raised for the server to log its traceback.
    async def answer_500(request: Any, exc: Exception) -> Any:
        return problems.problem_response(500, "internal error")

    scope = _scope("POST", "/v1/orders")
    scope["headers"].append((b"authorization", b"Bearer t"))  # reaches the missing services
    with pytest.raises(AttributeError):
        _serve(scope, handlers={**HANDLERS, Exception: answer_500})
