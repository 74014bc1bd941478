"""The Argo CD health check of OrderPipeline (argocd/health/orderpipeline.lua), run by a real
Lua 5.1 interpreter (Argo CD's gopher-lua implements 5.1) against sample objects."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "argocd/health/orderpipeline.lua"
CONFIG_MAP = REPO / "argocd/bootstrap/argocd-cm-health.yaml"
KEY = "resource.customizations.health.order-pipeline.dev_OrderPipeline"


def lua_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items())
            + "}"
        )
    raise TypeError(value)


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) the script returns for `obj`, as Argo CD would call it."""
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local function check()\n{HEALTH.read_text()}\nend\n"
        'local hs = check()\nreturn hs.status .. "\\n" .. (hs.message or "")\n'
    )
    try:
        from lupa import lua51  # type: ignore[import-not-found]
    except ImportError:
        binary = shutil.which("lua5.1")
        if binary is None:
            pytest.fail(
                "no Lua 5.1: install the PyPI package `lupa` (dev group) or put `lua5.1` on PATH"
            )
        wrapped = program.replace("\nreturn hs.status", "\nio.write(hs.status", 1) + ")"
        result = subprocess.run(
            [binary, "-"], input=wrapped, capture_output=True, text=True, timeout=30, check=True
        )
        output = result.stdout
    else:
        runtime = lua51.LuaRuntime()
        assert runtime.eval("_VERSION") == "Lua 5.1"
        output = str(runtime.execute(program))
    status, _, message = output.partition("\n")
    return status, message


def pipeline(generation: int = 2, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "orders", "generation": generation}}
    if status:
        body["status"] = status
    return body


def ready(status: str, reason: str, generation: int = 2, message: str = "m") -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def test_new_pipeline_without_status_is_progressing() -> None:
    assert health(pipeline())[0] == "Progressing"


def test_ready_for_the_current_generation_is_healthy() -> None:
    obj = pipeline(
        observedGeneration=2,
        conditions=[ready("True", "AllComponentsReady", message="all ready")],
    )
    assert health(obj) == ("Healthy", "all ready")


def test_ready_for_an_older_generation_is_progressing() -> None:
    behind = pipeline(observedGeneration=1, conditions=[ready("True", "AllComponentsReady", 1)])
    assert health(behind)[0] == "Progressing"
    condition_behind = pipeline(
        observedGeneration=2, conditions=[ready("True", "AllComponentsReady", 1)]
    )
    assert health(condition_behind)[0] == "Progressing"


@pytest.mark.parametrize("reason", ["Creating", "Progressing", "QueueNotEmpty"])
def test_not_ready_while_reconciling_is_progressing(reason: str) -> None:
    obj = pipeline(observedGeneration=2, conditions=[ready("False", reason)])
    assert health(obj)[0] == "Progressing"


def test_unknown_ready_is_progressing() -> None:
    obj = pipeline(observedGeneration=2, conditions=[ready("Unknown", "Reconciling")])
    assert health(obj)[0] == "Progressing"


@pytest.mark.parametrize(
    "reason", ["AwsRejected", "NameConflict", "CredentialsSecretMissing", "EngineUnavailable"]
)
def test_failed_component_is_degraded_with_its_reason(reason: str) -> None:
    obj = pipeline(
        observedGeneration=2,
        conditions=[
            {"type": "QueuesReady", "status": "False", "reason": reason},
            ready("False", reason, message="QueuesReady: denied"),
        ],
    )
    assert health(obj) == ("Degraded", f"{reason}: QueuesReady: denied")


def test_config_map_carries_exactly_the_tested_script() -> None:
    config_map = yaml.safe_load(CONFIG_MAP.read_text())
    assert config_map["metadata"]["name"] == "argocd-cm"
    assert config_map["data"] == {KEY: HEALTH.read_text()}


def rollout(phase: str, *, rolled_back: bool = False, **fields: Any) -> dict[str, Any]:
    """A component's `status.rollout.<component>` as the rollout machine writes it."""
    status = "True" if rolled_back else "False"
    return {
        "phase": phase,
        "stableRevision": "r1",
        "message": fields.pop("message", f"{phase.lower()} message"),
        "conditions": [{"type": "RolledBack", "status": status, "reason": "x"}],
        **fields,
    }


def rolling(**components: dict[str, Any]) -> dict[str, Any]:
    """A Ready pipeline of the current generation with these rollout statuses."""
    return pipeline(
        observedGeneration=2,
        conditions=[ready("True", "AllComponentsReady", message="all ready")],
        rollout=components,
    )


def test_a_rollout_stepping_on_is_progressing() -> None:
    obj = rolling(
        processor=rollout("Healthy"),
        api=rollout("Progressing", message="step 1/6: weight 5%", canaryRevision="r2"),
    )
    assert health(obj) == ("Progressing", "api: step 1/6: weight 5%")


def test_a_paused_rollout_is_suspended() -> None:
    obj = rolling(processor=rollout("Paused", message="step 2/6: paused until promoted"))
    assert health(obj) == ("Suspended", "processor: step 2/6: paused until promoted")


def test_a_paused_rollout_wins_over_one_waiting_its_turn() -> None:
    obj = rolling(processor=rollout("Progressing"), api=rollout("Paused", message="held"))
    assert health(obj) == ("Suspended", "api: held")


def test_a_rolled_back_rollout_is_degraded_with_its_reason() -> None:
    obj = rolling(
        processor=rollout(
            "Degraded", rolled_back=True, abortReason="GateFailed: dlq-bound failures 3 > 0"
        ),
        # The API is held behind the processor's abort: the rollback is what to report.
        api=rollout("Paused", message="blocked"),
    )
    assert health(obj) == (
        "Degraded",
        "processor rolled back: GateFailed: dlq-bound failures 3 > 0",
    )


def test_the_rolled_back_condition_alone_is_degraded() -> None:
    obj = rolling(api=rollout("Healthy", rolled_back=True, abortReason="AbortedByCommand: x"))
    assert health(obj) == ("Degraded", "api rolled back: AbortedByCommand: x")


def test_settled_rollouts_leave_the_health_to_ready() -> None:
    obj = rolling(processor=rollout("Healthy"), api=rollout("Healthy"))
    assert health(obj) == ("Healthy", "all ready")
    failing = pipeline(
        observedGeneration=2,
        conditions=[ready("False", "AwsRejected", message="denied")],
        rollout={"processor": rollout("Paused")},
    )
    assert health(failing) == ("Degraded", "AwsRejected: denied")


def test_a_rollout_in_an_older_generation_waits_for_the_operator() -> None:
    obj = rolling(processor=rollout("Degraded", rolled_back=True, abortReason="x"))
    obj["metadata"]["generation"] = 3
    assert health(obj)[0] == "Progressing"
