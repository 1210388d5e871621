"""The stand-in's object store: objects by (kind, namespace, name), a resourceVersion that
grows with every change, and the change history that watches replay and follow.

Label selectors (`a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`) and field selectors
(only the fields the real API supports for each kind) behave as in the API server.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

# The field selectors the real API server accepts per kind (others: 400 BadRequest).
FIELD_SELECTABLE = {
    "Pod": {
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
    "Event": {
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    "Job": {"metadata.name", "metadata.namespace", "status.successful"},
    "Deployment": {"metadata.name", "metadata.namespace"},
}
_SET_TERM = re.compile(r"^\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY_TERM = re.compile(r"^\s*([^\s!=,()]+)\s*(==|=|!=)\s*([^\s,()]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)([^\s!=,()]+)\s*$")


class SelectorError(ValueError):
    """A selector the API server would refuse (the message is the API server's)."""


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    if not selector:
        return lambda labels: True
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(selector):
        if match := _SET_TERM.match(term):
            key, operator = match.group(1), match.group(2)
            values = {value.strip() for value in match.group(3).split(",")}
            if operator == "in":
                tests.append(lambda labels, k=key, v=values: labels.get(k) in v)
            else:
                tests.append(lambda labels, k=key, v=values: labels.get(k) not in v)
        elif match := _EQUALITY_TERM.match(term):
            key, operator, value = match.groups()
            if operator == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif match := _EXISTS_TERM.match(term):
            negate, key = match.group(1) == "!", match.group(2)
            tests.append(lambda labels, k=key, n=negate: (k in labels) != n)
        else:
            raise SelectorError(f"unable to parse requirement: found '{term.strip()}'")
    return lambda labels: all(test(labels) for test in tests)


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if path == "source" and isinstance(value, dict):
        value = value.get("component")
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def field_matcher(kind: str, selector: str | None) -> Callable[[Obj], bool]:
    if not selector:
        return lambda obj: True
    tests: list[Callable[[Obj], bool]] = []
    for term in selector.split(","):
        match = _EQUALITY_TERM.match(term)
        if not match:
            raise SelectorError(f"invalid selector: '{selector}'; can't understand '{term}'")
        path, operator, value = match.groups()
        if path not in FIELD_SELECTABLE[kind]:
            raise SelectorError(f"field label not supported: {path}")
        if operator == "!=":
            tests.append(lambda obj, p=path, v=value: _field_value(obj, p) != v)
        else:
            tests.append(lambda obj, p=path, v=value: _field_value(obj, p) == v)
    return lambda obj: all(test(obj) for test in tests)


class Conflict(Exception):
    """The object exists already."""


@dataclass(frozen=True)
class Change:
    resource_version: int
    kind: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj


class Store:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._history: list[Change] = []
        self._version = 4000

    # -- reading --
    @property
    def resource_version(self) -> str:
        with self._changed:
            return str(self._version)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._changed:
            found = self._objects.get((kind, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def list(
        self,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        labels_match = label_matcher(label_selector)
        fields_match = field_matcher(kind, field_selector)
        with self._changed:
            items = [
                copy.deepcopy(obj)
                for (obj_kind, obj_namespace, _), obj in sorted(self._objects.items())
                if obj_kind == kind
                and (namespace is None or obj_namespace == namespace)
                and labels_match(obj["metadata"].get("labels", {}))
                and fields_match(obj)
            ]
            return items, str(self._version)

    # -- writing --
    def _record(self, kind: str, change_type: str, obj: Obj) -> Obj:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        snapshot = copy.deepcopy(obj)
        self._history.append(Change(self._version, kind, change_type, snapshot))
        self._changed.notify_all()
        return copy.deepcopy(snapshot)

    def create(self, obj: Obj) -> Obj:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._changed:
            if key in self._objects:
                raise Conflict(key)
            self._objects[key] = copy.deepcopy(obj)
            return self._record(key[0], "ADDED", self._objects[key])

    def mutate(
        self, kind: str, namespace: str, name: str, change: Callable[[Obj], None]
    ) -> Obj | None:
        """Apply `change` to the stored object (under the lock); -> the new object."""
        with self._changed:
            obj = self._objects.get((kind, namespace, name))
            if obj is None:
                return None
            change(obj)
            return self._record(kind, "MODIFIED", obj)

    def delete(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._changed:
            obj = self._objects.pop((kind, namespace, name), None)
            if obj is None:
                return None
            return self._record(kind, "DELETED", obj)

    # -- watching --
    def changes(
        self,
        kind: str,
        namespace: str | None,
        since: int,
        until: float,
        matches: Callable[[Obj], bool],
        stopped: Callable[[], bool],
    ) -> Iterator[Change]:
        """Changes after resourceVersion `since`, as they happen, until time `until`."""
        position = 0
        with self._changed:
            while (
                position < len(self._history) and self._history[position].resource_version <= since
            ):
                position += 1
        while not stopped():
            with self._changed:
                remaining = until - time.monotonic()
                if position >= len(self._history):
                    if remaining <= 0:
                        return
                    self._changed.wait(min(remaining, 0.2))
                    continue
                change = self._history[position]
                position += 1
            if (
                change.kind == kind
                and (namespace is None or change.obj["metadata"]["namespace"] == namespace)
                and matches(change.obj)
            ):
                yield change

    def oldest_version(self) -> int:
        with self._changed:
            return self._history[0].resource_version if self._history else self._version
