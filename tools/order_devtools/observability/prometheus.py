"""A real Prometheus (Debian's `prometheus` package) for tests and renders: a config written to
a work directory, the pipeline's rules loaded, 1 s scrapes of given static targets and, optionally,
of the pods a Kubernetes API server lists (`pod_discovery`, since Debian's build has no
`kubernetes_sd_configs`). It listens on loopback unless told another address (the real node's
bridge, so that pods reach it too)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from order_devtools import processes
from order_devtools.observability import pod_discovery, rules

BINARY = "prometheus"
DEBIAN_PACKAGE = "prometheus"


@dataclass(frozen=True)
class Target:
    job: str
    address: str
    """host:port of its `/metrics`."""
    labels: Mapping[str, str]


POD_JOB = "kubernetes-pods"
"""The job of discovered pods, except the pipeline's own, which get the `job` the chart's
PodMonitors give them (`rules.JOBS`), so the rules and dashboards read them unchanged."""
_PIPELINE_POD_NAME = "order-pipeline"
"""`app.kubernetes.io/name` of the operator's and the pipeline's pods."""
_META = "__meta_kubernetes_pod_"


class QueryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Prometheus:
    url: str
    log_path: Path
    discovered: pod_discovery.Discoverer | None = None
    """The pods the `kubernetes-pods` job was last given, when it runs."""

    def _get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise QueryError(f"{path} {params}: {response.status_code} {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: `{"metric": {...}, "value": [t, "v"]}` per series."""
        data = self._get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, expr: str, *, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        data = self._get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step)
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups


def binary() -> str:
    found = shutil.which(BINARY)
    if found is None:
        raise FileNotFoundError(f"{BINARY} is missing: install Debian's `{DEBIAN_PACKAGE}` package")
    return found


def pod_scrape_config(targets_file: Path) -> dict[str, Any]:
    """The `kubernetes-pods` scrape job over the groups `pod_discovery` writes to `targets_file`
    (with `kubernetes_sd_configs` role `pod`, only the discovery block would differ).

    Pods annotated `prometheus.io/scrape: "true"` are scraped at their `prometheus.io/port` and
    `prometheus.io/path`. Target labels: `namespace`, `pod`, `component` (the pod's
    `app.kubernetes.io/component`) and, for the pipeline's pods, `pipeline`; a metric's own
    labels (`version`, `track`, ...) are kept as the pod exports them, and `honor_labels` stays
    false so a pod cannot pass itself off as another namespace or pod."""
    relabel_configs: list[dict[str, Any]] = [
        {
            "source_labels": [f"{_META}annotation_prometheus_io_scrape"],
            "regex": "true",
            "action": "keep",
        },
        # A finished or not yet started pod has nothing to scrape.
        {"source_labels": [f"{_META}phase"], "regex": "Pending|Succeeded|Failed", "action": "drop"},
        {
            "source_labels": [f"{_META}annotation_prometheus_io_path"],
            "regex": "(.+)",
            "target_label": "__metrics_path__",
        },
        # One target per pod at the annotated port, whichever container ports it declares.
        {
            "source_labels": ["__address__", f"{_META}annotation_prometheus_io_port"],
            "regex": r"([^:]+)(?::\d+)?;(\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": [f"{_META}name"], "target_label": "pod"},
        {
            "source_labels": [f"{_META}label_app_kubernetes_io_component"],
            "target_label": "component",
        },
        # The operator's own pods name the Helm release as their instance, not a pipeline.
        {
            "source_labels": [
                f"{_META}label_app_kubernetes_io_name",
                f"{_META}label_app_kubernetes_io_component",
                f"{_META}label_app_kubernetes_io_instance",
            ],
            "regex": f"{_PIPELINE_POD_NAME};(api|processor);(.+)",
            "replacement": "$2",
            "target_label": "pipeline",
        },
    ]
    relabel_configs += [
        {
            "source_labels": [
                f"{_META}label_app_kubernetes_io_name",
                f"{_META}label_app_kubernetes_io_component",
            ],
            "regex": f"{_PIPELINE_POD_NAME};{component}",
            "replacement": job,
            "target_label": "job",
        }
        for component, job in rules.JOBS.items()
    ]
    return {
        "job_name": POD_JOB,
        # fsnotify sees each rewrite at once; the interval is the fallback.
        "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        "relabel_configs": relabel_configs,
    }


def config(
    targets: Sequence[Target],
    rule_files: Sequence[Path],
    *,
    pod_targets_file: Path | None = None,
) -> dict[str, Any]:
    scrape_configs: list[dict[str, Any]] = [
        {
            "job_name": job,
            "static_configs": [
                {"targets": [t.address], "labels": dict(t.labels)} for t in targets if t.job == job
            ],
        }
        for job in sorted({t.job for t in targets})
    ]
    if pod_targets_file is not None:
        scrape_configs.append(pod_scrape_config(pod_targets_file))
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": scrape_configs,
    }


@contextlib.contextmanager
def running(
    workdir: Path,
    *,
    targets: Sequence[Target] = (),
    rule_files: Sequence[Path] = (),
    pods: pod_discovery.PodDiscovery | None = None,
    host: str = processes.LOOPBACK_HOST,
) -> Iterator[Prometheus]:
    """Prometheus listening on `host` only (loopback unless told otherwise; never a public
    interface), its data in `workdir`, scraping `targets` and, with `pods`, the pods
    discovered there; stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        discovered, pod_targets_file = None, None
        if pods is not None:
            pod_targets_file = workdir / "pods.json"
            discovered = stack.enter_context(pod_discovery.discovering(pods, pod_targets_file))
        config_path = workdir / "prometheus.yml"
        settings = config(targets, rule_files, pod_targets_file=pod_targets_file)
        config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
        port = processes.free_port(host)
        log_path = workdir / "prometheus.log"
        process = processes.spawn(
            [
                binary(),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={host}:{port}",
                "--log.level=warn",
            ],
            log_path=log_path,
        )
        stack.callback(processes.stop, process, timeout=10)
        server = Prometheus(url=f"http://{host}:{port}", log_path=log_path, discovered=discovered)
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {processes.log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready: {processes.log_tail(log_path)}")
            time.sleep(0.2)
        yield server
