"""The canary rollout state machine of one component, pure, with the clock passed in.

Each pass takes the spec, the revision the spec asks for, the stable side's revision, the
previous status (the only memory: an operator restarted mid-rollout continues from it), the
judge's latest result, the observed share, the scaler's size, a command and the time, and
returns the new status, the plan for the canary and stable sides, and the Events to emit.

- The first creation starts nothing: with no stable side yet, the template becomes stable.
- A new revision starts at step 0. A weight step completes when an analysis that covers a
  whole interval at that weight passes (and, for the API, when the observed share of
  requests is near the planned one); a timed pause completes when its time is up and the
  analysis passes; an indefinite pause only on `promote`. After the last step (or at a
  weight of 100) the canary is promoted: it becomes the stable revision.
- Abort (a gate breach, more failed comparisons than failureLimit, a step held longer than
  progressDeadlineSeconds, or the `abort` command) sends the canary to zero, marks the phase
  Degraded and remembers the revision, which is not rolled out again until the template
  changes or `retry`.
- Commands carry an id; status remembers the last one carried out, so a command read again
  after a restart is not carried out twice.

Components roll one at a time in `spec.order` (`advance_all`): one waits while another
rolls, and a component whose predecessor in the order aborted does not start (Paused, as a
person must act). Rolling back the API and the processor together means exactly that: an
abort stops the whole pipeline's rollout where it is. An earlier component already promoted
stays promoted when a later one aborts: readers roll before writers, so the promoted
processor was proven reading what the stable API writes, which is what runs again after the
API's abort; rolling the processor back too would put an older reader before messages the
API canary may already have written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from order_operator import conditions
from order_operator.rollout import judge, shares
from order_operator.rollout import spec as rollout_spec
from order_operator.rollout import status as rollout_status
from order_operator.rollout.status import (
    DEGRADED,
    HEALTHY,
    PAUSED,
    PROGRESSING,
    RolloutStatus,
)

Component = rollout_spec.Component
Action = Literal["promote", "promoteFull", "abort", "retry"]


@dataclass(frozen=True)
class Command:
    """A person's command (the wiring reads it from an annotation): `promote` completes the
    current step, `promoteFull` promotes at once, `abort` rolls back, `retry` rolls out an
    aborted revision again."""

    action: Action
    id: str


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Inputs:
    """What one pass knows about one component."""

    component: Component
    revision: str
    """The pod-template revision the spec asks for now."""
    stable_revision: str | None
    """The revision the stable Deployment runs; None when it does not exist yet. Read only
    when there is no previous status."""
    previous: RolloutStatus | None
    desired_replicas: int
    """API: the stable side's current replicas (the HPA's). Processor: the pods the
    queue-depth scaler asks for."""
    concurrency: int = 1
    """Processor: each stable pod's receive concurrency."""
    canary_concurrency: int | None = None
    """Processor: the most a canary pod may run (the new template's); default the stable's."""
    replica_limit: int | None = None
    """API: the most canary replicas (the HPA's maximum)."""
    analysis: rollout_status.Analysis | None = None
    """The judge's latest result; one already seen in status is not counted twice."""
    observed_share: float | None = None
    """The fraction of requests (API) or messages (processor) the canary got last window."""
    command: Command | None = None


@dataclass(frozen=True)
class Plan:
    """What the wiring makes true for one component."""

    stable_revision: str
    """The template the stable Deployment runs; when it is not the spec's, its template is
    left as it is."""
    canary_revision: str | None
    canary_replicas: int
    canary_concurrency: int | None
    """Processor: each canary pod's receive concurrency."""
    stable_replicas: int | None
    """Processor: the stable pods (the scaler's count minus the places the canary took). API:
    None, the HPA keeps owning them."""
    planned_share: float
    promote: bool = False
    """The stable Deployment takes the canary's template now. The plan has no canary from
    here on; the wiring keeps the canary's pods until the stable Deployment has rolled out,
    so capacity never dips."""


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus
    plan: Plan
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Hold:
    """Why a component may not start its rollout now."""

    message: str
    blocked: bool
    """A predecessor aborted: a person must act (Paused), rather than just wait."""


def _describe(spec: rollout_spec.RolloutSpec, index: int) -> str:
    step = spec.steps[index]
    where = f"step {index + 1}/{len(spec.steps)}"
    if step.weight is not None:
        return f"{where}: weight {step.weight}%"
    assert step.pause is not None
    if step.pause.duration is None:
        return f"{where}: paused until promoted"
    return f"{where}: paused for {step.pause.duration}s"


