"""Condition logic: lastTransitionTime moves only on a flip; the summary says why."""

from __future__ import annotations

from order_operator import conditions

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"


def test_new_condition_gets_the_current_time_and_generation() -> None:
    (merged,) = conditions.merge(
        [], [conditions.Condition("QueuesReady", "True", "Converged")], generation=3, now=T0
    )
    assert merged == {
        "type": "QueuesReady",
        "status": "True",
        "reason": "Converged",
        "message": "",
        "observedGeneration": 3,
        "lastTransitionTime": T0,
    }


def test_transition_time_is_kept_when_only_reason_or_message_change() -> None:
    old = conditions.merge(
        [], [conditions.Condition("ScalingReady", "True", "Steady", "a")], generation=1, now=T0
    )
    (merged,) = conditions.merge(
        old, [conditions.Condition("ScalingReady", "True", "ScaleUp", "b")], generation=2, now=T1
    )
    assert merged["lastTransitionTime"] == T0
    assert (merged["reason"], merged["message"], merged["observedGeneration"]) == (
        "ScaleUp",
        "b",
        2,
    )


def test_transition_time_moves_when_status_flips() -> None:
    old = conditions.merge(
        [], [conditions.Condition("Ready", "False", "Progressing")], generation=1, now=T0
    )
    (merged,) = conditions.merge(
        old, [conditions.Condition("Ready", "True", "AllComponentsReady")], generation=1, now=T1
    )
    assert merged["lastTransitionTime"] == T1


def test_conditions_not_mentioned_are_kept_and_can_be_dropped_explicitly() -> None:
    old = conditions.merge(
        [],
        [
            conditions.Condition("DeletionBlocked", "True", "QueueNotEmpty"),
            conditions.Condition("Ready", "True", "AllComponentsReady"),
        ],
        generation=1,
        now=T0,
    )
    merged = conditions.merge(old, [], generation=2, now=T1)
    assert [entry["type"] for entry in merged] == ["DeletionBlocked", "Ready"]
    assert [entry["type"] for entry in conditions.without(merged, "DeletionBlocked")] == ["Ready"]


def all_true() -> list[conditions.Condition]:
    return [conditions.Condition(kind, "True", "Fine") for kind in conditions.COMPONENT_TYPES]


def test_ready_is_true_only_when_every_component_is() -> None:
    assert conditions.summary(all_true()).status == "True"
    broken = [*all_true()[:1], conditions.Condition("TablesReady", "False", "Creating", "x")]
    broken += all_true()[2:]
    summary = conditions.summary(broken)
    assert (summary.status, summary.reason) == ("False", "Creating")
    assert summary.message == "TablesReady: x"


def test_ready_is_unknown_while_a_component_was_never_observed() -> None:
    assert conditions.summary(all_true()[:2]).status == "Unknown"


def test_workloads_available_needs_both_api_and_processor() -> None:
    ready = conditions.workloads_condition(
        api_ready=2, api_wanted=2, processor_ready=0, processor_wanted=0
    )
    waiting = conditions.workloads_condition(
        api_ready=2, api_wanted=2, processor_ready=3, processor_wanted=10
    )
    assert ready.status == "True"
    assert waiting.status == "False"
    assert "processor 3/10" in waiting.message
