"""RFC 9535 JSONPath as HTTP body filters use it, shared by the configuration (which checks a
query when it is loaded) and the agent (which runs it): jsonpath-rfc9535 with mirrord's
`typeof` function extension: `typeof(@)` is "null", "bool", "number", "string", "array" or
"object" (nothing when the nodes differ in type)."""

from __future__ import annotations

from typing import Any

import jsonpath_rfc9535
from jsonpath_rfc9535.function_extensions import ExpressionType, FilterFunction

JSONPathError = jsonpath_rfc9535.JSONPathError
JSONPathQuery = jsonpath_rfc9535.JSONPathQuery


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class TypeOf(FilterFunction):
    """mirrord's `typeof(nodes)` extension."""

    arg_types = [ExpressionType.NODES]
    return_type = ExpressionType.VALUE

    def __call__(self, nodes: object) -> object:
        # `@` alone arrives as the current node's value, a longer query as a node list.
        if isinstance(nodes, jsonpath_rfc9535.JSONPathNodeList):
            kinds = {json_type(node.value) for node in nodes}
        elif nodes is jsonpath_rfc9535.NOTHING:
            return jsonpath_rfc9535.NOTHING
        else:
            kinds = {json_type(nodes)}
        return kinds.pop() if len(kinds) == 1 else jsonpath_rfc9535.NOTHING


class _Environment(jsonpath_rfc9535.JSONPathEnvironment):
    def setup_function_extensions(self) -> None:
        super().setup_function_extensions()
        self.function_extensions["typeof"] = TypeOf()


_ENVIRONMENT = _Environment()


def compile_query(query: str) -> JSONPathQuery:
    """The compiled query; JSONPathError saying what is wrong when it is not RFC 9535."""
    return _ENVIRONMENT.compile(query)