class _Pass:
    """One pass's working state: the status as it evolves and the events it produces."""

    def __init__(
        self, spec: rollout_spec.RolloutSpec, inputs: Inputs, *, now: float, generation: int
    ) -> None:
        self.spec = spec
        self.inputs = inputs
        self.now = now
        self.generation = generation
        self.events: list[Event] = []
        self.promoted = False
        self.rolled_back: conditions.Condition | None = None
        previous = inputs.previous
        if previous is None:
            stable = inputs.stable_revision or inputs.revision
            previous = RolloutStatus(phase=HEALTHY, stable_revision=stable)
        self.status = previous

    @property
    def name(self) -> str:
        return self.inputs.component

    def update(self, **changes: object) -> None:
        self.status = dataclasses.replace(self.status, **changes)  # type: ignore[arg-type]

    def event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, f"{self.name}: {message}"))

    # Transitions

    def settle(self, message: str) -> None:
        self.update(
            phase=HEALTHY,
            canary_revision=None,
            current_step=None,
            target_weight=0,
            step_started_at=None,
            observed_share=None,
            abort_reason=None,
            message=message,
        )
        self.rolled_back = conditions.Condition(rollout_status.ROLLED_BACK, "False", "Stable")

    def start(self) -> None:
        self.update(
            canary_revision=self.inputs.revision,
            failures=0,
            abort_reason=None,
            observed_share=None,
        )
        self.rolled_back = conditions.Condition(
            rollout_status.ROLLED_BACK, "False", "RolloutStarted"
        )
        self.event(
            "Normal",
            "RolloutStarted",
            f"rolling out revision {self.inputs.revision} over {self.status.stable_revision}",
        )
        self.enter(0)

    def enter(self, index: int) -> None:
        """Go to a step; past the last one, or at a weight of 100, promote."""
        steps = self.spec.steps
        if index >= len(steps) or steps[index].weight == shares.FULL:
            self.promote(
                "all steps completed" if index >= len(steps) else _describe(self.spec, index)
            )
            return
        pause = steps[index].pause
        self.update(
            phase=PAUSED if pause is not None else PROGRESSING,
            current_step=index,
            target_weight=self.spec.weight_at(index),
            step_started_at=self.now,
            message=_describe(self.spec, index),
        )
        reason = "Paused" if pause is not None else "StepStarted"
        self.event("Normal", reason, _describe(self.spec, index))

    def promote(self, why: str) -> None:
        revision = self.status.canary_revision
        assert revision is not None
        self.event("Normal", "Promoted", f"revision {revision} is stable ({why})")
        self.promoted = True
        self.update(stable_revision=revision)
        self.settle(f"revision {revision} promoted ({why})")
        self.rolled_back = conditions.Condition(rollout_status.ROLLED_BACK, "False", "Promoted")

    def abort(self, reason: str, message: str) -> None:
        revision = self.status.canary_revision
        self.event(
            "Warning",
            "RolloutAborted",
            f"revision {revision} rolled back to {self.status.stable_revision}: {message}",
        )
        self.update(
            phase=DEGRADED,
            canary_revision=None,
            current_step=None,
            target_weight=0,
            step_started_at=None,
            abort_reason=f"{reason}: {message}",
            failed_revision=revision,
            message=f"revision {revision} rolled back: {message}",
        )
        self.rolled_back = conditions.Condition(rollout_status.ROLLED_BACK, "True", reason, message)

    # The pass

    def run(self, hold: Hold | None) -> None:
        inputs, status = self.inputs, self.status
        command = inputs.command
        if command is not None and command.id == status.handled_command:
            command = None
        if command is not None:
            self.update(handled_command=command.id)

        if inputs.revision == status.stable_revision:
            if status.rolling:
                self.event(
                    "Normal",
                    "RolloutCanceled",
                    f"the template is back to stable revision {status.stable_revision}",
                )
            if status.phase != HEALTHY or status.rolling:
                self.settle(f"revision {status.stable_revision} is stable")
            self.ignore(command)
            return
        if inputs.component not in self.spec.order:
            self.update(canary_revision=inputs.revision)
            self.promote("not in the rollout order: updated in place")
            return
        if status.rolling and status.canary_revision != inputs.revision:
            self.event(
                "Normal",
                "RolloutRestarted",
                f"revision {inputs.revision} replaces canary {status.canary_revision}",
            )
            self.start()
            self.ignore(command)
            return
        if not status.rolling:
            self.begin(command, hold)
            return
        self.proceed(command)

    def ignore(self, command: Command | None) -> None:
        if command is not None:
            self.event(
                "Normal",
                "CommandIgnored",
                f"{command.action} has nothing to act on in phase {self.status.phase}",
            )

    def begin(self, command: Command | None, hold: Hold | None) -> None:
        """No rollout runs and the template differs from stable: start one, unless the
        revision is the one that failed or another component goes first."""
        revision = self.inputs.revision
        if revision == self.status.failed_revision:
            if command is None or command.action != "retry":
                self.ignore(command)
                if self.status.phase != DEGRADED:
                    self.update(phase=DEGRADED)
                return
            self.event("Normal", "RolloutRetried", f"retrying revision {revision}")
            self.update(failed_revision=None)
        elif command is not None:
            self.ignore(command)
        if hold is not None:
            phase = PAUSED if hold.blocked else PROGRESSING
            if (self.status.phase, self.status.message) != (phase, hold.message):
                self.event("Normal", "Blocked" if hold.blocked else "Waiting", hold.message)
            self.update(
                phase=phase,
                canary_revision=None,
                current_step=None,
                target_weight=0,
                step_started_at=None,
                message=hold.message,
            )
            return
        self.start()

    def proceed(self, command: Command | None) -> None:
        """A rollout runs: commands first, then the analysis, then the step."""
        if command is not None:
            if command.action == "abort":
                self.abort("AbortedByCommand", "aborted on command")
                return
            if command.action == "promoteFull":
                self.promote("promoted in full on command")
                return
            if command.action == "promote":
                self.complete("on command")
                return
            self.ignore(command)
        self.update(observed_share=self.inputs.observed_share)
        if self.judge():
            return
        index = self.status.current_step
        started = self.status.step_started_at
        assert index is not None
        assert started is not None
        step = self.spec.steps[index]
        analysed = self.analysis_passed(started)
        if step.weight is not None:
            waiting = [why for why in (analysed, self.share_reached(), self.room()) if why]
            if not waiting:
                self.complete("passed")
                return
            held_since: float | None = started
        else:
            assert step.pause is not None
            duration = step.pause.duration
            if duration is None:
                return
            held_since = started + duration
            if self.now < held_since:
                waiting = [f"the pause to end at {rollout_status.to_iso(held_since)}"]
            else:
                waiting = [why for why in (analysed,) if why]
            if not waiting:
                self.complete("pause over")
                return
        self.update(message=f"{_describe(self.spec, index)}; waiting for {', '.join(waiting)}")
        deadline = self.spec.progress_deadline_seconds
        if held_since is not None and self.now - held_since > deadline:
            self.abort(
                "ProgressDeadlineExceeded",
                f"{_describe(self.spec, index)} held over {deadline}s waiting for "
                f"{', '.join(waiting)}",
            )

    def complete(self, why: str) -> None:
        index = self.status.current_step
        assert index is not None
        self.event("Normal", "StepCompleted", f"{_describe(self.spec, index)} completed ({why})")
        self.enter(index + 1)

    def judge(self) -> bool:
        """Take in a new analysis result; True when it aborted the rollout."""
        analysis = self.inputs.analysis
        last = self.status.last_analysis
        if analysis is None or (last is not None and analysis.at <= last.at):
            return False
        self.update(last_analysis=analysis)
        result = analysis.result
        if result.gate_failed:
            self.abort("GateFailed", result.summary())
            return True
        if result.verdict == judge.FAIL:
            failures = self.status.failures + 1
            self.update(failures=failures)
            limit = self.spec.analysis.failure_limit if self.spec.analysis else 0
            if failures > limit:
                self.abort(
                    "AnalysisFailed",
                    f"failed {failures} time(s), failureLimit {limit}: {result.summary()}",
                )
                return True
            self.event(
                "Warning",
                "AnalysisFailed",
                f"analysis failed ({failures} of {limit} tolerated): {result.summary()}",
            )
        return False

    def analysis_passed(self, started: float) -> str:
        """Empty when a passing analysis covers a whole interval since the step began (or when
        nothing judges this component); else what is missing."""
        analysis = self.spec.analysis
        if analysis is None or analysis.checks(self.inputs.component).empty:
            return ""
        last = self.status.last_analysis
        if last is None or last.at < started + analysis.interval_seconds:
            return "a full analysis interval at this step"
        if last.result.verdict != judge.PASS:
            return f"a passing analysis ({last.result.verdict}: {last.result.summary()})"
        return ""

    def share_reached(self) -> str:
        """Empty when the API's observed share is within tolerance of the planned one; the
        processor's share follows its concurrency, so it does not gate. Without an analysis
        there is no Prometheus to observe it: the planned share stands."""
        if self.inputs.component != "api" or self.spec.analysis is None:
            return ""
        planned = plan_for(self.status, self.inputs).planned_share
        observed = self.inputs.observed_share
        if observed is None:
            return "an observed share"
        if abs(observed - planned) > self.spec.api_share_tolerance * planned:
            return f"the observed share {observed:.1%} to approach {planned:.1%}"
        return ""

    def room(self) -> str:
        """Empty when the step's weight has a canary pod; a single desired processor pod
        leaves no room for one without exceeding the scaler's total."""
        if plan_for(self.status, self.inputs).canary_replicas > 0:
            return ""
        return f"room for a canary pod (the scaler asks for {self.inputs.desired_replicas})"

    def decision(self) -> Decision:
        plan = plan_for(self.status, self.inputs, promote=self.promoted)
        if self.status.rolling:
            self.update(planned_share=plan.planned_share)
        else:
            self.update(planned_share=None)
        progressing = self.status.phase in (PROGRESSING, PAUSED)
        reason = {
            HEALTHY: "Stable",
            DEGRADED: "RolledBack",
            PAUSED: "Blocked" if not self.status.rolling else "Paused",
            PROGRESSING: "Progressing" if self.status.rolling else "Waiting",
        }[self.status.phase]
        updates = [
            conditions.Condition(
                rollout_status.ROLLOUT_PROGRESSING,
                "True" if progressing else "False",
                reason,
                self.status.message,
            )
        ]
        if self.rolled_back is not None:
            updates.append(self.rolled_back)
        merged = conditions.merge(
            self.status.conditions,
            updates,
            generation=self.generation,
            now=rollout_status.to_iso(self.now),
        )
        self.update(conditions=tuple(merged))
        return Decision(status=self.status, plan=plan, events=tuple(self.events))


