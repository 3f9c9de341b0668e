from __future__ import annotations

import os
from urllib.parse import parse_qsl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgrhooks.budget import (
    ENV_BUDGET,
    STRING_MAX,
    EnvironmentTooLarge,
    Limits,
    SpillPlan,
    _encoded,  # the count the spill rule uses instead of encoding
    exec_size,
    spill_plan,
)
from mgrhooks.env import (
    Facts,
    Spilled,
    call_environment,
    handler_environment,
    is_env_name,
    query_string,
    stage_environment,
)
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


# --- the spill rule: every environment built fits in what exec takes --------------------

LINUX = Limits()
SMALL_STACK = Limits(total=256 * 1024)  # ulimit -s 1024: a quarter of it
PATH_BYTES = 80
#: argv as the kernel counts it for the longest program path: the path twice (the file
#: name and argv[0]), a script's #! line, the old generation's stage, and their pointers
ARGV = 2 * (4096 + 1 + 8) + 256 + 16


def strings_size(env: dict[str, str]) -> int:
    return sum(exec_size(name, value) for name, value in env.items())


def built(request: Request, limits: Limits) -> tuple[dict[str, str], SpillPlan]:
    fixed = call_environment({"PATH": "/bin", "LANG": "C.UTF-8"}, request._replace(params=()), FACTS)
    plan = spill_plan(request, fixed, PATH_BYTES, limits)
    path = "/" + "f" * (PATH_BYTES - 1)
    files = tuple((key, path) for key in plan.files)
    spilled = Spilled(files, plan.unqueried, plan.left_out, path if plan.any else None)
    env = call_environment({"PATH": "/bin", "LANG": "C.UTF-8"}, request, FACTS, spilled=spilled)
    return stage_environment(env, "after", post_length=10**12), plan


#: (text, repeated how often): keys and values from short to over what one string may hold
SHAPES = ["k", "x", "я", "€", "𝄞", "a b&=%", "\udcff", "\0"]
pieces = st.tuples(st.sampled_from(SHAPES), st.integers(1, 12) | st.integers(1000, 70000) | st.integers(100000, 140000))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    params = []
    for key, value in draw(st.lists(st.tuples(pieces, pieces), max_size=8)):
        params.append((key[0] * key[1] + draw(st.sampled_from(["", "_FILE", "1", "2"])), value[0] * value[1]))
    many = draw(st.sampled_from([0, 0, 0, 0, 0, 8000, 25000]))  # many small keys, now and then
    small = draw(st.sampled_from(["1", "ю"]))
    params += [(f"k{n}", small) for n in range(many)]
    return Request("user.edit", tuple(params), user="admin", call_id="c" * 32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests(), st.sampled_from([LINUX, SMALL_STACK]))
def test_every_environment_built_fits_in_what_exec_takes(request: Request, limits: Limits) -> None:
    env, plan = built(request, limits)
    assert all(len(os.fsencode(name)) + 1 + len(os.fsencode(value)) + 1 <= limits.string for name, value in env.items())
    assert strings_size(env) + ARGV <= limits.total
    params = strings_size({k: v for k, v in env.items() if k.startswith("PARAM_") and k != "PARAM_func"})
    assert params + len(env["QUERY_STRING"]) - len("func=user.edit") <= ENV_BUDGET
    # every value reaches the handler: in PARAM_<key>, through PARAM_<key>_FILE, or (left
    # out, or a key that cannot be a name) in QUERY_STRING or the file QUERY_STRING_FILE names
    last = dict(request.params)
    out = set(plan.files) | plan.unqueried | plan.left_out
    for key, value in last.items():
        if key in plan.files:
            assert f"PARAM_{key}" not in env and f"PARAM_{key}_FILE" in env
        elif key not in plan.left_out and is_env_name(key):
            assert env[f"PARAM_{key}"] == value
        elif is_env_name(key):
            assert f"PARAM_{key}" not in env and f"PARAM_{key}_FILE" not in env
    expected = [("func", "user.edit"), *((k, v) for k, v in request.params if k not in out)]
    assert parse_qsl(env["QUERY_STRING"], keep_blank_values=True, errors="surrogateescape") == expected
    assert ("QUERY_STRING_FILE" in env) == bool(out)
    assert not any(name.endswith("_FILE") and name[6:-5] not in plan.files for name in env if name.startswith("PARAM_"))


def test_a_request_that_fits_spills_nothing() -> None:
    request = Request(
        "user.edit", (("name", "Пётр" * 1000), ("note", "x" * 60000)) + tuple((f"k{n}", "v") for n in range(500))
    )
    env, plan = built(request, LINUX)
    assert plan == SpillPlan() and env["PARAM_name"] == "Пётр" * 1000 and "QUERY_STRING_FILE" not in env


def test_a_value_whose_query_string_passes_128_kib_is_spilled() -> None:
    """25,000 Cyrillic characters are 50 KB, 150 KB once percent-encoded."""
    request = Request("user.edit", (("name", "alice"), ("note", "я" * 25000)))
    env, plan = built(request, LINUX)
    assert plan.files == ("note",) and "PARAM_note" not in env and "PARAM_note_FILE" in env
    assert env["QUERY_STRING"] == "func=user.edit&name=alice" and env["PARAM_name"] == "alice"


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8") | st.sampled_from(["\udcff", " ", "+", "%", "~"])))
def test_query_string_sizes_are_counted_as_urlencode_makes_them(text: str) -> None:
    assert (
        exec_size("QUERY_STRING", query_string(Request("f", ((text, text),))))
        == exec_size("QUERY_STRING", "func=f") + 2 * _encoded(text) + 2
    )


def test_a_parameter_named_like_a_spill_file_gets_no_variable() -> None:
    request = Request("f", (("note_FILE", "/etc/shadow"), ("note", "x")))
    env = handler_environment({}, request, FACTS, stage="before")
    assert "PARAM_note_FILE" not in env and env["PARAM_note"] == "x"
    assert "note_FILE=%2Fetc%2Fshadow" in env["QUERY_STRING"]


def test_variables_that_are_not_parameters_must_fit_themselves() -> None:
    request = Request("f", (), user="u" * STRING_MAX)
    fixed = call_environment({}, request, FACTS)
    with pytest.raises(EnvironmentTooLarge, match="AUTH_USER alone is over 131072 bytes"):
        spill_plan(request, fixed, PATH_BYTES)
