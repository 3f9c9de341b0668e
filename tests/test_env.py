from __future__ import annotations

from urllib.parse import parse_qsl

from mgrhooks.env import Facts, handler_environment, query_string
from mgrhooks.model import Request

FACTS = Facts("billmgr", "/srv/root", "1.2.3", osname="Linux")
REQUEST = Request(
    "user.add",
    (("name", "alice"), ("passwd", "s3cr&t=x"), ("sok", "ok")),
    user="admin",
    level=29,
    lang="ru",
    call_id="c1",
)


def test_protocol_variables() -> None:
    env = handler_environment({}, REQUEST, FACTS, stage="after")
    assert {k: v for k, v in env.items() if k.startswith("PARAM_")} == {
        "PARAM_func": "user.add",
        "PARAM_name": "alice",
        "PARAM_passwd": "s3cr&t=x",
        "PARAM_sok": "ok",
    }
    expected = {
        "AUTH_USER": "admin",
        "AUTH_LEVEL": "29",
        "REMOTE_USER": "admin",
        "AUTHID": "c1",
        "SESSION_LEVEL": "29",
        "SESSION_LANG": "ru",
        "MGR": "billmgr",
        "MGR_VERSION": "1.2.3",
        "MGR_DISTRIBUTION": "mgrhooks",
        "MGR_OSNAME": "Linux",
        "HANDLER_STAGE": "after",
        "EVENT_TYPE": "after",
        "ACTION_NAME": "user.add",
        "MGRHOOKS_ROOT": "/srv/root",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": "GET",
    }
    assert {k: env[k] for k in expected} == expected
    assert "CONTENT_LENGTH" not in env


def test_query_string_has_func_first_and_round_trips() -> None:
    qs = query_string(REQUEST)
    assert qs.startswith("func=user.add&")
    assert parse_qsl(qs) == [("func", "user.add"), ("name", "alice"), ("passwd", "s3cr&t=x"), ("sok", "ok")]
    assert handler_environment({}, REQUEST, FACTS, stage="before")["QUERY_STRING"] == qs


def test_post_variables() -> None:
    env = handler_environment({}, REQUEST, FACTS, stage="after", post_length=42)
    assert (env["REQUEST_METHOD"], env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == (
        "POST",
        "application/x-www-form-urlencoded",
        "42",
    )


def test_runner_environment_is_allow_listed() -> None:
    base = {"PATH": "/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "AWS_SECRET_ACCESS_KEY": "x", "PYTHONPATH": "/evil"}
    env = handler_environment(base, REQUEST, FACTS, stage="after")
    assert (env["PATH"], env["LANG"], env["LC_ALL"]) == ("/bin", "C.UTF-8", "C")
    assert "AWS_SECRET_ACCESS_KEY" not in env and "PYTHONPATH" not in env


def test_default_path_when_runner_has_none() -> None:
    assert handler_environment({}, REQUEST, FACTS, stage="after")["PATH"].endswith("/usr/bin:/sbin:/bin")


def test_request_parameters_cannot_override_protocol_variables_and_odd_keys_stay_in_query_string() -> None:
    request = Request("f", (("a=b", "1"), ("x\0y", "2"), ("a.b-c", "3")))
    env = handler_environment({}, request, FACTS, stage="before")
    assert "PARAM_a.b-c" in env
    assert not any(k.startswith(("PARAM_a=", "PARAM_x")) for k in env)
    assert "a%3Db=1" in env["QUERY_STRING"]
