"""The panel's HTTP contract (mgrhooks.http.contract), pure: what is a call, what is not."""

from __future__ import annotations

import pytest

from mgrhooks.http.contract import (
    Origin,
    Parsed,
    Refused,
    cgi_environment,
    client,
    content_type,
    cookies,
    header_map,
    parse,
    refusal,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("path", ["/billmgr", "/manager/billmgr", "/billmgr/", "/manager/billmgr/"])
def test_the_products_paths_are_calls(path: str) -> None:
    assert refusal("GET", path, "billmgr", {}, 100) is None
    assert refusal("POST", path, "billmgr", FORM, 100) is None


@pytest.mark.parametrize("path", ["/", "/ispmgr", "/billmgr/x", "/manager", "/manager/ispmgr", "/billmgrx"])
def test_any_other_path_is_404(path: str) -> None:
    refused = refusal("GET", path, "billmgr", {}, 100)
    assert refused == Refused(404, "no such path: the panel answers at /billmgr and /manager/billmgr")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_methods_other_than_get_and_post_are_405(method: str) -> None:
    assert refusal(method, "/billmgr", "billmgr", {}, 100) == Refused(405, f"method {method} not allowed: GET or POST")


def test_a_declared_body_over_the_limit_is_413_and_one_at_it_is_not() -> None:
    assert refusal("POST", "/billmgr", "billmgr", {**FORM, "content-length": "101"}, 100) == Refused(
        413, "request body over 100 bytes"
    )
    assert refusal("POST", "/billmgr", "billmgr", {**FORM, "content-length": "100"}, 100) is None


def test_a_post_body_that_is_not_a_form_is_400() -> None:
    headers = {"content-type": "multipart/form-data; boundary=x"}
    assert refusal("POST", "/billmgr", "billmgr", headers, 100) == Refused(
        400, "a POST body must be application/x-www-form-urlencoded, not multipart/form-data"
    )
    charset = {"content-type": "application/x-www-form-urlencoded; charset=UTF-8"}
    assert refusal("POST", "/billmgr", "billmgr", charset, 100) is None


def test_func_out_lang_are_the_calls_and_every_other_parameter_goes_on_in_order() -> None:
    parsed = parse(b"func=user.edit&elid=bob&out=json&lang=ru&sok=ok&su=alice&authinfo=root%3Ax", b"")
    assert parsed == Parsed(
        "user.edit", (("elid", "bob"), ("sok", "ok"), ("su", "alice"), ("authinfo", "root:x")), "json", "ru"
    )


def test_defaults_are_xml_and_en_and_no_func_is_an_empty_one() -> None:
    assert parse(b"", b"") == Parsed("", (), "xml", "en")


def test_the_body_comes_after_the_query_string_and_a_later_value_wins_as_in_exec() -> None:
    parsed = parse(b"func=user&name=a&plid=1", b"name=b&func=user.edit&passwd=p+q%26")
    assert parsed == Parsed("user.edit", (("name", "b"), ("plid", "1"), ("passwd", "p q&")))


def test_bytes_not_utf8_are_kept_as_exec_keeps_them() -> None:
    parsed = parse(b"func=user&name=%FF", b"")
    assert isinstance(parsed, Parsed)
    assert parsed.params == (("name", "\udcff"),)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (b"func=user&out=bjson", "unknown out 'bjson': one of xml, devel, json, sjson, text"),
        (b"func=us%0Aer", "func"),
        (b"func=user&lang=e%1Bn", "lang"),
    ],
)
def test_what_no_call_can_take_is_400(query: bytes, reason: str) -> None:
    refused = parse(query, b"")
    assert isinstance(refused, Refused)
    assert refused.status == 400
    assert reason in refused.reason


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("xml", "text/xml; charset=UTF-8"),
        ("devel", "text/xml; charset=UTF-8"),
        ("json", "application/json; charset=UTF-8"),
        ("sjson", "application/json; charset=UTF-8"),
        ("text", "text/plain; charset=UTF-8"),
    ],
)
def test_content_types(out: str, expected: str) -> None:
    assert content_type(out) == expected


def test_headers_lower_case_cookie_and_forwarded_lines_joined() -> None:
    headers = header_map(
        [
            (b"Cookie", b"a=1"),
            (b"X-Forwarded-For", b"1.2.3.4"),
            (b"cookie", b"billmgrses5=KEY"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"User-Agent", b"one"),
            (b"user-agent", b"two"),
        ]
    )
    assert headers == {"cookie": "a=1; billmgrses5=KEY", "x-forwarded-for": "1.2.3.4, 10.0.0.1", "user-agent": "two"}


def test_cookies_parse_and_a_broken_header_gives_none() -> None:
    assert cookies("billmgrses5=abc; billmgrlang5=dragon:ru") == {"billmgrses5": "abc", "billmgrlang5": "dragon:ru"}
    assert cookies("") == {}
    assert cookies('x="unterminated') == {}


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    assert client("203.0.113.9", "198.51.100.7", ()) == ("203.0.113.9", False)
    assert client("203.0.113.9", "198.51.100.7", ("127.0.0.1",)) == ("203.0.113.9", False)
    assert client("127.0.0.1", "198.51.100.7", ("127.0.0.1",)) == ("198.51.100.7", True)
    # the last address no trusted proxy added: a client cannot forge its own by prepending one
    assert client("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3", ("127.0.0.1", "10.0.0.0/8")) == (
        "198.51.100.7",
        True,
    )
    assert client("127.0.0.1", "10.1.2.3", ("127.0.0.1", "10.0.0.0/8")) == ("10.1.2.3", True)
    assert client("127.0.0.1", "not-an-address", ("127.0.0.1",)) == ("127.0.0.1", False)
    assert client("unix", "198.51.100.7", ("unix",)) == ("198.51.100.7", True)
    assert client("unix", "198.51.100.7", ("127.0.0.1",)) == ("unix", False)


def test_the_cgi_variables_of_a_request() -> None:
    headers = {"cookie": "billmgrses5=K", "user-agent": "curl/8", "host": "panel.example:1500"}
    env = cgi_environment("POST", headers, Origin("192.0.2.1", 1500, True), ())
    assert env == {
        "REMOTE_ADDR": "192.0.2.1",
        "REQUEST_METHOD": "POST",
        "HTTP_COOKIE": "billmgrses5=K",
        "HTTP_USER_AGENT": "curl/8",
        "SERVER_NAME": "panel.example",
        "SERVER_PORT": "1500",
        "HTTPS": "on",
    }


def test_the_cgi_variables_behind_a_trusted_proxy() -> None:
    headers = {"x-forwarded-for": "198.51.100.7", "x-forwarded-proto": "https", "host": "[::1]:8080"}
    env = cgi_environment("GET", headers, Origin("127.0.0.1", 8080, False), ("127.0.0.1",))
    assert env == {
        "REMOTE_ADDR": "198.51.100.7",
        "REQUEST_METHOD": "GET",
        "HTTP_X_FORWARDED_FOR": "198.51.100.7",
        "SERVER_NAME": "[::1]",
        "SERVER_PORT": "8080",
        "HTTPS": "on",
    }
    untrusted = cgi_environment("GET", headers, Origin("192.0.2.1", None, False), ())
    assert untrusted == {"REMOTE_ADDR": "192.0.2.1", "REQUEST_METHOD": "GET", "SERVER_NAME": "[::1]"}