def plan_for(status: RolloutStatus, inputs: Inputs, *, promote: bool = False) -> Plan:
    """The replicas and concurrency a status asks for: the canary at its step's weight while
    a rollout runs; otherwise no canary and the stable side at the scaler's size."""
    desired = max(inputs.desired_replicas, 0)
    processor = inputs.component == "processor"
    if not status.rolling:
        return Plan(
            stable_revision=status.stable_revision,
            canary_revision=None,
            canary_replicas=0,
            canary_concurrency=None,
            stable_replicas=desired if processor else None,
            planned_share=0.0,
            promote=promote,
        )
    weight = status.target_weight
    if processor:
        split = shares.processor_split(
            weight, desired, inputs.concurrency, canary_concurrency=inputs.canary_concurrency
        )
        return Plan(
            stable_revision=status.stable_revision,
            canary_revision=status.canary_revision,
            canary_replicas=split.canary_pods,
            canary_concurrency=split.canary_concurrency,
            stable_replicas=split.stable_pods,
            planned_share=split.share,
        )
    canary = shares.api_canary_replicas(weight, desired, limit=inputs.replica_limit)
    return Plan(
        stable_revision=status.stable_revision,
        canary_revision=status.canary_revision,
        canary_replicas=canary,
        canary_concurrency=None,
        stable_replicas=None,
        planned_share=shares.share(canary, desired),
    )


