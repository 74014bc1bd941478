"""PAYMENT_GATEWAY picks who charges the cards; unset, the processor does not start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import pydantic
import pytest

from order_processor import payments, service
from order_processor import settings as settings_module


@dataclass
class _Gateway:
    settings: settings_module.ProcessorSettings


def make_gateway(settings: settings_module.ProcessorSettings) -> _Gateway:
    """A factory as a user's package would provide one (named by PAYMENT_GATEWAY)."""
    return _Gateway(settings)


def _settings(gateway: str) -> settings_module.ProcessorSettings:
    return settings_module.ProcessorSettings(payment_gateway=gateway)


@pytest.mark.parametrize("gateway", ["", "payments", "a.b:", ":factory", "a b:c"])
def test_a_missing_or_malformed_gateway_is_refused_with_what_to_set(gateway: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="set PAYMENT_GATEWAY to"):
        _settings(gateway)


def test_the_simulator_is_chosen_only_by_name_and_says_it_charges_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        gateway = service.payment_gateway(_settings("simulator"), dynamodb=None)  # type: ignore[arg-type]
    assert isinstance(gateway, payments.SimulatedPaymentGateway)
    assert "no card is charged" in caplog.text


def test_a_factory_path_is_imported_and_given_the_settings() -> None:
    settings = _settings(f"{__name__}:make_gateway")
    gateway = service.payment_gateway(settings, dynamodb=None)  # type: ignore[arg-type]
    assert isinstance(gateway, _Gateway)
    assert gateway.settings is settings


def test_the_processor_does_not_start_without_a_gateway() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PAYMENT_GATEWAY"}
    started = subprocess.run(
        [sys.executable, "-m", "order_processor"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert started.returncode == 1
    assert "invalid configuration" in started.stderr
    assert "set PAYMENT_GATEWAY to" in started.stderr
