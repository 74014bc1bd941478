"""What happens to orders: reserve, price, fraud, payment, final status.

A receive batch goes through together where that saves requests: the fresh orders of a batch
are reserved in one transaction and the paid ones completed in another. Each order's own steps
run under its message's process span (`Delivery.trace`); a call shared by several orders runs
under the first one's and links to all of theirs (`tracing.across`). Whenever a shared step
cannot apply to all of them (an order already recorded, a sku short), each order takes the
step on its own, which has the exact per-order semantics. Each step is safe to repeat: a
redelivered message resumes from the recorded state, and a message whose order is already final
(or cancelled) is simply acknowledged.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from order_common import contract, logs, records, tracing
from order_processor import fraud, metrics, payments, stores
from order_processor import settings as settings_module

log = logging.getLogger(__name__)

producer_version_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "producer_version", default=contract.UNKNOWN_PRODUCER
)
"""The version of the API that queued the order being worked on: set wherever an order's
work starts (as the log context is), read where its final status is counted."""


class Disposition(enum.Enum):
    ACK = "ack"
    """Done with this message: delete it."""
    RETRY = "retry"
    """Leave it: the visibility timeout brings it back (or redrive moves it to the DLQ)."""


@dataclass(frozen=True)
class Delivery:
    message: contract.OrderMessage
    receive_count: int
    request_id: str | None = None
    """The API request that accepted the order, for the logs."""
    trace: tracing.Span | None = None
    """The message's CONSUMER "process" span: this order's work is traced under it."""
    producer_version: str = contract.UNKNOWN_PRODUCER
    """The version of the API that queued it, for `orders_processed_by_producer_total`."""


@dataclass
class OrderWorkflow:
    store: stores.ProcessorStore
    gateway: payments.PaymentGateway
    settings: settings_module.ProcessorSettings

    async def run_batch(
        self, deliveries: Sequence[Delivery], *, max_receive_count: int
    ) -> list[Disposition]:
        """Process a receive batch; one disposition per delivery, in order.

        Phases alternate between the batch and each order: prices and the shared reservation
        (batch), reservations that could not be shared (each), velocity counts (batch), fraud
        and payment (each), COMPLETED (batch).
        """
        # SQS delivers at least once, and a retried send queues an order twice: each order
        # goes through once per batch, and its copies share its disposition.
        first_copy: dict[str, int] = {}
        for index, delivery in enumerate(deliveries):
            first_copy.setdefault(delivery.message.order_id, index)
        if len(first_copy) < len(deliveries):
            unique = [deliveries[i] for i in first_copy.values()]
            outcome = dict(
                zip(
                    first_copy,
                    await self.run_batch(unique, max_receive_count=max_receive_count),
                    strict=True,
                )
            )
            return [outcome[d.message.order_id] for d in deliveries]

        try:
            with tracing.across(d.trace for d in deliveries):
                prices = await self.store.prices(
                    item.sku for d in deliveries for item in d.message.items
                )
        except Exception as exc:  # no order can go on without its prices: retry them all
            log.warning("reading prices failed: %s", exc)
            return await self._all_failed(deliveries, exc, max_receive_count)
        priced = [_price(d.message, prices) for d in deliveries]
        unknown = [sorted({i.sku for i in d.message.items} - prices.keys()) for d in deliveries]
        fresh = [(d.message, lines) for d, lines in zip(deliveries, priced, strict=True) if lines]
        try:
            with tracing.across(d.trace for d, ls in zip(deliveries, priced, strict=True) if ls):
                reserved_together = await self.store.reserve_together(fresh, now=time.time())
        except Exception as exc:  # each order reserves on its own, which says which one failed
            log.warning("reserving %s orders together failed: %s", len(fresh), exc)
            reserved_together = False
        if len(fresh) > 1 and not reserved_together:
            metrics.BATCH_STEP_FALLBACKS.labels("reserve").inc()

        steps: list[Disposition | _Reserved] = await asyncio.gather(
            *(
                self._guarded(
                    d, max_receive_count, self._reserve(d, lines, missing, reserved_together)
                )
                for d, lines, missing in zip(deliveries, priced, unknown, strict=True)
            )
        )
        reserved = [s for s in steps if isinstance(s, _Reserved)]
        if not reserved:
            return [s for s in steps if isinstance(s, Disposition)]
        recent: dict[str, int] | None
        try:
            with tracing.across(r.delivery.trace for r in reserved):
                recent = await self.store.recent_orders(
                    [r.delivery.message for r in reserved], now=time.time()
                )
        except Exception as exc:  # each order reads its own customer's window
            log.warning("reading velocity for %s orders failed: %s", len(reserved), exc)
            metrics.BATCH_STEP_FALLBACKS.labels("velocity").inc()
            recent = None

        after = iter(
            await asyncio.gather(
                *(
                    self._guarded(r.delivery, max_receive_count, self._after_reservation(r, recent))
                    for r in reserved
                )
            )
        )
        outcomes = [next(after) if isinstance(s, _Reserved) else s for s in steps]
        completions = [o for o in outcomes if isinstance(o, _Paid)]
        if completions:
            await self._complete(completions, max_receive_count)
        return [o.disposition if isinstance(o, _Paid) else o for o in outcomes]

    async def _all_failed(
        self, deliveries: Sequence[Delivery], exc: Exception, max_receive_count: int
    ) -> list[Disposition]:
        return await asyncio.gather(
            *(self._on_failure(d, exc, max_receive_count) for d in deliveries)
        )

    async def _guarded(
        self, delivery: Delivery, max_receive_count: int, step: Awaitable[_Outcome]
    ) -> _Outcome | Disposition:
        """Run one order's step in its own task; anything unexpected retries the message."""
        # Each delivery runs in its own task: these set its log lines' context only.
        logs.order_id_var.set(delivery.message.order_id)
        logs.request_id_var.set(delivery.request_id)
        producer_version_var.set(delivery.producer_version)
        with tracing.activated(delivery.trace):
            try:
                return await step
            except Exception as exc:  # retry, and give up on the last receive
                return await self._on_failure(delivery, exc, max_receive_count)

    async def _on_failure(
        self, delivery: Delivery, exc: Exception, max_receive_count: int
    ) -> Disposition:
        tracing.record_error(delivery.trace, exc)
        producer_version_var.set(delivery.producer_version)
        with tracing.activated(delivery.trace):
            log.warning(
                "processing failed (receive %s of %s): %s",
                delivery.receive_count,
                max_receive_count,
                exc,
            )
            metrics.MESSAGES_RETRIED.labels(type(exc).__name__).inc()
            if delivery.receive_count >= max_receive_count:
                reason = f"processing failed {delivery.receive_count} times: {exc}"
                await self._fail(delivery.message, reason)
        return Disposition.RETRY

    async def _reserve(
        self,
        delivery: Delivery,
        lines: list[stores.PricedLine] | None,
        unknown: list[str],
        reserved: bool,
    ) -> Disposition | _Reserved:
        message = delivery.message
        if lines is None:
            await self._record_rejection(message, f"unknown sku: {', '.join(unknown)}")
            return Disposition.ACK
        if not reserved:
            reservation = await self.store.reserve(message, lines, now=time.time())
            if reservation.outcome is stores.ReserveOutcome.OUT_OF_STOCK:
                reason = f"insufficient stock for sku {reservation.short_sku}"
                await self._record_rejection(message, reason, lines=lines)
                return Disposition.ACK
            if reservation.outcome is stores.ReserveOutcome.ALREADY_RECORDED:
                existing = reservation.existing
                if existing is None or existing["status"] != contract.OrderStatus.PROCESSING:
                    return Disposition.ACK  # final or cancelled already: nothing left to do
                # A redelivery of an order we started: resume with the prices recorded then.
                return _Reserved(delivery, _recorded_lines(existing), resumed=True)
        return _Reserved(delivery, lines)

    async def _after_reservation(
        self, reserved: _Reserved, recent: dict[str, int] | None
    ) -> Disposition | _Paid:
        message, lines = reserved.delivery.message, reserved.lines
        if reserved.resumed:
            # Decisions taken before are never taken again: a charged order was cleared by the
            # fraud rules then, so it completes, whatever its customer did since.
            charge = await self.gateway.find_charge(message.order_id)
            if charge is not None and not charge.refunded:
                return _Paid(reserved.delivery, charge.payment_id, fraud_score=None)
        if recent is None:
            recent = await self.store.recent_orders([message], now=time.time())
        total = sum(line.line_total_cents for line in lines)
        assessment = fraud.assess(
            customer_id=message.customer_id,
            total_cents=total,
            total_quantity=sum(line.quantity for line in lines),
            recent_orders=recent.get(message.order_id, 1),
            velocity_limit=self.settings.velocity_limit,
            velocity_window_seconds=self.settings.velocity_window_seconds,
        )
        if assessment.rejects(self.settings.fraud_threshold):
            reason = f"fraud score {assessment.score}: {'; '.join(assessment.reasons)}"
            await self._finish(
                message,
                contract.OrderStatus.REJECTED,
                reason=reason,
                release=lines,
                fraud_score=assessment.score,
            )
            return Disposition.ACK

        outcome = await self._charge(message, total)
        if isinstance(outcome, payments.Declined):
            await self._finish(
                message,
                contract.OrderStatus.REJECTED,
                reason=outcome.reason,
                release=lines,
                fraud_score=assessment.score,
            )
            return Disposition.ACK
        return _Paid(reserved.delivery, outcome.payment_id, assessment.score)

    async def _complete(self, paid: list[_Paid], max_receive_count: int) -> None:
        """COMPLETED for every paid order: together if possible, else one by one."""
        completions = [
            stores.Completion(p.message.order_id, p.payment_id, p.fraud_score) for p in paid
        ]
        try:
            with tracing.across(p.delivery.trace for p in paid):
                together = await self.store.complete_together(completions, now=time.time())
        except Exception as exc:  # fall back to single writes, which retry on their own
            log.warning("completing %s orders together failed: %s", len(paid), exc)
            together = False
        if len(paid) > 1 and not together:
            metrics.BATCH_STEP_FALLBACKS.labels("complete").inc()
        if together:
            for p in paid:
                producer_version_var.set(p.delivery.producer_version)
                with tracing.activated(p.delivery.trace):
                    self._observe_final(p.message, contract.OrderStatus.COMPLETED, None)
            return
        for p in paid:
            producer_version_var.set(p.delivery.producer_version)
            with tracing.activated(p.delivery.trace):
                try:
                    await self._finish(
                        p.message,
                        contract.OrderStatus.COMPLETED,
                        payment_id=p.payment_id,
                        fraud_score=p.fraud_score,
                    )
                except Exception as exc:  # paid but not recorded: redelivery finishes it
                    log.warning("could not record COMPLETED: %s", exc)
                    metrics.MESSAGES_RETRIED.labels(type(exc).__name__).inc()
                    tracing.record_error(p.delivery.trace, exc)
                    p.disposition = Disposition.RETRY

    async def _charge(
        self, message: contract.OrderMessage, total: int
    ) -> payments.Approved | payments.Declined:
        for attempt in range(1, self.settings.payment_attempts + 1):
            try:
                return await self.gateway.charge(
                    order_id=message.order_id,
                    amount_cents=total,
                    currency=message.currency,
                    token=message.payment_token,
                )
            except payments.TransientPaymentError:
                if attempt == self.settings.payment_attempts:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def _finish(
        self,
        message: contract.OrderMessage,
        status: contract.OrderStatus,
        *,
        reason: str | None = None,
        release: list[stores.PricedLine] | None = None,
        payment_id: str | None = None,
        fraud_score: int | None = None,
    ) -> None:
        changed = await self.store.finish(
            message.order_id,
            status,
            now=time.time(),
            reason=reason,
            release=release or (),
            payment_id=payment_id,
            fraud_score=fraud_score,
        )
        if changed:
            self._observe_final(message, status, reason)

    async def _record_rejection(
        self,
        message: contract.OrderMessage,
        reason: str,
        *,
        lines: list[stores.PricedLine] | None = None,
    ) -> None:
        status = contract.OrderStatus.REJECTED
        if await self.store.record_unreserved(
            message, status, reason, now=time.time(), lines=lines or ()
        ):
            self._observe_final(message, status, reason)

    async def _fail(self, message: contract.OrderMessage, reason: str) -> None:
        """Last receive failed: record FAILED (releasing stock if taken); redrive takes the rest."""
        try:
            await self.record_failed(message, reason)
        except Exception as exc:  # the store is down too: the DLQ reconciler finishes it
            log.error("could not record FAILED: %s", exc)

    async def record_failed(self, message: contract.OrderMessage, reason: str) -> None:
        """End the order FAILED unless it is final already: its stock released, its charge (if
        any) refunded. Safe to repeat; raises if the store or the gateway cannot be reached."""
        existing = await self.store.get_order(message.order_id)
        status = contract.OrderStatus.FAILED
        if existing is None:
            if await self.store.record_unreserved(message, status, reason, now=time.time()):
                self._observe_final(message, status, reason)
        elif existing["status"] == contract.OrderStatus.PROCESSING:
            # Charged but not completable: give the money back before saying FAILED.
            charge = await self.gateway.find_charge(message.order_id)
            if charge is not None and await self.gateway.refund(
                order_id=message.order_id, reason=reason
            ):
                metrics.REFUNDS.inc()
            lines = _recorded_lines(existing) if existing.get("reserved") else []
            await self._finish(message, status, reason=reason, release=lines)

    def _observe_final(
        self, message: contract.OrderMessage, status: contract.OrderStatus, reason: str | None
    ) -> None:
        metrics.ORDERS_PROCESSED.labels(status.value).inc()
        metrics.count_by_producer(producer_version_var.get(), status.value)
        metrics.END_TO_END_DURATION.observe(max(0.0, time.time() - message.accepted_at))
        if tracing.enabled:  # always called under the order's own span
            tracing.annotate("order_pipeline.order.status", status.value)
        log.info(
            "order %s%s",
            status.value,
            f": {reason}" if reason else "",
            extra={"order_id": message.order_id},
        )


