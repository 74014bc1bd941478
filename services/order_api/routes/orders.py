"""/v1/orders: accept, follow and cancel orders."""

from __future__ import annotations

import datetime
import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any, cast

import fastapi
import fastapi.exceptions
import fastapi.routing
import orjson
import pydantic
from starlette.types import ASGIApp, Receive, Scope, Send

from order_api import accepting, deps, problems, schemas, security
from order_api import services as services_module
from order_common import contract, logs, records

log = logging.getLogger(__name__)

router = fastapi.APIRouter(prefix="/v1/orders", tags=["orders"])

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
_MAX_IDEMPOTENCY_KEY = 255

REQUEST_SCHEMAS = schemas.openapi_components(schemas.OrderCreate)
"""Components the accept route's OpenAPI description refers to (app.py adds them)."""

# The accept route reads its body and headers itself (below), so FastAPI cannot infer them;
# this documents exactly what it reads.
_ACCEPT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": schemas.COMPONENT_REF.format(model="OrderCreate")}
            }
        },
    },
    "parameters": [
        {
            "name": IDEMPOTENCY_KEY_HEADER,
            "in": "header",
            "required": False,
            "description": "Repeat a POST safely: the same key and body replay the first response.",
            "schema": {"type": "string", "minLength": 1, "maxLength": _MAX_IDEMPOTENCY_KEY},
        }
    ],
}


def _utc(timestamp: float | None) -> datetime.datetime | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)


def _status_url(services: services_module.ApiServices, order_id: str) -> str:
    expires = int(time.time()) + services.settings.status_url_ttl_seconds
    signer = services.signer
    signature = signer.sign_status(order_id, expires)
    # The base is configuration, never the request's Host header (a client could name any host
    # there, and the URL would send the next reader to it). The query values are URL-safe as
    # they are (an integer, a key id, unpadded base64url): no encoding needed.
    return (
        f"{services.settings.public_base_url}/v1/orders/{order_id}"
        f"?expires={expires}&kid={signer.current_kid}&sig={signature}"
    )


def _accepted_response(body: dict[str, Any], retry_after: int) -> fastapi.Response:
    return fastapi.Response(
        orjson.dumps(body),
        status_code=202,
        media_type="application/json",
        headers={"Location": body["status_url"], "Retry-After": str(retry_after)},
    )


class _BareRequestRoute(fastapi.routing.APIRoute):
    """A route whose endpoint takes the bare Request and reads what it needs itself.

    FastAPI's handler still solves the (empty) dependencies and parses query parameters on every
    request; for the accept route that was about a tenth of the API's CPU per order. The route
    is documented like any other (its body and header through `openapi_extra`).
    """

    def get_route_handler(
        self,
    ) -> Callable[[fastapi.Request], Coroutine[Any, Any, fastapi.Response]]:
        return cast(
            Callable[[fastapi.Request], Coroutine[Any, Any, fastapi.Response]], self.endpoint
        )


async def create_order(request: fastapi.Request) -> fastapi.Response:
    """Accept an order for asynchronous processing (202 once the queue has it)."""
    # The hot path: authentication, the Idempotency-Key header and the body are read here, not
    # through FastAPI's dependency solving, which took about half of this route's CPU per order.
    # The errors are the same problem documents the other routes give.
    services = deps.services_of(request)
    client_id = await deps.authenticated_client(request)
    _require_json(request.headers.get("content-type"))
    idempotency_key, order = _validated(
        request.headers.get(IDEMPOTENCY_KEY_HEADER), await request.body()
    )
    retry_after = {"Retry-After": str(services.settings.retry_after_seconds)}
    try:
        body = await accepting.accept(
            services,
            client_id=client_id,
            order=order,
            idempotency_key=idempotency_key,
            status_url_for=lambda order_id: _status_url(services, order_id),
        )
    except accepting.IdempotencyKeyReusedError as exc:
        raise problems.ProblemError(
            422, "this Idempotency-Key was already used with a different request body"
        ) from exc
    except accepting.IdempotencyKeyInFlightError as exc:
        raise problems.ProblemError(
            409,
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers=retry_after,
        ) from exc
    except accepting.QueueRefusedError as exc:
        raise problems.ProblemError(
            503,
            "the order queue is unavailable; nothing was accepted, retry later",
            headers=retry_after,
        ) from exc
    except accepting.AcceptanceUncertainError as exc:
        advice = (
            "retry with the same Idempotency-Key: it never creates a second order"
            if exc.idempotent
            else "follow status_url before placing it again"
        )
        raise problems.ProblemError(
            503,
            f"the order queue did not confirm order {exc.order_id}; it may have been accepted:"
            f" {advice}",
            headers=retry_after,
            extra={"order_id": exc.order_id, "status_url": exc.status_url},
        ) from exc
    return _accepted_response(body, services.settings.retry_after_seconds)


