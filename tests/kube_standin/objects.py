"""Kubernetes objects shaped exactly as the API server returns them (field names, defaults the
API server fills in, Status objects for errors, list and watch-event envelopes).

Only what the stand-in needs; every shape here is validated against the upstream OpenAPI
schemas in tests/test_kube_standin.py.
"""

from __future__ import annotations

import copy
import secrets
import string
import uuid
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

# kind -> (apiVersion, plural resource, API group) for every kind the stand-in serves.
KINDS = {
    "Pod": ("v1", "pods", ""),
    "Event": ("v1", "events", ""),
    "Job": ("batch/v1", "jobs", "batch"),
    "Deployment": ("apps/v1", "deployments", "apps"),
}
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generated_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def new_container_id() -> str:
    return "".join(secrets.choice(string.hexdigits.lower()[:16]) for _ in range(64))


def status(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A metav1.Status error answer."""
    answer: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        answer["details"] = details
    answer["code"] = code
    return answer


def success_status(details: Obj) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def list_of(kind: str, items: list[Obj], resource_version: str) -> Obj:
    """A List answer: the items carry no apiVersion/kind of their own, as in the real API."""
    api_version = KINDS[kind][0]
    stripped = []
    for item in items:
        entry = copy.deepcopy(item)
        entry.pop("apiVersion", None)
        entry.pop("kind", None)
        stripped.append(entry)
    return {
        "kind": f"{kind}List",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "items": stripped,
    }


def fill_metadata(obj: Obj, namespace: str) -> None:
    """What the API server adds to every object it creates."""
    metadata = obj.setdefault("metadata", {})
    if "name" not in metadata and "generateName" in metadata:
        metadata["name"] = generated_name(metadata["generateName"])
    metadata["namespace"] = namespace
    metadata["uid"] = str(uuid.uuid4())
    metadata["creationTimestamp"] = now()
    if obj.get("kind") in ("Job", "Deployment"):
        metadata["generation"] = 1


def _container_defaults(container: Obj) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = container.get("image", "")
    latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("resources", {})


def pod_spec_defaults(spec: Obj) -> None:
    """The defaults the API server sets on a PodSpec (and its containers)."""
    for container in spec.get("containers", []):
        _container_defaults(container)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key or t.get("operator") == "Exists" for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )


def job_defaults(job: Obj) -> None:
    """Defaults and the controller-uid selector/labels the API server puts on a new Job."""
    uid, name = job["metadata"]["uid"], job["metadata"]["name"]
    spec = job.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    spec.setdefault("manualSelector", False)
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template = spec.setdefault("template", {})
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    labels.update(
        {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
    )
    pod_spec_defaults(template.setdefault("spec", {}))
    job["status"] = {}


def pod_from_job(job: Obj) -> Obj:
    """The pod the job controller creates from the Job's template."""
    template = copy.deepcopy(job["spec"]["template"])
    name = job["metadata"]["name"]
    metadata = template.get("metadata", {})
    metadata["generateName"] = f"{name}-"
    metadata["name"] = generated_name(f"{name}-")
    metadata["labels"] = {**metadata.get("labels", {})}
    metadata["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    metadata["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": job["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def pending_pod_status() -> Obj:
    return {"phase": "Pending", "qosClass": "Burstable"}


def _condition(kind: str, value: bool, reason: str | None = None) -> Obj:
    condition: Obj = {
        "type": kind,
        "status": "True" if value else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now(),
    }
    if reason:
        condition["reason"] = reason
    return condition


def container_status(
    container: Obj, state: Obj, container_id: str | None = None, ready: bool = False
) -> Obj:
    image = container["image"]
    entry: Obj = {
        "name": container["name"],
        "state": state,
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "image": image if "/" in image.split(":")[0] else f"docker.io/library/{image}",
        "imageID": "",
        "started": "running" in state,
    }
    if container_id is not None:
        entry["containerID"] = container_id
        entry["imageID"] = f"{entry['image'].split(':')[0]}@sha256:{'ab' * 32}"
    return entry


def scheduled_status(pod: Obj, host_ip: str, pod_ip: str, waiting: Obj) -> Obj:
    """Status of a pod bound to the node whose containers wait (ContainerCreating, ...)."""
    names = ", ".join(c["name"] for c in pod["spec"]["containers"])
    return {
        "phase": "Pending",
        "conditions": [
            _condition("PodReadyToStartContainers", False),
            _condition("Initialized", True),
            {
                **_condition("Ready", False, "ContainersNotReady"),
                "message": f"containers with unready status: [{names}]",
            },
            {
                **_condition("ContainersReady", False, "ContainersNotReady"),
                "message": f"containers with unready status: [{names}]",
            },
            _condition("PodScheduled", True),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now(),
        "containerStatuses": [
            container_status(container, {"waiting": waiting})
            for container in pod["spec"]["containers"]
        ],
        "qosClass": "Burstable",
    }


def running_status(pod: Obj, host_ip: str, pod_ip: str, container_ids: dict[str, str]) -> Obj:
    started = now()
    return {
        "phase": "Running",
        "conditions": [
            _condition("PodReadyToStartContainers", True),
            _condition("Initialized", True),
            _condition("Ready", True),
            _condition("ContainersReady", True),
            _condition("PodScheduled", True),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "containerStatuses": [
            container_status(
                container,
                {"running": {"startedAt": started}},
                container_ids[container["name"]],
                ready=True,
            )
            for container in pod["spec"]["containers"]
        ],
        "qosClass": "BestEffort",
    }


def terminated_state(exit_code: int, message: str | None) -> Obj:
    state: Obj = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": now(),
        "finishedAt": now(),
    }
    if message:
        state["message"] = message
    return state


def running_pod(
    name: str,
    namespace: str,
    containers: list[str],
    node: str,
    host_ip: str,
    pod_ip: str,
    labels: dict[str, str] | None = None,
    container_ids: dict[str, str] | None = None,
    image: str = "registry.example/shop/app:1.4.2",
) -> Obj:
    """An application pod that runs on `node` (what a workload controller would have made)."""
    pod: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {"app": name})},
        "spec": {
            "containers": [{"name": c, "image": image} for c in containers],
            "nodeName": node,
        },
    }
    fill_metadata(pod, namespace)
    pod_spec_defaults(pod["spec"])
    ids = container_ids or {}
    ids = {c: ids.get(c) or f"containerd://{new_container_id()}" for c in containers}
    pod["status"] = running_status(pod, host_ip, pod_ip, ids)
    return pod


