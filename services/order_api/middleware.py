"""ASGI middleware: request ids, the request's SERVER span, the body-size limit, HTTP metrics,
the answer to an unexpected error.

Written as plain ASGI (not BaseHTTPMiddleware) because it wraps every request on the hot path.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from order_api import metrics, problems
from order_common import logs, tracing

log = logging.getLogger(__name__)

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
        # Here, where the route, the status and an unexpected error are all known once.
        span = tracing.start_server_span(scope, headers) if tracing.enabled else None
        span_token = tracing.attach(span)
        failure: Exception | None = None
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
        except Exception as exc:
            failure = exc
            # Answered and logged here, inside the request's context, so the traceback and the
            # 500 carry the same request id; the client learns nothing else of the error.
            log.exception("request failed", extra={"request_id": request_id})
            if response_started[0]:
                raise  # the server can only cut the connection
            await self._send_problem(
                send_with_id,
                500,
                f"the request failed on an internal error, logged as request {request_id}",
            )
        finally:
            logs.request_id_var.reset(token)
            route = getattr(scope.get("route"), "path", None)
            requests, duration = metrics.http_series(
                route or "unmatched", scope["method"], str(status_holder[0])
            )
            requests.inc()
            duration.observe(time.perf_counter() - started)
            if span is not None:
                tracing.end_server_span(
                    span,
                    method=scope["method"],
                    route=route,
                    status=status_holder[0],
                    error=failure,
                )
            tracing.detach(span_token)

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
        await self._send_problem(
            send, 413, f"the request body is larger than {self.max_body_bytes} bytes"
        )

    @staticmethod
    async def _send_problem(send: Send, status: int, detail: str) -> None:
        payload = problems.problem_response(status, detail)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": payload.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": payload.body})
