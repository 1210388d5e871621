"""Workloads the end-to-end tests deploy: images made in the test from this machine's static
binaries, loaded into the cluster's containerd, and kubectl as the cluster's admin."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import layout, oci_archive

BUSYBOX = Path("/bin/busybox")
PROBE_GO = layout.REPO / "build" / "bin" / "probe-go"
MIRRORD_TRACE = str(layout.REPO / ".venv" / "bin" / "mirrord-trace")


class Kube:
    """kubectl (the cluster's own build) as the admin of the test cluster."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(layout.KUBE), "kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def apply(self, *objects: dict) -> None:
        self.run("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))

    def wait(self, namespace: str, what: str, condition: str, timeout: int = 120) -> None:
        self.run(
            "wait",
            "-n",
            namespace,
            what,
            f"--for={condition}",
            f"--timeout={timeout}s",
            timeout=timeout + 10,
        )

    def namespace(self, name: str) -> None:
        """A fresh namespace: one left by an earlier session is first waited out of existence."""
        if self.run("get", "namespace", name, "--ignore-not-found", "-o", "name"):
            self.run("delete", "namespace", name, "--ignore-not-found", "--timeout=120s")
        self.run("create", "namespace", name)

    def delete_namespace(self, name: str) -> None:
        # No waiting: the pods' graceful ends take time the next module need not spend.
        self.run("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def busybox_image(name: str) -> str:
    """An image holding Debian's static busybox (sh, httpd, wget, nslookup, nc as applets) and
    the static Go probe (its UDP echo server: busybox has none), packed as an OCI archive here
    and imported into the cluster's containerd; -> its name."""
    with tempfile.TemporaryDirectory() as work:
        rootfs = Path(work) / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        (rootfs / "www").mkdir()
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        shutil.copy2(PROBE_GO, rootfs / "bin" / "probe-go")
        for applet in ("sh", "httpd", "wget", "nslookup", "nc", "sleep", "cat", "echo", "env"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        archive = Path(work) / "image.tar"
        oci_archive.build(rootfs, archive, name, ["/bin/sh"], env=["PATH=/bin"])
        import_image(archive)
    return name


def import_image(archive: Path) -> None:
    subprocess.run(
        [
            "ctr",
            "--address",
            str(layout.CONTAINERD_SOCK),
            "-n",
            "k8s.io",
            "images",
            "import",
            str(archive),
        ],
        check=True,
        capture_output=True,
    )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Polls until predicate() is truthy; -> its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
