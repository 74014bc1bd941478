"""`kubectl orderpipeline`: command and watch an OrderPipeline's canary rollouts.

    kubectl orderpipeline promote NAME [--full] [--component api|processor]
    kubectl orderpipeline abort NAME [--component api|processor]
    kubectl orderpipeline retry NAME [--component api|processor]
    kubectl orderpipeline status NAME [--watch]

promote, abort and retry write the rollout-command annotation (a merge patch, with a fresh id)
that the operator carries out once on its next pass; without --component it acts on the
component the command concerns. status prints each component's rollout as the operator
reports it; --watch prints it again on every change. -n/--namespace, --kubeconfig and
--context as for kubectl; by default the kubeconfig's (KUBECONFIG or ~/.kube/config), in a pod
its ServiceAccount.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from kubernetes import client, config, watch

from order_operator.rollout import command, judge
from order_operator.rollout import spec as rollout_spec
from order_operator.rollout import status as rollout_status
from order_operator.v1alpha1 import spec as v1alpha1

PROG = "kubectl orderpipeline"
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_WATCH_SECONDS = 300


class CliError(Exception):
    """A failure to report in one line, without a traceback."""


# Rendering, pure: what `status` prints for an OrderPipeline object.


def _percent(share: Any) -> str:
    return "-" if share is None else f"{float(share):.1%}"


def _step(steps: Sequence[Mapping[str, Any]] | None, index: Any) -> str:
    if index is None:
        return ""
    total = "?" if steps is None else str(len(steps))
    where = f"step {int(index) + 1}/{total}"
    if steps is None or not 0 <= int(index) < len(steps):
        return where
    step = steps[int(index)]
    if step.get("weight") is not None:
        return f"{where}: weight {step['weight']}%"
    duration = (step.get("pause") or {}).get("duration")
    return f"{where}: paused " + ("until promoted" if duration is None else f"for {duration}s")


def _measure_line(measure: judge.Measure) -> str:
    value = "-" if measure.value is None else f"{measure.value:.6g}"
    return f"    {measure.verdict:<12}  {measure.name} ({measure.kind}) = {value}" + (
        f": {measure.detail}" if measure.detail else ""
    )


def render_component(
    component: rollout_spec.Component,
    data: Mapping[str, Any] | None,
    steps: Sequence[Mapping[str, Any]] | None,
) -> list[str]:
    if data is None:
        return [f"{component:<10} no rollout status yet"]
    status = rollout_status.RolloutStatus.from_dict(data)
    head = f"{component:<10} {status.phase}"
    step = _step(steps, status.current_step)
    lines = [f"{head}  {step}" if step else head]
    if status.rolling:
        lines.append(
            f"  weight     target {status.target_weight}%"
            f"  planned {_percent(status.planned_share)}"
            f"  observed {_percent(status.observed_share)}"
        )
    revisions = f"  revision   stable {status.stable_revision}"
    if status.canary_revision is not None:
        revisions += f"  canary {status.canary_revision}"
    lines.append(revisions)
    analysis = status.last_analysis
    if analysis is not None:
        lines.append(
            f"  analysis   {analysis.result.verdict} at {rollout_status.to_iso(analysis.at)}"
            f"  failed comparisons {status.failures}"
        )
        lines.extend(_measure_line(measure) for measure in analysis.result.measures)
    if status.abort_reason:
        lines.append(f"  aborted    {status.abort_reason}")
    if status.failed_revision:
        lines.append(
            f"  failed     revision {status.failed_revision}"
            " (not rolled out again until the template changes or `retry`)"
        )
    if status.message:
        lines.append(f"  message    {status.message}")
    return lines


def render(body: Mapping[str, Any]) -> str:
    """Each component's rollout, in rollout order."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    rollout = spec.get("rollout")
    title = f"orderpipeline {metadata.get('namespace')}/{metadata.get('name')}"
    lines = [
        f"{title}  generation {metadata.get('generation')}"
        f" (observed {status.get('observedGeneration', '-')})"
    ]
    if rollout is None:
        lines.append("no spec.rollout: a template change updates a component in place")
    steps = None if rollout is None else rollout.get("steps")
    order = list((rollout or {}).get("order") or rollout_spec.COMPONENTS)
    components = order + [c for c in rollout_spec.COMPONENTS if c not in order]
    statuses = status.get("rollout") or {}
    for component in components:
        lines.extend(render_component(component, statuses.get(component), steps))
    return "\n".join(lines) + "\n"


# The Kubernetes side.


