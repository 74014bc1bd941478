"""Wires the processor together and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import time
from typing import TYPE_CHECKING

from aiohttp import web

from order_common import aws, exposition, memory
from order_processor import consumer, payments, stores, velocity, workflow
from order_processor import settings as settings_module

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = logging.getLogger(__name__)

_LIVENESS_SLACK_SECONDS = 60


async def _wait_for_queue(
    client: SQSClient, queue_name: str, stopping: asyncio.Event, *, receives_without_redrive: int
) -> consumer.QueueInfo | None:
    delay = 0.5
    while not stopping.is_set():
        try:
            return await consumer.describe_queue(
                client, queue_name, receives_without_redrive=receives_without_redrive
            )
        except Exception as exc:  # engine not up yet: wait, as a Kubernetes pod would
            log.warning("queue %s not reachable yet: %s", queue_name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
    return None


def payment_gateway(
    settings: settings_module.ProcessorSettings, dynamodb: aws.DynamoDbHotPath
) -> payments.PaymentGateway:
    """The gateway PAYMENT_GATEWAY names: the simulator, or a factory imported by path."""
    if settings.payment_gateway == settings_module.SIMULATED_PAYMENTS:
        log.warning(
            "PAYMENT_GATEWAY=%s: payments are simulated and no card is charged;"
            " for local runs only",
            settings_module.SIMULATED_PAYMENTS,
        )
        return payments.SimulatedPaymentGateway(
            client=dynamodb, ledger_table=settings.payments_table
        )
    module_name, _, factory_name = settings.payment_gateway.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    gateway: payments.PaymentGateway = factory(settings)
    log.info("payments through %s", settings.payment_gateway)
    return gateway


async def _serve_health(
    settings: settings_module.ProcessorSettings, active: list[consumer.Consumer]
) -> web.AppRunner:
    """`/metrics` and a `/healthz` that fails when the poll loop has stalled."""

    async def healthz(_: web.Request) -> web.Response:
        limit = settings.wait_time_seconds + _LIVENESS_SLACK_SECONDS
        for worker in active:
            stalled = time.monotonic() - worker.last_poll
            if stalled > limit:
                return web.json_response({"status": "stalled", "seconds": stalled}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics_endpoint(_: web.Request) -> web.Response:
        return web.Response(
            body=exposition.render(version=settings.app_version, track=settings.rollout_track),
            headers={"Content-Type": exposition.CONTENT_TYPE},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    return runner


async def run(settings: settings_module.ProcessorSettings) -> None:
    stopping = asyncio.Event()
    active: list[consumer.Consumer] = []

    def on_signal() -> None:
        stopping.set()
        for c in active:
            c.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    health = await _serve_health(settings, active) if settings.metrics_port else None
    try:
        async with (
            aws.sqs_client(settings, read_timeout=settings.wait_time_seconds + 10) as sqs,
            aws.dynamodb_client(settings) as dynamodb,
            aws.sqs_hot_path(
                sqs, settings, read_timeout=settings.wait_time_seconds + 10
            ) as sqs_hot,
            aws.dynamodb_hot_path(dynamodb, settings) as dynamodb_hot,
        ):
            queue = await _wait_for_queue(
                sqs,
                settings.queue_name,
                stopping,
                receives_without_redrive=settings.receives_without_redrive,
            )
            if queue is None:
                return
            log.info(
                "consuming %s (maxReceiveCount %s, visibility %s s, DLQ %s)",
                queue.url,
                queue.max_receive_count,
                queue.visibility_timeout,
                queue.dlq_url,
            )
            store = stores.ProcessorStore(
                client=dynamodb_hot,
                settings=settings,
                catalog_cache_seconds=settings.catalog_cache_seconds,
                velocity_windows=velocity.Windows(settings.velocity_window_seconds),
            )
            gateway = payment_gateway(settings, dynamodb_hot)
            worker = consumer.Consumer(
                client=sqs,
                hot=sqs_hot,
                queue=queue,
                order_workflow=workflow.OrderWorkflow(
                    store=store, gateway=gateway, settings=settings
                ),
                concurrency=settings.concurrency,
                batch_size=settings.batch_size,
                wait_time_seconds=settings.wait_time_seconds,
                receive_linger=settings.receive_linger_ms / 1000,
                dead_letter_recheck_seconds=settings.dead_letter_recheck_seconds,
                queue_depth_interval_seconds=settings.queue_depth_interval_seconds,
            )
            active.append(worker)
            memory.freeze_startup_objects()
            if stopping.is_set():
                worker.stop()
            await worker.run(shutdown_grace=settings.shutdown_grace_seconds)
    finally:
        if health is not None:
            await health.cleanup()
