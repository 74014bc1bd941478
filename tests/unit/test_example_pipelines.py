"""The OrderPipeline examples users copy from validate against the spec models, their commented
`rollout` parts included (uncommented here). The real apiserver takes the same example in
tests/e2e/test_rollout_plugin.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from order_operator.v1alpha1 import spec as v1alpha1

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "k8s/examples/orderpipeline.yaml"
VALUES = REPO / "charts/order-pipeline/values.yaml"


def uncomment(text: str, marker: str) -> str:
    """`text` with the commented block that starts with the line `# <marker>` uncommented: the
    following lines commented at the same column, up to the first that is not."""
    lines = text.splitlines(keepends=True)
    (start,) = [i for i, line in enumerate(lines) if line.strip() == f"# {marker}"]
    column = lines[start].index("#")
    end = start
    while end < len(lines) and lines[end][column:].startswith("# "):
        lines[end] = lines[end][:column] + lines[end][column + 2 :]
        end += 1
    return "".join(lines)


def test_the_local_example_has_a_rollout_and_its_commented_analysis_is_valid() -> None:
    text = EXAMPLE.read_text()
    as_is = v1alpha1.OrderPipelineSpec.model_validate(yaml.safe_load(text)["spec"])
    assert as_is.rollout is not None
    assert as_is.rollout.analysis is None
    assert any(s.pause is not None and s.pause.duration is None for s in as_is.rollout.steps)
    spec = yaml.safe_load(uncomment(text, "analysis:"))["spec"]
    analysed = v1alpha1.OrderPipelineSpec.model_validate(spec)
    assert analysed.rollout is not None
    assert analysed.rollout.analysis is not None


def test_the_charts_commented_rollout_is_valid() -> None:
    values: dict[str, Any] = yaml.safe_load(uncomment(VALUES.read_text(), "rollout:"))
    (pipeline,) = values["pipelines"]
    images = {"api": {"image": "a:1"}, "processor": {"image": "p:1"}}
    spec = {**pipeline["spec"]}
    for component, image in images.items():
        spec[component] = {**spec[component], **image}
    parsed = v1alpha1.OrderPipelineSpec.model_validate(spec)
    assert parsed.rollout is not None
    assert parsed.rollout.analysis is not None
    assert [s.weight for s in parsed.rollout.steps if s.weight] == [5, 25, 50]
    as_shipped = yaml.safe_load(VALUES.read_text())["pipelines"][0]["spec"]
    assert "rollout" not in as_shipped
