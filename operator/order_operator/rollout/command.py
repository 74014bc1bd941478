"""A person's rollout command, read from the OrderPipeline's annotation. Pure.

`kubectl orderpipeline promote|abort|retry` (or `kubectl annotate`) writes the annotation
`order-pipeline.dev/rollout-command` with a JSON object:

    {"action": "promote", "component": "api", "id": "4f1c…"}

`action` is promote, promoteFull, abort or retry; `component` (optional) names the component to
act on, by default the one it concerns (the one rolling out; for retry, the one rolled back);
`id` makes each command distinct, so one read again on a later pass is carried out once (each
component's status remembers the last id it carried out).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

from order_operator.rollout import machine
from order_operator.rollout import spec as rollout_spec
from order_operator.rollout import status as rollout_status

ANNOTATION = "order-pipeline.dev/rollout-command"
ACTIONS: tuple[machine.Action, ...] = get_args(machine.Action)
_KEYS = ("action", "component", "id")
_MAX_ID = 128


class CommandError(ValueError):
    """The annotation is not a command; the message says why, for an Event."""


@dataclass(frozen=True)
class Request:
    action: machine.Action
    id: str
    component: rollout_spec.Component | None = None

    def to_json(self) -> str:
        data = {"action": self.action, "id": self.id}
        if self.component is not None:
            data["component"] = self.component
        return json.dumps(data, sort_keys=True)

    def targets(
        self, statuses: Mapping[rollout_spec.Component, rollout_status.RolloutStatus | None]
    ) -> tuple[rollout_spec.Component, ...]:
        """The components the command goes to. Without a component: those it concerns, else
        all of them, whose status then says (an Event) that it had nothing to act on."""
        if self.component is not None:
            return (self.component,)
        present = {c: s for c, s in statuses.items() if s is not None}
        if self.action == "retry":
            concerned = [c for c, s in present.items() if s.failed_revision is not None]
        else:
            concerned = [c for c, s in present.items() if s.rolling]
        ordered = concerned or list(statuses)
        return tuple(c for c in rollout_spec.COMPONENTS if c in ordered)

    def commands(
        self, statuses: Mapping[rollout_spec.Component, rollout_status.RolloutStatus | None]
    ) -> dict[rollout_spec.Component, machine.Command]:
        """`machine.Command` per component it goes to (see `targets`)."""
        return {c: machine.Command(self.action, id=self.id) for c in self.targets(statuses)}


def parse(text: str) -> Request:
    """The command in an annotation's value; `CommandError` says what is wrong with it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError(f"{ANNOTATION} is not JSON ({error.msg}): {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise CommandError(f"{ANNOTATION} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise CommandError(
            f"{ANNOTATION} has unknown key(s) {', '.join(unknown)}; known: {', '.join(_KEYS)}"
        )
    action = data.get("action")
    if action not in ACTIONS:
        raise CommandError(
            f"{ANNOTATION}: action must be one of {', '.join(ACTIONS)}, got {action!r}"
        )
    component = data.get("component")
    if component is not None and component not in rollout_spec.COMPONENTS:
        raise CommandError(
            f"{ANNOTATION}: component must be one of {', '.join(rollout_spec.COMPONENTS)},"
            f" got {component!r}"
        )
    command_id = data.get("id")
    if not isinstance(command_id, str) or not command_id.strip():
        raise CommandError(f"{ANNOTATION}: id must be a non-empty string, got {command_id!r}")
    if len(command_id) > _MAX_ID:
        raise CommandError(f"{ANNOTATION}: id is longer than {_MAX_ID} characters")
    return Request(action=action, id=command_id, component=component)


def from_annotations(annotations: Mapping[str, str] | None) -> Request | None:
    """The command on an object, None when it carries none; `CommandError` when malformed."""
    text = (annotations or {}).get(ANNOTATION)
    return None if text is None else parse(text)
