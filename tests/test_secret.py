"""The secret rule (one function for records, devel output and the log) and hiding a
call's secret values in the text of the log's dumps."""

from __future__ import annotations

from mgrhooks.notify import redact
from mgrhooks.secret import MASK, Hider, is_secret, masked


def test_the_rule_covers_passwords_their_confirmation_keys_and_tokens() -> None:
    for name in ("passwd", "PASSWORD", "confirm", "passwd_confirm", "authinfo", "api_key", "token", "secret"):
        assert is_secret(name), name
    for name in ("name", "elid", "sok", "level", "func", "email"):
        assert not is_secret(name), name


def test_a_name_outside_ascii_follows_the_same_rule() -> None:
    assert is_secret("пароль_passwd") and is_secret("Token_ключ")
    assert not is_secret("имя") and not is_secret("nom_é")


def test_records_and_masked_use_the_same_rule() -> None:
    params = (("name", "ann"), ("passwd", "p1"), ("confirm", "p1"))
    assert redact(params) == {"name": "ann", "passwd": MASK, "confirm": MASK}
    assert masked(params) == [("name", "ann"), ("passwd", MASK), ("confirm", MASK)]


def test_a_secret_value_is_hidden_in_each_form_it_is_handed_on_in() -> None:
    value = "p&ss w<rd/é"
    hider = Hider((("name", "ann"), ("passwd", value)))
    given = [
        value,  # PARAM_passwd
        "passwd=p%26ss+w%3Crd%2F%C3%A9",  # QUERY_STRING, the POST body (urlencode)
        "p%26ss%20w%3Crd%2F%C3%A9",  # percent-encoded with %20
        "<passwd>p&amp;ss w&lt;rd/é</passwd>",  # the old generation's <params>
    ]
    for text in given:
        shown = hider.hide(text)
        assert MASK in shown and "ss w" not in shown and "ss+w" not in shown and "ss%20w" not in shown, shown
    assert hider.hide("name=ann") == "name=ann"


def test_a_call_without_secrets_hides_nothing() -> None:
    assert Hider((("name", "ann"), ("passwd", ""))).hide("name=ann passwd=") == "name=ann passwd="


def test_the_environment_shows_secret_variables_masked() -> None:
    env = {"PARAM_passwd": "pw", "QUERY_STRING": "func=user.add&passwd=pw", "AUTH_USER": "root", "API_TOKEN": "t"}
    shown = dict(Hider((("passwd", "pw"),)).environment(env))
    assert shown == {
        "API_TOKEN": MASK,
        "AUTH_USER": "root",
        "PARAM_passwd": MASK,
        "QUERY_STRING": "func=user.add&passwd=***",
    }
