"""The panel's HTTP API: ``mgrhooks serve`` (issue 12; docs/http.md, docs/auth.md).

* :mod:`~mgrhooks.http.contract`: an HTTP request → the call it asks for, or the HTTP
  error status of what is not a call; ``out`` → content type (pure);
* :mod:`~mgrhooks.http.auth`: the ``Gate``: who calls (authinfo, sessions, keys, ``su``),
  with :mod:`~mgrhooks.http.sessions` (the session store) and
  :mod:`~mgrhooks.http.throttle` (failed logins slowed down);
* :mod:`~mgrhooks.http.resident`: one root's panel kept warm, calls run in a bounded pool;
* :mod:`~mgrhooks.http.app`: the ASGI application (no framework);
* :mod:`~mgrhooks.http.server`: uvicorn, TLS, the unix socket, SIGTERM;
* :mod:`~mgrhooks.http.tls`: the self-signed certificate made on first start;
* :mod:`~mgrhooks.http.local`: the local socket of ``sbin/mgrctl`` and ``mgrhooks exec``.
"""
