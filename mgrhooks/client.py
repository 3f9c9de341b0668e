"""The client of a running ``mgrhooks serve``'s local socket (``var/run/mgrhooks.sock`` of
the root): what ``sbin/mgrctl`` and ``mgrhooks exec`` try first. I/O.

A served call costs no interpreter full of mgrhooks: this module is all ``sbin/mgrctl``
imports before it knows whether a serve answers, so it uses the standard library only,
and only its cheap parts (our choice, measured in bench/ row "nested mgrctl"): the C
module ``_socket`` (``socket`` imports ``enum`` and ``selectors``, ~8 ms) and the C
halves of ``json`` (``json`` imports ``re``, ~8 ms). ``python -X importtime -m
mgrhooks.mgrctl`` shows what it costs. Both are imported when a request is made or sent:
``mgrhooks exec`` imports this module for :data:`SOCKET` on every call, and without a
serve sends nothing (~1 ms of its start; bench row "cold start").

The wire (docs/local.md; our choice, local RPC, not HTTP): each side
sends one frame, a 4-byte big-endian length then that many bytes. The request frame is a
JSON object (:func:`mgrctl_request`, :func:`call_request`); the answer frame is a JSON
object ``{"status": int, "stderr": str, "fallback": bool, "length": int}`` followed by
``length`` raw bytes, the standard output. ``fallback`` true: the server ran nothing and the
client runs the call in its own process (a command line the server does not serve).

Whatever goes wrong before the server has the request (no socket, nobody listening on
it: a stale file, a socket of another user, a request over :data:`MAX_REQUEST`) is
"no serve": the caller runs the call in-process, silently. Once the request is sent, the
call may have run: an answer that does not come is an error (:data:`UNANSWERED`), never
a second run.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # (typing itself is not imported: ``sbin/mgrctl`` needs nothing of it)
if TYPE_CHECKING:
    import _socket

#: where the socket is, relative to the root
SOCKET = "var/run/mgrhooks.sock"
#: the largest request frame the server reads (bytes); a larger one is refused, and the
#: client does not send it but runs the call in-process
MAX_REQUEST = 16 * 1024 * 1024
#: the largest answer header the client reads (bytes)
MAX_HEADER = 1024 * 1024
#: variables of the client's environment the server needs: nesting (``MGRHOOKS_DEPTH``,
#: ``MGRHOOKS_CHAIN``, as :func:`mgrhooks.dispatch.nesting` reads them) and mgrctl's
#: option defaults (``-m`` from ``MGR``, ``--root`` from ``MGRHOOKS_ROOT``)
PASSED = ("MGRHOOKS_DEPTH", "MGRHOOKS_CHAIN", "MGR", "MGRHOOKS_ROOT")
#: exit statuses (those of :class:`mgrhooks.errors.ExitStatus`, which this module does not
#: import: ``enum``): the server took the request and gave no answer (it stopped mid-call)
UNANSWERED = 75
#: ... the server refuses the peer's uid
REFUSED = 77
#: exit status when stdout cannot take the answer (``ExitStatus.OUTPUT``)
OUTPUT = 120
#: exit status on Ctrl-C (``ExitStatus.INTERRUPTED``)
INTERRUPTED = 130


class Unanswered(Exception):
    """The server took the request and closed the connection without a whole answer."""


def mgrctl_request(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> dict[str, object] | None:
    """The request of ``mgrctl ARGV`` (argv as the sh script passes it, ``--root ROOT``
    first): the command line itself, which the server parses with mgrctl's own click
    command, with the working directory and :data:`PASSED` variables that parsing and
    nesting depend on. ``None`` when the working directory is gone (run in-process)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    return {"kind": "mgrctl", "argv": argv, "cwd": cwd, "env": _passed(environ)}