def connect(kubeconfig: str | None, context: str | None) -> tuple[client.ApiClient, str]:
    """A client and the default namespace: the kubeconfig's (its context's namespace), or
    in a pod without one, the ServiceAccount's."""
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
    except config.ConfigException as kubeconfig_error:
        if kubeconfig or context:
            raise CliError(f"cannot load the kubeconfig: {kubeconfig_error}") from None
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            raise CliError(
                f"no kubeconfig ({kubeconfig_error}) and not in a pod: set KUBECONFIG"
            ) from None
        namespace = _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return client.ApiClient(configuration), namespace


class Pipelines:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def _args(self) -> tuple[str, str, str, str]:
        return (v1alpha1.GROUP, v1alpha1.VERSION, self.namespace, v1alpha1.PLURAL)

    def get(self, name: str) -> dict[str, Any]:
        try:
            body = self.custom.get_namespaced_custom_object(*self._args(), name)
        except client.ApiException as error:
            raise _api_error(error, self.namespace, name) from None
        return cast(dict[str, Any], body)

    def request(
        self, name: str, action: Any, component: rollout_spec.Component | None
    ) -> tuple[command.Request, tuple[rollout_spec.Component, ...]]:
        """Write the command annotation; the command and the components it goes to."""
        body = self.get(name)
        if (body.get("spec") or {}).get("rollout") is None:
            raise CliError(
                f"orderpipeline {self.namespace}/{name} has no spec.rollout: template changes"
                " update in place and there is no rollout to command"
            )
        request = command.Request(action=action, id=uuid.uuid4().hex, component=component)
        patch = {"metadata": {"annotations": {command.ANNOTATION: request.to_json()}}}
        try:
            self.custom.patch_namespaced_custom_object(
                *self._args(), name, patch, _content_type="application/merge-patch+json"
            )
        except client.ApiException as error:
            raise _api_error(error, self.namespace, name) from None
        saved = ((body.get("status") or {}).get("rollout")) or {}
        statuses = {
            c: None if saved.get(c) is None else rollout_status.RolloutStatus.from_dict(saved[c])
            for c in rollout_spec.COMPONENTS
        }
        return request, request.targets(statuses)

    def watch(self, name: str, out: TextIO) -> None:
        """Print the status now and again on every change until the object is deleted."""
        shown = ""

        def show(body: Mapping[str, Any]) -> str:
            nonlocal shown
            text = render(body)
            if text != shown:
                out.write(("\n" if shown else "") + text)
                out.flush()
                shown = text
            return str(body["metadata"]["resourceVersion"])

        version = show(self.get(name))
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        while True:
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object,
                    *self._args(),
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    timeout_seconds=_WATCH_SECONDS,
                ):
                    if event["type"] == "DELETED":
                        out.write(f"orderpipeline {self.namespace}/{name} was deleted\n")
                        out.flush()
                        return
                    if event["type"] == "ERROR":
                        break
                    version = show(event["object"])
                else:
                    continue  # the server ended the watch: go on from where it was
            except client.ApiException as error:
                if error.status != 410:
                    raise _api_error(error, self.namespace, name) from None
            # The version expired (410): start again from the object as it is now.
            version = show(self.get(name))


def _api_error(error: client.ApiException, namespace: str, name: str) -> CliError:
    if error.status == 404:
        return CliError(f"orderpipeline {namespace}/{name} not found")
    return CliError(f"the Kubernetes API answered {error.status} {error.reason}: {error.body}")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS)
    common.add_argument("--context", default=argparse.SUPPRESS)
    main = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True)
    promote = commands.add_parser(
        "promote", parents=[common], help="complete the current step (--full: promote at once)"
    )
    promote.add_argument("--full", action="store_true", help="promote the canary at once")
    abort = commands.add_parser("abort", parents=[common], help="roll the canary back")
    retry = commands.add_parser("retry", parents=[common], help="roll a rolled-back revision again")
    for sub in (promote, abort, retry):
        sub.add_argument("name")
        sub.add_argument("--component", choices=rollout_spec.COMPONENTS)
    status = commands.add_parser("status", parents=[common], help="print each rollout's status")
    status.add_argument("name")
    status.add_argument("--watch", "-w", action="store_true", help="print again on each change")
    return main


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parser().parse_args(argv)
    try:
        api, default_namespace = connect(
            getattr(args, "kubeconfig", None), getattr(args, "context", None)
        )
        with api:
            pipelines = Pipelines(api, getattr(args, "namespace", None) or default_namespace)
            if args.command == "status":
                if args.watch:
                    pipelines.watch(args.name, out)
                else:
                    out.write(render(pipelines.get(args.name)))
                return 0
            action = "promoteFull" if args.command == "promote" and args.full else args.command
            request, targets = pipelines.request(args.name, action, args.component)
            out.write(
                f"orderpipeline {pipelines.namespace}/{args.name}: {request.action} requested"
                f" for {', '.join(targets)} (id {request.id}); `{PROG} status {args.name}`"
                " shows when the operator has carried it out\n"
            )
            return 0
    except CliError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
