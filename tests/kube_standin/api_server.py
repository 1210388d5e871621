"""The stand-in Kubernetes API server: HTTP/1.1, exactly the endpoints mirrord-trace uses,
answering as the real API server does (objects, lists, watch streams, Status errors).

    GET    /api/v1/namespaces/{ns}/pods[?watch=true&labelSelector&fieldSelector...]
    GET    /api/v1/namespaces/{ns}/pods/{name}
    PATCH  /api/v1/namespaces/{ns}/pods/{name}/ephemeralcontainers   (strategic merge)
    GET    /api/v1/namespaces/{ns}/pods/{name}/portforward?ports=N   (WebSocket upgrade)
    GET    /api/v1/namespaces/{ns}/events
    POST   /apis/batch/v1/namespaces/{ns}/jobs
    GET    /apis/batch/v1/namespaces/{ns}/jobs[/{name}]
    DELETE /apis/batch/v1/namespaces/{ns}/jobs/{name}[?propagationPolicy=...]
    GET    /apis/apps/v1/namespaces/{ns}/deployments[/{name}]
    GET    /api/v1/namespaces                                        (cluster-scoped list)

Requests are authenticated (bearer token -> user) and authorized (rbac.py) before anything
else, as the real server does; pod security admission applies to ephemeral containers here
and to Job pods in the job controller.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.kube_standin import admission, objects
from tests.kube_standin.port_forward import accept_key, negotiate, serve_port_forward
from tests.kube_standin.rbac import Request, allows, forbidden_details, forbidden_message
from tests.kube_standin.store import Conflict, SelectorError, field_matcher, label_matcher

if TYPE_CHECKING:
    from tests.kube_standin.cluster import StandinCluster

Obj = dict[str, Any]
_NOT_FOUND_PATH = "the server could not find the requested resource"
_DEFAULT_WATCH_SECONDS = 1800

# (method, path pattern) -> (handler name, API group, resource, subresource, verb for a
# named request / for a collection request).
_ROUTES: list[tuple[str, re.Pattern[str], str, str, str, str | None]] = [
    (
        "GET",
        re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/portforward"),
        "port_forward",
        "",
        "pods",
        "portforward",
    ),
    (
        "POST",
        re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/portforward"),
        "port_forward",
        "",
        "pods",
        "portforward",
    ),
    (
        "PATCH",
        re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/ephemeralcontainers"),
        "patch_ephemeral",
        "",
        "pods",
        "ephemeralcontainers",
    ),
    ("GET", re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)"), "get_object", "", "pods", None),
    ("GET", re.compile(r"/api/v1/namespaces/([^/]+)/pods"), "list_objects", "", "pods", None),
    ("GET", re.compile(r"/api/v1/namespaces/([^/]+)/events"), "list_objects", "", "events", None),
    (
        "POST",
        re.compile(r"/apis/batch/v1/namespaces/([^/]+)/jobs"),
        "create_job",
        "batch",
        "jobs",
        None,
    ),
    (
        "GET",
        re.compile(r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)"),
        "get_object",
        "batch",
        "jobs",
        None,
    ),
    (
        "GET",
        re.compile(r"/apis/batch/v1/namespaces/([^/]+)/jobs"),
        "list_objects",
        "batch",
        "jobs",
        None,
    ),
    (
        "DELETE",
        re.compile(r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)"),
        "delete_job",
        "batch",
        "jobs",
        None,
    ),
    (
        "GET",
        re.compile(r"/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)"),
        "get_object",
        "apps",
        "deployments",
        None,
    ),
    (
        "GET",
        re.compile(r"/apis/apps/v1/namespaces/([^/]+)/deployments"),
        "list_objects",
        "apps",
        "deployments",
        None,
    ),
]
_KIND_OF = {"pods": "Pod", "events": "Event", "jobs": "Job", "deployments": "Deployment"}
_VERB_OF_METHOD = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, cluster: StandinCluster) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cluster = cluster

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke mid-answer is normal (a Ctrl-C'd CLI, a closed
        port-forward); anything else is a bug of the stand-in, kept for the test to report."""
        if isinstance(sys.exc_info()[1], OSError):  # reset, broken pipe, closed socket
            return
        self.cluster.server_errors.append("".join(traceback.format_exc()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in cluster.requests instead

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- answers --
    def _send_json(self, code: int, body: Obj, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", "standin")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_status(
        self, code: int, reason: str, message: str, details: Obj | None = None
    ) -> None:
        self._send_json(code, objects.status(code, reason, message, details))

    def _read_body(self) -> Any:
        return json.loads(self._body) if self._body else None

    # -- routing --
    def _dispatch(self, method: str) -> None:
        cluster = self.server.cluster
        # Read the whole body first, whatever the answer: on a kept-alive connection an unread
        # body would be taken for the next request.
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        cluster.requests.append((method, url.path, query))
        user = cluster.users.get(
            self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        )
        if user is None:
            self._send_json(
                401,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
            )
            return
        if method == "GET" and url.path == "/api/v1/namespaces":
            self._list_namespaces(user)
            return
        for route_method, pattern, handler, group, resource, subresource in _ROUTES:
            match = pattern.fullmatch(url.path)
            if route_method != method or match is None:
                continue
            namespace = match.group(1)
            name = match.group(2) if pattern.groups > 1 else None
            if subresource == "ephemeralcontainers" and not cluster.serve_ephemeral:
                break
            verb = _VERB_OF_METHOD.get(method)
            if subresource == "portforward":
                verb = "create"  # WebSocket upgrades are authorized as create (Kubernetes 1.35)
            elif verb is None:
                verb = "get" if name else ("watch" if _is_true(query.get("watch")) else "list")
            request = Request(verb, group, resource, subresource, namespace, name)
            if not allows(cluster.rbac_rules, request):
                self._send_status(
                    403, "Forbidden", forbidden_message(user, request), forbidden_details(request)
                )
                return
            # Reads in a namespace that does not exist find nothing; writes are refused.
            if namespace not in cluster.namespaces and method in ("POST", "PATCH"):
                self._send_status(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
                return
            getattr(self, f"_{handler}")(request, query)
            return
        self._send_status(404, "NotFound", _NOT_FOUND_PATH, {})

    # -- handlers --
    def _list_namespaces(self, user: str) -> None:
        cluster = self.server.cluster
        request = Request("list", "", "namespaces", None, None, None)
        if not allows(cluster.rbac_rules, request):
            self._send_status(
                403, "Forbidden", forbidden_message(user, request), forbidden_details(request)
            )
            return
        items = [
            {"metadata": {"name": name, "labels": dict(labels)}}
            for name, labels in sorted(cluster.namespaces.items())
        ]
        self._send_json(
            200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": items}
        )

    def _not_found(self, request: Request) -> None:
        subject = f"{request.resource}.{request.group}" if request.group else request.resource
        details = {
            "name": request.name,
            **({"group": request.group} if request.group else {}),
            "kind": request.resource,
        }
        self._send_status(404, "NotFound", f'{subject} "{request.name}" not found', details)

    def _get_object(self, request: Request, query: dict[str, str]) -> None:
        assert request.namespace is not None and request.name is not None
        obj = self.server.cluster.store.get(
            _KIND_OF[request.resource], request.namespace, request.name
        )
        if obj is None:
            self._not_found(request)
        else:
            self._send_json(200, obj)

    def _list_objects(self, request: Request, query: dict[str, str]) -> None:
        kind = _KIND_OF[request.resource]
        store = self.server.cluster.store
        try:
            items, version = store.list(
                kind, request.namespace, query.get("labelSelector"), query.get("fieldSelector")
            )
        except SelectorError as error:
            self._send_status(400, "BadRequest", str(error))
            return
        if _is_true(query.get("watch")):
            self._watch(kind, request, query, items, version)
        else:
            self._send_json(200, objects.list_of(kind, items, version))

    def _watch(
        self, kind: str, request: Request, query: dict[str, str], items: list[Obj], version: str
    ) -> None:
        store = self.server.cluster.store
        labels = label_matcher(query.get("labelSelector"))
        fields = field_matcher(kind, query.get("fieldSelector"))
        timeout = float(query.get("timeoutSeconds") or _DEFAULT_WATCH_SECONDS)
        until = time.monotonic() + timeout
        start = query.get("resourceVersion") or ""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(event: Obj) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            if start in ("", "0"):
                # No resourceVersion: the current state first, as synthetic ADDED events.
                for item in items:
                    emit({"type": "ADDED", "object": _with_kind(kind, item)})
                since = int(version)
            elif int(start) < store.oldest_version() - 1:
                emit(
                    {
                        "type": "ERROR",
                        "object": objects.status(
                            410,
                            "Expired",
                            f"too old resource version: {start} ({store.resource_version})",
                        ),
                    }
                )
                since = None
            else:
                since = int(start)
            if since is not None:
                for change in store.changes(
                    kind,
                    request.namespace,
                    since,
                    until,
                    lambda obj: labels(obj["metadata"].get("labels", {})) and fields(obj),
                    self.server.cluster.stopping.is_set,
                ):
                    emit({"type": change.type, "object": _with_kind(kind, change.obj)})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _create_job(self, request: Request, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        assert request.namespace is not None
        job = self._read_body()
        problem = cluster.schema_problem(job, "Job")
        name = (job or {}).get("metadata", {}).get("name", "")
        if problem is not None:
            self._send_status(
                422,
                "Invalid",
                f'Job.batch "{name}" is invalid: {problem}',
                {"name": name, "group": "batch", "kind": "Job"},
            )
            return
        objects.fill_metadata(job, request.namespace)
        objects.job_defaults(job)
        try:
            created = cluster.store.create(job)
        except Conflict:
            self._send_status(
                409,
                "AlreadyExists",
                f'jobs.batch "{name}" already exists',
                {"name": name, "group": "batch", "kind": "jobs"},
            )
            return
        self._send_json(201, created)
        cluster.controllers.job_created(created)

    def _delete_job(self, request: Request, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        assert request.namespace is not None and request.name is not None
        options = self._read_body() or {}
        # Through the API, a Job's pods are orphaned unless a propagation policy says otherwise.
        propagation = query.get("propagationPolicy") or options.get("propagationPolicy") or "Orphan"
        job = cluster.controllers.delete_job(request.namespace, request.name, propagation)
        if job is None:
            self._not_found(request)
            return
        self._send_json(
            200,
            objects.success_status(
                {
                    "name": request.name,
                    "group": "batch",
                    "kind": "jobs",
                    "uid": job["metadata"]["uid"],
                }
            ),
        )

    def _patch_ephemeral(self, request: Request, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        assert request.namespace is not None and request.name is not None
        content_type = self.headers.get("Content-Type", "")
        patch = self._read_body()
        if content_type != "application/strategic-merge-patch+json":
            self._send_status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/strategic-merge-patch+json (got {content_type})",
            )
            return
        pod = cluster.store.get("Pod", request.namespace, request.name)
        if pod is None:
            self._not_found(request)
            return
        existing = {c["name"]: c for c in pod["spec"].get("ephemeralContainers", [])}
        added = []
        for container in (patch or {}).get("spec", {}).get("ephemeralContainers", []):
            problem = cluster.schema_problem(container, "EphemeralContainer")
            if problem is None and container["name"] in existing:
                problem = (
                    "spec.ephemeralContainers: Forbidden: existing ephemeral containers "
                    f'"{container["name"]}" may not be changed'
                )
            if problem is not None:
                self._send_status(
                    422,
                    "Invalid",
                    f'Pod "{request.name}" is invalid: {problem}',
                    {"name": request.name, "kind": "Pod"},
                )
                return
            full = copy.deepcopy(container)
            full.setdefault("terminationMessagePath", "/dev/termination-log")
            full.setdefault("terminationMessagePolicy", "File")
            full.setdefault("resources", {})
            added.append(full)
        refusal = admission.check_pod(
            cluster.enforce_level(request.namespace), request.name, {}, added
        )
        if refusal is not None:
            self._send_status(403, "Forbidden", refusal, {"name": request.name, "kind": "pods"})
            return

        def add(obj: Obj) -> None:
            obj["spec"].setdefault("ephemeralContainers", []).extend(added)

        updated = cluster.store.mutate("Pod", request.namespace, request.name, add)
        assert updated is not None
        self._send_json(200, updated)
        for container in added:
            cluster.kubelet.start_ephemeral(updated, container)

    def _port_forward(self, request: Request, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        assert request.namespace is not None and request.name is not None
        pod = cluster.store.get("Pod", request.namespace, request.name)
        if pod is None:
            self._not_found(request)
            return
        if pod.get("status", {}).get("phase") != "Running":
            self._send_status(
                400,
                "BadRequest",
                f"unable to upgrade connection: pod {request.name} is not running",
            )
            return
        ports = query.get("ports", "")
        protocol = negotiate(self.headers.get("Sec-WebSocket-Protocol"))
        if self.headers.get("Upgrade", "").lower() != "websocket" or protocol is None:
            self._send_status(
                400,
                "BadRequest",
                "unable to upgrade connection: requested protocol(s) are not supported: "
                f"{self.headers.get('Sec-WebSocket-Protocol')}; supports v4.channel.k8s.io",
            )
            return
        if not ports.isdigit():
            self._send_status(400, "BadRequest", 'query parameter "ports" is required')
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(self.headers["Sec-WebSocket-Key"]))
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        namespace, name, uid = request.namespace, request.name, pod["metadata"]["uid"]
        cluster.port_forwards += 1
        serve_port_forward(
            self.connection,
            int(ports),
            lambda port: cluster.kubelet.dial(namespace, name, port),
            lambda port, error: cluster.kubelet.dial_failure(namespace, name, uid, port, error),
        )
        self.close_connection = True


def _is_true(value: str | None) -> bool:
    return value in ("true", "1", "True")


def _with_kind(kind: str, obj: Obj) -> Obj:
    """Watch events carry full objects (with apiVersion and kind), unlike list items."""
    api_version = objects.KINDS[kind][0]
    return {
        "apiVersion": api_version,
        "kind": kind,
        **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")},
    }