def call_request(
    root: str,
    mgr: str,
    func: str,
    params: tuple[tuple[str, str], ...],
    *,
    user: str,
    level: int,
    lang: str,
    out: str,
    timeout: float | None,
    environ: dict[str, str] | os._Environ[str],
) -> dict[str, object] | None:
    """The request of a call ``mgrhooks exec`` parsed (its own options already read:
    ``--stdin``, ``--body``); ``None`` when the working directory is gone."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    return {
        "kind": "call",
        "root": root,
        "mgr": mgr,
        "cwd": cwd,
        "func": func,
        "params": [list(pair) for pair in params],
        "user": user,
        "level": level,
        "lang": lang,
        "out": out,
        "timeout": timeout,
        "env": _passed(environ),
    }


def _passed(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    return {name: environ[name] for name in PASSED if name in environ}


def mgrctl_root(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> str:
    """Where to look for the socket: the root ``sbin/mgrctl`` names (``--root ROOT``
    first), else ``$MGRHOOKS_ROOT``, else the working directory. Only a guess: the
    server parses the whole command line and runs nothing for another root."""
    if len(argv) >= 2 and argv[0] == "--root":
        return argv[1]
    return environ.get("MGRHOOKS_ROOT", ".")


def ask(root: str, request: dict[str, object]) -> tuple[int, str, bytes] | None:
    """Send ``request`` to the serve of ``root``: ``(status, stderr, stdout)`` of the call,
    or ``None`` when no serve answers there or it asks for the call to run in-process.

    :raises Unanswered: the request went out and no whole answer came back
    """
    data = encode(request)
    if len(data) > MAX_REQUEST:
        return None
    connection = _connect(os.path.join(root, SOCKET))
    if connection is None:
        return None
    try:
        try:
            connection.sendall(len(data).to_bytes(4, "big") + data)
            sent = True
        except OSError:  # the server refused before reading it all (its answer says why)
            sent = False
        try:
            header = decode(_read(connection, int.from_bytes(_read(connection, 4, 4), "big"), MAX_HEADER))
            status, stderr, length = header.get("status"), header.get("stderr"), header.get("length")
            if not (isinstance(status, int) and isinstance(stderr, str) and isinstance(length, int)):
                raise ValueError("a malformed answer header")
            stdout = _read(connection, length, None)
        except (OSError, ValueError) as exc:
            if not sent:  # the server never had the whole request: nothing ran
                return None
            raise Unanswered(str(exc) or type(exc).__name__) from None
    finally:
        connection.close()
    if header.get("fallback"):
        return None
    return status, stderr, stdout


def _connect(path: str) -> _socket.socket | None:
    """A connection to the socket at ``path``; ``None``: no file, nobody listening (a
    stale file left by a killed serve), or not ours to open."""
    import _socket

    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        with reachable(path) as address:
            connection.connect(address)
    except OSError:
        connection.close()
        return None
    return connection


#: the longest path a unix socket address holds (``sun_path``, its NUL left out)
MAX_ADDRESS = 107


class reachable:  # noqa: N801 (used as a function: ``with reachable(path) as address``)
    """``path`` as a unix socket address: itself, or, when it is longer than
    :data:`MAX_ADDRESS` bytes (a deep root), its name under ``/proc/self/fd/N`` of its
    directory opened meanwhile (Linux; our choice, so that any root can be served).

    :raises OSError: the directory cannot be opened
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.descriptor: int | None = None

    def __enter__(self) -> str:
        if len(os.fsencode(self.path)) <= MAX_ADDRESS:
            return self.path
        folder, name = os.path.split(self.path)
        self.descriptor = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self.descriptor}/{name}"

    def __exit__(self, *_: object) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)


def _read(connection: _socket.socket, size: int, limit: int | None) -> bytes:
    """Exactly ``size`` bytes. :raises ValueError: over ``limit``, or the end came first"""
    if limit is not None and size > limit:
        raise ValueError(f"an answer header of {size} bytes")
    chunks = []
    left = size
    while left:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            raise ValueError("the connection ended mid-answer")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# --- JSON with the C halves of the json module (what json.dumps / json.loads run) ------------


class _Context:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``: the defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity: never sent
    memo: dict[str, str] = {}


def _unencodable(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode(value: dict[str, object]) -> bytes:
    """``json.dumps(value).encode()``: ASCII, lone surrogates of a command line escaped."""
    import _json

    ascii_only = _json.encode_basestring_ascii
    encoder = _json.make_encoder(None, _unencodable, ascii_only, None, ": ", ", ", False, False, False)
    return "".join(encoder(value, 0)).encode("ascii")


def decode(data: bytes) -> dict[str, object]:
    """``json.loads(data)`` for an object. :raises ValueError: not one JSON object"""
    import _json

    text = data.decode("utf-8")
    scan = _json.make_scanner(_Context())  # type: ignore[arg-type] # (typeshed wants a JSONDecoder: these are its fields)
    try:
        value, end = scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text) or not isinstance(value, dict):
        raise ValueError("not one JSON object")
    return value


# --- printing -----------------------------------------------------------------------------


def emit(status: int, stderr: str, stdout: bytes) -> int:
    """Print an answer as the in-process command would: ``stdout`` on descriptor 1,
    ``stderr`` on 2. :returns: the exit status (:data:`OUTPUT` when stdout cannot take it)"""
    if stderr:
        _write(2, stderr.encode("utf-8", "surrogateescape"))
    try:
        _write(1, stdout)
    except BrokenPipeError:
        return OUTPUT
    except OSError as exc:
        _write(2, f"mgrhooks: cannot write the response: {exc.strerror or exc}\n".encode())
        return OUTPUT
    return status


def _write(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def served(root: str, request: dict[str, object] | None, name: str) -> int | None:
    """Run ``request`` through the serve of ``root`` and print its answer: the exit
    status, or ``None`` (nothing printed) to run in-process. ``name`` starts the
    messages (``mgrctl``, ``mgrhooks``)."""
    if request is None:
        return None
    try:
        answer = ask(root, request)
    except Unanswered as exc:
        where = os.path.join(root, SOCKET)
        message = f"{name}: the resident panel ({where}) took the call and gave no answer ({exc}): it may have run"
        _write(2, (message + "\n").encode("utf-8", "surrogateescape"))
        return UNANSWERED
    except KeyboardInterrupt:
        _write(2, b"Interrupted\n")
        return INTERRUPTED
    if answer is None:
        return None
    return emit(*answer)


def mgrctl(argv: list[str]) -> int | None:
    """``sbin/mgrctl ARGV`` through a running serve: its exit status, or ``None`` to run
    the command in-process (no serve, or one that does not serve this command line)."""
    environ = os.environ
    return served(mgrctl_root(argv, environ), mgrctl_request(argv, environ), "mgrctl")