def advance(
    spec: rollout_spec.RolloutSpec,
    inputs: Inputs,
    *,
    now: float,
    generation: int,
    hold: Hold | None = None,
) -> Decision:
    """One pass of one component; `hold` says why it may not start a rollout now."""
    step = _Pass(spec, inputs, now=now, generation=generation)
    step.run(hold)
    return step.decision()


def _settled(inputs: Inputs, status: RolloutStatus) -> bool:
    return status.phase == HEALTHY and inputs.revision == status.stable_revision


def _hold(
    spec: rollout_spec.RolloutSpec,
    component: Component,
    inputs: Mapping[Component, Inputs],
    decided: Mapping[Component, Decision],
) -> Hold | None:
    if component not in spec.order:
        return None
    for other, other_inputs in inputs.items():
        if other == component:
            continue
        decision = decided.get(other)
        status = decision.status if decision is not None else other_inputs.previous
        if status is not None and status.rolling:
            return Hold(f"waits for the {other}'s rollout", blocked=False)
    for earlier in spec.order[: spec.order.index(component)]:
        decision = decided.get(earlier)
        if decision is None or _settled(inputs[earlier], decision.status):
            continue
        if decision.status.phase == DEGRADED or (
            decision.status.phase == PAUSED and not decision.status.rolling
        ):
            return Hold(
                f"blocked: the {earlier}'s rollout did not complete "
                f"({decision.status.message}); fix or retry it first",
                blocked=True,
            )
        return Hold(f"waits for the {earlier} to roll out first", blocked=False)
    return None


def advance_all(
    spec: rollout_spec.RolloutSpec,
    inputs: Mapping[Component, Inputs],
    *,
    now: float,
    generation: int,
) -> dict[Component, Decision]:
    """One pass of every component, in the rollout order (the others after)."""
    ordered = [c for c in spec.order if c in inputs] + [c for c in inputs if c not in spec.order]
    decided: dict[Component, Decision] = {}
    for component in ordered:
        hold = _hold(spec, component, inputs, decided)
        decided[component] = advance(
            spec, inputs[component], now=now, generation=generation, hold=hold
        )
    return decided
