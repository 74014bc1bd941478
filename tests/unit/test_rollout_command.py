"""The rollout command annotation: parsed into a machine command per component, or refused
with a message an Event can carry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from order_operator.rollout import command, machine
from order_operator.rollout import status as rollout_status
from order_operator.v1alpha1 import spec as v1alpha1

ROLLING = rollout_status.RolloutStatus(
    phase="Progressing", stable_revision="r1", canary_revision="r2", current_step=0
)
STABLE = rollout_status.RolloutStatus(phase="Healthy", stable_revision="r1")
ROLLED_BACK = rollout_status.RolloutStatus(
    phase="Degraded", stable_revision="r1", failed_revision="r2", abort_reason="GateFailed: x"
)


def test_the_annotation_key_is_under_the_api_group() -> None:
    assert f"{v1alpha1.GROUP}/rollout-command" == command.ANNOTATION


@pytest.mark.parametrize("action", ["promote", "promoteFull", "abort", "retry"])
def test_every_action_parses_with_and_without_a_component(action: str) -> None:
    parsed = command.parse(json.dumps({"action": action, "id": "c1"}))
    assert parsed == command.Request(action, id="c1")  # type: ignore[arg-type]
    named = command.parse(json.dumps({"action": action, "component": "api", "id": "c2"}))
    assert named.component == "api"
    assert command.parse(named.to_json()) == named


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("promote", "is not JSON"),
        ("", "is not JSON"),
        ('["promote"]', "must be a JSON object, got list"),
        ('{"action": "rollback", "id": "1"}', "action must be one of promote, promoteFull"),
        ('{"id": "1"}', "action must be one of"),
        ('{"action": "promote", "component": "db", "id": "1"}', "component must be one of"),
        ('{"action": "promote"}', "id must be a non-empty string, got None"),
        ('{"action": "promote", "id": ""}', "id must be a non-empty string"),
        ('{"action": "promote", "id": 7}', "id must be a non-empty string, got 7"),
        ('{"action": "promote", "id": "' + "x" * 129 + '"}', "longer than 128"),
        ('{"action": "promote", "id": "1", "compnent": "api"}', "unknown key(s) compnent"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_the_annotation(text: str, says: str) -> None:
    with pytest.raises(command.CommandError) as refused:
        command.parse(text)
    assert says in str(refused.value)
    assert command.ANNOTATION in str(refused.value)


def test_without_a_component_the_command_goes_to_the_one_rolling() -> None:
    promote = command.parse('{"action": "promote", "id": "p"}')
    commands = promote.commands({"processor": STABLE, "api": ROLLING})
    assert commands == {"api": machine.Command("promote", id="p")}


def test_without_a_component_retry_goes_to_the_one_rolled_back() -> None:
    retry = command.parse('{"action": "retry", "id": "r"}')
    assert retry.targets({"processor": ROLLED_BACK, "api": STABLE}) == ("processor",)
    # The blocked API is not rolling; only the processor has a revision to retry.
    blocked = rollout_status.RolloutStatus(phase="Paused", stable_revision="r1")
    assert retry.targets({"processor": ROLLED_BACK, "api": blocked}) == ("processor",)


def test_a_command_that_concerns_no_component_goes_to_all_in_rollout_order() -> None:
    """Each then records it as handled and says in an Event that it had nothing to act on."""
    abort = command.parse('{"action": "abort", "id": "a"}')
    assert abort.targets({"api": STABLE, "processor": None}) == ("processor", "api")


def test_a_named_component_gets_the_command_whatever_its_phase() -> None:
    abort = command.parse('{"action": "abort", "component": "processor", "id": "a"}')
    assert abort.commands({"processor": STABLE, "api": ROLLING}) == {
        "processor": machine.Command("abort", id="a")
    }


def test_annotations_without_the_command_give_none() -> None:
    assert command.from_annotations(None) is None
    assert command.from_annotations({"other": "x"}) is None
    found = command.from_annotations({command.ANNOTATION: '{"action": "abort", "id": "z"}'})
    assert found == command.Request("abort", id="z")


def test_the_parsed_command_drives_the_machine_once() -> None:
    """End to end in the pure core: the annotation's promote completes a paused step, and the
    same annotation read again on the next pass does nothing more."""
    spec = v1alpha1.OrderPipelineSpec.model_validate(
        {
            "queue": {"name": "q"},
            "tables": {"prefix": "p"},
            "api": {"image": "a"},
            "processor": {"image": "b"},
            "rollout": {"steps": [{"pause": {}}, {"pause": {}}, {"weight": 50}]},
        }
    ).rollout
    assert spec is not None

    def run(previous: rollout_status.RolloutStatus | None, cmd: machine.Command | None) -> Any:
        inputs = machine.Inputs(
            component="processor",
            revision="r2",
            stable_revision="r1",
            previous=previous,
            desired_replicas=4,
            command=cmd,
        )
        return machine.advance(spec, inputs, now=1000.0, generation=1)

    paused = run(None, None).status
    assert (paused.phase, paused.current_step) == ("Paused", 0)
    request = command.parse('{"action": "promote", "id": "once"}')
    (cmd,) = request.commands({"processor": paused, "api": None}).values()
    promoted = run(paused, cmd).status
    assert (promoted.phase, promoted.current_step) == ("Paused", 1)
    again = run(promoted, cmd)
    assert again.status.current_step == 1
    assert [e.reason for e in again.events] == []
