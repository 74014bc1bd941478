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
    _client_certificate(pki_dir, "front-proxy-client", "/CN=front-proxy-client")
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


def _client_certificate(pki_dir: Path, name: str, subject: str) -> None:
    """`<name>.crt` and `<name>.key`: a client certificate signed by the cluster's CA."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "365", "-subj", subject,
        "-CA", str(pki_dir / "ca.crt"), "-CAkey", str(pki_dir / "ca.key"),
        "-keyout", str(pki_dir / f"{name}.key"), "-out", str(pki_dir / f"{name}.crt"),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", "extendedKeyUsage=clientAuth",
    )  # fmt: skip
    (pki_dir / f"{name}.key").chmod(0o600)


def write_kubelet_client_certificate(pki_dir: Path) -> None:
    """The apiserver's client certificate for kubelets (`--kubelet-client-certificate`)."""
    _client_certificate(pki_dir, "kubelet-client", KUBELET_CLIENT_SUBJECT)


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


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing any earlier one in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o600)
    temporary.replace(path)
