"""A real, local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (fake nodes), all on 127.0.0.1 with random free ports.

    python -m order_devtools.cluster up | down | status

`up` builds the binaries once (tools/k8s-build/build.sh, cached outside the repo), starts every
component from a per-cluster state directory (`.cluster/` for the CLI), waits until the cluster is
usable, and writes an admin kubeconfig. `down` stops exactly the processes `up` started.

The same code backs the pytest fixtures (`start_cluster`), including identities of real
ServiceAccounts (`Cluster.service_account_kubeconfig`) so RBAC is tested as a workload sees it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from order_devtools import processes

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "k8s-build" / "build.sh"
DEFAULT_CLUSTER_DIR = REPO_ROOT / ".cluster"
STATE_FILE_NAME = "cluster.json"

FAKE_NODE_COUNT = 2
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Neither range is ever dialled: there is no kube-proxy and kwok's pods have no network.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
FAKE_POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "order-pipeline-admin"
LOOPBACK = "127.0.0.1"

# Start order; `stop` goes in reverse (API clients first, etcd last) so nothing logs error storms.
COMPONENT_ORDER = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached; the message says why."""


# ---------------------------------------------------------------------------------------------
# Binaries


@dataclass(frozen=True)
class Toolchain:
    """The built (or cached) binaries and the kwok stage configuration of one version key."""

    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def kwok_stages(self) -> Path:
        return self.root / "kwok-stages.yaml"

    def binary(self, name: str) -> Path:
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise ClusterError(f"{name} is missing from {self.bin_dir}; run {BUILD_SCRIPT}")
        return path

    @property
    def kubectl(self) -> Path:
        return self.binary("kubectl")

    @property
    def helm(self) -> Path:
        return self.binary("helm")


def pinned_kubernetes_version() -> str:
    """The k8s.io/kubernetes version the recipe pins (what /version must report)."""
    go_mod = (BUILD_SCRIPT.parent / "kube" / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)$", go_mod, re.MULTILINE)
    if match is None:
        raise ClusterError(f"no k8s.io/kubernetes requirement in {BUILD_SCRIPT.parent}/kube/go.mod")
    return match.group(1)


def ensure_toolchain(*, progress: Callable[[str], None] | None = None) -> Toolchain:
    """Run the build script (instant when everything is cached) and return its outputs.

    The script's progress lines are passed to `progress` (stderr by default) as they come, since
    a cold build takes many minutes; on failure the last of them become the error message.
    """
    report = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    if not BUILD_SCRIPT.is_file():
        raise ClusterError(f"the build recipe {BUILD_SCRIPT} is missing")
    if shutil.which("bash") is None:
        raise ClusterError("'bash' is not on PATH; it runs the control plane build script")
    last_lines: deque[str] = deque(maxlen=25)
    # stdout carries only the result (the output directory); stderr is the progress log.
    with (
        tempfile.TemporaryFile("w+") as result_file,
        subprocess.Popen(
            ["bash", str(BUILD_SCRIPT)],
            stdout=result_file,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        ) as build,
    ):
        assert build.stderr is not None
        for raw_line in build.stderr:
            line = raw_line.rstrip("\n")
            last_lines.append(line)
            report(line)
        return_code = build.wait()
        result_file.seek(0)
        output_lines = result_file.read().split()
    if return_code != 0 or not output_lines:
        details = "\n".join(last_lines)
        raise ClusterError(
            f"building the Kubernetes control plane failed ({BUILD_SCRIPT}, exit {return_code}):"
            f"\n{details}"
        )
    toolchain = Toolchain(Path(output_lines[-1]))
    for name in COMPONENT_ORDER:
        toolchain.binary(name)
    return toolchain


# ---------------------------------------------------------------------------------------------
# Processes


