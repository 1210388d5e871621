"""The cluster's PKI, made with openssl: a CA, the API server's serving certificate, one client
certificate per identity (admin, each component, the kubelet, the API server towards kubelets)
and the service-account signing key pair."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.cluster import layout

# name -> (CN, O): the identities Kubernetes' default RBAC and Node authorizer know.
CLIENTS = {
    "admin": ("mirrord-trace-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kube-proxy": ("system:kube-proxy", ""),
    "kubelet": (f"system:node:{layout.NODE_NAME}", "system:nodes"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _issue(pki: Path, name: str, subject: str, extensions: str) -> None:
    """A P-256 key and a certificate for it signed by the cluster's CA."""
    with tempfile.NamedTemporaryFile("w", suffix=".cnf") as config:
        config.write(
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n"
            f"[dn]\n{subject}\n[ext]\nbasicConstraints = critical, CA:FALSE\n"
            f"keyUsage = critical, digitalSignature, keyEncipherment\n{extensions}\n"
        )
        config.flush()
        _openssl(
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-config",
            config.name,
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-CA",
            str(pki / "ca.crt"),
            "-CAkey",
            str(pki / "ca.key"),
            "-days",
            "365",
            "-keyout",
            str(pki / f"{name}.key"),
            "-out",
            str(pki / f"{name}.crt"),
        )


def issue_client(name: str, cn: str, org: str = "", pki: Path = layout.PKI) -> None:
    """One more client certificate (a test's user), as pki/NAME.crt and pki/NAME.key."""
    _issue(pki, name, _subject(cn, org), "extendedKeyUsage = clientAuth")


def _subject(cn: str, org: str) -> str:
    return (f"O = {org}\n" if org else "") + f"CN = {cn}"


def generate(node_ip: str, pki: Path = layout.PKI) -> None:
    """Writes the whole PKI unless it is already there (a second `up` keeps the first's)."""
    if (pki / "done").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-subj",
        "/CN=mirrord-trace-cluster-ca",
        "-days",
        "3650",
        "-keyout",
        str(pki / "ca.key"),
        "-out",
        str(pki / "ca.crt"),
    )
    names = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
        "localhost",
    ]
    ips = [node_ip, "127.0.0.1", layout.APISERVER_SERVICE_IP]
    sans = ", ".join([f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips])
    _issue(
        pki,
        "apiserver",
        _subject("kube-apiserver", ""),
        f"extendedKeyUsage = serverAuth\nsubjectAltName = {sans}",
    )
    for name, (cn, org) in CLIENTS.items():
        _issue(pki, name, _subject(cn, org), "extendedKeyUsage = clientAuth")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "sa.key"))
    _openssl("ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    (pki / "done").touch()