router.add_api_route(
    "",
    create_order,
    methods=["POST"],
    route_class_override=_BareRequestRoute,
    status_code=202,
    response_model=schemas.OrderAccepted,
    openapi_extra=_ACCEPT_OPENAPI,
    responses={
        **deps.BEARER_ERRORS,
        400: {"description": "The body is not valid JSON"},
        409: {"description": "A request with this Idempotency-Key is still in flight"},
        413: {"description": "The body is larger than the configured limit"},
        415: {"description": "The body is not sent as application/json"},
        422: {"description": "Invalid body, or Idempotency-Key reused with another body"},
        503: {"description": "The queue is unreachable; nothing was accepted"},
    },
)


ExceptionHandler = Callable[[fastapi.Request, Exception], Any]


class AcceptFastPath:
    """ASGI middleware that serves `POST /v1/orders` itself, before the router.

    Through Starlette's exception middleware and router (about ten ASGI layers, and matching
    the routes one by one) every order cost about 40 µs more: one worker used 0.92-0.94 cores
    at 2,500/s before, 0.82 with this (exploration runs of the bench's accept phase).
    Errors go to the app's own exception handlers, so the answers are the same problem
    documents; anything they do not handle goes on to the server-error middleware outside,
    as before. The route stays registered: it documents the endpoint, and serves it
    when the app is mounted under a prefix.
    """

    def __init__(self, app: ASGIApp, *, handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.app = app
        self.handlers = handlers  # the app's own dict: handlers added later are seen too
        self.route = next(r for r in router.routes if getattr(r, "endpoint", None) is create_order)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != router.prefix
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what the router would set (the metrics label reads it)
        request = fastapi.Request(scope, receive)
        try:
            response = await create_order(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        for kind in type(exc).__mro__:  # the most specific handler, as Starlette picks it
            if kind is Exception:
                break  # the 500 handler is the server-error middleware's: it logs the traceback
            if kind in self.handlers:
                return self.handlers[kind]
        return None


def _require_json(content_type: str | None) -> None:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    structured_json = media_type.startswith("application/") and media_type.endswith("+json")
    if media_type != "application/json" and not structured_json:
        raise problems.ProblemError(
            415, "send the order as JSON with Content-Type: application/json"
        )


_IDEMPOTENCY_KEY = pydantic.TypeAdapter(
    Annotated[str, pydantic.StringConstraints(min_length=1, max_length=_MAX_IDEMPOTENCY_KEY)]
)


def _validated(idempotency_key: str | None, body: bytes) -> tuple[str | None, schemas.OrderCreate]:
    """The header and body checked as FastAPI checks declared parameters: every error at once,
    located under "header" or "body", answered by the same 400/422 problem handler."""
    errors: list[Any] = []
    key = order = None
    if idempotency_key is not None:
        try:
            key = _IDEMPOTENCY_KEY.validate_python(idempotency_key)
        except pydantic.ValidationError as exc:
            errors += [{**e, "loc": ("header", IDEMPOTENCY_KEY_HEADER)} for e in exc.errors()]
    if not body:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
    else:
        try:
            order = schemas.OrderCreate.model_validate_json(body)
        except pydantic.ValidationError as exc:
            errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
    if errors or order is None:
        raise fastapi.exceptions.RequestValidationError(errors)
    return key, order


def _view(order_id: str, record: records.OrderRecord | None) -> schemas.OrderView:
    if record is None:
        return schemas.OrderView(order_id=order_id, status=contract.OrderStatus.QUEUED)
    return schemas.OrderView(
        order_id=order_id,
        status=contract.OrderStatus(record["status"]),
        customer_id=record.get("customer_id"),
        currency=record.get("currency"),
        items=[schemas.PricedItem(**item) for item in record["items"]]
        if "items" in record
        else None,
        total_cents=record.get("total_cents"),
        reason=record.get("reason"),
        accepted_at=_utc(record.get("accepted_at")),
        updated_at=_utc(record.get("updated_at")),
        finished_at=_utc(record.get("finished_at")),
    )


def _not_found(order_id: str) -> problems.ProblemError:
    return problems.ProblemError(404, f"order {order_id} not found")


def _not_an_order_id() -> problems.ProblemError:
    """For a path that is not an order id at all: not echoed back."""
    return problems.ProblemError(404, "no order has this id")


_STORE_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "The order store is unavailable; retry later"}
}


