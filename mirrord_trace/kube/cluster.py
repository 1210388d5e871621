"""The connection to the cluster: kubeconfig and context through the `kubernetes` client, and
every API call made the same way (raw JSON answers, bounded timeouts, errors classified).

Answers are kept as the API's own JSON (camelCase field names, as in the API reference) rather
than the client's model objects, so the code reads like the objects it inspects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from mirrord_trace.kube.errors import Action, ClusterUnreachable, NoKubeconfig, from_api_answer

# A cluster that does not answer must fail the command in seconds, not minutes.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
IN_CLUSTER = "in-cluster"


@dataclass
class Cluster:
    api_client: client.ApiClient
    server: str
    context: str  # the kubeconfig context used, or "in-cluster"
    default_namespace: str

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client)

    def call(self, action: Action, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a client API method; -> the answer's JSON. Raises the matching KubeError."""
        with self.translated_errors(action):
            response = method(
                *args,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                **kwargs,
            )
            return json.loads(response.data)

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
            "check that the cluster is up and reachable from here (VPN, kubeconfig context; "
            "try 'kubectl get pods')",
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


def connect(kubeconfig: str | None = None, context: str | None = None) -> Cluster:
    """A client for the cluster of `context` (default: the kubeconfig's current context).

    Without a kubeconfig, inside a pod, the pod's service account is used.
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
            "point KUBECONFIG (or 'kubeconfig' in the config file) at your cluster's "
            "kubeconfig, or use --target pid/N for a local process",
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
