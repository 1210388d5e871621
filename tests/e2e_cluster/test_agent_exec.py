"""`mirrord-trace exec` against real pods: the agent's Job runs on the node from the image in
the cluster's registry, and the static Go probe (examples/probe-go) sees the target pod's
environment, files, cluster DNS and network, and receives its incoming traffic."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mirrord_trace.agent_client import AgentClient, HandshakeRejected
from tests.cluster import certs, kubeconfig, layout
from tests.conftest import example_binary
from tests.e2e_cluster.agent_image import pushed_agent_image
from tests.e2e_cluster.workloads import MIRRORD_TRACE, Kube, busybox_image, wait_for

pytestmark = pytest.mark.cluster

NAMESPACE = "e2e-agent"
IMAGE = "localhost/mirrord-trace-e2e/busybox:1"
SECRET = "the app's secret, only in its pod"
DATA = "data only in the app container\n"
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


def _service(name: str, protocol: str = "TCP", port: int = 80, target_port: int = 8080) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"app": name},
            "ports": [{"port": port, "targetPort": target_port, "protocol": protocol}],
        },
    }


def _workloads() -> list[dict]:
    app = (
        f"mkdir -p /app && printf '{DATA}' > /app/data.txt && "
        "echo 'answered by app' > /www/index.html && cp /www/index.html /www/from-client && "
        "exec httpd -f -p 8080 -h /www"
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
    duo = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "duo", "namespace": NAMESPACE},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": name,
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "env": [{"name": "WHICH", "value": f"container {name}"}],
                }
                for name in ("first", "second")
            ],
        },
    }
    duo_deployment = _deployment("duo-deployment", "sleep 3600")
    template = duo_deployment["spec"]["template"]["spec"]
    template["containers"] = [
        {**container, "name": name, "env": [{"name": "WHICH", "value": f"container {name}"}]}
        for name in ("first", "second")
        for container in duo["spec"]["containers"][:1]
    ]
    return [
        duo,
        duo_deployment,
        _deployment("app", app, [{"name": "APP_SECRET", "value": SECRET}]),
        _service("app"),
        _deployment("backend", backend),
        _service("backend"),
        _udp_echo(),
        _service("udp-echo", "UDP", 9000, 9000),
        client,
    ]


def _udp_echo() -> dict:
    """A Deployment whose pod answers each UDP datagram on :9000 with its source address."""
    deployment = _deployment("udp-echo", "exec probe-go udp-echo :9000")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["ports"] = [{"containerPort": 9000, "protocol": "UDP"}]
    del container["readinessProbe"]  # nothing listens on TCP
    return deployment


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

    def exec(
        self, *program: str, options: tuple[str, ...] = (), to: str | None = None
    ) -> subprocess.CompletedProcess:
        """mirrord-trace exec of `program` against `to` (default: the app's pod)."""
        to = to or f"pod/{self.app_pod['metadata']['name']}"
        return subprocess.run(
            [*(MIRRORD_TRACE, "exec", "-n", NAMESPACE, *options), "--target", to, "--", *program],
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
        for name in ("app", "backend", "udp-echo", "duo-deployment"):
            kube.wait(NAMESPACE, f"deployment/{name}", "condition=Available")
        for pod in ("client", "duo"):
            kube.wait(NAMESPACE, f"pod/{pod}", "condition=Ready")
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


def test_deployment_target(target: Target) -> None:
    result = target.exec(*probe("env", "APP_SECRET"), to="deployment/app")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{SECRET}\n"
    assert_agent_gone(target)


@pytest.mark.parametrize("container", ["first", "second"])
def test_one_container_of_a_two_container_deployment(target: Target, container: str) -> None:
    to = f"deployment/duo-deployment/container/{container}"
    result = target.exec(*probe("env", "WHICH"), to=to)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"container {container}\n"
    assert_agent_gone(target)


def test_file_modes_write_local_and_local_with_overrides(target: Target, tmp_path: Path) -> None:
    pod = target.app_pod["metadata"]["name"]
    # write: the file is created in the pod
    result = target.exec(*probe("write", "/app/written.txt", "from the local program"),
                         options=("--fs-mode", "write"))
    assert result.returncode == 0, result.stderr
    in_pod = target.kube.run("exec", "-n", NAMESPACE, pod, "--", "cat", "/app/written.txt")
    assert in_pod == "from the local program"
    # local: the pod's files are not read at all
    result = target.exec(*probe("cat", "/app/data.txt"), options=("--fs-mode", "local"))
    assert result.returncode != 0
    assert result.stdout == ""
    # localwithoverrides: local, except what read_only names
    config = tmp_path / "mirrord.json"
    config.write_text(json.dumps({"feature": {"fs": {
        "mode": "localwithoverrides", "read_only": ["^/app/data\\.txt$"]}}}))
    result = target.exec(*probe("cat", "/app/data.txt"), options=("-f", str(config)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == DATA
    result = target.exec(*probe("cat", "/app/written.txt"), options=("-f", str(config)))
    assert result.returncode != 0  # not named: read locally, where it does not exist
    assert_agent_gone(target)


@pytest.mark.parametrize("container", ["first", "second"])
def test_one_container_of_a_two_container_pod(target: Target, container: str) -> None:
    result = target.exec(*probe("env", "WHICH"), to=f"pod/duo/container/{container}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"container {container}\n"
    assert_agent_gone(target)


def test_agent_in_an_ephemeral_container(target: Target) -> None:
    result = target.exec(*probe("env", "APP_SECRET"), options=("--ephemeral-container",))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{SECRET}\n"
    pod = target.kube.json("get", "pod", "-n", NAMESPACE, target.app_pod["metadata"]["name"])
    (agent,) = pod["spec"]["ephemeralContainers"]
    assert agent["targetContainerName"] == "app"
    assert not target.kube.json("get", "jobs", "-n", NAMESPACE)["items"]


@pytest.mark.parametrize("program", ["probe-go", "probe-musl", "probe-dynamic"])
@pytest.mark.parametrize(
    "name",
    ["backend", f"backend.{NAMESPACE}", f"backend.{NAMESPACE}.svc.{layout.CLUSTER_DOMAIN}"],
    ids=["short", "name.namespace", "fqdn"],
)
def test_cluster_dns_through_coredns(target: Target, program: str, name: str) -> None:
    """The pod's resolv.conf (search domains, CoreDNS's address) for a static Go program (its
    own resolver), a static musl one and a dynamic glibc one."""
    cluster_ip = target.kube.json("get", "service", "-n", NAMESPACE, "backend")["spec"]["clusterIP"]
    result = target.exec(str(example_binary(program)), "resolve", name)
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
        # busybox httpd listens on IPv6 ([::ffff:a.b.c.d] for an IPv4 peer)
        peer = result.stdout.strip().removeprefix("peer=").strip("[]").removeprefix("::ffff:")
        assert peer == app_ip, url


def test_outgoing_udp_to_a_cluster_ip_service_and_a_pod_ip(target: Target) -> None:
    """Datagrams of the static Go probe leave from the app pod's network: the echo server sees
    the pod's address (through kube-proxy's UDP rules for the Service's ClusterIP)."""
    app_ip = target.app_pod["status"]["podIP"]
    (echo_pod,) = target.kube.json("get", "pods", "-n", NAMESPACE, "-l", "app=udp-echo")["items"]
    for address in ("udp-echo:9000", f"{echo_pod['status']['podIP']}:9000"):
        result = target.exec(*probe("udp-ask", address, "ping"))
        assert result.returncode == 0, (address, result.stderr)
        assert result.stdout == f"from={app_ip} data=ping\n", address
    assert_agent_gone(target)


def test_filtered_steal_takes_only_the_matching_requests(target: Target, tmp_path: Path) -> None:
    """With an HTTP header filter, requests sent by another pod through the app's Service that
    carry the header reach the local program; the others are answered by the pod's own app."""
    config = tmp_path / "mirrord.json"
    config.write_text(json.dumps({"feature": {"network": {"incoming": {
        "mode": "steal", "http_filter": {"header_filter": "^x-session: mine$"}}}}}))
    process = target.start(*probe("serve", ":8080"), options=("-f", str(config)))
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        if not line.startswith("listening"):
            process.kill()
            pytest.fail(f"the program did not listen ({line!r}): {process.stderr.read()}")
        url = f"http://app.{NAMESPACE}/from-client"

        def matching() -> str:
            try:
                return target.kube.run("exec", "-n", NAMESPACE, "client", "--", "wget",
                                       "--header", "X-Session: mine", "-qO-", url)
            except AssertionError as error:  # the steal may not be in place yet
                return str(error)

        deadline = time.monotonic() + 60
        while not (body := matching()).startswith("hello from probe-go"):
            assert time.monotonic() < deadline, f"no matching request was stolen: {body!r}"
            time.sleep(1)
        assert body.startswith("hello from probe-go\nGET /from-client HTTP/1.1")
        assert target.from_client(url).strip() == "answered by app"
        assert matching().startswith("hello from probe-go")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert_agent_gone(target)
    assert _pod_nat_rules(target) == []


def _serve_and_request(target: Target, options: tuple[str, ...]) -> tuple[str, str]:
    """Runs probe-go serve :8080 under mirrord-trace with `options` and sends GET /from-client
    from the client pod through the app's Service until the local program logs a request;
    -> (what the client got, what the local program logged)."""
    process = target.start(*probe("serve", ":8080"), options=options)
    lines: queue.Queue[str] = queue.Queue()
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        if not line.startswith("listening"):
            process.kill()
            pytest.fail(f"the program did not listen ({line!r}): {process.stderr.read()}")
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
    # The redirect went with the agent: the app answers for itself again, and no rule of the
    # agent's is left in the pod's network namespace.
    assert target.from_client(f"http://app.{NAMESPACE}/").strip() == "answered by app"
    assert _pod_nat_rules(target) == []


def _pod_nat_rules(target: Target) -> list[str]:
    """The nat table's rules (both iptables back ends) in the app pod's network namespace,
    entered through its container's process on this node."""
    (status,) = target.app_pod["status"]["containerStatuses"]
    container_id = status["containerID"].split("://")[1]
    pid = _container_pid(container_id)
    rules = []
    for save in ("iptables-nft-save", "iptables-legacy-save"):
        out = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", save, "-t", "nat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rules += [line for line in out.splitlines() if line.startswith("-A")]
    return rules


def _container_pid(container_id: str) -> int:
    for cgroup in Path("/sys/fs/cgroup/pids/kubepods").rglob(container_id):
        pids = (cgroup / "cgroup.procs").read_text().split()
        if pids:
            return int(pids[0])
    raise AssertionError(f"no process of container {container_id} on this node")


def test_sigkill_of_mirrord_trace_the_agent_exits_and_its_pod_goes(
    target: Target, tmp_path: Path
) -> None:
    """No cleanup runs on SIGKILL: the agent notices its client is gone (after
    agent.communication_timeout), exits, and its Job's TTL removes Job and pod."""
    config = tmp_path / "mirrord.json"
    config.write_text('{"agent": {"communication_timeout": 3, "ttl": 1}}')
    process = target.start("/bin/sleep", "600", options=("-f", str(config)))
    try:
        assert process.stderr is not None
        progress = [process.stderr.readline()]
        while "agent ready" not in progress[-1] and progress[-1]:
            progress.append(process.stderr.readline())
        assert "agent ready" in progress[-1], progress
        assert target.agent_pods()
        process.kill()
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    wait_for(lambda: not target.agent_pods(), timeout=90, what="the agent's pod to go")
    assert not target.kube.json("get", "jobs", "-n", NAMESPACE)["items"]


def _documented_role() -> dict:
    """The Role docs/kubernetes.md gives users, put in this module's namespace."""
    text = (layout.REPO / "docs" / "kubernetes.md").read_text()
    documents = [
        document
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
        for document in yaml.safe_load_all(block)
    ]
    (role,) = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Role"]
    role["metadata"]["namespace"] = NAMESPACE
    return role


def _user(target: Target, user: str, role: dict, tmp_path: Path) -> dict[str, str]:
    """A user with a client certificate, bound to `role` only; -> mirrord-trace's environment
    with that user's kubeconfig."""
    certs.issue_client(f"user-{user}", user)
    config = tmp_path / f"{user}.kubeconfig"
    kubeconfig.write(config, layout.apiserver_url(layout.node_ip()), f"user-{user}")
    role = {**role, "metadata": {**role["metadata"], "name": f"e2e-{user}"}}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"e2e-{user}", "namespace": NAMESPACE},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {"kind": "Role", "name": f"e2e-{user}", "apiGroup": "rbac.authorization.k8s.io"},
    }
    target.kube.apply(role, binding)
    return {**target.env, "KUBECONFIG": str(config)}


def test_a_user_with_only_the_documented_role(target: Target, tmp_path: Path) -> None:
    env = _user(target, "alice", _documented_role(), tmp_path)
    result = subprocess.run(
        [
            *(MIRRORD_TRACE, "exec", "-n", NAMESPACE, "--target", "deployment/app", "--"),
            *probe("env", "APP_SECRET"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{SECRET}\n"
    assert_agent_gone(target)


def test_a_user_who_may_not_create_jobs_is_told_so(target: Target, tmp_path: Path) -> None:
    role = _documented_role()
    role["rules"] = [r for r in role["rules"] if "jobs" not in r["resources"]]
    env = _user(target, "bob", role, tmp_path)
    result = subprocess.run(
        [
            *(MIRRORD_TRACE, "exec", "-n", NAMESPACE, "--target", "deployment/app", "--"),
            *probe("env", "APP_SECRET"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    (line,) = [x for x in result.stderr.splitlines() if "error:" in x]
    assert "not allowed to create jobs" in line, line
    assert "'create' on 'jobs" in line, line
    assert not target.kube.json("get", "jobs", "-n", NAMESPACE)["items"]


RESTRICTED = "e2e-restricted"


@pytest.fixture(scope="module")
def restricted_pod(target: Target) -> Iterator[str]:
    """A pod that satisfies PodSecurity `restricted`, in a namespace that enforces it."""
    kube = target.kube
    kube.namespace(RESTRICTED)
    try:
        kube.run("label", "namespace", RESTRICTED, "pod-security.kubernetes.io/enforce=restricted")
        container = {
            "name": "app",
            "image": IMAGE,
            "imagePullPolicy": "Never",
            "command": ["sleep", "3600"],
            "env": [{"name": "APP_SECRET", "value": SECRET}],
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "locked", "namespace": RESTRICTED},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
            }
        )
        kube.wait(RESTRICTED, "pod/locked", "condition=Ready")
        yield "pod/locked"
    finally:
        kube.delete_namespace(RESTRICTED)


def _exec_restricted(target: Target, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *(MIRRORD_TRACE, "exec", "-n", RESTRICTED, *options, "--target", "pod/locked", "--"),
            *probe("env", "APP_SECRET"),
        ],
        env=target.env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_restricted_namespace_a_clear_error(target: Target, restricted_pod: str) -> None:
    result = _exec_restricted(target)
    assert result.returncode != 0
    (line,) = [x for x in result.stderr.splitlines() if "error:" in x]
    assert f"pod security admission rejected the agent in namespace {RESTRICTED}" in line, line
    assert "agent.namespace" in line, line
    assert not target.kube.json("get", "jobs", "-n", RESTRICTED)["items"]


def test_restricted_namespace_agent_namespace_works(
    target: Target, restricted_pod: str, tmp_path: Path
) -> None:
    config = tmp_path / "mirrord.json"
    config.write_text(f'{{"agent": {{"namespace": "{NAMESPACE}"}}}}')
    result = _exec_restricted(target, "-f", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{SECRET}\n"


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
        # This Job's pod: an earlier session's agent pod may still be on its way out.
        selector = f"job-name={job['metadata']['name']}"
        (pod,) = wait_for(
            lambda: [p["metadata"]["name"] for p in target.kube.json(
                "get", "pods", "-n", NAMESPACE, "-l", selector)["items"]],
            timeout=60,
            what="the agent's pod",
        )  # fmt: skip
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


# Argo Rollouts' custom resource as its CRD declares it (the schema kept open): no Argo
# controller runs here, so the Rollouts select the pods of the app's Deployment, as a Rollout
# that took over a Deployment (workloadRef) or whose pods carry the same labels does.
ROLLOUT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rollouts.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "scope": "Namespaced",
        "names": {"kind": "Rollout", "listKind": "RolloutList", "plural": "rollouts",
                  "singular": "rollout", "shortNames": ["ro"]},
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def rollouts(target: Target) -> Iterator[None]:
    kube = target.kube
    kube.apply(ROLLOUT_CRD)
    try:
        kube.run("wait", "--for=condition=Established", "crd/rollouts.argoproj.io",
                 "--timeout=60s")
        rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                   "metadata": {"namespace": NAMESPACE}}
        kube.apply(
            {**rollout, "metadata": {**rollout["metadata"], "name": "by-selector"},
             "spec": {"selector": {"matchLabels": {"app": "app"}}}},
            {**rollout, "metadata": {**rollout["metadata"], "name": "by-workload-ref"},
             "spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "app"}}},
        )  # fmt: skip
        yield
    finally:
        kube.run("delete", "crd", "rollouts.argoproj.io", "--ignore-not-found")


@pytest.mark.parametrize("rollout", ["by-selector", "by-workload-ref"])
def test_rollout_target(target: Target, rollouts: None, rollout: str) -> None:
    result = target.exec(*probe("env", "APP_SECRET"), to=f"rollout/{rollout}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{SECRET}\n"
    assert_agent_gone(target)


def test_agent_pod_settings_reach_a_running_agent(target: Target, tmp_path: Path) -> None:
    """mirrord's agent-pod keys, accepted by the real API server, scheduler and kubelet: the
    agent runs with them (priority resolved from a real PriorityClass, the service account
    mounted, the toleration and the pull secret in its spec)."""
    kube = target.kube
    kube.apply(
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
         "metadata": {"name": "e2e-agent-priority"}, "value": 1000},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "mirrord-agent", "namespace": NAMESPACE}},
    )  # fmt: skip
    kube.run("create", "secret", "docker-registry", "registry-login", "-n", NAMESPACE,
             f"--docker-server={layout.REGISTRY}", "--docker-username=e2e",
             "--docker-password=e2e")
    config = tmp_path / "mirrord.json"
    config.write_text(json.dumps({"agent": {
        "labels": {"team": "payments"},
        "annotations": {"example.com/owner": "payments"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                      "limits": {"cpu": "1", "memory": "512Mi"}},
        "priority_class": "e2e-agent-priority",
        "service_account": "mirrord-agent",
        "image_pull_secrets": [{"name": "registry-login"}],
    }}))  # fmt: skip
    process = target.start("sleep", "60", options=("-f", str(config)))
    try:
        assert process.stderr is not None
        progress = [process.stderr.readline()]
        while "agent ready" not in progress[-1] and progress[-1]:
            progress.append(process.stderr.readline())
        assert "agent ready" in progress[-1], progress
        (pod,) = [p for p in kube.json("get", "pods", "-n", NAMESPACE, "-l",
                                       "app.kubernetes.io/managed-by=mirrord-trace")["items"]
                  if p["status"].get("phase") == "Running"]  # fmt: skip
        spec = pod["spec"]
        assert pod["metadata"]["labels"]["team"] == "payments"
        assert pod["metadata"]["annotations"]["example.com/owner"] == "payments"
        assert {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"} in (
            spec["tolerations"]
        )
        assert spec["containers"][0]["resources"] == {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        }
        assert (spec["priorityClassName"], spec["priority"]) == ("e2e-agent-priority", 1000)
        assert spec["serviceAccountName"] == "mirrord-agent"
        assert spec["imagePullSecrets"] == [{"name": "registry-login"}]
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        kube.run("delete", "priorityclass", "e2e-agent-priority", "--ignore-not-found")
    assert_agent_gone(target)
