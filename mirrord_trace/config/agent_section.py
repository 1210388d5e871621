"""The `agent` section: how the agent pod (or ephemeral container) is made.

mirrord's forms are all taken: `image` as a string or `{registry, tag}`, the pod's labels,
annotations, tolerations, resources, priority class, service account, image
pull secrets and security context, and capabilities to leave out. Kubernetes values
(tolerations, resources) are kept in the API's own shape: mirrord_trace.kube.manifests puts
them into the pod as they are, and the API server is the judge of their contents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from mirrord_trace.config.errors import ConfigError
from mirrord_trace.config.model import (
    AGENT_CAPABILITIES,
    IMAGE_PULL_POLICIES,
    AgentConfig,
)
from mirrord_trace.config.values import (
    check_keys,
    expect_bool,
    expect_choice,
    expect_int,
    expect_mapping,
    expect_str,
    expect_str_map,
    join,
    show,
)

T = TypeVar("T")

AGENT_KEYS = (
    "image",
    "image_pull_policy",
    "namespace",
    "ttl",
    "ephemeral",
    "privileged",
    "startup_timeout",
    "communication_timeout",
    "network_interface",
    "flush_connections",
    "labels",
    "annotations",
    "tolerations",
    "resources",
    "priority_class",
    "service_account",
    "image_pull_secrets",
    "security_context",
    "disabled_capabilities",
)
SECURITY_CONTEXT_KEYS = ("app_armor_profile", "seccomp_profile")
SECURITY_PROFILE_KEYS = ("type", "localhost_profile")
SECURITY_PROFILE_TYPES = ("RuntimeDefault", "Localhost", "Unconfined")
RESOURCE_KEYS = ("limits", "requests", "claims")
# mirrord's own agent image cannot serve mirrord-trace (another protocol): a file written for
# mirrord that names it has it ignored, with a warning.
MIRRORD_AGENT_REPOSITORIES = ("ghcr.io/metalbear-co/mirrord", "metalbear/mirrord")
MAX_TIMEOUT = 2**32 - 1  # mirrord: a u64 of seconds; more than a century is plenty
# Kubernetes qualified names (label/annotation keys), optionally prefixed by a DNS subdomain.
_QUALIFIED_NAME = re.compile(
    r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def parse_agent(value: object, key: str) -> tuple[AgentConfig, tuple[str, ...]]:
    """-> (the agent configuration, warnings about it)."""
    from mirrord_trace.config.parse import parse_namespace

    section = expect_mapping(value, key)
    check_keys(section, key, AGENT_KEYS)

    def field(name: str, reader: Callable[[Any, str], T], default: T) -> T:
        item = section.get(name)
        return default if item is None else reader(item, join(key, name))

    image, warnings = field("image", _image, (None, ()))
    return AgentConfig(
        image=image,
        image_pull_policy=field(
            "image_pull_policy",
            lambda item, at: expect_choice(item, at, IMAGE_PULL_POLICIES),
            "IfNotPresent",
        ),
        namespace=field("namespace", parse_namespace, None),
        ttl=field("ttl", parse_agent_ttl, 1),
        ephemeral=field("ephemeral", expect_bool, False),
        privileged=field("privileged", expect_bool, False),
        startup_timeout=field("startup_timeout", _timeout, 60),
        communication_timeout=field("communication_timeout", _timeout, None),
        network_interface=field("network_interface", expect_str, None),
        flush_connections=field("flush_connections", expect_bool, False),
        labels=field("labels", _labels, MappingProxyType({})),
        annotations=field("annotations", _annotations, MappingProxyType({})),
        tolerations=field("tolerations", _tolerations, None),
        resources=field("resources", _resources, None),
        priority_class=field("priority_class", expect_str, None),
        service_account=field("service_account", expect_str, None),
        image_pull_secrets=field("image_pull_secrets", _pull_secrets, ()),
        security_context=field("security_context", _security_context, None),
        disabled_capabilities=field("disabled_capabilities", _capabilities, frozenset()),
    ), warnings


def parse_agent_ttl(value: object, key: str) -> int:
    """Seconds the agent pod stays after the agent exits (mirrord: a u16)."""
    return expect_int(value, key, 0, 65535)


def _timeout(value: object, key: str) -> int:
    return expect_int(value, key, 1, MAX_TIMEOUT)


def _image(value: object, key: str) -> tuple[str | None, tuple[str, ...]]:
    """A string, or mirrord's `{registry, tag}` (the tag defaults to this release's version:
    mirrord-trace agent images are built per release, see `mirrord-trace agent-image`)."""
    if isinstance(value, Mapping):
        section = expect_mapping(value, key)
        check_keys(section, key, ("registry", "tag"))
        registry = section.get("registry")
        tag = section.get("tag")
        if registry is None and tag is None:
            return None, ()
        if registry is None:
            raise ConfigError(
                key + ".registry",
                "is needed with a tag (mirrord-trace has no public agent image to take it from)",
            )
        from mirrord_trace import __version__

        registry = expect_str(registry, key + ".registry")
        tag = __version__ if tag is None else expect_str(tag, key + ".tag")
        image = f"{registry}:{tag}"
    else:
        image = expect_str(value, key)
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    if repository in MIRRORD_AGENT_REPOSITORIES:
        return None, (
            f"{key}: {image!r} is mirrord's own agent, which cannot serve mirrord-trace; "
            "ignored (set agent.image to your mirrord-trace agent image: "
            "mirrord-trace agent-image push)",
        )
    return image, ()


def _labels(value: object, key: str) -> Mapping[str, str]:
    mapping = expect_str_map(value, key)
    for name, item in mapping.items():
        _check_qualified_name(name, key)
        if not _LABEL_VALUE.fullmatch(item):
            raise ConfigError(
                join(key, name),
                f"{show(item)} is not a label value (up to 63 letters, digits, '-', '_', '.')",
            )
    return MappingProxyType(mapping)


def _annotations(value: object, key: str) -> Mapping[str, str]:
    mapping = expect_str_map(value, key)
    for name in mapping:
        _check_qualified_name(name, key)
    return MappingProxyType(mapping)


def _check_qualified_name(name: str, key: str) -> None:
    if not _QUALIFIED_NAME.fullmatch(name):
        raise ConfigError(
            key, f"{show(name)} is not a Kubernetes key ([prefix/]name, letters, digits, '-_.')"
        )


def _tolerations(value: object, key: str) -> tuple[Mapping[str, Any], ...]:
    """A list of Kubernetes Tolerations (key, operator, value, effect, tolerationSeconds)."""
    if not isinstance(value, list):
        raise ConfigError(key, f"{show(value)} is not a list of tolerations")
    allowed = ("key", "operator", "value", "effect", "tolerationSeconds")
    tolerations = []
    for item in value:
        toleration = expect_mapping(item, key)
        check_keys(toleration, key, allowed)
        for name in ("key", "operator", "value", "effect"):
            if toleration.get(name) is not None:
                expect_str(toleration[name], join(key, name), allow_empty=True)
        if toleration.get("operator") not in (None, "Exists", "Equal"):
            raise ConfigError(
                join(key, "operator"), f"{show(toleration['operator'])} is not one of Exists, Equal"
            )
        if toleration.get("tolerationSeconds") is not None:
            expect_int(
                toleration["tolerationSeconds"], join(key, "tolerationSeconds"), -(2**63), 2**63 - 1
            )
        tolerations.append(MappingProxyType({k: v for k, v in toleration.items() if v is not None}))
    return tuple(tolerations)


def _resources(value: object, key: str) -> Mapping[str, Any]:
    """Kubernetes ResourceRequirements: limits/requests map resource names to quantities."""
    section = expect_mapping(value, key)
    check_keys(section, key, RESOURCE_KEYS)
    result: dict[str, Any] = {}
    for name in ("limits", "requests"):
        if section.get(name) is not None:
            quantities = expect_mapping(section[name], join(key, name))
            for resource, quantity in quantities.items():
                if isinstance(quantity, bool) or not isinstance(quantity, str | int | float):
                    raise ConfigError(
                        join(join(key, name), resource), f"{show(quantity)} is not a quantity"
                    )
            result[name] = {resource: str(quantity) for resource, quantity in quantities.items()}
    if section.get("claims") is not None:
        claims = section["claims"]
        if not isinstance(claims, list):
            raise ConfigError(join(key, "claims"), f"{show(claims)} is not a list of claims")
        result["claims"] = [
            {
                "name": expect_str(
                    expect_mapping(claim, join(key, "claims")).get("name"), join(key, "claims.name")
                )
            }
            for claim in claims
        ]
    return MappingProxyType(result)


def _pull_secrets(value: object, key: str) -> tuple[str, ...]:
    """`[{"name": SECRET}, ...]` -> the secret names."""
    if not isinstance(value, list):
        raise ConfigError(key, f"{show(value)} is not a list of {{name: SECRET}}")
    names = []
    for item in value:
        entry = expect_mapping(item, key)
        check_keys(entry, key, ("name",))
        names.append(expect_str(entry.get("name"), join(key, "name")))
    return tuple(names)


def _security_context(value: object, key: str) -> Mapping[str, Any]:
    """mirrord's snake_case profiles -> the API's seccompProfile/appArmorProfile."""
    section = expect_mapping(value, key)
    check_keys(section, key, SECURITY_CONTEXT_KEYS)
    result: dict[str, Any] = {}
    for name, api_name in (
        ("seccomp_profile", "seccompProfile"),
        ("app_armor_profile", "appArmorProfile"),
    ):
        if section.get(name) is None:
            continue
        at = join(key, name)
        profile = expect_mapping(section[name], at)
        check_keys(profile, at, SECURITY_PROFILE_KEYS)
        kind = expect_choice(profile.get("type"), join(at, "type"), SECURITY_PROFILE_TYPES)
        api: dict[str, str] = {"type": kind}
        local = profile.get("localhost_profile")
        if kind == "Localhost":
            api["localhostProfile"] = expect_str(local, join(at, "localhost_profile"))
        elif local is not None:
            raise ConfigError(join(at, "localhost_profile"), "only goes with type Localhost")
        result[api_name] = api
    return MappingProxyType(result)


def _capabilities(value: object, key: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise ConfigError(key, f"{show(value)} is not a list of capabilities")
    for item in value:
        expect_choice(item, key, AGENT_CAPABILITIES)
    return frozenset(value)
