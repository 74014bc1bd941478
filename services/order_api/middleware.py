"""ASGI middleware: request ids, the body-size limit, HTTP metrics.

Written as plain ASGI (not BaseHTTPMiddleware) because it wraps every request on the hot path.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from order_api import metrics, problems
from order_common import logs

REQUEST_ID_HEADER = b"x-request-id"
_MAX_REQUEST_ID = 128


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(REQUEST_ID_HEADER, b"").decode("latin-1")[:_MAX_REQUEST_ID]
        request_id = request_id or uuid.uuid4().hex
        token = logs.request_id_var.set(request_id)
        status_holder = [500]
        response_started = [False]
        refused = [False]

        async def send_with_id(message: Message) -> None:
            if refused[0]:
                return  # we already answered 413; drop whatever the app says after
            if message["type"] == "http.response.start":
                response_started[0] = True
                status_holder[0] = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER, request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._too_large(send_with_id)
                return
            await self.app(scope, self._limited(receive, send_with_id, refused), send_with_id)
        finally:
            logs.request_id_var.reset(token)
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            requests, duration = metrics.http_series(path, scope["method"], str(status_holder[0]))
            requests.inc()
            duration.observe(time.perf_counter() - started)

    def _limited(self, receive: Receive, send: Send, refused: list[bool]) -> Receive:
        """Count streamed body bytes; past the limit answer 413 and tell the app we left."""
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            if refused[0]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    await self._too_large(send)
                    refused[0] = True
                    return {"type": "http.disconnect"}
            return message

        return limited_receive

    async def _too_large(self, send: Send) -> None:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": "Content Too Large",
            "status": 413,
            "detail": f"the request body is larger than {self.max_body_bytes} bytes",
        }
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", problems.PROBLEM_JSON.encode()),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
