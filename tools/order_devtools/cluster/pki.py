"""The local cluster's credentials: a CA, the apiserver's serving certificate, the front proxy's
client certificate, the ServiceAccount signing keys and the admin token (all made with openssl),
and kubeconfig files that carry them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from order_devtools.cluster.errors import ClusterError

ADMIN_USER = "order-pipeline-admin"
# The apiserver's identity towards kubelets (logs, exec, port-forward); system:masters lets the
# kubelet's webhook authorizer allow it everything.
KUBELET_CLIENT_SUBJECT = "/O=system:masters/CN=kube-apiserver-kubelet-client"


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise ClusterError("'openssl' is not on PATH; it makes the cluster's keys and certificates")
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def write_credentials(pki_dir: Path, *, extra_ip_sans: Sequence[str] = ()) -> str:
    """A CA, the apiserver's serving certificate, the ServiceAccount signing key pair and the
    admin token file. Returns the admin bearer token.

    `extra_ip_sans`: more addresses the serving certificate is valid for (a real node's pods
    reach the apiserver at the `kubernetes` Service IP and at the node's bridge address)."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ip_sans = "".join(f"IP:{address}," for address in ("127.0.0.1", *extra_ip_sans))
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
        "-addext", f"subjectAltName={ip_sans}DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
    )  # fmt: skip
    # The aggregation layer's client identity; also lets the controller-manager and scheduler
    # find a complete extension-apiserver-authentication ConfigMap.
    write_client_certificate(pki_dir, "front-proxy-client", "front-proxy-client")
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


def write_client_certificate(pki_dir: Path, name: str, user: str) -> tuple[Path, Path]:
    """A client certificate for `user`, signed by the cluster CA (the API server's
    --client-ca-file): the identity of a host process such as CoreDNS, which, unlike a pod,
    gets no ServiceAccount token renewed for it. Returns (certificate, key)."""
    certificate, key = pki_dir / f"{name}.crt", pki_dir / f"{name}.key"
    _signed_by_cluster_ca(certificate, key, f"/CN={user}", "clientAuth")
    return certificate, key


def write_serving_certificate(pki_dir: Path, name: str, dns_names: list[str]) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 and `dns_names`, signed by the cluster CA (so the API
    server can verify an aggregated API server with the CA as its caBundle).
    Returns (certificate, key)."""
    certificate, key = pki_dir / f"{name}.crt", pki_dir / f"{name}.key"
    alt_names = ",".join(["IP:127.0.0.1", *(f"DNS:{dns_name}" for dns_name in dns_names)])
    _signed_by_cluster_ca(
        certificate, key, f"/CN={dns_names[0]}", "serverAuth", f"subjectAltName={alt_names}"
    )
    return certificate, key


def _signed_by_cluster_ca(
    certificate: Path, key: Path, subject: str, extended_key_usage: str, *extensions: str
) -> None:
    pki_dir = certificate.parent
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "365", "-subj", subject,
        "-CA", str(pki_dir / "ca.crt"), "-CAkey", str(pki_dir / "ca.key"),
        "-keyout", str(key), "-out", str(certificate),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", f"extendedKeyUsage={extended_key_usage}",
        *(argument for extension in extensions for argument in ("-addext", extension)),
    )  # fmt: skip
    key.chmod(0o600)


def write_kubelet_client_certificate(pki_dir: Path) -> None:
    """The apiserver's client certificate for kubelets (`--kubelet-client-certificate`)."""
    certificate, key = pki_dir / "kubelet-client.crt", pki_dir / "kubelet-client.key"
    _signed_by_cluster_ca(certificate, key, KUBELET_CLIENT_SUBJECT, "clientAuth")


def kubeconfig_text(server: str, ca_pem: bytes, user: str, token: str, namespace: str = "") -> str:
    """A kubeconfig (JSON is valid YAML) with the CA embedded, so it works from any directory."""
    return _kubeconfig_json(server, ca_pem, user, {"token": token}, namespace)


def client_certificate_kubeconfig_text(
    server: str, ca_pem: bytes, user: str, certificate_pem: bytes, key_pem: bytes
) -> str:
    """A kubeconfig that authenticates with a client certificate, everything embedded."""
    credentials = {
        "client-certificate-data": base64.b64encode(certificate_pem).decode(),
        "client-key-data": base64.b64encode(key_pem).decode(),
    }
    return _kubeconfig_json(server, ca_pem, user, credentials, "")


def _kubeconfig_json(
    server: str, ca_pem: bytes, user: str, credentials: dict[str, str], namespace: str
) -> str:
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
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "order-pipeline-local", "context": context}],
        "current-context": "order-pipeline-local",
    }
    return json.dumps(config, indent=2) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing any earlier one in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o600)
    temporary.replace(path)
