"""The stand-in's node: runs the containers of pods bound to it as real processes of this
machine, reports their state in the pod status as a kubelet does, and dials port-forwards
inside the pod's network namespace.

What an image does is what the node's "registry" says (`images`): RUNS (the container's
command is executed; `python3` is this interpreter, with the repository on PYTHONPATH, which
is what the agent image contains), HANGS (the pull never finishes: the container waits in
ContainerCreating). Any other image fails to pull (ErrImagePull, then ImagePullBackOff).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from agent.target.linux import CLONE_NEWNET, setns
from tests.kube_standin import objects
from tests.kube_standin.store import Store

Obj = dict[str, Any]
_LOG_TAIL_BYTES = 2048  # what FallbackToLogsOnError keeps of the log
_PULL_RETRY_SECONDS = 0.5


class Image(Enum):
    RUNS = "runs"
    HANGS = "hangs"


def image_reference(image: str) -> str:
    """The fully qualified reference containerd names: nginx -> docker.io/library/nginx:latest."""
    path, _, last = image.rpartition("/")
    base, _, tag = last.partition(":")
    name = f"{path}/{base}" if path else base
    registry = name.split("/")[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in registry and ":" not in registry and registry != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag or 'latest'}"


@dataclass
class RunningContainer:
    process: subprocess.Popen[bytes]
    log_path: Path
    container_id: str


class Kubelet:
    def __init__(
        self,
        store: Store,
        node_name: str,
        host_ip: str,
        workdir: Path,
        images: dict[str, Image],
        on_pod_finished: Callable[[Obj], None],
    ) -> None:
        self.store = store
        self.node_name = node_name
        self.host_ip = host_ip
        self.workdir = workdir
        self.images = images
        self.on_pod_finished = on_pod_finished
        # (namespace, pod) -> network namespace path of pods that have their own (the others
        # use this machine's network, like hostNetwork pods).
        self.pod_netns: dict[tuple[str, str], str] = {}
        self.containers: dict[tuple[str, str, str], RunningContainer] = {}
        self._lock = threading.Lock()
        self._logs = Path(tempfile.mkdtemp(prefix="standin-kubelet-"))
        self._closed = threading.Event()

    # -- pods --
    def start_pod(self, pod: Obj) -> None:
        """A pod was bound to this node: pull its images, start its containers."""
        threading.Thread(target=self._run_pod, args=(pod,), daemon=True).start()

    def _run_pod(self, pod: Obj) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        pod_ip = self.host_ip
        self._set_status(
            namespace,
            name,
            objects.scheduled_status(pod, self.host_ip, pod_ip, {"reason": "ContainerCreating"}),
        )
        containers = pod["spec"]["containers"]
        if not self._pull_all(namespace, name, containers, "containerStatuses"):
            return
        ids = {}
        for container in containers:
            running = self._start(namespace, name, container, netns=None)
            ids[container["name"]] = running.container_id
        current = self.store.get("Pod", namespace, name)
        if current is None or current["metadata"].get("deletionTimestamp"):
            return
        self._set_status(namespace, name, objects.running_status(pod, self.host_ip, pod_ip, ids))
        for container in containers:
            self._watch_exit(namespace, name, container, "containerStatuses")

    def start_ephemeral(self, pod: Obj, container: Obj) -> None:
        threading.Thread(target=self._run_ephemeral, args=(pod, container), daemon=True).start()

    def _run_ephemeral(self, pod: Obj, container: Obj) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self._set_container_status(
            namespace,
            name,
            "ephemeralContainerStatuses",
            objects.container_status(container, {"waiting": {"reason": "ContainerCreating"}}),
        )
        if not self._pull_all(namespace, name, [container], "ephemeralContainerStatuses"):
            return
        running = self._start(
            namespace, name, container, netns=self.pod_netns.get((namespace, name))
        )
        self._set_container_status(
            namespace,
            name,
            "ephemeralContainerStatuses",
            objects.container_status(
                container,
                {"running": {"startedAt": objects.now()}},
                running.container_id,
            ),
        )
        self._watch_exit(namespace, name, container, "ephemeralContainerStatuses")

    def _pull_all(self, namespace: str, name: str, containers: list[Obj], statuses: str) -> bool:
        """Wait for the images; False when a pull fails or hangs (until the pod goes)."""
        for container in containers:
            behaviour = self.images.get(container["image"])
            if behaviour is Image.RUNS:
                continue
            if behaviour is Image.HANGS:
                self._closed.wait()  # until the node goes away (or the pod is deleted)
                return False
            reference = image_reference(container["image"])
            failure = (
                f'Failed to pull image "{container["image"]}": rpc error: code = NotFound desc '
                f'= failed to pull and unpack image "{reference}": failed to resolve reference '
                f'"{reference}": {reference}: not found'
            )
            for reason, message in (
                ("ErrImagePull", failure),
                ("ImagePullBackOff", f'Back-off pulling image "{container["image"]}"'),
            ):
                if self._closed.wait(_PULL_RETRY_SECONDS):
                    return False
                self._set_container_status(
                    namespace,
                    name,
                    statuses,
                    objects.container_status(
                        container, {"waiting": {"reason": reason, "message": message}}
                    ),
                )
            return False
        return True

    def _start(
        self, namespace: str, pod: str, container: Obj, netns: str | None
    ) -> RunningContainer:
        argv = [*container.get("command", []), *container.get("args", [])]
        if argv and argv[0] in ("python3", "python"):
            argv[0] = sys.executable
        env = {
            # The image's PATH (python:3.11-slim: iptables is in /usr/sbin).
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(self.workdir),
            "HOSTNAME": pod,
            **{entry["name"]: entry.get("value", "") for entry in container.get("env", [])},
        }
        log_path = self._logs / f"{namespace}_{pod}_{container['name']}.log"

        def enter_pod_network() -> None:
            if netns is not None:
                fd = os.open(netns, os.O_RDONLY)
                setns(fd, CLONE_NEWNET)
                os.close(fd)

        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=enter_pod_network if netns is not None else None,
            )
        running = RunningContainer(process, log_path, f"containerd://{objects.new_container_id()}")
        with self._lock:
            self.containers[(namespace, pod, container["name"])] = running
        return running

    def _watch_exit(self, namespace: str, pod: str, container: Obj, statuses: str) -> None:
        key = (namespace, pod, container["name"])
        running = self.containers[key]
        code = running.process.wait()
        exit_code = code if code >= 0 else 128 - code
        message = None
        if exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = running.log_path.read_bytes()[-_LOG_TAIL_BYTES:].decode(errors="replace")
        entry = objects.container_status(
            container,
            {"terminated": objects.terminated_state(exit_code, message)},
            running.container_id,
        )
        updated = self._set_container_status(namespace, pod, statuses, entry)
        if updated is None or statuses != "containerStatuses":
            return
        states = [s["state"] for s in updated["status"].get("containerStatuses", [])]
        if all("terminated" in state for state in states):
            failed = any(state["terminated"]["exitCode"] != 0 for state in states)
            phase = "Failed" if failed else "Succeeded"
            final = self.store.mutate(
                "Pod", namespace, pod, lambda obj: obj["status"].update(phase=phase)
            )
            if final is not None:
                self.on_pod_finished(final)

    def stop_pod(self, namespace: str, pod: str, grace: float) -> None:
        """Stop the pod's containers: SIGTERM, then SIGKILL after the grace period."""
        with self._lock:
            mine = [c for key, c in self.containers.items() if key[:2] == (namespace, pod)]
        for container in mine:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in mine:
            try:
                container.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGKILL)
                container.process.wait()

    def live_processes(self) -> list[int]:
        with self._lock:
            return [c.process.pid for c in self.containers.values() if c.process.poll() is None]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            containers = list(self.containers.values())
        for container in containers:
            if container.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGKILL)
            container.process.wait()
        for path in self._logs.iterdir():
            path.unlink()
        self._logs.rmdir()

    def log_of(self, namespace: str, pod: str, container: str) -> str:
        running = self.containers.get((namespace, pod, container))
        return running.log_path.read_text(errors="replace") if running else ""

    # -- port-forward --
    def dial(self, namespace: str, pod: str, port: int) -> socket.socket:
        """Connect to localhost:port inside the pod's network namespace."""
        netns = self.pod_netns.get((namespace, pod))
        if netns is None:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        result: dict[str, Any] = {}

        def in_pod_network() -> None:
            # setns changes only this thread, which ends right after.
            try:
                fd = os.open(netns, os.O_RDONLY)
                setns(fd, CLONE_NEWNET)
                os.close(fd)
                result["socket"] = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError as error:
                result["error"] = error

        worker = threading.Thread(target=in_pod_network)
        worker.start()
        worker.join()
        if "error" in result:
            raise result["error"]
        sock: socket.socket = result["socket"]
        sock.settimeout(None)
        return sock

    def dial_failure(
        self, namespace: str, pod: str, pod_uid: str, port: int, error: OSError
    ) -> str:
        netns = self.pod_netns.get((namespace, pod), "/var/run/netns/cni-standin")
        reason = (error.strerror or str(error)).lower()
        return (
            f"error forwarding port {port} to pod {pod_uid}, uid : failed to execute portforward "
            f'in network namespace "{netns}": failed to connect to localhost:{port} inside '
            f'namespace "{pod_uid}", IPv4: dial tcp4 127.0.0.1:{port}: connect: {reason} '
            f"IPv6 dial tcp6 [::1]:{port}: connect: {reason} "
        )

    # -- status --
    def _set_status(self, namespace: str, pod: str, status: Obj) -> Obj | None:
        def change(obj: Obj) -> None:
            obj["status"] = status

        return self.store.mutate("Pod", namespace, pod, change)

    def _set_container_status(
        self, namespace: str, pod: str, statuses: str, entry: Obj
    ) -> Obj | None:
        def change(obj: Obj) -> None:
            listed = obj.setdefault("status", {}).setdefault(statuses, [])
            listed[:] = [s for s in listed if s["name"] != entry["name"]] + [entry]

        return self.store.mutate("Pod", namespace, pod, change)
