"""`mgrhooks` with a test double in place of the Gate (mgrhooks.http.auth), for the tests
of `mgrhooks serve` until the real Gate is wired: run as `python tests/http_double.py
serve --root ...`. The double lets in `authinfo=root:secret` (level 30) and
`authinfo=alice:pw` (level 16); anything else is an <error type="auth">."""

from __future__ import annotations

import sys

from mgrhooks import cli
from mgrhooks.http import auth, server
from mgrhooks.xmldoc import error_doc

USERS = {"root:secret": ("root", 30), "alice:pw": ("alice", 16)}


class Double:
    def decide(self, asked: auth.Asked) -> auth.Allowed | auth.Answered:
        given = dict(asked.params).get("authinfo", "")
        params = tuple((k, v) for k, v in asked.params if k != "authinfo")
        if given in USERS:
            user, level = USERS[given]
            return auth.Allowed(auth.Caller(user, level), params)
        return auth.Answered(error_doc(asked.func, "auth", "authinfo", "", "Wrong user name or password"))


server.default_gate = lambda panel, serve: Double()  # type: ignore[assignment]
if __name__ == "__main__":
    sys.argv[0] = "mgrhooks"
    cli.run()
