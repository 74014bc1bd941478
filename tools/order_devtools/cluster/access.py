"""Reaching a Kubernetes cluster the way tests and tools need to: an admin `kubernetes` client,
kubectl and helm with the right KUBECONFIG, and credentials of real ServiceAccounts.

`ClusterAccess` is shared by the local control plane (`control_plane.Cluster`) and by an
`ExistingCluster` known only by its kubeconfig (the e2e fixtures' ORDER_PIPELINE_KUBECONFIG).
"""

from __future__ import annotations

import abc
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config

from order_devtools.cluster.errors import ClusterError
from order_devtools.cluster.pki import kubeconfig_text, write_private
from order_devtools.cluster.toolchain import Toolchain


def run_tool(
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


class ClusterAccess(abc.ABC):
    """One cluster as its admin sees it, plus the pinned kubectl and helm to run against it.

    Subclasses provide `state_dir` (helm caches and ServiceAccount kubeconfigs go there),
    `toolchain` and the admin `kubeconfig`.
    """

    state_dir: Path
    toolchain: Toolchain

    @property
    @abc.abstractmethod
    def kubeconfig(self) -> Path: ...

    def api_client(self) -> client.ApiClient:
        """A new admin `kubernetes` client; close it (or use it in a `with` block) when done."""
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig),
            client_configuration=configuration,
            persist_config=False,
        )
        return client.ApiClient(configuration)

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
        return run_tool(
            [str(self.toolchain.kubectl), *args], self.env(kubeconfig), check=check, timeout=timeout
        )

    def helm(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_tool(
            [str(self.toolchain.helm), *args], self.env(kubeconfig), check=check, timeout=timeout
        )

    # -- ServiceAccount identities

    def service_account_token(
        self, namespace: str, name: str, expiration_seconds: int = 3600
    ) -> str:
        """A bound token for an existing ServiceAccount, from the TokenRequest API: exactly the
        credential a pod of that ServiceAccount gets."""
        # No audiences: the API server then binds the token to its own, as for a pod's token.
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        with self.api_client() as api:
            response = client.CoreV1Api(api).create_namespaced_service_account_token(
                name, namespace, request
            )
        token = response.status.token if response.status is not None else None
        if not token:
            raise ClusterError(f"the TokenRequest for {namespace}/{name} returned no token")
        return token

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | None = None, expiration_seconds: int = 3600
    ) -> Path:
        """Write a kubeconfig that authenticates as system:serviceaccount:<namespace>:<name>."""
        token = self.service_account_token(namespace, name, expiration_seconds)
        server, ca_pem = self._server_and_ca()
        target = path or self.state_dir / "identities" / f"{namespace}.{name}.kubeconfig"
        user = f"system:serviceaccount:{namespace}:{name}"
        write_private(target, kubeconfig_text(server, ca_pem, user, token, namespace))
        return target

    def _server_and_ca(self) -> tuple[str, bytes]:
        """The API server's URL and CA certificate, as the admin kubeconfig names them."""
        with self.api_client() as api:
            configuration = api.configuration
            server, ca_file = str(configuration.host), configuration.ssl_ca_cert
        if not ca_file:
            raise ClusterError(
                f"{self.kubeconfig} names no certificate authority for {server}; "
                "ServiceAccount kubeconfigs need one to trust the API server"
            )
        return server, Path(ca_file).read_bytes()

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
        return run_tool(list(argv), env, check=check, timeout=timeout)


@dataclass
class ExistingCluster(ClusterAccess):
    """A cluster someone else runs, reached through `admin_kubeconfig`; never started or stopped
    here."""

    admin_kubeconfig: Path
    state_dir: Path
    toolchain: Toolchain

    @property
    def kubeconfig(self) -> Path:
        return self.admin_kubeconfig

    def check_reachable(self) -> str:
        """The server's version, or a ClusterError saying why the cluster cannot be used."""
        if not self.admin_kubeconfig.is_file():
            raise ClusterError(f"the kubeconfig {self.admin_kubeconfig} does not exist")
        try:
            with self.api_client() as api:
                return str(client.VersionApi(api).get_code().git_version)
        except Exception as error:  # config, TLS, auth and HTTP errors all mean "unusable"
            raise ClusterError(
                f"the cluster of {self.admin_kubeconfig} does not answer: {error}"
            ) from error
