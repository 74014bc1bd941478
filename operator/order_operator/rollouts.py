"""Canary rollouts in a reconcile pass: read what the state machine needs, run it, carry out
its plan. The machine (`rollout.machine`) is pure; this module is its I/O.

A pass, for a pipeline with `spec.rollout`:

1. Before the children are applied, `hold_stable_templates` keeps each stable Deployment at
   the revision the rollout status says is stable: while a canary runs (or after an abort) the
   spec asks for a template the stable side must not take yet.
2. After the children and the scaler's decision, `step` reads each component's inputs (the
   live Deployments, the scaler's count, the analysis from Prometheus once per interval, the
   command annotation), runs `machine.advance_all`, and carries out each plan: the canary
   Deployment at its replicas, the processor's stable replicas (the scaler's count minus the
   canary's places), and on promotion the stable Deployment at the new template at once.
3. A canary the plan no longer wants goes to zero pods once the stable Deployment has rolled
   out, so capacity never dips on promotion; after an abort that is at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import urllib3

from order_operator import analysis, builders, decide
from order_operator.kube import Kube
from order_operator.rollout import command, judge, machine
from order_operator.rollout import spec as rollout_spec
from order_operator.rollout import status as rollout_status
from order_operator.rollout.status import RolloutStatus
from order_operator.v1alpha1 import spec as v1alpha1

# How soon to look again while a rollout runs: shares and pauses move on a scale of seconds.
ROLLING_RETRY_SECONDS = 5.0
# The judge pools the intervals since the step began, up to this many: a long step's early
# minutes, at a weight since left, would dilute what the canary does now.
MAX_WINDOW_INTERVALS = 10


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any] | None
    """`status.rollout`: one object per component; None removes it."""
    events: tuple[decide.Event, ...]
    retry_after: float | None


def previous_statuses(body: Mapping[str, Any]) -> dict[rollout_spec.Component, RolloutStatus]:
    """The rollout status the last pass wrote, per component: the rollout's only memory."""
    written = ((body.get("status") or {}).get("rollout")) or {}
    found: dict[rollout_spec.Component, RolloutStatus] = {}
    for component in rollout_spec.COMPONENTS:
        data = written.get(component)
        if data:
            found[component] = RolloutStatus.from_dict(data)
    return found


def _spec_revision(
    owner: builders.Owner, spec: v1alpha1.OrderPipelineSpec, component: rollout_spec.Component
) -> str:
    return builders.template_revision(builders.pod_template(owner, spec, component))


def _live(kube: Kube, owner: builders.Owner, component: rollout_spec.Component) -> Any:
    return kube.read_deployment(owner.namespace, builders.deployment_name(owner, component))


