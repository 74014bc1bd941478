"""What happens to one order: reserve, price, fraud, payment, final status.

Each step is safe to repeat: a redelivered message resumes from the recorded state, and a
message whose order is already final (or cancelled) is simply acknowledged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass

from order_common import contract
from order_processor import fraud, metrics, payments, stores
from order_processor import settings as settings_module

log = logging.getLogger(__name__)


class Disposition(enum.Enum):
    ACK = "ack"
    """Done with this message: delete it."""
    RETRY = "retry"
    """Leave it: the visibility timeout brings it back (or redrive moves it to the DLQ)."""


@dataclass
class OrderWorkflow:
    store: stores.ProcessorStore
    gateway: payments.PaymentGateway
    settings: settings_module.ProcessorSettings

    async def run(
        self, message: contract.OrderMessage, *, receive_count: int, max_receive_count: int
    ) -> Disposition:
        try:
            return await self._run(message)
        except Exception as exc:  # anything unexpected: retry, and give up on the last receive
            last = receive_count >= max_receive_count
            log.warning(
                "processing failed (receive %s of %s): %s", receive_count, max_receive_count, exc
            )
            metrics.MESSAGES_RETRIED.labels(type(exc).__name__).inc()
            if last:
                await self._fail(message, f"processing failed {receive_count} times: {exc}")
            return Disposition.RETRY

    async def _run(self, message: contract.OrderMessage) -> Disposition:
        now = time.time()
        prices = await self.store.prices(item.sku for item in message.items)
        unknown = [item.sku for item in message.items if item.sku not in prices]
        if unknown:
            await self._record_rejection(message, f"unknown sku: {', '.join(unknown)}")
            return Disposition.ACK
        lines = [
            stores.PricedLine(sku=i.sku, quantity=i.quantity, unit_price_cents=prices[i.sku])
            for i in message.items
        ]
        reserved = await self.store.reserve(message, lines, now=now)
        if reserved.outcome is stores.ReserveOutcome.OUT_OF_STOCK:
            await self._record_rejection(
                message, f"insufficient stock for sku {reserved.short_sku}", lines=lines
            )
            return Disposition.ACK
        if reserved.outcome is stores.ReserveOutcome.ALREADY_RECORDED:
            existing = reserved.existing
            if existing is None or existing["status"] != contract.OrderStatus.PROCESSING:
                return Disposition.ACK  # final or cancelled already: nothing left to do
            # A redelivery of an order we started: resume with the prices recorded then.
            lines = [
                stores.PricedLine(
                    sku=i["sku"], quantity=i["quantity"], unit_price_cents=i["unit_price_cents"]
                )
                for i in existing["items"]
            ]
        return await self._after_reservation(message, lines)

    async def _after_reservation(
        self, message: contract.OrderMessage, lines: list[stores.PricedLine]
    ) -> Disposition:
        total = sum(line.line_total_cents for line in lines)
        recent = await self.store.record_velocity(
            message.customer_id,
            message.order_id,
            window_seconds=self.settings.velocity_window_seconds,
            now=time.time(),
        )
        assessment = fraud.assess(
            customer_id=message.customer_id,
            total_cents=total,
            total_quantity=sum(line.quantity for line in lines),
            recent_orders=recent,
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
        await self._finish(
            message,
            contract.OrderStatus.COMPLETED,
            payment_id=outcome.payment_id,
            fraud_score=assessment.score,
        )
        return Disposition.ACK

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
            existing = await self.store.get_order(message.order_id)
            status = contract.OrderStatus.FAILED
            if existing is None:
                if await self.store.record_unreserved(message, status, reason, now=time.time()):
                    self._observe_final(message, status, reason)
            elif existing["status"] == contract.OrderStatus.PROCESSING:
                lines = (
                    [
                        stores.PricedLine(i["sku"], i["quantity"], i["unit_price_cents"])
                        for i in existing["items"]
                    ]
                    if existing.get("reserved")
                    else []
                )
                await self._finish(message, status, reason=reason, release=lines)
        except Exception as exc:  # the store is down too: the DLQ still holds the message
            log.error("could not record FAILED: %s", exc)

    def _observe_final(
        self, message: contract.OrderMessage, status: contract.OrderStatus, reason: str | None
    ) -> None:
        metrics.ORDERS_PROCESSED.labels(status.value).inc()
        metrics.END_TO_END_DURATION.observe(max(0.0, time.time() - message.accepted_at))
        log.info("order %s%s", status.value, f": {reason}" if reason else "")
