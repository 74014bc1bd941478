"""Which release produced a metric, and which API release produced an order, on the real
engines: every sample of both services' `/metrics` carries `version` and `track`, and the
processor counts each order's outcome by the `producer_version` its message carries."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import parser as exposition_parser
from prometheus_client.metrics_core import Metric

from order_devtools import local
from order_operator.rollout import spec as rollout_spec
from tests.integration import helpers
from tests.integration.conftest import PipelineFactory, ServiceFactory

pytestmark = pytest.mark.integration


def _families(service: local.ServiceProcess) -> list[Metric]:
    text = httpx.get(service.health_url.replace("/healthz", "/metrics"), timeout=10).text
    return list(exposition_parser.text_string_to_metric_families(text))


def _release_of_every_sample(families: list[Metric]) -> set[tuple[str, str]]:
    """The (version, track) pairs the samples carry; ("", "") for a sample without them."""
    return {
        (sample.labels.get("version", ""), sample.labels.get(rollout_spec.TRACK_LABEL, ""))
        for family in families
        for sample in family.samples
    }


def test_every_sample_of_both_services_names_its_release_and_the_processor_its_producer(
    make_pipeline: PipelineFactory,
    start_api: ServiceFactory,
    start_processor: ServiceFactory,
) -> None:
    pipeline = make_pipeline()
    api = start_api(pipeline, APP_VERSION="api-7f3a9c1", ROLLOUT_TRACK="canary")
    processor = start_processor(pipeline, APP_VERSION="proc-1b2c3d4")
    with httpx.Client(base_url=api.health_url.removesuffix("/healthz"), timeout=10) as client:
        access = helpers.token(client)
        placed = helpers.place(client, access, helpers.order_body())
        assert helpers.wait_final(client, placed["status_url"])["status"] == "COMPLETED"

    api_families = _families(api)
    processor_families = _families(processor)
    assert {f.name for f in api_families} >= {"http_requests", "orders_accepted"}
    assert {f.name for f in processor_families} >= {"orders_processed", "python_info"}
    assert _release_of_every_sample(api_families) == {("api-7f3a9c1", "canary")}
    assert _release_of_every_sample(processor_families) == {("proc-1b2c3d4", "stable")}
    # Python's own version stays, renamed as Prometheus renames a clashing label.
    [python_info] = [f for f in processor_families if f.name == "python_info"]
    assert all("exported_version" in s.labels for s in python_info.samples)

    [by_producer] = [f for f in processor_families if f.name == "orders_processed_by_producer"]
    counted = {
        (s.labels["producer_version"], s.labels["status"]): s.value
        for s in by_producer.samples
        if s.name.endswith("_total")
    }
    # Every outcome of a producer from its first order on, so increase() sees each one.
    assert counted == {
        ("api-7f3a9c1", "COMPLETED"): 1.0,
        ("api-7f3a9c1", "FAILED"): 0.0,
        ("api-7f3a9c1", "REJECTED"): 0.0,
        ("api-7f3a9c1", "CANCELLED"): 0.0,
    }
    # The existing counter is unchanged: no producer label, every status from the start.
    assert helpers.metric(processor, 'orders_processed_total{status="COMPLETED"') == 1


def test_an_api_with_several_workers_exposes_every_worker_s_requests_labelled(
    make_pipeline: PipelineFactory, start_api: ServiceFactory, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999.db").write_bytes(b"left by an earlier server")
    api = start_api(
        make_pipeline(),
        API_WORKERS="3",
        APP_VERSION="v2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    base = api.health_url.removesuffix("/healthz")
    requests = 30
    for _ in range(requests):  # a connection each, so the workers share them
        assert httpx.get(f"{base}/v1/orders/unknown", timeout=10).status_code == 404

    def unknown_order_requests(families: list[Metric]) -> float:
        [counter] = [f for f in families if f.name == "http_requests"]
        return sum(
            s.value
            for s in counter.samples
            if s.name == "http_requests_total" and s.labels["status"] == "404"
        )

    for _ in range(6):  # whichever worker answers, it shows them all
        families = _families(api)
        assert unknown_order_requests(families) == requests
        assert _release_of_every_sample(families) == {("v2", "stable")}