def hold_stable_templates(
    children: Sequence[dict[str, Any]],
    *,
    kube: Kube,
    owner: builders.Owner,
    spec: v1alpha1.OrderPipelineSpec,
    body: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The children to apply, each stable Deployment at the template of the revision the
    rollout status says is stable: the spec's, or while a rollout runs (or after an abort)
    the one the live Deployment recorded, which the apply then leaves as it is."""
    if spec.rollout is None:
        return list(children)
    previous = previous_statuses(body)
    held: list[dict[str, Any]] = []
    for child in children:
        component = _stable_component(child)
        if component is None:
            held.append(child)
            continue
        live = _live(kube, owner, component)
        status = previous.get(component)
        stable = status.stable_revision if status is not None else builders.running_revision(live)
        if stable is None:  # the first creation, or a Deployment from before revisions
            held.append(child)
            continue
        held.append(
            builders.build_stable_deployment(
                owner, spec, component, stable_revision=stable, live=live
            )
        )
    return held


def _stable_component(child: Mapping[str, Any]) -> rollout_spec.Component | None:
    if child["kind"] != "Deployment":
        return None
    component = child["metadata"]["labels"][builders.COMPONENT_LABEL]
    return component if component in rollout_spec.COMPONENTS else None


@dataclass
class Memory:
    """What the rollout step remembers between passes besides status (kopf memo)."""

    rejected_command: str | None = None
    """The last annotation refused, so its Warning is posted once, not on every pass."""
    pool: urllib3.PoolManager = field(default_factory=urllib3.PoolManager)
    """Connections to Prometheus, kept between passes."""


def _commands(
    body: Mapping[str, Any],
    previous: Mapping[rollout_spec.Component, RolloutStatus],
    memory: Memory,
    events: list[decide.Event],
) -> dict[rollout_spec.Component, machine.Command]:
    annotations = body["metadata"].get("annotations") or {}
    try:
        request = command.from_annotations(annotations)
    except command.CommandError as error:
        text = annotations.get(command.ANNOTATION)
        if text != memory.rejected_command:
            memory.rejected_command = text
            events.append(decide.Event("Warning", "InvalidCommand", str(error)))
        return {}
    if request is None:
        return {}
    statuses = {c: previous.get(c) for c in rollout_spec.COMPONENTS}
    return request.commands(statuses)


def step(
    *,
    kube: Kube,
    owner: builders.Owner,
    spec: v1alpha1.OrderPipelineSpec,
    body: Mapping[str, Any],
    processor_desired: int | None,
    generation: int,
    memory: Memory,
    now: float | None = None,
) -> Outcome | None:
    """One rollout pass over both components; None when the spec asks for no rollouts and
    none was ever written."""
    rollout = spec.rollout
    previous = previous_statuses(body)
    if rollout is None:
        if not previous:
            return None
        # Rollouts switched off: no canary stays behind, and their status goes.
        for component in previous:
            _stop_canary(kube, owner, component)
        return Outcome(status=None, events=(), retry_after=None)
    now = time.time() if now is None else now
    events: list[decide.Event] = []
    commands = _commands(body, previous, memory, events)
    inputs: dict[rollout_spec.Component, machine.Inputs] = {}
    for component in rollout_spec.COMPONENTS:
        stable_revision = builders.running_revision(_live(kube, owner, component))
        state = kube.deployment_state(owner.namespace, builders.deployment_name(owner, component))
        status = previous.get(component)
        desired = state.spec_replicas
        if component == "processor":
            # Without the scaler's decision (no queue depth this pass), keep today's total.
            canary = kube.deployment_state(
                owner.namespace, builders.deployment_name(owner, component, builders.CANARY)
            )
            desired = (
                processor_desired
                if processor_desired is not None
                else (state.spec_replicas + canary.spec_replicas)
            )
        reading, share = _analyse(memory, rollout, component, status, now)
        inputs[component] = machine.Inputs(
            component=component,
            revision=_spec_revision(owner, spec, component),
            stable_revision=stable_revision,
            previous=status,
            desired_replicas=desired,
            concurrency=spec.processor.concurrency,
            replica_limit=spec.api.autoscaling.max_replicas if component == "api" else None,
            analysis=reading,
            observed_share=share,
            command=commands.get(component),
        )
    decisions = machine.advance_all(rollout, inputs, now=now, generation=generation)
    for component, decision in decisions.items():
        _carry_out(kube, owner, spec, component, decision.plan)
        events.extend(decide.Event(e.type, e.reason, e.message) for e in decision.events)
    rolling = any(d.status.rolling for d in decisions.values())
    return Outcome(
        status={c: d.status.to_dict() for c, d in decisions.items()},
        events=tuple(events),
        retry_after=ROLLING_RETRY_SECONDS if rolling else None,
    )


def _analyse(
    memory: Memory,
    rollout: rollout_spec.RolloutSpec,
    component: rollout_spec.Component,
    status: RolloutStatus | None,
    now: float,
) -> tuple[rollout_status.Analysis | None, float | None]:
    """The canary's analysis and observed share, read once per interval while it runs, over
    the intervals since its step began; between readings, the share last observed."""
    spec = rollout.analysis
    if status is None or not status.rolling or spec is None or status.canary_revision is None:
        return None, None
    last = status.last_analysis
    started = status.step_started_at if status.step_started_at is not None else now
    if now - started < spec.interval_seconds or (
        last is not None and now - last.at < spec.interval_seconds
    ):
        # A window reaching back before the step began would judge the previous weight.
        return None, status.observed_share
    intervals = max(1, min(int((now - started) // spec.interval_seconds), MAX_WINDOW_INTERVALS))
    # Each track by its revision: unique to this pipeline, whatever else Prometheus scrapes.
    revisions = rollout_spec.Revisions(canary=status.canary_revision, stable=status.stable_revision)
    window = analysis.read(
        spec, component, revisions=revisions, intervals=intervals, at=now, pool=memory.pool
    )
    result = judge.judge(
        spec.checks(component),
        window.readings,
        min_samples=spec.min_samples,
        revisions=revisions,
        interval_seconds=spec.interval_seconds,
        window_seconds=spec.interval_seconds * intervals,
    )
    return rollout_status.Analysis(at=now, result=result), window.observed_share


def _stop_canary(kube: Kube, owner: builders.Owner, component: rollout_spec.Component) -> None:
    """The canary to zero pods; its Deployment stays (the operator never deletes: its children
    go with the OrderPipeline) with the last canary's template."""
    name = builders.deployment_name(owner, component, builders.CANARY)
    if kube.deployment_state(owner.namespace, name).spec_replicas > 0:
        kube.scale_deployment(owner.namespace, name, 0)


def _carry_out(
    kube: Kube,
    owner: builders.Owner,
    spec: v1alpha1.OrderPipelineSpec,
    component: rollout_spec.Component,
    plan: machine.Plan,
) -> None:
    name = builders.deployment_name(owner, component)
    template = builders.pod_template(owner, spec, component)
    if plan.promote:
        # The stable side takes the canary's template now; the canary stays until it has.
        kube.apply(builders.build_deployment(owner, component, template))
    if plan.canary_revision is not None:
        kube.apply(
            builders.build_canary_deployment(
                owner,
                component,
                template,
                replicas=plan.canary_replicas,
                concurrency=plan.canary_concurrency,
            )
        )
    else:
        stable = kube.deployment_state(owner.namespace, name)
        rolled_out = (
            not plan.promote
            and stable.observed_current
            and stable.updated_replicas >= stable.spec_replicas
            and stable.ready_replicas >= stable.spec_replicas
        )
        if rolled_out:
            _stop_canary(kube, owner, component)
    if plan.stable_replicas is not None:
        current = kube.deployment_state(owner.namespace, name)
        if current.exists and current.spec_replicas != plan.stable_replicas:
            kube.scale_deployment(owner.namespace, name, plan.stable_replicas)