def deployment(name: str, namespace: str, match_labels: dict[str, str], ready: int) -> Obj:
    dep: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": max(ready, 1),
            "selector": {"matchLabels": dict(match_labels)},
            "template": {
                "metadata": {"labels": dict(match_labels)},
                "spec": {"containers": [{"name": name, "image": "registry.example/app:1"}]},
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    }
    fill_metadata(dep, namespace)
    pod_spec_defaults(dep["spec"]["template"]["spec"])
    dep["status"] = {
        "observedGeneration": 1,
        "replicas": max(ready, 1),
        "updatedReplicas": max(ready, 1),
        "availableReplicas": ready,
        "conditions": [],
    }
    if ready:
        dep["status"]["readyReplicas"] = ready
    else:
        dep["status"]["unavailableReplicas"] = 1
    return dep


def warning_event(involved: Obj, reason: str, message: str, component: str) -> Obj:
    """A core/v1 Event about `involved`, as controllers record them."""
    metadata = involved["metadata"]
    stamp = now()
    event: Obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{metadata['name']}.{secrets.token_hex(8)}"},
        "involvedObject": {
            "kind": involved["kind"],
            "namespace": metadata["namespace"],
            "name": metadata["name"],
            "uid": metadata["uid"],
            "apiVersion": involved["apiVersion"],
            "resourceVersion": metadata.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": "Warning",
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": "",
    }
    fill_metadata(event, metadata["namespace"])
    return event
