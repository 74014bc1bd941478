"""Accepting an order: claim its Idempotency-Key, give it an id, queue it, remember the answer.

The promise kept here: a retry with the same Idempotency-Key never produces a second order.
A key keeps one order id for its lifetime (`stores.IdempotencyStore`), so when the queue's answer
is lost the retry re-sends the same order and the processor's conditional writes apply it once.
Only a send the queue certainly refused frees the key and is reported as "nothing accepted";
an uncertain one is reported as such, with the order id and its status URL.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from order_api import batcher, metrics, schemas, stores
from order_api import services as services_module
from order_common import contract, logs, tracing

log = logging.getLogger(__name__)


class IdempotencyKeyReusedError(Exception):
    """The key was first used with another request body (answered 422)."""


class IdempotencyKeyInFlightError(Exception):
    """A request with this key is still being accepted (answered 409)."""


class QueueRefusedError(Exception):
    """The queue refused the order or could not be reached: nothing was accepted (503)."""


class AcceptanceUncertainError(Exception):
    """The queue did not confirm the order but may have stored it (503 with the order's id)."""

    def __init__(self, order_id: str, status_url: str, *, idempotent: bool) -> None:
        super().__init__(order_id)
        self.order_id = order_id
        self.status_url = status_url
        self.idempotent = idempotent


async def accept(
    services: services_module.ApiServices,
    *,
    client_id: str,
    order: schemas.OrderCreate,
    idempotency_key: str | None,
    status_url_for: Callable[[str], str],
) -> dict[str, Any]:
    """Queue the order; return the 202 body (the first one again for a replayed key)."""
    now = time.time()
    order_id = services.signer.new_order_id(client_id)
    record_key: str | None = None
    fresh_key = True
    if idempotency_key is not None:
        record_key = f"{client_id}#{idempotency_key}"
        payload_hash = hashlib.sha256(order.model_dump_json().encode()).hexdigest()
        claim = await services.idempotency.begin(
            record_key, payload_hash, order_id=order_id, now=now
        )
        if claim.outcome is stores.IdempotencyOutcome.REPLAY:
            assert claim.response is not None
            return claim.response
        if claim.outcome is stores.IdempotencyOutcome.MISMATCH:
            raise IdempotencyKeyReusedError(record_key)
        if claim.outcome is stores.IdempotencyOutcome.IN_FLIGHT:
            raise IdempotencyKeyInFlightError(record_key)
        assert claim.order_id is not None
        order_id, fresh_key = claim.order_id, claim.fresh

    logs.order_id_var.set(order_id)
    message = contract.OrderMessage(
        order_id=order_id,
        client_id=client_id,
        customer_id=order.customer_id,
        items=tuple(order.items),
        currency=order.currency,
        payment_token=order.payment_token,
        accepted_at=now,
    )
    try:
        send_batcher = await services.send_batcher()
        with tracing.producing(services.settings.queue_name, order_id) as producer:
            attributes = contract.message_attributes(
                request_id=logs.request_id_var.get() or "",
                trace_context=tracing.message_trace_context(producer),
                producer_version=services.settings.app_version,
            )
            message_id = await send_batcher.send(
                contract.encode_message(message), attributes, trace=producer
            )
            tracing.set_message_id(producer, message_id)
    except batcher.QueueUnavailableError as exc:
        log.warning("order not accepted, queue unavailable: %s", exc)
        metrics.ORDERS_REFUSED.labels("queue_unavailable").inc()
        if record_key is not None and not fresh_key:
            # Refused now, but an earlier request with this key may have queued this very
            # order: the key keeps it, and the answer stays "maybe".
            await _quietly(services.idempotency.release(record_key), "release the idempotency key")
            raise AcceptanceUncertainError(
                order_id, status_url_for(order_id), idempotent=True
            ) from exc
        if record_key is not None:
            await _quietly(services.idempotency.abandon(record_key), "free the idempotency key")
        raise QueueRefusedError(str(exc)) from exc
    except batcher.DeliveryUncertainError as exc:
        log.warning("queue did not confirm the order, it may be accepted: %s", exc)
        metrics.ORDERS_REFUSED.labels("queue_uncertain").inc()
        if record_key is not None:
            await _quietly(services.idempotency.release(record_key), "release the idempotency key")
        raise AcceptanceUncertainError(
            order_id, status_url_for(order_id), idempotent=record_key is not None
        ) from exc

    # The documented response model is schemas.OrderAccepted; built as a plain dict because
    # this runs once per accepted order.
    body = {
        "order_id": order_id,
        "status": contract.OrderStatus.QUEUED.value,
        "status_url": status_url_for(order_id),
        "accepted_at": _utc_text(now),
    }
    if record_key is not None:
        # The order is queued whatever happens to this write: answer 202 regardless. A retry
        # then finds the key in flight (409) until its deadline, and afterwards re-sends the
        # same order id, which the processor applies once.
        await _quietly(services.idempotency.complete(record_key, body), "record the answer")
    metrics.ORDERS_ACCEPTED.inc()
    log.info("order accepted")
    return body


async def _quietly(write: Awaitable[None], what: str) -> None:
    try:
        await write
    except stores.StoreUnavailableError as exc:
        log.warning("could not %s: %s", what, exc)


def _utc_text(timestamp: float) -> str:
    """RFC 3339 in UTC with a Z, as pydantic writes the datetimes of the other responses."""
    text = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
