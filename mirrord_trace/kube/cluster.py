"""The connection to the cluster: kubeconfig and context through the `kubernetes` client, and
every API call made the same way (raw JSON answers, bounded timeouts, errors classified).

Requests go through the client's ApiClient (its authentication, TLS, proxies and token
refresh) by path, not through the generated CoreV1Api/BatchV1Api classes: importing those
builds hundreds of pydantic models, ~2.5 s of start-up that a session would pay for nothing.
Answers are kept as the API's own JSON (camelCase field names, as in the API reference).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from mirrord_trace.kube.errors import Action, ClusterUnreachable, NoKubeconfig, from_api_answer

# A cluster that does not answer must fail the command in seconds, not minutes.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
IN_CLUSTER = "in-cluster"


def core_path(
    namespace: str, resource: str, name: str | None = None, sub: str | None = None
) -> str:
    """/api/v1/namespaces/NS/RESOURCE[/NAME[/SUB]] (core group: pods, events)."""
    return _path("/api/v1", namespace, resource, name, sub)


def group_path(group_version: str, namespace: str, resource: str, name: str | None = None) -> str:
    """/apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME] (batch/v1 jobs, apps/v1 deployments)."""
    return _path(f"/apis/{group_version}", namespace, resource, name, None)


def _path(base: str, namespace: str, resource: str, name: str | None, sub: str | None) -> str:
    parts = [base, "namespaces", quote(namespace, safe=""), resource]
    parts += [quote(name, safe="")] if name else []
    parts += [sub] if sub else []
    return "/".join(parts)


@dataclass
class Cluster:
    api_client: client.ApiClient
    server: str
    context: str  # the kubeconfig context used, or "in-cluster"
    default_namespace: str

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: Any,
        content_type: str | None,
        read_timeout: float,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            *request, _request_timeout=(CONNECT_TIMEOUT, read_timeout)
        )
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response

    def call(
        self,
        action: Action,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        """One API request; -> the answer's JSON. Raises the matching KubeError."""
        if body is not None and content_type is None:
            content_type = "application/json"
        with self.translated_errors(action):
            response = self._request(method, path, query, body, content_type, READ_TIMEOUT)
            return json.loads(response.read())

    def watch(
        self, action: Action, path: str, query: dict[str, str], timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) of a collection for up to timeout_seconds."""
        query = {**query, "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        with self.translated_errors(action):
            response = self._request("GET", path, query, None, None, timeout_seconds + READ_TIMEOUT)
            try:
                for line in iter_resp_lines(response.response):
                    if line.strip():
                        yield json.loads(line)
            finally:
                # Closed, not just released: a half-read stream must not go back to the pool.
                response.response.close()
                response.response.release_conn()

    def websocket_headers_and_url(
        self, path: str, query: dict[str, str]
    ) -> tuple[str, dict[str, str]]:
        """URL and headers (credentials included) for a WebSocket request to `path`."""
        _, url, headers, _, _ = self.api_client.param_serialize(
            method="GET",
            resource_path=path,
            query_params=list(query.items()),
            header_params={},
            auth_settings=["BearerToken"],
        )
        return url, headers

    @contextmanager
    def translated_errors(self, action: Action) -> Iterator[None]:
        """`with cluster.translated_errors(action):` turns client errors into KubeErrors."""
        try:
            yield
        except ApiException as error:
            if error.status:
                raise from_api_answer(error.status, error.body, action, self.context) from None
            raise self.unreachable(error) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise self.unreachable(error) from None

    def unreachable(self, error: BaseException) -> ClusterUnreachable:
        return ClusterUnreachable(
            f"cannot reach the Kubernetes API server at {self.server} "
            f"(context {self.context}): {network_reason(error)}",
            "check that the cluster is up and reachable from here: VPN, kubeconfig context, "
            "'kubectl get pods'",
        )

    def close(self) -> None:
        self.api_client.close()


def network_reason(error: BaseException) -> str:
    """The most specific OS-level reason in an exception chain ("Connection refused")."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        reason = getattr(seen, "reason", None)
        if isinstance(reason, BaseException):
            seen = reason
            continue
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(error).split())
    return text or type(error).__name__


def connect(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    accept_invalid_certificates: bool | None = None,
) -> Cluster:
    """A client for the cluster of `context` (default: the kubeconfig's current context).

    Without a kubeconfig, inside a pod, the pod's service account is used.
    `accept_invalid_certificates` (mirrord's key): True skips verifying the API server's
    certificate, False verifies it, None does what the kubeconfig says.
    """
    configuration = client.Configuration()
    try:
        if kubeconfig is None and _in_cluster() and not _default_kubeconfig_exists():
            config.load_incluster_config(client_configuration=configuration)
            namespace = _service_account_namespace()
            used_context = IN_CLUSTER
        else:
            contexts, current = config.list_kube_config_contexts(kubeconfig)
            chosen = _find_context(contexts, current, context)
            config.load_kube_config(
                config_file=kubeconfig,
                context=chosen["name"],
                client_configuration=configuration,
                persist_config=False,
            )
            namespace = chosen.get("context", {}).get("namespace") or "default"
            used_context = chosen["name"]
    except ConfigException as error:
        raise _config_problem(error, kubeconfig) from None
    except OSError as error:
        raise NoKubeconfig(
            f"cannot read the Kubernetes configuration: {error.strerror or error}",
            "check the kubeconfig file and the files it names (certificates, tokens)",
        ) from None
    # One attempt per request: a refused connection fails at once, a silent one in
    # CONNECT_TIMEOUT (urllib3 would otherwise retry three times).
    configuration.retries = False
    if accept_invalid_certificates is not None:
        configuration.verify_ssl = not accept_invalid_certificates
    return Cluster(client.ApiClient(configuration), configuration.host, used_context, namespace)


def _find_context(
    contexts: list[dict[str, Any]] | None, current: dict[str, Any] | None, wanted: str | None
) -> dict[str, Any]:
    if wanted is None:
        if not current:
            raise NoKubeconfig(
                "the kubeconfig has no current context",
                "pass --context NAME, or run 'kubectl config use-context NAME'",
            )
        return current
    for entry in contexts or []:
        if entry.get("name") == wanted:
            return entry
    names = ", ".join(sorted(str(entry.get("name")) for entry in contexts or [])) or "none"
    raise NoKubeconfig(
        f"the kubeconfig has no context named {wanted!r} (it has: {names})",
        "pass one of its contexts to --context (see 'kubectl config get-contexts')",
    )


def _config_problem(error: ConfigException, kubeconfig: str | None) -> NoKubeconfig:
    text = " ".join(str(error).split())
    if "No configuration found" in text or "not exist" in text:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        return NoKubeconfig(
            f"no Kubernetes cluster is configured: no kubeconfig at {where}",
            "point KUBECONFIG, or 'kubeconfig' in the config file, at your cluster's "
            "kubeconfig; or use --target pid/N for a local process",
        )
    return NoKubeconfig(
        f"the Kubernetes configuration cannot be used: {text}",
        "check the kubeconfig (e.g. 'kubectl config view --minify')",
    )


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _default_kubeconfig_exists() -> bool:
    paths = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
    return any(os.path.exists(os.path.expanduser(path)) for path in paths if path)


def _service_account_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as source:
            return source.read().strip() or "default"
    except OSError:
        return "default"
