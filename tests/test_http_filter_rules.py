"""mirrord 3.250's HTTP filter semantics: the agent's filter tree (agent.http.filter), the body
collector's bound, and the configuration that produces the tree (feature.network.incoming.
http_filter), with its one-line errors."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.http.body import BodyCollector
from agent.http.filter import RequestHead, from_subscribe_fields, parse_filter
from mirrord_trace.config import ConfigError, parse_config
from mirrord_trace.protocol.requests import InvalidRequest


def head(
    method: bytes = b"GET", target: bytes = b"/", headers: list[tuple[bytes, bytes]] | None = None
) -> RequestHead:
    return RequestHead.of(method, target, headers or [])


def test_header_filter_matches_name_colon_value_case_insensitively() -> None:
    flt = parse_filter({"header": "^x-user: me$"})
    assert flt.matches(head(headers=[(b"X-User", b"ME")]), None)
    assert flt.matches(head(headers=[(b"Host", b"a"), (b"x-user", b"me")]), None)
    assert not flt.matches(head(headers=[(b"x-user", b"meme")]), None)
    assert not flt.matches(head(headers=[(b"x-other", b"me")]), None)


def test_look_ahead_excludes_kube_probes_as_in_mirrords_docs() -> None:
    flt = parse_filter({"header": "^User-Agent: (?!kube-probe)"})
    assert flt.matches(head(headers=[(b"user-agent", b"curl/8.0")]), None)
    assert not flt.matches(head(headers=[(b"User-Agent", b"kube-probe/1.30")]), None)
    assert not flt.matches(head(), None)  # no User-Agent at all: not stolen
    health = parse_filter({"path": "^(?!/health/)"})
    assert health.matches(head(target=b"/api"), None)
    assert not health.matches(head(target=b"/health/ready"), None)


def test_path_filter_matches_the_path_or_the_path_with_its_query() -> None:
    flt = parse_filter({"path": "^/api/v1$"})
    assert flt.matches(head(target=b"/api/v1?debug=1"), None)  # the path alone matches
    assert flt.matches(head(target=b"/API/V1"), None)
    assert not flt.matches(head(target=b"/api/v2"), None)
    by_query = parse_filter({"path": "debug=1"})
    assert by_query.matches(head(target=b"/x?debug=1"), None)  # path + query


def test_grpc_methods_by_path() -> None:
    flt = parse_filter({"path": "^/shop.Orders/Place$"})
    assert flt.matches(head(b"POST", b"/shop.Orders/Place"), None)
    assert not flt.matches(head(b"POST", b"/shop.Orders/List"), None)


def test_method_filter_is_case_insensitive_and_takes_any_token() -> None:
    post = parse_filter({"method": "post"})
    assert post.matches(head(b"POST"), None)
    assert not post.matches(head(b"GET"), None)
    assert parse_filter({"method": "PURGE"}).matches(head(b"purge"), None)


BOOKS = {"library": {"books": [34555, 1233, "x", 23432], "owner": {"name": "Alice"}}}


def test_json_body_filter_runs_rfc9535_queries_and_stringifies_non_strings() -> None:
    numbers = parse_filter({"body": "json", "query": "$.library.books[*]", "matches": r"^\d{3,5}$"})
    assert numbers.needs_body
    assert numbers.matches(head(b"POST"), json.dumps(BOOKS).encode())
    assert not numbers.matches(head(b"POST"), b'{"library": {"books": [1, 22]}}')
    name = parse_filter({"body": "json", "query": "$..name", "matches": "^Alice$"})
    assert name.matches(head(b"POST"), json.dumps(BOOKS).encode())
    nested = parse_filter({"body": "json", "query": "$.library.owner", "matches": '"name":"Al'})
    assert nested.matches(head(b"POST"), json.dumps(BOOKS).encode())  # compact JSON text
    assert not name.matches(head(b"POST"), b"not json")
    assert not name.matches(head(b"POST"), None)  # longer than the bound: no match


def test_typeof_extension_selects_by_json_type() -> None:
    flt = parse_filter(
        {"body": "json", "query": "$.books[?typeof(@) == 'number']", "matches": "4$"}
    )
    assert flt.matches(head(b"POST"), b'{"books": [1111, 2222, 4444]}')
    assert not flt.matches(head(b"POST"), b'{"books": ["1111", "2222", "4444"]}')


def test_all_of_and_any_of_combine_every_kind_of_filter() -> None:
    session = parse_filter(
        {
            "all_of": [
                {"header": "^baggage: .*mirrord-session=alice"},
                {"path": "^/api/orders$"},
                {"method": "POST"},
            ]
        }
    )
    baggage = [(b"baggage", b"userId=1,mirrord-session=alice")]
    assert not session.needs_body
    assert session.matches(head(b"POST", b"/api/orders", baggage), None)
    assert not session.matches(head(b"GET", b"/api/orders", baggage), None)
    assert not session.matches(head(b"POST", b"/api/orders"), None)
    either = parse_filter(
        {"any_of": [{"path": "^/a$"}, {"body": "json", "query": "$.x", "matches": "^1$"}]}
    )
    assert either.needs_body
    assert either.matches(head(target=b"/a"), None)
    assert either.matches(head(target=b"/b"), b'{"x": 1}')
    assert not either.matches(head(target=b"/b"), b'{"x": 2}')


@given(st.lists(st.booleans(), min_size=1, max_size=6))
def test_all_of_is_every_part_and_any_of_is_one(parts: list[bool]) -> None:
    """Each part is a method filter that matches (GET) or not (PUT)."""
    inner = [{"method": "GET" if wanted else "PUT"} for wanted in parts]
    request = head(b"GET")
    assert parse_filter({"all_of": inner}).matches(request, None) == all(parts)
    assert parse_filter({"any_of": inner}).matches(request, None) == any(parts)


def test_the_older_subscribe_fields_still_work_and_combine() -> None:
    flt = from_subscribe_fields({"header_filter": "^x-user: me$", "path_filter": "^/api"})
    assert flt is not None
    assert flt.matches(head(target=b"/api", headers=[(b"x-user", b"me")]), None)
    assert not flt.matches(head(target=b"/web", headers=[(b"x-user", b"me")]), None)
    assert from_subscribe_fields({"http_filter": {}, "header_filter": ""}) is None


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"header": "(unclosed"}, "header"),
        ({"method": "GET POST"}, "method"),
        ({"body": "xml", "query": "$", "matches": "x"}, "body"),
        ({"body": "json", "query": "$[", "matches": "x"}, "RFC 9535"),
        ({"all_of": []}, "all_of"),
        ({"any_of": [{"nope": 1}]}, "any_of[0]"),
        ({"header": "a", "path": "b"}, "unknown filter"),
    ],
)
def test_a_bad_filter_is_an_invalid_request_naming_its_part(wire: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        parse_filter(wire)


def test_the_body_collector_never_holds_more_than_its_bound() -> None:
    collector = BodyCollector(None, limit=10)
    assert collector.add(b"12345") and collector.add(b"67890")
    assert not collector.add(b"1")  # past the bound: stop collecting, forward as it comes
    collector.finish()
    assert collector.body is None
    assert BodyCollector(11, limit=10).too_big  # announced too long: not even started
    fits = BodyCollector(3, limit=10)
    fits.add(b"abc")
    fits.finish()
    assert fits.body == b"abc"


# ---- the configuration ---------------------------------------------------------------------


def incoming(http_filter: object) -> dict[str, object]:
    return {"feature": {"network": {"incoming": {"mode": "steal", "http_filter": http_filter}}}}


def test_config_turns_every_filter_key_into_the_agents_tree() -> None:
    body = {"body": "json", "query": "$.user", "matches": "^alice$"}
    cases = [
        ({"header_filter": "^x: 1$"}, {"header": "^x: 1$"}),
        ({"path_filter": "^/a"}, {"path": "^/a"}),
        ({"method_filter": "POST"}, {"method": "POST"}),
        ({"body_filter": body}, body),
        ({"all_of": [{"method": "POST"}, body]}, {"all_of": [{"method": "POST"}, body]}),
        ({"any_of": [{"path": "^/a"}]}, {"any_of": [{"path": "^/a"}]}),
        (
            {"header_filter": "^x: 1$", "method_filter": "GET"},
            {"all_of": [{"header": "^x: 1$"}, {"method": "GET"}]},
        ),
    ]
    for config, wire in cases:
        http = parse_config(incoming(config)).feature.network.incoming.http_filter
        assert http.wire == wire, config
        assert parse_filter(http.wire) is not None  # the agent takes what the config sends


@pytest.mark.parametrize(
    ("http_filter", "key"),
    [
        ({"method_filter": "GET /"}, "http_filter.method_filter"),
        ({"body_filter": {"body": "json", "query": "$[", "matches": "x"}}, "body_filter.query"),
        ({"body_filter": {"body": "json", "query": "$"}}, "body_filter.matches"),
        ({"all_of": []}, "http_filter.all_of"),
        ({"any_of": [{"header": "(x"}]}, "any_of[0].header"),
        ({"any_of": [{"cookie": "x"}]}, "any_of[0]"),
        ({"header_filter": "a", "ports": "http"}, "http_filter.ports"),
    ],
)
def test_config_errors_name_the_key(http_filter: object, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(incoming(http_filter))
    assert key in str(caught.value)
    assert "\n" not in str(caught.value)
