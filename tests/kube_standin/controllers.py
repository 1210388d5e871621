"""The control plane around the store: the job controller (a Job gets a pod, or a
FailedCreate event when admission refuses it; its status follows the pod), the garbage
collector (deleting a Job deletes its pods unless orphaned), graceful pod deletion (the
kubelet stops the containers first) and the TTL-after-finished controller."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.kube_standin import admission, objects
from tests.kube_standin.kubelet import Kubelet
from tests.kube_standin.store import Store

Obj = dict[str, Any]


class Controllers:
    def __init__(
        self, store: Store, kubelet: Kubelet, enforce_level: Callable[[str], str | None]
    ) -> None:
        self.store = store
        self.kubelet = kubelet
        self.enforce_level = enforce_level
        self._timers: list[threading.Timer] = []

    # -- job controller --
    def job_created(self, job: Obj) -> None:
        threading.Thread(target=self._create_job_pod, args=(job,), daemon=True).start()

    def _create_job_pod(self, job: Obj) -> None:
        namespace = job["metadata"]["namespace"]
        pod = objects.pod_from_job(job)
        objects.fill_metadata(pod, namespace)
        objects.pod_spec_defaults(pod["spec"])
        refusal = admission.check_pod(
            self.enforce_level(namespace),
            pod["metadata"]["name"],
            pod["spec"],
            pod["spec"]["containers"],
        )
        if refusal is not None:
            self.store.create(
                objects.warning_event(
                    job, "FailedCreate", f"Error creating: {refusal}", "job-controller"
                )
            )
            return
        pod["status"] = objects.pending_pod_status()
        created = self.store.create(pod)
        self.store.mutate(
            "Job",
            namespace,
            job["metadata"]["name"],
            lambda obj: obj["status"].update(
                active=1,
                startTime=objects.now(),
                ready=0,
                terminating=0,
                uncountedTerminatedPods={},
            ),
        )
        if created["spec"].get("nodeName") == self.kubelet.node_name:
            self.kubelet.start_pod(created)

    def pod_finished(self, pod: Obj) -> None:
        """A pod ended (Succeeded/Failed): its Job completes or fails; TTL starts."""
        owner = next(
            (ref for ref in pod["metadata"].get("ownerReferences", []) if ref["kind"] == "Job"),
            None,
        )
        if owner is None:
            return
        namespace = pod["metadata"]["namespace"]
        succeeded = pod["status"]["phase"] == "Succeeded"

        def finish(job: Obj) -> None:
            stamp = objects.now()
            status = job["status"]
            status.pop("active", None)
            status["ready"] = 0
            status["succeeded" if succeeded else "failed"] = 1
            condition = "Complete" if succeeded else "Failed"
            status["conditions"] = [
                {
                    "type": condition,
                    "status": "True",
                    "lastProbeTime": stamp,
                    "lastTransitionTime": stamp,
                    **(
                        {}
                        if succeeded
                        else {
                            "reason": "BackoffLimitExceeded",
                            "message": "Job has reached the specified backoff limit",
                        }
                    ),
                }
            ]
            if succeeded:
                status["completionTime"] = stamp

        job = self.store.mutate("Job", namespace, owner["name"], finish)
        ttl = job["spec"].get("ttlSecondsAfterFinished") if job else None
        if job is not None and ttl is not None:
            timer = threading.Timer(
                ttl, self.delete_job, args=(namespace, owner["name"], "Background")
            )
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    # -- deletion --
    def delete_job(self, namespace: str, name: str, propagation: str) -> Obj | None:
        """Delete a Job; Background/Foreground delete its pods, Orphan leaves them."""
        job = self.store.delete("Job", namespace, name)
        if job is None:
            return None
        owned, _ = self.store.list("Pod", namespace)
        owned = [
            pod
            for pod in owned
            if any(
                ref.get("uid") == job["metadata"]["uid"]
                for ref in pod["metadata"].get("ownerReferences", [])
            )
        ]
        for pod in owned:
            if propagation in ("Background", "Foreground"):
                self.delete_pod(namespace, pod["metadata"]["name"])
            else:
                self.store.mutate(
                    "Pod",
                    namespace,
                    pod["metadata"]["name"],
                    lambda obj: obj["metadata"].pop("ownerReferences", None),
                )
        return job

    def delete_pod(self, namespace: str, name: str) -> None:
        """Graceful deletion: mark, let the kubelet stop the containers, then remove."""
        pod = self.store.get("Pod", namespace, name)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)

        def mark(obj: Obj) -> None:
            obj["metadata"]["deletionTimestamp"] = objects.now()
            obj["metadata"]["deletionGracePeriodSeconds"] = grace

        self.store.mutate("Pod", namespace, name, mark)

        def finish() -> None:
            self.kubelet.stop_pod(namespace, name, grace)
            self.store.delete("Pod", namespace, name)

        threading.Thread(target=finish, daemon=True).start()

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
