"""A whole stand-in cluster in this process: API server, store, controllers and one node.

    with StandinCluster(workdir=ROOT) as cluster:
        cluster.add_pod("app", ["app"], netns=sandbox.netns_path, container_ids={...})
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        ... KUBECONFIG=kubeconfig mirrord-trace exec --target pod/app -- ...

Everything it starts (server threads, agent processes, log files) is gone after close().
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import yaml

from tests.kube_standin import objects, schemas
from tests.kube_standin.admission import ENFORCE_LABEL
from tests.kube_standin.api_server import ApiServer
from tests.kube_standin.controllers import Controllers
from tests.kube_standin.kubelet import Image, Kubelet
from tests.kube_standin.store import Store

Obj = dict[str, Any]
NODE = "standin-node"
HOST_IP = "10.0.0.10"
HANGING_IMAGE = "standin.example/agent-pull-hangs:1"
# What the stand-in node runs as the agent image (KubeCli sets MIRRORD_AGENT_IMAGE to it).
AGENT_IMAGE = "standin.example/mirrord-trace-agent:0.1.0"


def schema_problem(obj: Any, kind: str) -> str | None:
    """Why `obj` (a Job, or an EphemeralContainer) does not validate against the upstream
    OpenAPI schema (schemas.KUBERNETES_VERSION), unknown fields included; None if it does."""
    if not isinstance(obj, dict):
        return "the body is not an object"
    if kind == "EphemeralContainer":
        # The schema of an ephemeral container is checked where it lives: in a pod.
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "x"},
            "spec": {"containers": [{"name": "x", "image": "x"}], "ephemeralContainers": [obj]},
        }
    if obj.get("kind") != kind.replace("EphemeralContainer", "Pod") or "apiVersion" not in obj:
        return f"the body is not a {kind}"
    return schemas.problem(obj)


class StandinCluster:
    def __init__(self, workdir: Path, images: dict[str, Image] | None = None) -> None:
        self.store = Store()
        self.namespaces: dict[str, dict[str, str]] = {"default": {}}
        self.rbac_rules: list[Obj] | None = None  # None: the user may do anything
        self.serve_ephemeral = True
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.server_errors: list[str] = []  # tracebacks of the stand-in's own failures
        self.port_forwards = 0
        self.user = "alice"
        self.token = secrets.token_hex(16)
        self.users = {self.token: self.user}
        self.stopping = threading.Event()
        self.kubelet = Kubelet(
            self.store,
            NODE,
            HOST_IP,
            workdir,
            images
            if images is not None
            else {AGENT_IMAGE: Image.RUNS, HANGING_IMAGE: Image.HANGS},
            on_pod_finished=lambda pod: self.controllers.pod_finished(pod),
        )
        self.controllers = Controllers(self.store, self.kubelet, self.enforce_level)
        self.server = ApiServer(self)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> StandinCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.controllers.close()
        self.kubelet.close()

    # -- set-up --
    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.namespaces[name] = dict(labels or {})

    def enforce_level(self, namespace: str) -> str | None:
        return self.namespaces.get(namespace, {}).get(ENFORCE_LABEL)

    def add_pod(
        self,
        name: str,
        containers: list[str],
        namespace: str = "default",
        *,
        container_ids: dict[str, str] | None = None,
        netns: str | None = None,
        pod_ip: str = "10.244.0.17",
        labels: dict[str, str] | None = None,
        phase: str = "Running",
    ) -> Obj:
        """An application pod running on the node (`netns`: its network namespace)."""
        pod = objects.running_pod(
            name, namespace, containers, NODE, HOST_IP, pod_ip, labels, container_ids
        )
        if phase != "Running":
            pod["status"] = {"phase": phase, "qosClass": "BestEffort"}
        if netns is not None:
            self.kubelet.pod_netns[(namespace, name)] = netns
        return self.store.create(pod)

    def add_deployment(
        self, name: str, match_labels: dict[str, str], ready: int = 1, namespace: str = "default"
    ) -> Obj:
        return self.store.create(objects.deployment(name, namespace, match_labels, ready))

    def write_kubeconfig(
        self, path: Path, namespace: str | None = None, token: str | None = None
    ) -> Path:
        context: Obj = {"cluster": "standin", "user": self.user}
        if namespace is not None:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": self.user, "user": {"token": token or self.token}}],
            "contexts": [{"name": "standin", "context": context}],
            "current-context": "standin",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- inspection --
    def schema_problem(self, obj: Any, kind: str) -> str | None:
        return schema_problem(obj, kind)

    def objects(self, kind: str, namespace: str | None = None) -> list[Obj]:
        return self.store.list(kind, namespace)[0]

    def agent_pods(self) -> list[Obj]:
        return [
            pod
            for pod in self.objects("Pod")
            if pod["metadata"].get("labels", {}).get("app.kubernetes.io/name")
            == "mirrord-trace-agent"
        ]
