"""The rollout state machine with a fake clock.

Every pass below goes through the status's camelCase dict and back (as the wiring will write
it into the OrderPipeline and read it after a restart), so each test also proves that status
is the only memory the machine needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from order_operator.rollout import judge, machine
from order_operator.rollout import spec as rollout_spec
from order_operator.rollout import status as rollout_status
from order_operator.rollout.status import RolloutStatus
from order_operator.v1alpha1 import crd

T0 = 1_800_000_000.0
OLD, NEW, NEWER = "rev-old", "rev-new", "rev-newer"
INTERVAL = 60
ANALYSIS = {"prometheus": {"address": "http://prometheus:9090"}, "intervalSeconds": INTERVAL}


def rollout(steps: Sequence[dict[str, Any]], **fields: Any) -> rollout_spec.RolloutSpec:
    return rollout_spec.RolloutSpec.model_validate({"steps": list(steps), **fields})


THREE_STEPS = rollout(
    [{"weight": 5}, {"pause": {"duration": 60}}, {"weight": 50}],
    analysis={**ANALYSIS, "failureLimit": 0},
)


def measured(verdict: judge.Verdict, *, kind: judge.Kind = "errorRatio") -> judge.Result:
    measure = judge.Measure("check", kind, "q", 0.1, verdict, f"{verdict.lower()} detail")
    return judge.combine([measure])


def analysis(at: float, verdict: judge.Verdict = "Pass", **kw: Any) -> rollout_status.Analysis:
    return rollout_status.Analysis(at=at, result=measured(verdict, **kw))


class Pipeline:
    """One component driven pass by pass, its status persisted as the CRD would hold it."""

    def __init__(
        self,
        spec: rollout_spec.RolloutSpec,
        component: rollout_spec.Component = "processor",
        *,
        stable: str | None = OLD,
        saved: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.component = component
        self.stable = stable
        self.saved = saved
        self.now = T0

    @property
    def status(self) -> RolloutStatus:
        assert self.saved is not None
        return RolloutStatus.from_dict(self.saved)

    def inputs(self, revision: str, **fields: Any) -> machine.Inputs:
        previous = None if self.saved is None else RolloutStatus.from_dict(self.saved)
        values: dict[str, Any] = {"desired_replicas": 10, "concurrency": 40, **fields}
        return machine.Inputs(
            component=self.component,
            revision=revision,
            stable_revision=self.stable,
            previous=previous,
            **values,
        )

    def run(self, revision: str, *, at: float | None = None, **fields: Any) -> machine.Decision:
        if at is not None:
            self.now = T0 + at
        decision = machine.advance(
            self.spec, self.inputs(revision, **fields), now=self.now, generation=1
        )
        self.saved = json.loads(json.dumps(decision.status.to_dict()))
        return decision


def reasons(decision: machine.Decision) -> list[str]:
    return [event.reason for event in decision.events]


def condition(status: RolloutStatus, kind: str) -> tuple[str, str]:
    (found,) = [c for c in status.conditions if c["type"] == kind]
    return found["status"], found["reason"]


def started(spec: rollout_spec.RolloutSpec = THREE_STEPS, **kw: Any) -> Pipeline:
    pipeline = Pipeline(spec, **kw)
    pipeline.run(OLD)
    decision = pipeline.run(NEW, at=0)
    assert reasons(decision) == ["RolloutStarted", "StepStarted"]
    return pipeline


def test_first_creation_makes_the_template_stable_without_a_rollout() -> None:
    pipeline = Pipeline(THREE_STEPS, stable=None)
    decision = pipeline.run(NEW)
    assert decision.events == ()
    assert (decision.status.phase, decision.status.stable_revision) == ("Healthy", NEW)
    assert decision.plan == machine.Plan(
        stable_revision=NEW,
        canary_revision=None,
        canary_replicas=0,
        canary_concurrency=None,
        stable_replicas=10,
        planned_share=0.0,
    )


def test_a_stable_deployment_without_rollout_status_is_the_stable_side() -> None:
    decision = Pipeline(THREE_STEPS, stable=OLD).run(NEW)
    assert decision.status.stable_revision == OLD
    assert decision.status.canary_revision == NEW
    assert reasons(decision) == ["RolloutStarted", "StepStarted"]


def test_promotes_step_by_step_to_100_percent() -> None:
    pipeline = started()
    status = pipeline.status
    assert (status.phase, status.current_step, status.target_weight) == ("Progressing", 0, 5)
    first = pipeline.run(NEW, at=1)
    # 5 % of 10 pods x 40: one stable pod gives way to one canary pod at concurrency 19.
    assert (first.plan.stable_replicas, first.plan.canary_replicas) == (9, 1)
    assert (first.plan.canary_concurrency, first.plan.canary_revision) == (19, NEW)
    assert first.plan.planned_share == first.status.planned_share == 19 / 379

    # A passing analysis that does not yet cover a whole interval at this weight holds.
    early = pipeline.run(NEW, at=30, analysis=analysis(T0 + 30))
    assert early.events == ()
    assert "a full analysis interval" in early.status.message

    paused = pipeline.run(NEW, at=60, analysis=analysis(T0 + 60))
    assert reasons(paused) == ["StepCompleted", "Paused"]
    assert (paused.status.phase, paused.status.current_step) == ("Paused", 1)
    assert paused.status.target_weight == 5  # a pause keeps the weight

    assert pipeline.run(NEW, at=100, analysis=analysis(T0 + 100)).status.phase == "Paused"
    # The pause is over, but only an analysis covering it lets it complete.
    assert pipeline.run(NEW, at=120, analysis=analysis(T0 + 100)).status.phase == "Paused"
    half = pipeline.run(NEW, at=125, analysis=analysis(T0 + 125))
    assert reasons(half) == ["StepCompleted", "StepStarted"]
    assert (half.status.target_weight, half.plan.stable_replicas, half.plan.canary_replicas) == (
        50,
        5,
        5,
    )

    done = pipeline.run(NEW, at=190, analysis=analysis(T0 + 190))
    assert reasons(done) == ["StepCompleted", "Promoted"]
    assert done.plan.promote
    assert (done.plan.stable_revision, done.plan.canary_replicas) == (NEW, 0)
    assert done.plan.stable_replicas == 10
    status = done.status
    assert (status.phase, status.stable_revision, status.canary_revision) == ("Healthy", NEW, None)
    assert condition(status, "RolloutProgressing") == ("False", "Stable")
    assert condition(status, "RolledBack") == ("False", "Promoted")

    after = pipeline.run(NEW, at=250)
    assert (after.events, after.plan.promote) == ((), False)


def test_a_timed_pause_completes_on_time_without_analysis() -> None:
    spec = rollout([{"weight": 10}, {"pause": {"duration": 300}}, {"weight": 50}])
    pipeline = started(spec)
    assert reasons(pipeline.run(NEW, at=1)) == ["StepCompleted", "Paused"]
    during = pipeline.run(NEW, at=300).status
    assert during.phase == "Paused"
    assert during.message.endswith("waiting for the pause to end at 2027-01-15T08:05:01Z")
    moved = pipeline.run(NEW, at=302)
    assert (moved.status.phase, moved.status.target_weight) == ("Progressing", 50)


def test_an_indefinite_pause_waits_past_any_deadline_until_promoted_once() -> None:
    spec = rollout([{"weight": 10}, {"pause": {}}, {"pause": {}}])
    pipeline = started(spec)
    pipeline.run(NEW, at=1)
    held = pipeline.run(NEW, at=86_400)
    assert (held.status.phase, held.events) == ("Paused", ())
    assert condition(held.status, "RolloutProgressing") == ("True", "Paused")

    promote = machine.Command("promote", id="c-1")
    moved = pipeline.run(NEW, at=86_401, command=promote)
    assert reasons(moved) == ["StepCompleted", "Paused"]
    assert (moved.status.current_step, moved.status.handled_command) == (2, "c-1")
    # The same command read again (the annotation is still there) is not carried out again.
    again = pipeline.run(NEW, at=86_402, command=promote)
    assert (again.status.current_step, again.events) == (2, ())
    final = pipeline.run(NEW, at=86_403, command=machine.Command("promote", id="c-2"))
    assert reasons(final) == ["StepCompleted", "Promoted"]


def test_promote_full_and_abort_commands() -> None:
    pipeline = started()
    full = pipeline.run(NEW, at=5, command=machine.Command("promoteFull", id="x"))
    assert reasons(full) == ["Promoted"]
    assert full.status.stable_revision == NEW

    other = started()
    aborted = other.run(NEW, at=5, command=machine.Command("abort", id="y"))
    assert reasons(aborted) == ["RolloutAborted"]
    assert aborted.status.abort_reason == "AbortedByCommand: aborted on command"
    assert aborted.status.failed_revision == NEW


def test_a_gate_failure_aborts_at_once_and_remembers_the_revision() -> None:
    pipeline = started(rollout([{"weight": 5}], analysis={**ANALYSIS, "failureLimit": 5}))
    decision = pipeline.run(NEW, at=20, analysis=analysis(T0 + 20, "Fail", kind="gate"))
    assert reasons(decision) == ["RolloutAborted"]
    (event,) = decision.events
    assert event.type == "Warning"
    assert event.message == (
        "processor: revision rev-new rolled back to rev-old: check: fail detail"
    )
    status = decision.status
    assert (status.phase, status.failed_revision) == ("Degraded", NEW)
    assert status.abort_reason == "GateFailed: check: fail detail"
    assert status.last_analysis is not None
    assert status.last_analysis.result.measures[0].verdict == "Fail"
    assert condition(status, "RolledBack") == ("True", "GateFailed")
    assert condition(status, "RolloutProgressing") == ("False", "RolledBack")
    plan = decision.plan
    assert (plan.canary_replicas, plan.stable_replicas, plan.stable_revision) == (0, 10, OLD)


def test_the_same_bad_revision_is_not_retried_until_asked() -> None:
    pipeline = started()
    pipeline.run(NEW, at=20, analysis=analysis(T0 + 20, "Fail", kind="gate"))
    for at in (30, 3_000, 300_000):
        held = pipeline.run(NEW, at=at)
        assert (held.status.phase, held.events, held.plan.canary_replicas) == ("Degraded", (), 0)
    retried = pipeline.run(NEW, at=300_001, command=machine.Command("retry", id="r"))
    assert reasons(retried) == ["RolloutRetried", "RolloutStarted", "StepStarted"]
    assert (retried.status.failed_revision, retried.status.canary_revision) == (None, NEW)


def test_a_new_revision_after_an_abort_starts_again() -> None:
    pipeline = started()
    pipeline.run(NEW, at=20, analysis=analysis(T0 + 20, "Fail", kind="gate"))
    decision = pipeline.run(NEWER, at=40)
    assert reasons(decision) == ["RolloutStarted", "StepStarted"]
    status = decision.status
    assert (status.phase, status.canary_revision, status.stable_revision) == (
        "Progressing",
        NEWER,
        OLD,
    )
    assert status.failed_revision == NEW
    assert condition(status, "RolledBack") == ("False", "RolloutStarted")


def test_failed_comparisons_abort_past_the_failure_limit_each_counted_once() -> None:
    spec = rollout([{"weight": 5}], analysis={**ANALYSIS, "failureLimit": 1})
    pipeline = started(spec)
    first = pipeline.run(NEW, at=60, analysis=analysis(T0 + 60, "Fail"))
    assert reasons(first) == ["AnalysisFailed"]
    assert first.status.failures == 1
    same = pipeline.run(NEW, at=70, analysis=analysis(T0 + 60, "Fail"))
    assert (same.events, same.status.failures) == ((), 1)
    second = pipeline.run(NEW, at=120, analysis=analysis(T0 + 120, "Fail"))
    assert reasons(second) == ["RolloutAborted"]
    assert second.status.abort_reason is not None
    assert second.status.abort_reason.startswith("AnalysisFailed: failed 2 time(s), failureLimit 1")


def test_inconclusive_holds_the_step_then_the_deadline_degrades() -> None:
    spec = rollout([{"weight": 5}], analysis=ANALYSIS, progressDeadlineSeconds=300)
    pipeline = started(spec)
    for at in range(60, 301, 60):
        held = pipeline.run(NEW, at=at, analysis=analysis(T0 + at, "Inconclusive"))
        assert (held.status.phase, held.status.current_step, held.events) == ("Progressing", 0, ())
        assert "a passing analysis (Inconclusive" in held.status.message
    late = pipeline.run(NEW, at=301, analysis=analysis(T0 + 300, "Inconclusive"))
    assert reasons(late) == ["RolloutAborted"]
    assert late.status.phase == "Degraded"
    assert late.status.abort_reason is not None
    assert late.status.abort_reason.startswith("ProgressDeadlineExceeded: step 1/1: weight 5%")
    assert condition(late.status, "RolledBack") == ("True", "ProgressDeadlineExceeded")


def test_api_step_waits_for_the_observed_share_near_the_planned_one() -> None:
    spec = rollout([{"weight": 5}, {"weight": 50}], analysis=ANALYSIS)
    pipeline = started(spec, component="api")
    # 19 stable replicas: one canary gives exactly 5 %; the tolerance accepts 2.5-7.5 %.
    inputs = {"desired_replicas": 19, "analysis": analysis(T0 + 60)}
    skewed = pipeline.run(NEW, at=60, observed_share=0.20, **inputs)
    assert skewed.plan == machine.Plan(
        stable_revision=OLD,
        canary_revision=NEW,
        canary_replicas=1,
        canary_concurrency=None,
        stable_replicas=None,
        planned_share=0.05,
    )
    assert skewed.events == ()
    assert "observed share 20.0% to approach 5.0%" in skewed.status.message
    assert skewed.status.observed_share == 0.20
    unknown = pipeline.run(NEW, at=61, observed_share=None, **inputs)
    assert "an observed share" in unknown.status.message
    near = pipeline.run(NEW, at=62, observed_share=0.06, **inputs)
    assert reasons(near) == ["StepCompleted", "StepStarted"]
    assert near.plan.canary_replicas == 19


def test_api_step_without_an_analysis_advances_on_its_planned_share() -> None:
    # No analysis: no Prometheus to observe the share with, so waiting for one would hold
    # every step until the deadline aborted the rollout.
    pipeline = started(rollout([{"weight": 5}, {"pause": {}}]), component="api")
    moved = pipeline.run(NEW, at=1, desired_replicas=19, observed_share=None)
    assert reasons(moved) == ["StepCompleted", "Paused"]
    assert (moved.status.phase, moved.plan.canary_replicas) == ("Paused", 1)


def test_a_weight_step_without_room_for_a_canary_pod_holds() -> None:
    pipeline = started(rollout([{"weight": 5}, {"weight": 50}]))
    one_pod = pipeline.run(NEW, at=1, desired_replicas=1)
    assert (one_pod.events, one_pod.plan.canary_replicas, one_pod.plan.stable_replicas) == (
        (),
        0,
        1,
    )
    assert "room for a canary pod (the scaler asks for 1)" in one_pod.status.message
    assert reasons(pipeline.run(NEW, at=2, desired_replicas=2)) == ["StepCompleted", "StepStarted"]


def test_processor_share_does_not_gate_a_step() -> None:
    pipeline = started(rollout([{"weight": 5}, {"weight": 50}], analysis=ANALYSIS))
    moved = pipeline.run(NEW, at=60, analysis=analysis(T0 + 60), observed_share=0.5)
    assert reasons(moved) == ["StepCompleted", "StepStarted"]


def test_a_restarted_operator_continues_from_status_alone() -> None:
    pipeline = started()
    pipeline.run(NEW, at=60, analysis=analysis(T0 + 60))
    assert pipeline.saved is not None
    restarted = Pipeline(THREE_STEPS, stable="ignored-once-status-exists", saved=pipeline.saved)
    for driven in (pipeline, restarted):
        assert driven.run(NEW, at=100, analysis=analysis(T0 + 100)).status.phase == "Paused"
        resumed = driven.run(NEW, at=125, analysis=analysis(T0 + 125))
        assert resumed.status.target_weight == 50
    assert restarted.saved == pipeline.saved


def test_a_new_template_during_a_rollout_restarts_it_and_a_revert_cancels_it() -> None:
    pipeline = started()
    pipeline.run(NEW, at=60, analysis=analysis(T0 + 60))
    restarted = pipeline.run(NEWER, at=70)
    assert reasons(restarted) == ["RolloutRestarted", "RolloutStarted", "StepStarted"]
    assert (restarted.status.canary_revision, restarted.status.current_step) == (NEWER, 0)
    reverted = pipeline.run(OLD, at=80)
    assert reasons(reverted) == ["RolloutCanceled"]
    assert (reverted.status.phase, reverted.plan.canary_replicas) == ("Healthy", 0)


def test_a_component_left_out_of_the_order_is_updated_in_place() -> None:
    spec = rollout([{"weight": 5}], order=["processor"])
    pipeline = Pipeline(spec, component="api")
    pipeline.run(OLD)
    decision = pipeline.run(NEW, at=1)
    assert reasons(decision) == ["Promoted"]
    assert (decision.plan.promote, decision.status.stable_revision) == (True, NEW)


def test_status_to_dict_is_camel_case_and_round_trips() -> None:
    pipeline = started()
    pipeline.run(NEW, at=60, analysis=analysis(T0 + 60))
    saved = pipeline.saved
    assert saved is not None
    assert {
        "phase",
        "stableRevision",
        "canaryRevision",
        "currentStep",
        "targetWeight",
        "plannedShare",
        "stepStartedAt",
        "failures",
        "lastAnalysis",
        "conditions",
    } <= set(saved)
    assert saved["stepStartedAt"] == "2027-01-15T08:01:00Z"
    assert saved["lastAnalysis"]["measures"][0] == {
        "name": "check",
        "kind": "errorRatio",
        "query": "q",
        "value": 0.1,
        "verdict": "Pass",
        "detail": "pass detail",
    }
    assert RolloutStatus.from_dict(saved).to_dict() == saved
    # What the apiserver stores after the merge patch: the nulls gone, the same status.
    stored = {key: value for key, value in saved.items() if value is not None}
    assert RolloutStatus.from_dict(stored) == RolloutStatus.from_dict(saved)


def test_status_clears_in_a_merge_patch_what_a_promotion_ends() -> None:
    pipeline = started(rollout([{"weight": 5}]))
    done = pipeline.run(NEW, at=1)
    assert reasons(done) == ["StepCompleted", "Promoted"]
    written = done.status.to_dict()
    for cleared in ("canaryRevision", "currentStep", "stepStartedAt", "plannedShare"):
        assert cleared in written
        assert written[cleared] is None


class Both:
    """The processor and the API of one pipeline, passed together in the rollout order."""

    def __init__(self, spec: rollout_spec.RolloutSpec) -> None:
        self.spec = spec
        self.parts: dict[rollout_spec.Component, Pipeline] = {
            name: Pipeline(spec, name) for name in rollout_spec.COMPONENTS
        }

    def run(
        self, revisions: dict[str, str], at: float, **per_component: dict[str, Any]
    ) -> dict[rollout_spec.Component, machine.Decision]:
        inputs = {
            name: part.inputs(revisions[name], **per_component.get(name, {}))
            for name, part in self.parts.items()
        }
        decisions = machine.advance_all(self.spec, inputs, now=T0 + at, generation=1)
        for name, decision in decisions.items():
            self.parts[name].saved = decision.status.to_dict()
        return decisions


BOTH = rollout([{"weight": 5}], analysis=ANALYSIS)
NEW_BOTH = {"processor": NEW, "api": NEW}


def passing_both(at: float) -> dict[str, dict[str, Any]]:
    return {
        "processor": {"analysis": analysis(T0 + at)},
        "api": {"analysis": analysis(T0 + at), "observed_share": 0.1, "desired_replicas": 9},
    }


def test_components_roll_one_at_a_time_processor_first() -> None:
    both = Both(BOTH)
    both.run({"processor": OLD, "api": OLD}, at=0)
    first = both.run(NEW_BOTH, at=1)
    assert first["processor"].status.phase == "Progressing"
    api = first["api"]
    assert (api.status.phase, api.status.canary_revision, api.plan.canary_replicas) == (
        "Progressing",
        None,
        0,
    )
    assert api.status.message == "waits for the processor's rollout"
    assert reasons(api) == ["Waiting"]
    assert condition(api.status, "RolloutProgressing") == ("True", "Waiting")
    assert both.run(NEW_BOTH, at=2)["api"].events == ()  # said once

    # The processor's promotion lets the API start in the same pass.
    promoted = both.run(NEW_BOTH, at=61, **passing_both(61))
    assert reasons(promoted["processor"]) == ["StepCompleted", "Promoted"]
    assert reasons(promoted["api"]) == ["RolloutStarted", "StepStarted"]


def test_an_aborted_processor_blocks_the_api_from_starting() -> None:
    both = Both(BOTH)
    both.run({"processor": OLD, "api": OLD}, at=0)
    both.run(NEW_BOTH, at=1)
    gate = {"processor": {"analysis": analysis(T0 + 20, "Fail", kind="gate")}}
    aborted = both.run(NEW_BOTH, at=20, **gate)
    assert aborted["processor"].status.phase == "Degraded"
    api = aborted["api"]
    assert (api.status.phase, api.status.canary_revision, api.plan.canary_replicas) == (
        "Paused",
        None,
        0,
    )
    assert api.status.message.startswith("blocked: the processor's rollout did not complete")
    assert condition(api.status, "RolloutProgressing") == ("True", "Blocked")
    # A fixed processor revision rolls; the API waits for it, then goes.
    fixed = {"processor": NEWER, "api": NEW}
    assert both.run(fixed, at=30)["api"].status.message == "waits for the processor's rollout"
    done = both.run(fixed, at=91, **passing_both(91))
    assert reasons(done["api"]) == ["RolloutStarted", "StepStarted"]


def test_an_api_abort_leaves_the_promoted_processor_promoted() -> None:
    both = Both(BOTH)
    both.run({"processor": OLD, "api": OLD}, at=0)
    both.run(NEW_BOTH, at=1)
    both.run(NEW_BOTH, at=61, **passing_both(61))
    gate = {"api": {"analysis": analysis(T0 + 80, "Fail", kind="gate")}}
    aborted = both.run(NEW_BOTH, at=80, **gate)
    assert aborted["api"].status.phase == "Degraded"
    processor = aborted["processor"]
    assert (processor.status.phase, processor.status.stable_revision) == ("Healthy", NEW)
    assert (processor.events, processor.plan.canary_replicas) == ((), 0)


def test_sparse_canary_errors_judged_on_real_checks_roll_the_canary_back() -> None:
    spec = rollout([{"weight": 5}], analysis={**ANALYSIS, "failureLimit": 0})
    assert spec.analysis is not None
    readings = judge.Readings(
        error_ratios={
            "orders-failed": (
                judge.Counts(errors=[0, 1, 2, 1, 0, 0], totals=[50] * 6),
                judge.Counts(errors=[0] * 6, totals=[950] * 6),
            )
        },
        latencies={"processing-p99": judge.LatencyReading(0.1, 0.1, 300, 5_700)},
    )
    result = judge.judge(
        spec.analysis.checks("processor"),
        readings,
        min_samples=100,
        revisions=rollout_spec.Revisions(canary=NEW, stable=OLD),
        interval_seconds=INTERVAL,
    )
    pipeline = started(spec)
    decision = pipeline.run(NEW, at=60, analysis=rollout_status.Analysis(T0 + 60, result))
    assert reasons(decision) == ["RolloutAborted"]
    assert decision.status.abort_reason is not None
    assert decision.status.abort_reason.startswith(
        "AnalysisFailed: failed 1 time(s), failureLimit 0: "
        "orders-failed: canary 4/300, stable 0/5700"
    )
    saved = decision.status.to_dict()["lastAnalysis"]
    assert [(m["name"], m["verdict"]) for m in saved["measures"]] == [
        ("orders-failed", "Fail"),
        ("processing-p99", "Pass"),
    ]


def test_every_field_status_writes_is_declared_in_its_schema() -> None:
    """The apiserver prunes undeclared status fields: what the CRD will declare
    (RolloutStatusSchema, extra fields forbidden) must accept every status the machine
    writes, from a running step with an analysis to an abort."""
    pipeline = started()
    written = [pipeline.run(NEW, at=60, analysis=analysis(T0 + 60)).status.to_dict()]
    gate = analysis(T0 + 70, "Inconclusive")
    written.append(pipeline.run(NEW, at=70, analysis=gate).status.to_dict())
    abort = machine.Command("abort", id="a")
    written.append(pipeline.run(NEW, at=80, command=abort).status.to_dict())
    for data in written:
        schema = rollout_status.RolloutStatusSchema.model_validate(data)
        assert schema.model_dump(by_alias=True, exclude_unset=True).keys() == data.keys()
    structural = crd.structural(rollout_status.RolloutStatusSchema.model_json_schema(by_alias=True))
    assert "anyOf" not in str(structural)
    assert "$ref" not in str(structural)
