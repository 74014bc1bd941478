"""What `kubectl orderpipeline status` prints for an OrderPipeline (the pure rendering), and the
plugin's command line. Against a real apiserver: tests/e2e/test_rollout_plugin.py."""

from __future__ import annotations

from typing import Any

import pytest

from order_operator import cli
from order_operator.rollout import judge
from order_operator.rollout import status as rollout_status

T0 = 1_800_000_000.0
STEPS = [{"weight": 5}, {"pause": {}}, {"weight": 25}, {"pause": {"duration": 120}}]


def measured() -> rollout_status.Analysis:
    return rollout_status.Analysis(
        at=T0,
        result=judge.Result(
            verdict="Fail",
            measures=(
                judge.Measure(
                    "orders-failed", "errorRatio", "q", 0.04, "Fail", "canary 4/100, stable 0/900"
                ),
                judge.Measure("processing-p99", "latency", "q", None, "Inconclusive", "no data"),
            ),
        ),
    )


def pipeline(**rollout: rollout_status.RolloutStatus) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "namespace": "shop", "generation": 4},
        "spec": {"rollout": {"steps": STEPS, "order": ["processor", "api"]}},
        "status": {
            "observedGeneration": 4,
            "rollout": {component: s.to_dict() for component, s in rollout.items()},
        },
    }


def test_status_shows_step_weights_revisions_and_the_last_analysis() -> None:
    rolling = rollout_status.RolloutStatus(
        phase="Progressing",
        stable_revision="5d8f7c",
        canary_revision="7a9b1e",
        current_step=2,
        target_weight=25,
        planned_share=0.25,
        observed_share=0.231,
        failures=1,
        last_analysis=measured(),
        message="step 3/4: weight 25%; waiting for a passing analysis",
    )
    text = cli.render(pipeline(processor=rolling))
    assert text.splitlines() == [
        "orderpipeline shop/demo  generation 4 (observed 4)",
        "processor  Progressing  step 3/4: weight 25%",
        "  weight     target 25%  planned 25.0%  observed 23.1%",
        "  revision   stable 5d8f7c  canary 7a9b1e",
        "  analysis   Fail at 2027-01-15T08:00:00Z  failed comparisons 1",
        "    Fail          orders-failed (errorRatio) = 0.04: canary 4/100, stable 0/900",
        "    Inconclusive  processing-p99 (latency) = -: no data",
        "  message    step 3/4: weight 25%; waiting for a passing analysis",
        "api        no rollout status yet",
    ]


def test_status_shows_a_pause_and_an_abort_with_its_reason() -> None:
    paused = rollout_status.RolloutStatus(
        phase="Paused", stable_revision="r1", canary_revision="r2", current_step=1, target_weight=5
    )
    aborted = rollout_status.RolloutStatus(
        phase="Degraded",
        stable_revision="r1",
        failed_revision="r3",
        abort_reason="GateFailed: dlq-bound 3 > 0",
    )
    text = cli.render(pipeline(processor=paused, api=aborted))
    assert "processor  Paused  step 2/4: paused until promoted" in text
    assert "api        Degraded\n" in text
    assert "  aborted    GateFailed: dlq-bound 3 > 0" in text
    assert "  failed     revision r3 (not rolled out again" in text


def test_status_of_a_pipeline_without_a_rollout_says_so() -> None:
    body = {"metadata": {"name": "demo", "namespace": "shop", "generation": 1}, "spec": {}}
    text = cli.render(body)
    assert "no spec.rollout: a template change updates a component in place" in text
    assert "processor  no rollout status yet" in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["promote", "demo"], ("promote", False, None)),
        (["promote", "demo", "--full", "--component", "api"], ("promote", True, "api")),
        (["-n", "shop", "abort", "demo"], ("abort", None, None)),
        (["retry", "demo", "-n", "shop", "--component", "processor"], ("retry", None, "processor")),
    ],
)
def test_command_line(argv: list[str], expected: tuple[str, Any, Any]) -> None:
    args = cli.parser().parse_args(argv)
    assert (args.command, getattr(args, "full", None), args.component) == expected
    assert args.name == "demo"
    if "shop" in argv:
        assert args.namespace == "shop"


def test_an_unknown_component_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as usage:
        cli.parser().parse_args(["promote", "demo", "--component", "db"])
    assert usage.value.code == 2
