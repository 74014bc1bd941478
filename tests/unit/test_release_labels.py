"""The release labels of the services' metrics, and the producer version of their messages."""

from __future__ import annotations

from typing import Any

import prometheus_client
import pydantic
import pytest
from prometheus_client import parser

from order_common import contract, exposition
from order_common import settings as common_settings
from order_operator.rollout import spec as rollout_spec
from order_processor import metrics as processor_metrics


def _registry() -> prometheus_client.CollectorRegistry:
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("things", "Things", ["kind"], registry=registry).labels("a").inc()
    prometheus_client.Histogram("latency_seconds", "Latency", registry=registry).observe(0.2)
    prometheus_client.Gauge("plain", "No labels", registry=registry).set(3)
    prometheus_client.Info("build", "Clashing label", registry=registry).info(
        {"version": "3.11", "flavour": "x"}
    )
    return registry


def _samples(text: bytes) -> list[Any]:
    return [s for f in parser.text_string_to_metric_families(text.decode()) for s in f.samples]


def test_every_sample_carries_the_release_labels() -> None:
    samples = _samples(exposition.render(version="abc123", track="canary", of=_registry()))
    assert {s.name for s in samples} >= {
        "things_total",
        "latency_seconds_bucket",
        "latency_seconds_count",
        "plain",
        "build_info",
    }
    for sample in samples:
        assert sample.labels["version"] == "abc123"
        assert sample.labels[rollout_spec.TRACK_LABEL] == "canary"
    [things] = [s for s in samples if s.name == "things_total"]
    assert things.labels == {"kind": "a", "version": "abc123", "track": "canary"}
    [build] = [s for s in samples if s.name == "build_info"]
    assert build.labels == {
        "exported_version": "3.11",
        "flavour": "x",
        "version": "abc123",
        "track": "canary",
    }


def test_the_services_and_the_operator_name_the_release_labels_alike() -> None:
    assert exposition.TRACK_LABEL == rollout_spec.TRACK_LABEL
    # The analysis selects each track by this label: the revision the builders stamp.
    assert exposition.VERSION_LABEL == rollout_spec.VERSION_LABEL


def test_the_release_comes_from_the_environment_and_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("APP_VERSION", "ROLLOUT_TRACK"):
        monkeypatch.delenv(name, raising=False)
    assert common_settings.ReleaseSettings().app_version == "dev"
    assert common_settings.ReleaseSettings().rollout_track == "stable"
    monkeypatch.setenv("APP_VERSION", "5d41402abc")
    monkeypatch.setenv("ROLLOUT_TRACK", "canary")
    release = common_settings.ReleaseSettings()
    assert (release.app_version, release.rollout_track) == ("5d41402abc", "canary")
    for name, value in (("ROLLOUT_TRACK", "blue"), ("APP_VERSION", 'x"}'), ("APP_VERSION", "")):
        monkeypatch.setenv(name, value)
        with pytest.raises(pydantic.ValidationError):
            common_settings.ReleaseSettings()
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"producer_version": {"DataType": "String", "StringValue": "v1.2-3"}}, "v1.2-3"),
        ({}, "unknown"),
        ({"producer_version": {"DataType": "String", "StringValue": 'v1"} 1'}}, "unknown"),
        ({"producer_version": {"DataType": "String", "StringValue": "v" * 64}}, "unknown"),
    ],
)
def test_a_received_message_names_its_producer_or_unknown(
    attributes: dict[str, Any], expected: str
) -> None:
    assert contract.producer_version(attributes) == expected


def test_the_api_s_attributes_name_its_version() -> None:
    attributes = contract.message_attributes(
        request_id="r", trace_context={}, producer_version="abc"
    )
    assert contract.producer_version(attributes) == "abc"
    assert set(attributes) <= set(contract.MESSAGE_ATTRIBUTE_NAMES)


def test_outcomes_are_counted_by_producer_for_a_bounded_number_of_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processor_metrics, "_producers", set())
    counter = processor_metrics.ORDERS_BY_PRODUCER

    def count(version: str) -> float:
        return counter.labels(version, "COMPLETED")._value.get()  # type: ignore[no-any-return]

    before = {v: count(v) for v in ("p-0", "p-15", "p-16", "other")}
    for index in range(processor_metrics.MAX_PRODUCER_VERSIONS + 2):
        processor_metrics.count_by_producer(f"p-{index}", "COMPLETED")
    processor_metrics.count_by_producer("p-0", "COMPLETED")
    assert count("p-0") - before["p-0"] == 2
    assert count("p-15") - before["p-15"] == 1
    assert count("p-16") - before["p-16"] == 0
    assert count("other") - before["other"] == 2


def test_a_producer_s_outcome_series_all_exist_from_its_first_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A FAILED series born at the first failure would hide it from `increase()`: the rollout
    analysis would not count a canary's first failed order on each processor."""
    monkeypatch.setattr(processor_metrics, "_producers", set())
    processor_metrics.count_by_producer("first-seen", "COMPLETED")
    [family] = [
        f
        for f in processor_metrics.ORDERS_BY_PRODUCER.collect()
        if f.name == "orders_processed_by_producer"
    ]
    counted = {
        s.labels["status"]: s.value
        for s in family.samples
        if s.name.endswith("_total") and s.labels["producer_version"] == "first-seen"
    }
    assert counted == {"COMPLETED": 1.0, "FAILED": 0.0, "REJECTED": 0.0, "CANCELLED": 0.0}