@dataclass(frozen=True)
class _Reserved:
    """An order holding its stock, on its way to fraud scoring and payment."""

    delivery: Delivery
    lines: list[stores.PricedLine]
    resumed: bool = False
    """Started by an earlier delivery: its decisions may already be taken."""


@dataclass
class _Paid:
    """An order charged successfully whose COMPLETED write is still to come."""

    delivery: Delivery
    payment_id: str
    fraud_score: int | None
    """None for an order resumed after its charge (the score was not recorded then)."""
    disposition: Disposition = Disposition.ACK

    @property
    def message(self) -> contract.OrderMessage:
        return self.delivery.message


_Outcome = TypeVar("_Outcome")


def _price(
    message: contract.OrderMessage, prices: dict[str, int]
) -> list[stores.PricedLine] | None:
    """Lines priced from the catalog, or None when a sku is unknown."""
    if any(item.sku not in prices for item in message.items):
        return None
    return [
        stores.PricedLine(sku=i.sku, quantity=i.quantity, unit_price_cents=prices[i.sku])
        for i in message.items
    ]


def _recorded_lines(record: records.OrderRecord) -> list[stores.PricedLine]:
    # Only records that reserved stock are read here, and they were created with their items.
    return [
        stores.PricedLine(i["sku"], i["quantity"], i["unit_price_cents"]) for i in record["items"]
    ]