@router.get(
    "/{order_id}",
    response_model=schemas.OrderView,
    responses={
        **deps.BEARER_ERRORS,
        401: {"description": "Neither a signed status URL nor a valid bearer token"},
        403: {"description": "The status URL's signature is invalid or has expired"},
        404: {"description": "No such order of this client"},
        **_STORE_UNAVAILABLE,
    },
)
async def get_order(
    order_id: str,
    services: deps.Services,
    client_id: deps.OptionalClient,
    expires: Annotated[int | None, fastapi.Query(description="from the signed status URL")] = None,
    kid: Annotated[str | None, fastapi.Query(description="from the signed status URL")] = None,
    sig: Annotated[str | None, fastapi.Query(description="from the signed status URL")] = None,
) -> schemas.OrderView:
    """The order's current state, by signed status URL or by the owner's bearer token."""
    if not security.is_order_id(order_id):
        raise _not_an_order_id()  # before anything reads the table or logs the id
    logs.order_id_var.set(order_id)
    if expires is not None or sig is not None:
        valid = (
            expires is not None
            and sig is not None
            and services.signer.verify_status(order_id, expires, sig, kid=kid, now=time.time())
        )
        if not valid:
            raise problems.ProblemError(403, "the status URL signature is invalid or has expired")
        owner = None
    elif client_id is not None:
        if not services.signer.order_belongs_to(order_id, client_id):
            raise _not_found(order_id)
        owner = client_id
    else:
        raise problems.ProblemError(
            401,
            "use the signed status_url, or send the owner's bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    read = services.orders.get if owner is not None else services.signed_order_reads
    record = await read(order_id)
    if record is not None and owner is not None and record.get("client_id") != owner:
        raise _not_found(order_id)
    if record is None and expires is not None:
        # The signature dates the acceptance. Past the queue's retention with no record, the
        # message is gone (the DLQ reconciler records every order it sees): it never will be.
        accepted_at = expires - services.settings.status_url_ttl_seconds
        retention = await services.queue.retention_seconds()
        if retention is not None and time.time() - accepted_at > retention:
            return schemas.OrderView(
                order_id=order_id,
                status=contract.OrderStatus.FAILED,
                reason=(
                    f"not processed: no record {retention} s after acceptance, longer than the"
                    " queue keeps a message; place the order again"
                ),
                accepted_at=_utc(accepted_at),
            )
    return _view(order_id, record)


@router.delete(
    "/{order_id}",
    response_model=schemas.OrderView,
    responses={
        **deps.BEARER_ERRORS,
        404: {"description": "No such order of this client"},
        409: {"description": "Processing has already started"},
        **_STORE_UNAVAILABLE,
    },
)
async def cancel_order(
    order_id: str, services: deps.Services, client_id: deps.Client
) -> schemas.OrderView:
    """Cancel an order that has not started processing."""
    if not security.is_order_id(order_id):
        raise _not_an_order_id()
    logs.order_id_var.set(order_id)
    if not services.signer.order_belongs_to(order_id, client_id):
        raise _not_found(order_id)
    existing = await services.orders.cancel(order_id, client_id=client_id, now=time.time())
    if existing is None:
        log.info("order cancelled")
        return _view(order_id, await services.orders.get(order_id))
    if existing.get("client_id") != client_id:
        raise _not_found(order_id)
    if existing["status"] == contract.OrderStatus.CANCELLED:
        return _view(order_id, existing)
    raise problems.ProblemError(
        409,
        f"order {order_id} is {existing['status']};"
        " only orders that have not started processing can be cancelled",
    )
