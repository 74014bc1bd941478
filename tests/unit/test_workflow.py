"""The processor's batch workflow against in-memory fakes of its store and gateway: which
disposition each delivery gets, what ends up recorded, and what falls back to per-order steps.

The fakes keep the store's contract (conditional writes, all-or-nothing transactions); the
real store is tested against Dynoxide in tests/integration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from order_common import contract
from order_processor import payments, stores, velocity, workflow
from order_processor import settings as settings_module

PROCESSING = contract.OrderStatus.PROCESSING.value


@dataclass
class FakeStore:
    """In memory, with the real store's conditions: first write wins, PROCESSING to final once,
    stock never below zero, a shared reservation all or nothing."""

    catalog: dict[str, tuple[int, int]]  # sku -> (price, stock)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    velocity: dict[str, int] = field(default_factory=dict)
    fail_shared_steps: bool = False
    calls: list[str] = field(default_factory=list)

    async def prices(self, skus: Any) -> dict[str, int]:
        self.calls.append("prices")
        return {s: self.catalog[s][0] for s in set(skus) if s in self.catalog}

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        return self.orders.get(order_id)

    def _short(self, demand: dict[str, int]) -> str | None:
        return next((s for s, q in demand.items() if self.catalog[s][1] < q), None)

    def _take(self, message: contract.OrderMessage, lines: Sequence[stores.PricedLine]) -> None:
        for line in lines:
            price, stock = self.catalog[line.sku]
            self.catalog[line.sku] = (price, stock - line.quantity)
        customer = velocity.customer_key(message.client_id, message.customer_id)
        self.velocity[customer] = self.velocity.get(customer, 0) + 1
        self.orders[message.order_id] = {
            "order_id": message.order_id,
            "status": PROCESSING,
            "items": [line.as_record() for line in lines],
            "reserved": True,
        }

    async def reserve(
        self, message: contract.OrderMessage, lines: Sequence[stores.PricedLine], *, now: float
    ) -> stores.ReserveResult:
        self.calls.append("reserve")
        if message.order_id in self.orders:
            return stores.ReserveResult(
                stores.ReserveOutcome.ALREADY_RECORDED, existing=self.orders[message.order_id]
            )
        short = self._short({line.sku: line.quantity for line in lines})
        if short is not None:
            return stores.ReserveResult(stores.ReserveOutcome.OUT_OF_STOCK, short_sku=short)
        self._take(message, lines)
        return stores.ReserveResult(stores.ReserveOutcome.RESERVED)

    async def reserve_together(self, orders: Any, *, now: float) -> bool:
        self.calls.append("reserve_together")
        if self.fail_shared_steps:
            raise TimeoutError("injected")
        demand: dict[str, int] = {}
        for _, lines in orders:
            for line in lines:
                demand[line.sku] = demand.get(line.sku, 0) + line.quantity
        taken = any(m.order_id in self.orders for m, _ in orders)
        if len(orders) < 2 or taken or self._short(demand) is not None:
            return False
        for message, lines in orders:
            self._take(message, lines)
        return True

    async def recent_orders(
        self, messages: Sequence[contract.OrderMessage], *, now: float
    ) -> dict[str, int]:
        return {
            m.order_id: self.velocity.get(velocity.customer_key(m.client_id, m.customer_id), 1)
            for m in messages
        }

    async def complete_together(self, completions: Any, *, now: float) -> bool:
        self.calls.append("complete_together")
        if self.fail_shared_steps:
            raise TimeoutError("injected")
        if len(completions) < 2 or any(
            self.orders[c.order_id]["status"] != PROCESSING for c in completions
        ):
            return False
        for c in completions:
            self.orders[c.order_id]["status"] = contract.OrderStatus.COMPLETED.value
        return True

    # What the fake does not record (times, lines, payment details) it takes as `**_`.
    async def record_unreserved(
        self, message: contract.OrderMessage, status: contract.OrderStatus, reason: str, **_: object
    ) -> bool:
        if message.order_id in self.orders:
            return False
        self.orders[message.order_id] = {"status": status.value, "reason": reason}
        return True

    async def finish(
        self,
        order_id: str,
        status: contract.OrderStatus,
        *,
        reason: str | None = None,
        release: Sequence[stores.PricedLine] = (),
        **_: object,
    ) -> bool:
        self.calls.append("finish")
        record = self.orders[order_id]
        if record["status"] != PROCESSING:
            return False
        for line in release:
            price, stock = self.catalog[line.sku]
            self.catalog[line.sku] = (price, stock + line.quantity)
        record.update(status=status.value, reason=reason)
        return True


@dataclass
class FakeGateway:
    charges: dict[str, int] = field(default_factory=dict)
    refunded: set[str] = field(default_factory=set)

    async def charge(
        self, *, order_id: str, amount_cents: int, currency: str, token: str
    ) -> payments.Approved | payments.Declined:
        if token == "tok_decline":
            return payments.Declined("declined")
        if token == "tok_unavailable":
            raise payments.TransientPaymentError("down")
        self.charges.setdefault(order_id, amount_cents)
        return payments.Approved(f"pay-{order_id}")

    async def find_charge(self, order_id: str) -> payments.Charge | None:
        if order_id not in self.charges:
            return None
        amount = self.charges[order_id]
        return payments.Charge(f"pay-{order_id}", amount, refunded=order_id in self.refunded)

    async def refund(self, *, order_id: str, reason: str) -> bool:
        if order_id in self.refunded:
            return False
        self.refunded.add(order_id)
        return True


def _delivery(
    order_id: str, *, sku: str = "SKU-A", quantity: int = 1, token: str = "tok_ok", count: int = 1
) -> workflow.Delivery:
    message = contract.OrderMessage(
        order_id=order_id,
        client_id="demo",
        customer_id=f"customer-{order_id}",
        items=(contract.OrderItem(sku=sku, quantity=quantity),),
        currency="USD",
        payment_token=token,
        accepted_at=time.time(),
    )
    return workflow.Delivery(message=message, receive_count=count)


def _run(
    store: FakeStore, gateway: FakeGateway, deliveries: list[workflow.Delivery]
) -> list[workflow.Disposition]:
    settings = settings_module.ProcessorSettings(payment_gateway="simulator", payment_attempts=1)
    flow = workflow.OrderWorkflow(store=store, gateway=gateway, settings=settings)  # type: ignore[arg-type]
    return asyncio.run(flow.run_batch(deliveries, max_receive_count=3))


ACK, RETRY = workflow.Disposition.ACK, workflow.Disposition.RETRY


def _status(store: FakeStore, order_id: str) -> str:
    return str(store.orders[order_id]["status"])


def test_a_clean_batch_reserves_together_and_completes_together() -> None:
    store, gateway = FakeStore({"SKU-A": (500, 10)}), FakeGateway()
    assert _run(store, gateway, [_delivery("o1"), _delivery("o2")]) == [ACK, ACK]
    assert [_status(store, o) for o in ("o1", "o2")] == ["COMPLETED", "COMPLETED"]
    assert store.calls == ["prices", "reserve_together", "complete_together"]
    assert store.catalog["SKU-A"] == (500, 8)
    assert gateway.charges == {"o1": 500, "o2": 500}


def test_each_order_gets_its_own_outcome_when_the_shared_reservation_cannot_apply() -> None:
    store, gateway = FakeStore({"SKU-A": (500, 1), "SKU-B": (100, 5)}), FakeGateway()
    deliveries = [
        _delivery("fits", sku="SKU-B"),
        _delivery("short", sku="SKU-A", quantity=2),
        _delivery("unknown", sku="SKU-Z"),
        _delivery("declined", sku="SKU-B", token="tok_decline"),
    ]
    assert _run(store, gateway, deliveries) == [ACK, ACK, ACK, ACK]
    assert _status(store, "fits") == "COMPLETED"
    assert store.orders["short"]["reason"] == "insufficient stock for sku SKU-A"
    assert store.orders["unknown"]["reason"] == "unknown sku: SKU-Z"
    assert _status(store, "declined") == "REJECTED"
    assert store.catalog == {
        "SKU-A": (500, 1),
        "SKU-B": (100, 4),
    }  # the declined order's stock is back
    assert gateway.charges == {"fits": 100}


def test_two_copies_of_one_order_in_a_batch_are_processed_once() -> None:
    store, gateway = FakeStore({"SKU-A": (500, 10)}), FakeGateway()
    copy = _delivery("o1")
    assert _run(store, gateway, [copy, _delivery("o2"), copy]) == [ACK, ACK, ACK]
    assert store.catalog["SKU-A"] == (500, 8)
    assert gateway.charges == {"o1": 500, "o2": 500}


def test_failing_shared_steps_fall_back_to_each_order_on_its_own() -> None:
    store, gateway = FakeStore({"SKU-A": (500, 10)}, fail_shared_steps=True), FakeGateway()
    assert _run(store, gateway, [_delivery("o1"), _delivery("o2")]) == [ACK, ACK]
    assert [_status(store, o) for o in ("o1", "o2")] == ["COMPLETED", "COMPLETED"]
    assert store.calls.count("reserve") == 2
    assert store.calls.count("finish") == 2


def test_a_redelivered_charged_order_completes_without_being_judged_again() -> None:
    store, gateway = FakeStore({"SKU-A": (500, 10)}), FakeGateway()
    first = _delivery("o1")
    store._take(first.message, [stores.PricedLine("SKU-A", 1, 500)])
    gateway.charges["o1"] = 500
    customer = velocity.customer_key(first.message.client_id, first.message.customer_id)
    store.velocity[customer] = 1_000  # the fraud rules would reject it now
    assert _run(store, gateway, [_delivery("o1", count=2)]) == [ACK]
    assert _status(store, "o1") == "COMPLETED"
    assert gateway.charges == {"o1": 500}
    assert not gateway.refunded


@pytest.mark.parametrize(("count", "final"), [(1, "PROCESSING"), (3, "FAILED")])
def test_a_gateway_that_stays_down_retries_and_fails_on_the_last_receive(
    count: int, final: str
) -> None:
    store, gateway = FakeStore({"SKU-A": (500, 10)}), FakeGateway()
    delivery = _delivery("o1", token="tok_unavailable", count=count)
    assert _run(store, gateway, [delivery]) == [RETRY]
    assert _status(store, "o1") == final
    assert store.catalog["SKU-A"] == ((500, 9) if final == "PROCESSING" else (500, 10))
