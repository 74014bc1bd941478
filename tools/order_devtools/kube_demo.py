"""`make kube-demo`: the pipeline on the local control plane's real node, in the foreground.

Starts (or reuses) the control plane with its real node (`make cluster-up`'s, in `.cluster/`),
builds or reuses the images, runs the engines on the node's bridge address, installs the chart
with one pipeline, and prints a session that posts an order through the cluster. Ctrl-C
uninstalls the release and stops the engines; `make cluster-down` then removes the cluster and
its node.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from order_devtools import cluster as local_cluster
from order_devtools import cluster_pipeline, engines, images
from order_devtools.cluster.cli import DEFAULT_CLUSTER_DIR

ORDER = json.dumps(
    {
        "customer_id": "c-1",
        "items": [{"sku": "SKU-MUG", "quantity": 1}],
        "currency": "USD",
        "payment_token": "tok_ok",
    }
)


def _cluster_with_real_node(state_dir: Path) -> local_cluster.Cluster:
    existing = local_cluster.Cluster.load(state_dir)
    if existing is not None and existing.is_running() and existing.real_node is not None:
        return existing
    if existing is not None and existing.is_running():
        raise local_cluster.ClusterError(
            "a cluster without a real node is running; stop it with `make cluster-down` first"
        )
    if existing is not None:
        existing.stop(remove_state=True)
    return local_cluster.start_cluster(
        state_dir,
        toolchain=local_cluster.ensure_toolchain(),
        exit_with_parent=False,
        real_node=True,
    )


def session(pipeline: cluster_pipeline.ClusterPipeline, kubeconfig: Path) -> str:
    """Copy-paste commands that send an order through the cluster and read its status."""
    credentials = json.dumps(
        {"client_id": cluster_pipeline.CLIENT_ID, "client_secret": pipeline.client_secret}
    )
    return f"""
The pipeline runs on the real node (namespace {pipeline.namespace}). In another shell:

  export KUBECONFIG={shlex.quote(str(kubeconfig))}
  kubectl -n {pipeline.namespace} get orderpipelines,pods -o wide
  API={pipeline.api_url()}
  TOKEN=$(curl -s -X POST $API/v1/auth/token -H 'content-type: application/json' \\
    -d {shlex.quote(credentials)} \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  STATUS_URL=$(curl -s -X POST $API/v1/orders -H "authorization: Bearer $TOKEN" \\
    -H 'content-type: application/json' -d {shlex.quote(ORDER)} \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["status_url"])')
  curl -s "$API${{STATUS_URL#*.svc}}"      # the status URL names the Service's in-cluster address

Ctrl-C here uninstalls the release and stops the engines; `make cluster-down` removes the cluster.
"""


def main() -> int:
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster = _cluster_with_real_node(DEFAULT_CLUSTER_DIR.resolve())
        node = cluster.real_node
        assert node is not None  # _cluster_with_real_node made sure
        engines.ensure_installed()
        with (
            tempfile.TemporaryDirectory(prefix="kube-demo-") as scratch,
            engines.running_engines(
                Path(scratch) / "engines", persistent=False, host=node.address
            ) as running,
        ):
            pipeline = cluster_pipeline.install(cluster, node, running, Path(scratch))
            try:
                print(session(pipeline, cluster.kubeconfig), flush=True)
                stop.wait()
            finally:
                print("uninstalling...", file=sys.stderr)
                pipeline.uninstall()
    except (
        local_cluster.ClusterError,
        images.ImageBuildError,
        cluster_pipeline.ClusterPipelineError,
    ) as error:
        print(f"kube-demo failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
