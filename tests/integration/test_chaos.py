"""The chaos soak (tests/chaos.py) at 2,000 orders: every promise holds under faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from order_devtools import engines
from tests import chaos
from tests.integration.conftest import PipelineFactory

pytestmark = pytest.mark.integration


def test_chaos_soak_keeps_every_promise(
    local_engines: engines.Engines,
    make_pipeline: PipelineFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline = make_pipeline(catalog=chaos.SKUS, visibility_timeout=5, max_receive_count=5)

    report = chaos.run_soak(local_engines, pipeline, tmp_path, chaos.SoakSettings(orders=2000))

    with capsys.disabled():  # the counts belong in the test output, pass or fail
        report.print()
    assert report.violations == []
    assert report.counts["accepted"] == 2000
    assert report.counts["status_COMPLETED"] > 1500
    assert report.counts["status_FAILED"] > 0
    assert sum(v for k, v in report.counts.items() if k.startswith("faults_")) > 100
