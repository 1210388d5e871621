"""`mirrord-trace exec` against real pods: the agent's Job runs on the node from the image in
the cluster's registry, and the static Go probe (examples/probe-go) sees the target pod's
environment, files, cluster DNS and network, and receives its incoming traffic."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from mirrord_trace.agent_client import AgentClient, HandshakeRejected
from tests.cluster import layout
from tests.conftest import example_binary
from tests.e2e_cluster.agent_image import pushed_agent_image
from tests.e2e_cluster.workloads import MIRRORD_TRACE, Kube, busybox_image, wait_for

pytestmark = pytest.mark.cluster

NAMESPACE = "e2e-agent"
IMAGE = "localhost/mirrord-trace-e2e/busybox:1"
SECRET = "the app's secret, only in its pod"
DATA = "data only in the app's container\n"
# busybox httpd runs /cgi-bin/* as CGI: the backend answers with the address that reached it.
WHO = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"peer=$REMOTE_ADDR\"\n"


def _deployment(name: str, command: str, env: list[dict] | None = None) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": name,
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", command],
                            "env": env or [],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }


def _service(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def _workloads() -> list[dict]:
    app = (
        f"mkdir -p /app && printf '{DATA}' > /app/data.txt && "
        "echo 'answered by app' > /www/index.html && exec httpd -f -p 8080 -h /www"
    )
    backend = (
        "mkdir -p /www/cgi-bin && echo 'answered by backend' > /www/index.html && "
        f"printf '%s' '{WHO}' > /www/cgi-bin/who && chmod +x /www/cgi-bin/who && "
        "exec httpd -f -p 8080 -h /www"
    )
    client = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": NAMESPACE},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "client",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }
    return [
        _deployment("app", app, [{"name": "APP_SECRET", "value": SECRET}]),
        _service("app"),
        _deployment("backend", backend),
        _service("backend"),
        client,
    ]


class Target:
    """The deployed workloads and the way to run mirrord-trace against them."""

    def __init__(self, kube: Kube, env: dict[str, str]) -> None:
        self.kube = kube
        self.env = env
        self.app_pod = self._pod("app")
        self.backend_pod = self._pod("backend")

    def _pod(self, app: str) -> dict:
        (pod,) = self.kube.json("get", "pods", "-n", NAMESPACE, "-l", f"app={app}")["items"]
        return pod

    def exec(self, *program: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                *(MIRRORD_TRACE, "exec", "-n", NAMESPACE, *options),
                *("--target", f"pod/{self.app_pod['metadata']['name']}", "--", *program),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )

    def start(self, *program: str, options: tuple[str, ...] = ()) -> subprocess.Popen:
        return subprocess.Popen(
            [
                *(MIRRORD_TRACE, "exec", "-n", NAMESPACE, *options),
                *("--target", f"pod/{self.app_pod['metadata']['name']}", "--", *program),
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    def from_client(self, url: str) -> str:
        return self.kube.run("exec", "-n", NAMESPACE, "client", "--", "wget", "-qO-", url)

    def agent_pods(self) -> list[str]:
        pods = self.kube.json(
            "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by=mirrord-trace"
        )["items"]
        return [pod["metadata"]["name"] for pod in pods]


@pytest.fixture(scope="module")
def target(kube: Kube, cli_env: dict[str, str], tmp_path_factory) -> Iterator[Target]:
    agent_image = pushed_agent_image()
    busybox_image(IMAGE)
    kube.namespace(NAMESPACE)
    try:
        # the agent pod needs hostPID and capabilities
        kube.run("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=privileged")
        kube.apply(*_workloads())
        for name in ("app", "backend"):
            kube.wait(NAMESPACE, f"deployment/{name}", "condition=Available")
        kube.wait(NAMESPACE, "pod/client", "condition=Ready")
        home = tmp_path_factory.mktemp("home")
        env = {**cli_env, "HOME": str(home), "MIRRORD_AGENT_IMAGE": agent_image}
        yield Target(kube, env)
    finally:
        kube.delete_namespace(NAMESPACE)


def probe(*args: str) -> list[str]:
    return [str(example_binary("probe-go")), *args]


def assert_agent_gone(target: Target) -> None:
    """The session removed the agent's Job, and with it the agent's pod."""
    wait_for(
        lambda: not target.kube.json("get", "jobs", "-n", NAMESPACE)["items"],
        timeout=60,
        what="the agent's Job to be removed",
    )
    wait_for(lambda: not target.agent_pods(), timeout=60, what="the agent's pod to go")


def test_env_and_files_of_the_pod(target: Target) -> None:
    result = target.exec(*probe("env", "APP_SECRET"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{SECRET}\n"
    result = target.exec(*probe("cat", "/app/data.txt"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == DATA
    assert_agent_gone(target)


@pytest.mark.parametrize(
    "name",
    ["backend", f"backend.{NAMESPACE}", f"backend.{NAMESPACE}.svc.{layout.CLUSTER_DOMAIN}"],
    ids=["short", "name.namespace", "fqdn"],
)
def test_cluster_dns_through_coredns(target: Target, name: str) -> None:
    cluster_ip = target.kube.json("get", "service", "-n", NAMESPACE, "backend")["spec"]["clusterIP"]
    result = target.exec(*probe("resolve", name))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [cluster_ip]
    assert_agent_gone(target)


def test_outgoing_to_a_cluster_ip_service_and_a_pod_ip(target: Target) -> None:
    """The backend sees the connections come from the app pod's address: they were made in the
    pod's network namespace (from this host they would come from the bridge's)."""
    app_ip = target.app_pod["status"]["podIP"]
    backend_ip = target.backend_pod["status"]["podIP"]
    for url in ("http://backend/cgi-bin/who", f"http://{backend_ip}:8080/cgi-bin/who"):
        result = target.exec(*probe("http-get", url))
        assert result.returncode == 0, (url, result.stderr)
        assert result.stdout.strip() == f"peer={app_ip}", url


def _serve_and_request(target: Target, options: tuple[str, ...]) -> tuple[str, str]:
    """Runs probe-go serve :8080 under mirrord-trace with `options` and sends GET /from-client
    from the client pod through the app's Service until the local program logs a request;
    -> (what the client got, what the local program logged)."""
    process = target.start(*probe("serve", ":8080"), options=options)
    lines: queue.Queue[str] = queue.Queue()
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        assert line.startswith("listening"), (line, process.stderr.read() if process.poll() else "")
        reader = threading.Thread(
            target=lambda: [lines.put(x) for x in process.stdout], daemon=True
        )
        reader.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                body = target.from_client(f"http://app.{NAMESPACE}/from-client")
            except AssertionError as error:
                body = str(error)
            try:
                return body, lines.get(timeout=3)
            except queue.Empty:
                assert time.monotonic() < deadline, f"no request reached the program; got {body!r}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_incoming_mirror_keeps_the_pod_answering(target: Target) -> None:
    body, logged = _serve_and_request(target, ())
    assert body.strip() == "answered by app"
    assert logged.strip() == "request GET /from-client HTTP/1.1"
    assert_agent_gone(target)


def test_incoming_steal_answers_from_the_local_program(target: Target) -> None:
    body, logged = _serve_and_request(target, ("--steal",))
    assert body.startswith("hello from probe-go\nGET /from-client HTTP/1.1")
    assert logged.strip() == "request GET /from-client HTTP/1.1"
    assert_agent_gone(target)
    # The redirect went with the agent: the app answers for itself again.
    assert target.from_client(f"http://app.{NAMESPACE}/").strip() == "answered by app"


def test_a_reader_of_the_agents_spec_cannot_connect_to_it(target: Target) -> None:
    """Whoever may read Jobs and port-forward to pods in the namespace finds only the token's
    digest in the agent's spec, and the agent refuses it as a token (issue #20, item 9)."""
    session = target.start("sleep", "60")
    forward = None
    try:
        job = wait_for(
            lambda: (target.kube.json("get", "jobs", "-n", NAMESPACE)["items"] or [None])[0],
            timeout=60,
            what="the agent's Job",
        )
        container = job["spec"]["template"]["spec"]["containers"][0]
        (env,) = container["env"]
        assert env["name"] == "MIRRORD_TRACE_AGENT_TOKEN_SHA256"
        digest = env["value"]
        port = container["command"][container["command"].index("--listen") + 1].rsplit(":", 1)[1]
        (pod,) = wait_for(target.agent_pods, timeout=60, what="the agent's pod")
        target.kube.wait(NAMESPACE, f"pod/{pod}", "condition=Ready")
        forward = subprocess.Popen(
            [str(layout.KUBE), "kubectl", "--kubeconfig", str(target.kube.kubeconfig),
             "port-forward", "-n", NAMESPACE, f"pod/{pod}", f":{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert forward.stdout is not None
        line = forward.stdout.readline()  # Forwarding from 127.0.0.1:LOCAL -> PORT
        local = int(line.split("127.0.0.1:", 1)[1].split()[0])
        with pytest.raises(HandshakeRejected) as refused:
            AgentClient.connect("127.0.0.1", local, digest, timeout=30)
        assert refused.value.reason == "bad-token"
        assert session.poll() is None  # the real session goes on
    finally:
        if forward is not None:
            forward.terminate()
            forward.wait(timeout=10)
        session.terminate()
        session.communicate(timeout=60)
    assert_agent_gone(target)