def _process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` since boot, or None when it is gone (or a zombie).

    Stored next to every pid so `down` never signals an unrelated process that reused the pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces or parentheses; fields after it are fixed.
    fields_after_name = stat.rsplit(")", 1)[1].split()
    if fields_after_name[0] == "Z":
        return None
    return int(fields_after_name[19])


@dataclass
class ComponentProcess:
    name: str
    pid: int
    start_ticks: int
    log_path: str
    popen: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    def is_alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return _process_start_ticks(self.pid) == self.start_ticks

    def log_tail(self, lines: int = 30) -> str:
        return processes.log_tail(Path(self.log_path), lines)

    def stop(self, grace_seconds: float = 10.0) -> None:
        if not self.is_alive():
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            self._reap()
            if not self.is_alive():
                return
            time.sleep(0.05)
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self._reap(block=True)

    def _reap(self, block: bool = False) -> None:
        if self.popen is None:
            return
        if block:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        else:
            self.popen.poll()


def _spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str],
    *,
    exit_with_parent: bool,
) -> ComponentProcess:
    log_path = log_dir / f"{name}.log"
    # A session of its own: Ctrl-C in the terminal that ran `up` must not stop the cluster.
    popen = processes.spawn(
        argv, log_path=log_path, env=env, own_session=True, die_with_parent=exit_with_parent
    )
    start_ticks = _process_start_ticks(popen.pid)
    if start_ticks is None:
        popen.wait()
        raise ClusterError(f"{name} exited immediately; see {log_path}")
    return ComponentProcess(name, popen.pid, start_ticks, str(log_path), popen)


def _free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; all sockets stay open until every port is chosen."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind((LOOPBACK, 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


# ---------------------------------------------------------------------------------------------
# Credentials


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise ClusterError("'openssl' is not on PATH; it makes the cluster's keys and certificates")
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _write_credentials(pki_dir: Path) -> str:
    """A CA, the apiserver's serving certificate, the ServiceAccount signing key pair and the
    admin token file. Returns the admin bearer token."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec_key, "-days", "3650", "-subj", "/CN=order-pipeline-local-ca",
        "-keyout", str(pki_dir / "ca.key"), "-out", str(pki_dir / "ca.crt"),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-x509", *ec_key, "-days", "365", "-subj", "/CN=kube-apiserver",
        "-CA", str(pki_dir / "ca.crt"), "-CAkey", str(pki_dir / "ca.key"),
        "-keyout", str(pki_dir / "apiserver.key"), "-out", str(pki_dir / "apiserver.crt"),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", "extendedKeyUsage=serverAuth",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
    )  # fmt: skip
    # The aggregation layer's client identity; also lets the controller-manager and scheduler
    # find a complete extension-apiserver-authentication ConfigMap.
    _openssl(
        "req", "-x509", *ec_key, "-days", "365", "-subj", "/CN=front-proxy-client",
        "-CA", str(pki_dir / "ca.crt"), "-CAkey", str(pki_dir / "ca.key"),
        "-keyout", str(pki_dir / "front-proxy-client.key"),
        "-out", str(pki_dir / "front-proxy-client.crt"),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", "extendedKeyUsage=clientAuth",
    )  # fmt: skip
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-out", str(pki_dir / "sa.key"),
    )  # fmt: skip
    _openssl("pkey", "-in", str(pki_dir / "sa.key"), "-pubout", "-out", str(pki_dir / "sa.pub"))
    admin_token = base64.b32encode(os.urandom(20)).decode().lower()
    # token,user,uid,"group1,group2"
    tokens_csv = pki_dir / "tokens.csv"
    tokens_csv.write_text(f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    for secret in pki_dir.glob("*.key"):
        secret.chmod(0o600)
    tokens_csv.chmod(0o600)
    return admin_token


def kubeconfig_text(server: str, ca_pem: bytes, user: str, token: str, namespace: str = "") -> str:
    """A kubeconfig (JSON is valid YAML) with the CA embedded, so it works from any directory."""
    context: dict[str, str] = {"cluster": "order-pipeline-local", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "order-pipeline-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "order-pipeline-local", "context": context}],
        "current-context": "order-pipeline-local",
    }
    return json.dumps(config, indent=2) + "\n"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o600)
    temporary.replace(path)


# ---------------------------------------------------------------------------------------------
# A minimal API client (stdlib only, so `cluster up` needs nothing but Python)


class ApiError(ClusterError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class ApiClient:
    server: str
    ca_file: Path
    token: str

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, timeout: float = 10
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the server is always https://127.0.0.1
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - see above
                request, timeout=timeout, context=self._context()
            ) as response:
                payload = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiError(
                error.code, method, path, error.read().decode(errors="replace")
            ) from None
        if not payload:
            return None
        try:
            return json.loads(payload)
        except json.JSONDecodeError:
            return payload

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, body)


def _probe_https_health(port: int) -> bool:
    """controller-manager and scheduler serve /healthz with a self-signed certificate they make
    at start; only liveness is checked here, on loopback, so the certificate is not verified."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"https://{LOOPBACK}:{port}/healthz", timeout=2, context=context
        ) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


# ---------------------------------------------------------------------------------------------
# The cluster


@dataclass
class Cluster:
    state_dir: Path
    toolchain: Toolchain
    ports: dict[str, int]
    admin_token: str
    processes: list[ComponentProcess]
    started_at: float
    ready_seconds: float = 0.0

    # -- paths and clients

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def api(self) -> ApiClient:
        return ApiClient(self.server, self.ca_file, self.admin_token)

    def process(self, name: str) -> ComponentProcess:
        for component in self.processes:
            if component.name == name:
                return component
        raise KeyError(name)

    def is_running(self) -> bool:
        return bool(self.processes) and all(component.is_alive() for component in self.processes)

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """Environment for a subprocess that talks to this cluster (kubectl and helm on PATH)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env["PATH"] = f"{self.toolchain.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        # Helm keeps caches and repository config per user; keep them inside the cluster state.
        for variable, sub_dir in (
            ("HELM_CACHE_HOME", "helm/cache"),
            ("HELM_CONFIG_HOME", "helm/config"),
            ("HELM_DATA_HOME", "helm/data"),
        ):
            env[variable] = str(self.state_dir / sub_dir)
        return env

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return _run_tool(
            [str(self.toolchain.kubectl), *args], self.env(kubeconfig), check=check, timeout=timeout
        )

    def helm(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return _run_tool(
            [str(self.toolchain.helm), *args], self.env(kubeconfig), check=check, timeout=timeout
        )

    # -- ServiceAccount identities

    def service_account_token(
        self, namespace: str, name: str, expiration_seconds: int = 3600
    ) -> str:
        """A bound token for an existing ServiceAccount, from the TokenRequest API: exactly the
        credential a pod of that ServiceAccount gets."""
        response = self.api.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        return str(response["status"]["token"])

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | None = None, expiration_seconds: int = 3600
    ) -> Path:
        """Write a kubeconfig that authenticates as system:serviceaccount:<namespace>:<name>."""
        token = self.service_account_token(namespace, name, expiration_seconds)
        target = path or self.state_dir / "identities" / f"{namespace}.{name}.kubeconfig"
        user = f"system:serviceaccount:{namespace}:{name}"
        _write_private(
            target, kubeconfig_text(self.server, self.ca_file.read_bytes(), user, token, namespace)
        )
        return target

    def run_as_service_account(
        self,
        namespace: str,
        name: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        timeout: float = 120,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a process with the ServiceAccount's KUBECONFIG, as the operator runs in-cluster."""
        env = self.env(self.service_account_kubeconfig(namespace, name))
        env.update(extra_env or {})
        return _run_tool(list(argv), env, check=check, timeout=timeout)

    # -- lifecycle

    def stop(self, remove_state: bool = True) -> None:
        """Stop exactly the processes this cluster started (verified by pid and start time)."""
        for component in reversed(self.processes):
            component.stop()
        if remove_state:
            _remove_state_dir(self.state_dir)

    def describe(self) -> str:
        lines = [
            f"Kubernetes control plane is up: {self.server} (state in {self.state_dir})",
            "  pids: "
            + ", ".join(f"{component.name}={component.pid}" for component in self.processes),
            f"  binaries: {self.toolchain.bin_dir}",
            "Use it with:",
            f"  export KUBECONFIG={self.kubeconfig}",
            f'  export PATH="{self.toolchain.bin_dir}:$PATH"   # kubectl, helm',
            "  kubectl get nodes",
        ]
        return "\n".join(lines)

    # -- persistence, so `down` and `status` can find what `up` started

    def save(self) -> None:
        state = {
            "toolchain": str(self.toolchain.root),
            "ports": self.ports,
            "admin_token": self.admin_token,
            "started_at": self.started_at,
            "ready_seconds": self.ready_seconds,
            "processes": [
                {
                    "name": component.name,
                    "pid": component.pid,
                    "start_ticks": component.start_ticks,
                    "log_path": component.log_path,
                }
                for component in self.processes
            ],
        }
        _write_private(self.state_dir / STATE_FILE_NAME, json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> Cluster | None:
        try:
            state = json.loads((state_dir / STATE_FILE_NAME).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return cls(
            state_dir=state_dir,
            toolchain=Toolchain(Path(state["toolchain"])),
            ports={key: int(value) for key, value in state["ports"].items()},
            admin_token=str(state["admin_token"]),
            processes=[ComponentProcess(**component) for component in state["processes"]],
            started_at=float(state["started_at"]),
            ready_seconds=float(state.get("ready_seconds", 0.0)),
        )


def _run_tool(
    argv: list[str], env: Mapping[str, str], *, check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise ClusterError(
            f"{Path(argv[0]).name} {' '.join(argv[1:])} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def _component_env(state_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
    # kwok would otherwise also read ~/.kwok/kwok.yaml, whatever a developer left there.
    env["KWOK_WORKDIR"] = str(state_dir / "kwok")
    return env


def _component_argv(
    toolchain: Toolchain, state_dir: Path, ports: Mapping[str, int]
) -> dict[str, list[str]]:
    pki = state_dir / "pki"
    kubeconfig = str(state_dir / "kubeconfig")
    etcd_url = f"http://{LOOPBACK}:{ports['etcd']}"
    etcd_peer_url = f"http://{LOOPBACK}:{ports['etcd_peer']}"
    return {
        "etcd": [
            str(toolchain.binary("etcd")),
            "--name=local",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={etcd_peer_url}",
            f"--initial-advertise-peer-urls={etcd_peer_url}",
            f"--initial-cluster=local={etcd_peer_url}",
            # Throw-away data: fsync only costs time.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(toolchain.binary("kube-apiserver")),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}",
            # The `kubernetes` Service gets no endpoints: a loopback address is invalid there and
            # nothing in this cluster dials it (no kube-proxy, no real pods).
            "--endpoint-reconciler-type=none",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            # On top of the default set (which already has PodSecurity, ServiceAccount, ...).
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
            "DefaultStorageClass,DefaultTolerationSeconds,PodSecurity,Priority,ResourceQuota,"
            "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
            # Privileged pods must reach Pod Security Admission to be judged there.
            "--allow-privileged=true",
            "--profiling=false",
            "--enable-priority-and-fairness=true",
        ],
        "kube-controller-manager": [
            str(toolchain.binary("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports['controller_manager']}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        ],
        "kube-scheduler": [
            str(toolchain.binary("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
        ],
        "kwok": [
            str(toolchain.binary("kwok")),
            f"--kubeconfig={kubeconfig}",
            f"--config={toolchain.kwok_stages}",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={FAKE_POD_CIDR}",
            "--node-lease-duration-seconds=40",
        ],
    }


def _fake_node(name: str) -> dict[str, Any]:
    resources = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {"allocatable": resources, "capacity": resources, "phase": "Running"},
    }


def _node_is_ready(node: Mapping[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    # The node lifecycle controller lifts this taint after Ready; until then nothing schedules.
    not_ready_taint = any(
        taint.get("key") == "node.kubernetes.io/not-ready"
        for taint in node.get("spec", {}).get("taints", [])
    )
    return ready and not not_ready_taint


def _wait_for(
    description: str,
    condition: Callable[[], bool],
    deadline: float,
    processes: Sequence[ComponentProcess],
) -> None:
    last_error = ""
    while True:
        for component in processes:
            if not component.is_alive():
                raise ClusterError(
                    f"{component.name} exited while waiting for {description}; "
                    f"last lines of {component.log_path}:\n{component.log_tail()}"
                )
        try:
            if condition():
                return
        except (OSError, ClusterError, KeyError, ValueError) as error:
            last_error = str(error)
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {component.name} ({component.log_path}):\n{component.log_tail(15)}"
                for component in processes
            )
            raise ClusterError(f"timed out waiting for {description} ({last_error})\n{logs}")
        time.sleep(0.1)


def _remove_state_dir(state_dir: Path) -> None:
    """Delete a cluster state directory, refusing anything that does not look like one, so a
    mistyped `--dir` never deletes unrelated files."""
    if not state_dir.exists():
        return
    is_ours = (state_dir / STATE_FILE_NAME).exists() or (state_dir / "pki" / "tokens.csv").exists()
    if not is_ours and any(state_dir.iterdir()):
        raise ClusterError(f"{state_dir} is not empty and holds no cluster state; not deleting it")
    shutil.rmtree(state_dir)


def start_cluster(
    state_dir: Path,
    *,
    toolchain: Toolchain | None = None,
    node_count: int = FAKE_NODE_COUNT,
    timeout_seconds: float = 90,
    exit_with_parent: bool = True,
) -> Cluster:
    """Start a fresh control plane whose state lives in `state_dir` (emptied first) and return
    once the API is ready, the controllers and scheduler are healthy and the nodes are Ready.

    With `exit_with_parent` (the default, for test fixtures) the components die with this
    process; `cluster up` turns it off so the cluster outlives the command."""
    toolchain = toolchain or ensure_toolchain()
    started_at = time.time()
    started = time.monotonic()
    deadline = started + timeout_seconds
    state_dir = state_dir.resolve()
    _remove_state_dir(state_dir)
    for sub_dir in ("logs", "etcd", "kwok"):
        (state_dir / sub_dir).mkdir(parents=True, mode=0o700)

    port_names = ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler")
    ports = dict(zip(port_names, _free_loopback_ports(len(port_names)), strict=True))
    admin_token = _write_credentials(state_dir / "pki")
    cluster = Cluster(state_dir, toolchain, ports, admin_token, [], started_at)
    _write_private(
        cluster.kubeconfig,
        kubeconfig_text(cluster.server, cluster.ca_file.read_bytes(), ADMIN_USER, admin_token),
    )
    argv = _component_argv(toolchain, state_dir, ports)
    env = _component_env(state_dir)
    log_dir = state_dir / "logs"
    api = cluster.api

    def spawn(name: str) -> None:
        component = _spawn(name, argv[name], log_dir, env, exit_with_parent=exit_with_parent)
        cluster.processes.append(component)
        cluster.save()  # after every start, so `down` can stop a half-started cluster

    try:
        # The apiserver retries etcd on its own, so both start at once.
        spawn("etcd")
        spawn("kube-apiserver")
        _wait_for(
            "kube-apiserver /readyz",
            lambda: api.get("/readyz") == "ok",
            deadline,
            cluster.processes,
        )
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            spawn(name)
        for index in range(node_count):
            api.create("/api/v1/nodes", _fake_node(f"kwok-node-{index}"))

        def nodes_ready() -> bool:
            nodes = api.get("/api/v1/nodes")["items"]
            return len(nodes) >= node_count and all(_node_is_ready(node) for node in nodes)

        def default_service_account_exists() -> bool:
            # Made by the controller-manager's serviceaccount controller: it is up and working.
            api.get("/api/v1/namespaces/default/serviceaccounts/default")
            return True

        _wait_for(
            "the controller-manager's /healthz",
            lambda: _probe_https_health(ports["controller_manager"]),
            deadline,
            cluster.processes,
        )
        _wait_for(
            "the scheduler's /healthz",
            lambda: _probe_https_health(ports["scheduler"]),
            deadline,
            cluster.processes,
        )
        _wait_for(
            "the default ServiceAccount",
            default_service_account_exists,
            deadline,
            cluster.processes,
        )
        _wait_for(f"{node_count} Ready kwok nodes", nodes_ready, deadline, cluster.processes)
    except BaseException:
        cluster.stop(remove_state=False)  # keep the logs for the error report
        raise
    cluster.ready_seconds = round(time.monotonic() - started, 1)
    cluster.save()
    return cluster


# ---------------------------------------------------------------------------------------------
# CLI


def _stop_stale(state_dir: Path) -> None:
    stale = Cluster.load(state_dir)
    if stale is not None:
        stale.stop(remove_state=False)
    _remove_state_dir(state_dir)


def command_up(state_dir: Path) -> int:
    existing = Cluster.load(state_dir)
    if existing is not None and existing.is_running():
        print("Already running (started by an earlier `cluster up`).")
        print(existing.describe())
        return 0
    if existing is not None or state_dir.exists():
        print(f"Cleaning up a stopped or half-started cluster in {state_dir}.", file=sys.stderr)
        _stop_stale(state_dir)
    toolchain = ensure_toolchain()
    cluster = start_cluster(state_dir, toolchain=toolchain, exit_with_parent=False)
    print(cluster.describe())
    print(f"Ready in {cluster.ready_seconds:.1f} s. Stop it with `make cluster-down`.")
    return 0


def command_down(state_dir: Path) -> int:
    cluster = Cluster.load(state_dir)
    if cluster is None:
        if state_dir.exists():
            _remove_state_dir(state_dir)
            print(f"No cluster state found; removed {state_dir}.")
        else:
            print("No cluster is running.")
        return 0
    running = [component.name for component in cluster.processes if component.is_alive()]
    cluster.stop(remove_state=True)
    print(f"Stopped {', '.join(running) or 'nothing (all had exited)'}; removed {state_dir}.")
    return 0


def command_status(state_dir: Path) -> int:
    cluster = Cluster.load(state_dir)
    if cluster is None:
        print("No cluster is running.")
        return 1
    for component in cluster.processes:
        state = "running" if component.is_alive() else "EXITED"
        print(f"{component.name:<24} pid {component.pid:<8} {state}   log {component.log_path}")
    if not cluster.is_running():
        print("The cluster is not healthy; run `make cluster-down` and `make cluster-up`.")
        return 1
    try:
        version = cluster.api.get("/version")
        readyz = cluster.api.get("/readyz")
        nodes = cluster.api.get("/api/v1/nodes")["items"]
    except (OSError, ClusterError) as error:
        print(f"The API server does not answer: {error}")
        return 1
    ready_nodes = sum(1 for node in nodes if _node_is_ready(node))
    print(
        f"API {cluster.server}: /readyz {readyz}, version {version['gitVersion']}, "
        f"{ready_nodes}/{len(nodes)} nodes Ready"
    )
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m order_devtools.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_CLUSTER_DIR,
        help=f"cluster state directory (default: {DEFAULT_CLUSTER_DIR})",
    )
    arguments = parser.parse_args(argv)
    state_dir: Path = arguments.dir.resolve()
    commands = {"up": command_up, "down": command_down, "status": command_status}
    try:
        return commands[arguments.command](state_dir)
    except ClusterError as error:
        print(f"cluster {arguments.command} failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
