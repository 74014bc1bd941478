"""The FastAPI application: wiring of settings, AWS clients, middleware and routers."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import fastapi

from order_api import credentials, middleware, problems, ratelimit, security, stores
from order_api import services as services_module
from order_api import settings as settings_module
from order_api.routes import auth, health, orders
from order_common import aws, logs, memory, tracing

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
    settings: settings_module.ApiSettings = app.state.settings
    async with (
        aws.sqs_client(settings, read_timeout=settings.send_timeout_seconds) as sqs,
        aws.dynamodb_client(settings, read_timeout=settings.send_timeout_seconds) as dynamodb,
        aws.sqs_hot_path(sqs, settings, read_timeout=settings.send_timeout_seconds) as sqs_hot,
    ):
        queue = services_module.QueueLocator(client=sqs, queue_name=settings.queue_name)
        orders = stores.OrderReader(client=dynamodb, table=settings.orders_table)
        services = services_module.ApiServices(
            settings=settings,
            sqs=sqs,
            sqs_hot=sqs_hot,
            queue=queue,
            batcher=None,
            orders=orders,
            signed_order_reads=services_module.shared_order_reads(
                orders, reuse_seconds=settings.status_read_cache_seconds
            ),
            readiness=services_module.Readiness(
                queue=queue,
                sqs=sqs,
                orders=orders,
                reuse_seconds=settings.readiness_cache_seconds,
            ),
            idempotency=stores.IdempotencyStore(
                client=dynamodb,
                table=settings.idempotency_table,
                ttl_seconds=settings.idempotency_ttl_seconds,
                in_progress_seconds=settings.idempotency_in_progress_seconds,
            ),
            tokens=security.TokenService(settings),
            credentials=credentials.CredentialChecker.from_settings(
                settings,
                lambda counts: stores.CountingWindows(
                    client=dynamodb,
                    table=settings.idempotency_table,
                    window_seconds=settings.token_failure_window_seconds,
                    counts=counts,
                ),
            ),
            signer=security.Signer.from_settings(settings),
            rate_limiter=ratelimit.RateLimiter(
                per_minute=settings.rate_limit_per_minute,
                windows=stores.CountingWindows(
                    client=dynamodb,
                    table=settings.idempotency_table,
                    window_seconds=ratelimit.WINDOW_SECONDS,
                    counts="rate-limit",
                ),
            ),
        )
        app.state.services = services
        try:
            await services.send_batcher()
        except Exception as exc:  # start anyway: /readyz says why, sends retry the lookup
            log.warning("queue %s not reachable at start-up: %s", settings.queue_name, exc)
        memory.freeze_startup_objects()
        yield
        if services.batcher is not None:
            await services.batcher.close()
    tracing.shutdown()  # the last spans out before the process exits (nothing when off)


async def _on_store_unavailable(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    settings: settings_module.ApiSettings = request.app.state.settings
    return problems.problem_response(
        503,
        "the order store is unavailable; retry later",
        headers={"Retry-After": str(settings.retry_after_seconds)},
    )


def create_app(settings: settings_module.ApiSettings | None = None) -> fastapi.FastAPI:
    settings = settings or settings_module.get_settings()
    app = fastapi.FastAPI(
        title="order-pipeline API",
        version="1",
        summary="Accepts orders for asynchronous processing and reports their status.",
        lifespan=_lifespan,
        # FastAPI's own OpenTelemetry hooks look up the global providers on every request
        # (about 7 µs of the accept route's CPU). This service has none to feed: its metrics
        # are Prometheus (order_api.metrics) and its logs JSON on stdout.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    problems.install(app)
    app.add_exception_handler(stores.StoreUnavailableError, _on_store_unavailable)
    # Inside the request context (ids, body limit, metrics), outside the router.
    app.add_middleware(orders.AcceptFastPath, handlers=app.exception_handlers)
    app.add_middleware(middleware.RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    app.include_router(auth.router)
    app.include_router(orders.router)
    app.include_router(health.router)
    _document(app)
    return app


def _document(app: fastapi.FastAPI) -> None:
    """Complete /openapi.json with what FastAPI cannot infer: the models of bodies a route parses
    itself (see orders.create_order) and the problem documents every error response is."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for models in (orders.REQUEST_SCHEMAS, problems.SCHEMAS):
                for name, schema in models.items():
                    if components.setdefault(name, copy.deepcopy(schema)) != schema:
                        raise RuntimeError(f"two different OpenAPI schemas are named {name}")
            problems.describe_error_responses(document)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def create_served_app() -> fastapi.FastAPI:
    """Factory uvicorn calls in each worker process: logging and tracing are set up per
    process (the span exporter's thread does not survive a fork)."""
    logs.configure_logging(component="order-api", level=os.environ.get("LOG_LEVEL", "INFO"))
    tracing.configure(default_service_name="order-api")
    return create_app()
